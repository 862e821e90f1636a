import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import optim, pools, train
from jaxunlearn.models import build_model, init_params


def test_bucket_size_shares_capacity_and_bounds_padding():
    assert pools.bucket_size(10) == 64
    for n in (65, 100, 727, 735, 4500, 45000):
        cap = pools.bucket_size(n)
        assert n <= cap < 1.25 * n + 1
    assert pools.bucket_size(727) == pools.bucket_size(735)


def test_make_pool_pads_and_rejects_mismatch():
    x = np.ones((5, 2, 2, 1), np.float32)
    pool = pools.make_pool(x, np.arange(5), capacity=8)
    chex.assert_shape(pool.x, (8, 2, 2, 1))
    assert int(pool.n) == 5 and float(pool.x[5:].sum()) == 0
    with pytest.raises(ValueError, match="differ in length"):
        pools.make_pool(x, np.arange(4))


def test_epoch_order_visits_each_valid_row_once():
    order = np.asarray(pools.epoch_order(jax.random.key(0), jnp.arange(48) < 37, 16))
    assert order.shape == (3, 16)
    valid = order[order >= 0]
    assert sorted(valid.tolist()) == list(range(37))
    # padding only at the end
    flat = order.reshape(-1)
    assert (flat[37:] == -1).all()


def test_cosine_with_warmup_values():
    s = optim.cosine_with_warmup(0.1, epochs=10, warmup_epochs=2)
    np.testing.assert_allclose([s(0), s(1), s(2)], [0.05, 0.1, 0.1])
    np.testing.assert_allclose(s(6), 0.1 * 0.5 * (1 + np.cos(np.pi * 4 / 8)))
    assert s(9) < s(8) < s(2)


def test_sgd_is_pytorch_style_with_coupled_weight_decay():
    tx = optim.sgd(0.1, momentum=0.9, weight_decay=0.01)
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, 0.5])}
    state = tx.init(p)
    buf = np.zeros(2)
    pw = np.array([1.0, -2.0])
    for _ in range(3):
        upd, state = tx.update(g, state, p)
        p = optax.apply_updates(p, upd)
        d = 0.5 + 0.01 * pw  # torch: d_p = grad + wd * p; buf = m*buf + d_p; p -= lr*buf
        buf = 0.9 * buf + d
        pw = pw - 0.1 * buf
    np.testing.assert_allclose(np.asarray(p["w"]), pw, rtol=1e-6)


def test_set_learning_rate_changes_the_update():
    tx = optim.sgd(0.1)
    p = {"w": jnp.ones(2)}
    state = optim.set_learning_rate(tx.init(p), 0.5)
    upd, _ = tx.update({"w": jnp.ones(2)}, state, p)
    np.testing.assert_allclose(np.asarray(upd["w"]), -0.5)


def _tiny_model_and_data(blobs):
    x, y = blobs
    model = build_model("convnet", 4, depth=2, width=8)
    params = init_params(model, jax.random.key(0), x.shape[1:])
    return model, params, x, y


def test_fit_learns_and_selects_best_validation_epoch(blobs):
    model, params, x, y = _tiny_model_and_data(blobs)
    pool = pools.make_pool(x[:120], y[:120])
    out = train.fit(model.apply, params, pool, jax.random.key(1), epochs=4, batch_size=32,
                    optimizer=optim.sgd(0.05, 0.9), val=(x[120:], y[120:]))
    accs = [h["val_acc"] for h in out.history]
    # the best validation accuracy, ties going to the latest such epoch
    assert out.best_epoch == len(accs) - 1 - int(np.argmax(accs[::-1]))
    assert out.best_val_acc == max(accs) > 80.0
    chex.assert_trees_all_equal_structs(out.params, params)
    chex.assert_tree_all_finite(out.params)


def test_fit_is_deterministic(blobs):
    model, params, x, y = _tiny_model_and_data(blobs)
    pool = pools.make_pool(x[:64], y[:64])
    a = train.fit(model.apply, params, pool, jax.random.key(3), epochs=1, batch_size=16,
                  optimizer=optim.sgd(0.05, 0.9))
    b = train.fit(model.apply, params, pool, jax.random.key(3), epochs=1, batch_size=16,
                  optimizer=optim.sgd(0.05, 0.9))
    chex.assert_trees_all_equal(a.params, b.params)


_DP_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=" + sys.argv[1])
    import jax, numpy as np
    from jaxunlearn import optim, pools, train
    from jaxunlearn.models import build_model, init_params
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 4, 96).astype(np.int32)
    model = build_model("convnet", 4, depth=2, width=8)
    params = init_params(model, jax.random.key(0), (8, 8, 1))
    pool = pools.make_pool(x, y)
    out = train.fit(model.apply, params, pool, jax.random.key(1), epochs=2, batch_size=32,
                    optimizer=optim.sgd(0.05, 0.9))
    assert jax.device_count() == int(sys.argv[1])
    leaves = jax.tree.leaves(out.params)
    np.save(sys.argv[2], np.concatenate([np.asarray(l).ravel() for l in leaves]))
""")


@pytest.mark.slow
def test_data_parallel_matches_single_device(on_host_devices):
    """Two host devices (batch sharded, params replicated) give the single-device result."""
    results = on_host_devices(_DP_SCRIPT)
    np.testing.assert_allclose(results[2], results[1], rtol=1e-4, atol=1e-5)
