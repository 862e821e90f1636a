"""Many models at once: M models trained or unlearned in one ``vmap``-ped, jitted step.

Per-example membership audits (:mod:`jaxunlearn.audit`) need tens to hundreds of models of one
architecture, each trained on its own random subset of the data and then unlearned. Here they run
as one stack: every parameter leaf gains a leading models axis ``[M, ...]``, and the training
loop of :mod:`jaxunlearn.train` runs the vmapped step of any phase (through :class:`ModelsAxis`,
the one place where one model and a stack differ), so

- :func:`jaxunlearn.train.fit` with ``models=M`` trains M models on one shared, device-resident
  pool, model m on the rows of its own inclusion mask (:func:`random_halves`), with its own init
  key (:func:`init_models`) and shuffles (its own key);
- :func:`jaxunlearn.unlearn.run_method` with ``models=M`` runs any registered unlearning method
  over M models, each from its own parameters with its own pools
  (:func:`jaxunlearn.unlearn.stack_unlearn_data`) and key (the method's own samples, e.g.
  A-AMU's forget/unseen draws, differ per model);
- with several devices, the models axis is sharded over them (:mod:`jaxunlearn.sharding`): each
  device trains M / devices whole models, with no communication inside a step.

Every map over the models goes through :func:`vmap_models` (the steps, the shuffles, the
initialisation and :func:`predict_models`).

Model m of a stack follows exactly the computation of model m run alone with the same key and
pools: a model whose epoch has fewer steps keeps its state while the others take theirs. The
results agree up to float rounding (under vmap the convolutions take their im2col form,
:func:`jaxunlearn.conv.stacked_models`, whose summation order differs): ``tests/test_ensemble.py``
checks training and unlearning against sequential runs.

Speed: ``bench/ensemble.py`` measures a stack's throughput against the same models run one after
another (this project's measurements: ``docs/reproduce.md`` §10.1). ``Ensemble(M, chunk=k)``
vmaps k models at a time (``chunk=1``: one after another inside the compiled step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import sharding
from jaxunlearn.conv import stacked_models

__all__ = [
    "Ensemble",
    "ModelsAxis",
    "as_ensemble",
    "init_models",
    "model_at",
    "predict_models",
    "random_halves",
    "stack_trees",
    "stacked_compiler_options",
    "vmap_models",
]

Params = Any


class Ensemble(NamedTuple):
    """M models stacked along a leading axis of every state leaf and key.

    ``chunk``: how many models one step vmaps together (``None``: all of them). The step runs
    the stack as ``lax.map(..., batch_size=chunk)``: ``chunk = M`` vmaps all of them,
    ``chunk = 1`` loops over them inside the one compiled step, between the two a loop over
    vmapped groups. Every choice computes the same numbers (up to float rounding); none was
    clearly fastest on a 2-core CPU (``docs/design_notes.md``), so the default is the layout
    that suits accelerators: all vmapped.
    """

    size: int
    chunk: int | None = None

    def resolved_chunk(self) -> int:
        """The chunk this ensemble runs with: ``chunk``, or all ``size`` models."""
        return min(self.size, self.chunk or self.size)


def as_ensemble(models: int | Ensemble | None) -> Ensemble | None:
    """``models`` (a count or an :class:`Ensemble`) as an ensemble; ``None`` stays ``None``.

    Raises:
      ValueError: size < 1 or chunk < 1.
    """
    if models is None:
        return None
    ens = models if isinstance(models, Ensemble) else Ensemble(int(models))
    if ens.size < 1 or (ens.chunk is not None and ens.chunk < 1):
        raise ValueError(f"an ensemble needs size >= 1 and chunk >= 1 (or None); got {ens}")
    return ens


def vmap_models(fn: Callable, in_axes: tuple, ensemble: Ensemble) -> Callable:
    """``fn`` mapped over a stack of models: the one way this package vmaps over models.

    ``in_axes`` holds 0 (stacked along the models axis) or ``None`` (shared) per positional
    argument. The result is traced in the stack's layout: ``ensemble.chunk`` models vmapped
    together (``lax.map`` over the groups), the models axis sharded over the devices (a model's
    batch is not split), convolutions in their GEMM form (:func:`jaxunlearn.conv.stacked_models`).
    """
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


class ModelsAxis:
    """One model, or M models stacked along a leading axis: every operation where they differ.

    The training loop (:class:`jaxunlearn.train.PhaseRunner`) and the unlearning runner
    (:func:`jaxunlearn.unlearn.run_method`) go through this class for keys, placement, vmapping
    and per-model step counts, so they read the same for one model as for a stack.

    Args:
      models: ``None`` (one model), a count M, or an :class:`Ensemble`.
      data_axis: for a stack, 0 when every model has its own pools (each pool leaf stacked
        ``[M, ...]``), ``None`` when the models share them (each restricted by its own
        ``include`` mask). ``"data"`` in the ``in_axes`` of :meth:`lift` stands for it.
    """

    def __init__(self, models: int | Ensemble | None = None, data_axis: int | None = None) -> None:
        self.ensemble = as_ensemble(models)
        self.data_axis = None if self.ensemble is None else data_axis
        self.compiler_options = None if self.ensemble is None else stacked_compiler_options()

    @property
    def size(self) -> int | None:
        """M, or ``None`` for one model."""
        return None if self.ensemble is None else self.ensemble.size

    @property
    def cache_key(self) -> tuple:
        """What a compiled program of this axis depends on (for compile caches)."""
        return (self.ensemble, self.data_axis)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelsAxis) and self.cache_key == other.cache_key

    def __hash__(self) -> int:
        return hash(self.cache_key)

    def lift(self, fn: Callable, in_axes: tuple) -> Callable:
        """``fn`` itself, or ``fn`` vmapped over the models (:func:`vmap_models`; ``"data"`` in
        ``in_axes`` stands for :attr:`data_axis`)."""
        if self.ensemble is None:
            return fn
        axes = tuple(self.data_axis if a == "data" else a for a in in_axes)
        return vmap_models(fn, axes, self.ensemble)

    def lift_step(self, step: Callable, in_axes: tuple) -> Callable:
        """A step ``step(state, *args) -> (state, metrics)`` as ``(state, *args, active) ->
        (state, metrics)``: for a stack, vmapped over the models (``in_axes`` as in :meth:`lift`,
        the state's first), and a model whose ``active`` entry is False keeps its state (its epoch
        is over); ``active`` is ignored for one model."""
        if self.ensemble is None:
            return lambda state, *args: step(state, *args[:-1])
        lifted = self.lift(step, in_axes)

        def run(state, *args):
            *args, active_M = args
            new, metrics = lifted(state, *args)

            def keep(a, b):
                return jnp.where(active_M.reshape(-1, *(1,) * (jnp.ndim(a) - 1)), a, b)

            return jax.tree.map(keep, new, state), metrics

        return run

    def fold_in(self, key: jax.Array, i: int) -> jax.Array:
        """``jax.random.fold_in`` of the key (of every model's key)."""
        return self.lift(lambda k: jax.random.fold_in(k, i), (0,))(key)

    def split(self, key: jax.Array, num: int) -> tuple[jax.Array, ...]:
        """``num`` keys split from the key (every model's key split alike)."""
        keys = self.lift(lambda k: jax.random.split(k, num), (0,))(key)
        return tuple(keys if self.ensemble is None else jnp.moveaxis(keys, 1, 0))

    def place(self, tree: Any) -> Any:
        """Put ``tree`` on the devices: replicated (one model), or with its leading models axis
        sharded over the devices (a stack)."""
        if self.ensemble is None:
            return sharding.replicate(tree)
        return sharding.shard_models(tree, self.ensemble.size)

    def per_model(self, value: np.ndarray) -> np.ndarray:
        """A host value broadcast to ``[M]`` (unchanged for one model)."""
        return value if self.ensemble is None else np.broadcast_to(value, (self.ensemble.size,))

    def active(self, active: np.ndarray) -> Any:
        """The ``active`` argument of a step from :meth:`lift_step`: which models take this step
        (``[M]`` bool on the devices; a constant True for one model)."""
        if self.ensemble is None:
            return np.bool_(True)
        return self.place(self.per_model(active))


def init_models(init_fn: Callable[[jax.Array], Params], keys_M: jax.Array) -> Params:
    """Fresh parameters of M models, one per key, stacked: every leaf ``[M, ...]``.

    Args:
      init_fn: ``init_fn(key) -> params`` (e.g. :func:`jaxunlearn.models.init_fn_for`).
      keys_M: ``[M]`` PRNG keys (``jax.random.split(key, M)``).
    """
    return jax.jit(vmap_models(init_fn, (0,), Ensemble(int(keys_M.shape[0]))))(keys_M)


def stack_trees(trees: Sequence[Any]) -> Any:
    """Stack pytrees of identical structure and shapes along a new leading axis."""
    if not trees:
        raise ValueError("nothing to stack: got an empty sequence of pytrees")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def model_at(tree: Any, m: int) -> Any:
    """Model ``m``'s slice of a stacked pytree (parameters, states, stacked pools)."""
    return jax.tree.map(lambda leaf: leaf[m], tree)


def random_halves(key: jax.Array, n: int, models: int) -> np.ndarray:
    """Inclusion masks of M models: each model includes a uniformly random half of n examples.

    Args:
      key: PRNG key.
      n: number of examples.
      models: M.

    Returns:
      ``[M, n]`` bool; every row has exactly ``n // 2`` True entries, drawn independently per
      model (so each example is in about half of the models).
    """
    if n < 2 or models < 1:
        raise ValueError(f"expected n >= 2 examples and models >= 1; got n={n}, models={models}")
    u = jax.random.uniform(key, (models, n))
    ranks = np.argsort(np.argsort(np.asarray(u), axis=1), axis=1)
    return ranks < n // 2


@functools.cache
def _logits_fn(apply_fn: Callable, models: int) -> Callable:
    return jax.jit(vmap_models(apply_fn, (0, None), Ensemble(models)))


def predict_models(apply_fn: Callable, params: Params, x: Any, batch_size: int = 512) -> np.ndarray:
    """Logits of every model of a stack on the same inputs: ``[M, n, C]`` (host float32).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits`` of one model.
      params: stacked parameters (every leaf ``[M, ...]``).
      x: inputs ``[n, ...]``, evaluated in chunks of ``batch_size`` (the last chunk is padded,
        so one compiled program serves every chunk).
    """
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    models = int(jax.tree.leaves(params)[0].shape[0])
    if n == 0:
        raise ValueError("predict_models needs at least one input")
    b = min(batch_size, n)
    out = []
    for i in range(0, n, b):
        chunk = x[i:i + b]
        if chunk.shape[0] < b:
            chunk = np.concatenate([chunk, np.zeros((b - chunk.shape[0], *x.shape[1:]),
                                                    np.float32)])
        out.append(sharding.to_host(_logits_fn(apply_fn, models)(params, chunk)))
    return np.concatenate(out, axis=1)[:, :n]
