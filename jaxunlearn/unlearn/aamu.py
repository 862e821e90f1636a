"""A-AMU: the accelerated wrapper around any retain-based method (SPEC §4).

``with_aamu(base_factory, ...)`` turns a base method factory whose retain objective goes through the
``primary_loss`` hook (CF, SCRUB, L1-Sparse) into its accelerated form:

    L = steepen(CE of the retain batch) + λ · MMD²(Z_T, Z_F)  (+ the base method's own terms)

where, every step, ``m = samples_per_step · b`` forget examples are drawn uniformly without
replacement from the forget pool and ``m`` unseen examples from the pool U restricted to the
classes present in that forget sample, *inside the jitted step* from the device-resident pools
(:func:`sample_forget_unseen`). When a pool holds fewer than ``m`` eligible examples, all of them
are used and the remaining slots carry weight 0, so shapes stay static and nothing is duplicated.

Registered: ``a_cf`` (CF), ``a_scrub`` (SCRUB), ``a_sparse`` (L1-Sparse with a constant α), each
with the paper's defaults: Adam, 1 epoch, batch 64, λ = 34, k = 2, κ = 60.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxunlearn.losses import aamu_regulariser, cross_entropy, steepened_loss
from jaxunlearn.unlearn.base import Method, PrimaryLoss, UnlearnData, register

__all__ = ["AAMUSample", "aamu_primary_loss", "sample_forget_unseen", "with_aamu"]


class AAMUSample(NamedTuple):
    """Forget and unseen samples of one step; ``*_w`` are 1 for real examples, 0 for empty slots."""

    forget_x: jax.Array  # [m, h, w, c]
    forget_y: jax.Array  # [m]
    forget_w: jax.Array  # [m]
    unseen_x: jax.Array  # [m, h, w, c]
    unseen_y: jax.Array  # [m]
    unseen_w: jax.Array  # [m]


def _draw_without_replacement(key: jax.Array, eligible_N: jax.Array, m: int):
    """Indices of ``m`` distinct rows, eligible ones first in random order, and their validity."""
    u = jax.random.uniform(key, eligible_N.shape)
    # eligible rows score in [0, 1), the others -1: top_k picks eligible rows uniformly at random
    _, idx = jax.lax.top_k(jnp.where(eligible_N, u, -1.0), m)
    return idx, eligible_N[idx].astype(jnp.float32)


def sample_forget_unseen(key: jax.Array, data: UnlearnData, m: int) -> AAMUSample:
    """Draw the step's forget and class-matched unseen samples on device (SPEC §4).

    Args:
      key: PRNG key of the step.
      data: the pools; ``data.forget`` and ``data.unseen`` are used.
      m: samples per pool (static); capped at each pool's capacity.

    Returns:
      :class:`AAMUSample` with ``m`` (or capacity-many) slots per pool.
    """
    kf, ku = jax.random.split(key)
    f, u = data.forget, data.unseen
    mf = min(m, f.y.shape[0])
    fidx, fw = _draw_without_replacement(kf, jnp.arange(f.y.shape[0]) < f.n, mf)
    fy = f.y[fidx]
    present = jnp.zeros((data.num_classes,), jnp.float32).at[fy].max(fw) > 0
    eligible = (jnp.arange(u.y.shape[0]) < u.n) & present[u.y]
    mu = min(m, u.y.shape[0])
    uidx, uw = _draw_without_replacement(ku, eligible, mu)
    return AAMUSample(f.x[fidx], fy, fw, u.x[uidx], u.y[uidx], uw)


def aamu_primary_loss(apply_fn: Callable, *, batch_size: int, lam: float = 34.0, k: float = 2.0,
                      kappa: float = 60.0, ecdf: str = "paper",
                      steepen: str = "batch_mean_squared",
                      samples_per_step: int = 4) -> PrimaryLoss:
    """The A-AMU primary loss for the ``primary_loss`` hook of a retain-based method.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      batch_size: the retain batch size b; ``samples_per_step · b`` forget and unseen examples
        are drawn per step.
      lam: λ, the weight of MMD².
      k, kappa: ECDF temperature and probit clip.
      ecdf: ``paper`` | ``reference`` | ``anchored`` (SPEC §4).
      steepen: ``batch_mean_squared`` (reference) | ``per_example_squared``.

    Returns:
      ``primary(ce_N, w_N, params, data, key) -> scalar``.
    """
    m = samples_per_step * batch_size
    # fail at construction, not at trace time, on a bad option
    steepened_loss(jnp.zeros(1), None, steepen)
    aamu_regulariser(jnp.zeros(2), jnp.zeros(2), k=k, kappa=kappa, mode=ecdf)

    def primary(ce_N, w_N, params, data: UnlearnData, key):
        s = sample_forget_unseen(key, data, m)
        forget_ce = cross_entropy(apply_fn(params, s.forget_x), s.forget_y)
        # the unseen branch is a fixed target (stop_gradient): no backward pass through it
        unseen_ce = cross_entropy(apply_fn(jax.lax.stop_gradient(params), s.unseen_x), s.unseen_y)
        reg = aamu_regulariser(forget_ce, unseen_ce, s.forget_w, s.unseen_w, k=k, kappa=kappa,
                               mode=ecdf)
        return steepened_loss(ce_N, w_N, steepen) + lam * reg

    return primary


def with_aamu(base_factory: Callable[..., Method], **defaults: Any) -> Callable[..., Method]:
    """Wrap a base method factory into its A-AMU form.

    Args:
      base_factory: ``factory(apply_fn, *, init_fn, primary_loss, **hparams) -> Method``.
      **defaults: hyper-parameter defaults of the accelerated method (e.g. ``optimizer="adam"``,
        ``epochs=1``, ``lr=2.4e-4``), overridable by the caller.

    Returns:
      ``factory(apply_fn, *, init_fn=None, lam, k, kappa, ecdf, steepen, samples_per_step,
      **base_hparams) -> Method``.
    """

    def factory(apply_fn: Callable, *, init_fn: Callable | None = None, lam: float = 34.0,
                k: float = 2.0, kappa: float = 60.0, ecdf: str = "paper",
                steepen: str = "batch_mean_squared", samples_per_step: int = 4,
                **hparams: Any) -> Method:
        hp = {**defaults, **hparams}
        primary = aamu_primary_loss(apply_fn, batch_size=hp.get("batch_size", 64), lam=lam, k=k,
                                    kappa=kappa, ecdf=ecdf, steepen=steepen,
                                    samples_per_step=samples_per_step)
        return base_factory(apply_fn, init_fn=init_fn, primary_loss=primary, **hp)

    factory.__doc__ = f"A-AMU around ``{base_factory.__name__}`` (defaults {defaults})."
    return factory


def _register_all() -> None:
    from jaxunlearn.unlearn.finetune import make_cf

    adam_1_epoch = dict(optimizer="adam", epochs=1, warmup_epochs=0, momentum=0.0,
                        weight_decay=0.0, batch_size=64)
    register("a_cf")(with_aamu(make_cf, lr=2.4e-4, **adam_1_epoch))
    try:
        from jaxunlearn.unlearn.scrub import make_scrub
        from jaxunlearn.unlearn.sparse import make_l1_sparse
    except ImportError:  # pragma: no cover - the base methods live in their own modules
        return
    register("a_scrub")(with_aamu(make_scrub, lr=1e-4, **adam_1_epoch))
    register("a_sparse")(with_aamu(make_l1_sparse, lr=1e-4, l1_schedule="constant",
                                   **adam_1_epoch))


_register_all()
