"""Evaluation metrics (docs/method.md §6): batched logits, accuracy, Student-t confidence intervals.

:func:`predict_logits` evaluates a model in fixed-size jitted chunks: every chunk, the last one
included, has exactly ``batch_size`` rows, so the forward pass compiles once per
``(apply_fn, batch_size, example shape)`` whatever the number of examples. The last chunk is
the final ``batch_size`` rows of the data (overlapping the previous chunk) when there are at
least that many, so no padding rows are ever evaluated; only a set smaller than one chunk is
padded, by repeating its last row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["accuracy", "accuracy_from_logits", "confidence_interval", "predict_logits"]


@functools.lru_cache(maxsize=64)
def _cached_jit(apply_fn: Callable) -> Callable:
    return jax.jit(apply_fn)


def _jitted(apply_fn: Callable) -> Callable:
    """One jitted wrapper per ``apply_fn``, so repeated evaluations reuse its compilation cache.

    ``model.apply`` is a fresh bound method on every attribute access but compares and hashes
    equal, hence the dictionary cache rather than a weak reference.
    """
    try:
        return _cached_jit(apply_fn)
    except TypeError:  # unhashable callable: jit it afresh (jax still caches by identity)
        return jax.jit(apply_fn)


def _chunk(x: Any, start: int, size: int) -> Any:
    """Rows ``[start, start + size)`` of host or device data, without a per-offset recompile."""
    if isinstance(x, jax.Array):
        # a traced start index: one slice kernel per data shape, not one per offset
        return jax.lax.dynamic_slice_in_dim(x, jnp.int32(start), size, axis=0)
    return x[start:start + size]


def predict_logits(apply_fn: Callable, params: Any, x_NxHxWxC: Any,
                   batch_size: int = 512) -> np.ndarray:
    """Logits of every example, computed in fixed-size jitted chunks (docs/method.md §6).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits [b, C]``.
      params: the model's variables.
      x_NxHxWxC: inputs [n, ...] (numpy or jax array).
      batch_size: chunk size; the forward pass compiles once per (batch_size, example shape).

    Returns:
      Host array [n, C]; ``[0, C]`` for ``n == 0`` (C from ``jax.eval_shape``, nothing runs).
    """
    if not (isinstance(batch_size, int | np.integer) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not isinstance(x_NxHxWxC, jax.Array):
        x_NxHxWxC = np.asarray(x_NxHxWxC)
    shape = tuple(x_NxHxWxC.shape)
    if len(shape) < 1:
        raise ValueError(f"x must have a leading example axis [n, ...]; got shape {shape}")
    n = shape[0]
    if n == 0:
        spec = jax.ShapeDtypeStruct((1, *shape[1:]), x_NxHxWxC.dtype)
        out = jax.eval_shape(apply_fn, params, spec)
        return np.zeros((0, *out.shape[1:]), out.dtype)
    fwd = _jitted(apply_fn)
    if n < batch_size:
        # a lone short chunk: pad by repeating the last row (a real input, so no norm of zeros)
        idx = np.minimum(np.arange(batch_size), n - 1)
        x = x_NxHxWxC[jnp.asarray(idx) if isinstance(x_NxHxWxC, jax.Array) else idx]
        return np.asarray(jax.device_get(fwd(params, x)))[:n]
    pieces = []
    for start in range(0, n, batch_size):
        # the last chunk is the final batch_size rows; keep only its rows not yet predicted
        s = min(start, n - batch_size)
        pieces.append((start - s, fwd(params, _chunk(x_NxHxWxC, s, batch_size))))
    # dispatch every chunk first (asynchronous), then one transfer per chunk
    host = jax.device_get([p for _, p in pieces])
    return np.concatenate([h[off:] for (off, _), h in zip(pieces, host, strict=True)], axis=0)


def accuracy_from_logits(logits: Any, y: Any) -> float:
    """Top-1 accuracy in percent from logits [n, C] and labels [n]; NaN for an empty set."""
    logits, y = np.asarray(logits), np.asarray(y)
    if logits.ndim != 2 or y.ndim != 1 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"expected logits [n, C] and labels [n]; got shapes {logits.shape} and "
                         f"{y.shape}")
    if y.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.argmax(logits, axis=1) == y) * 100.0)


def accuracy(apply_fn: Callable, params: Any, x: Any, y: Any, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent of ``apply_fn(params, ·)`` on ``(x, y)`` (docs/method.md §6).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      params: the model's variables.
      x: inputs [n, ...].
      y: integer labels [n].
      batch_size: evaluation chunk size (see :func:`predict_logits`).

    Returns:
      Accuracy in percent; NaN for an empty set.
    """
    if np.shape(x)[:1] != np.shape(y)[:1] or np.ndim(y) != 1:
        raise ValueError(f"expected x [n, ...] and labels [n] with the same n; got shapes "
                         f"{np.shape(x)} and {np.shape(y)}")
    if np.shape(y)[0] == 0:
        return float("nan")
    return accuracy_from_logits(predict_logits(apply_fn, params, x, batch_size), y)


def confidence_interval(values: Sequence[float] | np.ndarray,
                        confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of the mean (docs/method.md §6).

    half = t((1 + confidence)/2, n − 1) · s / √n with s the sample standard deviation (ddof 1);
    ×4.303 · s/√3 for 3 seeds at 95%.

    Args:
      values: n ≥ 1 measurements (e.g. one per seed).
      confidence: coverage in (0, 1).

    Returns:
      ``(mean, half_width)``. With a single value the spread is unknown and the half-width is
      NaN (not 0, which would claim certainty). Non-finite inputs propagate as NaN.
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("confidence_interval needs at least one value; got none")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    mean = float(np.mean(v))
    if v.size == 1:
        return mean, float("nan")
    t = stats.t.ppf(0.5 * (1.0 + confidence), v.size - 1)
    return mean, float(t * np.std(v, ddof=1) / np.sqrt(v.size))
