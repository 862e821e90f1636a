"""The training loop shared by original-model training and every unlearning method.

- :func:`run_phases`: the epoch loop. A *phase* is a pure step function applied to every batch of
  one stream (a named :class:`~jaxunlearn.pools.Pool`, :func:`~jaxunlearn.pools.stream_pool`) in
  one epoch; a method's epoch is a sequence of phases (e.g. SCRUB's forget pass then retain
  pass). Batches are drawn inside the jitted step from the device-resident pool (no host copies of
  data per step) with a fixed size, so a step compiles once per (batch size, pool capacity), not
  once per seed or set size. Every step is compiled ahead of time and cached process-wide
  (:class:`PhaseRunner`, through :func:`jaxunlearn.timing.compile_ahead`). The learning rate is
  written into the optimiser state per epoch (:mod:`jaxunlearn.optim`).
- :func:`apply_gradients`: the one optimiser update, optionally masked.
- :func:`fit`: supervised training (the original model and Retrain).
- Many models at once: with ``PhaseRunner(M)`` (``fit(..., models=M)``, ``run_method(...,
  models=M)``), the same loop runs M models stacked along a leading axis in one ``vmap``-ped,
  jitted step: every model has its own key (hence its own data order and samples), its own state
  and optionally its own pools or inclusion mask (``include``). A model whose epoch has fewer
  steps than another's keeps its state on the extra steps, so each model follows exactly its
  sequential run. Where one model and a stack differ is :class:`jaxunlearn.ensemble.ModelsAxis`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import sharding
from jaxunlearn.ensemble import Ensemble, ModelsAxis
from jaxunlearn.losses import cross_entropy, weighted_mean
from jaxunlearn.metrics import accuracy
from jaxunlearn.optim import set_learning_rate
from jaxunlearn.pools import Batch, Pool, epoch_order, gather_batch, stream_pool
from jaxunlearn.timing import compile_ahead

__all__ = [
    "FitOutput",
    "Phase",
    "PhaseRunner",
    "TrainState",
    "apply_gradients",
    "ce_step",
    "fit",
    "run_phases",
    "weighted_accuracy",
]

Params = Any


class TrainState(NamedTuple):
    """Parameters, optimiser state, method-specific auxiliary state and a step counter."""

    params: Params
    opt_state: Any
    aux: Any = ()
    step: jax.Array | int = 0


class Phase(NamedTuple):
    """One pass over a stream: ``step(state, batch, data, key) -> (state, metrics)``."""

    stream: str
    step: Callable[..., tuple[TrainState, Mapping[str, jax.Array]]]



def _phase_runner(step: Callable, stream: str, models: ModelsAxis) -> Callable:
    def run(state, data, order, s, key):
        pool = stream_pool(data, stream)
        batch = gather_batch(pool, order[s])
        return step(state, batch, data, jax.random.fold_in(key, s))

    return jax.jit(models.lift_step(run, (0, "data", 0, None, 0)), donate_argnums=(0,))


@functools.cache
def _order_fn(capacity: int, batch_size: int, models: ModelsAxis,
              include_axis: int | None) -> Callable:
    """Jitted ``(key, n, include) -> [steps, b]`` (:func:`~jaxunlearn.pools.epoch_order` of the
    valid, included rows), of every model of a stack."""

    def order(key, n, include):
        valid = jnp.arange(capacity) < n
        if include is not None:
            valid = valid & include
        return epoch_order(key, valid, batch_size)

    return jax.jit(models.lift(order, (0, "data", include_axis)))


class PhaseRunner:
    """Hands out compiled phase runners (cached process-wide) and sums the compile time spent.

    A method built once and run for several seeds (pools of the same bucketed capacity)
    compiles each of its steps once (:func:`jaxunlearn.timing.compile_ahead` with a cache key).

    Args:
      models: ``None`` (one model), or M stacked models (a count or an
        :class:`~jaxunlearn.ensemble.Ensemble`): every operation then acts on M models at once.
      data_axis: for a stack, 0 when each model has its own pools, ``None`` when they share them
        (see :class:`~jaxunlearn.ensemble.ModelsAxis`, held as :attr:`models`).
    """

    def __init__(self, models: int | Ensemble | None = None, *,
                 data_axis: int | None = None) -> None:
        self.compile_s = 0.0
        self.models = ModelsAxis(models, data_axis)

    def order(self, key: jax.Array, pool: Pool, batch_size: int,
              include: jax.Array | None = None) -> jax.Array:
        """The epoch's batches of ``pool``'s valid (and ``include``-d) rows: ``[steps, b]``, or
        ``[M, steps, b]``."""
        include_axis = None if include is None or include.ndim == 1 else 0
        return _order_fn(pool.y.shape[-1], batch_size, self.models, include_axis)(
            key, pool.n, include)

    def steps(self, pool: Pool, batch_size: int, include: jax.Array | None = None) -> np.ndarray:
        """Steps of an epoch of ``pool``: ``[]`` int, or ``[M]`` (0 for an empty set). One host
        read, outside the steps."""
        n_valid, include = sharding.to_host((pool.n, include))
        if include is None:
            n = n_valid
        else:
            n = np.sum(include & (np.arange(pool.y.shape[-1]) < n_valid[..., None]), axis=-1)
        return -(-self.models.per_model(n) // batch_size)

    def runner(self, phase: Phase, state, data, order, key):
        """The compiled ``run(state, data, order, s, key, active) -> (state, metrics)`` of
        ``phase`` (``active``: ``[M]`` bool, the models that take this step; ignored for one
        model)."""
        compiled, seconds = compile_ahead(
            _phase_runner(phase.step, phase.stream, self.models), state, data, order,
            jnp.int32(0), key, self.models.active(np.ones((), bool)),
            cache_key=("phase", phase.step, phase.stream, self.models.cache_key),
            compiler_options=self.models.compiler_options)
        self.compile_s += seconds
        return compiled

    def compile_all(self, state: TrainState, data: Any, key: jax.Array, *, epochs: int,
                    phases: Callable[[int], Sequence[Phase]], batch_size: int,
                    include: Mapping[str, jax.Array] | None = None) -> None:
        """Compile, before a timed run, every phase :func:`run_phases` will run, and the shuffle.

        The arguments are those of :func:`run_phases` (``state`` only gives shapes: nothing is
        donated). All the time spent here, the shuffle's jit compilation included, is added to
        :attr:`compile_s`.
        """
        t0 = time.perf_counter()
        before = self.compile_s
        for epoch in range(epochs):
            for phase in phases(epoch):
                pool = stream_pool(data, phase.stream)
                order = self.order(key, pool, batch_size, (include or {}).get(phase.stream))
                self.runner(phase, state, data, order, key)
        self.compile_s = before + time.perf_counter() - t0


def run_phases(
    state: TrainState,
    data: Any,
    key: jax.Array,
    *,
    epochs: int,
    phases: Callable[[int], Sequence[Phase]],
    batch_size: int,
    lr_schedule: Callable[[int], float] | None = None,
    begin_epoch: Callable[[TrainState, int, Any, jax.Array], TrainState] | None = None,
    end_epoch: Callable[[int, TrainState, dict], None] | None = None,
    after_step: Callable[[int, TrainState], None] | None = None,
    runner: PhaseRunner | None = None,
    include: Mapping[str, jax.Array] | None = None,
    progress: bool | str = False,
) -> tuple[TrainState, list[dict]]:
    """Run ``epochs`` epochs of phases over the streams of ``data``.

    Args:
      state: the training state (donated to the steps: do not reuse the input).
      data: a pytree with a :class:`Pool` per stream name (attributes, or an ``extra`` dict).
      key: PRNG key; epoch e, phase p uses ``fold_in(fold_in(key, e), p)``.
      epochs: number of epochs.
      phases: epoch -> the phases to run in that epoch, in order.
      batch_size: fixed batch size b of every step.
      lr_schedule: epoch -> learning rate, set into the optimiser state before the epoch.
      begin_epoch: optional hook ``(state, epoch, data, key) -> state`` (e.g. pruning).
      end_epoch: optional host callback ``(epoch, state, metrics)``, e.g. validation.
      after_step: optional host callback ``(steps_done, state)`` after every step, counting the
        steps of every phase from 1 (e.g. evaluation during unlearning: see
        :func:`jaxunlearn.unlearn.run_method`). ``state`` is donated to the next step: read
        what you need before returning.
      runner: a :class:`PhaseRunner` whose compile time the caller reads; a fresh one otherwise.
        A runner of M models (``PhaseRunner(M, data_axis=...)``) runs them all: ``state`` and
        ``key`` are stacked along a leading models axis, and so is ``data`` when its
        ``data_axis`` is 0.
      include: optional ``{stream: [cap] bool}`` (``[M, cap]`` for an ensemble): train on
        these valid rows of a stream only (e.g. each model's random half of a shared pool).
      progress: show a tqdm bar over steps (a string sets its description).

    Returns:
      The final state and per-epoch metrics (mean of each step metric, read once per epoch; a
      list of M means for an ensemble).
    """
    runner = runner or PhaseRunner()
    include = include or {}
    history: list[dict] = []
    bar = None
    if progress and sharding.is_primary():  # one bar, not one per process
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=progress if isinstance(progress, str) else "train",
                   unit="epoch", leave=False, dynamic_ncols=True)
    steps_cache: dict[str, np.ndarray] = {}
    steps_done = 0
    # every leaf placed as the steps return it: replicated, or split along the models axis
    models = runner.models
    state = models.place(state)
    for epoch in range(epochs):
        key_e = models.fold_in(key, epoch)
        if lr_schedule is not None:
            state = state._replace(opt_state=set_learning_rate(state.opt_state, lr_schedule(epoch)))
        if begin_epoch is not None:
            state = models.lift(lambda st, d, k, e=epoch: begin_epoch(st, e, d, k),
                                (0, "data", 0))(state, data, models.fold_in(key_e, 10_000))
        sums: dict[str, jax.Array] = {}
        counts: dict[str, np.ndarray] = {}
        for p, phase in enumerate(phases(epoch)):
            pool = stream_pool(data, phase.stream)
            if phase.stream not in steps_cache:  # one host read per stream per run
                steps_cache[phase.stream] = runner.steps(pool, batch_size,
                                                         include.get(phase.stream))
            steps = steps_cache[phase.stream]
            if steps.max() == 0:
                continue
            key_p = models.fold_in(key_e, p)
            order = runner.order(key_p, pool, batch_size, include.get(phase.stream))
            run = runner.runner(phase, state, data, order, key_p)
            for s in range(int(steps.max())):
                active = models.active(s < steps)
                state, metrics = run(state, data, order, jnp.int32(s), key_p, active)
                steps_done += 1
                if after_step is not None:
                    after_step(steps_done, state)
                for name, value in metrics.items():
                    tag = f"{phase.stream}/{name}"
                    if models.size is not None:  # a finished model's step is not one
                        value = jnp.where(active, value, 0.0)
                    sums[tag] = sums[tag] + value if tag in sums else value
                    counts[tag] = counts.get(tag, 0) + (s < steps)
        epoch_metrics: dict[str, Any] = {}
        for k, v in sharding.to_host(sums).items():
            mean = v / np.maximum(counts[k], 1)
            epoch_metrics[k] = float(mean) if models.size is None else mean.tolist()
        epoch_metrics["epoch"] = epoch
        if lr_schedule is not None:
            epoch_metrics["lr"] = lr_schedule(epoch)
        if end_epoch is not None:
            end_epoch(epoch, state, epoch_metrics)
        history.append(epoch_metrics)
        if bar is not None:
            bar.set_postfix({k.split("/")[-1]: (f"{100 * v:.1f}%" if k.endswith("acc")
                                                 else f"{v:.3g}")  # accuracy in %, as the logs
                             for k, v in epoch_metrics.items()
                             if isinstance(v, float) and k != "lr"}, refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    return state, history


# ---------------------------------------------------------------------------------------------
# Supervised training (the original model and Retrain)


def apply_gradients(state: TrainState, grads: Params, optimizer: optax.GradientTransformation,
                    mask: Params | None = None) -> TrainState:
    """One optimiser update of ``state.params`` with ``grads``; increments the step counter.

    With ``mask``, only the entries where it is true move: the *update* (after momentum and
    coupled weight decay) is masked, not the gradient, so a masked-out weight keeps its value
    exactly (a pruned weight stays 0, a weight outside SalUn's saliency mask keeps its value).

    Args:
      state: the training state.
      grads: gradients, a pytree like ``state.params``.
      optimizer: the optimiser.
      mask: optional boolean pytree like ``state.params`` (``None``: update everything).

    Returns:
      The updated state.
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    if mask is not None:
        updates = jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)), updates, mask)
    return state._replace(params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state, step=state.step + 1)


def weighted_accuracy(logits_NxC: jax.Array, batch: Batch) -> jax.Array:
    """Fraction of the batch's real examples (``batch.w``) classified correctly: a scalar."""
    hits = (jnp.argmax(logits_NxC, -1) == batch.y).astype(jnp.float32)
    return weighted_mean(hits, batch.w)


def ce_step(apply_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """A phase step minimising the weighted mean cross-entropy of the batch."""

    def step(state: TrainState, batch: Batch, data: Any, key: jax.Array):
        del data, key

        def loss_fn(params):
            logits = apply_fn(params, batch.x)
            return weighted_mean(cross_entropy(logits, batch.y), batch.w), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return apply_gradients(state, grads, optimizer), {
            "loss": loss, "acc": weighted_accuracy(logits, batch)}

    return step


class FitOutput(NamedTuple):
    """What :func:`fit` returns: the selected parameters, their epoch and validation accuracy
    (NaN without validation data), and the per-epoch metrics."""

    params: Params
    best_epoch: int
    best_val_acc: float
    history: list


def fit(
    apply_fn: Callable,
    params: Params,
    train: Pool,
    key: jax.Array,
    *,
    epochs: int,
    batch_size: int,
    optimizer: optax.GradientTransformation,
    lr_schedule: Callable[[int], float] | None = None,
    val: tuple[Any, Any] | None = None,
    include: Any = None,
    models: int | Ensemble | None = None,
    progress: bool | str = False,
) -> FitOutput:
    """Train ``params`` with cross-entropy on ``train``; keep the epoch best on ``val``.

    With ``models=M``, M models train at once in one vmapped step (:mod:`jaxunlearn.ensemble`):
    ``params`` and ``key`` are stacked along a leading axis of size M (e.g.
    :func:`jaxunlearn.ensemble.init_models`), the models share ``train`` and each trains on the
    rows of its own ``include`` mask; model m's result equals ``fit`` of model m alone with
    ``include[m]`` (up to float rounding: ``tests/test_ensemble.py``).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits``.
      params: initial parameters.
      train: the training :class:`Pool`.
      key: PRNG key for the shuffles.
      epochs, batch_size: the budget.
      optimizer: an optax optimiser with an injected learning rate (:func:`sgd`, :func:`adam`).
      lr_schedule: epoch -> learning rate.
      val: ``(x, y)`` host arrays of a validation slice; the parameters of the epoch with the best
        validation accuracy are returned (method.md §2: chosen on validation data, never the test
        set;
        ties go to the latest such epoch).
        Without it the last epoch's parameters are returned. Not with ``models`` (every model
        trains ``epochs`` epochs).
      include: optional ``[cap]`` bool (``[M, cap]`` with ``models``): train on these valid
        rows of ``train`` only.
      models: train this many stacked models at once (``None``: one model), or an
        :class:`~jaxunlearn.ensemble.Ensemble` (to set its ``chunk``).
      progress: show a progress bar.

    Returns:
      :class:`FitOutput` with the selected parameters, their epoch and validation accuracy, and
      the per-epoch history.
    """
    if models is not None and val is not None:
        raise ValueError("fit(models=M) trains every model for the given epochs; selecting an "
                         "epoch on validation data (val) is for one model")
    runner = PhaseRunner(models, data_axis=None)
    axis = runner.models
    params = axis.place(jax.tree.map(jnp.copy, params))  # steps donate their state
    opt_state = axis.lift(optimizer.init, (0,))(params)
    state = TrainState(params, opt_state, (), axis.lift(lambda p: jnp.int32(0), (0,))(params))
    best: dict[str, Any] = {"acc": -1.0, "epoch": epochs - 1, "params": None}

    def end_epoch(epoch, st, metrics):
        if val is None:
            return
        acc = accuracy(apply_fn, st.params, val[0], val[1])
        metrics["val_acc"] = acc
        # ties go to the later epoch: a small validation slice saturates early (digits: 100%
        # from epoch 7 of 40), and later epochs have the lower learning rate of the schedule
        if acc >= best["acc"]:
            best.update(acc=acc, epoch=epoch, params=jax.tree.map(jnp.copy, st.params))

    step = ce_step(apply_fn, optimizer)
    state, history = run_phases(
        state, {"train": train}, key, epochs=epochs, phases=lambda e: (Phase("train", step),),
        batch_size=batch_size, lr_schedule=lr_schedule, end_epoch=end_epoch, runner=runner,
        include=None if include is None else {"train": axis.place(jnp.asarray(include, bool))},
        progress=progress)
    if best["params"] is None:
        return FitOutput(state.params, epochs - 1, float("nan"), history)
    return FitOutput(best["params"], best["epoch"], best["acc"], history)
