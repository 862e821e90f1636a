"""Tests of the free/residual split, Blend and the DM baseline (docs/method.md §3.2–3.4)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.condense import (
    _normalise,
    blend_clusters,
    blend_lr,
    condense,
    reduced_retain_set,
    split_free_residual,
)
from jaxunlearn.dm import distribution_matching
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.partition import kmeans_by_class

C = 3


@pytest.fixture(scope="module")
def net():
    model = build_model("convnet", C, width=8, depth=2)
    return model.apply, init_fn_for(model, (8, 8, 3))


def _data(per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(C, 8, 8, 3)).astype(np.float32)
    y = np.repeat(np.arange(C), per_class).astype(np.int32)
    x = protos[y] + 0.7 * rng.normal(size=(y.size, 8, 8, 3)).astype(np.float32)
    return x, y


def _ragged_clusters(y, ipc=3, seed=0):
    """Class-pure cluster ids of ragged sizes (some clusters of one image)."""
    rng = np.random.default_rng(seed)
    cid = np.empty_like(y)
    for c in range(C):
        rows = np.flatnonzero(y == c)
        j = rng.integers(0, ipc, rows.size)
        j[:ipc] = np.arange(ipc)  # every cluster non-empty
        cid[rows] = c * ipc + j
    return cid


# ------------------------------------------------------------------------------- split


def test_split_classwise_frees_every_other_cluster():
    ipc, num_classes = 4, 10
    y = np.repeat(np.arange(num_classes), 8)
    cid = (y * ipc + np.tile(np.arange(8) % ipc, num_classes)).astype(np.int32)
    cid[(y == 5) & (cid == 5 * ipc + 3)] = 5 * ipc + 2  # cluster 23 is now empty
    forget = np.flatnonzero(y == 2)
    retain = np.flatnonzero(y != 2)
    out = split_free_residual(cid, forget, retain, num_classes * ipc)
    assert out.n_free == 9 * ipc - 1 and out.n_empty_free == 1
    assert out.n_residual == 0 and out.residual_idx.size == 0
    assert out.n_touched == ipc and out.reduced_size == 9 * ipc - 1
    assert 23 not in out.free_clusters and not np.isin(out.free_clusters // ipc, 2).any()
    assert out.free_sizes.sum() == retain.size
    np.testing.assert_array_equal(out.blend_cluster_ids[forget], -1)


def test_split_uniform_matches_definition():
    rng = np.random.default_rng(1)
    n, k = 300, 60
    cid = rng.integers(0, k, n).astype(np.int32)
    perm = rng.permutation(n)
    forget, retain = perm[:30], perm[30:]
    out = split_free_residual(cid, forget, retain, k)
    touched = np.isin(np.arange(k), cid[forget])
    has_retain = np.isin(np.arange(k), cid[retain])
    np.testing.assert_array_equal(out.free_clusters, np.flatnonzero(~touched & has_retain))
    np.testing.assert_array_equal(out.residual_idx, np.sort(retain[touched[cid[retain]]]))
    assert out.n_residual + out.free_sizes.sum() == retain.size
    assert out.n_empty_free == (~touched & ~has_retain).sum()
    assert out.reduced_size == out.n_free + out.n_residual < retain.size


def test_split_rejects_bad_index_sets():
    cid = np.arange(10, dtype=np.int32) % 5
    with pytest.raises(ValueError, match="overlap"):
        split_free_residual(cid, [1, 2], [2, 3], 5)
    with pytest.raises(ValueError, match="empty"):
        split_free_residual(cid, [], [2, 3], 5)
    with pytest.raises(ValueError, match="index"):
        split_free_residual(cid, [10], [2, 3], 5)
    with pytest.raises(ValueError, match="cluster_ids"):
        split_free_residual(cid, [1], [2], 4)


# ------------------------------------------------------------------------------- blend


def test_blend_lr_follows_the_reference_cubic():
    assert blend_lr(10) == pytest.approx(0.1656, abs=1e-3)
    assert blend_lr(100) == pytest.approx(99.98, abs=0.05)
    assert blend_lr(1000) == pytest.approx(9998.7, abs=1.0)
    with pytest.raises(ValueError, match="lr explicitly"):
        blend_lr(6000)


def _naive_blend(apply_fn, init_fn, x, members, key, iterations, lr, momentum, mode, n_ext):
    """Per-cluster Python reference of docs/method.md §3.3 (clusters are independent given 1/S)."""
    S = len(members)
    feats = lambda p, v: apply_fn(p, v, method="features")
    init = jax.jit(init_fn)
    params = [
        init(key) if n_ext == 1 else init(jax.random.fold_in(key, it % n_ext))
        for it in range(iterations)
    ]
    images, losses = [], np.zeros(iterations)

    def norm(w):
        return jax.nn.softmax(w) if mode == "softmax" else w / jnp.sum(w)

    @jax.jit
    @jax.value_and_grad
    def loss(w, xs, p):
        mu = jnp.mean(feats(p, xs), axis=0)
        blended = jnp.tensordot(norm(w), xs, axes=1)[None]
        return jnp.mean(jnp.square(feats(p, blended)[0] - mu)) / S

    for mem in members:
        xs = jnp.asarray(x[mem])
        w = jnp.full(len(mem), 1.0 / len(mem))
        buf = jnp.zeros_like(w)
        for it in range(iterations):
            val, g = loss(w, xs, params[it])
            losses[it] += float(val)
            buf = momentum * buf + g
            w = w - lr * buf
        images.append(jnp.tensordot(norm(w), xs, axes=1))
    return np.stack(images), losses


@pytest.mark.parametrize(
    "mode,n_ext,chunks",
    # None: one chunk of 6 clusters; 4: two chunks, the last one padded.
    [("sum", 1, (None, 4)), ("softmax", 1, (4,)), ("sum", 3, (4,))],
)
def test_blend_matches_per_cluster_reference_for_any_chunking(net, mode, n_ext, chunks):
    apply_fn, init_fn = net
    x, y = _data()
    cid = _ragged_clusters(y)
    free = np.array([0, 2, 3, 4, 7, 8], np.int32)  # sizes 7, 3, 3, 4, 2, 5
    members = [np.flatnonzero(cid == s) for s in free]
    # lr 50 keeps the loss decreasing: with an oscillating loss, float rounding differences
    # between the two implementations get amplified.
    kw = dict(key=jax.random.key(5), iterations=4, lr=50.0, weights=mode, n_extractors=n_ext)
    ref_img, ref_loss = _naive_blend(
        apply_fn, init_fn, x, members, kw["key"], 4, 50.0, 0.5, mode, n_ext
    )
    for cs in chunks:  # padding of members and of chunks has no effect
        out = blend_clusters(apply_fn, init_fn, x, y, cid, free, chunk_size=cs, **kw)
        chex.assert_shape(out.images, (free.size, 8, 8, 3))
        np.testing.assert_allclose(np.asarray(out.images), ref_img, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.loss_history, ref_loss, rtol=1e-4, atol=1e-8)
        np.testing.assert_array_equal(out.labels, free // 3)
        np.testing.assert_array_equal(out.cluster_ids, free)
    assert not np.allclose(ref_img, np.stack([x[m].mean(0) for m in members]), atol=1e-3)


def test_blend_is_a_weighted_combination_of_own_images(net):
    apply_fn, init_fn = net
    x, y = _data()
    cid = _ragged_clusters(y, seed=2)
    free = np.arange(9, dtype=np.int32)
    out = blend_clusters(apply_fn, init_fn, x, y, cid, free, key=jax.random.key(0),
                         lr=300.0, chunk_size=4)
    pad = out.member_idx < 0
    assert (out.weights[pad] == 0).all()
    np.testing.assert_allclose(out.weights.sum(1), 1.0, rtol=1e-5)
    for s, c in enumerate(free):  # members are exactly the cluster's images
        assert sorted(out.member_idx[s][~pad[s]]) == sorted(np.flatnonzero(cid == c))
    recon = np.einsum("sm,smhwc->shwc", out.weights, x[np.maximum(out.member_idx, 0)])
    np.testing.assert_allclose(np.asarray(out.images), recon, rtol=1e-4, atol=1e-5)
    assert not np.allclose(out.weights[~pad], (1.0 / (~pad).sum(1))[:, None].repeat(
        pad.shape[1], 1)[~pad])  # the weights moved away from the uniform init


def test_single_image_cluster_returns_that_image(net):
    apply_fn, init_fn = net
    x, y = _data()
    cid = np.full(y.size, -1, np.int32)
    cid[5] = 0
    cid[[13, 14, 15]] = 4
    for mode in ("sum", "softmax"):
        out = blend_clusters(apply_fn, init_fn, x, y, cid, [0, 4], key=jax.random.key(1),
                             lr=1e4, iterations=6, weights=mode)
        np.testing.assert_allclose(np.asarray(out.images[0]), x[5], rtol=1e-6, atol=1e-6)


def test_blend_lowers_the_matching_loss(net):
    apply_fn, init_fn = net
    x, y = _data(per_class=20)
    cid = _ragged_clusters(y, ipc=4, seed=3)
    free = np.arange(12, dtype=np.int32)
    out = blend_clusters(apply_fn, init_fn, x, y, cid, free, key=jax.random.key(2),
                         lr=100.0, iterations=12)
    assert np.isfinite(out.loss_history).all()
    assert out.loss_history[-1] < 0.8 * out.loss_history[0]
    assert (np.diff(out.loss_history) < 0).all()
    # Independently: the final images match better than the cluster means did.
    phi = jax.jit(init_fn)(jax.random.key(2))
    f = jax.jit(lambda v: apply_fn(phi, v, method="features"))
    fx = np.asarray(f(x))
    mu = np.stack([fx[cid == s].mean(0) for s in free])
    means = np.stack([x[cid == s].mean(0) for s in free])
    before = ((f(means) - mu) ** 2).mean()
    after = ((f(out.images) - mu) ** 2).mean()
    assert after < 0.8 * before


def test_cancelling_weights_fall_back_to_uniform():
    seg = jnp.array([0, 0, 1, 1, 1])
    mask = jnp.ones(5, bool)
    counts = jnp.array([2.0, 3.0])
    w = jnp.array([1.0, -1.0, 0.2, 0.3, 0.5])
    wn, guarded = _normalise(w, seg, mask, counts, 2, "sum")
    np.testing.assert_allclose(np.asarray(wn), [0.5, 0.5, 0.2, 0.3, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(guarded), [True, False])
    g = jax.grad(lambda v: jnp.sum(_normalise(v, seg, mask, counts, 2, "sum")[0] ** 2))(w)
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g[:2]).sum()) == 0.0
    wn, _ = _normalise(jnp.array([jnp.nan, 1.0, jnp.inf, 0.0, 0.0]), seg, mask, counts, 2, "sum")
    np.testing.assert_allclose(np.asarray(wn), [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3], rtol=1e-6)


def test_absurd_learning_rate_stays_finite(net):
    apply_fn, init_fn = net
    x, y = _data()
    cid = _ragged_clusters(y)
    out = blend_clusters(apply_fn, init_fn, x, y, cid, np.arange(9), key=jax.random.key(3),
                         lr=1e12, iterations=12)
    chex.assert_tree_all_finite((out.images, out.weights))
    assert np.abs(out.weights).max() <= 1e6 + 1


def test_blend_rejects_bad_inputs(net):
    apply_fn, init_fn = net
    x, y = _data()
    cid = _ragged_clusters(y)
    with pytest.raises(ValueError, match="without members"):
        blend_clusters(apply_fn, init_fn, x, y, cid, [0, 50], key=jax.random.key(0), lr=1.0)
    with pytest.raises(ValueError, match="ipc"):
        blend_clusters(apply_fn, init_fn, x, y, cid, [0], key=jax.random.key(0))
    with pytest.raises(ValueError, match="weights"):
        blend_clusters(apply_fn, init_fn, x, y, cid, [0], key=jax.random.key(0), lr=1.0,
                       weights="max")
    mixed = cid.copy()
    mixed[y == 1] = 0
    with pytest.raises(ValueError, match="class-pure"):
        blend_clusters(apply_fn, init_fn, x, y, mixed, [0], key=jax.random.key(0), lr=1.0)


# ------------------------------------------------------------------------------- reduced set


def test_condense_classwise_and_uniform(net):
    apply_fn, init_fn = net
    x, y = _data(per_class=15)
    ipc = 4
    part = kmeans_by_class(x.reshape(x.shape[0], -1), y, num_classes=C, ipc=ipc,
                           key=jax.random.key(0))
    forget = np.flatnonzero(y == 1)
    retain = np.flatnonzero(y != 1)
    out = condense(apply_fn, init_fn, x, y, part, forget, retain, key=jax.random.key(1))
    n_nonempty = int((part.sizes.reshape(C, ipc)[[0, 2]] > 0).sum())
    assert out.sizes["n_reduced"] == out.x.shape[0] == n_nonempty
    assert out.sizes["n_residual"] == 0 and not (np.asarray(out.y) == 1).any()
    assert out.blend.lr == pytest.approx(blend_lr(ipc))
    assert set(out.timings) == {"split_s", "blend_s", "blend_compile_s", "total_s"}

    rng = np.random.default_rng(0)
    perm = rng.permutation(y.size)
    forget, retain = np.sort(perm[:5]), np.sort(perm[5:])
    split = split_free_residual(part.cluster_ids, forget, retain, C * ipc)
    blend = blend_clusters(apply_fn, init_fn, x, y, split.blend_cluster_ids, split.free_clusters,
                           key=jax.random.key(1), ipc=ipc)
    xr, yr = reduced_retain_set(x, y, split, blend)
    assert xr.shape[0] == split.n_residual + split.n_free == split.reduced_size
    np.testing.assert_array_equal(np.asarray(xr[: split.n_residual]), x[split.residual_idx])
    np.testing.assert_array_equal(np.asarray(yr[: split.n_residual]), y[split.residual_idx])
    np.testing.assert_array_equal(np.asarray(yr[split.n_residual:]), blend.labels)
    # Blended images use only retain images.
    used = blend.member_idx[blend.member_idx >= 0]
    assert np.isin(used, retain).all() and not np.isin(used, forget).any()
    # The run's parts, timed inside it: one time per SGD step, and parts within the whole.
    t = blend.timings
    assert len(t["blend_iteration_s"]) == 12  # one chunk, the default 12 iterations
    assert t["blend_iterations_s"] == pytest.approx(sum(t["blend_iteration_s"]))
    parts = t["blend_targets_s"] + t["blend_iterations_s"] + t["blend_finish_s"]
    assert 0 < parts <= t["blend_s"]


# ------------------------------------------------------------------------------- DM


def test_distribution_matching_reduces_its_loss(net):
    apply_fn, init_fn = net
    x, y = _data(per_class=30)
    ipc = 2
    start = distribution_matching(apply_fn, init_fn, x, y, num_classes=C, ipc=ipc,
                                  key=jax.random.key(0), iterations=0)
    # Zero iterations: distinct real images of each class.
    imgs0 = np.asarray(start.images)
    for i, c in enumerate(np.asarray(start.labels)):
        assert np.isclose(x[y == c], imgs0[i]).all(axis=(1, 2, 3)).any()
    # The DM paper's options (lr 1.0, no DSA); the reference's defaults: test_dc_baselines.py.
    out = distribution_matching(apply_fn, init_fn, x, y, num_classes=C, ipc=ipc,
                                key=jax.random.key(0), iterations=60, batch_real=16,
                                lr=1.0, dsa=False)
    chex.assert_shape(out.images, (C * ipc, 8, 8, 3))
    np.testing.assert_array_equal(np.asarray(out.labels), np.repeat(np.arange(C), ipc))

    def matching_loss(syn):  # averaged over held-out extractors, all real images
        total = 0.0
        for k in range(5):
            p = jax.jit(init_fn)(jax.random.key(100 + k))
            fr = np.asarray(apply_fn(p, jnp.asarray(x), method="features"))
            fs = np.asarray(apply_fn(p, syn, method="features"))
            total += sum(((fr[y == c].mean(0) - fs[c * ipc:(c + 1) * ipc].mean(0)) ** 2).sum()
                         for c in range(C))
        return total

    assert matching_loss(out.images) < 0.7 * matching_loss(start.images)
    assert out.loss_history[-10:].mean() < out.loss_history[:10].mean()
