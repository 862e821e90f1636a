"""SCRUB (Kurmanji et al. 2023): alternate max steps on the forget set and min steps on retain.

Per epoch e (docs/method.md §5):

- if ``e <= m_steps``: a *forget pass* minimising ``−forget_weight · KL_T(student ‖ original)``
  over the forget stream (the max step: push the student away from the teacher on F);
- a *retain pass* minimising ``ce_weight · primary(CE) + kl_weight · KL_T(student ‖ original)``
  over the retain stream (the min step), the CE term through the ``objective`` hook.

One optimiser serves both passes; the learning rate follows warm-up + cosine, per epoch. The
teacher is the starting model, frozen in ``aux["teacher"]``.

``m_steps`` is the reference's ``scrub_msteps``: epochs are 0-based and the forget pass runs while
``epoch <= m_steps``, as in the paper's reference (``unlearn_methods/scrub.py``, 0-based
``range(epochs)`` with ``if epoch <= m_steps``), so ``m_steps + 1`` forget passes run (capped at
``epochs``): 6 without condensation (m_steps 5) and 10 with it (m_steps 9) at the paper's
values. SCRUB's own code loops 1-based with ``epoch <= msteps`` (m_steps passes); the configs
hold the reference's values, which count one pass more.

A-SCRUB (docs/method.md §4) is this method with the A-AMU objective and Adam: the retain pass then
minimises ``0.99·(mean CE)² + λ·MMD² + 0.001·KL_T``, the reference's objective (the
regulariser is added outside ``ce_weight``).
The reference's A-SCRUB (``unlearn_methods/accelerated_scrub.py``) runs a forget pass in every
epoch; its one epoch is epoch 0 ≤ ``m_steps``, so it gets its one forget pass here too (with
more than ``m_steps + 1`` epochs the later ones would have none).
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxunlearn.losses import kl_with_temperature
from jaxunlearn.optim import cosine_with_warmup, make_optimizer
from jaxunlearn.pools import Batch
from jaxunlearn.train import Phase, TrainState, apply_gradients, weighted_accuracy
from jaxunlearn.unlearn.base import Method, RetainObjective, check_budget, register, training_method
from jaxunlearn.unlearn.distill import distill_kl_term, teacher_aux
from jaxunlearn.unlearn.finetune import finetune_step

__all__ = ["make_scrub", "scrub_forget_step"]


def scrub_forget_step(apply_fn: Callable, tx, *, forget_weight: float = 0.2,
                      temperature: float = 2.0) -> Callable:
    """SCRUB's max step: minimise ``−forget_weight · KL_T(student ‖ teacher)`` on a forget batch.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      tx: the optimiser shared with the retain pass.
      forget_weight: 0.2 (docs/method.md §5).
      temperature: T = 2.

    Returns:
      ``step(state, batch, data, key) -> (state, {"kl", "acc"})`` with the teacher in
      ``state.aux["teacher"]``.
    """

    def step(state: TrainState, batch: Batch, data, key: jax.Array):
        del data, key
        teacher = jax.lax.stop_gradient(apply_fn(state.aux["teacher"], batch.x))

        def loss_fn(params):
            logits = apply_fn(params, batch.x)
            kl = kl_with_temperature(logits, teacher, temperature, batch.w)
            return -forget_weight * kl, (kl, logits)

        (_, (kl, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return apply_gradients(state, grads, tx), {
            "kl": kl, "acc": weighted_accuracy(logits, batch)}

    return step


@register("scrub")
def make_scrub(apply_fn: Callable, *, init_fn: Callable | None = None, lr: float = 1e-2,
               momentum: float = 0.9, weight_decay: float = 5e-4, epochs: int = 15,
               warmup_epochs: int = 5, m_steps: int = 5, batch_size: int = 64,
               temperature: float = 2.0, forget_weight: float = 0.2, ce_weight: float = 0.99,
               kl_weight: float = 0.001, optimizer: str = "sgd",
               objective: RetainObjective | None = None) -> Method:
    """SCRUB: forget passes (max KL on F) for ``epoch <= m_steps``, a retain pass every epoch.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: unused.
      lr: 1e-2 without condensation (docs/method.md §5); **5e-3 with condensation**.
      m_steps: the last 0-based epoch with a forget pass (``m_steps + 1`` passes): 5 without
        condensation; **9 with condensation** (the reference's ``scrub_msteps``).
      momentum, weight_decay, epochs, warmup_epochs, batch_size: 0.9, 5e-4, 15, 5, 64 (§5).
      temperature, forget_weight, ce_weight, kl_weight: T = 2, 0.2, 0.99, 0.001.
      optimizer: ``sgd`` or ``adam`` (A-SCRUB).
      objective: the retain pass's objective hook (A-SCRUB: steepened CE + λ·MMD²).
    """
    del init_fn
    check_budget(epochs, batch_size, lr)
    if m_steps < 0:
        raise ValueError(f"m_steps must be >= 0; got {m_steps}")
    tx = make_optimizer(optimizer, lr, momentum, weight_decay)
    forget = Phase("forget", scrub_forget_step(apply_fn, tx, forget_weight=forget_weight,
                                               temperature=temperature))
    retain = Phase("retain", finetune_step(
        apply_fn, tx, objective=objective, ce_weight=ce_weight,
        extra_loss=distill_kl_term(apply_fn, kl_weight, temperature)))

    def phases(epoch: int):
        return (forget, retain) if epoch <= m_steps else (retain,)

    return training_method(tx, phases, epochs=epochs, batch_size=batch_size, aux=teacher_aux,
                           lr_schedule=cosine_with_warmup(lr, epochs, warmup_epochs))
