"""Per-example membership audits (jaxunlearn.audit): U-LiRA and the forgetting quality."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from jaxunlearn import audit
from jaxunlearn.mia import logit_confidence, tpr_at_fpr

# --------------------------------------------------------------------------------------------
# logit_confidence (jaxunlearn.mia), as the audits compute it


def test_logit_confidence_matches_softmax_log_odds():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(3, 5, 7))
    labels = rng.integers(0, 7, size=(3, 5))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p_y = np.take_along_axis(p, labels[..., None], axis=-1)[..., 0]
    phi = logit_confidence(logits, labels, phi="exact")
    chex.assert_shape(phi, (3, 5))
    np.testing.assert_allclose(phi, np.log(p_y / (1.0 - p_y)), rtol=1e-10, atol=1e-10)


def test_logit_confidence_is_finite_and_exact_for_extreme_logits():
    logits = jnp.array([[1e3, -1e3, 0.0], [1e3, -1e3, 0.0], [-1e3, -1e3, 1e3]])
    phi = logit_confidence(logits, jnp.array([0, 1, 0]), phi="exact")
    assert np.all(np.isfinite(phi))
    # z_y − logsumexp of the others: 1e3 − log(e^-1e3 + 1), −1e3 − (1e3 + log(1 + e^-1e3)), …
    np.testing.assert_allclose(phi, [1e3, -2e3, -2e3], rtol=1e-12)


@pytest.mark.parametrize("logits, labels", [
    (np.zeros((4, 1)), np.zeros(4, int)),        # one class
    (np.zeros((4, 3)), np.zeros(5, int)),        # label count mismatch
    (np.zeros((4, 3)), np.full(4, 3)),           # label out of range
    (np.zeros((4, 3)), np.zeros(4)),             # float labels
    (np.full((4, 3), np.nan), np.zeros(4, int)),  # NaN logits
])
def test_logit_confidence_rejects_bad_inputs(logits, labels):
    with pytest.raises(ValueError):
        logit_confidence(logits, labels, phi="exact")


# --------------------------------------------------------------------------------------------
# fit_gaussians / lira_scores against a hand computation


def test_fit_gaussians_and_lira_scores_by_hand():
    rng = np.random.default_rng(1)
    sh_u = rng.normal(1.0, 2.0, size=(9, 4))
    sh_r = rng.normal(0.0, 1.0, size=(7, 4))
    targets = rng.normal(0.5, 1.5, size=(3, 4))

    fit_u = audit.fit_gaussians(sh_u)
    fit_r = audit.fit_gaussians(sh_r)
    np.testing.assert_allclose(fit_u.mu, sh_u.mean(0))
    np.testing.assert_allclose(fit_u.std, sh_u.std(0))  # ddof = 0, as LiRA's np.std
    expected = (stats.norm.logpdf(targets, sh_u.mean(0), sh_u.std(0))
                - stats.norm.logpdf(targets, sh_r.mean(0), sh_r.std(0)))
    lam = audit.lira_scores(targets, fit_u, fit_r)
    chex.assert_shape(lam, (3, 4))
    np.testing.assert_allclose(lam, expected, rtol=1e-10, atol=1e-10)

    # median location (LiRA's reference code)
    fit_med = audit.fit_gaussians(sh_u, location="median")
    np.testing.assert_allclose(fit_med.mu, np.median(sh_u, 0))

    # "fixed variance": each population's pooled within-example std, shared by all examples
    s_u, s_r = np.sqrt(np.mean(sh_u.std(0) ** 2)), np.sqrt(np.mean(sh_r.std(0) ** 2))
    expected_global = (stats.norm.logpdf(targets, sh_u.mean(0), s_u)
                       - stats.norm.logpdf(targets, sh_r.mean(0), s_r))
    np.testing.assert_allclose(audit.lira_scores(targets, fit_u, fit_r, variance="global"),
                               expected_global, rtol=1e-10, atol=1e-10)


def test_fit_gaussians_floors_a_degenerate_example():
    phi = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])  # example 0 constant over shadows
    fit = audit.fit_gaussians(phi, min_std=1e-3)
    np.testing.assert_allclose(fit.std, [1e-3, np.std([0.0, 1.0, 2.0])])
    lam = audit.lira_scores(np.array([[1.5, 1.0]]), fit, audit.fit_gaussians(phi + 1.0))
    assert np.all(np.isfinite(lam))


# --------------------------------------------------------------------------------------------
# U-LiRA: controls


def _populations(seed, *, shift, k=32, s=64, t=16):
    """φ of unlearned/retrained shadows and targets: per-example N(μ_k + shift·σ_k, σ_k)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 2.0, k)
    sd = rng.uniform(0.5, 2.0, k)

    def draw(n, shift_):
        return mu + shift_ * sd + sd * rng.standard_normal((n, k))

    return draw(s, shift), draw(s, 0.0), draw(t, shift), draw(t, 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ulira_null_control(seed):
    # Unlearned and retrained scores from one distribution (what Retrain looks like).
    res = audit.ulira(*_populations(seed, shift=0.0), n_boot=200, seed=seed)
    assert res.n_pairs == (16 + 16) * 32
    # Pairs share target models and examples, so they are correlated and the binomial SE on
    # n_pairs is optimistic; the bound of 3 SE is checked on a few seeds (in this simulation the
    # examples are drawn independently, so the correlation is weak).
    se = audit.binomial_se(0.5, res.n_pairs)
    assert abs(res.accuracy - 0.5) < 3 * se
    assert abs(res.auc - 0.5) < 3 * audit.auc_null_se(16 * 32, 16 * 32)
    assert res.accuracy_ci[0] <= 0.5 <= res.accuracy_ci[1]
    assert res.auc_ci[0] <= 0.5 <= res.auc_ci[1]
    # The best-threshold accuracy is optimistic by construction.
    assert res.best_accuracy >= max(res.accuracy, 0.5)
    # Bookkeeping: shapes, per-example aggregation, ROC ends.
    chex.assert_shape([res.per_example_accuracy, res.per_example_auc], (32,))
    chex.assert_shape(res.per_example_accuracy_ci, (32, 2))
    chex.assert_shape([res.scores_unlearned, res.scores_retrained], (16, 32))
    np.testing.assert_allclose(res.accuracy, res.per_example_accuracy.mean())
    assert np.all(res.per_example_accuracy_ci[:, 0] <= res.per_example_accuracy)
    assert np.all(res.per_example_accuracy <= res.per_example_accuracy_ci[:, 1])
    assert (res.fpr[0], res.tpr[0], res.fpr[-1], res.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(res.fpr) >= 0) and np.all(np.diff(res.tpr) >= 0)


def test_ulira_positive_control_matches_gaussian_theory():
    # Unlearned shifted by +1 std per example: d = 1, so the LR test at Λ > 0 is right with
    # probability Φ(d/2) on each side, the AUC is Φ(d/√2) and TPR at 1% FPR is Φ(d − z_0.99).
    res = audit.ulira(*_populations(0, shift=1.0), n_boot=200, seed=0)
    se = audit.binomial_se(0.69, res.n_pairs)
    assert abs(res.accuracy - stats.norm.cdf(0.5)) < 3 * se
    assert abs(res.auc - stats.norm.cdf(1 / np.sqrt(2))) < 3 * audit.auc_null_se(512, 512)
    assert res.accuracy_ci[0] > 0.55
    assert res.tpr_at_1 > 0.01
    assert res.tpr_at_1_ci[0] > 0.01
    assert stats.norm.cdf(1 - stats.norm.ppf(0.99)) == pytest.approx(0.092, abs=1e-3)
    assert res.per_example_auc.mean() > 0.7


def test_ulira_bootstrap_is_seeded_and_optional():
    pops = _populations(3, shift=0.5, k=8, s=8, t=6)
    a = audit.ulira(*pops, n_boot=50, seed=7)
    b = audit.ulira(*pops, n_boot=50, seed=7)
    assert a.accuracy_ci == b.accuracy_ci and a.tpr_at_01_ci == b.tpr_at_01_ci
    c = audit.ulira(*pops, n_boot=0)
    assert c.n_boot == 0 and np.isnan(c.auc_ci[0]) and c.auc == a.auc


def test_roc_auc_and_tpr_interpolation_by_hand():
    # pos 3, 1 and neg 2, 0: points (0, 0), (0, .5), (.5, .5), (.5, 1), (1, 1); AUC 0.75.
    fpr, tpr = audit._roc(np.array([3.0, 1.0]), np.array([2.0, 0.0]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert audit._auc(fpr, tpr) == pytest.approx(0.75)
    assert tpr_at_fpr(fpr, tpr, 0.0) == 0.5  # top of the vertical segment
    assert tpr_at_fpr(fpr, tpr, 0.25) == 0.5
    assert tpr_at_fpr(fpr, tpr, 0.5) == 1.0
    # Ties count one half, as sklearn's roc_auc_score.
    rng = np.random.default_rng(4)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 30).astype(float)
    auc = audit._auc(*audit._roc(pos, neg))
    assert auc == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(30)], np.r_[pos, neg]))


def test_wilson_interval_and_standard_errors():
    lo, hi = audit.wilson_interval(0.0, 20)
    z2 = stats.norm.ppf(0.975) ** 2
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(z2 / (20 + z2))
    chex.assert_shape(audit.wilson_interval(np.full(5, 0.5), 32), (5, 2))
    assert audit.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert audit.auc_null_se(10, 10) == pytest.approx(np.sqrt(21 / 1200))


# --------------------------------------------------------------------------------------------
# forgetting_quality


def _reference_epsilon(pos, neg, delta=1e-5):
    """One example's ε, written out as metric.py of google-deepmind/unlearning_evaluation does it
    (one boolean matrix per rule family, one linspace of left ends per right end)."""
    pd, nd = np.ptp(pos), np.ptp(neg)
    if min(pd, nd) / max(pd, nd) < 0.01:
        return 50.0
    p, q = (neg, pos) if pd >= nd else (pos, neg)  # double family: positive = narrower
    w = min(pd, nd)
    lo, hi = p.min() + w - 2.0, p.max() + 2.0
    rights = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
    n_left = int(np.ceil(2 * 2.0 * 100))
    lefts = np.concatenate([np.linspace(r - w - 2.0, r - w + 2.0, n_left) for r in rights])
    rights = np.repeat(rights, n_left)

    def inside(c):
        return (lefts[None] <= c[:, None]) & (c[:, None] <= rights[None])

    all_c = np.concatenate([pos, neg])
    t = np.linspace(all_c.min(), all_c.max(), int(np.ceil((all_c.max() - all_c.min()) * 100)))
    tpr = np.r_[inside(p).mean(0), (pos[:, None] >= t).mean(0)]
    fpr = np.r_[inside(q).mean(0), (neg[:, None] >= t).mean(0)]
    fnr = np.r_[(~inside(p)).mean(0), (pos[:, None] < t).mean(0)]
    eps = np.zeros(tpr.size)
    eps[(fpr + fnr) == 0] = np.inf
    eps[(eps == 0) & (fpr * fnr == 0)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        formula = np.clip(np.nanmax([np.log(1 - delta - fpr) - np.log(fnr),
                                     np.log(1 - delta - fnr) - np.log(fpr)], axis=0), 0, None)
    eps = np.where(eps == 0, formula, eps)
    return float(np.clip(np.nanmax(eps), 0, 50))


def test_forgetting_quality_matches_a_direct_transcription_of_metric_py():
    rng = np.random.default_rng(5)
    u = rng.normal(0.0, 1.0, size=(6, 3)) + np.array([0.0, 1.0, -0.7])
    r = rng.normal(0.0, 1.3, size=(6, 3))
    fq = audit.forgetting_quality(u, r)
    retrain_pos = np.median(r, 0) > np.median(u, 0)
    expected = [_reference_epsilon(*((r[:, j], u[:, j]) if retrain_pos[j] else (u[:, j], r[:, j])))
                for j in range(3)]
    np.testing.assert_allclose(fq.epsilon, expected, rtol=1e-12)


def test_forgetting_quality_hand_computed_case():
    # Example 0: unlearned 0,1,2,3 vs retrained 0.5,1.5,2.5,3.5 (retrained has the larger
    # median, so it is the positive). The best attacks: φ ≥ t for t in (2, 2.5] (TPR 2/4,
    # FPR 1/4) or the interval [0, 1] for the unlearned (TPR 2/4, FPR 1/4): ε = log((1/2 − δ)/
    # (1/4)) = log(2 − 4δ) ≈ 0.693. Other thresholds either discard (one rate 0) or give less.
    # With N = 4 the buckets run to ⌈log 3⌉ = 2: [0, .5) → 1, [.5, 1) → 1/2, [1, 1.5) → 1/4,
    # [1.5, 2) → 1/8, beyond → 0.
    # Example 1: unlearned nearly constant (range 0.001 against 3: "peaky"): ε = cap, score 0.
    # Example 2: both populations equal: every kept threshold has TPR = FPR, so both log terms
    # are negative and ε = 0, score 1.
    u = np.array([[0.0, 1, 2, 3], [1, 1, 1, 1.001], [0, 1, 2, 3]]).T
    r = np.array([[0.5, 1.5, 2.5, 3.5], [0, 1, 2, 3], [0, 1, 2, 3]]).T
    fq = audit.forgetting_quality(u, r)
    np.testing.assert_allclose(fq.epsilon, [np.log(2 - 4e-5), 50.0, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(fq.example_score, [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(fq.capped, [False, True, False])
    assert fq.score == pytest.approx(0.5)
    assert fq.n_models == 4 and fq.bucket_limit == 2.0
    assert fq.max_epsilon == pytest.approx(np.log(4 * (1 - 1e-5) - 1))


def test_forgetting_quality_identical_shifted_and_separated_populations():
    rng = np.random.default_rng(6)
    n, k = 64, 6
    mu, sd = rng.normal(0.0, 2.0, k), rng.uniform(0.5, 2.0, k)

    def draw(shift):
        return mu + shift * sd + sd * rng.standard_normal((n, k))

    same = audit.forgetting_quality(draw(0.0), draw(0.0))
    shifted = audit.forgetting_quality(draw(1.0), draw(0.0))
    apart = audit.forgetting_quality(draw(50.0), draw(0.0))
    assert same.max_epsilon == pytest.approx(np.log(n * (1 - 1e-5) - 1))
    # Identical populations: ε well below what 64 models resolve (biased above 0, see the
    # docstring), the highest score of the three.
    assert np.all(same.epsilon < 0.75 * same.max_epsilon) and not same.capped.any()
    assert same.score > 2 * shifted.score > 0
    # Perfectly separated: some threshold has FPR = FNR = 0, so ε = ∞ → the cap, which is at or
    # above every finite estimate N models can give; score 0, the lowest possible.
    np.testing.assert_array_equal(apart.epsilon, audit.CHALLENGE_EPSILON_CAP)
    assert np.all(apart.epsilon >= apart.max_epsilon) and apart.capped.all()
    assert apart.score == 0.0
    assert np.all(same.epsilon <= same.max_epsilon + 1e-12)


def test_challenge_score_is_forgetting_quality_times_utility_ratios():
    fq = audit.ForgettingQuality(np.zeros(1), np.ones(1), 0.5, 4, 1.0, 2.0, np.zeros(1, bool),
                                 1e-5)
    got = audit.challenge_score(fq, [0.8, 1.0], 0.8, 1.0, [0.8, 0.9])
    assert got == pytest.approx(0.5 * 0.9 / 1.0 * 0.8 / 0.85)
    assert audit.challenge_score(0.25, 0.9, 0.8, 0.9, 0.8) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        audit.challenge_score(0.5, 0.9, 0.8, 0.0, 0.8)


# --------------------------------------------------------------------------------------------
# Bad inputs


def _ok(s=4, k=3):
    return np.zeros((s, k)) + np.arange(s)[:, None]


@pytest.mark.parametrize("args, match", [
    ((_ok(), _ok(), _ok(2, 3), _ok(2, 4)), "same number of examples"),  # K mismatch
    ((_ok(1, 3), _ok(), _ok(2), _ok(2)), "at least 2 models"),            # S < 2
    ((_ok(4, 0), _ok(4, 0), _ok(2, 0), _ok(2, 0)), "at least one example"),  # K = 0
    ((_ok(), _ok(), np.full((2, 3), np.nan), _ok(2)), "finite"),          # NaN scores
    ((_ok()[0], _ok(), _ok(2), _ok(2)), "2-D"),                          # wrong rank
])
def test_ulira_rejects_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        audit.ulira(*args, n_boot=0)


def test_other_functions_reject_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 models"):
        audit.fit_gaussians(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="location"):
        audit.fit_gaussians(_ok(), location="mode")
    fit = audit.fit_gaussians(_ok())
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        audit.lira_scores(_ok(2, 4), fit, fit)
    with pytest.raises(ValueError, match="variance"):
        audit.lira_scores(_ok(2), fit, fit, variance="fixed")
    with pytest.raises(ValueError, match="same shape"):
        audit.forgetting_quality(_ok(4, 3), _ok(5, 3))
    with pytest.raises(ValueError, match="at least 3 models"):
        audit.forgetting_quality(_ok(2, 3), _ok(2, 3))
    with pytest.raises(ValueError, match="finite"):
        audit.forgetting_quality(np.full((4, 3), np.nan), _ok())
    with pytest.raises(ValueError, match="ci"):
        audit.ulira(_ok(), _ok(), _ok(2), _ok(2), ci=95)
    with pytest.raises(ValueError, match="n_boot"):
        audit.ulira(_ok(), _ok(), _ok(2), _ok(2), n_boot=-1)
