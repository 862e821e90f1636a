"""A-AMU: the accelerated wrapper around any retain-based method (docs/method.md §4).

``with_aamu(base_factory, ...)`` turns a base method factory whose retain objective goes through the
:class:`~jaxunlearn.unlearn.base.RetainObjective` hook (CF, SCRUB, L1-Sparse; also distillation,
pruning and NegGrad+) into its accelerated form:

    L = ce_weight · steepen(CE of the retain batch) + λ · MMD²(Z_T, Z_F)  (+ the base's own terms)

where, every step, ``m = samples_per_step · b`` forget examples (b: the retain batch's size, read
from its traced shape) are drawn uniformly without replacement from the forget pool and ``m``
unseen examples from the pool U restricted to the classes present in that forget sample, *inside
the jitted step* from the device-resident pools (:func:`sample_forget_unseen`, with
:func:`jaxunlearn.pools.sample_batch`). When a pool holds fewer than ``m`` eligible examples, all
of them are used and the remaining slots carry weight 0, so shapes stay static and nothing is
duplicated.

The steepened loss and the regulariser are :func:`jaxunlearn.losses.steepened_loss` and
:func:`jaxunlearn.losses.aamu_regulariser`; the unseen branch runs on ``stop_gradient(params)``,
so no backward pass goes through it. The regulariser is added outside the base's ``ce_weight``, so
λ means λ in every A-method (A-SCRUB: ``0.99·(mean CE)² + λ·MMD² + 0.001·KL``).

Registered: ``a_cf`` (CF), ``a_scrub`` (SCRUB), ``a_sparse`` (L1-Sparse with a constant α), each
with the paper's defaults: Adam, 1 epoch, batch 64, lr 2.4e-4 (A-CF) or 1e-4, λ = 34, k = 2,
κ = 60, 4b forget and 4b unseen samples per step, ``steepen="batch_mean_squared"``, and the
``ecdf`` mode :data:`jaxunlearn.losses.DEFAULT_ECDF`. An A-method publishes its full defaults,
its base method's included (:func:`jaxunlearn.unlearn.factory_defaults`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxunlearn.checks import check_choice
from jaxunlearn.losses import (
    DEFAULT_ECDF,
    ECDF_MODES,
    STEEPEN_MODES,
    aamu_regulariser,
    cross_entropy,
    steepened_loss,
)
from jaxunlearn.pools import sample_batch
from jaxunlearn.unlearn.base import (
    JointRegulariser,
    Method,
    RetainObjective,
    UnlearnData,
    keyword_defaults,
    register,
)
from jaxunlearn.unlearn.finetune import make_cf
from jaxunlearn.unlearn.scrub import make_scrub
from jaxunlearn.unlearn.sparse import make_l1_sparse

__all__ = ["AAMU_DEFAULTS", "AAMUSample", "FORWARD_MODES", "aamu_objective",
           "sample_forget_unseen", "with_aamu"]

FORWARD_MODES = ("joint", "separate")
"""How a step runs its forget sample through the network: in the retain batch's call
(``joint``, one forward and backward over b + 4b images) or in a call of its own (``separate``,
as the reference code does). The same function; only rounding differs."""

# The ECDF mode of the registered methods: the reference code's (faithful first, docs/method.md §4).
# ``paper`` (the paper's formula) and ``anchored`` (ours: forget losses ranked against the unseen
# batch) are options. On the embedded class-wise study (experiments/aamu_ablation.py, 3 seeds)
# no mode differed from another beyond seed noise: every mode forgot the class for one seed and
# kept it for another (see docs/reproduce.md), so no mode earned the default over the reference.

AAMU_DEFAULTS: dict[str, Any] = {
    "lam": 34.0,                    # λ, the weight of MMD²
    "k": 2.0,                       # ECDF temperature
    "kappa": 60.0,                  # probit clip κ
    "ecdf": DEFAULT_ECDF,
    "steepen": "batch_mean_squared",
    "samples_per_step": 4,          # forget (and unseen) examples per retain example
    "forward": "joint",             # retain + forget images in one network call (a layout)
}
"""A-AMU's own hyper-parameters and their defaults (the paper's), in every A-method."""


class AAMUSample(NamedTuple):
    """Forget and unseen samples of one step; ``*_w`` are 1 for real examples, 0 for empty slots."""

    forget_x: jax.Array  # [m, h, w, c]
    forget_y: jax.Array  # [m]
    forget_w: jax.Array  # [m]
    unseen_x: jax.Array  # [m, h, w, c]
    unseen_y: jax.Array  # [m]
    unseen_w: jax.Array  # [m]


def sample_forget_unseen(key: jax.Array, data: UnlearnData, m: int) -> AAMUSample:
    """Draw the step's forget and class-matched unseen samples on device (docs/method.md §4).

    Args:
      key: PRNG key of the step.
      data: the pools; ``data.forget`` and ``data.unseen`` are used.
      m: samples per pool (static); capped at each pool's capacity.

    Returns:
      :class:`AAMUSample` with ``m`` (or capacity-many) slots per pool.
    """
    kf, ku = jax.random.split(key)
    f = sample_batch(kf, data.forget, m)
    present = jnp.zeros((data.num_classes,), jnp.float32).at[f.y].max(f.w) > 0
    u = sample_batch(ku, data.unseen, m, eligible=present[data.unseen.y])
    return AAMUSample(f.x, f.y, f.w, u.x, u.y, u.w)


def aamu_objective(apply_fn: Callable, *, lam: float = 34.0, k: float = 2.0,
                   kappa: float = 60.0, ecdf: str = DEFAULT_ECDF,
                   steepen: str = "batch_mean_squared",
                   samples_per_step: int = 4, forward: str = "joint") -> RetainObjective:
    """A-AMU's retain objective for the ``objective`` hook of a retain-based method.

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      lam: λ, the weight of MMD².
      k, kappa: ECDF temperature and probit clip.
      ecdf: ``paper`` | ``reference`` | ``anchored`` (docs/method.md §4).
      steepen: ``batch_mean_squared`` (reference) | ``per_example_squared``.
      samples_per_step: forget (and unseen) examples drawn per retain example (paper: 4); with a
        retain batch of b, ``samples_per_step · b`` of each per step.
      forward: one of :data:`FORWARD_MODES`: the forget sample in the retain batch's network
        call (``joint``, a :class:`~jaxunlearn.unlearn.base.JointRegulariser`) or in its own.

    Returns:
      :class:`~jaxunlearn.unlearn.base.RetainObjective`: ``primary`` the steepened CE,
      ``regulariser(params, batch, data, key)`` λ·MMD² of the step's forget and unseen samples.

    Raises:
      ValueError: an unknown mode, samples_per_step < 1, λ < 0, k ≤ 0 or κ ≤ 0.
    """
    if samples_per_step < 1:
        raise ValueError(f"expected samples_per_step >= 1; got {samples_per_step}")
    if not (lam >= 0 and k > 0 and kappa > 0):
        raise ValueError(f"expected lam >= 0, k > 0 and kappa > 0; got lam={lam}, k={k}, "
                         f"kappa={kappa}")
    check_choice(ecdf, ECDF_MODES, "ecdf")
    check_choice(steepen, STEEPEN_MODES, "steepen")
    check_choice(forward, FORWARD_MODES, "forward")

    def draw(batch, data: UnlearnData, key):
        s = sample_forget_unseen(key, data, samples_per_step * batch.y.shape[0])
        return s.forget_x, s

    def loss(params, forget_logits, s: AAMUSample, data: UnlearnData):
        forget_ce = cross_entropy(forget_logits, s.forget_y)
        # the unseen branch is a fixed target (stop_gradient): no backward pass through it
        unseen_ce = cross_entropy(apply_fn(jax.lax.stop_gradient(params), s.unseen_x), s.unseen_y)
        reg = aamu_regulariser(forget_ce, unseen_ce, s.forget_w, s.unseen_w, k=k, kappa=kappa,
                               mode=ecdf)
        return lam * reg

    joint = JointRegulariser(draw, loss, apply_fn)
    reg = joint if forward == "joint" else joint.__call__  # "separate": a plain function
    return RetainObjective(functools.partial(steepened_loss, mode=steepen), reg)


def with_aamu(base_factory: Callable[..., Method], **overrides: Any) -> Callable[..., Method]:
    """Wrap a base method factory into its A-AMU form.

    Args:
      base_factory: ``factory(apply_fn, *, init_fn, objective, **hparams) -> Method``, a
        retain-based method whose retain objective goes through the ``objective`` hook.
      **overrides: the accelerated method's defaults that differ from the base's (e.g.
        ``optimizer="adam"``, ``epochs=1``, ``lr=2.4e-4``).

    Returns:
      ``factory(apply_fn, *, init_fn=None, **hparams) -> Method``, taking the base's
      hyper-parameters and A-AMU's (:data:`AAMU_DEFAULTS`); its ``defaults`` attribute holds
      them all with their values.

    Raises:
      ValueError: (from the factory) a hyper-parameter neither the base nor A-AMU takes.
    """
    base_defaults = keyword_defaults(base_factory)
    unknown = set(overrides) - set(base_defaults)
    if unknown:
        raise ValueError(f"{base_factory.__name__} takes no {sorted(unknown)}")
    defaults = {**base_defaults, **overrides, **AAMU_DEFAULTS}

    def factory(apply_fn: Callable, *, init_fn: Callable | None = None, **hparams: Any) -> Method:
        unknown = set(hparams) - set(defaults)
        if unknown:
            raise TypeError(f"unexpected hyper-parameter(s) {sorted(unknown)}; this A-method "
                            f"takes {sorted(defaults)}")
        hp = {**defaults, **hparams}
        objective = aamu_objective(apply_fn, **{name: hp.pop(name) for name in AAMU_DEFAULTS})
        return base_factory(apply_fn, init_fn=init_fn, objective=objective, **hp)

    factory.defaults = defaults
    factory.__doc__ = (f"A-AMU around ``{base_factory.__name__}``; hyper-parameters and "
                       f"defaults: {defaults}.")
    return factory


def _register_all() -> None:
    # method.md §4: Adam (β 0.9/0.999, eps 1e-8), one epoch, batch 64, constant learning rate (a
    # one-epoch cosine schedule is constant), no momentum/weight decay terms of the SGD baselines.
    adam_1_epoch = dict(optimizer="adam", epochs=1, warmup_epochs=0, momentum=0.0,
                        weight_decay=0.0, batch_size=64)
    register("a_cf")(with_aamu(make_cf, lr=2.4e-4, **adam_1_epoch))
    register("a_scrub")(with_aamu(make_scrub, lr=1e-4, **adam_1_epoch))
    register("a_sparse")(with_aamu(make_l1_sparse, lr=1e-4, l1_schedule="constant",
                                   **adam_1_epoch))


_register_all()
