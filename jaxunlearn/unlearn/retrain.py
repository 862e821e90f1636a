"""Retrain: CE on the retain set from a fresh initialisation (the gold standard, method.md §5)."""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxunlearn.optim import cosine_with_warmup, sgd
from jaxunlearn.train import Phase, TrainState, ce_step
from jaxunlearn.unlearn.base import Method, register

__all__ = ["make_retrain"]


@register("retrain")
def make_retrain(apply_fn: Callable, *, init_fn: Callable | None, lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 5e-4, epochs: int = 100,
                 warmup_epochs: int = 5, batch_size: int = 64) -> Method:
    """Retrain from scratch on the retain stream: SGD, warm-up + cosine stepped per epoch.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: ``init_fn(key) -> params`` of a fresh model (required).
      lr, momentum, weight_decay, epochs, warmup_epochs, batch_size: method.md §5's (CIFAR-10).
    """
    if init_fn is None:
        raise ValueError("retrain needs init_fn(key) -> params to build a fresh model")
    tx = sgd(lr, momentum, weight_decay)
    step = ce_step(apply_fn, tx)

    def init(key: jax.Array, params, data) -> TrainState:
        del params, data
        fresh = init_fn(key)
        return TrainState(fresh, tx.init(fresh), (), 0)

    return Method(init, lambda epoch: (Phase("retain", step),), epochs, batch_size,
                  cosine_with_warmup(lr, epochs, warmup_epochs))
