"""Fine-tuning on the retain set: CF ("catastrophic forgetting" fine-tune, SPEC §5)."""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxunlearn.train import Phase, TrainState, ce_step, cosine_with_warmup, sgd
from jaxunlearn.unlearn.base import Method, register

__all__ = ["make_cf"]


@register("cf")
def make_cf(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 0.04,
            momentum: float = 0.502, weight_decay: float = 0.0014, epochs: int = 50,
            warmup_epochs: int = 5, batch_size: int = 64) -> Method:
    """CF: cross-entropy fine-tuning of the original model on the retain stream.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr, momentum, weight_decay, epochs, warmup_epochs, batch_size: SPEC §5 defaults (CIFAR-10;
        the same lr with and without condensation).
    """
    del init_fn
    tx = sgd(lr, momentum, weight_decay)
    step = ce_step(apply_fn, tx)

    def init(key: jax.Array, params, data) -> TrainState:
        del key, data
        return TrainState(params, tx.init(params), (), 0)

    return Method("cf", init, lambda epoch: (Phase("retain", step),), epochs, batch_size,
                  cosine_with_warmup(lr, epochs, warmup_epochs))
