"""Device placement: the only module that knows about devices (scale out at the jit boundary).

Data parallelism over a one-axis ``('data',)`` mesh of all devices: parameters, optimiser state and
the device-resident datasets are replicated, each batch is sharded along its leading axis inside
the jitted step (``constrain_batch``), and XLA inserts the gradient all-reduce. With one device
every function here is a no-op, so library code calls them unconditionally.

Many models at once (:mod:`jaxunlearn.ensemble`): a stack of M models is sharded along its
leading models axis over the same mesh axis (:func:`shard_models`; the vmapped steps name it with
``spmd_axis_name``, :func:`models_axis_name`), each device training M / devices whole models, and
a model's batch is then not split (:func:`models_parallel` turns :func:`constrain_batch` off
while such a step is traced).

Multi-host: call :func:`initialize_distributed` first on every host (wraps
``jax.distributed.initialize``); the mesh then spans all hosts' devices.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "constrain_batch",
    "data_mesh",
    "initialize_distributed",
    "models_axis_name",
    "models_parallel",
    "replicate",
    "shard_models",
]

# True while a step over a stack of models is traced: the models axis holds the mesh axis.
_MODELS_PARALLEL = contextvars.ContextVar("models_parallel", default=False)


@functools.cache
def data_mesh() -> jax.sharding.Mesh | None:
    """A ``('data',)`` mesh over every device, or None when there is only one device."""
    if jax.device_count() == 1:
        return None
    # A plain Mesh has "auto" axes on every jax version (jax.make_mesh defaults to explicit
    # axes in newer releases), which is what with_sharding_constraint inside jit expects.
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicate(tree: Any) -> Any:
    """Put a pytree on the devices: replicated over the data mesh, or on the default device."""
    mesh = data_mesh()
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def constrain_batch(batch: Any) -> Any:
    """Inside jit: shard every leaf of ``batch`` along its leading (example) axis.

    Leaves whose leading size is not divisible by the device count stay replicated (correct,
    only slower), so any batch size works.
    """
    mesh = data_mesh()
    if mesh is None or _MODELS_PARALLEL.get():
        return batch
    n_dev = mesh.devices.size

    def _constrain(leaf):
        if leaf.ndim == 0 or leaf.shape[0] % n_dev:
            return leaf
        return jax.lax.with_sharding_constraint(leaf, NamedSharding(mesh, PartitionSpec("data")))

    return jax.tree.map(_constrain, batch)


def models_axis_name(size: int) -> str | None:
    """The mesh axis a stack of ``size`` models is sharded over (``None``: not sharded, when
    there is one device or ``size`` is not divisible by the device count)."""
    mesh = data_mesh()
    if mesh is None or size % mesh.devices.size:
        return None
    return "data"


def shard_models(tree: Any, size: int) -> Any:
    """Put a pytree whose leaves have a leading models axis of ``size`` on the devices, that
    axis sharded over the mesh (replicated when :func:`models_axis_name` is ``None``)."""
    name = models_axis_name(size)
    if name is None:
        return replicate(tree)
    return jax.device_put(tree, NamedSharding(data_mesh(), PartitionSpec(name)))


@contextlib.contextmanager
def models_parallel() -> Iterator[None]:
    """While tracing a step over a stack of models: :func:`constrain_batch` does nothing (the
    models axis, not the batch, is split over the devices)."""
    token = _MODELS_PARALLEL.set(True)
    try:
        yield
    finally:
        _MODELS_PARALLEL.reset(token)


def initialize_distributed(**kwargs: Any) -> None:
    """Multi-host start-up: ``jax.distributed.initialize(**kwargs)`` then a fresh mesh."""
    jax.distributed.initialize(**kwargs)
    data_mesh.cache_clear()
