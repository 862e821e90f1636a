"""SSD: selective synaptic dampening (Foster et al., AAAI 2024; docs/method.md §5).

A one-shot edit, no training. With importances

    A = mean over mini-batches of D = R ∪ F of (∇θ mean-batch CE)²   (the full training set)
    B = the same over mini-batches of the forget set F,

every parameter with B > α·A is multiplied by min(1, λ·A/B) (α = 10, λ = 1); the others are
unchanged.

How the importances are computed (:func:`minibatch_gradient_moments`): exactly as the SSD code
does, from mini-batches rather than per example: the squared gradient of the *batch-mean* loss,
summed over the batches of one shuffled pass and divided by the number of batches. Each batch
is one backward pass, so the cost is one epoch of gradients over D plus one over F; the per-example
mean of squared gradients would need b backward passes per batch. (The batch statistic is the
squared mean gradient plus the gradient variance divided by b: both A and B use the same batch
size, so the selection B > αA compares like with like.) Batches of D mix retain and forget
examples, as a shuffled loader over the concatenated sets does. The last batch of a pass may be
short; padding rows have weight 0.

Reference mode: the paper's reference passes the importances to the dampening in swapped order
(A computed on F, B on D); ``swap_importances=True`` reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxunlearn import sharding
from jaxunlearn.losses import cross_entropy, weighted_mean
from jaxunlearn.pools import Batch, Pool, epoch_order
from jaxunlearn.train import TrainState
from jaxunlearn.unlearn.base import Method, UnlearnData, register, training_method

__all__ = ["make_ssd", "minibatch_gradient_moments", "selective_dampening"]

Params = Any


def _gather_concat(pools: Sequence[Pool], idx_B: jax.Array) -> Batch:
    """Rows ``idx`` of the concatenation of ``pools`` (capacities laid end to end; −1 = padding)."""
    safe = jnp.maximum(idx_B, 0)
    x = jnp.zeros((idx_B.shape[0], *pools[0].x.shape[1:]), pools[0].x.dtype)
    y = jnp.zeros(idx_B.shape, jnp.int32)
    offset = 0
    for pool in pools:  # a static handful of pools (1 or 2), not a loop over data
        cap = pool.y.shape[0]
        inside = (safe >= offset) & (safe < offset + cap)
        local = jnp.clip(safe - offset, 0, cap - 1)
        x = jnp.where(inside[(slice(None),) + (None,) * (x.ndim - 1)], pool.x[local], x)
        y = jnp.where(inside, pool.y[local], y)
        offset += cap
    return sharding.constrain_batch(Batch(x, y, (idx_B >= 0).astype(jnp.float32)))


def minibatch_gradient_moments(apply_fn: Callable, params: Params, pools: Sequence[Pool],
                               key: jax.Array, batch_size: int) -> tuple[Params, Params]:
    """Mean over mini-batches of the batch-mean CE gradient and of its elementwise square.

    The valid rows of ``pools`` (taken together) are shuffled with ``key`` and cut into batches of
    ``batch_size``, the last one short (:func:`jaxunlearn.train.epoch_order` over the pools laid
    end to end); for each batch g = ∇θ (weighted mean CE). Runs as one ``lax.scan`` on device.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      params: the parameters θ.
      pools: one or more pools whose union is the data set (e.g. ``[retain, forget]`` for D).
      key: PRNG key of the shuffle.
      batch_size: b (static).

    Returns:
      ``(mean_g, mean_g2)``: pytrees like ``params``: (1/K) Σ_k g_k and (1/K) Σ_k g_k² over the K
      non-empty batches (zeros when the pools are empty).
    """
    order = epoch_order(key, jnp.concatenate([p.valid for p in pools]), batch_size)

    def grad_of(batch: Batch) -> Params:
        def loss_fn(p):
            return weighted_mean(cross_entropy(apply_fn(p, batch.x), batch.y), batch.w)

        return jax.grad(loss_fn)(params)

    def body(carry, idx_B):
        sum_g, sum_g2, count = carry
        batch = _gather_concat(pools, idx_B)
        g = grad_of(batch)  # an empty batch has loss 0, so g = 0: it adds nothing
        sum_g = jax.tree.map(jnp.add, sum_g, g)
        sum_g2 = jax.tree.map(lambda s, x: s + jnp.square(x), sum_g2, g)
        return (sum_g, sum_g2, count + (jnp.sum(batch.w) > 0)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (sum_g, sum_g2, count), _ = jax.lax.scan(body, (zeros, zeros, jnp.int32(0)), order)
    denom = jnp.maximum(count, 1).astype(jnp.float32)
    return (jax.tree.map(lambda s: s / denom, sum_g), jax.tree.map(lambda s: s / denom, sum_g2))


def selective_dampening(params: Params, importance_full: Params, importance_forget: Params, *,
                        alpha: float = 10.0, lam: float = 1.0) -> Params:
    """θ ← θ·min(1, λA/B) where B > αA, θ unchanged elsewhere (docs/method.md §5).

    Args:
      params: the parameters θ.
      importance_full: A, a pytree like ``params`` (importance on the full training set).
      importance_forget: B, a pytree like ``params`` (importance on the forget set).
      alpha: the selection threshold α.
      lam: the dampening constant λ.

    Returns:
      The dampened parameters (where B > αA ≥ 0, B > 0, so the ratio is finite).
    """

    def damp(p, a, b):
        selected = b > alpha * a
        factor = jnp.minimum(1.0, lam * a / jnp.where(selected, b, 1.0))
        return jnp.where(selected, p * factor.astype(p.dtype), p)

    return jax.tree.map(damp, params, importance_full, importance_forget)


@register("ssd")
def make_ssd(apply_fn: Callable, *, init_fn: Callable | None = None, alpha: float = 10.0,
             lam: float = 1.0, batch_size: int = 64, swap_importances: bool = False) -> Method:
    """SSD as a one-shot ``edit`` (``epochs = 0``).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      alpha: selection weighting α = 10 (docs/method.md §5).
      lam: dampening constant λ = 1.
      batch_size: mini-batch size of the importance passes (the reference's loader: 64).
      swap_importances: reproduce the reference's swap (A on the forget set, B on D).
    """
    del init_fn
    if not alpha >= 0 or not lam >= 0 or batch_size < 1:
        raise ValueError(f"expected alpha >= 0, lam >= 0, batch_size >= 1; got alpha={alpha}, "
                         f"lam={lam}, batch_size={batch_size}")

    def edit(state: TrainState, data: UnlearnData, key: jax.Array) -> TrainState:
        k_full, k_forget = jax.random.split(key)
        _, imp_full = minibatch_gradient_moments(apply_fn, state.params,
                                                 [data.retain, data.forget], k_full, batch_size)
        _, imp_forget = minibatch_gradient_moments(apply_fn, state.params, [data.forget],
                                                   k_forget, batch_size)
        if swap_importances:
            imp_full, imp_forget = imp_forget, imp_full
        return state._replace(params=selective_dampening(state.params, imp_full, imp_forget,
                                                         alpha=alpha, lam=lam))

    return training_method(None, (), epochs=0, batch_size=batch_size, edit=edit)
