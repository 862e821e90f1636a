"""Tests of jaxunlearn.losses: CE/KL values, padding, the ECDF-probit transform, MMD², gradients."""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxunlearn.losses import (
    ECDF_MODES,
    aamu_regulariser,
    cross_entropy,
    ecdf_probit_scores,
    kl_with_temperature,
    log1p_losses,
    mmd2_gaussian,
    probit,
    smoothed_ecdf,
    steepened_loss,
    weighted_mean,
)


def _np_log_softmax(z):
    return z - special.logsumexp(z, axis=-1, keepdims=True)


def _pad(x, n_pad, fill):
    """Append ``n_pad`` garbage rows and return (padded values, weights with 0 on the padding)."""
    x = np.asarray(x)
    fill_rows = np.full((n_pad, *x.shape[1:]), fill, x.dtype)
    w = np.concatenate([np.ones(x.shape[0]), np.zeros(n_pad)]).astype(np.float32)
    return np.concatenate([x, fill_rows]), w


# ---------------------------------------------------------------- CE, KL, means, steepening


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, 6)
    expected = -_np_log_softmax(logits.astype(np.float64))[np.arange(6), labels]
    ce = cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    chex.assert_shape(ce, (6,))
    np.testing.assert_allclose(np.asarray(ce), expected, rtol=1e-5)
    # stable for huge logits: the right class at +1e4 costs 0, the wrong one 2e4
    big = jnp.array([[1e4, -1e4], [1e4, -1e4]])
    np.testing.assert_allclose(np.asarray(cross_entropy(big, jnp.array([0, 1]))), [0.0, 2e4])


def test_kl_with_temperature_matches_formula():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 4)) * 2
    t = rng.normal(size=(5, 4)) * 2
    temp = 2.0
    log_pt, log_ps = _np_log_softmax(t / temp), _np_log_softmax(s / temp)
    # PyTorch KLDivLoss(log_softmax(s/T), softmax(t/T), "batchmean") * T^2
    expected = temp**2 * np.sum(np.exp(log_pt) * (log_pt - log_ps)) / 5
    got = kl_with_temperature(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temp)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # 0 for student == teacher, also up to a per-row constant shift of the logits
    assert float(kl_with_temperature(jnp.asarray(s), jnp.asarray(s), temp)) == pytest.approx(
        0.0, abs=1e-6)
    assert float(kl_with_temperature(jnp.asarray(s), jnp.asarray(s + 3.0), temp)) == pytest.approx(
        0.0, abs=1e-5)
    # a teacher with underflowing probabilities stays finite (0·log 0 = 0)
    hard = jnp.array([[1e4, -1e4, 0.0]])
    assert np.isfinite(float(kl_with_temperature(jnp.zeros((1, 3)), hard, 1.0)))


def test_weighted_mean_and_steepened_loss_values():
    ce = jnp.array([1.0, 2.0, 4.0])
    assert float(weighted_mean(ce)) == pytest.approx(7 / 3)
    assert float(weighted_mean(ce, jnp.array([1.0, 0.0, 3.0]))) == pytest.approx(13 / 4)
    assert float(weighted_mean(ce, jnp.zeros(3))) == 0.0
    assert float(weighted_mean(jnp.zeros(0))) == 0.0
    assert float(steepened_loss(ce)) == pytest.approx((7 / 3) ** 2, rel=1e-6)
    assert float(steepened_loss(ce, mode="per_example_squared")) == pytest.approx(21 / 3)
    with pytest.raises(ValueError, match="batch_mean_squared"):
        steepened_loss(ce, mode="squared")


@jax.jit
def _every_weighted_output(ce, ce_u, s, t, w, wu):
    """Every weighted function of the module on one problem, in one compilation (None = no weights).

    Jitted as a whole: op-by-op dispatch of the n² kernels would dominate the tests' time.
    """
    out = {"mean": weighted_mean(ce, w), "kl": kl_with_temperature(s, t, 2.0, w),
           "mmd": mmd2_gaussian(ce, ce_u, w, wu)}
    for mode in ("batch_mean_squared", "per_example_squared"):
        out[mode] = steepened_loss(ce, w, mode)
    for mode in ECDF_MODES:
        anchor = dict(anchor=ce_u, anchor_weights=wu) if mode == "anchored" else {}
        out[f"q_{mode}"] = smoothed_ecdf(ce, w, mode=mode, **anchor)
        out[f"z_{mode}"] = ecdf_probit_scores(ce, w, mode=mode, **anchor)
        reg = partial(aamu_regulariser, mode=mode)
        out[f"reg_{mode}"], out[f"grad_{mode}"] = jax.value_and_grad(reg)(ce, ce_u, w, wu)
    return out


def test_padding_rows_have_exactly_no_effect():
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    ce = rng.exponential(size=7).astype(np.float32)
    ce_u = rng.exponential(size=9).astype(np.float32)
    ce_p, w = _pad(ce, 3, 1e6)
    ce_up, wu = _pad(ce_u, 2, np.nan)  # even NaN padding must not leak
    s_p, _ = _pad(s, 3, 1e3)
    t_p, _ = _pad(t, 3, -1e3)
    plain = _every_weighted_output(ce, ce_u, s, t, None, None)
    padded = _every_weighted_output(ce_p, ce_up, s_p, t_p, w, wu)
    for name, value in plain.items():
        got = padded[name][:7] if value.ndim else padded[name]
        # MMD² is a difference of O(1) kernel means: float32 rounding is ~1e-7 absolute
        np.testing.assert_allclose(np.asarray(got), np.asarray(value), rtol=1e-6, atol=1e-6,
                                   err_msg=name)
    for mode in ECDF_MODES:
        assert np.all(np.asarray(padded[f"grad_{mode}"][7:]) == 0.0)


# ---------------------------------------------------------------- the smoothed ECDF and probit


# jitted once per shape and mode: op-by-op dispatch of the n² kernels would dominate test time
_scores = jax.jit(ecdf_probit_scores, static_argnames=("mode",))
_ecdf = jax.jit(smoothed_ecdf, static_argnames=("mode",))
_mmd2 = jax.jit(mmd2_gaussian)
_reg = jax.jit(aamu_regulariser, static_argnames=("mode",))


def _hazen_normal_scores(x):
    """Φ⁻¹((r − ½)/n) with r the 1-based (mid-)rank of each value."""
    return stats.norm.ppf((stats.rankdata(x, method="average") - 0.5) / len(x))


@pytest.mark.parametrize("dist", ["normal", "exponential", "lognormal_heavy", "shifted_scaled"])
def test_paper_mode_at_large_k_gives_the_normal_scores_of_any_batch(dist):
    """k → ∞: Q_i → (#{ℓ_j < ℓ_i} + ½ #{ℓ_j = ℓ_i}) / n = (r_i − ½)/n, so Z_i → Φ⁻¹((r_i − ½)/n).

    σ(k d_ij) → 1 for ℓ_j < ℓ_i, 0 for ℓ_j > ℓ_i and ½ for ties (the diagonal included): Q is
    the Hazen plotting position of the rank, whatever the loss distribution. The error of each
    σ term is below e^{−k·gap}, so k·(smallest gap) ≥ 40 makes the limit exact in float32.
    Consequence checked statistically: Z is distribution-free, its empirical CDF sits exactly
    0.5/n from Φ (the KS distance of the Hazen quantiles), and two batches of the same size from
    very different loss distributions give the same Z sample (MMD² = 0): self-ranked modes only
    see the loss spread at scale 1/k.
    """
    rng = np.random.default_rng({"normal": 0, "exponential": 1, "lognormal_heavy": 2,
                                 "shifted_scaled": 3}[dist])
    n = 64
    x = {"normal": lambda: rng.normal(size=n),
         "exponential": lambda: rng.exponential(size=n),
         "lognormal_heavy": lambda: rng.lognormal(0.0, 2.0, size=n),
         "shifted_scaled": lambda: 1e3 + 50.0 * rng.standard_t(2, size=n)}[dist]()
    gap = np.min(np.diff(np.sort(x)))
    k = 40.0 / gap
    z = np.asarray(_scores(jnp.asarray(x, jnp.float32), k=k, mode="paper"))
    np.testing.assert_allclose(z, _hazen_normal_scores(x), atol=2e-4)
    # the KS distance of Z to N(0, 1) is exactly 1/(2n), the raw losses' is large
    assert stats.kstest(z, "norm").statistic == pytest.approx(0.5 / n, abs=1e-4)
    # a second batch from a different distribution: identical Z multiset -> MMD² ≈ 0 at large k
    other = rng.uniform(-1.0, 1.0, size=n)
    k2 = 40.0 / min(gap, np.min(np.diff(np.sort(other))))
    z_other = _scores(jnp.asarray(other, jnp.float32), k=k2, mode="paper")
    z_x = _scores(jnp.asarray(x, jnp.float32), k=k2, mode="paper")
    assert float(_mmd2(z_x, z_other)) < 1e-6
    # at the paper's k = 2 the scores do depend on the spread (unless it is tiny anyway)
    if dist in ("lognormal_heavy", "shifted_scaled"):
        z2 = _scores(jnp.asarray(x, jnp.float32), k=2.0, mode="paper")
        assert float(_mmd2(z2, _scores(jnp.asarray(other, jnp.float32), mode="paper"))) > 1e-3


def test_large_k_limit_with_ties_and_weights():
    x = jnp.array([0.0, 1.0, 1.0, 2.0, 5.0])
    q = _ecdf(x, k=1e4, mode="paper")
    np.testing.assert_allclose(np.asarray(q), (stats.rankdata(x) - 0.5) / 5, atol=1e-6)
    # weighted: Q_i = (Σ_{ℓ_j<ℓ_i} w_j + ½ Σ_{ℓ_j=ℓ_i} w_j) / Σ w
    w = jnp.array([1.0, 2.0, 0.5, 1.0, 0.5])
    qw = np.asarray(_ecdf(x, w, k=1e4, mode="paper"))
    np.testing.assert_allclose(qw, [0.5 / 5, 2.25 / 5, 2.25 / 5, 4.0 / 5, 4.75 / 5], atol=1e-6)


def test_reference_mode_is_nonnegative_and_has_the_half_normal_limit():
    rng = np.random.default_rng(4)
    for _ in range(5):
        x = jnp.asarray(rng.exponential(size=33), jnp.float32)
        z = np.asarray(_scores(x, mode="reference"))
        assert np.all(z >= 0.0)
        q = np.asarray(_ecdf(x, mode="reference"))
        assert np.all((q >= 0.5) & (q < 1.0))
    # k → ∞: Q_i → (r_i − 1 + ½ (n − r_i + 1)) / n = ½ + (r_i − 1)/(2n)
    x = np.array([0.3, 0.1, 2.0, 0.7])
    z = np.asarray(_scores(jnp.asarray(x), k=1e4, mode="reference"))
    r = stats.rankdata(x)
    np.testing.assert_allclose(z, stats.norm.ppf(0.5 + (r - 1) / 8), atol=1e-4)


def test_anchored_mode_separates_low_forget_losses_from_matched_ones():
    rng = np.random.default_rng(5)
    unseen = rng.exponential(2.0, size=128).astype(np.float32) + 1.0
    matched = rng.exponential(2.0, size=128).astype(np.float32) + 1.0
    memorised = rng.exponential(0.01, size=128).astype(np.float32)  # far below the unseen losses
    lt = log1p_losses(unseen)

    def z_anchored(ce):
        return np.asarray(_scores(log1p_losses(ce), mode="anchored", anchor=lt))

    z_low, z_match = z_anchored(memorised), z_anchored(matched)
    # at k = 2 the logistic kernel is wide in log(1 + CE) units, so Q ≈ mean_j σ(−2 ℓ_j^T) ≈ 0.09
    assert np.all(z_low < -1.0) and np.mean(z_low) < -1.2
    assert abs(np.mean(z_match)) < 0.3 and np.all(np.isfinite(z_low))
    reg = {m: [float(_reg(ce, unseen, mode=m)) for ce in (memorised, matched)]
           for m in ECDF_MODES}
    low, match = reg["anchored"]
    assert low > 0.5 and match < 0.02
    # the self-ranked paper mode only sees the spread (here the memorised losses are also
    # narrower): its signal is more than ten times weaker
    assert reg["paper"][0] < 0.1 * low


def test_scores_are_symmetric_and_keep_gradient_in_far_tails():
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=20), jnp.float32)
    np.testing.assert_allclose(np.asarray(_scores(-x, mode="paper")),
                               -np.asarray(_scores(x, mode="paper")), atol=1e-6)
    anchor = jnp.full((4,), 10.0)
    # far below (Q = σ(−20) ≈ 2e-9) and far above (1 − Q ≈ 2e-9): mirror images, both accurate
    lo = _scores(jnp.zeros(1), mode="anchored", anchor=anchor)
    hi = _scores(jnp.full((1,), 20.0), mode="anchored", anchor=anchor)
    np.testing.assert_allclose(float(lo[0]), stats.norm.ppf(special.expit(-20.0)), rtol=1e-4)
    np.testing.assert_allclose(float(hi[0]), -float(lo[0]), rtol=1e-5)
    # the gradient there follows dZ/dΔ ≈ √(k/(2Δ)) instead of vanishing with the sigmoid
    g = jax.grad(lambda v: _scores(v, mode="anchored", anchor=anchor)[0])(jnp.zeros(1))
    assert 0.25 < float(g[0]) < 0.4
    # the clip: |Z| never exceeds Φ⁻¹(1 − 1e-30) = 11.46
    z = _scores(jnp.array([0.0, 1e6]), mode="anchored", anchor=jnp.array([5e5]))
    np.testing.assert_allclose(np.asarray(z), [-11.464, 11.464], atol=1e-3)


def test_probit_values():
    q = jnp.array([0.5, stats.norm.cdf(1.3), 0.0, 1.0])
    np.testing.assert_allclose(np.asarray(probit(q, kappa=60.0)), [0.0, 1.3, -60.0, 60.0],
                               atol=1e-5)
    assert float(probit(jnp.array(1e-12), kappa=3.0)) == -3.0


@jax.jit
def _degenerate_outputs(f_ce, u_ce, fw, uw):
    out = {}
    for mode in ECDF_MODES:
        reg = partial(aamu_regulariser, mode=mode)
        out[mode] = jax.value_and_grad(reg, argnums=(0, 1))(f_ce, u_ce, fw, uw)
        anchor = dict(anchor=u_ce, anchor_weights=uw) if mode == "anchored" else {}
        out[f"q_{mode}"] = smoothed_ecdf(f_ce, fw, mode=mode, **anchor)
        out[f"z_{mode}"] = ecdf_probit_scores(f_ce, fw, mode=mode, **anchor)
    return out


@pytest.mark.parametrize("case", ["ties", "one", "huge", "zeros", "no_weight"])
def test_degenerate_batches_stay_finite(case):
    ones = jnp.ones(4)
    f_ce, u_ce, fw, uw = {  # shapes shared across cases, so they share one compilation
        "ties": (jnp.full((4,), 0.7), jnp.full((4,), 0.7), ones, ones),
        "one": (jnp.array([0.3]), jnp.array([2.0]), jnp.ones(1), jnp.ones(1)),
        "huge": (jnp.array([1e6, 1e6, 0.0, 3.0]), jnp.array([1e6, 0.0, 1e-3, 5.0]), ones, ones),
        "zeros": (jnp.zeros(4), jnp.zeros(4), ones, ones),
        "no_weight": (jnp.arange(4.0), jnp.arange(4.0) + 0.5, jnp.zeros(4), jnp.zeros(4)),
    }[case]
    out = _degenerate_outputs(f_ce, u_ce, fw, uw)
    chex.assert_tree_all_finite(out)
    for mode in ECDF_MODES:
        val, (_, g_unseen) = out[mode]
        assert float(val) >= -1e-6
        assert np.all(np.asarray(g_unseen) == 0.0)
    if case in ("ties", "one", "zeros"):
        # identical losses (or a single one) sit at the median: Q = ½, Z = 0
        np.testing.assert_allclose(np.asarray(out["z_paper"]), 0.0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(out["q_reference"]), 0.5, atol=1e-6)
    if case == "no_weight":
        assert all(float(out[mode][0]) == 0.0 for mode in ECDF_MODES)


def test_smoothed_ecdf_stays_strictly_inside_unit_interval():
    q = _ecdf(jnp.array([0.0, 1e6]), mode="anchored", anchor=jnp.array([5e5]))
    assert 0.0 < float(q[0]) < 1e-6 and 1.0 - 1e-6 < float(q[1]) < 1.0
    assert np.all(np.isfinite(np.asarray(probit(q))))


def test_invalid_modes_and_anchor_use_are_clear_errors():
    x = jnp.ones(3)
    with pytest.raises(ValueError, match=r"\['paper', 'reference', 'anchored'\]"):
        ecdf_probit_scores(x, mode="papr")
    with pytest.raises(ValueError, match="anchored"):
        aamu_regulariser(x, x, mode="both")
    with pytest.raises(ValueError, match="anchor=None"):
        smoothed_ecdf(x, mode="anchored")
    with pytest.raises(ValueError, match="only used"):
        smoothed_ecdf(x, mode="paper", anchor=x)
    with pytest.raises(ValueError, match="shape"):
        mmd2_gaussian(x, x, weights_a=jnp.ones(2))
    with pytest.raises(ValueError, match="1-D"):
        ecdf_probit_scores(jnp.ones((2, 2)))


# ---------------------------------------------------------------- MMD²


def _mmd2_double_loop(a, b, wa, wb, sigma):
    def k(u, v):
        return np.exp(-((u - v) ** 2) / (2 * sigma**2))

    pa, pb = wa / wa.sum(), wb / wb.sum()
    total = 0.0
    for i in range(len(a)):
        for j in range(len(a)):
            total += pa[i] * pa[j] * k(a[i], a[j])
    for i in range(len(b)):
        for j in range(len(b)):
            total += pb[i] * pb[j] * k(b[i], b[j])
    for i in range(len(a)):
        for j in range(len(b)):
            total -= 2 * pa[i] * pb[j] * k(a[i], b[j])
    return total


def test_mmd2_matches_double_loop_and_its_properties():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=6), rng.normal(0.5, 2.0, size=9)
    wa, wb = rng.uniform(0.2, 1.0, 6), rng.uniform(0.2, 1.0, 9)
    for sigma in (1.0, 0.5):
        got = float(_mmd2(jnp.asarray(a), jnp.asarray(b), jnp.asarray(wa),
                                  jnp.asarray(wb), sigma=sigma))
        np.testing.assert_allclose(got, _mmd2_double_loop(a, b, wa, wb, sigma), rtol=1e-5)
    ab = float(_mmd2(jnp.asarray(a), jnp.asarray(b)))
    ba = float(_mmd2(jnp.asarray(b), jnp.asarray(a)))
    assert ab > 0 and ab == pytest.approx(ba, rel=1e-6)
    np.testing.assert_allclose(ab, _mmd2_double_loop(a, b, np.ones(6), np.ones(9), 1.0), rtol=1e-5)
    assert float(_mmd2(jnp.asarray(a), jnp.asarray(a))) == pytest.approx(0.0, abs=1e-7)
    # same multiset in another order is the same distribution
    assert float(_mmd2(jnp.asarray(a), jnp.asarray(a[::-1]))) == pytest.approx(0.0,
                                                                                      abs=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        mmd2_gaussian(jnp.asarray(a), jnp.asarray(b), sigma=0.0)


# ---------------------------------------------------------------- gradients, jit


@pytest.mark.parametrize("mode", ECDF_MODES)
def test_aamu_regulariser_gradient_matches_finite_differences_in_float64(mode):
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        forget = jnp.asarray(rng.exponential(1.0, size=10), jnp.float64)
        unseen = jnp.asarray(rng.exponential(1.5, size=12) + 0.2, jnp.float64)
        fw = jnp.asarray(np.r_[np.ones(8), 0.0, 0.5])
        f = jax.jit(partial(aamu_regulariser, mode=mode))
        g_f, g_u = jax.jit(jax.grad(f, argnums=(0, 1)))(forget, unseen, fw)
        assert g_f.dtype == jnp.float64
        h = 1e-6
        fd = np.array([(float(f(forget.at[i].add(h), unseen, fw))
                        - float(f(forget.at[i].add(-h), unseen, fw))) / (2 * h)
                       for i in range(forget.shape[0])])
        np.testing.assert_allclose(np.asarray(g_f), fd, rtol=1e-6, atol=1e-9)
        assert np.any(np.abs(fd) > 1e-4)
        assert g_f[8] == 0.0  # zero-weight row
        # the unseen branch is a stop_gradient target: exactly zero, not merely small
        assert np.all(np.asarray(g_u) == 0.0)
    assert jnp.zeros(1).dtype == jnp.float32  # the x64 context was restored


def test_jit_and_eager_agree_for_the_kernels():
    rng = np.random.default_rng(9)
    f_ce = jnp.asarray(rng.exponential(size=16), jnp.float32)
    u_ce = jnp.asarray(rng.exponential(size=16), jnp.float32)
    w = jnp.asarray(rng.integers(0, 2, 16), jnp.float32)
    s = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    t = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)

    def kernels(f_ce, u_ce, s, t, w):
        out = {"kl": kl_with_temperature(s, t, 2.0, w), "mmd": mmd2_gaussian(f_ce, u_ce, w, w),
               "steep": steepened_loss(f_ce, w)}
        for mode in ECDF_MODES:
            anchor = dict(anchor=u_ce, anchor_weights=w) if mode == "anchored" else {}
            out[f"q_{mode}"] = smoothed_ecdf(f_ce, w, mode=mode, **anchor)
            out[f"reg_{mode}"] = aamu_regulariser(f_ce, u_ce, w, w, mode=mode)
        out["grad"] = jax.grad(partial(aamu_regulariser, mode="anchored"))(f_ce, u_ce, w, w)
        return out

    jitted = jax.jit(kernels)(f_ce, u_ce, s, t, w)
    eager = kernels(f_ce, u_ce, s, t, w)
    chex.assert_trees_all_close(jitted, eager, rtol=1e-4, atol=1e-6)


def test_one_ecdf_default_for_the_library_functions_and_the_methods():
    """A caller of the loss functions gets the same regulariser as the registered A-* methods."""
    import inspect

    from jaxunlearn.losses import DEFAULT_ECDF
    from jaxunlearn.unlearn import aamu, factory_defaults

    assert DEFAULT_ECDF == "reference"
    for fn in (smoothed_ecdf, ecdf_probit_scores, aamu_regulariser):
        assert inspect.signature(fn).parameters["mode"].default == DEFAULT_ECDF, fn.__name__
    assert inspect.signature(aamu.aamu_objective).parameters["ecdf"].default == DEFAULT_ECDF
    for name in ("a_cf", "a_scrub", "a_sparse"):
        assert factory_defaults(name)["ecdf"] == DEFAULT_ECDF, name
    ce_f = jnp.linspace(0.1, 3.0, 16)
    ce_t = jnp.linspace(0.5, 2.0, 16)
    assert float(aamu_regulariser(ce_f, ce_t)) == float(
        aamu_regulariser(ce_f, ce_t, mode="reference"))
