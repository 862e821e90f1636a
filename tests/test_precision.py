"""Matmul precision in the lowered programs (docs/design_notes.md, "Matmul precision").

JAX runs float32 products in TF32 on A100/H100 unless told otherwise; on CPU they are full float32
whatever the setting, so these tests read the precision off the lowered StableHLO instead of the
numbers: the k-means distances and the A-AMU regulariser carry ``HIGHEST`` on every product,
Blend's matching loss has no product at all, and the networks' convolutions and dense layers
(training's step, Blend's extractor) keep the backend default.
"""

from __future__ import annotations

import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import train
from jaxunlearn.condense import blend_matching_loss, blend_step_jitted
from jaxunlearn.losses import ECDF_MODES, aamu_regulariser
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.partition import (
    KMEANS_PROCEDURES,
    _kmeans_core,
    class_index_table,
    resolve_kmeans_procedure,
)
from jaxunlearn.pools import Batch

_PRODUCTS = ("stablehlo.dot_general", "stablehlo.convolution")


def _products(fn, *args, **kwargs) -> list[tuple[str, tuple[str, ...]]]:
    """``(op, operand precisions)`` of every dot_general and convolution in ``fn``'s lowering.

    StableHLO prints ``precision = [HIGHEST, HIGHEST]`` on a dot_general and
    ``precision_config = [#stablehlo<precision HIGHEST>, ...]`` on a convolution; an op without
    either gets ``()``, the backend default as well.
    """
    text = jax.jit(fn).lower(*args, **kwargs).as_text()
    found = []
    for line in text.splitlines():
        op = next((p for p in _PRODUCTS if p in line), None)
        if op is not None:
            tail = line[line.find("precision"):] if "precision" in line else ""
            found.append((op.split(".")[1], tuple(re.findall(r"\b(DEFAULT|HIGHEST|HIGH)\b", tail))))
    return found


def _not_highest(products):
    return [(op, prec) for op, prec in products if not prec or set(prec) != {"HIGHEST"}]


# ---------------------------------------------------------------- k-means


@pytest.mark.parametrize("procedure", sorted(KMEANS_PROCEDURES))
def test_kmeans_products_are_float32(procedure):
    rng = np.random.default_rng(0)
    feats = jnp.asarray(rng.normal(size=(20, 6)), jnp.float32)
    labels = np.repeat(np.arange(2), 10)
    idx, valid = class_index_table(labels, 2, np.bincount(labels))
    rules = resolve_kmeans_procedure(procedure)
    core = partial(_kmeans_core, k=3, max_iterations=5, tol=1e-4, class_batch_size=None,
                   backend="jax", **rules)
    products = _products(core, jax.random.split(jax.random.key(0), 2), feats, jnp.asarray(idx),
                         jnp.asarray(valid))
    ops = {op for op, _ in products}
    # seeding (matvec or candidate columns), Lloyd assignment (and the final one for sklearn)
    assert ops == {"dot_general"} and len(products) >= 2, products
    assert not _not_highest(products), products


# ---------------------------------------------------------------- A-AMU regulariser


@pytest.mark.parametrize("mode", ECDF_MODES)
def test_regulariser_products_are_float32(mode):
    rng = np.random.default_rng(1)
    forget = jnp.asarray(rng.exponential(size=7), jnp.float32)
    unseen = jnp.asarray(rng.exponential(size=5), jnp.float32)
    weights = jnp.asarray([1, 1, 1, 1, 1, 0, 0], jnp.float32)
    reg = partial(aamu_regulariser, mode=mode)
    # The value and its gradient: the transposed products must keep the precision too.
    products = _products(jax.value_and_grad(reg), forget, unseen, weights)
    # ECDF tails (2 per batch) and MMD² (3 terms × 2 products), then their transposes
    assert len(products) >= 10 and {op for op, _ in products} == {"dot_general"}, products
    assert not _not_highest(products), products


# ---------------------------------------------------------------- Blend


def test_blend_matching_loss_has_no_low_precision_product():
    rng = np.random.default_rng(2)
    feats = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
    mu = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
    cmask = jnp.asarray([1.0, 1.0, 0.0])
    products = _products(jax.value_and_grad(blend_matching_loss), feats, mu, cmask,
                         jnp.float32(0.5))
    # Differences, squares and sums only: nothing TF32 could touch, and any product added
    # later must carry HIGHEST.
    assert not _not_highest(products), products
    assert products == [], products


@pytest.fixture(scope="module")
def blend_step_args():
    model = build_model("convnet", 3, width=8, depth=2)
    extractors = jax.vmap(init_fn_for(model, (8, 8, 3)))(jax.random.key(0)[None])
    seg = jnp.asarray([0, 0, 1, 1, 2, 2], jnp.int32)
    m, k = seg.size, 3
    xm = jnp.asarray(np.random.default_rng(3).normal(size=(m, 8, 8, 3)), jnp.float32)
    args = (jnp.full((m,), 0.5), jnp.zeros((m,)), jnp.int32(0), extractors, xm, seg,
            jnp.ones((m,), bool), jnp.full((k,), 2, jnp.int32), jnp.ones((k,)),
            jnp.ones((1, k, 32)), jnp.float32(0.1), jnp.float32(0.5), jnp.float32(1 / k))
    return model, args


def _blend_step_products(model, args):
    return _products(partial(blend_step_jitted, apply_fn=model.apply, weights="sum",
                             method="features"), *args)


def test_blend_extractor_keeps_backend_default(blend_step_args):
    # A documented choice (blend_matching_loss): the extractor's convolutions run as the
    # reference's cuDNN convolutions do, at the backend's default (TF32 on Ampere and later).
    products = _blend_step_products(*blend_step_args)
    convs = [prec for op, prec in products if op == "convolution"]
    assert convs and all("HIGHEST" not in prec for prec in convs), products


def test_blend_extractor_float32_on_request(blend_step_args):
    with jax.default_matmul_precision("float32"):
        products = _blend_step_products(*blend_step_args)
    assert products and not _not_highest(products), products


# ---------------------------------------------------------------- training


def test_training_step_keeps_backend_default():
    model = build_model("convnet", 4, depth=2, width=8)
    params = init_fn_for(model, (8, 8, 3))(jax.random.key(0))
    optimizer = optax.sgd(0.1, momentum=0.9)
    state = train.TrainState(params, optimizer.init(params))
    batch = Batch(jnp.zeros((4, 8, 8, 3)), jnp.arange(4, dtype=jnp.int32), jnp.ones((4,)))
    step = train.ce_step(model.apply, optimizer)
    products = _products(step, state, batch, None, jax.random.key(1))
    assert {op for op, _ in products} == {"dot_general", "convolution"}, products
    assert all("HIGHEST" not in prec for _, prec in products), products
