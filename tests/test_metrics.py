"""Tests of jaxunlearn.metrics: chunked prediction compiled once, accuracy, confidence intervals."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxunlearn.metrics import (
    accuracy,
    accuracy_from_logits,
    confidence_interval,
    predict_logits,
)


def _linear_apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def _linear_problem(n, seed=0, c=3):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(8 * 8 * 1, c)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(c,)), jnp.float32)}
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    return params, x


def test_predict_logits_compiles_once_for_any_number_of_examples():
    apply_fn = chex.assert_max_traces(_linear_apply, n=1)
    params, x = _linear_problem(23)
    expected = np.asarray(_linear_apply(params, x))
    # 23 rows in chunks of 8: two full chunks and an overlapping last one; 5 rows: one padded
    # chunk; 8 rows: exactly one chunk; a device array of 17 rows: the same compiled function
    for n, data in ((23, x), (5, x[:5]), (8, x[:8]), (17, jnp.asarray(x[:17]))):
        got = predict_logits(apply_fn, params, data, batch_size=8)
        assert isinstance(got, np.ndarray)
        chex.assert_shape(got, (n, 3))
        np.testing.assert_allclose(got, expected[:n], rtol=1e-5, atol=1e-5)


def test_predict_logits_of_an_empty_set_has_the_class_axis():
    params, x = _linear_problem(0, c=7)
    out = predict_logits(_linear_apply, params, x)
    assert out.shape == (0, 7) and out.dtype == np.float32


def test_accuracy_is_exact_on_a_toy_model():
    # logits are the first 4 pixels of the top row: the prediction is the argmax of the row
    def apply_fn(params, x):
        return x[:, 0, :4, 0] * params

    x = np.zeros((8, 8, 8, 1), np.float32)
    pred = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    x[np.arange(8), 0, pred, 0] = 1.0
    y = np.array([0, 1, 2, 0, 1, 1, 3, 3])  # 5 of 8 right
    assert accuracy(apply_fn, 1.0, x, y, batch_size=3) == 62.5
    assert accuracy(apply_fn, 1.0, jnp.asarray(x), jnp.asarray(y)) == 62.5
    assert accuracy_from_logits(np.eye(4)[pred], y) == 62.5
    assert np.isnan(accuracy(apply_fn, 1.0, x[:0], y[:0]))
    assert np.isnan(accuracy_from_logits(np.zeros((0, 4)), np.zeros(0, int)))
    with pytest.raises(ValueError, match="same n"):
        accuracy(apply_fn, 1.0, x, y[:5])


def test_evaluate_unlearning_reports_the_test_accuracy_of_the_retained_classes():
    from jaxunlearn.evaluate import evaluate_unlearning

    def apply_fn(params, x):  # predicts the class written in the first pixel
        return jax.nn.one_hot(x[:, 0, 0, 0].astype(jnp.int32), 3) * params

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20).astype(np.int32)
    pred = y.copy()
    pred[y == 1] = (rng.random(20) < 0.5) + 1   # class 1: about half right
    pred[np.flatnonzero(y == 2)[:5]] = 0        # class 2: 15 of 20 right
    x = np.zeros((60, 8, 8, 1), np.float32)
    x[:, 0, 0, 0] = pred
    forget = (x[y == 0], y[y == 0])
    out = evaluate_unlearning(apply_fn, 1.0, retain=(x[y > 0], y[y > 0]), forget=forget,
                              test=(x, y))
    kept = y > 0
    assert out["test_retained_acc"] == pytest.approx(100.0 * (pred[kept] == y[kept]).mean())
    assert out["test_acc"] == pytest.approx(100.0 * (pred == y).mean())
    # every class has a forgotten example (uniform forgetting): no retained class
    out = evaluate_unlearning(apply_fn, 1.0, retain=(x, y), forget=(x[::6], y[::6]),
                              test=(x, y))
    assert out["test_retained_acc"] is None


def test_confidence_interval_is_student_t():
    values = [71.2, 74.9, 73.1]
    mean, half = confidence_interval(values)
    s = np.std(values, ddof=1)
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * s / np.sqrt(3))
    assert half == pytest.approx(4.303 * s / np.sqrt(3), rel=1e-3)  # the ×4.30 of 3 seeds
    _, half90 = confidence_interval(values, confidence=0.9)
    assert half90 == pytest.approx(stats.t.ppf(0.95, 2) * s / np.sqrt(3))
    one = confidence_interval([5.0])
    assert one[0] == 5.0 and np.isnan(one[1])
    assert confidence_interval([2.0, 2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        confidence_interval([])
    with pytest.raises(ValueError, match="confidence"):
        confidence_interval(values, confidence=95)


def test_predict_logits_rejects_bad_batch_size():
    params, x = _linear_problem(4)
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(_linear_apply, params, x, batch_size=0)
