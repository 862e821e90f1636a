"""Training machinery shared by original-model training and every unlearning method.

- :class:`Pool`: a device-resident dataset padded to a static capacity, with its valid count
  ``n``. Padding rows never contribute: every batch carries a weight mask ``w``.
- Per-epoch shuffles and batches are drawn *inside* jitted code from the pool (no host copies of
  data per step); batches have a fixed size, the last one of an epoch is padded with ``w = 0``, so a
  step compiles once per (batch size, pool capacity) and not once per seed or set size.
- Optimisers take their learning rate through ``optax.inject_hyperparams`` so schedules are
  stepped per epoch (as in the paper's reference) without recompiling.
- :func:`run_phases`: the epoch loop. A *phase* is a pure step function applied to every batch of
  one stream (a named pool) in one epoch; a method's epoch is a sequence of phases (e.g. SCRUB's
  forget pass then retain pass).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import sharding

__all__ = [
    "Batch",
    "Phase",
    "Pool",
    "TrainState",
    "adam",
    "apply_gradients",
    "ce_step",
    "fit",
    "FitOutput",
    "weighted_accuracy",
    "bucket_size",
    "compile_cached",
    "cosine_with_warmup",
    "epoch_order",
    "gather_batch",
    "get_learning_rate",
    "make_pool",
    "run_phases",
    "set_learning_rate",
    "sgd",
]

Params = Any


class Pool(NamedTuple):
    """A dataset on device padded to a static capacity. Rows ``>= n`` are padding (zeros)."""

    x: jax.Array  # [cap, h, w, c]
    y: jax.Array  # [cap] int32
    n: jax.Array  # [] int32, the number of valid rows


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


def epoch_order(key: jax.Array, n: jax.Array, capacity: int, batch_size: int) -> jax.Array:
    """A random order of the ``n`` valid rows, padded to whole batches: ``[steps_max, b]``.

    Valid rows come first in random order; slots past ``n`` hold ``-1`` (padding).
    """
    u = jax.random.uniform(key, (capacity,))
    valid = jnp.arange(capacity) < n
    order = jnp.argsort(jnp.where(valid, u, 2.0))
    order = jnp.where(jnp.arange(capacity) < n, order, -1)
    steps = _steps_per_epoch(capacity, batch_size)
    order = jnp.pad(order, (0, steps * batch_size - capacity), constant_values=-1)
    return order.reshape(steps, batch_size).astype(jnp.int32)


_epoch_order_jit = jax.jit(epoch_order, static_argnums=(2, 3))


def gather_batch(pool: Pool, idx_B: jax.Array) -> Batch:
    """Rows ``idx`` of ``pool`` (``-1`` = padding, weight 0), sharded over the data mesh."""
    safe = jnp.maximum(idx_B, 0)
    batch = Batch(pool.x[safe], pool.y[safe], (idx_B >= 0).astype(jnp.float32))
    return sharding.constrain_batch(batch)


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


def _phase_runner(step: Callable, stream: str) -> Callable:
    def run(state, data, order, s, key):
        pool = _stream_pool(data, stream)
        batch = gather_batch(pool, order[s])
        return step(state, batch, data, jax.random.fold_in(key, s))

    return jax.jit(run, donate_argnums=(0,))


def _stream_pool(data: Any, stream: str) -> Pool:
    if isinstance(data, Mapping) and stream in data:
        return data[stream]
    if hasattr(data, stream):
        return getattr(data, stream)
    extra = getattr(data, "extra", None) or {}
    if stream in extra:
        return extra[stream]
    raise ValueError(f"unknown data stream {stream!r}")


# Compiled executables, shared by every run in the process: a method built once and run for
# several seeds (pools of the same bucketed capacity) compiles once.
_COMPILED: dict[tuple, tuple[Any, Any]] = {}


def _signature(*args: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return (treedef, tuple((jnp.shape(x), jnp.result_type(x), getattr(x, "sharding", None))
                           for x in leaves))


def compile_cached(fn_key: Any, fn: Callable, jitted: Callable, *args: Any) -> tuple[Any, float]:
    """AOT-compile ``jitted`` for ``args`` once per (``fn_key``, argument signature).

    Returns the executable and the seconds spent compiling now (0 on a cache hit). ``fn`` is
    kept alive in the cache so ``id``-based keys stay unique.
    """
    key = (fn_key, _signature(*args))
    if key in _COMPILED:
        return _COMPILED[key][1], 0.0
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    _COMPILED[key] = (fn, compiled)
    return compiled, time.perf_counter() - t0


class PhaseRunner:
    """Hands out compiled phase runners (cached process-wide) and sums the compile time spent."""

    def __init__(self) -> None:
        self.compile_s = 0.0

    def runner(self, phase: Phase, state, data, order, key):
        compiled, seconds = compile_cached(
            ("phase", id(phase.step), phase.stream), phase.step,
            _phase_runner(phase.step, phase.stream), state, data, order, jnp.int32(0), key)
        self.compile_s += seconds
        return compiled


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
    for epoch in range(epochs):
        key_e = jax.random.fold_in(key, epoch)
        if lr_schedule is not None:
            state = state._replace(opt_state=set_learning_rate(state.opt_state, lr_schedule(epoch)))
        if begin_epoch is not None:
            state = begin_epoch(state, epoch, data, jax.random.fold_in(key_e, 10_000))
        sums: dict[str, jax.Array] = {}
        counts: dict[str, int] = {}
        for p, phase in enumerate(phases(epoch)):
            pool = _stream_pool(data, phase.stream)
            if phase.stream not in n_cache:  # one host read per stream per run, outside the steps
                n_cache[phase.stream] = int(pool.n)
            n = n_cache[phase.stream]
            if n == 0:
                continue
            key_p = jax.random.fold_in(key_e, p)
            order = _epoch_order_jit(key_p, pool.n, pool.y.shape[0], batch_size)
            run = runner.runner(phase, state, data, order, key_p)
            for s in range(_steps_per_epoch(n, batch_size)):
                state, metrics = run(state, data, order, jnp.int32(s), key_p)
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


def apply_gradients(state: TrainState, grads: Params,
                    optimizer: optax.GradientTransformation) -> TrainState:
    """One optimiser update of ``state.params`` with ``grads``; increments the step counter."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return state._replace(params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state, step=state.step + 1)


def weighted_accuracy(logits: jax.Array, batch: Batch) -> jax.Array:
    """Fraction of the batch's real examples classified correctly."""
    hits = (jnp.argmax(logits, -1) == batch.y).astype(jnp.float32)
    return jnp.sum(hits * batch.w) / jnp.maximum(jnp.sum(batch.w), 1.0)


def ce_step(apply_fn: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """A phase step minimising the weighted mean cross-entropy of the batch."""

    def step(state: TrainState, batch: Batch, data: Any, key: jax.Array):
        del data, key

        def loss_fn(params):
            logits = apply_fn(params, batch.x)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y)
            return jnp.sum(ce * batch.w) / jnp.maximum(jnp.sum(batch.w), 1.0), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return apply_gradients(state, grads, optimizer), {
            "loss": loss, "acc": weighted_accuracy(logits, batch)}

    return step


class FitOutput(NamedTuple):
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
