"""Fine-tuning on the retain set: CF ("catastrophic forgetting" fine-tune, SPEC §5)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from jaxunlearn.train import (
    Phase,
    TrainState,
    apply_gradients,
    cosine_with_warmup,
    weighted_accuracy,
)
from jaxunlearn.unlearn.base import (
    Method,
    PrimaryLoss,
    make_optimizer,
    mean_primary_loss,
    register,
)

__all__ = ["make_cf"]


@register("cf")
def make_cf(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 0.04,
            momentum: float = 0.502, weight_decay: float = 0.0014, epochs: int = 50,
            warmup_epochs: int = 5, batch_size: int = 64, optimizer: str = "sgd",
            primary_loss: PrimaryLoss | None = None) -> Method:
    """CF: cross-entropy fine-tuning of the original model on the retain stream.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr, momentum, weight_decay, epochs, warmup_epochs, batch_size: SPEC §5 defaults (CIFAR-10;
        the same lr with and without condensation).
      optimizer: ``sgd`` or ``adam``.
      primary_loss: the loss on the batch's per-example CE (default: the mean); A-AMU's hook.
    """
    del init_fn
    tx = make_optimizer(optimizer, lr, momentum, weight_decay)
    primary = primary_loss or mean_primary_loss

    def step(state: TrainState, batch, data, key):
        def loss_fn(params):
            logits = apply_fn(params, batch.x)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y)
            return primary(ce, batch.w, params, data, key), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return apply_gradients(state, grads, tx), {"loss": loss,
                                                   "acc": weighted_accuracy(logits, batch)}

    def init(key: jax.Array, params, data) -> TrainState:
        del key, data
        return TrainState(params, tx.init(params), (), 0)

    return Method("cf", init, lambda epoch: (Phase("retain", step),), epochs, batch_size,
                  cosine_with_warmup(lr, epochs, warmup_epochs))
