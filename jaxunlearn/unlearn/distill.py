"""Distill: fine-tuning on the retain set distilled towards the original model (docs/method.md §5).

Loss on a retain batch: ``ce_weight · CE + kl_weight · KL_T(student ‖ original)``; the teacher is
the starting model (the previous round's model in multi-round studies), frozen in ``aux``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxunlearn.losses import kl_with_temperature
from jaxunlearn.optim import constant_with_warmup, make_optimizer
from jaxunlearn.train import Phase
from jaxunlearn.unlearn.base import (
    Method,
    RetainObjective,
    UnlearnData,
    check_budget,
    register,
    training_method,
)
from jaxunlearn.unlearn.finetune import ExtraLoss, finetune_step

__all__ = ["distill_kl_term", "make_distill", "teacher_aux"]


def distill_kl_term(apply_fn: Callable, kl_weight: float, temperature: float) -> ExtraLoss:
    """The extra term ``kl_weight · KL_T(student ‖ teacher)``, teacher in ``aux["teacher"]``.

    The teacher's logits are computed under ``stop_gradient`` (it is never trained); padding rows
    have no effect (weighted batch mean).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")

    def extra(params, logits, batch, aux):
        del params
        teacher = jax.lax.stop_gradient(apply_fn(aux["teacher"], batch.x))
        return kl_weight * kl_with_temperature(logits, teacher, temperature, batch.w)

    return extra


def teacher_aux(key: jax.Array, params: Any, data: UnlearnData) -> dict:
    """The auxiliary state keeping the starting parameters as the frozen teacher.

    For :func:`~jaxunlearn.unlearn.base.training_method`'s ``aux``: ``{"teacher": θ₀}``.
    """
    del key, data
    return {"teacher": params}


@register("distill")
def make_distill(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 0.04,
                 momentum: float = 0.86, weight_decay: float = 1e-3, epochs: int = 50,
                 warmup_epochs: int = 0, batch_size: int = 64, ce_weight: float = 1.0,
                 kl_weight: float = 0.001, temperature: float = 2.0, optimizer: str = "sgd",
                 objective: RetainObjective | None = None) -> Method:
    """Distill: ``ce_weight·CE + kl_weight·KL_T(student ‖ original)`` on the retain stream.

    The learning rate is constant (the reference's step milestones 50, 75 are never reached in 50
    epochs), after an optional linear warm-up.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr: 0.04 without condensation (docs/method.md §5); **5e-3 with condensation**.
      momentum, weight_decay, epochs, batch_size: docs/method.md §5 (0.86, 1e-3, 50, 64).
      warmup_epochs: linear warm-up epochs (0 in the reference).
      ce_weight, kl_weight, temperature: 1.0, 0.001, T = 2 (docs/method.md §5).
      optimizer: ``sgd`` or ``adam``.
      objective: the retain objective's hook (default: mean CE).
    """
    del init_fn
    check_budget(epochs, batch_size, lr)
    tx = make_optimizer(optimizer, lr, momentum, weight_decay)
    step = finetune_step(apply_fn, tx, objective=objective, ce_weight=ce_weight,
                         extra_loss=distill_kl_term(apply_fn, kl_weight, temperature))
    return training_method(tx, [Phase("retain", step)], epochs=epochs, batch_size=batch_size,
                           aux=teacher_aux, lr_schedule=constant_with_warmup(lr, warmup_epochs))
