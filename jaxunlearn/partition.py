"""Sub-class partition of the training set for Blend (method.md §3.1): random features + k-means.

Every training image is embedded by a randomly initialised, never trained network ψ (its own
PRNG key); then, for each class, k-means with ``ipc`` clusters runs on that class's embeddings.
The output is one cluster id per training example, ``c * ipc + j`` for cluster ``j`` of class
``c``, so clusters are class-pure by construction.

The k-means has two procedures, chosen by ``procedure`` (with ``init``, ``tol_mode`` and
``empty`` to change one rule of the bundle):

- ``"reference"`` (default): the reference implementation's ``kmeans_pytorch``
  (DC_Unlearning ``utils/dataset_sampler.py``, a hand-written torch k-means, not
  scikit-learn), run per class on the flattened ``embed`` features of an untrained network with
  its defaults ``num_iterations=100``, ``tol=1e-4``:

  * ``init="kmeans++"``: plain k-means++, one candidate per seed: the first seed uniform over
    the class, each next one drawn with probability ∝ D², the squared distance to the nearest
    seed so far (a point already chosen, or its exact duplicate, has probability 0);
  * ``tol_mode="shift_sum"``: Lloyd steps (assign each point to the nearest centre, first index
    on ties; centres become their members' means) until ``Σ_k ‖c_k' − c_k‖₂ < tol`` (Euclidean
    shifts summed over clusters, absolute, strict) or ``max_iterations``; the labels are those
    of the last assignment step (the ones the final centres are the means of);
  * ``empty="random"``: a cluster left empty by an assignment step is re-seeded at a point drawn
    uniformly from the class (independently per empty cluster, possibly one already used).

  One deviation, where the reference would stop with an error: when every point of a class
  already coincides with a seed (fewer distinct points than ``ipc``), the next seed is drawn
  uniformly instead of from an all-zero D² distribution.
- ``"sklearn"``: scikit-learn's ``KMeans`` rules, this module's former default:
  ``init="greedy_kmeans++"`` (each seed the best, by resulting potential Σ min D², of
  ``2 + ⌊ln ipc⌋`` D² candidates: 8 distance columns per seed at ipc 1000 instead of 1, though
  the seeding time grows less, each seed being one pass over the class's features either way);
  ``tol_mode="sklearn"`` (stop when no label changes or ``Σ_k ‖c_k' − c_k‖² ≤ tol ×`` the
  class's mean per-feature variance; labels re-assigned at the final centres);
  ``empty="farthest"`` (empty clusters move to distinct valid points farthest from their
  centres).

``procedure="sklearn"`` with the same key reproduces this module's partitions from before the
procedures existed (their inertia and time: ``docs/design_notes.md``).

Both run in one jitted call for all classes: classes are padded to one size
(:func:`class_index_table`) with a validity mask, and padded rows are never seeds, members or
re-seed points; a cluster still empty at the end is reported (size 0), nothing downstream
divides by its size. Squared distances are ``‖x‖² − 2 x·c + ‖c‖²`` (one ``[n, d] × [d, k]``
matmul per Lloyd step, which dominates the cost; every such product, seeding included, at
float32 precision, ``Precision.HIGHEST``, not the TF32 that JAX uses by default on A100/H100:
``docs/design_notes.md``), centres by ``segment_sum`` with the mask as weights, the Lloyd loop
a ``lax.while_loop``. Classes are processed by ``lax.map`` with
``batch_size=class_batch_size`` (``None``: one class at a time, each stopping at its own
convergence, the fastest on CPU; a larger value ``vmap``\\s that many classes together, which
helps on accelerators, but every class in a batch then runs until the slowest converges).

``backend="ott"`` runs ``ott.tools.k_means`` (ott-jax 0.6) on the same padded classes, with this
module's seeding passed as its ``init`` (so padding is excluded there too). ott's Lloyd loop
cannot express either procedure's stopping rule or empty-cluster rule (it stops when no label
changes or the squared centre shift ``Σ_k ‖Δc_k‖² ≤ tol``, absolute, and refills empty clusters
with far points regardless of weights): it stays an option, e.g. to cross-check, honouring
``init`` only. Padded rows become weight-0 copies of the class's real rows there (see
:func:`_kmeans_one_ott`).

Measurements (time, inertia against scikit-learn and ott-jax): ``docs/design_notes.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.checks import check_choice, check_finite, check_images, check_ipc, check_labels
from jaxunlearn.losses import weighted_mean
from jaxunlearn.models import batched_features
from jaxunlearn.timing import timed

__all__ = [
    "KMEANS_BACKENDS",
    "KMEANS_EMPTY",
    "KMEANS_INITS",
    "KMEANS_PROCEDURES",
    "KMEANS_TOL_MODES",
    "KMeansOptions",
    "PartitionOutput",
    "class_index_table",
    "embed",
    "embed_jitted",
    "kmeans_by_class",
    "partition_by_class",
    "resolve_kmeans_procedure",
]

Params = Any
ApplyFn = Callable[..., jax.Array]


# ----------------------------------------------------------------------------------------------
# Embedding
# ----------------------------------------------------------------------------------------------


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")


@partial(jax.jit, static_argnames=("apply_fn", "batch_size", "method"))
def embed_jitted(
    params: Params, x_NxHxWxC: jax.Array, *, apply_fn: ApplyFn, batch_size: int, method: str | None
) -> jax.Array:
    """The jitted core of :func:`embed`, ``[n, h, w, c] -> [n, d]`` (for timing it apart)."""
    return batched_features(apply_fn, params, x_NxHxWxC, batch_size, method)


def embed(
    apply_fn: ApplyFn,
    params: Params,
    x_NxHxWxC: jax.Array,
    batch_size: int = 1024,
    *,
    method: str | None = "features",
) -> jax.Array:
    """Embeddings of images by a (typically untrained) network, in batches (docs/method.md §3.1).

    Args:
      apply_fn: ``apply_fn(params, x, method=method) -> [b, d]``.
      params: the network's variables (e.g. a random init from the partition's own key).
      x_NxHxWxC: images ``[n, h, w, c]``.
      batch_size: images per forward pass (bounds activation memory).
      method: the ``method`` passed to ``apply_fn`` (``None`` calls ``apply_fn(params, x)``).

    Returns:
      Features ``[n, d]`` float32.
    """
    check_images(x_NxHxWxC)
    _check_batch_size(batch_size)
    return embed_jitted(
        params, jnp.asarray(x_NxHxWxC), apply_fn=apply_fn, batch_size=int(batch_size),
        method=method,
    )


# ----------------------------------------------------------------------------------------------
# k-means
# ----------------------------------------------------------------------------------------------


class PartitionOutput(NamedTuple):
    """Cluster assignment of a training set (docs/method.md §3.1).

    Attributes:
      cluster_ids: ``[n]`` int32, global cluster id ``c * ipc + j`` of every example.
      ipc: clusters per class.
      num_classes: number of classes ``C``.
      sizes: ``[C * ipc]`` int32 members per cluster (0 for an empty cluster).
      inertia: total within-cluster sum of squared distances over all classes.
      inertia_per_class: ``[C]`` float.
      n_iterations: ``[C]`` int32 Lloyd iterations run per class.
      converged: ``[C]`` bool, stopped by the tolerance (not by ``max_iterations``).
      n_empty: number of empty clusters.
      centroids: ``[C * ipc, d]`` cluster centres (device array).
      timings: seconds, ``embed_s``/``embed_compile_s`` (when embedded here) and
        ``kmeans_s``/``kmeans_compile_s``; run times exclude compilation.
    """

    cluster_ids: np.ndarray
    ipc: int
    num_classes: int
    sizes: np.ndarray
    inertia: float
    inertia_per_class: np.ndarray
    n_iterations: np.ndarray
    converged: np.ndarray
    n_empty: int
    centroids: jax.Array
    timings: dict[str, float]


# Every distance product of the k-means runs at full float32 precision: ‖x‖² − 2 x·c + ‖c‖²
# cancels, so TF32 products (JAX's default for float32 on A100/H100) would lose the small
# distances between close points; the reference computes its distances on the CPU in float32.
# On CPU float32 products are full precision either way (same numbers). The ott backend's own
# products are ott's.
_HIGHEST = jax.lax.Precision.HIGHEST


def _sq_dists(x: jax.Array, x_sq: jax.Array, c: jax.Array) -> jax.Array:
    """Squared distances ``[n, k]`` as ‖x‖² − 2 x·c + ‖c‖² (one float32 matmul), clamped at 0."""
    c_sq = jnp.sum(c * c, axis=-1)
    xc = jnp.matmul(x, c.T, precision=_HIGHEST)
    return jnp.maximum(x_sq[:, None] - 2.0 * xc + c_sq[None, :], 0.0)


class _ClassKMeans(NamedTuple):
    """k-means of one padded class (a k-means backend's output; stacked over classes).

    Attributes:
      labels: ``[n]`` int32 cluster in ``[0, k)`` of every row (padded rows too).
      centres: ``[k, d]``.
      counts: ``[k]`` int32 valid members per cluster.
      inertia: sum over valid rows of the squared distance to their centre.
      n_iterations: int32 Lloyd iterations run.
      converged: bool, stopped by the tolerance (not by ``max_iterations``).
    """

    labels: jax.Array
    centres: jax.Array
    counts: jax.Array
    inertia: jax.Array
    n_iterations: jax.Array
    converged: jax.Array


def _final_assignment(x, x_sq, valid, centres, k: int, n_iterations, converged) -> _ClassKMeans:
    """Labels, sizes and inertia at the final centres (scikit-learn's ``labels_``/``inertia_``)."""
    dist = _sq_dists(x, x_sq, centres)
    labels = jnp.argmin(dist, axis=1).astype(jnp.int32)
    inertia = jnp.sum(jnp.min(dist, axis=1) * valid.astype(x.dtype))
    counts = jax.ops.segment_sum(valid.astype(jnp.int32), labels, k)
    return _ClassKMeans(labels, centres, counts, inertia, n_iterations, converged)


# The k-means procedures (see the module docstring): the rules each one bundles.
KMEANS_PROCEDURES: dict[str, dict[str, str]] = {
    "reference": {"init": "kmeans++", "tol_mode": "shift_sum", "empty": "random"},
    "sklearn": {"init": "greedy_kmeans++", "tol_mode": "sklearn", "empty": "farthest"},
}
KMEANS_INITS = ("kmeans++", "greedy_kmeans++")
KMEANS_TOL_MODES = ("shift_sum", "sklearn")
KMEANS_EMPTY = ("random", "farthest")


def _n_candidates(init: str, k: int) -> int:
    """D² candidates drawn per seed: 1 (plain k-means++) or ``2 + ⌊ln k⌋`` (greedy)."""
    return 1 if init == "kmeans++" else 2 + int(np.log(k))


def _kmeans_plus_plus(key: jax.Array, x: jax.Array, x_sq: jax.Array, valid: jax.Array, k: int,
                      n_candidates: int = 1) -> jax.Array:
    """k-means++ seeds ``[k, d]`` drawn among the valid rows of ``x`` only.

    The first seed is uniform over the valid rows; each next one is drawn with probability ∝ D²
    (squared distance to the nearest seed so far; padded rows have probability 0). With
    ``n_candidates == 1`` that draw is the seed (plain k-means++, the reference's rule; a D²
    within float32 rounding of 0, ≤ 1e-5 (‖x‖² + ‖c‖²), counts as 0, so a chosen point has
    probability exactly 0 as with the reference's ``Σ (x − c)²``); with more, the candidate giving
    the lowest potential ``Σ min D²`` is kept (greedy k-means++, scikit-learn's rule). If every
    valid row already coincides with a seed (duplicates) the draw is uniform over valid rows.
    """
    n, d = x.shape
    validf = valid.astype(x.dtype)

    def draw(j, min_d2):
        p = min_d2 * validf
        # j == 0 (min_d2 starts at 0) or every valid row already sits on a seed: uniform.
        p = jnp.where(jnp.sum(p) > 0, p, validf)
        cum = jnp.cumsum(p)
        r = jax.random.uniform(jax.random.fold_in(key, j), (n_candidates,), x.dtype) * cum[-1]
        # The first row whose cumulative mass exceeds r: a row of probability 0 never is. A
        # rounding can put r at cum[-1]: fall back to the last row of positive probability.
        cand = jnp.searchsorted(cum, r, side="right")
        return jnp.minimum(cand, n - 1 - jnp.argmax((p > 0)[::-1]))

    def body_plain(j, carry):
        centres, min_d2 = carry
        c = x[draw(j, min_d2)[0]]
        c_sq = jnp.sum(c * c)
        # D² by the matvec form (≈3× faster than Σ (x − c)² on XLA:CPU in an interleaved A/B);
        # a value within float32 rounding of 0 is 0, so the chosen point (and any exact
        # duplicate) is never drawn again, as with the reference's exact Σ (x − c)².
        d2 = jnp.maximum(x_sq - 2.0 * jnp.matmul(x, c, precision=_HIGHEST) + c_sq, 0.0)
        d2 = jnp.where(d2 <= 1e-5 * (x_sq + c_sq), 0.0, d2)
        return centres.at[j].set(c), jnp.where(j == 0, d2, jnp.minimum(min_d2, d2))

    def body_greedy(j, carry):
        centres, min_d2 = carry
        cand = draw(j, min_d2)
        d2 = _sq_dists(x, x_sq, x[cand])  # [n, n_candidates]
        d2 = jnp.where(j == 0, d2, jnp.minimum(min_d2[:, None], d2))
        best = jnp.argmin(jnp.sum(d2 * validf[:, None], axis=0))
        return centres.at[j].set(x[cand[best]]), d2[:, best]

    body = body_plain if n_candidates == 1 else body_greedy
    centres0 = jnp.zeros((k, d), x.dtype)
    centres, _ = jax.lax.fori_loop(0, k, body, (centres0, jnp.zeros((n,), x.dtype)))
    return centres


def _lloyd(key, x, x_sq, valid, centres0, *, k: int, max_iterations: int, tol: float,
           tol_mode: str, empty: str) -> _ClassKMeans:
    """Lloyd iterations from ``centres0`` [k, d] on one padded class ``x`` [n, d].

    ``tol_mode="shift_sum"``: stop when ``Σ_k ‖Δc_k‖₂ < tol``; the labels are those of the last
    assignment step. ``"sklearn"``: stop when no valid label changes or ``Σ_k ‖Δc_k‖² ≤ tol ×``
    mean per-feature variance of the class; labels re-assigned at the final centres.
    ``empty="random"``: an empty cluster's centre becomes a valid row drawn uniformly (key
    ``fold_in(key, iteration)``); ``"farthest"``: distinct valid rows farthest from their centres.
    """
    n, d = x.shape
    validf = valid.astype(x.dtype)
    if tol_mode == "sklearn":
        mean = weighted_mean(x, validf)  # [d], over the valid rows
        var = weighted_mean(jnp.square(x - mean), validf)
        tol_abs = tol * jnp.mean(var)  # scikit-learn's tolerance, relative to the data spread

    def refill_farthest(centres, is_empty, min_d, it):
        del it
        # Distinct farthest valid points, one per empty cluster (padded rows score -inf).
        far = jax.lax.top_k(jnp.where(valid, min_d, -jnp.inf), k)[1]
        rank = jnp.clip(jnp.cumsum(is_empty) - 1, 0, k - 1)
        return jnp.where(is_empty[:, None], x[far[rank]], centres)

    def refill_random(centres, is_empty, min_d, it):
        del min_d
        # A uniform draw among the valid rows of the class, one per cluster (the reference's
        # ``X[randint(0, N)]``, X being the class's points).
        valid_rows = jnp.nonzero(valid, size=n, fill_value=0)[0]
        n_valid = jnp.sum(valid.astype(jnp.int32))
        r = jax.random.randint(jax.random.fold_in(key, it), (k,), 0, n_valid)
        return jnp.where(is_empty[:, None], x[valid_rows[r]], centres)

    refill = refill_random if empty == "random" else refill_farthest

    def body(state):
        centres, labels, it, _ = state
        dist = _sq_dists(x, x_sq, centres)
        new_labels = jnp.argmin(dist, axis=1).astype(jnp.int32)
        min_d = jnp.min(dist, axis=1)
        counts = jax.ops.segment_sum(validf, new_labels, k)
        sums = jax.ops.segment_sum(x * validf[:, None], new_labels, k)
        is_empty = counts == 0
        new = jnp.where(is_empty[:, None], centres, sums / jnp.maximum(counts, 1.0)[:, None])
        new = jax.lax.cond(jnp.any(is_empty), lambda a: refill(*a), lambda a: a[0],
                           (new, is_empty, min_d, it))
        if tol_mode == "shift_sum":
            done = jnp.sum(jnp.sqrt(jnp.sum(jnp.square(new - centres), axis=1))) < tol
        else:
            same = jnp.all((new_labels == labels) | ~valid)
            done = same | (jnp.sum(jnp.square(new - centres)) <= tol_abs)
        return new, new_labels, it + 1, done

    def cond(state):
        _, _, it, done = state
        return (it < max_iterations) & ~done

    init = (centres0, jnp.full((n,), -1, jnp.int32), jnp.int32(0), jnp.bool_(False))
    centres, labels, n_iter, done = jax.lax.while_loop(cond, body, init)
    if tol_mode == "sklearn" or max_iterations == 0:
        return _final_assignment(x, x_sq, valid, centres, k, n_iter, done)
    inertia = jnp.sum(jnp.sum(jnp.square(x - centres[labels]), axis=-1) * validf)
    counts = jax.ops.segment_sum(valid.astype(jnp.int32), labels, k)
    return _ClassKMeans(labels, centres, counts, inertia, n_iter, done)


def _kmeans_one(key, x, valid, *, k: int, max_iterations: int, tol: float, init: str,
                tol_mode: str, empty: str) -> _ClassKMeans:
    """k-means on one padded class ``x`` [n, d] with validity mask ``valid`` [n]."""
    x_sq = jnp.sum(x * x, axis=-1)
    # Seed j draws with fold_in(key, j), j < k (as before the procedures existed: "sklearn"
    # reproduces the former default's partitions), so the Lloyd loop's key is fold_in(key, k).
    centres0 = _kmeans_plus_plus(key, x, x_sq, valid, k, _n_candidates(init, k))
    return _lloyd(jax.random.fold_in(key, k), x, x_sq, valid, centres0, k=k,
                  max_iterations=max_iterations, tol=tol, tol_mode=tol_mode, empty=empty)


def _kmeans_one_ott(key, x, valid, *, k: int, max_iterations: int, tol: float, init: str,
                    tol_mode: str | None = None, empty: str | None = None) -> _ClassKMeans:
    """``ott.tools.k_means`` on one padded class (``backend="ott"``), same outputs as
    :func:`_kmeans_one`.

    The seeds are :func:`_kmeans_plus_plus`'s (``init``), given to ott as its ``init``
    callable. ott's empty-cluster refill ignores ``weights``, so padded rows must not be
    arbitrary: they become copies of the class's real rows (valid rows come first in the class
    table) with weight 0; a refill drawn from padding is then a real point of the class, and
    the copies add nothing to centroids or inertia. One restart (``n_init=1``, the reference);
    ``tol`` goes to ott as is (its own criterion). ``tol_mode`` and ``empty`` are not
    expressible in ott and must be ``None``.
    """
    from ott.tools.k_means import k_means as ott_k_means

    del tol_mode, empty
    n = x.shape[0]
    validf = valid.astype(x.dtype)
    x_sq = jnp.sum(x * x, axis=-1)
    n_valid = jnp.maximum(jnp.sum(valid.astype(jnp.int32)), 1)
    rows = jnp.arange(n)
    xf = x[jnp.where(valid, rows, rows % n_valid)]
    centres0 = _kmeans_plus_plus(key, x, x_sq, valid, k, _n_candidates(init, k))
    out = ott_k_means(xf, k, weights=validf, init=lambda geom, k_, rng: centres0, n_init=1,
                      tol=tol, max_iterations=max_iterations, rng=jax.random.fold_in(key, k))
    return _final_assignment(x, x_sq, valid, out.centroids.astype(x.dtype), k,
                             jnp.int32(out.iteration), jnp.bool_(out.converged))


KMEANS_BACKENDS = {"jax": _kmeans_one, "ott": _kmeans_one_ott}


def resolve_kmeans_procedure(procedure: str = "reference", *, init: str | None = None,
                             tol_mode: str | None = None, empty: str | None = None,
                             backend: str = "jax") -> dict[str, str | None]:
    """The k-means rules ``{"init", "tol_mode", "empty"}`` of a procedure, with overrides.

    Args:
      procedure: ``"reference"`` or ``"sklearn"`` (see the module docstring).
      init, tol_mode, empty: ``None`` (the procedure's rule) or a rule of
        :data:`KMEANS_INITS`, :data:`KMEANS_TOL_MODES`, :data:`KMEANS_EMPTY`.
      backend: ``"jax"`` or ``"ott"``; ott's Lloyd loop has its own stopping and empty-cluster
        rules, so with ``"ott"`` only ``init`` applies (``tol_mode`` and ``empty`` resolve to
        ``None`` and must not be given).

    Returns:
      ``{"init": ..., "tol_mode": ..., "empty": ...}``.
    """
    check_choice(procedure, tuple(KMEANS_PROCEDURES), "procedure")
    check_choice(backend, tuple(sorted(KMEANS_BACKENDS)), "backend")
    if init is not None:
        check_choice(init, KMEANS_INITS, "init")
    if tol_mode is not None:
        check_choice(tol_mode, KMEANS_TOL_MODES, "tol_mode")
    if empty is not None:
        check_choice(empty, KMEANS_EMPTY, "empty")
    rules = dict(KMEANS_PROCEDURES[procedure])
    if backend == "ott":
        if tol_mode is not None or empty is not None:
            raise ValueError(
                "backend='ott' runs ott's own Lloyd loop (it stops when no label changes or the "
                "squared centre shift is <= tol, and refills empty clusters with far points): "
                f"tol_mode and empty must be None with it; got tol_mode={tol_mode!r}, "
                f"empty={empty!r}. Use backend='jax' for the reference's or scikit-learn's rules.")
        return {"init": init or rules["init"], "tol_mode": None, "empty": None}
    return {"init": init or rules["init"], "tol_mode": tol_mode or rules["tol_mode"],
            "empty": empty or rules["empty"]}


@partial(jax.jit, static_argnames=("k", "max_iterations", "tol", "class_batch_size", "backend",
                                   "init", "tol_mode", "empty"))
def _kmeans_core(
    keys_C, feats_NxD, idx_CxM, valid_CxM, *, k, max_iterations, tol, class_batch_size,
    backend="jax", init="kmeans++", tol_mode="shift_sum", empty="random",
):
    kmeans_one = KMEANS_BACKENDS[backend]

    def one(args):
        key, idx, valid = args
        x = jnp.where(valid[:, None], feats_NxD[idx], 0.0)
        return kmeans_one(key, x, valid, k=k, max_iterations=max_iterations, tol=tol, init=init,
                          tol_mode=tol_mode, empty=empty)

    return jax.lax.map(one, (keys_C, idx_CxM, valid_CxM), batch_size=class_batch_size)


def class_index_table(labels_N: np.ndarray, num_classes: int,
                      counts_C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of each class padded to the largest class, for per-class vectorised work.

    Args:
      labels_N: host labels ``[n]`` in ``[0, num_classes)``.
      num_classes: C.
      counts_C: ``[C]`` examples per class (``np.bincount(labels_N, minlength=C)``).

    Returns:
      ``(idx, valid)``, both ``[C, n_max]``: ``idx[c, :counts[c]]`` are the rows of class c in
      increasing order (int32), ``valid`` is True there; padded slots hold row 0.
    """
    lab, counts = labels_N, counts_C
    order = np.argsort(lab, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_max = int(counts.max())
    pos = np.arange(lab.size) - starts[lab[order]]
    idx = np.zeros((num_classes, n_max), np.int32)
    valid = np.zeros((num_classes, n_max), bool)
    idx[lab[order], pos] = order
    valid[lab[order], pos] = True
    return idx, valid


class KMeansOptions(NamedTuple):
    """How :func:`kmeans_by_class` (and :func:`partition_by_class`) run k-means.

    Attributes:
      max_iterations: maximum Lloyd iterations (the reference: 100).
      tol: tolerance of the stopping rule ``tol_mode`` (the reference: 1e-4): with
        ``"shift_sum"`` stop when ``Σ_k ‖Δc_k‖₂ < tol``; with ``"sklearn"`` when the total
        squared centre shift is ≤ ``tol`` × the class's mean per-feature variance, or when no
        label changes; with ``backend="ott"``, ott's own (squared shift ≤ ``tol``).
      class_batch_size: classes ``vmap``-ed together (``None``: one class at a time).
      backend: ``"jax"`` (the k-means of this module, default) or ``"ott"``
        (``ott.tools.k_means`` on the same padded classes, see :func:`_kmeans_one_ott`; honours
        ``init`` only).
      procedure: ``"reference"`` (default: DC_Unlearning's ``kmeans_pytorch``) or
        ``"sklearn"``; bundles of the three rules below (see the module docstring).
      init: ``None`` (the procedure's), ``"kmeans++"`` (one D² candidate per seed) or
        ``"greedy_kmeans++"`` (``2 + ⌊ln ipc⌋`` candidates, the best kept).
      tol_mode: ``None`` (the procedure's), ``"shift_sum"`` or ``"sklearn"`` (see ``tol``).
      empty: ``None`` (the procedure's), ``"random"`` (re-seed an empty cluster at a uniformly
        drawn point of its class) or ``"farthest"`` (at the farthest points).
    """

    max_iterations: int = 100
    tol: float = 1e-4
    class_batch_size: int | None = None
    backend: str = "jax"
    procedure: str = "reference"
    init: str | None = None
    tol_mode: str | None = None
    empty: str | None = None

    def rules(self) -> dict[str, str | None]:
        """The resolved rules ``{"init", "tol_mode", "empty"}`` (:func:`resolve_kmeans_procedure`).

        Raises:
          ValueError: an unknown procedure, rule or backend, max_iterations < 0, tol < 0, or
            class_batch_size < 1.
        """
        if self.max_iterations < 0:
            raise ValueError(f"max_iterations must be >= 0; got {self.max_iterations}")
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0; got {self.tol}")
        if self.class_batch_size is not None and self.class_batch_size < 1:
            raise ValueError(f"class_batch_size must be None or >= 1; got "
                             f"{self.class_batch_size}")
        return resolve_kmeans_procedure(self.procedure, init=self.init, tol_mode=self.tol_mode,
                                        empty=self.empty, backend=self.backend)


def kmeans_by_class(
    feats_NxD: jax.Array,
    labels_N: Any,
    *,
    num_classes: int,
    ipc: int,
    key: jax.Array,
    kmeans: KMeansOptions | None = None,
) -> PartitionOutput:
    """Per-class k-means with ``ipc`` clusters, all classes in one jitted call (method.md §3.1).

    Args:
      feats_NxD: features ``[n, d]`` (e.g. from :func:`embed`).
      labels_N: class labels ``[n]`` in ``[0, num_classes)``.
      num_classes: number of classes ``C``.
      ipc: clusters per class; every class needs at least ``ipc`` examples.
      key: PRNG key of the k-means (seeding and random re-seeds; one subkey per class).
      kmeans: the k-means settings (:class:`KMeansOptions`; ``None``: the defaults, the
        reference's procedure).

    Returns:
      A :class:`PartitionOutput` (its ``timings`` hold ``kmeans_s`` and ``kmeans_compile_s``).
    """
    # Wait for pending work on the input (e.g. an asynchronous embedding) before the clock.
    feats = jax.block_until_ready(jnp.asarray(feats_NxD))
    t_start = time.perf_counter()
    if feats.ndim != 2:
        raise ValueError(f"feats_NxD must be [n, d]; got shape {feats.shape}")
    if not jnp.issubdtype(feats.dtype, jnp.floating):
        raise ValueError(f"feats_NxD must be floating point; got {feats.dtype}")
    lab = check_labels(labels_N, num_classes, n=feats.shape[0], name="labels_N").astype(np.int32)
    counts = check_ipc(lab, num_classes, ipc)
    kmeans = kmeans or KMeansOptions()
    rules = kmeans.rules()
    check_compile_s = check_finite(feats, "feats_NxD")

    idx, valid = class_index_table(lab, num_classes, counts)
    keys = jax.random.split(key, num_classes)
    km, _, compile_s = timed(
        _kmeans_core, keys, feats.astype(jnp.float32), jnp.asarray(idx), jnp.asarray(valid),
        k=int(ipc), max_iterations=int(kmeans.max_iterations), tol=float(kmeans.tol),
        class_batch_size=kmeans.class_batch_size, backend=kmeans.backend, **rules,
    )
    cluster_ids = np.empty(lab.size, np.int32)
    global_ids = np.asarray(km.labels) + (np.arange(num_classes, dtype=np.int32) * ipc)[:, None]
    cluster_ids[idx[valid]] = global_ids[valid]
    sizes = np.asarray(km.counts).reshape(-1).astype(np.int32)
    inertia = np.asarray(km.inertia, np.float64)
    compile_s += check_compile_s
    wall = time.perf_counter() - t_start
    return PartitionOutput(
        cluster_ids=cluster_ids,
        ipc=int(ipc),
        num_classes=int(num_classes),
        sizes=sizes,
        inertia=float(inertia.sum()),
        inertia_per_class=inertia,
        n_iterations=np.asarray(km.n_iterations, np.int32),
        converged=np.asarray(km.converged, bool),
        n_empty=int((sizes == 0).sum()),
        centroids=km.centres.reshape(num_classes * ipc, -1),
        timings={"kmeans_s": wall - compile_s, "kmeans_compile_s": compile_s},
    )


def partition_by_class(
    apply_fn: ApplyFn,
    params: Params,
    x_NxHxWxC: jax.Array,
    y_N: Any,
    *,
    num_classes: int,
    ipc: int,
    key: jax.Array,
    batch_size: int = 1024,
    method: str | None = "features",
    kmeans: KMeansOptions | None = None,
) -> PartitionOutput:
    """Embed with an untrained network, then per-class k-means: Blend's partition (method.md §3.1).

    Args:
      apply_fn: ``apply_fn(params, x, method=method) -> [b, d]`` features.
      params: variables of the embedding network ψ, randomly initialised from its own key and
        never trained.
      x_NxHxWxC: training images ``[n, h, w, c]``.
      y_N: labels ``[n]``.
      num_classes: number of classes ``C``.
      ipc: clusters per class (paper: 1000 for CIFAR-10).
      key: PRNG key of the k-means++ seeding.
      batch_size: images per forward pass of the embedding.
      method: ``apply_fn``'s method giving the embedding.
      kmeans: the k-means settings (:class:`KMeansOptions`; ``None``: the defaults).

    Returns:
      A :class:`PartitionOutput` whose ``timings`` hold ``embed_s``, ``embed_compile_s``,
      ``kmeans_s`` and ``kmeans_compile_s``.
    """
    jax.block_until_ready(x_NxHxWxC)  # pending upstream work is not this stage's time
    t0 = time.perf_counter()
    check_compile_s = check_images(x_NxHxWxC)
    lab = check_labels(y_N, num_classes, n=x_NxHxWxC.shape[0]).astype(np.int32)
    check_ipc(lab, num_classes, ipc)  # before the (long) embedding
    kmeans = kmeans or KMeansOptions()
    kmeans.rules()  # bad settings fail before the (long) embedding
    _check_batch_size(batch_size)
    feats, _, embed_compile_s = timed(
        embed_jitted, params, jnp.asarray(x_NxHxWxC), apply_fn=apply_fn,
        batch_size=int(batch_size), method=method,
    )
    embed_compile_s += check_compile_s
    embed_s = time.perf_counter() - t0 - embed_compile_s
    out = kmeans_by_class(feats, lab, num_classes=num_classes, ipc=ipc, key=key, kmeans=kmeans)
    timings = {"embed_s": embed_s, "embed_compile_s": embed_compile_s, **out.timings}
    return out._replace(timings=timings)
