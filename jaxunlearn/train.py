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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import sharding
from jaxunlearn.losses import cross_entropy, weighted_mean
from jaxunlearn.timing import compile_ahead

__all__ = [
    "Batch",
    "FitOutput",
    "Phase",
    "PhaseRunner",
    "Pool",
    "TrainState",
    "adam",
    "apply_gradients",
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


@partial(jax.jit, static_argnums=(2, 3))
def _pool_order(key: jax.Array, n: jax.Array, capacity: int, batch_size: int) -> jax.Array:
    """:func:`epoch_order` of a pool of ``n`` valid rows, from its count (one host-free call)."""
    return epoch_order(key, jnp.arange(capacity) < n, batch_size)


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
    new = jnp.asarray(lr, jnp.asarray(old).dtype)
    if isinstance(old, jax.Array):
        # keep the placement (e.g. replicated over the data mesh) so compiled steps still match
        new = jax.device_put(new, old.sharding)
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


def _phase_runner(step: Callable, stream: str) -> Callable:
    def run(state, data, order, s, key):
        pool = stream_pool(data, stream)
        batch = gather_batch(pool, order[s])
        return step(state, batch, data, jax.random.fold_in(key, s))

    return jax.jit(run, donate_argnums=(0,))


class PhaseRunner:
    """Hands out compiled phase runners (cached process-wide) and sums the compile time spent.

    A method built once and run for several seeds (pools of the same bucketed capacity)
    compiles each of its steps once (:func:`jaxunlearn.timing.compile_ahead` with a cache key).
    """

    def __init__(self) -> None:
        self.compile_s = 0.0

    def runner(self, phase: Phase, state, data, order, key):
        """The compiled ``run(state, data, order, s, key) -> (state, metrics)`` of ``phase``."""
        compiled, seconds = compile_ahead(
            _phase_runner(phase.step, phase.stream), state, data, order, jnp.int32(0), key,
            cache_key=("phase", phase.step, phase.stream))
        self.compile_s += seconds
        return compiled

    def compile_all(self, state: TrainState, data: Any, key: jax.Array, *, epochs: int,
                    phases: Callable[[int], Sequence[Phase]], batch_size: int) -> None:
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
                order = _pool_order(key, pool.n, pool.y.shape[0], batch_size)
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
      progress: show a tqdm bar over steps (a string sets its description).

    Returns:
      The final state and per-epoch metrics (mean of each step metric, read once per epoch).
    """
    runner = runner or PhaseRunner()
    history: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=progress if isinstance(progress, str) else "train",
                   unit="epoch", leave=False, dynamic_ncols=True)
    n_cache: dict[str, int] = {}
    steps_done = 0
    for epoch in range(epochs):
        key_e = jax.random.fold_in(key, epoch)
        if lr_schedule is not None:
            state = state._replace(opt_state=set_learning_rate(state.opt_state, lr_schedule(epoch)))
        if begin_epoch is not None:
            state = begin_epoch(state, epoch, data, jax.random.fold_in(key_e, 10_000))
        sums: dict[str, jax.Array] = {}
        counts: dict[str, int] = {}
        for p, phase in enumerate(phases(epoch)):
            pool = stream_pool(data, phase.stream)
            if phase.stream not in n_cache:  # one host read per stream per run, outside the steps
                n_cache[phase.stream] = int(pool.n)
            n = n_cache[phase.stream]
            if n == 0:
                continue
            key_p = jax.random.fold_in(key_e, p)
            order = _pool_order(key_p, pool.n, pool.y.shape[0], batch_size)
            run = runner.runner(phase, state, data, order, key_p)
            for s in range(_steps_per_epoch(n, batch_size)):
                state, metrics = run(state, data, order, jnp.int32(s), key_p)
                steps_done += 1
                if after_step is not None:
                    after_step(steps_done, state)
                for name, value in metrics.items():
                    tag = f"{phase.stream}/{name}"
                    sums[tag] = sums[tag] + value if tag in sums else value
                    counts[tag] = counts.get(tag, 0) + 1
        epoch_metrics = {k: float(v) / counts[k] for k, v in sums.items()}
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
    progress: bool | str = False,
) -> FitOutput:
    """Train ``params`` with cross-entropy on ``train``; keep the epoch best on ``val``.

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
        Without it the last epoch's parameters are returned.
      progress: show a progress bar.

    Returns:
      :class:`FitOutput` with the selected parameters, their epoch and validation accuracy, and
      the per-epoch history.
    """
    from jaxunlearn.metrics import accuracy

    params = jax.tree.map(jnp.copy, params)  # the steps donate their state, not the caller's
    state = TrainState(params, optimizer.init(params), (), jnp.int32(0))
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
        batch_size=batch_size, lr_schedule=lr_schedule, end_epoch=end_epoch, progress=progress)
    if best["params"] is None:
        return FitOutput(state.params, epochs - 1, float("nan"), history)
    return FitOutput(best["params"], best["epoch"], best["acc"], history)
