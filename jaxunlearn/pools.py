"""Device-resident datasets and the sampling done on them inside jitted steps.

- :class:`Pool`: a dataset on device padded to a static capacity, with its valid count ``n``.
  Padding rows never contribute: every batch carries a weight mask ``w`` (:class:`Batch`).
  Capacities are bucketed (:func:`bucket_size`), so sets whose sizes differ a little (the retain
  set of different forgotten classes) share one compiled step.
- Per-epoch shuffles: :func:`epoch_order` (a shuffle of the valid rows cut into fixed-size
  batches, the last one padded with ``w = 0``) and :func:`gather_batch`.
- Draws inside a step: :func:`sample_without_replacement` / :func:`sample_batch` (distinct rows
  drawn uniformly), shared by every method that samples data inside its step (A-AMU).
- :func:`stream_pool`: the pool a phase of the training loop (:mod:`jaxunlearn.train`) runs over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import sharding

__all__ = [
    "Batch",
    "Pool",
    "bucket_size",
    "epoch_order",
    "gather_batch",
    "make_pool",
    "sample_batch",
    "sample_without_replacement",
    "shuffle_valid_first",
    "stream_pool",
]

class Pool(NamedTuple):
    """A dataset on device padded to a static capacity. Rows ``>= n`` are padding (zeros)."""

    x: jax.Array  # [cap, h, w, c]
    y: jax.Array  # [cap] int32
    n: jax.Array  # [] int32, the number of valid rows

    @property
    def valid(self) -> jax.Array:
        """``[cap]`` bool, True for the ``n`` valid rows."""
        return jnp.arange(self.y.shape[0]) < self.n


class Batch(NamedTuple):
    """A fixed-size batch; ``w`` is 1 for real examples and 0 for padding."""

    x: jax.Array  # [b, h, w, c]
    y: jax.Array  # [b] int32
    w: jax.Array  # [b] float32


def bucket_size(n: int) -> int:
    """Static capacity for ``n`` rows: ``n`` rounded up to a quarter of its power of two.

    Sets whose sizes differ a little (the retain set of different forgotten classes) share one
    capacity, hence one compiled step; the padding overhead is below 25%.
    """
    if n <= 64:
        return 64
    quantum = 2 ** (math.floor(math.log2(n)) - 2)
    return int(math.ceil(n / quantum) * quantum)


def make_pool(x: Any, y: Any, capacity: int | None = None) -> Pool:
    """Put ``x [n, ...]`` and ``y [n]`` on device, padded to ``capacity`` (default: bucket)."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"images and labels differ in length: {x.shape[0]} vs {y.shape[0]}")
    n = x.shape[0]
    cap = bucket_size(n) if capacity is None else capacity
    if cap < n:
        raise ValueError(f"capacity {cap} is smaller than the {n} rows to store")
    xp = np.zeros((cap, *x.shape[1:]), np.float32)
    xp[:n] = x
    yp = np.zeros((cap,), np.int32)
    yp[:n] = y
    return sharding.replicate(Pool(xp, yp, np.int32(n)))


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def shuffle_valid_first(key: jax.Array, valid_N: jax.Array) -> jax.Array:
    """A uniformly random order of the valid rows, then the others in index order.

    Args:
      key: PRNG key.
      valid_N: ``[N]`` bool, the rows to shuffle (anywhere in the set, e.g. several padded pools
        laid end to end).

    Returns:
      ``[N]`` int32 row indices: the valid rows in random order first.
    """
    u = jax.random.uniform(key, valid_N.shape)
    return jnp.argsort(jnp.where(valid_N, u, 2.0))


def epoch_order(key: jax.Array, valid_N: jax.Array, batch_size: int) -> jax.Array:
    """A random order of the valid rows, padded to whole batches: ``[steps, b]``.

    Args:
      key: PRNG key of the shuffle.
      valid_N: ``[N]`` bool validity of the rows of a set of capacity N (``Pool.valid``).
      batch_size: b (static).

    Returns:
      ``[ceil(N / b), b]`` int32 (at least one step): the valid rows first in random order
      (:func:`shuffle_valid_first`), then ``-1`` (padding) in every remaining slot.
    """
    capacity = valid_N.shape[0]
    n = jnp.sum(valid_N)
    order = jnp.where(jnp.arange(capacity) < n, shuffle_valid_first(key, valid_N), -1)
    steps = _steps_per_epoch(capacity, batch_size)
    order = jnp.pad(order, (0, steps * batch_size - capacity), constant_values=-1)
    return order.reshape(steps, batch_size).astype(jnp.int32)


def gather_batch(pool: Pool, idx_B: jax.Array) -> Batch:
    """Rows ``idx`` of ``pool`` (``-1`` = padding, weight 0), sharded over the data mesh."""
    safe = jnp.maximum(idx_B, 0)
    batch = Batch(pool.x[safe], pool.y[safe], (idx_B >= 0).astype(jnp.float32))
    return sharding.constrain_batch(batch)


def sample_without_replacement(key: jax.Array, eligible: jax.Array,
                               m: int) -> tuple[jax.Array, jax.Array]:
    """``m`` distinct positions along the last axis, drawn uniformly among the eligible ones.

    Eligible entries score a uniform draw in [0, 1), the others −1, and ``top_k`` keeps the ``m``
    highest: eligible positions come first in random order, without duplicates; when fewer than
    ``m`` are eligible, the rest of the slots are ineligible positions (lowest index first) with
    weight 0, so shapes stay static.

    Args:
      key: PRNG key.
      eligible: ``[..., N]`` bool (e.g. ``Pool.valid``, or ``[C, N]`` per-class tables).
      m: positions to draw per row (static, ``<= N``).

    Returns:
      ``(idx, w)``: ``[..., m]`` int32 positions and ``[..., m]`` float32 weights (1 eligible,
      0 filler).
    """
    u = jax.random.uniform(key, eligible.shape)
    _, idx = jax.lax.top_k(jnp.where(eligible, u, -1.0), m)
    return idx, jnp.take_along_axis(eligible, idx, axis=-1).astype(jnp.float32)


def sample_batch(key: jax.Array, pool: Pool, m: int, eligible: jax.Array | None = None) -> Batch:
    """``m`` distinct valid rows of ``pool`` drawn uniformly on device (fewer valid rows: w = 0).

    Args:
      key: PRNG key.
      pool: the pool.
      m: static batch size (capped at the pool's capacity).
      eligible: optional ``[cap]`` bool restricting the draw to some valid rows (e.g. A-AMU's
        unseen rows of the forget sample's classes).

    Returns:
      A :class:`Batch` of ``min(m, capacity)`` rows (:func:`sample_without_replacement`).
    """
    cap = pool.y.shape[0]
    rows = pool.valid if eligible is None else pool.valid & eligible
    idx, w = sample_without_replacement(key, rows, min(m, cap))
    return Batch(pool.x[idx], pool.y[idx], w)


def stream_pool(data: Any, stream: str) -> Pool:
    """The :class:`Pool` of the stream named ``stream`` in ``data``.

    Args:
      data: a mapping of pools, or a pytree with pools as attributes and optionally more in an
        ``extra`` mapping (e.g. :class:`~jaxunlearn.unlearn.base.UnlearnData`).
      stream: the stream's name.

    Raises:
      ValueError: no such stream (the message lists the available ones).
    """
    if isinstance(data, Mapping) and stream in data:
        return data[stream]
    if hasattr(data, stream):
        return getattr(data, stream)
    extra = getattr(data, "extra", None) or {}
    if stream in extra:
        return extra[stream]
    if isinstance(data, Mapping):
        names = list(data)
    else:
        names = [f for f in getattr(data, "_fields", ()) if isinstance(getattr(data, f), Pool)]
    raise ValueError(f"unknown data stream {stream!r}; available: "
                     f"{', '.join([*names, *extra]) or 'none'}")
