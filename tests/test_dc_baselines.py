"""The condensation baselines (method.md §3.4): DSA, DM, GM and IDM on tiny data (8×8, 3 classes)"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxunlearn import dsa
from jaxunlearn.dm import distribution_matching
from jaxunlearn.dsa import (
    DSA,
    DSA_STRATEGY,
    DSAParams,
    diff_augment,
    grid_sample_affine,
    resolve_dsa,
)
from jaxunlearn.gm import _ce_grad, gm_loops, gradient_matching, match_distance
from jaxunlearn.idm import improved_distribution_matching
from jaxunlearn.models import build_model, init_fn_for

C, IPC = 3, 2
FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")


@pytest.fixture(scope="module")
def net():
    model = build_model("convnet", C, width=8, depth=2)
    return model.apply, init_fn_for(model, (8, 8, 3))


def _data(per_class=20, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(C, 8, 8, 3)).astype(np.float32)
    y = np.repeat(np.arange(C), per_class).astype(np.int32)
    x = protos[y] + 0.7 * rng.normal(size=(y.size, 8, 8, 3)).astype(np.float32)
    return x, y


def _imgs(n=6, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, 8, 8, 3)), jnp.float32)


# ------------------------------------------------------------------------------------ DSA

_aug = jax.jit(diff_augment, static_argnames=("strategy", "siamese", "params"))


@pytest.mark.parametrize("strategy", [*FAMILIES, DSA_STRATEGY])
def test_dsa_shape_determinism_and_siamese(strategy):
    a, b = _imgs(4, 1), _imgs(3, 2)
    outs = []
    for i in range(8):
        k = jax.random.key(i)
        out = _aug(k, jnp.concatenate([a, b]), strategy)
        chex.assert_shape(out, (7, 8, 8, 3))
        chex.assert_tree_all_finite(out)
        np.testing.assert_array_equal(out, _aug(k, jnp.concatenate([a, b]), strategy))
        # siamese: one parameter draw per batch, so the transform does not depend on the batch
        np.testing.assert_allclose(out, jnp.concatenate([_aug(k, a, strategy),
                                                         _aug(k, b, strategy)]), atol=1e-5)
        outs.append(np.asarray(out))
    assert any(not np.allclose(outs[0], o) for o in outs[1:])  # the key matters


def test_dsa_not_siamese_draws_per_image():
    x = jnp.broadcast_to(_imgs(1), (16, 8, 8, 3))  # 16 copies of one image
    for s in ("crop", "scale", "rotate", "color"):
        out = np.asarray(_aug(jax.random.key(0), x, s, siamese=False))
        assert not np.allclose(out[0], out[1:]), s  # the copies are transformed apart
        out = np.asarray(_aug(jax.random.key(0), x, s, siamese=True))
        np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), atol=1e-6)


def test_dsa_identities_and_reference_formulas():
    x = _imgs()
    ident = DSAParams(ratio_scale=1.0, ratio_rotate=0.0, ratio_crop_pad=0.0)
    for s in ("scale", "rotate", "crop"):
        np.testing.assert_allclose(_aug(jax.random.key(3), x, s, params=ident), x, atol=1e-6)
    k = jax.random.key(5)
    once = _aug(k, x, "flip")
    np.testing.assert_array_equal(_aug(k, once, "flip"), x)  # the same flip twice
    assert any(not np.array_equal(_aug(jax.random.key(i), x, "flip"), x) for i in range(8))
    # colour with known draws: brightness, saturation, contrast in turn (reference formulas)
    u = jnp.array([[0.2], [0.7], [0.4]]) * jnp.ones((1, x.shape[0]))
    p = DSAParams()
    xb = np.asarray(x) + (0.2 - 0.5) * p.brightness
    xs = (xb - xb.mean(-1, keepdims=True)) * (0.7 * p.saturation) + xb.mean(-1, keepdims=True)
    m = xs.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(dsa._color(u, x, p), (xs - m) * (0.4 + p.contrast) + m,
                               rtol=1e-5, atol=1e-5)
    # cutout zeroes one square of at most 4×4 (0.5 of 8, clipped at the border), the same square
    # in every image (siamese), and nothing else
    ones = jnp.ones((5, 8, 8, 3))
    for i in range(6):
        z = np.asarray(_aug(jax.random.key(i), ones, "cutout")) == 0
        if not z.any():
            continue  # another family was drawn
        rows, cols = np.flatnonzero(z[0, :, :, 0].any(1)), np.flatnonzero(z[0, :, :, 0].any(0))
        assert len(rows) <= 4 and len(cols) <= 4 and z[0, :, :, 0].sum() == len(rows) * len(cols)
        assert (z == z[:1]).all()
    # crop: an integer translation of at most 1 pixel at 8×8 (int(8 · 0.125 + 0.5)), zero fill
    for i in range(4):
        out = np.asarray(_aug(jax.random.key(i), x, "crop"))
        shifts = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                  if np.allclose(out, np.asarray(jnp.roll(x, (-dr, -dc), axis=(1, 2)))
                                 * _valid(dr, dc))]
        assert len(shifts) == 1


def _valid(dr, dc):
    r = np.arange(8) + dr
    c = np.arange(8) + dc
    return (((r >= 0) & (r < 8))[:, None] & ((c >= 0) & (c < 8))[None, :])[None, :, :, None]


def test_grid_sample_matches_bilinear_zero_padding():
    x = _imgs(2)
    a = 0.3
    theta = jnp.array([[[np.cos(a), -np.sin(a), 0.1], [np.sin(a), np.cos(a), -0.2]],
                       [[1.3, 0.0, 0.0], [0.0, 0.8, 0.0]]], jnp.float32)
    out = np.asarray(grid_sample_affine(x, theta))
    h = w = 8
    xs = (2 * np.arange(w) + 1) / w - 1
    gx, gy = np.meshgrid(xs, xs)
    for n in range(2):
        t = np.asarray(theta[n])
        sx = t[0, 0] * gx + t[0, 1] * gy + t[0, 2]
        sy = t[1, 0] * gx + t[1, 1] * gy + t[1, 2]
        ix, iy = ((sx + 1) * w - 1) / 2, ((sy + 1) * h - 1) / 2  # align_corners=False
        for ch in range(3):
            ref = ndimage.map_coordinates(np.asarray(x[n, :, :, ch]), [iy, ix], order=1,
                                          mode="grid-constant", cval=0.0)
            np.testing.assert_allclose(out[n, :, :, ch], ref, atol=1e-5)


def test_dsa_is_differentiable():
    x = _imgs()
    grad = jax.jit(jax.grad(lambda x, k: jnp.sum(diff_augment(k, x) ** 2)))
    for i in range(6):
        g = grad(x, jax.random.key(i))
        chex.assert_tree_all_finite(g)
        assert float(jnp.abs(g).sum()) > 0


def test_dsa_bad_strategy():
    with pytest.raises(ValueError, match="unknown DSA families"):
        diff_augment(jax.random.key(0), _imgs(), "color_blur")
    np.testing.assert_array_equal(diff_augment(jax.random.key(0), _imgs(), "none"), _imgs())


# ------------------------------------------------------------------------ reference defaults


def test_defaults_are_the_references():
    def defaults(f):
        return {k: v.default for k, v in inspect.signature(f).parameters.items()
                if v.default is not inspect.Parameter.empty}

    dm, gm, idm = (defaults(f) for f in (distribution_matching, gradient_matching,
                                        improved_distribution_matching))
    assert (dm["lr"], dm["momentum"], dm["batch_real"], dm["dsa"]) == (1e-2, 0.5, 256, True)
    assert (gm["lr"], gm["lr_net"], gm["momentum"], gm["batch_real"], gm["batch_train"],
            gm["dis_metric"], gm["dsa"]) == (0.1, 0.01, 0.5, 256, 256, "ours", True)
    assert (idm["lr"], idm["num_nets"], idm["ce_weight"], idm["dsa"]) == (1e-2, 3, 1.0, True)
    # dsa=True is the reference's augmentation, the same for the three baselines
    assert resolve_dsa(True) == DSA("color_crop_cutout_flip_scale_rotate", DSAParams(
        prob_flip=0.5, ratio_scale=1.2, ratio_rotate=15.0, ratio_crop_pad=0.125,
        ratio_cutout=0.5, brightness=1.0, saturation=2.0, contrast=0.5))
    assert resolve_dsa(False) is None and resolve_dsa(DSA("flip")) == DSA("flip")
    assert [gm_loops(i) for i in (1, 2, 5, 10, 20, 50)] == [
        (1, 1), (1, 1), (1, 1), (10, 50), (20, 25), (50, 10)]
    with pytest.raises(ValueError, match="ipc=7"):
        gm_loops(7)


def test_match_distance_is_the_references():
    dist = jax.jit(match_distance)
    rng = np.random.default_rng(0)
    gr = {"conv": jnp.asarray(rng.normal(size=(3, 3, 2, 4))), "b": jnp.ones(4),
          "dense": jnp.asarray(rng.normal(size=(5, 2)))}
    gs = jax.tree.map(lambda g: g * 2.0, gr)  # parallel rows: distance 0
    assert float(dist(gs, gr)) == pytest.approx(0.0, abs=1e-5)
    gs = dict(gs, b=-gs["b"])  # biases do not count ('ours')
    assert float(dist(gs, gr)) == pytest.approx(0.0, abs=1e-5)
    gs = dict(gs, dense=-gs["dense"])  # 2 output units, each with cosine −1
    assert float(dist(gs, gr)) == pytest.approx(4.0, abs=1e-5)
    # torch layout of the conv kernel [out, in·h·w]: row o is kernel[..., o]
    k = gr["conv"]
    rows = np.asarray(k).reshape(-1, 4).T
    np.testing.assert_allclose(rows[1], np.asarray(k[..., 1]).reshape(-1))
    zero = jax.tree.map(jnp.zeros_like, gr)  # zero rows: finite distance and gradient
    chex.assert_tree_all_finite(jax.grad(lambda g: match_distance(g, gr))(zero))


# ---------------------------------------------------------------------------- the methods


def _held_out_dm_loss(apply_fn, init_fn, x, y, syn):
    feats = jax.jit(lambda p, im: apply_fn(p, im, method="features"))
    total = 0.0
    for k in range(4):
        p = jax.jit(init_fn)(jax.random.key(100 + k))
        fr = np.asarray(feats(p, jnp.asarray(x)))
        fs = np.asarray(feats(p, syn))
        total += sum(((fr[y == c].mean(0) - fs[c * IPC:(c + 1) * IPC].mean(0)) ** 2).sum()
                     for c in range(C))
    return total


def _check_set(out, x, y, start):
    chex.assert_shape(out.images, (C * IPC, 8, 8, 3))
    chex.assert_tree_all_finite(out.images)
    np.testing.assert_array_equal(np.asarray(out.labels), np.repeat(np.arange(C), IPC))
    for i, c in enumerate(np.asarray(start.labels)):  # starts from real images of its class
        assert np.isclose(x[y == c], np.asarray(start.images)[i]).all(axis=(1, 2, 3)).any()


@pytest.mark.parametrize("lr", [1e-2, 1.0])  # the reference's, the DM paper's
def test_dm_with_dsa_reduces_its_loss(net, lr):
    apply_fn, init_fn = net
    x, y = _data()
    kw = dict(num_classes=C, ipc=IPC, key=jax.random.key(0), batch_real=16)
    start = distribution_matching(apply_fn, init_fn, x, y, iterations=0, **kw)
    out = distribution_matching(apply_fn, init_fn, x, y, iterations=40, lr=lr, **kw)
    _check_set(out, x, y, start)
    assert set(out.timings) == {"dm_s", "dm_compile_s"} and out.loss_history.shape == (40,)
    before = _held_out_dm_loss(apply_fn, init_fn, x, y, start.images)
    after = _held_out_dm_loss(apply_fn, init_fn, x, y, out.images)
    assert after < (0.995 if lr < 0.1 else 0.7) * before
    again = distribution_matching(apply_fn, init_fn, x, y, iterations=40, lr=lr, **kw)
    np.testing.assert_array_equal(again.images, out.images)  # reproducible from the key


def test_dsa_changes_dm(net):
    apply_fn, init_fn = net
    x, y = _data()
    kw = dict(num_classes=C, ipc=IPC, key=jax.random.key(0), batch_real=16, iterations=3)
    a = distribution_matching(apply_fn, init_fn, x, y, dsa=True, **kw)
    b = distribution_matching(apply_fn, init_fn, x, y, dsa=False, **kw)
    assert not np.allclose(a.images, b.images)


def _held_out_gm_loss(apply_fn, init_fn, x, y, syn):
    @jax.jit
    def loss(p, xr, xs, c):
        gr = _ce_grad(apply_fn, p, xr, jnp.ones(xr.shape[0]), c)
        return match_distance(_ce_grad(apply_fn, p, xs, jnp.ones(IPC), c), gr)

    total = 0.0
    for k in range(3):
        p = jax.jit(init_fn)(jax.random.key(100 + k))
        for c in range(C):
            total += float(loss(p, jnp.asarray(x[y == c]), syn[c * IPC:(c + 1) * IPC], c))
    return total


def test_gm_reduces_its_loss(net):
    apply_fn, init_fn = net
    x, y = _data()
    kw = dict(num_classes=C, ipc=IPC, key=jax.random.key(0), batch_real=16)
    start = gradient_matching(apply_fn, init_fn, x, y, iterations=0, **kw)
    out = gradient_matching(apply_fn, init_fn, x, y, iterations=30, **kw)
    _check_set(out, x, y, start)
    assert out.loops == (1, 1) and out.loss_history.shape == (30,)
    assert set(out.timings) == {"gm_s", "gm_compile_s"}
    before = _held_out_gm_loss(apply_fn, init_fn, x, y, start.images)
    after = _held_out_gm_loss(apply_fn, init_fn, x, y, out.images)
    assert after < before


def test_gm_outer_and_inner_loops(net):
    """Several rounds per iteration with the network trained between them (ipc ≥ 10's path)."""
    apply_fn, init_fn = net
    x, y = _data()
    out = gradient_matching(apply_fn, init_fn, x, y, num_classes=C, ipc=IPC,
                            key=jax.random.key(1), iterations=2, batch_real=16, outer_loop=3,
                            inner_loop=2, batch_train=4, class_batch=2)
    assert out.loops == (3, 2) and out.loss_history.shape == (2,)
    chex.assert_tree_all_finite(out.images)
    assert np.isfinite(out.loss_history).all()


def test_idm_reduces_its_loss(net):
    apply_fn, init_fn = net
    x, y = _data()
    kw = dict(num_classes=C, ipc=IPC, key=jax.random.key(0), batch_real=16)
    start = improved_distribution_matching(apply_fn, init_fn, x, y, iterations=0, **kw)
    out = improved_distribution_matching(apply_fn, init_fn, x, y, iterations=40, lr=1.0, **kw)
    _check_set(out, x, y, start)
    assert set(out.timings) == {"idm_s", "idm_compile_s"}
    assert out.loss_history.shape == out.match_history.shape == (40,)
    assert (out.loss_history >= out.match_history).all()  # + the cross-entropy (weight 1)
    assert out.loss_history[-10:].mean() < out.loss_history[:10].mean()
    no_ce = improved_distribution_matching(apply_fn, init_fn, x, y, iterations=2, lr=1.0,
                                           ce_weight=0.0, **kw)
    np.testing.assert_allclose(no_ce.loss_history, no_ce.match_history, rtol=1e-6)


@pytest.mark.parametrize("fn", [distribution_matching, gradient_matching,
                                improved_distribution_matching])
def test_bad_input(net, fn):
    apply_fn, init_fn = net
    x, y = _data(per_class=4)
    kw = dict(num_classes=C, key=jax.random.key(0), iterations=1)
    with pytest.raises(ValueError, match="ipc=5"):
        fn(apply_fn, init_fn, x, y, ipc=5, **kw)
    with pytest.raises(ValueError, match="shape"):
        fn(apply_fn, init_fn, x[:, :, :, 0], y, ipc=1, **kw)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        fn(apply_fn, init_fn, x, y + 1, ipc=1, **kw)
    with pytest.raises(ValueError, match="batch_real"):
        fn(apply_fn, init_fn, x, y, ipc=1, batch_real=0, **kw)
    with pytest.raises(ValueError, match="iterations"):
        fn(apply_fn, init_fn, x, y, ipc=1, num_classes=C, key=jax.random.key(0), iterations=-1)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        fn(apply_fn, init_fn, bad, y, ipc=1, **kw)
