"""The method interface: registry, runner timing and compile caching, errors."""

import chex
import jax
import numpy as np
import pytest

from jaxunlearn.models import build_model, init_params
from jaxunlearn.unlearn import available_methods, make_method, make_unlearn_data, run_method


@pytest.fixture(scope="module")
def setup(blobs):
    x, y = blobs
    model = build_model("convnet", 4, depth=2, width=8)

    def init_fn(key):
        return init_params(model, key, x.shape[1:])

    forget = y == 0
    data = make_unlearn_data((x[~forget][:80], y[~forget][:80]), (x[forget], y[forget]),
                             (x[~forget][80:], y[~forget][80:]), 4)
    return model, init_fn, data


def test_registry_has_the_foundation_methods():
    names = available_methods()
    assert {"retrain", "cf"} <= set(names)


def test_unknown_method_and_bad_hparams_are_clear_errors():
    with pytest.raises(ValueError, match="unknown unlearning method 'nope'"):
        make_method("nope", lambda p, x: x)
    with pytest.raises(ValueError, match="bad hyper-parameters for method 'cf'"):
        make_method("cf", lambda p, x: x, not_a_param=1)
    with pytest.raises(ValueError, match="init_fn"):
        make_method("retrain", lambda p, x: x)


def test_run_method_is_deterministic_and_compiles_once(setup):
    model, init_fn, data = setup
    params = init_fn(jax.random.key(0))
    method = make_method("cf", model.apply, epochs=2, lr=0.01, batch_size=16)
    a = run_method(method, params, data, jax.random.key(1))
    b = run_method(method, params, data, jax.random.key(1))
    chex.assert_trees_all_equal(a.params, b.params)
    chex.assert_trees_all_equal_structs(a.params, params)
    assert a.compile_s > 0 and b.compile_s < 0.05 * a.compile_s + 0.01
    assert a.unlearn_s > 0 and len(a.history) == 2
    # the caller's parameters are not donated away
    chex.assert_tree_all_finite(params)


def test_retrain_starts_from_a_fresh_model(setup):
    model, init_fn, data = setup
    params = init_fn(jax.random.key(0))
    method = make_method("retrain", model.apply, init_fn=init_fn, epochs=1, lr=0.01,
                         batch_size=16, warmup_epochs=0)
    out = run_method(method, params, data, jax.random.key(1))
    # one epoch of small steps from another init stays far from the original parameters
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(params),
                                   strict=True))
    assert diff > 0.05


def test_unseen_pool_keeps_only_the_forgotten_classes_and_caps_the_aamu_sample():
    from jaxunlearn.unlearn.aamu import sample_forget_unseen

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8, 8, 1)).astype(np.float32)
    y = np.repeat(np.arange(3), 100).astype(np.int32)
    data = make_unlearn_data((x[100:], y[100:]), (x[:40], y[:40]), (x, y), 3)
    assert int(data.unseen.n) == 100 and set(np.asarray(data.unseen.y[:100])) == {0}
    s = sample_forget_unseen(jax.random.key(0), data, 256)
    # the unseen sample has the restricted pool's capacity, not 256 slots of mostly padding
    assert s.unseen_x.shape[0] == data.unseen.y.shape[0] < 256
    assert float(s.unseen_w.sum()) == 100.0 and set(np.asarray(s.unseen_y)[np.asarray(
        s.unseen_w) > 0]) == {0}
    # no unseen example of a forgotten class: an empty pool, no error
    empty = make_unlearn_data((x[100:], y[100:]), (x[:40], y[:40]), (x[100:], y[100:]), 3)
    assert int(empty.unseen.n) == 0


def test_evaluation_during_unlearning_pauses_the_clock_and_leaves_the_run_unchanged(setup):
    import time

    model, init_fn, data = setup
    params = init_fn(jax.random.key(0))
    # 80 retain images at batch 16: 5 steps per epoch, 3 epochs = 15 steps
    method = make_method("cf", model.apply, epochs=3, lr=0.01, batch_size=16)
    plain = run_method(method, params, data, jax.random.key(1))
    seen = []

    def eval_fn(p):
        seen.append(jax.tree.map(np.asarray, p))
        time.sleep(0.05)  # an evaluation far slower than a step: must not enter unlearn_s
        return {"w0": float(np.asarray(jax.tree.leaves(p)[0]).ravel()[0])}

    t0 = time.perf_counter()
    out = run_method(method, params, data, jax.random.key(1), eval_every=4, eval_fn=eval_fn)
    wall = time.perf_counter() - t0
    # evaluations do not change the run: same final parameters as without them
    chex.assert_trees_all_equal(out.params, plain.params)
    # before the first step, every 4th step, and the last step (15 is not a multiple of 4)
    assert [p["step"] for p in out.curve] == [0, 4, 8, 12, 15]
    assert out.steps == plain.steps == 15
    chex.assert_trees_all_equal(seen[0], jax.tree.map(np.asarray, params))
    chex.assert_trees_all_equal(seen[-1], jax.tree.map(np.asarray, out.params))
    times = [p["unlearn_s"] for p in out.curve]
    assert times == sorted(times) and times[-1] == out.unlearn_s
    # 5 sleeps of 50 ms are in eval_s and not in unlearn_s
    assert out.eval_s >= 0.25 and out.unlearn_s <= wall - 0.25
    assert all(set(p) == {"step", "unlearn_s", "w0"} for p in out.curve)
    # a step count that is a multiple of eval_every is not evaluated twice
    out = run_method(method, params, data, jax.random.key(1), eval_every=5, eval_fn=eval_fn)
    assert [p["step"] for p in out.curve] == [0, 5, 10, 15]
    assert plain.curve == [] and plain.eval_s == 0.0


def test_eval_every_needs_a_positive_interval_and_an_eval_fn(setup):
    model, init_fn, data = setup
    params = init_fn(jax.random.key(0))
    method = make_method("cf", model.apply, epochs=1, lr=0.01, batch_size=16)
    with pytest.raises(ValueError, match="eval_every"):
        run_method(method, params, data, jax.random.key(1), eval_every=3)
    with pytest.raises(ValueError, match="eval_every"):
        run_method(method, params, data, jax.random.key(1), eval_every=0, eval_fn=lambda p: {})
