"""L1-Sparse (Jia et al. 2023, "model sparsity can simplify machine unlearning"; docs/method.md §5).

Fine-tuning on the retain stream with ``primary(CE) + α_e · ‖θ‖₁``, the L1 norm over *all*
parameters (weights, biases, norm scales), as the reference. The coefficient α_e of epoch e:

- ``linear_decay`` (docs/method.md §5): α_e = α·(1 − e/(E − n₀)) for e < E − n₀, then 0, with n₀ =
  ``no_l1_epochs`` = 1: α decays linearly to 0 over the first E − 1 epochs and the last epoch
  has no penalty (with E = 1 there is no penalty at all);
- ``constant``: α_e = α every epoch (A-Sparse, docs/method.md §4).

α_e is written into ``aux["l1_alpha"]`` by ``begin_epoch`` (a host-side scalar, like the learning
rate), so the step compiles once for every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxunlearn import sharding
from jaxunlearn.checks import check_choice
from jaxunlearn.optim import constant_with_warmup, make_optimizer
from jaxunlearn.train import Phase, TrainState
from jaxunlearn.unlearn.base import (
    Method,
    RetainObjective,
    check_budget,
    register,
    training_method,
)
from jaxunlearn.unlearn.finetune import finetune_step

__all__ = ["L1_SCHEDULES", "l1_alpha_schedule", "l1_norm", "make_l1_sparse"]

L1_SCHEDULES = ("linear_decay", "constant")


def l1_norm(params: Any) -> jax.Array:
    """‖θ‖₁: the sum of absolute values of every leaf of ``params``."""
    return sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(params))


def l1_alpha_schedule(alpha: float, epochs: int, schedule: str = "linear_decay",
                      no_l1_epochs: int = 1) -> Callable[[int], float]:
    """Epoch -> α_e (see the module docstring).

    Args:
      alpha: α (1e-4 in docs/method.md §5).
      epochs: E.
      schedule: ``linear_decay`` or ``constant``.
      no_l1_epochs: final epochs without the penalty in ``linear_decay`` (1).
    """
    check_choice(schedule, L1_SCHEDULES, "l1_schedule")
    if not alpha >= 0 or no_l1_epochs < 0:
        raise ValueError(f"expected alpha >= 0 and no_l1_epochs >= 0; got alpha={alpha}, "
                         f"no_l1_epochs={no_l1_epochs}")
    span = epochs - no_l1_epochs

    def schedule_fn(epoch: int) -> float:
        if schedule == "constant":
            return float(alpha)
        return float(alpha * (1.0 - epoch / span)) if epoch < span else 0.0

    return schedule_fn


@register("l1_sparse")
def make_l1_sparse(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 1e-2,
                   momentum: float = 0.9, weight_decay: float = 5e-4, epochs: int = 30,
                   warmup_epochs: int = 0, batch_size: int = 64, alpha: float = 1e-4,
                   l1_schedule: str = "linear_decay", no_l1_epochs: int = 1,
                   optimizer: str = "sgd", objective: RetainObjective | None = None) -> Method:
    """L1-Sparse: ``primary(CE) + α_e‖θ‖₁`` on the retain stream, constant learning rate.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr: 1e-2 without condensation (docs/method.md §5); **5e-3 with condensation**.
      momentum, weight_decay, epochs, batch_size: 0.9, 5e-4, 30, 64 (docs/method.md §5).
      warmup_epochs: optional linear learning-rate warm-up (0; the rate is constant after it, as
        the reference's step milestones 50, 75 are never reached).
      alpha, l1_schedule, no_l1_epochs: α = 1e-4, ``linear_decay`` (``constant`` for A-Sparse), 1.
      optimizer: ``sgd`` or ``adam`` (A-Sparse).
      objective: the retain objective's hook (A-Sparse: steepened CE + λ·MMD²).
    """
    del init_fn
    check_budget(epochs, batch_size, lr)
    alpha_of = l1_alpha_schedule(alpha, epochs, l1_schedule, no_l1_epochs)
    tx = make_optimizer(optimizer, lr, momentum, weight_decay)

    def extra(params, logits, batch, aux):
        del logits, batch
        return aux["l1_alpha"] * l1_norm(params)

    step = finetune_step(apply_fn, tx, objective=objective, extra_loss=extra)

    def first_alpha(key: jax.Array, params, data) -> dict:
        del key, params, data
        return {"l1_alpha": jnp.asarray(alpha_of(0), jnp.float32)}

    def begin_epoch(state: TrainState, epoch: int, data, key) -> TrainState:
        del data, key
        alpha_e = sharding.replicate(jnp.asarray(alpha_of(epoch), jnp.float32))
        return state._replace(aux={**state.aux, "l1_alpha": alpha_e})

    return training_method(tx, [Phase("retain", step)], epochs=epochs, batch_size=batch_size,
                           aux=first_alpha, lr_schedule=constant_with_warmup(lr, warmup_epochs),
                           begin_epoch=begin_epoch)
