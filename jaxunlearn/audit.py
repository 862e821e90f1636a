"""Per-example membership audits of unlearning: U-LiRA and the NeurIPS 2023 forgetting quality.

Pure statistics (numpy + scipy). The caller supplies, for a fixed forget set of K audited
examples, scores φ [models, K]: the logit-scaled confidence of the true class
(:func:`jaxunlearn.mia.logit_confidence` with ``phi="exact"``) under models of two populations:

- *unlearned*: trained on a random half of the other data plus the K examples, then unlearned
  from the K examples by the method under audit;
- *retrained*: trained on a random half without the K examples (exact unlearning, the reference).

All rates, accuracies and AUCs returned here are **fractions in [0, 1]**, not percentages.

Sources
-------
[H24] J. Hayes, I. Shumailov, E. Triantafillou, A. Khalifa, N. Papernot, "Inexact Unlearning
  Needs More Careful Evaluations to Avoid a False Sense of Privacy", arXiv:2403.01218 (2024).
  Read: https://arxiv.org/html/2403.01218v3 (only its abstract and introduction were available
  to us) and a co-author's description of the U-LiRA code, https://github.com/meghdadk/SCRUB/
  issues/1 (2024-03-07: "basically just run mi_lira_2021 on the unlearning" models), i.e. the
  LiRA reference code https://github.com/tensorflow/privacy/blob/master/research/mi_lira_2021/
  plot.py (``generate_ours``, ``sweep``) and ``score.py``.
[T24] E. Triantafillou, P. Kairouz, F. Pedregosa, J. Hayes, M. Kurmanji, K. Zhao, V. Dumoulin,
  J. Jacques Junior, I. Mitliagkas, J. Wan, L. Sun Hosoya, S. Escalera, G. K. Dziugaite,
  P. Triantafillou, I. Guyon, "Are we making progress in unlearning? Findings from the first
  NeurIPS unlearning competition", arXiv:2406.09073 (2024). The scoring code of the Kaggle
  competition "neurips-2023-machine-unlearning" (https://kaggle.com/competitions/
  neurips-2023-machine-unlearning): https://github.com/google-deepmind/unlearning_evaluation,
  ``metric.py`` and ``main.py`` (commit ffae0ff, "Open-sourcing A: unlearning competition
  evaluation code"). Read in full; the competition's technical report
  (https://unlearning-challenge.github.io/assets/data/Machine_Unlearning_Metric.pdf) was not.
[C22] N. Carlini, S. Chien, M. Nasr, S. Song, A. Terzis, F. Tramèr, "Membership Inference
  Attacks From First Principles", IEEE S&P 2022, arXiv:2112.03570 (LiRA).

U-LiRA [H24]
------------
The LiRA game [C22] with "member" replaced by "unlearned": per audited example k, fit a Gaussian
to φ_k over the *unlearned* shadow models and one over the *retrained* shadow models
(:func:`fit_gaussians`); a target model t's φ_{t,k} is scored by the log likelihood ratio
Λ_{t,k} = log N(φ_{t,k}; μ^u_k, σ^u_k) − log N(φ_{t,k}; μ^r_k, σ^r_k) (:func:`lira_scores`),
and the attack says "unlearned" when Λ > 0 (the likelihood-ratio test's own threshold, the
Bayes rule at equal priors). :func:`ulira` attacks held-out target models of both populations
and reports the attack's accuracy at that threshold, the ROC over all (target, example) pairs
(one global threshold swept over Λ, as LiRA's ``sweep``), its AUC and TPR at 1% / 0.1% FPR,
bootstrap intervals, and per-example accuracies and AUCs.

Details we could not confirm in [H24] and therefore took from the LiRA convention [C22]:

- location of the Gaussians: the mean (the Gaussian's maximum-likelihood fit) by default; the
  LiRA reference code uses the median (``np.median``), ``location="median"``;
- spread: the population std (``ddof=0``, as ``np.std`` in the reference code), per example
  (the reference code's default, "online" LiRA) by default; its ``fix_variance`` variant is
  ``variance="global"`` (see :func:`lira_scores` for how we pool);
- which accuracy [H24] reports: LiRA's ``sweep`` reports the *best* balanced accuracy over all
  thresholds, chosen on the evaluated targets themselves; that is ``best_accuracy`` here, with a
  warning; ``accuracy`` is the fixed-threshold (Λ > 0) one;
- the interpolation of TPR at a fixed FPR (LiRA reads the largest TPR with FPR < α off the
  step curve; we interpolate linearly along the ROC, see :func:`ulira`).

Forgetting quality [T24]
------------------------
Implemented as ``metric.py`` computes it; see :func:`forgetting_quality` for every rule (which
population is "positive", the two families of threshold attacks, δ = 1e-5, the handling of zero
error rates, the cap ε = 50, the buckets of width 0.5 scored 1, 1/2, 1/4, …, and the bucket range
⌈log(N − 1)⌉), and :func:`challenge_score` for the utility adjustment of ``main.py``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
from scipy import stats

from jaxunlearn.mia import tpr_at_fpr

__all__ = [
    "CHALLENGE_DELTA",
    "CHALLENGE_EPSILON_CAP",
    "DEFAULT_MIN_STD",
    "ForgettingQuality",
    "GaussianFit",
    "ULiRAResult",
    "auc_null_se",
    "binomial_se",
    "challenge_score",
    "fit_gaussians",
    "forgetting_quality",
    "lira_scores",
    "ulira",
    "wilson_interval",
]

DEFAULT_MIN_STD = 1e-3
"""Floor on each fitted std, in units of φ (see :func:`fit_gaussians`)."""

# The constants of the NeurIPS 2023 challenge's metric.py [T24].
CHALLENGE_DELTA = 1e-5
CHALLENGE_EPSILON_CAP = 50.0
_THRESHOLDS_PER_UNIT = 100  # NUM_THRESHOLDS_PER_UNIT: grid resolution of both attack families
_BUFFER = 2.0  # the double-threshold family's search half-width around the narrow population
_PEAKY_RATIO = 0.01  # ratio of ranges below which an example gets the cap outright
_BUCKET = 0.5  # width of the ε buckets of the per-example score


# --------------------------------------------------------------------------------------------
# Input checks


def _scores_2d(x: Any, name: str, *, min_rows: int = 1) -> np.ndarray:
    """``x`` as a finite float64 array [models, K] with K ≥ 1 and at least ``min_rows`` rows."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [models, examples]; got shape {a.shape}")
    if a.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one example (K >= 1); got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} models (rows); got shape {a.shape}")
    n_bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if n_bad:
        raise ValueError(f"{name} must be finite; got {n_bad} NaN or infinite entries")
    return a


def _same_k(**arrays: np.ndarray) -> None:
    if len({a.shape[1] for a in arrays.values()}) > 1:
        shapes = {name: a.shape for name, a in arrays.items()}
        raise ValueError(f"all score arrays must have the same number of examples K; got "
                         f"shapes {shapes}")


def _fraction_level(ci: float) -> float:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be a coverage level in (0, 1); got {ci!r}")
    return float(ci)


# --------------------------------------------------------------------------------------------
# Scores and small statistics


def _proportion_and_n(p: Any, n: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``p`` and ``n`` as float64 arrays; ValueError unless p ∈ [0, 1] and n > 0."""
    p_a = np.asarray(p, dtype=np.float64)
    n_a = np.asarray(n, dtype=np.float64)
    if np.any((p_a < 0) | (p_a > 1)) or np.any(~np.isfinite(p_a)):
        raise ValueError(f"{name} must lie in [0, 1]; got {p!r}")
    if np.any(~(n_a > 0)):
        raise ValueError(f"n must be > 0; got {n!r}")
    return p_a, n_a


def binomial_se(p: Any, n: Any) -> np.ndarray | float:
    """Standard error √(p(1 − p)/n) of a proportion over n independent trials.

    For the control tests of an attack: Retrain's accuracy should lie within a few of these of
    0.5 (with ``n = n_pairs``). The (target, example) pairs of :func:`ulira` are not independent
    (they share target models and examples), so this is a lower bound on the real spread; prefer
    the bootstrap intervals of :func:`ulira`, or a bound of several standard errors.

    Args:
      p: proportion(s) in [0, 1].
      n: number(s) of trials, > 0.

    Returns:
      The standard error(s), broadcast over ``p`` and ``n`` (a float for scalars).
    """
    p_a, n_a = _proportion_and_n(p, n, "p")
    se = np.sqrt(p_a * (1.0 - p_a) / n_a)
    return float(se) if se.ndim == 0 else se


def auc_null_se(n_pos: int, n_neg: int) -> float:
    """Standard error of the ROC AUC of an uninformative score, √((n₊ + n₋ + 1)/(12 n₊ n₋)).

    The Mann–Whitney U statistic's null variance (continuous scores, no ties), divided by
    (n₊n₋)²; the AUC's analogue of ``binomial_se(0.5, n)``, with the same caveat about
    correlated pairs.

    Args:
      n_pos: number of positives, > 0.
      n_neg: number of negatives, > 0.

    Returns:
      The standard error.
    """
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"n_pos and n_neg must be >= 1; got {n_pos} and {n_neg}")
    return float(np.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg)))


def wilson_interval(p_hat: Any, n: Any, *, ci: float = 0.95) -> np.ndarray:
    """Wilson score interval of a proportion (Wilson 1927), well-behaved at p̂ ∈ {0, 1}.

    Args:
      p_hat: observed proportion(s) in [0, 1], shape [...].
      n: number(s) of trials, > 0, broadcastable against ``p_hat``.
      ci: coverage, in (0, 1).

    Returns:
      Interval [..., 2]: (lower, upper).
    """
    level = _fraction_level(ci)
    p, n_a = _proportion_and_n(p_hat, n, "p_hat")
    z2 = stats.norm.ppf(0.5 + level / 2.0) ** 2
    denom = 1.0 + z2 / n_a
    centre = (p + z2 / (2.0 * n_a)) / denom
    half = np.sqrt(z2 * p * (1.0 - p) / n_a + z2 * z2 / (4.0 * n_a * n_a)) / denom
    return np.stack(np.broadcast_arrays(centre - half, centre + half), axis=-1)


# --------------------------------------------------------------------------------------------
# U-LiRA


class GaussianFit(NamedTuple):
    """Per-example Gaussian fitted over shadow models."""

    mu: np.ndarray  # [K] location (mean, or median with location="median")
    std: np.ndarray  # [K] standard deviation (ddof=0), floored at min_std


def fit_gaussians(phi_SxK: Any, *, min_std: float = DEFAULT_MIN_STD,
                  location: Literal["mean", "median"] = "mean") -> GaussianFit:
    """Fit one Gaussian per example over S shadow models: location and std of φ[:, k].

    The std is the population std (``ddof=0``, ``np.std`` as in the LiRA reference code [C22]),
    floored at ``min_std`` so that an example whose φ is (nearly) constant over the shadows does
    not make the likelihood ratio infinite. The default floor 1e-3 is in units of φ, whose
    per-example spread over models is typically O(0.1–10) for trained networks, so the floor
    binds only for degenerate examples; the LiRA reference code adds 1e-30 instead, which
    keeps the ratio finite but astronomically large.

    Args:
      phi_SxK: scores [S, K] of S ≥ 2 shadow models on K ≥ 1 examples, finite.
      min_std: floor on each std, > 0.
      location: ``"mean"`` (the Gaussian's maximum-likelihood fit) or ``"median"`` (LiRA's
        reference code, robust to a few outlying shadows).

    Returns:
      ``GaussianFit(mu [K], std [K])``.
    """
    phi = _scores_2d(phi_SxK, "phi_SxK", min_rows=2)
    if not min_std > 0:
        raise ValueError(f"min_std must be > 0; got {min_std!r}")
    if location == "mean":
        mu = phi.mean(axis=0)
    elif location == "median":
        mu = np.median(phi, axis=0)
    else:
        raise ValueError(f"location must be 'mean' or 'median'; got {location!r}")
    return GaussianFit(mu=mu, std=np.maximum(phi.std(axis=0), min_std))


def _fit_arrays(fit: Any, name: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        mu, std = fit
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (mu [K], std [K]) pair as fit_gaussians returns; "
                         f"got {type(fit).__name__}") from None
    mu = np.asarray(mu, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if mu.shape != (k,) or std.shape != (k,):
        raise ValueError(f"{name} must hold mu and std of shape ({k},) (K of the scores); got "
                         f"{mu.shape} and {std.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError(f"{name} must have finite mu and finite std > 0")
    return mu, std


def lira_scores(phi_TxK: Any, unlearned_fit: Any, retrained_fit: Any, *,
                variance: Literal["per_example", "global"] = "per_example") -> np.ndarray:
    """Log likelihood ratio log N(φ; unlearned fit) − log N(φ; retrained fit) per (target, example).

    Positive values favour "unlearned". With ``variance="per_example"`` (default; LiRA's online
    attack with per-example variances [C22]) each example uses its own two stds. With
    ``variance="global"`` ("fixed variance", [C22]'s variant for few shadow models) each
    population's std is replaced by its pooled within-example std √(mean_k σ_k²), shared by all
    examples (the means stay per example). The LiRA reference code's fixed variance is instead
    ``np.std`` over all shadow scores of all examples (which also counts the spread of the
    per-example means) and uses the members' value for both populations; we pool per population.

    Args:
      phi_TxK: scores [T, K] of T target models on the K examples, finite.
      unlearned_fit: ``(mu [K], std [K])`` of the unlearned population (:func:`fit_gaussians`).
      retrained_fit: ``(mu [K], std [K])`` of the retrained population.
      variance: ``"per_example"`` or ``"global"``.

    Returns:
      Λ [T, K].
    """
    phi = _scores_2d(phi_TxK, "phi_TxK")
    k = phi.shape[1]
    mu_u, s_u = _fit_arrays(unlearned_fit, "unlearned_fit", k)
    mu_r, s_r = _fit_arrays(retrained_fit, "retrained_fit", k)
    if variance == "global":
        s_u = np.full(k, np.sqrt(np.mean(s_u ** 2)))
        s_r = np.full(k, np.sqrt(np.mean(s_r ** 2)))
    elif variance != "per_example":
        raise ValueError(f"variance must be 'per_example' or 'global'; got {variance!r}")
    # log N(x; mu, s) = -((x - mu)/s)^2 / 2 - log s - log(2 pi)/2; the constant cancels.
    log_u = -0.5 * ((phi - mu_u) / s_u) ** 2 - np.log(s_u)
    log_r = -0.5 * ((phi - mu_r) / s_r) ** 2 - np.log(s_r)
    return log_u - log_r


class ULiRAResult(NamedTuple):
    """U-LiRA audit (:func:`ulira`). All values are fractions in [0, 1]; CIs are (low, high)."""

    accuracy: float  # balanced accuracy at the LR test's own threshold Λ > 0
    accuracy_ci: tuple[float, float]
    best_accuracy: float  # max balanced accuracy over thresholds: optimistic, see ulira()
    auc: float  # ROC AUC over all (target, example) pairs
    auc_ci: tuple[float, float]
    tpr_at_1: float  # TPR at 1% FPR, interpolated along the ROC
    tpr_at_1_ci: tuple[float, float]
    tpr_at_01: float  # TPR at 0.1% FPR, interpolated along the ROC
    tpr_at_01_ci: tuple[float, float]
    n_pairs: int  # (T_unlearned + T_retrained) · K attacked pairs
    n_boot: int  # bootstrap draws behind the CIs (0: CIs are NaN)
    fpr: np.ndarray  # [P] ROC false-positive rates, non-decreasing from 0 to 1
    tpr: np.ndarray  # [P] ROC true-positive rates
    per_example_accuracy: np.ndarray  # [K] balanced accuracy at Λ > 0 per example
    per_example_accuracy_ci: np.ndarray  # [K, 2] Wilson intervals, n = T_unlearned + T_retrained
    per_example_auc: np.ndarray  # [K] AUC per example (its T_u positives vs T_r negatives)
    scores_unlearned: np.ndarray  # [T_unlearned, K] Λ of the unlearned targets
    scores_retrained: np.ndarray  # [T_retrained, K] Λ of the retrained targets


def _roc(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr) of "positive if score ≥ threshold", from (0, 0) to (1, 1).

    Tied scores form one point (a diagonal segment from the previous one), so the trapezoid AUC
    counts ties as one half, as the Mann–Whitney statistic does.
    """
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], is_pos[order]
    last_of_tie = np.append(s[1:] != s[:-1], True)
    tp = np.cumsum(lab)[last_of_tie]
    fp = np.cumsum(~lab)[last_of_tie]
    return np.append(0.0, fp / neg.size), np.append(0.0, tp / pos.size)


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def _pooled_metrics(pos: np.ndarray, neg: np.ndarray
                    ) -> tuple[tuple[float, float, float, float], np.ndarray, np.ndarray]:
    """((balanced accuracy at Λ > 0, AUC, TPR@1%, TPR@0.1%), fpr, tpr) of flat scores."""
    acc = 0.5 * (np.mean(pos > 0) + np.mean(neg <= 0))
    fpr, tpr = _roc(pos, neg)
    metrics = (float(acc), _auc(fpr, tpr), tpr_at_fpr(fpr, tpr, 0.01),
               tpr_at_fpr(fpr, tpr, 0.001))
    return metrics, fpr, tpr


def ulira(shadow_unlearned_SxK: Any, shadow_retrained_SxK: Any, target_unlearned_TxK: Any,
          target_retrained_TxK: Any, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
          variance: Literal["per_example", "global"] = "per_example",
          location: Literal["mean", "median"] = "mean",
          min_std: float = DEFAULT_MIN_STD) -> ULiRAResult:
    """U-LiRA [H24]: per-example likelihood-ratio attack, unlearned (positive) vs retrained.

    Gaussians are fitted per example on the shadow models of each population
    (:func:`fit_gaussians`); every (target model, example) pair is scored by Λ
    (:func:`lira_scores`). Pairs of unlearned targets are the positives.

    Metrics (fractions in [0, 1]):

    - ``accuracy``: balanced accuracy (mean of TPR and TNR) of the rule Λ > 0, which is the
      likelihood-ratio test's own threshold (the Bayes rule at equal priors). It is fixed
      before seeing the targets, so on Retrain (both populations exact retraining) it is
      unbiased around 0.5. It equals the plain accuracy over pairs when T_unlearned ==
      T_retrained, and always equals ``per_example_accuracy.mean()``.
    - ``best_accuracy``: max over all thresholds of the balanced accuracy, (1 + TPR − FPR)/2, as
      LiRA's ``sweep`` reports it. **Warning:** the threshold is chosen on the very targets it
      is scored on, so it is ≥ 0.5 by construction and biased above 0.5 on finite samples even
      when the populations are identical; do not compare it with 0.5 as a control.
    - ``auc``, ``fpr``/``tpr``: one ROC over all pairs, sweeping a single threshold on Λ (as LiRA
      pools all (model, example) pairs). Plot ``tpr`` against ``fpr`` on log–log axes.
    - ``tpr_at_1``/``tpr_at_01``: TPR at 1% / 0.1% FPR, linearly interpolated along the ROC
      between its points (any point of a segment is reached by randomising between the two
      thresholds; at a vertical segment the higher TPR is taken). LiRA instead reads the last
      step with FPR < α. Either is noisy unless the retrained pairs number well above 1/α
      (0.1% FPR needs thousands of negatives).

    Confidence intervals: percentile intervals of a two-way cluster bootstrap ("pigeonhole"
    bootstrap, Owen 2007, Ann. Appl. Stat. 1(2)). Each draw resamples, with replacement, the
    unlearned target models, independently the retrained target models, and the K examples,
    and recomputes the pooled metrics on the crossed sample. Both factors are resampled because
    the pairs are not independent: the K pairs of one target model share its training run (data
    half, seed, unlearning run), and the T pairs of one example share its difficulty and its
    shadow fits; treating the (T_u + T_r)·K pairs as independent understates the uncertainty.
    The shadow fits are held fixed (their estimation error is not in the intervals).

    Per example: ``per_example_accuracy`` [K] is the balanced accuracy of Λ > 0 over the example's
    T_unlearned + T_retrained targets, with Wilson intervals using n = T_unlearned + T_retrained
    (exact for balanced designs, an approximation otherwise); ``per_example_auc`` [K] is the
    Mann–Whitney AUC of its T_unlearned positive against its T_retrained negative scores.

    Args:
      shadow_unlearned_SxK: φ [S_u, K] of the unlearned shadow models, S_u ≥ 2.
      shadow_retrained_SxK: φ [S_r, K] of the retrained shadow models, S_r ≥ 2.
      target_unlearned_TxK: φ [T_u, K] of the unlearned target models (held out), T_u ≥ 1.
      target_retrained_TxK: φ [T_r, K] of the retrained target models (held out), T_r ≥ 1.
      n_boot: bootstrap draws, ≥ 0 (0 skips the bootstrap; the CIs are then NaN).
      seed: seed of the bootstrap's ``np.random.default_rng``.
      ci: coverage of all intervals, in (0, 1).
      variance: ``"per_example"`` or ``"global"`` (:func:`lira_scores`).
      location: ``"mean"`` or ``"median"`` (:func:`fit_gaussians`).
      min_std: std floor (:func:`fit_gaussians`).

    Returns:
      A :class:`ULiRAResult`.
    """
    sh_u = _scores_2d(shadow_unlearned_SxK, "shadow_unlearned_SxK", min_rows=2)
    sh_r = _scores_2d(shadow_retrained_SxK, "shadow_retrained_SxK", min_rows=2)
    tg_u = _scores_2d(target_unlearned_TxK, "target_unlearned_TxK")
    tg_r = _scores_2d(target_retrained_TxK, "target_retrained_TxK")
    k = sh_u.shape[1]
    _same_k(shadow_unlearned_SxK=sh_u, shadow_retrained_SxK=sh_r,
            target_unlearned_TxK=tg_u, target_retrained_TxK=tg_r)
    level = _fraction_level(ci)
    if int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0; got {n_boot!r}")
    n_boot = int(n_boot)

    fit_u = fit_gaussians(sh_u, min_std=min_std, location=location)
    fit_r = fit_gaussians(sh_r, min_std=min_std, location=location)
    lam_u = lira_scores(tg_u, fit_u, fit_r, variance=variance)  # [T_u, K], positives
    lam_r = lira_scores(tg_r, fit_u, fit_r, variance=variance)  # [T_r, K], negatives
    t_u, t_r = lam_u.shape[0], lam_r.shape[0]

    (acc, auc, tpr1, tpr01), fpr, tpr = _pooled_metrics(lam_u.ravel(), lam_r.ravel())
    best_acc = float(np.max((1.0 + tpr - fpr) / 2.0))

    # Two-way cluster bootstrap. A loop over draws is the simplest form: each draw needs its own
    # sort of (T_u + T_r)·K scores for the ROC.
    boot = np.full((max(n_boot, 1), 4), np.nan)
    rng = np.random.default_rng(seed)
    for b in range(n_boot):
        ik = rng.integers(0, k, k)
        iu = rng.integers(0, t_u, t_u)
        ir = rng.integers(0, t_r, t_r)
        boot[b] = _pooled_metrics(lam_u[np.ix_(iu, ik)].ravel(),
                                  lam_r[np.ix_(ir, ik)].ravel())[0]
    if n_boot:
        lo, hi = np.quantile(boot, [0.5 - level / 2.0, 0.5 + level / 2.0], axis=0)
    else:
        lo = hi = boot[0]
    cis = [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]

    per_acc = 0.5 * (np.mean(lam_u > 0, axis=0) + np.mean(lam_r <= 0, axis=0))
    ranks = stats.rankdata(np.concatenate([lam_u, lam_r], axis=0), axis=0)  # ties: average
    per_auc = (ranks[:t_u].sum(axis=0) - t_u * (t_u + 1) / 2.0) / (t_u * t_r)

    return ULiRAResult(
        accuracy=acc, accuracy_ci=cis[0], best_accuracy=best_acc,
        auc=auc, auc_ci=cis[1], tpr_at_1=tpr1, tpr_at_1_ci=cis[2],
        tpr_at_01=tpr01, tpr_at_01_ci=cis[3],
        n_pairs=(t_u + t_r) * k, n_boot=n_boot, fpr=fpr, tpr=tpr,
        per_example_accuracy=per_acc,
        per_example_accuracy_ci=wilson_interval(per_acc, t_u + t_r, ci=level),
        per_example_auc=per_auc, scores_unlearned=lam_u, scores_retrained=lam_r)


# --------------------------------------------------------------------------------------------
# Forgetting quality of the NeurIPS 2023 challenge


class ForgettingQuality(NamedTuple):
    """The challenge's forgetting quality (:func:`forgetting_quality`)."""

    epsilon: np.ndarray  # [K] per-example ε estimate, in [0, max_epsilon] ∪ {epsilon_cap}
    example_score: np.ndarray  # [K] points of ε's bucket: 1, 1/2, 1/4, …, or 0
    score: float  # forgetting quality F = mean of example_score, in [0, 1]
    n_models: int  # N, models per population
    max_epsilon: float  # largest finite ε that N models resolve: log(N(1 − δ) − 1)
    bucket_limit: float  # ⌈log(N − 1)⌉: ε at or above it scores 0
    capped: np.ndarray  # [K] bool: ε set to the cap (perfect separation or "peaky" example)
    delta: float  # δ


def _sorted_count_in(sorted_x: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Number of x with left ≤ x ≤ right, per (left, right) pair (0 when left > right)."""
    n = (np.searchsorted(sorted_x, right, side="right")
         - np.searchsorted(sorted_x, left, side="left"))
    return np.maximum(n, 0)


def _double_threshold_counts(pos: np.ndarray, neg: np.ndarray, per_unit: int,
                             buffer: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Counts (positives, negatives) predicted positive by the challenge's interval rules.

    Rule: "positive" iff l ≤ φ ≤ r, where positive is here the narrower population: ``neg``
    when range(pos) ≥ range(neg) (so on equal ranges too), else ``pos``.
    The right ends r are ⌈(hi − lo)·per_unit⌉ points evenly spaced over [lo, hi] =
    [min + w − buffer, max + buffer] of the narrow population (w its range), and for each r the
    left ends are ⌈2·buffer·per_unit⌉ points over [r − w − buffer, r − w + buffer].
    """
    if np.ptp(pos) >= np.ptp(neg):
        pos, neg = neg, pos
    width = float(np.ptp(pos))
    lo, hi = pos.min() + width - buffer, pos.max() + buffer
    right = np.linspace(lo, hi, int(np.ceil((hi - lo) * per_unit)))
    n_left = int(np.ceil(2 * buffer * per_unit))
    left = (right[:, None] + np.linspace(-width - buffer, -width + buffer, n_left)).ravel()
    right = np.repeat(right, n_left)
    return (_sorted_count_in(np.sort(pos), left, right),
            _sorted_count_in(np.sort(neg), left, right), pos.size)


def _single_threshold_counts(pos: np.ndarray, neg: np.ndarray,
                             per_unit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Counts (positives, negatives) with φ ≥ t, t over ⌈range·per_unit⌉ points of [min, max]."""
    both = np.concatenate([pos, neg])
    lo, hi = both.min(), both.max()
    t = np.linspace(lo, hi, int(np.ceil((hi - lo) * per_unit)))
    n = pos.size
    return (n - np.searchsorted(np.sort(pos), t, side="left"),
            n - np.searchsorted(np.sort(neg), t, side="left"), n)


def _epsilon_from_counts(tp: np.ndarray, fp: np.ndarray, n: int, delta: float) -> float:
    """max over thresholds of the challenge's ε; +inf if some threshold separates perfectly."""
    fpr, fnr = fp / n, (n - tp) / n
    # (metric.py also requires tpr + tnr == 2 for ε = inf; with rates from counts it is implied.)
    both_zero = (fp == 0) & (tp == n)  # fpr = fnr = 0: perfect separation -> ε = inf
    one_zero = ((fp == 0) | (tp == n)) & ~both_zero  # discarded: too few samples to tell
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.log(1.0 - delta - fpr) - np.log(fnr)
        e2 = np.log(1.0 - delta - fnr) - np.log(fpr)
    eps = np.clip(np.fmax(e1, e2), 0.0, None)  # fmax ignores one NaN, as np.nanmax does
    if np.any(both_zero):
        return float("inf")
    keep = ~one_zero & ~np.isnan(eps)
    # The published code asserts that some threshold survives; when none does (e.g. both
    # populations constant and equal) no threshold tells them apart, so ε = 0.
    return float(np.max(eps[keep])) if np.any(keep) else 0.0


def _example_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float, cap: float,
                     per_unit: int, buffer: float, peaky_ratio: float) -> tuple[float, bool]:
    ranges = sorted((float(np.ptp(pos)), float(np.ptp(neg))))
    if ranges[1] > 0 and ranges[0] / ranges[1] < peaky_ratio:
        return cap, True  # one population is "very peaky": the cap, as metric.py does
    tp_d, fp_d, n = _double_threshold_counts(pos, neg, per_unit, buffer)
    tp_s, fp_s, _ = _single_threshold_counts(pos, neg, per_unit)
    eps = _epsilon_from_counts(np.concatenate([tp_d, tp_s]), np.concatenate([fp_d, fp_s]), n,
                               delta)
    return min(eps, cap), eps >= cap


def forgetting_quality(unlearned_NxK: Any, retrained_NxK: Any, *,
                       delta: float = CHALLENGE_DELTA,
                       epsilon_cap: float = CHALLENGE_EPSILON_CAP,
                       thresholds_per_unit: int = _THRESHOLDS_PER_UNIT,
                       buffer: float = _BUFFER,
                       peaky_ratio: float = _PEAKY_RATIO) -> ForgettingQuality:
    """Forgetting quality F of the NeurIPS 2023 unlearning challenge [T24], as ``metric.py``.

    Per example k, the φ of N unlearned and N retrained models are two samples; an (ε, δ)
    reading of unlearning says no test tells them apart beyond
    FPR + e^ε·FNR ≥ 1 − δ and FNR + e^ε·FPR ≥ 1 − δ. The challenge estimates ε from a family of
    threshold attacks:

    1. Positive is the population with the larger median φ (retrained iff its median is
       strictly larger).
    2. "Peaky" check: if min(range)/max(range) < 0.01 (ranges max − min over models), ε is set
       to the cap (50) outright.
    3. Single-threshold attacks: predict positive iff φ ≥ t, t on ⌈(max − min)·100⌉ evenly
       spaced points over the range of both samples.
    4. Double-threshold attacks: predict the narrower population iff l ≤ φ ≤ r (narrower: the
       negative one when range(positive) ≥ range(negative), else the positive one; its rates
       are then taken with it as the positive class), over a grid of about 400 × 400 (l, r):
       r over [min + w − 2, max + 2] of the narrower population (w its range) at 100 points
       per unit, and for each r, l over [r − w − 2, r − w + 2] at 400 points.
    5. Per threshold, from the rates over the N models: if FPR = FNR = 0, ε = ∞ (perfect
       separation); else if FPR = 0 or FNR = 0 the threshold is discarded ("insufficient
       samples"); else ε = max(log((1 − δ − FPR)/FNR), log((1 − δ − FNR)/FPR)) clipped below
       at 0 (a NaN term, log of a negative, is ignored). The example's ε is the max over all
       kept thresholds of both families, clipped to [0, 50]. (If no threshold is kept,
       ``metric.py`` fails an assertion; we return ε = 0.)
    6. Buckets of width 0.5 from 0 up to ⌈log(N − 1)⌉ (``bucket_limit``), scored 1, 1/2,
       1/4, … (i.e. 2/2^n for the n-th bucket); ε ≥ ``bucket_limit`` scores 0.
    7. F = mean of the per-example scores.

    Resolution: finite ε needs FPR, FNR ≥ 1/N, so the largest finite estimate is
    ``max_epsilon`` = log((1 − δ − 1/N)/(1/N)) = log(N(1 − δ) − 1) ≈ log(N − 1) (6.24 for
    N = 512, 4.13 for N = 64); no finite estimate exceeds it, so an example is either at or
    below it or at the cap (perfectly separated by some threshold, or peaky), and the finite
    estimates never score 0. Conversely, ε is the max over
    ~160,000 noisy rate estimates and is biased upward: for two samples of one Gaussian we
    measured ε ≈ 1–2 at N = 64, 256 and 512 alike (the max picks tail thresholds where a few
    models of one population face one of the other; TPR/FPR = 3/1 gives log 3 ≈ 1.1, and such
    counts do not grow with N), so exact retraining scores F ≈ 0.15–0.25, not 1. Compare
    methods with each other and with Retrain's own F, not with 1. The challenge used N = 512.

    Rates are computed in float64 from counts (``metric.py`` in float32 on a GPU); thresholds
    are the same grids, the left ends formed as r + offsets (the published code: one
    ``linspace`` per r), which can differ in the last bit.

    Args:
      unlearned_NxK: φ [N, K] of N unlearned models on the K forget examples, N ≥ 3 (with
        N = 2, ⌈log(N − 1)⌉ = 0 leaves no bucket and every score would be 0).
      retrained_NxK: φ [N, K] of N retrained models (same shape).
      delta: δ, in [0, 1).
      epsilon_cap: ε for perfectly separated or peaky examples (``EPSILON_CAP`` = 50).
      thresholds_per_unit: grid points per unit of φ (``NUM_THRESHOLDS_PER_UNIT`` = 100).
      buffer: half-width of the double-threshold search (2.0).
      peaky_ratio: ratio of ranges below which ε is the cap (0.01).

    Returns:
      A :class:`ForgettingQuality`.
    """
    u = _scores_2d(unlearned_NxK, "unlearned_NxK", min_rows=3)
    r = _scores_2d(retrained_NxK, "retrained_NxK", min_rows=3)
    if u.shape != r.shape:
        raise ValueError(f"unlearned_NxK and retrained_NxK must have the same shape [N, K]; got "
                         f"{u.shape} and {r.shape}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must lie in [0, 1); got {delta!r}")
    if not epsilon_cap > 0 or int(thresholds_per_unit) < 1 or not buffer > 0:
        raise ValueError(f"epsilon_cap, thresholds_per_unit and buffer must be > 0; got "
                         f"{epsilon_cap!r}, {thresholds_per_unit!r}, {buffer!r}")
    n, k = u.shape
    retrain_is_positive = np.median(r, axis=0) > np.median(u, axis=0)
    pos = np.where(retrain_is_positive, r, u)
    neg = np.where(retrain_is_positive, u, r)
    # One example at a time: each has its own grids (sizes depend on its ranges) of ~160,000
    # thresholds, which would not fit in memory stacked over examples.
    eps_capped = [_example_epsilon(pos[:, j], neg[:, j], delta, float(epsilon_cap),
                                   int(thresholds_per_unit), float(buffer), float(peaky_ratio))
                  for j in range(k)]
    eps = np.array([e for e, _ in eps_capped])
    capped = np.array([c for _, c in eps_capped], dtype=bool)

    bucket_limit = float(np.ceil(np.log(n - 1)))
    n_buckets = int(round(bucket_limit / _BUCKET))
    bucket = np.floor(eps / _BUCKET)
    example_score = np.where(bucket < n_buckets, 0.5 ** bucket, 0.0)
    return ForgettingQuality(
        epsilon=eps, example_score=example_score, score=float(example_score.mean()),
        n_models=n, max_epsilon=float(np.log(n * (1.0 - delta) - 1.0)),
        bucket_limit=bucket_limit, capped=capped, delta=float(delta))


def challenge_score(fq: ForgettingQuality | float, retain_acc: Any, test_acc: Any,
                    retrain_retain_acc: Any, retrain_test_acc: Any) -> float:
    """The challenge's final score: F · (RA_u / RA_r) · (TA_u / TA_r), as ``main.py`` [T24].

    RA and TA are the retain- and test-set accuracies, each averaged over the N models of its
    population (unlearned u, retrained r). The ratios are not clipped: an unlearned model more
    accurate than retraining raises the score above F.

    Args:
      fq: the forgetting quality F (a :class:`ForgettingQuality` or its ``score``).
      retain_acc: retain accuracy of the unlearned models, scalar or per model [N].
      test_acc: test accuracy of the unlearned models, scalar or [N].
      retrain_retain_acc: retain accuracy of the retrained models, scalar or [N].
      retrain_test_acc: test accuracy of the retrained models, scalar or [N].

    Returns:
      The final score.
    """
    f = fq.score if isinstance(fq, ForgettingQuality) else float(fq)
    means = {}
    for name, value in (("retain_acc", retain_acc), ("test_acc", test_acc),
                        ("retrain_retain_acc", retrain_retain_acc),
                        ("retrain_test_acc", retrain_test_acc)):
        a = np.asarray(value, dtype=np.float64)
        if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"{name} must be finite accuracies >= 0 (scalar or per model); "
                             f"got {value!r}")
        means[name] = float(a.mean())
    if means["retrain_retain_acc"] <= 0 or means["retrain_test_acc"] <= 0:
        raise ValueError(f"the retrained accuracies must be > 0; got "
                         f"{means['retrain_retain_acc']} and {means['retrain_test_acc']}")
    if not np.isfinite(f):
        raise ValueError(f"fq must be finite; got {f!r}")
    return (f * means["retain_acc"] / means["retrain_retain_acc"]
            * means["test_acc"] / means["retrain_test_acc"])
