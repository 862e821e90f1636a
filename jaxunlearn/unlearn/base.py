"""The one interface of every unlearning method, its registry and its timed runner.

A method is a :class:`Method`: pure functions built by a factory (``make_<name>(apply_fn, ...)``)
and registered under a name (:func:`make_method` records the name and the hyper-parameters on
the method). The runner :func:`run_method` owns the loop, the batching, the learning-rate
schedule and the timing, so a method only says *what* one step does:

- ``init(key, params, data) -> TrainState``: optimiser and auxiliary state (teacher, masks...).
- ``phases(epoch) -> [Phase]``: which step runs over which stream in that epoch. Streams are the
  pools of :class:`UnlearnData`: ``retain`` (the real retain set, or the Blend-reduced one when
  the study runs with condensation), ``forget`` (always the real forget set), ``unseen`` (the
  pool U), and any pool a method adds in ``prepare``.
- optional ``prepare(key, data) -> data`` (add a stream, e.g. bad distillation's mixed set),
  ``edit(state, data, key) -> state`` (a one-shot change before the epochs, e.g. SSD),
  ``begin_epoch(state, epoch, data, key) -> state`` (e.g. pruning at given epochs).

Every step receives the whole device-resident :class:`UnlearnData`, so a step can sample forget
or unseen examples on device (A-AMU) without host round trips.

What the factories share lives here too: :func:`training_method` (a method that starts from the
given parameters with its optimiser's state), :func:`check_budget`, and the retain objective's
hook :class:`RetainObjective` (how A-AMU wraps any retain-based method). Many models' pools are
stacked with :func:`stack_unlearn_data`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.ensemble import Ensemble, stack_trees
from jaxunlearn.losses import weighted_mean
from jaxunlearn.pools import Batch, Pool, bucket_size, make_pool
from jaxunlearn.timing import compile_ahead
from jaxunlearn.train import Phase, PhaseRunner, TrainState, run_phases

__all__ = [
    "JointRegulariser",
    "Method",
    "Regulariser",
    "RetainObjective",
    "UnlearnData",
    "UnlearnOutput",
    "available_methods",
    "check_budget",
    "factory_defaults",
    "keyword_defaults",
    "make_method",
    "make_unlearn_data",
    "register",
    "retain_forward",
    "run_method",
    "stack_unlearn_data",
    "training_method",
]

Params = Any


class UnlearnData(NamedTuple):
    """Device-resident pools a method trains from (see the module docstring)."""

    retain: Pool
    forget: Pool
    unseen: Pool
    num_classes: int = 10
    extra: Mapping[str, Pool] = {}  # noqa: RUF012 (NamedTuple default, never mutated)


# num_classes is static metadata, not an array: keep it out of the pytree leaves.
jax.tree_util.register_pytree_node(
    UnlearnData,
    lambda d: ((d.retain, d.forget, d.unseen, dict(d.extra)), d.num_classes),
    lambda nc, ch: UnlearnData(ch[0], ch[1], ch[2], nc, ch[3]),
)


def make_unlearn_data(retain: tuple[Any, Any], forget: tuple[Any, Any], unseen: tuple[Any, Any],
                      num_classes: int) -> UnlearnData:
    """Build :class:`UnlearnData` from host ``(x, y)`` pairs (padded to bucketed capacities).

    The unseen pool keeps only the classes present in the forget set: unseen examples are only
    ever drawn from the classes of a forget sample (method.md §4), so the others can never be used,
    and a smaller pool caps the static unseen sample of an A-AMU step at the pool's capacity
    (class-wise forgetting on CIFAR-10 at batch 64: 256 → ≤ the forgotten class's images,
    instead of 256 forwards of which most would be weight-0 padding).
    With no unseen example of any forgotten class the pool is empty (methods that never use it
    are unaffected; A-AMU's regulariser is then 0 at every step).
    """
    ux, uy = np.asarray(unseen[0]), np.asarray(unseen[1])
    keep = np.isin(uy, np.unique(np.asarray(forget[1])))
    return UnlearnData(make_pool(*retain), make_pool(*forget), make_pool(ux[keep], uy[keep]),
                       num_classes)


def _pad_pool(pool: Pool, capacity: int) -> Pool:
    extra = capacity - pool.y.shape[0]
    pad = [(0, extra)] + [(0, 0)] * (pool.x.ndim - 1)
    return Pool(jnp.pad(pool.x, pad), jnp.pad(pool.y, (0, extra)), jnp.asarray(pool.n))


def stack_unlearn_data(datas: Sequence[UnlearnData]) -> UnlearnData:
    """Stack the pools of M models for ``run_method(..., models=M)``.

    Each stream is padded to the largest capacity among the models (rounded up to a bucket,
    :func:`jaxunlearn.pools.bucket_size`), so a model's valid rows are unchanged.

    Raises:
      ValueError: no data, different numbers of classes, or different stream names.
    """
    if not datas:
        raise ValueError("nothing to stack: got no UnlearnData")
    if len({d.num_classes for d in datas}) != 1 or len({tuple(d.extra) for d in datas}) != 1:
        raise ValueError("every model's UnlearnData must have the same num_classes and streams")

    def stack(pools: Sequence[Pool]) -> Pool:
        cap = max(p.y.shape[0] for p in pools)
        cap = max(cap, bucket_size(max(int(p.n) for p in pools)))
        return stack_trees([_pad_pool(p, cap) for p in pools])

    first = datas[0]
    return UnlearnData(stack([d.retain for d in datas]), stack([d.forget for d in datas]),
                       stack([d.unseen for d in datas]), first.num_classes,
                       {k: stack([d.extra[k] for d in datas]) for k in first.extra})


@dataclasses.dataclass(frozen=True)
class Method:
    """An unlearning method: pure functions plus its budget. See the module docstring.

    ``name`` and ``hparams`` are filled in by :func:`make_method` (the registry name and the
    hyper-parameters it was built with); a factory leaves them out.
    """

    init: Callable[[jax.Array, Params, UnlearnData], TrainState]
    phases: Callable[[int], Sequence[Phase]]
    epochs: int
    batch_size: int = 64
    lr_schedule: Callable[[int], float] | None = None
    prepare: Callable[[jax.Array, UnlearnData], UnlearnData] | None = None
    edit: Callable[[TrainState, UnlearnData, jax.Array], TrainState] | None = None
    begin_epoch: Callable[[TrainState, int, UnlearnData, jax.Array], TrainState] | None = None
    uses_retain: bool = True  # trains on the retain stream: takes the reduced set under Blend
    name: str = ""
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class UnlearnOutput(NamedTuple):
    """What :func:`run_method` returns."""

    params: Params
    unlearn_s: float  # wall clock of the unlearning itself, device-synchronised, compile excluded
    compile_s: float  # ahead-of-time compile time of the method's steps
    history: list
    curve: list = []  # noqa: RUF012  evaluations during the run (``eval_every``), oldest first
    eval_s: float = 0.0  # wall clock spent in those evaluations (outside ``unlearn_s``)
    steps: int = 0  # steps run, every phase counted


def run_method(method: Method, params: Params, data: UnlearnData, key: jax.Array, *,
               progress: bool | str = False, eval_every: int | None = None,
               eval_fn: Callable[[Params], Mapping[str, Any]] | None = None,
               models: int | Ensemble | None = None) -> UnlearnOutput:
    """Unlearn with ``method`` starting from the original ``params``.

    Compilation is done ahead of time for every phase the method will run, and timed apart;
    ``unlearn_s`` covers preparation, the one-shot edit, every epoch, and ends after
    ``jax.block_until_ready`` on the final parameters.

    Evaluation during the run (forgetting curves): with ``eval_every=k`` and ``eval_fn``, the
    parameters are evaluated before the first step (after ``prepare``, ``init`` and ``edit``),
    after every k-th step (the steps of every phase counted together) and after the last step.
    The clock is paused during each evaluation: ``unlearn_s``, and each point's ``unlearn_s``,
    are the unlearning alone (each point waits for its parameters first, so the device is
    synchronised there). ``curve`` holds one dict per point: ``step``, ``unlearn_s`` and
    ``eval_fn``'s fields; ``eval_s`` is the time the evaluations took.

    Args:
      method: the :class:`Method` (e.g. ``make_method("cf", apply_fn, ...)``).
      params: the original model's parameters (not modified).
      data: the device-resident pools.
      key: the unlearning PRNG key (split inside into init / prepare / edit / epochs).
      progress: show a progress bar (a string sets its description).
      eval_every: evaluate every this many steps (``None``: no evaluation during the run).
      eval_fn: ``eval_fn(params) -> {name: value}`` (host values), required with
        ``eval_every``; it must not keep references to ``params`` (the next step donates them).
      models: unlearn this many models at once (or an :class:`jaxunlearn.ensemble.Ensemble`):
        ``params``, ``key`` and every leaf of ``data`` are stacked along a leading axis of that
        size (:func:`stack_unlearn_data`), each model with its own pools;
        the returned parameters are stacked too. Model m's result equals ``run_method`` of
        model m alone (up to float rounding: ``tests/test_ensemble.py``).

    Raises:
      ValueError: ``eval_every`` < 1, or ``eval_every`` without ``eval_fn``; ``data`` not
        stacked for ``models``.
    """
    if eval_every is not None and (eval_fn is None or int(eval_every) < 1):
        raise ValueError(f"eval_every must be a positive number of steps with an eval_fn; got "
                         f"eval_every={eval_every!r}, eval_fn={eval_fn!r}")
    runner = PhaseRunner(models, data_axis=0)
    axis = runner.models
    if axis.size is not None:
        _check_stacked(data, axis.size)
    k_init, k_prep, k_edit, k_loop = axis.split(key, 4)
    data = axis.place(data)
    params = axis.place(jax.tree.map(jnp.copy, params))  # steps donate their state

    # --- ahead-of-time compilation of every step the run will use (timed apart) ---
    compile_s = 0.0

    def compiled(fn, in_axes, *args, name):
        out, seconds = compile_ahead(jax.jit(axis.lift(fn, in_axes)), *args,
                                     cache_key=(name, fn, axis.cache_key),
                                     compiler_options=axis.compiler_options)
        nonlocal compile_s
        compile_s += seconds
        return out

    prepare = None
    if method.prepare is not None:
        prepare = compiled(method.prepare, (0, "data"), k_prep, data, name="prepare")
    # The warm-up state and prepared data only give the compiler its argument shapes/shardings.
    prepared = prepare(k_prep, data) if prepare else data
    compiled_init = compiled(method.init, (0, 0, "data"), k_init, params, prepared, name="init")
    state0 = compiled_init(k_init, params, prepared)
    runner.compile_all(state0, prepared, k_loop, epochs=method.epochs, phases=method.phases,
                       batch_size=method.batch_size)
    edit = None
    if method.edit is not None:
        edit = compiled(method.edit, (0, "data", 0), state0, prepared, k_edit, name="edit")
    jax.block_until_ready(state0)
    del state0

    # --- the timed unlearning ---
    clock = _PausableClock()
    curve: list[dict] = []

    def evaluate_at(steps_done: int, state: TrainState) -> None:
        jax.block_until_ready(state.params)
        with clock.paused() as elapsed:
            curve.append({"step": steps_done, "unlearn_s": elapsed, **eval_fn(state.params)})

    steps = [0]

    def after_step(steps_done: int, state: TrainState) -> None:
        steps[0] = steps_done
        if eval_every is not None and steps_done % eval_every == 0:
            evaluate_at(steps_done, state)

    clock.start()
    prepared = prepare(k_prep, data) if prepare else data
    state = compiled_init(k_init, params, prepared)
    if edit is not None:
        state = edit(state, prepared, k_edit)
    if eval_every is not None:
        evaluate_at(0, state)
    state, history = run_phases(
        state, prepared, k_loop, epochs=method.epochs, phases=method.phases,
        batch_size=method.batch_size, lr_schedule=method.lr_schedule,
        begin_epoch=method.begin_epoch, after_step=after_step, runner=runner,
        progress=progress)
    out_params = jax.block_until_ready(state.params)
    unlearn_s = clock.read()
    if eval_every is not None and curve[-1]["step"] != steps[0]:
        with clock.paused():
            curve.append({"step": steps[0], "unlearn_s": unlearn_s, **eval_fn(out_params)})
    return UnlearnOutput(out_params, unlearn_s, compile_s + runner.compile_s, history, curve,
                         clock.paused_s, steps[0])


def _check_stacked(data: UnlearnData, models: int) -> None:
    sizes = {jnp.shape(leaf)[:1] for leaf in jax.tree.leaves(data)}
    if sizes != {(models,)}:
        raise ValueError(f"run_method(models={models}) takes data stacked along a leading axis of "
                         f"{models} models (jaxunlearn.unlearn.stack_unlearn_data); got leading "
                         f"sizes {sorted(sizes)}")


class _PausableClock:
    """Wall clock that excludes the intervals spent inside :meth:`paused`."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.paused_s = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.paused_s = 0.0

    def read(self) -> float:
        return time.perf_counter() - self.t0 - self.paused_s

    @contextlib.contextmanager
    def paused(self):
        """Yields the time read at the pause; the block's own duration is then excluded."""
        t = time.perf_counter()
        yield t - self.t0 - self.paused_s
        self.paused_s += time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# The retain objective: the hook through which A-AMU wraps a base method

Regulariser = Callable[[Params, Batch, UnlearnData, jax.Array], jax.Array]
"""``regulariser(params, batch, data, key) -> scalar``: a term added to a retain objective, with
the step's retain batch (its shape sets static sample sizes), the device-resident pools (to
sample forget or unseen examples) and the step's key."""


class JointRegulariser(NamedTuple):
    """A regulariser whose own trained images can share the retain batch's network call.

    ``draw(batch, data, key) -> (x_M, drawn)`` picks the images (``[M, ...]``, the retain
    images' shape) and whatever else ``loss`` needs of the draw; :func:`retain_forward` then
    runs ``apply_fn(params, concat([batch.x, x_M]))`` once and calls ``loss(params, logits_MxC,
    drawn, data) -> scalar`` with the rows of ``x_M``. Called as a plain :data:`Regulariser`,
    ``reg(params, batch, data, key)``, it runs its own forward on ``x_M``: the same value. One
    call over b + M images runs the network's forward and backward faster than two calls over b
    and M (``bench/aamu.py``'s floors); the network is a per-example function (instance norm),
    so only the summation order of the gradients changes.
    """

    draw: Callable[[Batch, UnlearnData, jax.Array], tuple[jax.Array, Any]]
    loss: Callable[[Params, jax.Array, Any, UnlearnData], jax.Array]
    apply_fn: Callable[[Params, jax.Array], jax.Array]

    def __call__(self, params: Params, batch: Batch, data: UnlearnData,
                 key: jax.Array) -> jax.Array:
        x_M, drawn = self.draw(batch, data, key)
        return self.loss(params, self.apply_fn(params, x_M), drawn, data)


class RetainObjective(NamedTuple):
    """How a retain-based method scores a retain batch (the hook A-AMU fills in).

    The loss of a retain step (:func:`jaxunlearn.unlearn.finetune.finetune_step`) is
    ``ce_weight · primary(CE_N, w_N) + regulariser(params, batch, data, key) + extra``, where
    ``extra`` is the method's own term (distillation KL, L1 penalty...) and ``ce_weight`` its
    weight on the cross-entropy (SCRUB: 0.99). The default is the weighted mean cross-entropy and
    no regulariser; A-AMU (:func:`jaxunlearn.unlearn.aamu.aamu_objective`) steepens the primary
    term and adds ``λ·MMD²``, so λ is the same in every A-method. The regulariser is a
    :data:`Regulariser` or a :class:`JointRegulariser`; steps evaluate either through
    :func:`retain_forward`.
    """

    primary: Callable[[jax.Array, jax.Array], jax.Array] = weighted_mean
    regulariser: Regulariser | JointRegulariser | None = None


def retain_forward(apply_fn: Callable, objective: RetainObjective, params: Params, batch: Batch,
                   data: UnlearnData, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The retain batch's logits and the objective's regulariser (0 without one), in a step.

    A :class:`JointRegulariser` of the same ``apply_fn`` has its images go through the network
    in the same call as the retain batch; any other regulariser is called as is.

    Returns:
      ``(logits_NxC, regulariser)``: the retain batch's logits and a scalar.
    """
    reg = objective.regulariser
    if isinstance(reg, JointRegulariser) and reg.apply_fn == apply_fn:
        x_M, drawn = reg.draw(batch, data, key)
        n = batch.x.shape[0]
        logits = apply_fn(params, jnp.concatenate([batch.x, x_M.astype(batch.x.dtype)]))
        return logits[:n], reg.loss(params, logits[n:], drawn, data)
    logits = apply_fn(params, batch.x)
    if reg is None:
        return logits, jnp.zeros((), logits.dtype)
    return logits, reg(params, batch, data, key)


# ---------------------------------------------------------------------------------------------
# What the method factories share


def check_budget(epochs: int, batch_size: int, lr: float) -> None:
    """Raise ``ValueError`` unless ``epochs >= 0``, ``batch_size >= 1`` and ``lr >= 0``."""
    if epochs < 0 or batch_size < 1 or not lr >= 0:
        raise ValueError(f"expected epochs >= 0, batch_size >= 1 and lr >= 0; got epochs={epochs}, "
                         f"batch_size={batch_size}, lr={lr}")


AuxInit = Callable[[jax.Array, Params, UnlearnData], Any]
"""``aux(key, params, data) -> aux``: a method's auxiliary state at the start (teacher, mask)."""


def training_method(tx: optax.GradientTransformation | None,
                    phases: Sequence[Phase] | Callable[[int], Sequence[Phase]], *, epochs: int,
                    batch_size: int, aux: AuxInit | None = None, **options: Any) -> Method:
    """A :class:`Method` that starts from the given parameters with ``tx``'s optimiser state.

    Its ``init(key, params, data)`` returns ``TrainState(params, tx.init(params), aux(key,
    params, data), 0)``: the shape of every method that unlearns from the original model.

    Args:
      tx: the optimiser, or ``None`` for a method that never steps (its ``opt_state`` is ``()``).
      phases: the phases run in every epoch (a sequence), or ``epoch -> phases``.
      epochs, batch_size: the budget.
      aux: the auxiliary state at the start (default ``()``).
      **options: the other fields of :class:`Method` (``lr_schedule``, ``prepare``, ``edit``,
        ``begin_epoch``, ``uses_retain``).
    """

    def init(key: jax.Array, params: Params, data: UnlearnData) -> TrainState:
        aux_state = () if aux is None else aux(key, params, data)
        return TrainState(params, () if tx is None else tx.init(params), aux_state, 0)

    if callable(phases):
        return Method(init, phases, epochs, batch_size, **options)
    fixed = tuple(phases)
    return Method(init, lambda epoch: fixed, epochs, batch_size, **options)


# ---------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, Callable[..., Method]] = {}


def register(name: str) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Decorator registering a factory ``factory(apply_fn, *, init_fn, **hparams) -> Method``.

    The factory's hyper-parameters are its keyword-only arguments, and their defaults its
    defaults (:func:`factory_defaults`). A wrapper whose keywords pass through ``**hparams``
    (an A-method, :func:`jaxunlearn.unlearn.aamu.with_aamu`) publishes its full defaults as a
    ``defaults`` mapping on the factory instead.
    """

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def available_methods() -> list[str]:
    """Names of all registered methods, in registration order."""
    import jaxunlearn.unlearn  # noqa: F401  (importing the package registers every method)

    return list(_REGISTRY)


def keyword_defaults(factory: Callable[..., Method]) -> dict[str, Any]:
    """A factory's hyper-parameter defaults (see :func:`register`), without ``init_fn`` and the
    ``objective`` hook."""
    published = getattr(factory, "defaults", None)
    if published is None:
        published = factory.__kwdefaults__ or {}
    return {k: v for k, v in published.items() if k not in ("init_fn", "objective")}


def factory_defaults(name: str) -> dict[str, Any]:
    """The default hyper-parameters of the registered method ``name`` (an A-method's include
    its base method's, as it runs them).

    Raises:
      ValueError: unknown name.
    """
    available_methods()
    if name not in _REGISTRY:
        raise ValueError(f"unknown unlearning method {name!r}")
    return keyword_defaults(_REGISTRY[name])


def make_method(name: str, apply_fn: Callable, init_fn: Callable | None = None,
                **hparams: Any) -> Method:
    """Build the registered method ``name`` for a model's ``apply_fn``.

    Args:
      name: registry name (see :func:`available_methods`).
      apply_fn: ``apply_fn(params, x) -> logits``.
      init_fn: ``init_fn(key) -> params`` of a freshly initialised model, for methods that need
        one (Retrain, the bad teacher); ignored by the others.
      **hparams: the method's hyper-parameters (its factory's keyword arguments).

    Raises:
      ValueError: unknown name, or hyper-parameters the method does not take.
    """
    names = available_methods()
    if name not in _REGISTRY:
        raise ValueError(f"unknown unlearning method {name!r}; registered: {', '.join(names)}")
    try:
        method = _REGISTRY[name](apply_fn, init_fn=init_fn, **hparams)
    except TypeError as e:
        raise ValueError(f"bad hyper-parameters for method {name!r}: {e}") from e
    return dataclasses.replace(method, name=name, hparams=dict(hparams))
