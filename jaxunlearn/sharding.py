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

Several processes (JAX's multi-controller runtime: one process per host, or per GPU): every
process runs the same program. :func:`initialize_distributed`, called first in every process,
starts the runtime; the mesh then spans every process's devices. Host data placed with
:func:`replicate` / :func:`shard_models` becomes one global array (each process supplies the
same host values: :func:`jax.make_array_from_callback`), the jitted steps run as one SPMD
program over all devices, and :func:`to_host` reads a result back whole on every process
(gathering the shards other processes hold). ``JAXUNLEARN_CHECK_REPLICAS=1`` makes every
placement check that all processes supplied the same values (a debugging aid: one small
collective per array placed). :func:`is_primary` says which process writes files,
:func:`agree` hands every process the primary's answer to a question about the filesystem, and
:func:`barrier` waits for every process. With one process all of these are plain local
operations.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "agree",
    "barrier",
    "constrain_batch",
    "data_mesh",
    "initialize_distributed",
    "is_primary",
    "models_axis_name",
    "models_parallel",
    "put",
    "replicate",
    "shard_models",
    "to_host",
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


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """``tree`` placed with ``sharding``: ``jax.device_put`` within one process; across
    processes, every leaf that is not yet a global array is built from this process's host copy
    (each process holds the same values) with :func:`jax.make_array_from_callback`."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put_leaf(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)  # a global array: resharded if need be
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype,
                                                                 jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put_leaf(jax.random.key_data(leaf)),
                                            impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        if os.environ.get("JAXUNLEARN_CHECK_REPLICAS") == "1":
            _check_same_everywhere(host)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put_leaf, tree)


def _check_same_everywhere(host: np.ndarray) -> None:
    """Raise unless every process holds the same ``host`` values (its shape, dtype and bytes'
    CRC-32 are compared across processes: one small collective)."""
    digest = np.asarray([zlib.crc32(np.ascontiguousarray(host).tobytes()),
                         zlib.crc32(repr((host.shape, host.dtype.str)).encode())], np.uint32)
    every = np.asarray(multihost_utils.process_allgather(digest))
    if not (every == every[:1]).all():
        raise RuntimeError(
            f"processes hold different values for an array of shape {host.shape} placed on the "
            "mesh (each must supply the same host data): a result that depends on each "
            "process's own timing or randomness was used as data")


def replicate(tree: Any) -> Any:
    """Put a pytree on the devices: replicated over the data mesh, or on the default device."""
    if data_mesh() is None:
        return jax.device_put(tree)
    return put(tree, NamedSharding(data_mesh(), PartitionSpec()))


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
    return put(tree, NamedSharding(data_mesh(), PartitionSpec(name)))


@contextlib.contextmanager
def models_parallel() -> Iterator[None]:
    """While tracing a step over a stack of models: :func:`constrain_batch` does nothing (the
    models axis, not the batch, is split over the devices)."""
    token = _MODELS_PARALLEL.set(True)
    try:
        yield
    finally:
        _MODELS_PARALLEL.reset(token)


def to_host(tree: Any) -> Any:
    """Every leaf of ``tree`` as a host numpy array, whole.

    A leaf sharded over other processes' devices (e.g. a stack of models split over every
    process) is gathered from them: with several processes every process must make this call
    (it is a collective), as with any other step of the program.
    """

    def get(leaf):
        if (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
                and not leaf.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree.map(get, tree)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           **kwargs: Any) -> None:
    """Join the multi-controller runtime: call first, in every process, before any JAX work.

    Wraps ``jax.distributed.initialize``: give the coordinator's ``host:port``, the number of
    processes and this process's id, or none of them on a cluster JAX detects (SLURM, Open MPI,
    Kubernetes...; ``JAX_COORDINATOR_ADDRESS`` is read too). CPU processes exchange collectives
    over gloo (TCP). Afterwards :func:`data_mesh` spans every process's devices.

    Raises:
      ValueError: ``process_id`` outside ``[0, num_processes)``, or only some of the three given.
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("give --coordinator, --num_processes and --process_id together (or "
                         "none of them, on a cluster JAX detects); got coordinator="
                         f"{coordinator_address!r}, num_processes={num_processes!r}, "
                         f"process_id={process_id!r}")
    if all(given) and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}); got {process_id}")
    try:  # gloo is the default from jax 0.4.3x on; older releases had no CPU collectives
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):
        pass
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    data_mesh.cache_clear()


def is_primary() -> bool:
    """Whether this is process 0, the one that writes files and prints (True with one process)."""
    return jax.process_index() == 0


def agree(fn: Callable[[], Any]) -> Any:
    """``fn()`` as process 0 computes it, on every process (``fn()`` itself with one process).

    For the questions whose answer decides which programs run next ("is this checkpoint
    there?", "which records are done?"): if processes answered differently, they would launch
    different collectives and wait for each other forever. ``fn`` runs on process 0 only and
    its result, a JSON value, is broadcast. A ``ValueError``, ``FileNotFoundError`` or
    ``OSError`` it raises is raised on every process.
    """
    if jax.process_count() == 1:
        return fn()
    payload = b""
    if is_primary():
        try:
            payload = json.dumps({"value": fn()}).encode()
        except (ValueError, OSError) as e:  # FileNotFoundError is an OSError
            payload = json.dumps({"error": type(e).__name__, "message": str(e)}).encode()
    size = int(multihost_utils.broadcast_one_to_all(np.int64(len(payload))))
    buf = np.zeros(size, np.uint8)
    if is_primary():
        buf[:] = np.frombuffer(payload, np.uint8)
    out = json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buf)).tobytes())
    if "error" in out:
        kind = {"FileNotFoundError": FileNotFoundError, "ValueError": ValueError}.get(
            out["error"], OSError)
        raise kind(out["message"])
    return out["value"]


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing with one process); ``name`` must match."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
