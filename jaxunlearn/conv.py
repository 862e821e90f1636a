"""2-D convolution whose backward pass runs at matmul speed on XLA:CPU.

XLA:CPU lowers the weight (kernel) gradient of a convolution to a convolution whose "kernel" is
the whole output image. Eigen runs that shape far below its matmul speed: on this project's 2-core
CPU, a 3×3 conv 128→128 at 16×16 with 320 images takes 0.5–0.8 s for its weight gradient, against
0.12 s for the GEMM of the same size (``bench/conv.py`` measures every shape of the models).
:func:`conv_general_dilated` has ``lax.conv_general_dilated``'s signature and is what every model
of :mod:`jaxunlearn.models` convolves with. Its forward pass *is* ``lax.conv_general_dilated``;
its ``custom_vjp`` computes

- the weight gradient as GEMMs over explicit im2col patches, ``patches[M, k·k·C_in]ᵀ @
  grad_out[M, C_out]`` with ``M = N·H_out·W_out`` (a 1×1 convolution needs no patches). The
  batch is cut into chunks of a few images, accumulated by a ``lax.scan``, so that each chunk's
  patches (at most :data:`CHUNK_BYTES`, :data:`CHUNK_ROWS` rows) stay in cache: materialising
  all patches at once ran 10–30% slower;
- the input gradient with ``lax``'s own transposed convolution, exactly as autodiff of
  ``lax.conv_general_dilated`` would (it already runs near the GEMM speed here).

The gradients equal ``lax``'s up to float rounding (a different summation order; the tests bound
the difference by 1e-4 × max |gradient| per tensor).

Which backward runs is decided at trace time, per call, by :func:`resolve_backward`:

- ``"lax"``: ``lax.conv_general_dilated``'s own VJP (the GPU path: cuDNN's kernels are fast; it is
  untested here, this project has no GPU).
- ``"gemm"``: the im2col weight gradient above, for NHWC/HWIO convolutions without dilation or
  feature groups (anything else falls back to ``"lax"``).
- ``"auto"`` (the default): on the CPU backend, ``"gemm"`` for every 1×1 convolution and for
  k×k convolutions with at least :data:`MIN_GEMM_PIXELS` output pixels per image; ``"lax"``
  otherwise, and on every other backend. At 4×4 outputs (the digits
  ConvNet's second layer) XLA's own 3×3 weight gradient is as fast or faster. The rule comes
  from ``bench/conv.py``'s measurements on this project's machine, so that no shape gets slower.

Override it for a whole process with :func:`set_backward` (or the environment variable
``JAXUNLEARN_CONV_BACKWARD=lax|gemm|auto``), or for a block of code with the
:func:`backward` context manager. The choice is read when a function is traced: a function
already compiled by ``jax.jit`` keeps the backward it was traced with.

Under ``vmap`` over a stack of models (:mod:`jaxunlearn.ensemble`), a convolution with per-model
kernels becomes a *grouped* convolution (``feature_group_count = M``), which XLA:CPU runs 3–10×
slower than the same convolutions one model at a time (``bench/ensemble.py``). Inside
:func:`stacked_models` (entered by the ensemble engine while it traces its vmapped steps), every
plain convolution instead takes its im2col form, patches ``[N·H_out·W_out, k·k·C_in]`` @ kernel
``[k·k·C_in, C_out]``, whose forward and autodiff backward are GEMMs that vmap turns into batched
GEMMs. It is chosen on CPU (``"auto"``); other backends keep the grouped convolution (cuDNN has
grouped kernels; untested here).

On this VM fresh large buffers cost page faults on every call, which hide most of the gain; see
:func:`jaxunlearn.hostmem.retain_freed_memory`, which the experiments and benchmarks call.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "BACKWARDS",
    "CHUNK_BYTES",
    "CHUNK_ROWS",
    "MIN_GEMM_PIXELS",
    "backward",
    "chunk_images",
    "conv2d",
    "conv_general_dilated",
    "get_backward",
    "resolve_backward",
    "set_backward",
    "stacked_models",
]

STACKED_LAYOUTS = ("auto", "im2col", "lax")
# The layout of convolutions traced inside stacked_models(); None outside it.
_STACKED = contextvars.ContextVar("conv_stacked_models", default=None)

BACKWARDS = ("auto", "lax", "gemm")
# "auto" uses the GEMM weight gradient of a k×k conv on CPU from this many output pixels per
# image (8×8) up.
MIN_GEMM_PIXELS = 64
# The weight gradient's chunks: the most images whose patches fit both bounds (and divide the
# batch). Measured on 2 cores (GFLOPS, median of 9 interleaved; the machine's noise is ±15%):
# 16×16×128, 320 images: chunks of 1/2/4/8 images 126/139/143/136, all at once 116;
# 32×32×64, 64 images: 1/2/4 images 84/95/90, all 72; the 3×3/2 64→128: 105/119/122, all 95;
# the stems' K = 27 patches did best near 8k-16k rows.
CHUNK_BYTES = 5 * 2**20
CHUNK_ROWS = 16384
_NHWC = ("NHWC", "HWIO", "NHWC")

_backward = os.environ.get("JAXUNLEARN_CONV_BACKWARD", "auto")


def _check(mode: str) -> str:
    if mode not in BACKWARDS:
        raise ValueError(f"conv backward must be one of {BACKWARDS}, got {mode!r}")
    return mode


def set_backward(mode: str) -> None:
    """Set the process-wide conv backward: ``"auto"``, ``"lax"`` or ``"gemm"``."""
    global _backward
    _backward = _check(mode)


def get_backward() -> str:
    """The process-wide conv backward (``"auto"`` unless set)."""
    return _check(_backward)


@contextlib.contextmanager
def backward(mode: str) -> Iterator[None]:
    """Use ``mode`` for convolutions traced inside the ``with`` block."""
    global _backward
    old, _backward = _backward, _check(mode)
    try:
        yield
    finally:
        _backward = old


def resolve_backward(out_hw: tuple[int, int], kernel_hw: tuple[int, int] = (3, 3),
                     c_in: int = 128, c_out: int = 128, mode: str | None = None,
                     platform: str | None = None) -> str:
    """``"lax"`` or ``"gemm"``: the backward a conv of this shape gets (see the module docstring).

    ``c_in`` and ``c_out`` do not enter today's rule; they are part of the signature so that a
    rule measured on other hardware can use them.

    Args:
      out_hw: the output's (height, width).
      kernel_hw: the kernel's (height, width).
      c_in, c_out: input and output channels.
      mode: ``"auto"``, ``"lax"`` or ``"gemm"``; None reads :func:`get_backward`.
      platform: the backend (``"cpu"``, ``"gpu"``, ...); None reads ``jax.default_backend()``.
    """
    mode = _check(mode if mode is not None else get_backward())
    if mode != "auto":
        return mode
    platform = platform if platform is not None else jax.default_backend()
    if platform != "cpu":
        return "lax"
    if tuple(kernel_hw) == (1, 1):
        return "gemm"
    if out_hw[0] * out_hw[1] < MIN_GEMM_PIXELS:
        return "lax"
    return "gemm"


@contextlib.contextmanager
def stacked_models(layout: str = "auto") -> Iterator[None]:
    """Convolutions traced inside the block are vmapped over a stack of models.

    Args:
      layout: ``"im2col"`` (patches @ kernel: batched GEMMs under vmap), ``"lax"`` (the
        convolution itself: a grouped convolution under vmap), or ``"auto"``: ``"im2col"`` on
        the CPU backend, ``"lax"`` elsewhere.
    """
    if layout not in STACKED_LAYOUTS:
        raise ValueError(f"stacked conv layout must be one of {STACKED_LAYOUTS}, got {layout!r}")
    if layout == "auto":
        layout = "im2col" if jax.default_backend() == "cpu" else "lax"
    token = _STACKED.set(layout)
    try:
        yield
    finally:
        _STACKED.reset(token)


def _conv_im2col(x, w, strides, padding, out_hw):
    cols = _patches(x, w.shape[:2], strides, padding, out_hw)
    out = cols @ w.reshape(-1, w.shape[-1])
    return out.reshape(x.shape[0], *out_hw, w.shape[-1])


def _lax_conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def _patches(x_NxHxWxC: jax.Array, kernel: tuple[int, int], strides: tuple[int, int],
             padding: tuple[tuple[int, int], ...], out_hw: tuple[int, int]) -> jax.Array:
    """im2col: ``[N·H_out·W_out, kh·kw·C]``, taps in (kh, kw) order, channels fastest."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, strides, out_hw
    xp = jnp.pad(x_NxHxWxC, ((0, 0), padding[0], padding[1], (0, 0)))
    c = x_NxHxWxC.shape[-1]
    if kh == kw == 1:
        cols = xp[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw, :]
    else:
        cols = jnp.concatenate(
            [xp[:, i: i + sh * (ho - 1) + 1: sh, j: j + sw * (wo - 1) + 1: sw, :]
             for i in range(kh) for j in range(kw)], axis=-1)
    return cols.reshape(-1, kh * kw * c)


def chunk_images(batch: int, out_hw: tuple[int, int], k_cols: int) -> int:
    """Images per weight-gradient chunk: the largest divisor of ``batch`` within both bounds."""
    rows = out_hw[0] * out_hw[1]
    fits = [d for d in range(1, batch + 1) if batch % d == 0
            and d * rows * k_cols * 4 <= CHUNK_BYTES and d * rows <= CHUNK_ROWS]
    return max(fits, default=1)


def _weight_grad_gemm(x, g_NxHoxWoxO, kernel, strides, padding):
    """The kernel gradient ``[kh, kw, C_in, C_out]``: im2col GEMMs, chunked over the batch."""
    n, ho, wo, o = g_NxHoxWoxO.shape
    k_cols = kernel[0] * kernel[1] * x.shape[-1]
    chunk = chunk_images(n, (ho, wo), k_cols)

    def part(x_c, g_c):
        cols = _patches(x_c, kernel, strides, padding, (ho, wo))
        return lax.dot_general(cols, g_c.reshape(-1, o), (((0,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)

    if chunk == n:
        dw = part(x, g_NxHoxWoxO)
    else:
        xs = x.reshape(n // chunk, chunk, *x.shape[1:])
        gs = g_NxHoxWoxO.reshape(n // chunk, chunk, ho, wo, o)
        dw, _ = lax.scan(lambda acc, xg: (acc + part(*xg), None),
                         jnp.zeros((k_cols, o), jnp.float32), (xs, gs))
    return dw.reshape(kernel[0], kernel[1], x.shape[-1], o).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_gemm(x, w, strides, padding):
    return _lax_conv(x, w, strides, padding)


def _conv_gemm_fwd(x, w, strides, padding):
    return _lax_conv(x, w, strides, padding), (x, w)


def _conv_gemm_bwd(strides, padding, res, g):
    x, w = res
    _, input_vjp = jax.vjp(lambda x_: _lax_conv(x_, w, strides, padding), x)
    (dx,) = input_vjp(g)
    dw = _weight_grad_gemm(x, g, w.shape[:2], strides, padding)
    return dx, dw.astype(w.dtype)


_conv_gemm.defvjp(_conv_gemm_fwd, _conv_gemm_bwd)


def _explicit_padding(padding, in_hw, kernel, strides) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(in_hw, kernel, strides, padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv2d(x_NxHxWxC: jax.Array, w_HxWxIxO: jax.Array, strides: Sequence[int] = (1, 1),
           padding: str | Sequence[tuple[int, int]] = "SAME", *,
           backward_mode: str | None = None) -> jax.Array:
    """NHWC × HWIO convolution with the backward chosen by :func:`resolve_backward`.

    Args:
      x_NxHxWxC: input ``[n, h, w, c_in]``.
      w_HxWxIxO: kernel ``[kh, kw, c_in, c_out]``.
      strides: (sh, sw).
      padding: ``"SAME"``, ``"VALID"`` or ((top, bottom), (left, right)).
      backward_mode: ``"auto"``, ``"lax"``, ``"gemm"``; None reads :func:`get_backward`.

    Returns:
      ``[n, h_out, w_out, c_out]``, equal to ``lax.conv_general_dilated``'s output.
    """
    if x_NxHxWxC.ndim != 4 or w_HxWxIxO.ndim != 4:
        raise ValueError(f"conv2d takes [n, h, w, c] inputs and [kh, kw, c_in, c_out] kernels, got "
                         f"{x_NxHxWxC.shape} and {w_HxWxIxO.shape}")
    if x_NxHxWxC.shape[-1] != w_HxWxIxO.shape[2]:
        raise ValueError(f"input channels {x_NxHxWxC.shape[-1]} != kernel input channels "
                         f"{w_HxWxIxO.shape[2]}")
    strides = tuple(int(s) for s in strides)
    kernel = tuple(w_HxWxIxO.shape[:2])
    pads = _explicit_padding(padding, x_NxHxWxC.shape[1:3], kernel, strides)
    out_hw = tuple((x_NxHxWxC.shape[1 + a] + sum(pads[a]) - kernel[a]) // strides[a] + 1
                   for a in range(2))
    c_in, c_out = w_HxWxIxO.shape[2:]
    if _STACKED.get() == "im2col":
        return _conv_im2col(x_NxHxWxC, w_HxWxIxO, strides, pads, out_hw)
    if resolve_backward(out_hw, kernel, c_in, c_out, backward_mode) == "gemm":
        return _conv_gemm(x_NxHxWxC, w_HxWxIxO, strides, pads)
    return _lax_conv(x_NxHxWxC, w_HxWxIxO, strides, pads)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated``, with :func:`conv2d`'s backward where it applies.

    A drop-in for Flax's ``nn.Conv(conv_general_dilated=...)``: 2-D NHWC/HWIO convolutions without
    dilation, feature or batch groups, precision or element-type options go through
    :func:`conv2d`; any other call is ``lax.conv_general_dilated`` itself.
    """
    plain = (
        lhs.ndim == 4
        and feature_group_count == 1 and batch_group_count == 1
        and precision is None and preferred_element_type is None
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and _is_nhwc(dimension_numbers, lhs.ndim)
    )
    if plain:
        return conv2d(lhs, rhs, window_strides, padding)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count,
                                    precision, preferred_element_type)


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
    if dimension_numbers is None:
        return False  # lax's default is NCHW/OIHW
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers(
            (1,) * ndim, (1,) * ndim, _NHWC)
    return tuple(dimension_numbers) == _NHWC
