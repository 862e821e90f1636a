"""Bad distillation (Chundawat et al. 2023, "bad teacher"; docs/method.md §5).

The student (the original model) is distilled on a mixed stream: forget examples towards a
randomly initialised "incompetent" teacher, retain examples towards the original model:

    loss = KL_T(student ‖ mix),  mix = softmax(bad/T) on forget rows, softmax(original/T) on retain

The stream is forget ∪ a random ``retain_fraction`` of the retain pool (method.md §5: 62.34% without
condensation, all of R_reduced with it), built once on device by ``prepare``
(:func:`mixed_pool`). Its rows carry their origin in the label: ``y + C·is_forget``
(:func:`encode_forget_flag`), so the fixed-size batches of the generic loop need no extra field.

The loss is KL_T as method.md §5 defines it (T² · batch mean, T = 2); the original bad-teacher code
uses
``F.kl_div`` with its default element-mean reduction and no T² (a loss C·T² times smaller).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxunlearn.losses import kl_with_temperature
from jaxunlearn.optim import make_optimizer
from jaxunlearn.pools import Batch, Pool, shuffle_valid_first
from jaxunlearn.train import Phase, TrainState, apply_gradients, weighted_accuracy
from jaxunlearn.unlearn.base import Method, UnlearnData, check_budget, register, training_method

__all__ = ["encode_forget_flag", "make_bad_distill", "mixed_pool"]

STREAM = "bad_teacher_mix"


def mixed_pool(key: jax.Array, forget: Pool, retain: Pool,
               retain_fraction: float) -> tuple[Pool, jax.Array]:
    """Forget rows followed by a random ``retain_fraction`` of the retain rows, on device.

    Jittable: capacities are static (``cap_F + cap_R``), counts are traced. The retain subset has
    ``floor(retain_fraction · n_R)`` rows drawn without replacement.

    Args:
      key: PRNG key of the retain subset.
      forget: the forget pool.
      retain: the retain pool.
      retain_fraction: fraction of the retain rows to keep, in [0, 1].

    Returns:
      ``(pool, is_forget)``: the mixed pool (``n = n_F + k``; rows ``[0, n_F)`` are the forget
      rows, ``[n_F, n)`` the retain subset, the rest zero padding) and a bool flag ``[cap]``.
    """
    cap_f, cap_r = forget.y.shape[0], retain.y.shape[0]
    k = jnp.floor(retain.n.astype(jnp.float32) * retain_fraction).astype(jnp.int32)
    k = jnp.clip(k, 0, retain.n)
    perm = shuffle_valid_first(key, retain.valid)
    p = jnp.arange(cap_f + cap_r)
    is_f = p < forget.n
    j = p - forget.n
    is_r = (j >= 0) & (j < k)
    src_f = jnp.clip(p, 0, cap_f - 1)
    src_r = perm[jnp.clip(j, 0, cap_r - 1)]
    bcast = (slice(None),) + (None,) * (forget.x.ndim - 1)
    x = jnp.where(is_f[bcast], forget.x[src_f],
                  jnp.where(is_r[bcast], retain.x[src_r], jnp.zeros((), forget.x.dtype)))
    y = jnp.where(is_f, forget.y[src_f], jnp.where(is_r, retain.y[src_r], 0)).astype(jnp.int32)
    return Pool(x, y, (forget.n + k).astype(jnp.int32)), is_f


def encode_forget_flag(y_N: jax.Array, is_forget_N: jax.Array, num_classes: int) -> jax.Array:
    """Labels carrying their origin: ``y + C·is_forget`` (decode: ``y % C``, ``y >= C``)."""
    return (y_N + num_classes * is_forget_N.astype(y_N.dtype)).astype(jnp.int32)


@register("bad_distill")
def make_bad_distill(apply_fn: Callable, *, init_fn: Callable | None, lr: float = 1e-2,
                     momentum: float = 0.9, weight_decay: float = 5e-4, epochs: int = 20,
                     batch_size: int = 64, temperature: float = 2.0,
                     retain_fraction: float = 0.6234, optimizer: str = "sgd") -> Method:
    """Bad distillation: KL_T towards a random teacher on F and the original on a retain subset.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: ``init_fn(key) -> params`` of a fresh model: the incompetent teacher (required).
      lr: 1e-2 without condensation (docs/method.md §5); **5e-3 with condensation**.
      retain_fraction: 0.6234 without condensation; **1.0 (all of R_reduced) with condensation**.
      momentum, weight_decay, epochs, batch_size, temperature: 0.9, 5e-4, 20, 64, T = 2.
      optimizer: ``sgd`` or ``adam``.
    """
    if init_fn is None:
        raise ValueError("bad_distill needs init_fn(key) -> params for the random teacher")
    check_budget(epochs, batch_size, lr)
    if not 0.0 <= retain_fraction <= 1.0:
        raise ValueError(f"retain_fraction must be in [0, 1]; got {retain_fraction}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    tx = make_optimizer(optimizer, lr, momentum, weight_decay)

    def prepare(key: jax.Array, data: UnlearnData) -> UnlearnData:
        pool, is_f = mixed_pool(key, data.forget, data.retain, retain_fraction)
        pool = pool._replace(y=encode_forget_flag(pool.y, is_f, data.num_classes))
        return data._replace(extra={**data.extra, STREAM: pool})

    def teachers(key: jax.Array, params, data: UnlearnData) -> dict:
        del data
        return {"teacher": params, "bad_teacher": init_fn(key)}

    def step(state: TrainState, batch: Batch, data: UnlearnData, key: jax.Array):
        del key
        num_classes = data.num_classes
        is_f = batch.y >= num_classes
        good = apply_fn(state.aux["teacher"], batch.x)
        bad = apply_fn(state.aux["bad_teacher"], batch.x)
        # each row has one teacher, so picking logits = picking their softmax(·/T) targets
        target = jax.lax.stop_gradient(jnp.where(is_f[:, None], bad, good))

        def loss_fn(params):
            logits = apply_fn(params, batch.x)
            return kl_with_temperature(logits, target, temperature, batch.w), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        true = batch._replace(y=batch.y % num_classes)
        return apply_gradients(state, grads, tx), {
            "loss": loss, "acc": weighted_accuracy(logits, true)}

    return training_method(tx, [Phase(STREAM, step)], epochs=epochs, batch_size=batch_size,
                           aux=teachers, prepare=prepare)
