"""The GEMM-backward convolution equals lax.conv_general_dilated, forward and backward."""

from __future__ import annotations

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxunlearn import conv
from jaxunlearn.models import build_model

# Every (kernel, stride, padding) the models use, on square, odd and non-square inputs, batch 1
# included: ConvNet's 3×3/1 (with bias), ResNet's 3×3/1, 3×3/2 and the 1×1/1, 1×1/2 shortcuts.
CASES = [
    # (n, h, w, c_in, c_out, k, stride, padding)
    (2, 8, 8, 3, 8, 3, 1, ((1, 1), (1, 1))),
    (1, 8, 8, 5, 4, 3, 1, ((1, 1), (1, 1))),
    (3, 7, 9, 4, 6, 3, 1, ((1, 1), (1, 1))),
    (2, 8, 8, 4, 6, 3, 2, ((1, 1), (1, 1))),
    (1, 7, 5, 3, 5, 3, 2, ((1, 1), (1, 1))),
    (2, 6, 6, 4, 8, 1, 1, ((0, 0), (0, 0))),
    (2, 8, 8, 4, 8, 1, 2, ((0, 0), (0, 0))),
    (1, 9, 7, 3, 4, 1, 2, ((0, 0), (0, 0))),
    (2, 4, 4, 8, 8, 3, 1, "SAME"),
    (2, 5, 5, 3, 4, 3, 1, "VALID"),
]


def _inputs(n, h, w, c, o, k, seed=0):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (n, h, w, c))
    wt = jax.random.normal(kw, (k, k, c, o)) / np.sqrt(k * k * c)
    return x, wt, kg


def _grads(mode, x, wt, g_key, stride, padding):
    def f(x, wt):
        return conv.conv2d(x, wt, (stride, stride), padding, backward_mode=mode)

    y, vjp = jax.vjp(f, x, wt)
    ct = jax.random.normal(g_key, y.shape)
    return (y, *vjp(ct))


def _close_per_tensor(a, b, rel=1e-4):
    """max |a - b| <= rel * max |a|, the issue's tolerance for each gradient tensor."""
    chex.assert_equal_shape([a, b])
    scale = float(jnp.max(jnp.abs(a)))
    assert float(jnp.max(jnp.abs(a - b))) <= rel * max(scale, 1e-30), (
        f"max diff {float(jnp.max(jnp.abs(a - b)))} > {rel} x {scale}")


@pytest.mark.parametrize("n,h,w,c,o,k,stride,padding", CASES)
def test_gemm_backward_equals_lax(n, h, w, c, o, k, stride, padding):
    x, wt, g_key = _inputs(n, h, w, c, o, k)
    y_lax, dx_lax, dw_lax = _grads("lax", x, wt, g_key, stride, padding)
    y_gemm, dx_gemm, dw_gemm = _grads("gemm", x, wt, g_key, stride, padding)
    ref = lax.conv_general_dilated(x, wt, (stride, stride), padding,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    chex.assert_trees_all_equal(y_gemm, y_lax, ref)  # the forward is lax's own
    chex.assert_shape(dw_gemm, (k, k, c, o))
    chex.assert_shape(dx_gemm, (n, h, w, c))
    _close_per_tensor(dx_lax, dx_gemm)
    _close_per_tensor(dw_lax, dw_gemm)


def test_chunked_weight_gradient_equals_lax(monkeypatch):
    """Small chunk bounds force the lax.scan over batch chunks (big batches take that path)."""
    assert conv.chunk_images(320, (16, 16), 1152) == 4  # 4.7 MB of patches per chunk
    assert conv.chunk_images(7, (8, 8), 9) == 7
    monkeypatch.setattr(conv, "CHUNK_ROWS", 2 * 7 * 9)
    assert conv.chunk_images(6, (7, 9), 27) == 2
    x, wt, g_key = _inputs(6, 7, 9, 3, 5, 3)
    _, dx_lax, dw_lax = _grads("lax", x, wt, g_key, 1, ((1, 1), (1, 1)))
    _, dx_gemm, dw_gemm = _grads("gemm", x, wt, g_key, 1, ((1, 1), (1, 1)))
    _close_per_tensor(dx_lax, dx_gemm)
    _close_per_tensor(dw_lax, dw_gemm)


def test_a_wrong_weight_gradient_would_fail_the_check():
    """The tolerance is tight enough to catch a shifted tap (guards the test itself)."""
    x, wt, g_key = _inputs(2, 8, 8, 3, 4, 3)
    _, _, dw = _grads("lax", x, wt, g_key, 1, ((1, 1), (1, 1)))
    with pytest.raises(AssertionError):
        _close_per_tensor(dw, jnp.roll(dw, 1, axis=0))


def test_gemm_backward_under_vmap_over_a_models_axis():
    """Stacked models (the U-LiRA engine's layout) get the same gradients as one by one."""
    m = 3
    keys = jax.random.split(jax.random.PRNGKey(1), m)
    xs = jax.vmap(lambda k: jax.random.normal(k, (2, 8, 8, 4)))(keys)
    ws = jax.vmap(lambda k: jax.random.normal(k, (3, 3, 4, 6)) / 6.0)(keys)

    def loss(mode, x, wt):
        return jnp.sum(jnp.sin(conv.conv2d(x, wt, (1, 1), ((1, 1), (1, 1)), backward_mode=mode)))

    for mode in ("gemm", "lax"):
        grad = jax.grad(lambda x, w, mode=mode: loss(mode, x, w), argnums=(0, 1))
        dx, dw = jax.vmap(grad)(xs, ws)
        chex.assert_shape(dw, (m, 3, 3, 4, 6))
        for i in range(m):
            dxi, dwi = jax.grad(lambda x, w: loss("lax", x, w), argnums=(0, 1))(xs[i], ws[i])
            _close_per_tensor(dxi, dx[i])
            _close_per_tensor(dwi, dw[i])


def test_gemm_backward_under_jit_and_second_use():
    x, wt, g_key = _inputs(2, 8, 8, 3, 4, 3)
    f = jax.jit(jax.grad(lambda w: jnp.sum(conv.conv2d(x, w, backward_mode="gemm") ** 2)))
    g = jax.grad(lambda w: jnp.sum(conv.conv2d(x, w, backward_mode="lax") ** 2))(wt)
    _close_per_tensor(g, f(wt))
    _close_per_tensor(g, f(wt))


@pytest.mark.parametrize("name,kwargs,size", [
    ("convnet", dict(depth=2, width=16), 8),
    ("convnet", dict(depth=3, width=8), 32),
    pytest.param("resnet18", dict(width=4), 16, marks=pytest.mark.slow),
])
def test_models_same_gradients_and_parameter_names(name, kwargs, size):
    model = build_model(name, num_classes=5, **kwargs)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3))
    y = jnp.array([1, 3])
    params = model.init(jax.random.PRNGKey(1), x)

    def loss(p):
        logits = model.apply(p, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), y])

    with conv.backward("lax"):
        g_lax = jax.grad(loss)(params)
    with conv.backward("gemm"):
        g_gemm = jax.grad(loss)(params)
    chex.assert_trees_all_equal_shapes(g_lax, g_gemm)
    jax.tree.map(_close_per_tensor, g_lax, g_gemm)
    # Parameter names are those of flax's nn.Conv: checkpoints saved before still load.
    names = {"/".join(p) for p in flax.traverse_util.flatten_dict(params["params"])}
    if name == "convnet":
        assert {"convs_0/Conv_0/kernel", "convs_0/Conv_0/bias", "head/kernel"} <= names
    else:
        assert "stem/Conv_0/kernel" in names and "blocks_2/_Conv_2/Conv_0/kernel" in names


def test_resolve_backward_by_backend_and_shape():
    r = conv.resolve_backward
    assert r((16, 16), (3, 3), 128, 128, "auto", "cpu") == "gemm"  # ConvNet-3's layers
    assert r((32, 32), (3, 3), 3, 128, "auto", "cpu") == "gemm"  # ConvNet-3's stem
    assert r((8, 8), (3, 3), 1, 128, "auto", "cpu") == "gemm"  # the digits stem
    assert r((4, 4), (3, 3), 128, 128, "auto", "cpu") == "lax"  # no shape gets slower
    assert r((32, 32), (3, 3), 3, 64, "auto", "cpu") == "gemm"  # ResNet's stem
    assert r((4, 4), (1, 1), 256, 512, "auto", "cpu") == "gemm"  # a 1×1 is a matmul
    assert r((32, 32), (3, 3), 128, 128, "auto", "gpu") == "lax"  # cuDNN's VJP stays
    assert r((4, 4), (3, 3), 128, 128, "gemm", "gpu") == "gemm"  # an override wins
    assert r((32, 32), (3, 3), 128, 128, "lax", "cpu") == "lax"
    with conv.backward("lax"):
        assert conv.get_backward() == "lax"
        assert conv.resolve_backward((32, 32), platform="cpu") == "lax"
        assert conv.resolve_backward((32, 32)) == "lax"
    assert conv.get_backward() == "auto"
    with pytest.raises(ValueError, match="conv backward must be one of"):
        conv.set_backward("fast")
    with pytest.raises(ValueError, match="input channels"):
        conv.conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 4)))


def test_other_convolutions_fall_back_to_lax():
    """Dilation, feature groups and NCHW layouts are lax.conv_general_dilated itself."""
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 9, 9, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 4))
    dn = ("NHWC", "HWIO", "NHWC")
    for kw in (dict(feature_group_count=2), dict(rhs_dilation=(2, 2), feature_group_count=2)):
        got = conv.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, **kw)
        want = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, **kw)
        chex.assert_trees_all_equal(got, want)
    xn = jnp.transpose(x, (0, 3, 1, 2))
    wn = jax.random.normal(jax.random.PRNGKey(2), (5, 4, 3, 3))
    chex.assert_trees_all_equal(conv.conv_general_dilated(xn, wn, (1, 1), "SAME"),
                                lax.conv_general_dilated(xn, wn, (1, 1), "SAME"))
