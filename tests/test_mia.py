"""Tests of jaxunlearn.mia: the logit-scaled confidence and the paper's MIA score."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.mia import MIAOutput, logit_confidence, mia_from_scores, mia_score

_LN_1E15 = float(np.log(1e15))  # 34.54: where the reference's stable_phi saturates


def _naive_confidence(logits, labels):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p_y = p[np.arange(len(labels)), labels]
    return np.log(p_y) - np.log(1.0 - p_y)


def test_logit_confidence_matches_the_naive_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)) * 3
    labels = rng.integers(0, 10, 50)
    for phi in ("reference", "exact"):  # the clamps do not bite at moderate logits
        got = np.asarray(logit_confidence(jnp.asarray(logits, jnp.float32), labels, phi=phi))
        np.testing.assert_allclose(got, _naive_confidence(logits, labels), rtol=1e-4, atol=1e-4)


def _stable_phi(logits, labels):
    """The reference's stable_phi (utils/lira_mia.py), transcribed to numpy in float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    ce = -(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))  # CrossEntropyLoss per class
    e = np.exp(-np.clip(ce, 0.0, 50.0))
    pos = np.log(np.maximum(e[np.arange(len(labels)), labels], 1e-15))
    others = e.sum(axis=1) - e[np.arange(len(labels)), labels]
    return pos - np.log(np.maximum(others, 1e-15))


def test_reference_phi_clamps_like_stable_phi_and_saturates():
    rng = np.random.default_rng(9)
    # logits from moderate to extreme, so every clamp of stable_phi is reached
    logits = rng.normal(size=(300, 10)) * np.geomspace(0.1, 200.0, 300)[:, None]
    labels = rng.integers(0, 10, 300)
    got = np.asarray(logit_confidence(jnp.asarray(logits, jnp.float32), labels))
    want = _stable_phi(logits, labels)
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert got.max() == pytest.approx(_LN_1E15, abs=1e-3)
    assert got.min() == pytest.approx(-_LN_1E15, abs=1e-3)
    exact = np.asarray(logit_confidence(jnp.asarray(logits, jnp.float32), labels, phi="exact"))
    assert np.abs(exact).max() > 100.0  # unbounded
    with pytest.raises(ValueError, match="phi must be one of"):
        logit_confidence(jnp.asarray(logits), labels, phi="clamped")


def test_logit_confidence_is_finite_and_monotone_for_huge_logits():
    rng = np.random.default_rng(1)
    others = rng.uniform(-1e4, 1e4, size=(1, 5))
    sweep = np.linspace(-2e4, 2e4, 401)
    logits = np.concatenate([sweep[:, None], np.repeat(others, 401, axis=0)], axis=1)
    phi = np.asarray(logit_confidence(jnp.asarray(logits, jnp.float32), np.zeros(401, int),
                                      phi="exact"))
    assert np.all(np.isfinite(phi))
    assert np.all(np.diff(phi) > 0)  # strictly increasing in the label's logit
    # exact value: z_y − logsumexp_{j≠y} z_j, to float32 rounding at this magnitude
    lse = others.max() + np.log(np.sum(np.exp(others - others.max())))
    np.testing.assert_allclose(phi, sweep - lse, atol=5e-3)
    # a label logit far above the rest: the naive formula would give log(1) − log(0) = inf
    big = jnp.array([[1e4, 0.0, -1e4]])
    assert float(logit_confidence(big, np.array([0]), phi="exact")[0]) == pytest.approx(
        1e4, rel=1e-6)


def test_identical_distributions_score_about_fifty():
    rng = np.random.default_rng(2)
    out = mia_from_scores(rng.normal(size=3000), rng.normal(size=4000), rng.normal(size=9000),
                          seed=0)
    assert isinstance(out, MIAOutput) and out.n == 3000
    assert abs(out.score - 50.0) < 3.0 and abs(out.auc - 50.0) < 3.0
    assert 0.0 <= out.tpr_at_01fpr <= out.tpr_at_1fpr <= 100.0
    assert out.tpr_at_1fpr < 5.0  # a useless attack has TPR ≈ FPR


def test_separated_scores_in_either_direction_are_detected():
    rng = np.random.default_rng(3)
    high = mia_from_scores(rng.normal(size=400) + 6.0, rng.normal(size=500), swap="none")
    assert high.score > 99.5 and high.auc > 99.5 and high.tpr_at_1fpr > 90.0
    # members *less* confident than non-members: the classifier learns the sign of the feature,
    # so the plain AUC is high too and the swap rule is not needed
    low = mia_from_scores(rng.normal(size=400) - 6.0, rng.normal(size=500), swap="none")
    assert low.score > 99.5 and low.auc == low.score
    for out in (high, low):
        assert 0.0 <= out.tpr_at_01fpr <= out.tpr_at_1fpr <= 100.0


def _low_auc_cases(n_cases=16):
    """Small null samples: cross-validation gives AUCs far below 50 for some of them."""
    for seed in range(n_cases):
        rng = np.random.default_rng(100 + seed)
        yield seed, rng, rng.normal(size=10), rng.normal(size=12)


def test_reference_swap_compares_members_with_the_test_split_of_every_class():
    """auc ≤ 42: a second attack, members against the test split; the larger AUC is the score.

    Test examples of every class sit far from the members here (as images of other classes do
    for a forgotten class), so the swap's AUC is ≈ 100, not 100 − auc.
    """
    swapped = 0
    for seed, rng, members, nonmembers in _low_auc_cases():
        far = rng.normal(size=200) + 8.0
        out = mia_from_scores(members, nonmembers, far, seed=seed)
        if out.auc <= 42.0:
            swapped += 1
            assert out.swap_auc is not None and out.swap_auc > 95.0
            assert out.score == max(out.auc, out.swap_auc)
        else:
            assert out.swap_auc is None and out.score == out.auc
        # same distribution for the test split: the swap's AUC is another near-chance AUC
        same = mia_from_scores(members, nonmembers, rng.normal(size=200), seed=seed)
        assert same.auc == out.auc  # the first attack does not depend on the test split
        if same.swap_auc is not None:
            assert same.swap_auc < 90.0
        none = mia_from_scores(members, nonmembers, swap="none", seed=seed)
        assert none.score == none.auc == out.auc and none.swap_auc is None
    assert swapped >= 3
    with pytest.raises(ValueError, match="needs test_scores"):
        mia_from_scores(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="swap must be one of"):
        mia_from_scores(np.zeros(10), np.zeros(10), swap="max")


def test_flip_swap_turns_a_low_auc_into_its_complement():
    """The option ``swap="flip"``: a label flip of the same CV predictions, 100 − auc."""
    swapped = 0
    for seed, _, members, nonmembers in _low_auc_cases():
        out = mia_from_scores(members, nonmembers, seed=seed, swap="flip")
        if out.auc <= 42.0:
            swapped += 1
            assert out.score == pytest.approx(100.0 - out.auc)
            assert out.score > 58.0
        else:
            assert out.score == out.auc
        plain = mia_from_scores(members, nonmembers, seed=seed, swap="flip", swap_threshold=-1.0)
        assert plain.score == plain.auc == out.auc
    assert swapped >= 3


def test_the_logistic_regression_sees_raw_scores_unless_standardize():
    """The reference fits on the raw φ; ``standardize=True`` puts a StandardScaler first.

    With tiny, near-chance scores the L2 penalty (C = 1) shrinks the raw fit's slope towards 0
    while the standardised fit keeps it, which changes the pooled CV predictions.
    """
    differs = 0
    for seed, _, members, nonmembers in _low_auc_cases(10):
        raw = mia_from_scores(members * 1e-3, nonmembers * 1e-3, swap="none", seed=seed)
        std = mia_from_scores(members * 1e-3, nonmembers * 1e-3, swap="none", seed=seed,
                              standardize=True)
        scaled = mia_from_scores(members, nonmembers, swap="none", seed=seed, standardize=True)
        assert std.auc == pytest.approx(scaled.auc)  # the scaler removes the scale
        differs += raw.auc != pytest.approx(std.auc)
    assert differs >= 1


def test_mia_is_deterministic_by_seed_and_truncates_by_a_seeded_draw():
    rng = np.random.default_rng(4)
    members = rng.normal(size=60)
    # the first 60 non-members are far away, the other 940 look like the members
    nonmembers = np.r_[rng.normal(size=60) + 10.0, rng.normal(size=940)]
    a = mia_from_scores(members, nonmembers, nonmembers, seed=7)
    assert a == mia_from_scores(members, nonmembers, nonmembers, seed=7)
    assert a.n == 60
    # keeping the first rows would separate the groups perfectly (AUC 100); a seeded draw of 60
    # out of 1000 holds ≈ 4 shifted rows
    assert a.auc < 80.0
    others = {mia_from_scores(members, nonmembers, swap="none", seed=s).auc for s in range(1, 4)}
    assert len(others | {a.auc}) > 1


@pytest.mark.parametrize("members,nonmembers,match", [
    (np.zeros(4), np.zeros(10), "at least 5"),
    (np.zeros(10), np.zeros(3), "at least 5"),
    (np.r_[np.zeros(9), np.nan], np.zeros(10), "finite"),
    (np.zeros((10, 2)), np.zeros(10), "1-D"),
])
def test_mia_rejects_bad_inputs(members, nonmembers, match):
    with pytest.raises(ValueError, match=match):
        mia_from_scores(members, nonmembers, swap="none")


def _toy_model(params, x):
    """Logits are the inputs themselves, scaled: x is [n, 1, 1, C]."""
    return params * x.reshape(x.shape[0], -1)


def _toy_set(rng, n, labels, margin):
    """Examples whose logit on the label is ``margin`` above noise logits."""
    c = 3
    y = np.asarray(labels if np.ndim(labels) else np.full(n, labels))
    z = rng.normal(size=(len(y), c))
    z[np.arange(len(y)), y] += margin + rng.normal(size=len(y))
    return z.reshape(len(y), 1, 1, c).astype(np.float32), y.astype(np.int32)


def test_mia_score_uses_test_examples_of_the_forget_classes_only():
    rng = np.random.default_rng(5)
    # the forget set (class 0) is as confident as the class-0 test examples; class-2 test
    # examples are much less confident and must not be used as non-members
    fx, fy = _toy_set(rng, 600, 0, 4.0)
    t0x, t0y = _toy_set(rng, 600, 0, 4.0)
    t2x, t2y = _toy_set(rng, 3000, 2, -4.0)  # had they been drawn, the AUC would be ≈ 90
    tx, ty = np.concatenate([t0x, t2x]), np.concatenate([t0y, t2y])
    out = mia_score(_toy_model, 1.0, fx, fy, tx, ty, seed=0, batch_size=256)
    assert out.n == 600
    assert abs(out.auc - 50.0) < 5.0
    # made confident on the forget set only: now it is detected
    fx_mem, _ = _toy_set(rng, 600, 0, 10.0)
    detected = mia_score(_toy_model, 1.0, fx_mem, fy, tx, ty, seed=0, batch_size=256)
    assert detected.score > 95.0
    with pytest.raises(ValueError, match="forget classes"):
        mia_score(_toy_model, 1.0, fx, np.full(600, 1, np.int32), tx, ty)
    with pytest.raises(ValueError, match="forget examples"):
        mia_score(_toy_model, 1.0, fx[:4], fy[:4], tx, ty)


def test_mia_score_hands_the_whole_test_split_to_the_swap():
    """mia_score = mia_from_scores(φ(forget), φ(test of the forget classes), φ(test, all))."""
    rng = np.random.default_rng(6)
    fx, fy = _toy_set(rng, 12, 0, 1.0)
    t0x, t0y = _toy_set(rng, 14, 0, 1.0)
    t1x, t1y = _toy_set(rng, 40, 1, 6.0)
    tx, ty = np.concatenate([t1x, t0x]), np.concatenate([t1y, t0y])
    phi = lambda x, y: np.asarray(logit_confidence(_toy_model(1.0, jnp.asarray(x)), y))
    swapped = 0
    for seed in range(6):
        got = mia_score(_toy_model, 1.0, fx, fy, tx, ty, seed=seed)
        want = mia_from_scores(phi(fx, fy), phi(tx, ty)[ty == 0], phi(tx, ty), seed=seed)
        assert got == want
        swapped += got.swap_auc is not None
    assert swapped >= 1
