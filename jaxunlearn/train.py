"""Training machinery shared by original-model training and every unlearning method.

- :class:`Pool`: a device-resident dataset padded to a static capacity, with its valid count
  ``n``. Padding rows never contribute: every batch carries a weight mask ``w``.
- Per-epoch shuffles and batches are drawn *inside* jitted code from the pool (no host copies of
  data per step); batches have a fixed size, the last one of an epoch is padded with ``w = 0``, so a
  step compiles once per (batch size, pool capacity) and not once per seed or set size.
- Optimisers take their learning rate through ``optax.inject_hyperparams`` so schedules are
  stepped per epoch (as in the paper's reference) without recompiling.
- :func:`run_phases`: the epoch loop. A *phase* is a pure step function applied to every batch of
  one stream (a named pool, :func:`stream_pool`) in one epoch; a method's epoch is a sequence of
  phases (e.g. SCRUB's forget pass then retain pass). Every step is compiled ahead of time and
  cached process-wide (:class:`PhaseRunner`, through :func:`jaxunlearn.timing.compile_ahead`).
- Sampling on device: :func:`epoch_order` (a shuffle of the valid rows cut into batches) and
  :func:`sample_without_replacement` / :func:`sample_batch` (distinct rows drawn uniformly),
  shared by every method that draws data inside its step.
- :func:`apply_gradients`: the one optimiser update, optionally masked.
- Many models at once: with :class:`Ensemble` (``run_phases(..., runner=PhaseRunner(
  Ensemble(M)))``, ``fit(..., models=M)``, ``run_method(..., models=M)``), the same loop runs M
  models stacked along a leading axis in one ``vmap``-ped, jitted step: every model has its own
  key (hence its own data order and samples), its own state and optionally its own pools or
  inclusion mask (``include``). A model whose epoch has fewer steps than another's keeps its
  state on the extra steps, so each model follows exactly its sequential run. See
  :mod:`jaxunlearn.ensemble`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import sharding
from jaxunlearn.conv import stacked_models
from jaxunlearn.losses import cross_entropy, weighted_mean
from jaxunlearn.metrics import accuracy
from jaxunlearn.timing import compile_ahead

__all__ = [
    "Batch",
    "Ensemble",
    "FitOutput",
    "Phase",
    "PhaseRunner",
    "Pool",
    "TrainState",
    "adam",
    "apply_gradients",
    "as_ensemble",
    "bucket_size",
    "ce_step",
    "cosine_with_warmup",
    "epoch_order",
    "fit",
    "gather_batch",
    "get_learning_rate",
    "make_pool",
    "run_phases",
    "sample_batch",
    "sample_without_replacement",
    "set_learning_rate",
    "sgd",
    "shuffle_valid_first",
    "stacked_compiler_options",
    "stream_pool",
    "weighted_accuracy",
]

Params = Any


class Pool(NamedTuple):
    """A dataset on device padded to a static capacity. Rows ``>= n`` are padding (zeros)."""

    x: jax.Array  # [cap, h, w, c]
    y: jax.Array  # [cap] int32
    n: jax.Array  # [] int32, the number of valid rows

    @property
    def valid(self) -> jax.Array:
        """``[cap]`` bool, True for the ``n`` valid rows."""
        return jnp.arange(self.y.shape[0]) < self.n


class Batch(NamedTuple):
    """A fixed-size batch; ``w`` is 1 for real examples and 0 for padding."""

    x: jax.Array  # [b, h, w, c]
    y: jax.Array  # [b] int32
    w: jax.Array  # [b] float32


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


def bucket_size(n: int) -> int:
    """Static capacity for ``n`` rows: ``n`` rounded up to a quarter of its power of two.

    Sets whose sizes differ a little (the retain set of different forgotten classes) share one
    capacity, hence one compiled step; the padding overhead is below 25%.
    """
    if n <= 64:
        return 64
    quantum = 2 ** (math.floor(math.log2(n)) - 2)
    return int(math.ceil(n / quantum) * quantum)


def make_pool(x: Any, y: Any, capacity: int | None = None) -> Pool:
    """Put ``x [n, ...]`` and ``y [n]`` on device, padded to ``capacity`` (default: bucket)."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"images and labels differ in length: {x.shape[0]} vs {y.shape[0]}")
    n = x.shape[0]
    cap = bucket_size(n) if capacity is None else capacity
    if cap < n:
        raise ValueError(f"capacity {cap} is smaller than the {n} rows to store")
    xp = np.zeros((cap, *x.shape[1:]), np.float32)
    xp[:n] = x
    yp = np.zeros((cap,), np.int32)
    yp[:n] = y
    return sharding.replicate(Pool(xp, yp, np.int32(n)))


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def shuffle_valid_first(key: jax.Array, valid_N: jax.Array) -> jax.Array:
    """A uniformly random order of the valid rows, then the others in index order.

    Args:
      key: PRNG key.
      valid_N: ``[N]`` bool, the rows to shuffle (anywhere in the set, e.g. several padded pools
        laid end to end).

    Returns:
      ``[N]`` int32 row indices: the valid rows in random order first.
    """
    u = jax.random.uniform(key, valid_N.shape)
    return jnp.argsort(jnp.where(valid_N, u, 2.0))


def epoch_order(key: jax.Array, valid_N: jax.Array, batch_size: int) -> jax.Array:
    """A random order of the valid rows, padded to whole batches: ``[steps, b]``.

    Args:
      key: PRNG key of the shuffle.
      valid_N: ``[N]`` bool validity of the rows of a set of capacity N (``Pool.valid``).
      batch_size: b (static).

    Returns:
      ``[ceil(N / b), b]`` int32 (at least one step): the valid rows first in random order
      (:func:`shuffle_valid_first`), then ``-1`` (padding) in every remaining slot.
    """
    capacity = valid_N.shape[0]
    n = jnp.sum(valid_N)
    order = jnp.where(jnp.arange(capacity) < n, shuffle_valid_first(key, valid_N), -1)
    steps = _steps_per_epoch(capacity, batch_size)
    order = jnp.pad(order, (0, steps * batch_size - capacity), constant_values=-1)
    return order.reshape(steps, batch_size).astype(jnp.int32)


def gather_batch(pool: Pool, idx_B: jax.Array) -> Batch:
    """Rows ``idx`` of ``pool`` (``-1`` = padding, weight 0), sharded over the data mesh."""
    safe = jnp.maximum(idx_B, 0)
    batch = Batch(pool.x[safe], pool.y[safe], (idx_B >= 0).astype(jnp.float32))
    return sharding.constrain_batch(batch)


def sample_without_replacement(key: jax.Array, eligible: jax.Array,
                               m: int) -> tuple[jax.Array, jax.Array]:
    """``m`` distinct positions along the last axis, drawn uniformly among the eligible ones.

    Eligible entries score a uniform draw in [0, 1), the others −1, and ``top_k`` keeps the ``m``
    highest: eligible positions come first in random order, without duplicates; when fewer than
    ``m`` are eligible, the rest of the slots are ineligible positions (lowest index first) with
    weight 0, so shapes stay static.

    Args:
      key: PRNG key.
      eligible: ``[..., N]`` bool (e.g. ``Pool.valid``, or ``[C, N]`` per-class tables).
      m: positions to draw per row (static, ``<= N``).

    Returns:
      ``(idx, w)``: ``[..., m]`` int32 positions and ``[..., m]`` float32 weights (1 eligible,
      0 filler).
    """
    u = jax.random.uniform(key, eligible.shape)
    _, idx = jax.lax.top_k(jnp.where(eligible, u, -1.0), m)
    return idx, jnp.take_along_axis(eligible, idx, axis=-1).astype(jnp.float32)


def sample_batch(key: jax.Array, pool: Pool, m: int, eligible: jax.Array | None = None) -> Batch:
    """``m`` distinct valid rows of ``pool`` drawn uniformly on device (fewer valid rows: w = 0).

    Args:
      key: PRNG key.
      pool: the pool.
      m: static batch size (capped at the pool's capacity).
      eligible: optional ``[cap]`` bool restricting the draw to some valid rows (e.g. A-AMU's
        unseen rows of the forget sample's classes).

    Returns:
      A :class:`Batch` of ``min(m, capacity)`` rows (:func:`sample_without_replacement`).
    """
    cap = pool.y.shape[0]
    rows = pool.valid if eligible is None else pool.valid & eligible
    idx, w = sample_without_replacement(key, rows, min(m, cap))
    return Batch(pool.x[idx], pool.y[idx], w)


# ---------------------------------------------------------------------------------------------
# Optimisers and schedules


def sgd(learning_rate: float, momentum: float = 0.0, weight_decay: float = 0.0,
        nesterov: bool = False) -> optax.GradientTransformation:
    """PyTorch-style SGD: *coupled* weight decay (added to the gradient before momentum).

    The learning rate is an injected hyper-parameter (see :func:`set_learning_rate`).
    """

    def _make(learning_rate):
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.sgd(learning_rate, momentum=momentum if momentum else None, nesterov=nesterov),
        )

    return optax.inject_hyperparams(_make)(learning_rate=learning_rate)


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam (PyTorch defaults) with optional coupled L2 weight decay; injectable learning rate."""

    def _make(learning_rate):
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))

    return optax.inject_hyperparams(_make)(learning_rate=learning_rate)


def set_learning_rate(opt_state: Any, lr: float) -> Any:
    """Return ``opt_state`` with its injected learning rate set to ``lr``."""
    if not hasattr(opt_state, "hyperparams"):
        raise ValueError("optimiser state has no injected hyper-parameters; build it with "
                         "jaxunlearn.train.sgd/adam or optax.inject_hyperparams")
    hp = dict(opt_state.hyperparams)
    old = hp["learning_rate"]
    # same shape as before: a stack of M models' optimiser states holds M learning rates
    new = jnp.full(jnp.shape(old), lr, jnp.asarray(old).dtype)
    if isinstance(old, jax.Array):
        # keep the placement (e.g. replicated over the data mesh) so compiled steps still match
        new = sharding.put(new, old.sharding)
    hp["learning_rate"] = new
    return opt_state._replace(hyperparams=hp)


def get_learning_rate(opt_state: Any) -> jax.Array:
    """The injected learning rate of ``opt_state`` (see :func:`set_learning_rate`)."""
    return opt_state.hyperparams["learning_rate"]


def cosine_with_warmup(base_lr: float, epochs: int, warmup_epochs: int = 0,
                       final_lr: float = 0.0) -> Callable[[int], float]:
    """Per-epoch schedule: linear warm-up over ``warmup_epochs`` then cosine to ``final_lr``.

    Epoch e < warmup gets ``base_lr·(e+1)/warmup``; afterwards
    ``final + (base − final)·½(1 + cos(π (e − warmup) / (epochs − warmup)))`` (SPEC §2, §5).
    """

    def schedule(epoch: int) -> float:
        if epoch < warmup_epochs:
            return base_lr * (epoch + 1) / warmup_epochs
        span = max(epochs - warmup_epochs, 1)
        t = (epoch - warmup_epochs) / span
        return final_lr + (base_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    return schedule


# ---------------------------------------------------------------------------------------------
# The epoch loop


def stream_pool(data: Any, stream: str) -> Pool:
    """The :class:`Pool` of the stream named ``stream`` in ``data``.

    Args:
      data: a mapping of pools, or a pytree with pools as attributes and optionally more in an
        ``extra`` mapping (e.g. :class:`~jaxunlearn.unlearn.base.UnlearnData`).
      stream: the stream's name.

    Raises:
      ValueError: no such stream (the message lists the available ones).
    """
    if isinstance(data, Mapping) and stream in data:
        return data[stream]
    if hasattr(data, stream):
        return getattr(data, stream)
    extra = getattr(data, "extra", None) or {}
    if stream in extra:
        return extra[stream]
    if isinstance(data, Mapping):
        names = list(data)
    else:
        names = [f for f in getattr(data, "_fields", ()) if isinstance(getattr(data, f), Pool)]
    raise ValueError(f"unknown data stream {stream!r}; available: "
                     f"{', '.join([*names, *extra]) or 'none'}")


class Ensemble(NamedTuple):
    """M models stacked along a leading axis of every state leaf and key.

    ``data_axis``: 0 when every model has its own pools (each pool leaf stacked ``[M, ...]``,
    e.g. its own retain and forget sets); ``None`` when the models share the pools (e.g. one
    training set, each model restricted by its own ``include`` mask).

    ``chunk``: how many models one step vmaps together (``None``: all of them). The step runs
    the stack as ``lax.map(..., batch_size=chunk)``: ``chunk = M`` vmaps all of them,
    ``chunk = 1`` loops over them inside the one compiled step, between the two a loop over
    vmapped groups. Every choice computes the same numbers (up to float rounding). On this
    project's 2-core CPU none was clearly fastest (``bench/ensemble.py``, 32 digits ConvNet-2
    models: all vmapped 0.69× / 1.14× the sequential throughput at batch 64 / 16, one at a time
    1.10× / 1.00×, groups of 8 0.77× / 0.99×), so the default is the layout that suits
    accelerators: all vmapped.
    """

    size: int
    data_axis: int | None = None
    chunk: int | None = None

    def resolved_chunk(self) -> int:
        """The chunk this ensemble runs with: ``chunk``, or all ``size`` models."""
        return min(self.size, self.chunk or self.size)


def as_ensemble(models: int | Ensemble | None, data_axis: int | None) -> Ensemble | None:
    """``models`` (a count or an :class:`Ensemble`) as an ensemble with ``data_axis``."""
    if models is None:
        return None
    ens = models if isinstance(models, Ensemble) else Ensemble(int(models))
    if ens.size < 1 or (ens.chunk is not None and ens.chunk < 1):
        raise ValueError(f"an ensemble needs size >= 1 and chunk >= 1 (or None); got {ens}")
    return ens._replace(data_axis=data_axis)


def _phase_runner(step: Callable, stream: str, ensemble: Ensemble | None) -> Callable:
    def run(state, data, order, s, key):
        pool = stream_pool(data, stream)
        batch = gather_batch(pool, order[s])
        return step(state, batch, data, jax.random.fold_in(key, s))

    if ensemble is None:
        return jax.jit(lambda state, data, order, s, key, active: run(state, data, order, s, key),
                       donate_argnums=(0,))
    lifted = _vmap_models(run, (0, ensemble.data_axis, 0, None, 0), ensemble)

    def run_models(state, data, order, s, key, active_M):
        new, metrics = lifted(state, data, order, s, key)

        def keep(a, b):  # a model whose epoch is over keeps its state
            return jnp.where(active_M.reshape(-1, *(1,) * (jnp.ndim(a) - 1)), a, b)

        return jax.tree.map(keep, new, state), metrics

    return jax.jit(run_models, donate_argnums=(0,))


def _vmap_models(fn: Callable, in_axes: tuple, ensemble: Ensemble) -> Callable:
    """``fn`` mapped over a stack of models (``in_axes``: 0 or None per argument), traced in the
    stack's layout: ``ensemble.chunk`` models vmapped together, the models axis sharded over the
    devices (a model's batch is not split), convolutions in their GEMM form
    (:func:`jaxunlearn.conv.stacked_models`)."""
    chunk = ensemble.resolved_chunk()
    if chunk >= ensemble.size:
        mapped = jax.vmap(fn, in_axes=in_axes,
                          spmd_axis_name=sharding.models_axis_name(ensemble.size))
    else:
        def mapped(*args):
            stacked = [a for a, ax in zip(args, in_axes, strict=True) if ax is not None]

            def one(rows):
                it = iter(rows)
                return fn(*(a if ax is None else next(it)
                            for a, ax in zip(args, in_axes, strict=True)))

            return jax.lax.map(one, stacked, batch_size=None if chunk == 1 else chunk)

    @functools.wraps(fn)
    def traced(*args):
        with sharding.models_parallel(), stacked_models():
            return mapped(*args)

    return traced


def stacked_compiler_options() -> dict[str, Any] | None:
    """XLA options of the programs that run a stack of models (``None``: the defaults).

    On CPU, XLA hands dots, reductions and elementwise chains to YNNPACK fusions, which take
    their inputs materialised: under vmap that writes out every broadcast of a per-model
    parameter (instance norm's scale and shift over ``[M, n, h, w, c]``) before using it. Turning
    them off made a vmapped step of 8 small models faster (``docs/design_notes.md``).
    Single-model programs keep the defaults.
    """
    if jax.default_backend() != "cpu":
        return None
    return {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _order_fn(capacity: int, batch_size: int, axes: tuple | None) -> Callable:
    """Jitted ``(key, n, include) -> [steps, b]`` (:func:`epoch_order` of the valid, included
    rows), vmapped over models with ``in_axes=(0, *axes)`` when ``axes`` is given."""

    def order(key, n, include):
        valid = jnp.arange(capacity) < n
        if include is not None:
            valid = valid & include
        return epoch_order(key, valid, batch_size)

    if axes is not None:
        order = jax.vmap(order, in_axes=(0, *axes))
    return jax.jit(order)


class PhaseRunner:
    """Hands out compiled phase runners (cached process-wide) and sums the compile time spent.

    A method built once and run for several seeds (pools of the same bucketed capacity)
    compiles each of its steps once (:func:`jaxunlearn.timing.compile_ahead` with a cache key).

    With an :class:`Ensemble`, every operation below acts on M stacked models at once: this
    class is the one place where one model and a stack of models differ.
    """

    def __init__(self, ensemble: Ensemble | None = None) -> None:
        self.compile_s = 0.0
        self.ensemble = ensemble
        self.compiler_options = None if ensemble is None else stacked_compiler_options()

    # --- one model, or M models along a leading axis ---

    def lift(self, fn: Callable, in_axes: tuple) -> Callable:
        """``fn`` itself, or ``fn`` vmapped over the models (``"data"`` in ``in_axes`` stands for
        the ensemble's data axis)."""
        if self.ensemble is None:
            return fn
        axes = tuple(self.ensemble.data_axis if a == "data" else a for a in in_axes)
        return _vmap_models(fn, axes, self.ensemble)

    def fold_in(self, key: jax.Array, i: int) -> jax.Array:
        """``jax.random.fold_in`` of the key (of every model's key)."""
        return self.lift(lambda k: jax.random.fold_in(k, i), (0,))(key)

    def split(self, key: jax.Array, num: int) -> tuple[jax.Array, ...]:
        """``num`` keys split from the key (every model's key split alike)."""
        keys = self.lift(lambda k: jax.random.split(k, num), (0,))(key)
        return tuple(keys if self.ensemble is None else jnp.moveaxis(keys, 1, 0))

    def place(self, tree: Any) -> Any:
        """Put ``tree`` on the devices: replicated (one model), or with its leading models axis
        sharded over the devices (an ensemble)."""
        if self.ensemble is None:
            return sharding.replicate(tree)
        return sharding.shard_models(tree, self.ensemble.size)

    def order(self, key: jax.Array, pool: Pool, batch_size: int,
              include: jax.Array | None = None) -> jax.Array:
        """The epoch's batches of ``pool``'s valid (and ``include``-d) rows: ``[steps, b]``, or
        ``[M, steps, b]``."""
        cap = pool.y.shape[-1]
        axes = None
        if self.ensemble is not None:
            axes = (self.ensemble.data_axis, None if include is None or include.ndim == 1 else 0)
        return _order_fn(cap, batch_size, axes)(key, pool.n, include)

    def steps(self, pool: Pool, batch_size: int, include: jax.Array | None = None) -> np.ndarray:
        """Steps of an epoch of ``pool``: ``[]`` int, or ``[M]`` (0 for an empty set). One host
        read, outside the steps."""
        n_valid, include = sharding.to_host((pool.n, include))
        if include is None:
            n = n_valid
        else:
            n = np.sum(include & (np.arange(pool.y.shape[-1]) < n_valid[..., None]), axis=-1)
        if self.ensemble is not None:
            n = np.broadcast_to(n, (self.ensemble.size,))
        return -(-n // batch_size)

    def runner(self, phase: Phase, state, data, order, key):
        """The compiled ``run(state, data, order, s, key, active) -> (state, metrics)`` of
        ``phase`` (``active``: ``[M]`` bool, the models that take this step; ignored for one
        model)."""
        compiled, seconds = compile_ahead(
            _phase_runner(phase.step, phase.stream, self.ensemble), state, data, order,
            jnp.int32(0), key, self.active(np.ones((), bool)),
            cache_key=("phase", phase.step, phase.stream, self.ensemble),
            compiler_options=self.compiler_options)
        self.compile_s += seconds
        return compiled

    def active(self, active: np.ndarray) -> Any:
        """The ``active`` argument of a runner: which models take this step (``[M]`` bool on
        the devices; a constant True for one model)."""
        if self.ensemble is None:
            return np.bool_(True)
        return self.place(np.broadcast_to(active, (self.ensemble.size,)))

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
        A runner with an :class:`Ensemble` runs M models: ``state`` and ``key`` are stacked
        along a leading models axis, and so is ``data`` when the ensemble's ``data_axis`` is 0.
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
    state = runner.place(state)
    for epoch in range(epochs):
        key_e = runner.fold_in(key, epoch)
        if lr_schedule is not None:
            state = state._replace(opt_state=set_learning_rate(state.opt_state, lr_schedule(epoch)))
        if begin_epoch is not None:
            state = runner.lift(lambda st, d, k, e=epoch: begin_epoch(st, e, d, k),
                                (0, "data", 0))(state, data, runner.fold_in(key_e, 10_000))
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
            key_p = runner.fold_in(key_e, p)
            order = runner.order(key_p, pool, batch_size, include.get(phase.stream))
            run = runner.runner(phase, state, data, order, key_p)
            for s in range(int(steps.max())):
                active = runner.active(s < steps)
                state, metrics = run(state, data, order, jnp.int32(s), key_p, active)
                steps_done += 1
                if after_step is not None:
                    after_step(steps_done, state)
                for name, value in metrics.items():
                    tag = f"{phase.stream}/{name}"
                    if runner.ensemble is not None:  # a finished model's step is not one
                        value = jnp.where(active, value, 0.0)
                    sums[tag] = sums[tag] + value if tag in sums else value
                    counts[tag] = counts.get(tag, 0) + (s < steps)
        epoch_metrics: dict[str, Any] = {}
        for k, v in sharding.to_host(sums).items():
            mean = v / np.maximum(counts[k], 1)
            epoch_metrics[k] = float(mean) if runner.ensemble is None else mean.tolist()
        epoch_metrics["epoch"] = epoch
        if lr_schedule is not None:
            epoch_metrics["lr"] = lr_schedule(epoch)
        if end_epoch is not None:
            end_epoch(epoch, state, epoch_metrics)
        history.append(epoch_metrics)
        if bar is not None:
            bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in epoch_metrics.items()
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

    With ``models=M``, M models train at once in one vmapped step (:class:`Ensemble`):
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
        validation accuracy are returned (SPEC §2: chosen on validation data, never the test set;
        ties go to the latest such epoch).
        Without it the last epoch's parameters are returned. Not with ``models`` (every model
        trains ``epochs`` epochs).
      include: optional ``[cap]`` bool (``[M, cap]`` with ``models``): train on these valid
        rows of ``train`` only.
      models: train this many stacked models at once (``None``: one model), or an
        :class:`Ensemble` (to set its ``chunk``).
      progress: show a progress bar.

    Returns:
      :class:`FitOutput` with the selected parameters, their epoch and validation accuracy, and
      the per-epoch history.
    """
    if models is not None and val is not None:
        raise ValueError("fit(models=M) trains every model for the given epochs; selecting an "
                         "epoch on validation data (val) is for one model")
    runner = PhaseRunner(as_ensemble(models, data_axis=None))
    params = runner.place(jax.tree.map(jnp.copy, params))  # steps donate their state
    opt_state = runner.lift(optimizer.init, (0,))(params)
    state = TrainState(params, opt_state, (), runner.lift(lambda p: jnp.int32(0), (0,))(params))
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
        include=None if include is None else {"train": runner.place(jnp.asarray(include, bool))},
        progress=progress)
    if best["params"] is None:
        return FitOutput(state.params, epochs - 1, float("nan"), history)
    return FitOutput(best["params"], best["epoch"], best["acc"], history)
