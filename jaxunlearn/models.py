"""Models of the paper (docs/method.md §2): ConvNet, ResNet-18, ResNet-50.

All models are Flax linen modules used through ``init``/``apply`` over plain parameter pytrees,
with NHWC inputs. Normalisation is instance norm (GroupNorm with one group per channel), written by
hand so XLA fuses it (≈1.7× faster than a generic GroupNorm on CPU). Initialisation follows
PyTorch's defaults (kaiming-uniform with a=√5, i.e. U(±1/√fan_in), for weights, U(±1/√fan_in) for
biases), which matters for the random feature extractors used by Blend.

Every model has a ``features`` method returning the flattened embedding before the linear head
(``model.apply(params, x, method="features")``). :func:`apply_features` and
:func:`batched_features` call it (or any ``apply_fn``) for the random-feature embeddings of the
partition, Blend and distribution matching, and :func:`init_fn_for` gives the pure, hashable
``init_fn(key) -> params`` their jitted cores take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.conv import conv_general_dilated

__all__ = [
    "ConvNet",
    "InstanceNorm",
    "ResNet",
    "apply_features",
    "batched_features",
    "build_model",
    "init_fn_for",
    "init_params",
    "torch_bias_init",
    "torch_kernel_init",
]

# kaiming_uniform(a=√5): bound = √(6 / ((1 + a²) fan_in)) = 1/√fan_in = √(3 · (1/3) / fan_in)
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable[..., jax.Array]:
    """PyTorch's default bias init, U(±1/√fan_in), for a layer with ``fan_in`` inputs."""
    bound = 1.0 / np.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class InstanceNorm(nn.Module):
    """Instance norm over H, W of NHWC inputs with a per-channel affine (GroupNorm(C, C))."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x_NxHxWxC: jax.Array) -> jax.Array:
        c = x_NxHxWxC.shape[-1]
        mean = jnp.mean(x_NxHxWxC, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(x_NxHxWxC - mean), axis=(1, 2), keepdims=True)
        y = (x_NxHxWxC - mean) * jax.lax.rsqrt(var + self.eps)
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        return y * scale + bias


class _Conv(nn.Module):
    """Conv with PyTorch default init (weights and bias), convolving with
    :func:`jaxunlearn.conv.conv_general_dilated` (a faster backward on CPU, same parameters)."""

    features: int
    kernel: int = 3
    stride: int = 1
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1] * self.kernel * self.kernel
        return nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=(self.stride, self.stride),
            padding=self.kernel // 2 if self.kernel > 1 else 0,
            use_bias=self.use_bias,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(fan_in),
            conv_general_dilated=conv_general_dilated,
        )(x)


def _dense(features: int, fan_in: int) -> nn.Dense:
    return nn.Dense(features, kernel_init=torch_kernel_init, bias_init=torch_bias_init(fan_in))


class ConvNet(nn.Module):
    """The dataset-condensation ConvNet: depth × [conv3×3 → instance norm → ReLU → avgpool 2×2].

    At 32×32 with depth 3 and width 128 the embedding is 2048-d; at 8×8 with depth 2 it is
    2·2·width. Input ``[n, h, w, c]`` with h, w divisible by 2**depth.
    """

    num_classes: int = 10
    width: int = 128
    depth: int = 3

    def setup(self):
        self.convs = [_Conv(self.width) for _ in range(self.depth)]
        self.norms = [InstanceNorm() for _ in range(self.depth)]
        self.head = nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                             bias_init=nn.initializers.zeros)  # bias re-inited in _fix_head_bias

    def features(self, x_NxHxWxC: jax.Array) -> jax.Array:
        """Flattened embedding ``[n, d]`` before the linear head."""
        h = x_NxHxWxC
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = nn.relu(norm(conv(h)))
            h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        return h.reshape(h.shape[0], -1)

    def __call__(self, x_NxHxWxC: jax.Array) -> jax.Array:
        return self.head(self.features(x_NxHxWxC))


class _BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    expansion: int = 1

    @nn.compact
    def __call__(self, x):
        out = nn.relu(InstanceNorm()(_Conv(self.planes, 3, self.stride, use_bias=False)(x)))
        out = InstanceNorm()(_Conv(self.planes, 3, 1, use_bias=False)(out))
        if self.stride != 1 or x.shape[-1] != self.planes:
            x = InstanceNorm()(_Conv(self.planes, 1, self.stride, use_bias=False)(x))
        return nn.relu(out + x)


class _Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    expansion: int = 4

    @nn.compact
    def __call__(self, x):
        out_c = self.planes * self.expansion
        out = nn.relu(InstanceNorm()(_Conv(self.planes, 1, 1, use_bias=False)(x)))
        out = nn.relu(InstanceNorm()(_Conv(self.planes, 3, self.stride, use_bias=False)(out)))
        out = InstanceNorm()(_Conv(out_c, 1, 1, use_bias=False)(out))
        if self.stride != 1 or x.shape[-1] != out_c:
            x = InstanceNorm()(_Conv(out_c, 1, self.stride, use_bias=False)(x))
        return nn.relu(out + x)


class ResNet(nn.Module):
    """CIFAR ResNet with instance norm: 3×3 stride-1 stem, no max-pool, global average pool."""

    block: str = "basic"  # "basic" (ResNet-18) or "bottleneck" (ResNet-50)
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 10
    width: int = 64

    def setup(self):
        block_cls = _BasicBlock if self.block == "basic" else _Bottleneck
        self.stem = _Conv(self.width, 3, 1, use_bias=False)
        self.stem_norm = InstanceNorm()
        blocks = []
        for i, n in enumerate(self.stage_sizes):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(self.width * 2**i, stride))
        self.blocks = blocks
        self.head = nn.Dense(self.num_classes, kernel_init=torch_kernel_init,
                             bias_init=nn.initializers.zeros)

    def features(self, x_NxHxWxC: jax.Array) -> jax.Array:
        h = nn.relu(self.stem_norm(self.stem(x_NxHxWxC)))
        for blk in self.blocks:
            h = blk(h)
        return jnp.mean(h, axis=(1, 2))  # the global 4×4 average pool at 32×32 input

    def __call__(self, x_NxHxWxC: jax.Array) -> jax.Array:
        return self.head(self.features(x_NxHxWxC))


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Model by name: ``convnet`` (kwargs ``width``, ``depth``), ``resnet18``, ``resnet50``.

    Raises:
      ValueError: an unknown name, or keywords the model does not take (e.g. a ConvNet's
        ``depth`` given to a ResNet).
    """
    name = name.lower()
    builders = {
        "convnet": lambda: ConvNet(num_classes=num_classes, **kwargs),
        "resnet18": lambda: ResNet("basic", (2, 2, 2, 2), num_classes=num_classes, **kwargs),
        "resnet50": lambda: ResNet("bottleneck", (3, 4, 6, 3), num_classes=num_classes, **kwargs),
    }
    if name not in builders:
        raise ValueError(
            f"unknown model {name!r}; expected one of {', '.join(map(repr, builders))}")
    try:
        return builders[name]()
    except TypeError as e:
        raise ValueError(f"model {name!r} does not take the keywords {sorted(kwargs)}: {e}") from e


def init_params(model: nn.Module, key: jax.Array, input_shape: Sequence[int]) -> Any:
    """Initialise ``model`` for inputs of shape ``[h, w, c]`` with PyTorch-default init.

    Returns:
      The variables dict ``{"params": ...}``: throughout jaxunlearn "params" means this pytree,
      so ``model.apply(params, x)`` gives logits ``[n, num_classes]``.
    """
    x = jnp.zeros((1, *input_shape), jnp.float32)
    k_init, k_bias = jax.random.split(key)
    variables = model.init(k_init, x)
    # The linear head's bias follows PyTorch: U(±1/√fan_in). Another flax model (no ``head``
    # submodule) keeps its own initialisation.
    params = variables["params"]
    if "head" not in params or "bias" not in params["head"]:
        return dict(variables)
    head = params["head"]
    fan_in = head["kernel"].shape[0]
    head = dict(head, bias=torch_bias_init(fan_in)(k_bias, head["bias"].shape))
    return {"params": dict(params, head=head)}


@dataclasses.dataclass(frozen=True)
class _ModelInit:
    """``key -> params`` for a flax model; hashable by value so jitted cores are reused."""

    model: Any
    input_shape: tuple[int, ...]

    def __call__(self, key: jax.Array) -> Any:
        return init_params(self.model, key, self.input_shape)


def init_fn_for(model: nn.Module, input_shape: Sequence[int]) -> Callable[[jax.Array], Any]:
    """A pure ``init_fn(key) -> params`` for a flax model, usable inside jitted code.

    Args:
      model: a flax module (:func:`build_model`'s get PyTorch's head-bias initialisation; any
        other keeps its own).
      input_shape: ``(h, w, c)`` of one image.

    Returns:
      A callable equal (and hashing equal) for equal models and shapes, so jitted Blend and DM
      cores compiled for one extractor are reused for the next.
    """
    return _ModelInit(model, tuple(int(s) for s in input_shape))


def apply_features(apply_fn: Callable[..., jax.Array], params: Any, x_NxHxWxC: jax.Array,
                   method: str | None) -> jax.Array:
    """Features ``[n, d]`` of images ``[n, h, w, c]``: ``apply_fn(params, x, method=method)``.

    ``method=None`` calls ``apply_fn(params, x)`` (a plain feature function, or logits).
    """
    if method is None:
        return apply_fn(params, x_NxHxWxC)
    try:
        return apply_fn(params, x_NxHxWxC, method=method)
    except (AttributeError, TypeError) as e:
        if method not in str(e) and "method" not in str(e):
            raise
        raise ValueError(
            f"features are taken as apply_fn(params, x, method={method!r}), which this model "
            f"does not support ({type(e).__name__}: {e}); pass your own feature function "
            "features(params, x) -> [n, d] as apply_fn with method=None (see "
            "examples/blend_your_own_model.py)") from e


def batched_features(apply_fn: Callable[..., jax.Array], params: Any, x_NxHxWxC: jax.Array,
                     batch_size: int, method: str | None) -> jax.Array:
    """:func:`apply_features` of ``x`` [n, ...] in batches of ``batch_size`` (bounded memory).

    Traceable: the batches run under ``lax.map``, the last one zero-padded and cut off.

    Returns:
      Features ``[n, d]``.
    """
    n = x_NxHxWxC.shape[0]
    if n <= batch_size:
        return apply_features(apply_fn, params, x_NxHxWxC, method)
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    xp = jnp.pad(x_NxHxWxC, [(0, pad)] + [(0, 0)] * (x_NxHxWxC.ndim - 1))
    xb = xp.reshape(nb, batch_size, *x_NxHxWxC.shape[1:])
    f = jax.lax.map(lambda b: apply_features(apply_fn, params, b, method), xb)
    return f.reshape(nb * batch_size, *f.shape[2:])[:n]
