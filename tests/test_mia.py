"""Tests of jaxunlearn.mia: the logit-scaled confidence and the paper's MIA score."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.mia import MIAOutput, logit_confidence, mia_from_scores, mia_score


def _naive_confidence(logits, labels):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p_y = p[np.arange(len(labels)), labels]
    return np.log(p_y) - np.log(1.0 - p_y)


def test_logit_confidence_matches_the_naive_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)) * 3
    labels = rng.integers(0, 10, 50)
    got = np.asarray(logit_confidence(jnp.asarray(logits, jnp.float32), labels))
    np.testing.assert_allclose(got, _naive_confidence(logits, labels), rtol=1e-4, atol=1e-4)


def test_logit_confidence_is_finite_and_monotone_for_huge_logits():
    rng = np.random.default_rng(1)
    others = rng.uniform(-1e4, 1e4, size=(1, 5))
    sweep = np.linspace(-2e4, 2e4, 401)
    logits = np.concatenate([sweep[:, None], np.repeat(others, 401, axis=0)], axis=1)
    phi = np.asarray(logit_confidence(jnp.asarray(logits, jnp.float32), np.zeros(401, int)))
    assert np.all(np.isfinite(phi))
    assert np.all(np.diff(phi) > 0)  # strictly increasing in the label's logit
    # exact value: z_y − logsumexp_{j≠y} z_j, to float32 rounding at this magnitude
    lse = others.max() + np.log(np.sum(np.exp(others - others.max())))
    np.testing.assert_allclose(phi, sweep - lse, atol=5e-3)
    # a label logit far above the rest: the naive formula would give log(1) − log(0) = inf
    big = jnp.array([[1e4, 0.0, -1e4]])
    assert float(logit_confidence(big, np.array([0]))[0]) == pytest.approx(1e4, rel=1e-6)


def test_identical_distributions_score_about_fifty():
    rng = np.random.default_rng(2)
    out = mia_from_scores(rng.normal(size=3000), rng.normal(size=4000), seed=0)
    assert isinstance(out, MIAOutput) and out.n == 3000
    assert abs(out.score - 50.0) < 3.0 and abs(out.auc - 50.0) < 3.0
    assert 0.0 <= out.tpr_at_01fpr <= out.tpr_at_1fpr <= 100.0
    assert out.tpr_at_1fpr < 5.0  # a useless attack has TPR ≈ FPR


def test_separated_scores_in_either_direction_are_detected():
    rng = np.random.default_rng(3)
    high = mia_from_scores(rng.normal(size=400) + 6.0, rng.normal(size=500))
    assert high.score > 99.5 and high.auc > 99.5 and high.tpr_at_1fpr > 90.0
    # members *less* confident than non-members: the classifier learns the sign of the feature,
    # so the plain AUC is high too and the swap rule is not needed
    low = mia_from_scores(rng.normal(size=400) - 6.0, rng.normal(size=500))
    assert low.score > 99.5 and low.auc == low.score
    for out in (high, low):
        assert 0.0 <= out.tpr_at_01fpr <= out.tpr_at_1fpr <= 100.0


def test_swap_rule_turns_a_low_auc_into_its_complement():
    """The swap flips the labels for the same CV predictions: score = 100 − auc when auc ≤ 42.

    AUCs far below 50 come from cross-validation on nearly indistinguishable small groups (each
    fold's model is fitted on data tilted against its held-out part), so small null samples
    produce them regularly.
    """
    swapped = 0
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        members, nonmembers = rng.normal(size=10), rng.normal(size=12)
        out = mia_from_scores(members, nonmembers, seed=seed)
        if out.auc <= 42.0:
            swapped += 1
            assert out.score == pytest.approx(100.0 - out.auc)
            assert out.score > 58.0
        else:
            assert out.score == out.auc
        plain = mia_from_scores(members, nonmembers, seed=seed, swap_threshold=-1.0)
        assert plain.score == plain.auc == out.auc
    assert swapped >= 3


def test_mia_is_deterministic_by_seed_and_truncates_by_a_seeded_draw():
    rng = np.random.default_rng(4)
    members = rng.normal(size=60)
    # the first 60 non-members are far away, the other 940 look like the members
    nonmembers = np.r_[rng.normal(size=60) + 10.0, rng.normal(size=940)]
    a = mia_from_scores(members, nonmembers, seed=7)
    assert a == mia_from_scores(members, nonmembers, seed=7)
    assert a.n == 60
    # keeping the first rows would separate the groups perfectly (AUC 100); a seeded draw of 60
    # out of 1000 holds ≈ 4 shifted rows
    assert a.auc < 80.0
    others = {mia_from_scores(members, nonmembers, seed=s).auc for s in range(1, 4)}
    assert len(others | {a.auc}) > 1


@pytest.mark.parametrize("members,nonmembers,match", [
    (np.zeros(4), np.zeros(10), "at least 5"),
    (np.zeros(10), np.zeros(3), "at least 5"),
    (np.r_[np.zeros(9), np.nan], np.zeros(10), "finite"),
    (np.zeros((10, 2)), np.zeros(10), "1-D"),
])
def test_mia_rejects_bad_inputs(members, nonmembers, match):
    with pytest.raises(ValueError, match=match):
        mia_from_scores(members, nonmembers)


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
