"""Many models at once: M models trained or unlearned in one ``vmap``-ped, jitted step.

Per-example membership audits (:mod:`jaxunlearn.audit`) need tens to hundreds of models of one
architecture, each trained on its own random subset of the data and then unlearned. Here they run
as one stack: every parameter leaf gains a leading models axis ``[M, ...]``, and the training
loop of :mod:`jaxunlearn.train` runs the vmapped step of any phase, so

- :func:`jaxunlearn.train.fit` with ``models=M`` trains M models on one shared, device-resident
  pool, model m on the rows of its own inclusion mask (:func:`random_halves`), with its own init
  key (:func:`init_models`) and shuffles (its own key);
- :func:`jaxunlearn.unlearn.run_method` with ``models=M`` runs any registered unlearning method
  over M models, each from its own parameters with its own pools (:func:`stack_unlearn_data`) and
  key (the method's own samples, e.g. A-AMU's forget/unseen draws, differ per model);
- with several devices, the models axis is sharded over them (:mod:`jaxunlearn.sharding`): each
  device trains M / devices whole models, with no communication inside a step.

Model m of a stack follows exactly the computation of model m run alone with the same key and
pools: a model whose epoch has fewer steps keeps its state while the others take theirs. The
results agree up to float rounding (under vmap the convolutions take their im2col form,
:func:`jaxunlearn.conv.stacked_models`, whose summation order differs): ``tests/test_ensemble.py``
checks training and unlearning against sequential runs.

Speed: ``bench/ensemble.py`` measures the throughput against the same models run one after
another. On a 2-core CPU the stack is *not* faster for these small ConvNets (0.7–1.2× at 8×8,
0.5–0.7× at 28×28; docs/reproduce.md §10.1): one model's step already keeps the cores busy,
and a stack's activations no longer fit in cache. ``train.Ensemble(M, chunk=k)`` vmaps k models
at a time (``chunk=1``: one after another inside the compiled step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import sharding
from jaxunlearn.conv import stacked_models
from jaxunlearn.train import Pool, bucket_size
from jaxunlearn.unlearn.base import UnlearnData

__all__ = [
    "init_models",
    "model_at",
    "predict_models",
    "random_halves",
    "stack_trees",
    "stack_unlearn_data",
]

Params = Any


def init_models(init_fn: Callable[[jax.Array], Params], keys_M: jax.Array) -> Params:
    """Fresh parameters of M models, one per key, stacked: every leaf ``[M, ...]``.

    Args:
      init_fn: ``init_fn(key) -> params`` (e.g. :func:`jaxunlearn.models.init_fn_for`).
      keys_M: ``[M]`` PRNG keys (``jax.random.split(key, M)``).
    """
    return jax.jit(jax.vmap(init_fn))(keys_M)


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


def _pad_pool(pool: Pool, capacity: int) -> Pool:
    extra = capacity - pool.y.shape[0]
    pad = [(0, extra)] + [(0, 0)] * (pool.x.ndim - 1)
    return Pool(jnp.pad(pool.x, pad), jnp.pad(pool.y, (0, extra)), jnp.asarray(pool.n))


def stack_unlearn_data(datas: Sequence[UnlearnData]) -> UnlearnData:
    """Stack the pools of M models (:class:`UnlearnData`) for ``run_method(..., models=M)``.

    Each stream is padded to the largest capacity among the models (rounded up to a bucket,
    :func:`jaxunlearn.train.bucket_size`), so a model's valid rows are unchanged.

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


@partial(jax.jit, static_argnums=(0,))
def _logits_chunk(apply_fn: Callable, params: Params, x: jax.Array) -> jax.Array:
    with stacked_models():
        return jax.vmap(apply_fn, in_axes=(0, None))(params, x)


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
    if n == 0:
        raise ValueError("predict_models needs at least one input")
    b = min(batch_size, n)
    out = []
    for i in range(0, n, b):
        chunk = x[i:i + b]
        if chunk.shape[0] < b:
            chunk = np.concatenate([chunk, np.zeros((b - chunk.shape[0], *x.shape[1:]),
                                                    np.float32)])
        out.append(sharding.to_host(_logits_chunk(apply_fn, params, chunk)))
    return np.concatenate(out, axis=1)[:, :n]
