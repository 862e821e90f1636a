"""The paper's membership-inference score (docs/method.md §6), as the reference code computes it.

Per example, the logit-scaled confidence φ = log p_y − log Σ_{j≠y} p_j (:func:`logit_confidence`).
By default φ is the reference's ``stable_phi``: each cross-entropy −log p_j is clamped to
[0, 50] before it is exponentiated, and both the label's term and the sum of the others are
clamped at 1e-15 before the log, so φ saturates at ±ln(1e15) ≈ ±34.54 (``phi="reference"``).
``phi="exact"`` computes z_y − logsumexp_{j≠y} z_j from the logits, exact and unbounded.

Members (the positives) are the forget set; non-members are the evaluation-test examples of the
classes present in the forget set. Both are truncated to the same size ``n``. A one-feature
logistic regression (scikit-learn defaults, C = 1, fitted on the raw φ as in the reference;
``standardize=True`` puts a StandardScaler before it) is evaluated by 5-fold stratified
cross-validated ``predict_proba``; the ROC-AUC of those pooled predictions, in percent, is the
plain ``auc``. TPR at 1% and 0.1% FPR are read from that same ROC curve.

The swap rule, ``score`` (``swap="reference"``, the default). This is what the reference's
``LiRA_MIA`` does, and it is odd. If ``auc ≤ 42`` it calls the attack a second time with its two
loaders exchanged. The exchanged call reads its "forget classes" from the first loader, which is
now the evaluation test split: every class. So the second AUC is not a relabelling of the first:
it sets the forget set against evaluation-test images of *every* class (class-wise forgetting:
images of the forgotten class against mostly other classes, which a model separates easily, so
it usually lands far above 50; uniform forgetting: another near-chance AUC on another draw). The
score is the larger of the two AUCs. A score therefore jumps at ``auc = 42`` and does not rank
models smoothly: studies that rank methods by membership (forgetting curves, U-LiRA) use the
plain ``auc``. ``swap="flip"`` is this library's earlier rule, a label flip of the same
cross-validated predictions (``score = max(auc, 100 − auc)`` when ``auc ≤ 42``); ``swap="none"``
returns ``score = auc``.

What the options change, measured (``bench/mia_options.py`` on the 87 models of the embedded
class-wise study, 2026-12-01): ``phi="exact"`` nothing (no φ reached the clamps); the scaler
moves the plain AUC by 0.08 on average (at most 2.1), which changed one score by 48.8 because it
crossed the swap threshold; the swap rule is what matters (28 of 87 plain AUCs are ≤ 42; the
label flip would change those scores by 7.7 on average, at most 38). Under uniform forgetting
one model of 87 is swapped and the scaler moves the AUC by ≤ 0.1.

One deliberate difference: the reference truncates each group to its *first* ``n`` rows (loader
order); here both groups (and, for the swap, the test split) are truncated by a seeded draw
without replacement, so that the score does not depend on the order of the data.

Why an AUC below 50 happens at all: the classifier learns the direction of the feature, so
members whose confidence is lower than the non-members' are detected as well (``auc`` near
100); an ``auc`` well below 50 arises from cross-validation itself (folds fitted on slightly
different data rank the pooled held-out predictions inconsistently, typically when the two
groups are nearly indistinguishable). 50 means indistinguishable from unseen data, the ideal
after unlearning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from jaxunlearn.metrics import predict_logits

__all__ = ["MIAOutput", "PHI_MODES", "SWAP_RULES", "logit_confidence", "mia_from_scores",
           "mia_nonmember_index", "mia_score", "tpr_at_fpr"]

_N_FOLDS = 5
PHI_MODES = ("reference", "exact")
SWAP_RULES = ("reference", "flip", "none")
_CE_MAX = 50.0       # the reference's clamp of each cross-entropy
_LOG_FLOOR = float(np.log(1e-15))  # the reference's clamp inside both logs


class MIAOutput(NamedTuple):
    """Result of the MIA; AUC-like values and TPRs in percent."""

    score: float  # the paper's score (see the module docstring's swap rule)
    auc: float  # plain ROC-AUC × 100 of the cross-validated predictions (members positive)
    tpr_at_1fpr: float  # TPR (%) at 1% FPR, plain orientation
    tpr_at_01fpr: float  # TPR (%) at 0.1% FPR, plain orientation
    n: int  # examples per group after truncation (members = non-members = n)
    swap_auc: float | None = None  # the reference swap's second AUC, when it ran


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")


def logit_confidence(logits_NxC: Any, labels_N: Any, *, phi: str = "reference") -> np.ndarray:
    """Logit-scaled confidence φ = log p_y − log Σ_{j≠y} p_j per example (docs/method.md §6).

    Args:
      logits_NxC: logits [..., C], C ≥ 2 (numpy or jax array).
      labels_N: integer labels [...] in [0, C), the leading shape of the logits.
      phi: ``"reference"`` (default, the paper's MIA): the reference's ``stable_phi``, in
        float32 as the reference computes it: the cross-entropies ``−log p_j`` are clamped to
        [0, 50], exponentiated, and the label's term and the sum of the others clamped at 1e-15
        before the log, so φ ∈ [−34.54, 34.54]. ``"exact"`` (the per-example audits of
        :mod:`jaxunlearn.audit`): z_y − logsumexp_{j≠y} z_j in float64, which equals
        log(p_y / (1 − p_y)) but never forms the probabilities, so it is finite and exact for
        logits of any magnitude. (The unlearning challenge's ``compute_logit_scaled_confidence``
        adds 1e-45 inside both logs, which bounds φ to about ±103.6; LiRA's ``score.py`` forms
        the same ratio from probabilities. They agree with this one wherever they do not
        saturate.)

    Returns:
      φ [...]: float32 (``reference``) or float64 (``exact``), on the host.

    Raises:
      ValueError: an unknown mode, logits without a class axis of C ≥ 2, labels of another
        shape, non-integer or out of range, or (``exact``) non-finite logits.
    """
    _choice("phi", phi, PHI_MODES)
    z = np.asarray(logits_NxC)
    y = np.asarray(labels_N)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"logits must have a last axis of C >= 2 classes [..., C]; got shape "
                         f"{z.shape}")
    if y.shape != z.shape[:-1]:
        raise ValueError(f"labels must have the leading shape of the logits {z.shape[:-1]}; got "
                         f"shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {y.dtype}")
    n_classes = z.shape[-1]
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}); got range [{y.min()}, {y.max()}]")
    is_label = y[..., None] == np.arange(n_classes)
    if phi == "exact":
        z = z.astype(np.float64)
        if not np.all(np.isfinite(z)):
            raise ValueError("logits must be finite; got NaN or infinite entries")
        z_y = np.take_along_axis(z, y[..., None].astype(np.intp), axis=-1)[..., 0]
        return z_y - special.logsumexp(np.where(is_label, -np.inf, z), axis=-1)
    return np.asarray(_stable_phi(jnp.asarray(z, jnp.promote_types(z.dtype, jnp.float32)),
                                  jnp.asarray(is_label)))


def _stable_phi(z: jax.Array, is_label: jax.Array) -> jax.Array:
    # op by op, as the reference's torch code (not fused under jit)
    ce = jnp.clip(-jax.nn.log_softmax(z, axis=-1), 0.0, _CE_MAX)
    p = jnp.exp(-ce)
    positive = jnp.log(jnp.maximum(jnp.sum(jnp.where(is_label, p, 0.0), axis=-1), 1e-15))
    negative = jnp.log(jnp.maximum(jnp.sum(jnp.where(is_label, 0.0, p), axis=-1), 1e-15))
    return positive - negative


def _scores_1d(scores: Any, name: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-example scores; got shape {s.shape}")
    if s.shape[0] < _N_FOLDS:
        raise ValueError(f"{name} needs at least {_N_FOLDS} examples for {_N_FOLDS}-fold "
                         f"stratified cross-validation; got {s.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite; got {int(np.sum(~np.isfinite(s)))} "
                         "non-finite values")
    return s


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """TPR of the ROC curve ``(fpr, tpr)`` (ascending) at FPR ``target``, linear between points,
    the top of a vertical step (the MIA score's and the U-LiRA audit's low-FPR columns)."""
    i = int(np.searchsorted(fpr, target, side="right")) - 1  # last point with fpr <= target
    if i + 1 >= len(fpr) or fpr[i] == target:
        return float(tpr[i])
    frac = (target - fpr[i]) / (fpr[i + 1] - fpr[i])
    return float(tpr[i] + frac * (tpr[i + 1] - tpr[i]))


def _cv_attack(members: np.ndarray, nonmembers: np.ndarray, rng: np.random.Generator,
               cv_seed: int, standardize: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Seeded truncation to equal sizes, 5-fold CV ``predict_proba``: (labels, p(member), n)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(members.shape[0], nonmembers.shape[0])
    members = members[rng.choice(members.shape[0], n, replace=False)]
    nonmembers = nonmembers[rng.choice(nonmembers.shape[0], n, replace=False)]
    x = np.concatenate([members, nonmembers])[:, None]
    y = np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)])
    clf = (make_pipeline(StandardScaler(), LogisticRegression()) if standardize
           else LogisticRegression())
    cv = StratifiedKFold(n_splits=_N_FOLDS, shuffle=True, random_state=cv_seed)
    return y, cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1], n


def mia_from_scores(member_scores: Any, nonmember_scores: Any, test_scores: Any = None, *,
                    seed: int = 0, swap_threshold: float = 42.0, swap: str = "reference",
                    standardize: bool = False) -> MIAOutput:
    """The paper's MIA from per-example scores (method.md §6; the module docstring has the details).

    Args:
      member_scores: scores [n_m] of members (the forget set; the positives).
      nonmember_scores: scores [n_u] of non-members (evaluation-test examples of the forget
        classes; the negatives).
      test_scores: scores [n_t] of the evaluation test split, *every* class; the reference's
        swap compares the members against them. Required with ``swap="reference"``.
      seed: seeds the truncation draws and the fold shuffles; same seed, same numbers.
      swap_threshold: the swap runs when the plain AUC is ≤ this (the reference: 42).
      swap: ``"reference"`` (default; score = max(auc, AUC of members against the test split of
        every class)), ``"flip"`` (score = max(auc, 100 − auc)) or ``"none"`` (score = auc).
      standardize: a StandardScaler before the logistic regression (the reference has none).

    Returns:
      :class:`MIAOutput`. ``n = min(n_m, n_u)``; ``swap_auc`` is the swap's AUC when it ran.

    Raises:
      ValueError: fewer than 5 examples in a group, a non-1-D or non-finite score array, an
        unknown ``swap``, or ``swap="reference"`` without ``test_scores``.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    _choice("swap", swap, SWAP_RULES)
    members = _scores_1d(member_scores, "member_scores")
    nonmembers = _scores_1d(nonmember_scores, "nonmember_scores")
    if swap == "reference":
        if test_scores is None:
            raise ValueError('swap="reference" needs test_scores, the scores of the evaluation '
                             'test split of every class; pass them, or swap="flip"/"none"')
        test_all = _scores_1d(test_scores, "test_scores")
    y, p, n = _cv_attack(members, nonmembers, np.random.default_rng(seed), seed, standardize)
    auc = float(roc_auc_score(y, p) * 100.0)
    fpr, tpr, _ = roc_curve(y, p)
    score, swap_auc = auc, None
    if auc <= swap_threshold and swap == "flip":
        score = max(auc, 100.0 - auc)
    elif auc <= swap_threshold and swap == "reference":
        y2, p2, _ = _cv_attack(members, test_all, np.random.default_rng((seed, 1)), seed,
                               standardize)
        swap_auc = float(roc_auc_score(y2, p2) * 100.0)
        score = max(auc, swap_auc)
    return MIAOutput(score=score, auc=auc, tpr_at_1fpr=100.0 * tpr_at_fpr(fpr, tpr, 0.01),
                     tpr_at_01fpr=100.0 * tpr_at_fpr(fpr, tpr, 0.001), n=int(n),
                     swap_auc=swap_auc)


def mia_nonmember_index(forget_y: Any, test_y: Any) -> np.ndarray:
    """Rows of the test split that are the MIA's non-members (its examples of the forget classes).

    Args:
      forget_y: ``[n_f]`` labels of the forget set; test_y: ``[n_t]`` labels of the test split.

    Returns:
      ``[m]`` indices into the test split.

    Raises:
      ValueError: fewer than 5 members or non-members (5-fold cross-validation needs 5 of each);
        cheap, so a study checks it before training anything.
    """
    forget_y, test_y = np.asarray(forget_y), np.asarray(test_y)
    keep = np.flatnonzero(np.isin(test_y, np.unique(forget_y)))
    for count, what in ((forget_y.shape[0], "forget examples"),
                        (keep.shape[0], "test examples of the forget classes")):
        if count < _N_FOLDS:
            raise ValueError(f"the MIA needs at least {_N_FOLDS} {what} for {_N_FOLDS}-fold "
                             f"cross-validation; got {count}")
    return keep


def mia_score(apply_fn: Callable, params: Any, forget_x: Any, forget_y: Any, test_x: Any,
              test_y: Any, *, seed: int = 0, batch_size: int = 512, phi: str = "reference",
              swap: str = "reference", standardize: bool = False) -> MIAOutput:
    """The paper's MIA of a model on its forget set (docs/method.md §6).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      params: the model to attack.
      forget_x, forget_y: the forget set [n_f, ...], [n_f] (members).
      test_x, test_y: the evaluation test split (all classes); its examples of the classes
        present in ``forget_y`` are the non-members, and all of it is the reference swap's
        second group.
      seed: seed of the truncations and the cross-validation.
      batch_size: evaluation chunk size.
      phi, swap, standardize: see :func:`logit_confidence` and :func:`mia_from_scores`.

    Returns:
      :class:`MIAOutput` (50 = indistinguishable from unseen data).

    Raises:
      ValueError: mismatched shapes, or fewer than 5 members or matching non-members (checked
        before any model evaluation).
    """
    _choice("phi", phi, PHI_MODES)
    _choice("swap", swap, SWAP_RULES)
    forget_y, test_y = np.asarray(forget_y), np.asarray(test_y)
    if np.shape(forget_x)[:1] != forget_y.shape or np.shape(test_x)[:1] != test_y.shape:
        raise ValueError("forget/test inputs and labels must have the same number of examples; "
                         f"got {np.shape(forget_x)}/{forget_y.shape} and "
                         f"{np.shape(test_x)}/{test_y.shape}")
    keep = mia_nonmember_index(forget_y, test_y)
    member = logit_confidence(predict_logits(apply_fn, params, forget_x, batch_size), forget_y,
                              phi=phi)
    test_phi = np.asarray(logit_confidence(predict_logits(apply_fn, params, test_x, batch_size),
                                           test_y, phi=phi))
    return mia_from_scores(np.asarray(member), test_phi[keep], test_phi, seed=seed, swap=swap,
                           standardize=standardize)
