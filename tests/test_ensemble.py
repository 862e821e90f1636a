"""The many-model engine: M vmapped models equal M sequential runs with the same keys and data."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from jaxunlearn import ensemble, optim, pools, train
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.unlearn import make_method, make_unlearn_data, run_method, stack_unlearn_data

M = 3


@pytest.fixture(scope="module")
def setup(blobs):
    x, y = blobs
    model = build_model("convnet", 4, depth=2, width=8)
    init_fn = init_fn_for(model, x.shape[1:])
    params = ensemble.init_models(init_fn, jax.random.split(jax.random.key(0), M))
    pool = pools.make_pool(x, y)
    include = np.zeros((M, pool.y.shape[0]), bool)
    include[:, :len(y)] = ensemble.random_halves(jax.random.key(1), len(y), M)
    return x, y, model, init_fn, params, pool, include


def _max_abs(tree) -> float:
    return max(float(np.max(np.abs(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


def test_random_halves_are_exact_halves():
    masks = ensemble.random_halves(jax.random.key(0), 11, 64)
    chex.assert_shape(masks, (64, 11))
    assert (masks.sum(1) == 5).all()
    # every example lands in about half of the models (binomial(64, 5/11): sd ≈ 4)
    assert np.abs(masks.sum(0) - 64 * 5 / 11).max() < 5 * 4
    with pytest.raises(ValueError, match="n >= 2"):
        ensemble.random_halves(jax.random.key(0), 1, 4)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [1, 2, M])
def test_fit_models_equals_sequential_fits(setup, chunk):
    """Training: M models in one step (one at a time, in vmapped groups of 2 with a remainder,
    all vmapped) = each model alone with its own key and half."""
    x, y, model, _, params, pool, include = setup
    keys = jax.random.split(jax.random.key(2), M)
    kw = dict(epochs=3, batch_size=16, optimizer=optim.sgd(0.05, 0.9, 5e-4),
              lr_schedule=optim.cosine_with_warmup(0.05, 3, 1))
    out = train.fit(model.apply, params, pool, keys, include=include,
                    models=ensemble.Ensemble(M, chunk=chunk), **kw)
    chex.assert_tree_shape_prefix(out.params, (M,))
    for m in range(M):
        one = train.fit(model.apply, ensemble.model_at(params, m), pool, keys[m],
                        include=include[m], **kw)
        # stated tolerance: 1e-5 × the largest |parameter| (float rounding of grouped convs)
        chex.assert_trees_all_close(ensemble.model_at(out.params, m), one.params,
                                    atol=1e-5 * _max_abs(one.params), rtol=0)
        assert np.isclose(out.history[-1]["train/loss"][m], one.history[-1]["train/loss"],
                          rtol=1e-5)
    # the models really differ (own keys and halves), and training moved them
    assert _max_abs(jax.tree.map(lambda a: a[0] - a[1], out.params)) > 1e-2


def test_fit_models_rejects_bad_ensembles(setup):
    _, _, model, _, params, pool, include = setup
    with pytest.raises(ValueError, match="chunk >= 1"):
        train.fit(model.apply, params, pool, jax.random.split(jax.random.key(2), M),
                  epochs=1, batch_size=16, optimizer=optim.sgd(0.05), include=include,
                  models=ensemble.Ensemble(M, chunk=0))
    with pytest.raises(ValueError, match="val"):
        train.fit(model.apply, params, pool, jax.random.split(jax.random.key(2), M),
                  epochs=1, batch_size=16, optimizer=optim.sgd(0.05), include=include,
                  models=M, val=(np.zeros((2, 8, 8, 1)), np.zeros(2, int)))


def _datas(x, y, include, sizes):
    """Each model forgets class 1 from its own half, keeping ``sizes[m]`` retain rows, so the
    models' epochs have different numbers of steps."""
    datas = []
    for m, keep in enumerate(sizes):
        idx = np.flatnonzero(include[m, :len(y)])
        forget = idx[y[idx] == 1]
        retain = np.setdiff1d(idx, forget)[:keep]
        datas.append(make_unlearn_data((x[retain], y[retain]), (x[forget], y[forget]),
                                       (x[~include[m, :len(y)]], y[~include[m, :len(y)]]), 4))
    return datas


@pytest.mark.parametrize("name,hparams,chunk", [
    ("cf", dict(epochs=2, warmup_epochs=1, batch_size=16), None),
    ("a_cf", dict(batch_size=8), M),
    ("scrub", dict(epochs=2, batch_size=16), 1),
])
def test_run_method_models_equals_sequential_runs(setup, name, hparams, chunk):
    """Unlearning: a registered method over M stacked models = M runs of it alone.

    Tolerance: logits on the training images within 1e-5 × max |logit|. Parameters are not
    compared under Adam (A-CF): the bias of a convolution followed by instance norm has no effect
    on the output, so its exact gradient is 0 and its computed gradient is rounding noise, which
    Adam's normalisation turns into ±lr steps that differ between any two summation orders.
    """
    x, y, model, init_fn, params, _, include = setup
    datas = _datas(x, y, include, sizes=(40, 56, 23))  # 3, 4 and 2 steps per epoch at b = 16
    stacked = stack_unlearn_data(datas)
    np.testing.assert_array_equal(np.asarray(stacked.retain.n), (40, 56, 23))
    method = make_method(name, model.apply, init_fn=init_fn, **hparams)
    keys = jax.random.split(jax.random.key(3), M)
    out = run_method(method, params, stacked, keys, models=ensemble.Ensemble(M, chunk=chunk))
    logits = ensemble.predict_models(model.apply, out.params, x)
    chex.assert_shape(logits, (M, len(y), 4))
    for m in range(M):
        one = run_method(method, ensemble.model_at(params, m), datas[m], keys[m])
        ref = np.asarray(model.apply(one.params, x))
        np.testing.assert_allclose(logits[m], ref, rtol=0, atol=1e-5 * np.abs(ref).max())
        if name != "a_cf":
            chex.assert_trees_all_close(ensemble.model_at(out.params, m), one.params,
                                        atol=1e-5 * _max_abs(one.params), rtol=0)


def test_run_method_models_rejects_unstacked_data(setup):
    x, y, model, init_fn, params, _, include = setup
    datas = _datas(x, y, include, sizes=(40, 40, 40))
    with pytest.raises(ValueError, match="stacked"):
        run_method(make_method("cf", model.apply, epochs=1), params, datas[0],
                   jax.random.split(jax.random.key(3), M), models=M)


def test_stack_unlearn_data_pads_to_a_common_capacity(setup):
    x, y, _, _, _, _, include = setup
    datas = _datas(x, y, include, sizes=(10, 50, 30))
    stacked = stack_unlearn_data(datas)
    cap = stacked.retain.y.shape[1]
    assert cap >= 50
    chex.assert_shape(stacked.retain.x, (M, cap, 8, 8, 1))
    np.testing.assert_array_equal(np.asarray(stacked.retain.n), [10, 50, 30])
    np.testing.assert_array_equal(np.asarray(stacked.retain.x[0, :10]),
                                  np.asarray(datas[0].retain.x[:10]))
    with pytest.raises(ValueError, match="nothing"):
        stack_unlearn_data([])
