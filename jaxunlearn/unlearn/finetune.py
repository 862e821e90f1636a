"""Fine-tuning on the retain set: CF (method.md §5), and the step every fine-tuning method shares.

:func:`finetune_step` is the one retain-style step of the package: a weighted cross-entropy term
scored by the :class:`~jaxunlearn.unlearn.base.RetainObjective` hook (so A-AMU can wrap it), an
optional method-specific term (distillation KL, L1 penalty...), and optionally a mask on the
updates (pruning, SalUn).
CF, Distill, SCRUB's retain pass, L1-Sparse, Pruning and the random-label methods are this step
with different extra terms, not copies of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxunlearn.losses import cross_entropy
from jaxunlearn.optim import cosine_with_warmup, make_optimizer
from jaxunlearn.pools import Batch
from jaxunlearn.train import Phase, TrainState, apply_gradients, weighted_accuracy
from jaxunlearn.unlearn.base import (
    Method,
    RetainObjective,
    check_budget,
    register,
    retain_forward,
    training_method,
)

__all__ = ["ExtraLoss", "finetune_step", "make_cf"]

Params = Any

ExtraLoss = Callable[[Params, jax.Array, Batch, Any], jax.Array]
"""``extra(params, logits_NxC, batch, aux) -> scalar``: a method's own term added to the loss
(``aux`` is the state's auxiliary state, e.g. the teacher's parameters)."""


def finetune_step(apply_fn: Callable, tx: optax.GradientTransformation, *,
                  objective: RetainObjective | None = None, ce_weight: float = 1.0,
                  extra_loss: ExtraLoss | None = None, masked: bool = False) -> Callable:
    """A phase step minimising ``ce_weight · primary(CE) + regulariser + extra`` on one batch.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      tx: the optimiser (injected learning rate).
      objective: the :class:`~jaxunlearn.unlearn.base.RetainObjective` hook: ``primary`` on the
        batch's per-example CE (default: the weighted mean) and an optional ``regulariser``
        (A-AMU's λ·MMD²), which ``ce_weight`` does not scale.
      ce_weight: the weight of the primary term (SCRUB: 0.99).
      extra_loss: the method's own term, ``extra(params, logits, batch, aux)``.
      masked: update only where ``state.aux["mask"]`` is true (the ``mask`` of
        :func:`jaxunlearn.train.apply_gradients`).

    Returns:
      ``step(state, batch, data, key) -> (state, {"loss", "acc"})``.
    """
    objective = objective or RetainObjective()

    def step(state: TrainState, batch: Batch, data, key: jax.Array):
        def loss_fn(params):
            logits, reg = retain_forward(apply_fn, objective, params, batch, data, key)
            loss = objective.primary(cross_entropy(logits, batch.y), batch.w)
            if ce_weight != 1.0:
                loss = ce_weight * loss
            if objective.regulariser is not None:
                loss = loss + reg
            if extra_loss is not None:
                loss = loss + extra_loss(params, logits, batch, state.aux)
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        mask = state.aux["mask"] if masked else None
        return apply_gradients(state, grads, tx, mask), {
            "loss": loss, "acc": weighted_accuracy(logits, batch)}

    return step


@register("cf")
def make_cf(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 0.04,
            momentum: float = 0.502, weight_decay: float = 0.0014, epochs: int = 50,
            warmup_epochs: int = 5, batch_size: int = 64, optimizer: str = "sgd",
            objective: RetainObjective | None = None) -> Method:
    """CF: cross-entropy fine-tuning of the original model on the retain stream.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr, momentum, weight_decay, epochs, warmup_epochs, batch_size: method.md §5's (CIFAR-10;
        the same lr with and without condensation).
      optimizer: ``sgd`` or ``adam``.
      objective: the retain objective's hook (default: mean CE); A-AMU's.
    """
    del init_fn
    check_budget(epochs, batch_size, lr)
    tx = make_optimizer(optimizer, lr, momentum, weight_decay)
    step = finetune_step(apply_fn, tx, objective=objective)
    return training_method(tx, [Phase("retain", step)], epochs=epochs, batch_size=batch_size,
                           lr_schedule=cosine_with_warmup(lr, epochs, warmup_epochs))
