"""Random-label unlearning and SalUn (docs/method.md §5, beyond the paper).

- ``random_label`` (Golatkar et al. 2020; SalUn's "RL"): CE fine-tuning on forget examples
  relabelled with a random *wrong* class, y' = (y + U{1..C−1}) mod C, drawn once, together with
  retain examples under their true labels. The stream is forget ∪ ``retain_fraction`` of the
  retain pool (default all of it), shuffled together as one set, built once on device by
  ``prepare`` (:func:`~jaxunlearn.unlearn.bad_teacher.mixed_pool`).
- ``salun`` (Fan et al., ICLR 2024): the same fine-tuning, updating only the salient weights: the
  ``keep_fraction`` (50%) of all parameters with the largest |∇θ L_F|, ranked globally, where
  L_F is the CE of the forget set under its true labels and ∇θ L_F the mean of its mini-batch
  gradients (:func:`~jaxunlearn.unlearn.ssd.minibatch_gradient_moments`; SalUn sums them,
  which ranks the same). The mask is computed once in ``init`` and kept in ``aux["mask"]``; the
  *updates* are masked, so the other weights keep their original values exactly (SalUn masks
  the gradients, which lets coupled weight decay still shrink the frozen weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxunlearn.optim import make_optimizer
from jaxunlearn.train import Phase
from jaxunlearn.unlearn.bad_teacher import mixed_pool
from jaxunlearn.unlearn.base import Method, UnlearnData, check_budget, register, training_method
from jaxunlearn.unlearn.finetune import finetune_step
from jaxunlearn.unlearn.ssd import minibatch_gradient_moments

__all__ = ["make_random_label", "make_salun", "random_wrong_labels", "saliency_mask"]

Params = Any
STREAM = "relabelled"


def random_wrong_labels(key: jax.Array, y_N: jax.Array, num_classes: int) -> jax.Array:
    """A uniformly random label different from ``y`` for every row: (y + U{1..C−1}) mod C."""
    shift = jax.random.randint(key, y_N.shape, 1, num_classes)
    return ((y_N + shift) % num_classes).astype(jnp.int32)


def saliency_mask(grads: Params, keep_fraction: float) -> Params:
    """True for the ``keep_fraction`` of entries with the largest |grad|, ranked over all leaves.

    Exactly ``round(keep_fraction · total)`` entries are kept (ties broken by position).

    Args:
      grads: a pytree of gradients.
      keep_fraction: in (0, 1].

    Returns:
      A bool pytree like ``grads``.
    """
    leaves, treedef = jax.tree.flatten(grads)
    flat = jnp.concatenate([jnp.abs(g).ravel() for g in leaves])
    total = flat.shape[0]
    n_keep = int(round(keep_fraction * total))
    order = jnp.argsort(-flat, stable=True)
    rank = jnp.zeros((total,), jnp.int32).at[order].set(jnp.arange(total, dtype=jnp.int32))
    keep = rank < n_keep
    out, offset = [], 0
    for g in leaves:
        out.append(keep[offset:offset + g.size].reshape(g.shape))
        offset += g.size
    return treedef.unflatten(out)


def _make_relabel(apply_fn: Callable, *, lr: float, momentum: float,
                  weight_decay: float, epochs: int, batch_size: int, retain_fraction: float,
                  optimizer: str, keep_fraction: float | None) -> Method:
    """Random-label fine-tuning; with ``keep_fraction`` only the salient weights move (SalUn)."""
    check_budget(epochs, batch_size, lr)
    if not 0.0 <= retain_fraction <= 1.0:
        raise ValueError(f"retain_fraction must be in [0, 1]; got {retain_fraction}")
    if keep_fraction is not None and not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1]; got {keep_fraction}")
    tx = make_optimizer(optimizer, lr, momentum, weight_decay)
    step = finetune_step(apply_fn, tx, masked=keep_fraction is not None)

    def prepare(key: jax.Array, data: UnlearnData) -> UnlearnData:
        k_mix, k_label = jax.random.split(key)
        pool, is_f = mixed_pool(k_mix, data.forget, data.retain, retain_fraction)
        wrong = random_wrong_labels(k_label, pool.y, data.num_classes)
        pool = pool._replace(y=jnp.where(is_f, wrong, pool.y))
        return data._replace(extra={**data.extra, STREAM: pool})

    def salient(key: jax.Array, params, data: UnlearnData) -> dict:
        grad_f, _ = minibatch_gradient_moments(apply_fn, params, [data.forget], key, batch_size)
        return {"mask": saliency_mask(grad_f, keep_fraction)}

    return training_method(tx, [Phase(STREAM, step)], epochs=epochs, batch_size=batch_size,
                           aux=None if keep_fraction is None else salient, prepare=prepare)


@register("random_label")
def make_random_label(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 1e-2,
                      momentum: float = 0.9, weight_decay: float = 5e-4, epochs: int = 10,
                      batch_size: int = 64, retain_fraction: float = 1.0,
                      optimizer: str = "sgd") -> Method:
    """Random-label: CE on forget (random wrong labels) ∪ retain (true labels), constant lr.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr: 1e-2 (**5e-3 with condensation** in the experiment configs).
      momentum, weight_decay, epochs, batch_size: 0.9, 5e-4, 10, 64.
      retain_fraction: fraction of the retain pool in the stream (1.0).
      optimizer: ``sgd`` or ``adam``.
    """
    del init_fn
    return _make_relabel(apply_fn, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
                         retain_fraction=retain_fraction, optimizer=optimizer, keep_fraction=None)


@register("salun")
def make_salun(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 1e-2,
               momentum: float = 0.9, weight_decay: float = 5e-4, epochs: int = 10,
               batch_size: int = 64, retain_fraction: float = 1.0, keep_fraction: float = 0.5,
               optimizer: str = "sgd") -> Method:
    """SalUn: random-label fine-tuning of the ``keep_fraction`` most forget-salient weights.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr: 1e-2 (**5e-3 with condensation** in the experiment configs).
      momentum, weight_decay, epochs, batch_size: 0.9, 5e-4, 10, 64.
      retain_fraction: fraction of the retain pool in the stream (1.0).
      keep_fraction: fraction of all weights updated (0.5).
      optimizer: ``sgd`` or ``adam``.
    """
    del init_fn
    return _make_relabel(apply_fn, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         epochs=epochs, batch_size=batch_size, retain_fraction=retain_fraction,
                         optimizer=optimizer, keep_fraction=keep_fraction)
