"""Pruning (method.md §5): progressive global L1 pruning of conv weights, then fine-tuning.

At every pruning epoch (the reference's rule: epochs e with ``(E − e) % prune_step == 0``, i.e.
0, 5, 10, 15 for E = 20, step 5) the smallest-magnitude ``rate`` of the *remaining* conv weights,
ranked globally across layers, are removed (as ``torch.nn.utils.prune.global_unstructured`` with
``L1Unstructured``): ``rate = 1 − (1 − target)^(1/P)`` for P pruning epochs, 52.7% for
P = 4 and a 95% target. Conv weights are the 4-D leaves (``[kh, kw, c_in, c_out]`` kernels) of
the parameter tree; biases, norms and the linear head are not pruned.

The masks live in ``aux["mask"]`` (a bool pytree, all true outside the conv kernels). Between
pruning epochs the model is fine-tuned with CE on the retain stream, and every update is masked
(the ``mask`` of :func:`~jaxunlearn.train.apply_gradients`), so pruned weights stay exactly 0.
The learning rate is constant (the reference's step milestones 50, 75 are never reached).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxunlearn.optim import make_optimizer
from jaxunlearn.train import Phase, TrainState
from jaxunlearn.unlearn.base import (
    Method,
    RetainObjective,
    check_budget,
    register,
    training_method,
)
from jaxunlearn.unlearn.finetune import finetune_step

__all__ = ["conv_sparsity", "make_pruning", "prune_conv_weights", "pruning_schedule"]

Params = Any


def _is_conv(leaf: jax.Array) -> bool:
    return jnp.ndim(leaf) == 4


def pruning_schedule(epochs: int, prune_step: int, target_sparsity: float
                     ) -> tuple[tuple[int, ...], float]:
    """The pruning epochs and the fraction of remaining weights removed at each.

    Returns:
      ``(epochs_tuple, rate)`` with ``epochs_tuple = (e : (E − e) % prune_step == 0)`` and
      ``rate = 1 − (1 − target)^(1/len(epochs_tuple))`` (0 when there is no pruning epoch).
    """
    if prune_step < 1 or not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"expected prune_step >= 1 and target_sparsity in [0, 1); got "
                         f"prune_step={prune_step}, target_sparsity={target_sparsity}")
    when = tuple(e for e in range(epochs) if (epochs - e) % prune_step == 0)
    rate = 1.0 - (1.0 - target_sparsity) ** (1.0 / len(when)) if when else 0.0
    return when, rate


def prune_conv_weights(params: Params, mask: Params, rate: float) -> tuple[Params, Params]:
    """Remove the ``rate`` smallest-|w| fraction of the remaining conv weights, globally.

    Exactly ``round(rate · remaining)`` weights are removed (ties broken by position); already
    pruned weights are ranked first so they stay pruned.

    Args:
      params: the parameters.
      mask: bool pytree like ``params`` (true = kept).
      rate: fraction in [0, 1] of the remaining conv weights to remove.

    Returns:
      ``(params, mask)`` with the new mask and every masked-out weight set to 0.
    """
    leaves, treedef = jax.tree.flatten(params)
    masks = treedef.flatten_up_to(mask)
    conv = [i for i, p in enumerate(leaves) if _is_conv(p)]
    if not conv:
        return params, mask
    mag = jnp.concatenate([jnp.abs(leaves[i]).ravel() for i in conv])
    keep = jnp.concatenate([masks[i].ravel() for i in conv])
    total = mag.shape[0]
    remaining = jnp.sum(keep)
    n_prune = jnp.round(rate * remaining).astype(jnp.int32)
    # pruned entries score −1 and sort first; the next n_prune entries are removed now
    order = jnp.argsort(jnp.where(keep, mag, -1.0), stable=True)
    rank = jnp.zeros((total,), jnp.int32).at[order].set(jnp.arange(total, dtype=jnp.int32))
    new_keep = rank >= (total - remaining) + n_prune
    out_p, out_m = list(leaves), list(masks)
    offset = 0
    for i in conv:
        size = leaves[i].size
        m = new_keep[offset:offset + size].reshape(leaves[i].shape)
        out_m[i] = m
        out_p[i] = jnp.where(m, leaves[i], jnp.zeros_like(leaves[i]))
        offset += size
    return treedef.unflatten(out_p), treedef.unflatten(out_m)


def conv_sparsity(params: Params) -> float:
    """Fraction of conv weights (4-D leaves) that are exactly zero."""
    conv = [p for p in jax.tree.leaves(params) if _is_conv(p)]
    total = sum(p.size for p in conv)
    return float(sum(jnp.sum(p == 0) for p in conv)) / max(total, 1)


@register("pruning")
def make_pruning(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 0.04,
                 momentum: float = 0.9, weight_decay: float = 5e-4, epochs: int = 20,
                 batch_size: int = 64, target_sparsity: float = 0.95, prune_step: int = 5,
                 optimizer: str = "sgd", objective: RetainObjective | None = None) -> Method:
    """Pruning: global L1 pruning of conv weights at the pruning epochs, masked CE fine-tuning.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr, momentum, weight_decay, epochs, batch_size: 0.04, 0.9, 5e-4, 20, 64 (method.md §5, both
        with and without condensation).
      target_sparsity, prune_step: 95% after the last pruning epoch, every 5 epochs.
      optimizer: ``sgd`` or ``adam``.
      objective: the retain objective's hook (default: mean CE).
    """
    del init_fn
    check_budget(epochs, batch_size, lr)
    when, rate = pruning_schedule(epochs, prune_step, target_sparsity)
    tx = make_optimizer(optimizer, lr, momentum, weight_decay)
    step = finetune_step(apply_fn, tx, objective=objective, masked=True)

    def keep_all(key: jax.Array, params, data) -> dict:
        del key, data
        return {"mask": jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)}

    @jax.jit  # compiled at the first pruning epoch (a sort of the conv weights: ~0.1 s)
    def _prune(state: TrainState) -> TrainState:
        params, mask = prune_conv_weights(state.params, state.aux["mask"], rate)
        return state._replace(params=params, aux={**state.aux, "mask": mask})

    def begin_epoch(state: TrainState, epoch: int, data, key) -> TrainState:
        del data, key
        return _prune(state) if epoch in when else state

    return training_method(tx, [Phase("retain", step)], epochs=epochs, batch_size=batch_size,
                           aux=keep_all, begin_epoch=begin_epoch)
