"""Blend dataset condensation (docs/method.md §3.2–3.3).

Given the partition of :mod:`jaxunlearn.partition` and a forget request:

1. :func:`split_free_residual` marks clusters holding a forget example as *touched*; retain
   images of touched clusters are kept raw (the residual set), every other non-empty cluster is
   *free* and will be condensed into one image.
2. :func:`blend_clusters` learns, for every free cluster s, raw weights w_s (init 1/n_s) so that
   the blended image x̃_s = Σ_i w̃_{s,i} x_{s,i} (w̃ = w / Σw, or a softmax) has random features
   φ(x̃_s) close to the mean features μ_s of the cluster's images; loss
   L = (1/S) Σ_s mean_d (φ(x̃_s) − μ_s)², SGD with momentum.
3. :func:`reduced_retain_set` returns residual images ∪ blended images.

Layout and memory. Free clusters have ragged sizes (≈5 members on average at the paper's scale,
but a few dozen for some), so members are stored flat, sorted by cluster, with a segment id; the
blended images are a ``segment_sum`` of weighted members and one batched forward pass of all
blended images of a chunk gives the loss. Clusters are independent (the extractor is frozen, the
norm layers are per image, SGD is element-wise and the loss is a sum over clusters divided by the
*total* S), so optimising the free clusters in chunks of ``chunk_size`` clusters gives exactly
the full-batch result; chunks only bound the memory of the backward pass (≈2 MB of activations
per 32×32 image for the ConvNet-3). Members are padded to the largest chunk and masked (padded
members and padded clusters never contribute), so one compiled program serves every chunk; the
chunks and iterations run from the host, one compiled step per call (on XLA:CPU the same
forward/backward ran ≈1.4× slower inside a ``lax.scan`` than as a top-level program).
:func:`blend_clusters` is three parts: the argument checks, the :class:`ChunkLayout` of the
members (:func:`chunk_layout`) and the compiled loop over chunks and iterations.

Shared pieces live in the module a reader would open for them: the extractors' features and
``init_fn`` in :mod:`jaxunlearn.models` (:func:`~jaxunlearn.models.batched_features`,
:func:`~jaxunlearn.models.init_fn_for`), the per-class row table in :mod:`jaxunlearn.partition`,
the input checks in :mod:`jaxunlearn.checks`, ahead-of-time compilation timed apart in
:mod:`jaxunlearn.timing`. The condensation baselines of docs/method.md §3.4 have their own modules:
:mod:`jaxunlearn.dm` (distribution matching), :mod:`jaxunlearn.gm` (gradient
matching), :mod:`jaxunlearn.idm` (improved distribution matching) and their augmentation
:mod:`jaxunlearn.dsa`.

Measurements (cost per iteration, time and memory at the paper's scale):
``docs/design_notes.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.checks import check_images, check_index_set
from jaxunlearn.models import apply_features, batched_features
from jaxunlearn.partition import PartitionOutput
from jaxunlearn.timing import compile_ahead, timed

__all__ = [
    "BlendOutput",
    "ChunkLayout",
    "CondenseOutput",
    "SplitOutput",
    "blend_clusters",
    "blend_lr",
    "blend_matching_loss",
    "blend_prepare_jitted",
    "blend_step_jitted",
    "chunk_layout",
    "condense",
    "init_extractors",
    "reduced_retain_set",
    "split_free_residual",
]

Params = Any
ApplyFn = Callable[..., jax.Array]
InitFn = Callable[[jax.Array], Params]

# A cluster whose raw weights cancel, |Σ_j w_j| ≤ _SUM_EPS · Σ_j |w_j|, falls back to uniform
# weights (see _normalise). This bounds every normalised weight by 1/_SUM_EPS.
_SUM_EPS = 1e-6


# ----------------------------------------------------------------------------------------------
# Free / residual split (docs/method.md §3.2)
# ----------------------------------------------------------------------------------------------


class SplitOutput(NamedTuple):
    """Free / residual split of the training set for one forget request (docs/method.md §3.2).

    Attributes:
      free_clusters: ``[S]`` int32 ids of the free clusters with at least one retain image,
        sorted: each becomes one blended image.
      residual_idx: ``[m]`` int32 sorted training-set indices of the retain images of touched
        clusters (kept raw).
      free_sizes: ``[S]`` int32 retain images in each free cluster.
      blend_cluster_ids: ``[n]`` int32 cluster id of each retain example, −1 for the others
        (forget examples and any example outside the retain set): the ``cluster_ids`` to pass to
        :func:`blend_clusters`.
      n_free: S.
      n_residual: m.
      n_touched: clusters holding at least one forget example.
      n_empty_free: clusters with no forget and no retain example (empty k-means clusters, or
        clusters of examples outside both sets): skipped, counted here.
      n_forget, n_retain: sizes of the forget and retain sets.
      reduced_size: ``n_free + n_residual``, the size of the reduced retain set.
      timings: ``{"split_s": seconds}``.
    """

    free_clusters: np.ndarray
    residual_idx: np.ndarray
    free_sizes: np.ndarray
    blend_cluster_ids: np.ndarray
    n_free: int
    n_residual: int
    n_touched: int
    n_empty_free: int
    n_forget: int
    n_retain: int
    reduced_size: int
    timings: dict[str, float]


def split_free_residual(
    cluster_ids: Any, forget_idx: Any, retain_idx: Any, num_clusters: int
) -> SplitOutput:
    """Split clusters into free (condensed) and touched (retain images kept raw) (method.md §3.2).

    Args:
      cluster_ids: ``[n]`` cluster id of every training example (``PartitionOutput.cluster_ids``).
      forget_idx: ``[f]`` indices of the forget set into the training set (non-empty).
      retain_idx: ``[r]`` indices of the retain set, disjoint from ``forget_idx``.
      num_clusters: total clusters, ``num_classes * ipc``.

    Returns:
      A :class:`SplitOutput`. With class-wise forgetting every cluster of the forgotten class is
      touched and holds no retain image, so there is no residual image and
      ``n_free = (C − 1)·ipc`` minus the empty clusters of the other classes.
    """
    t0 = time.perf_counter()
    cid = np.asarray(cluster_ids)
    if cid.ndim != 1 or not np.issubdtype(cid.dtype, np.integer):
        raise ValueError(f"cluster_ids must be a 1-D integer array; got {cid.dtype} {cid.shape}")
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1; got {num_clusters}")
    if cid.size == 0 or cid.min() < 0 or cid.max() >= num_clusters:
        lo, hi = (cid.min(), cid.max()) if cid.size else (None, None)
        raise ValueError(f"cluster_ids must lie in [0, {num_clusters}); got range [{lo}, {hi}]")
    n = cid.size
    f = check_index_set(forget_idx, n, "forget_idx")
    r = check_index_set(retain_idx, n, "retain_idx")
    if np.intersect1d(f, r).size:
        raise ValueError("forget_idx and retain_idx overlap; they must be disjoint")

    touched = np.zeros(num_clusters, bool)
    touched[cid[f]] = True
    retain_count = np.bincount(cid[r], minlength=num_clusters)
    free = ~touched & (retain_count > 0)
    free_clusters = np.flatnonzero(free).astype(np.int32)
    residual_idx = np.sort(r[touched[cid[r]]]).astype(np.int32)
    blend_ids = np.full(n, -1, np.int32)
    r_free = r[free[cid[r]]]
    blend_ids[r_free] = cid[r_free]
    n_free, n_res = int(free_clusters.size), int(residual_idx.size)
    return SplitOutput(
        free_clusters=free_clusters,
        residual_idx=residual_idx,
        free_sizes=retain_count[free_clusters].astype(np.int32),
        blend_cluster_ids=blend_ids,
        n_free=n_free,
        n_residual=n_res,
        n_touched=int(touched.sum()),
        n_empty_free=int((~touched & (retain_count == 0)).sum()),
        n_forget=int(f.size),
        n_retain=int(r.size),
        reduced_size=n_free + n_res,
        timings={"split_s": time.perf_counter() - t0},
    )


# ----------------------------------------------------------------------------------------------
# Blend (docs/method.md §3.3)
# ----------------------------------------------------------------------------------------------


def blend_lr(ipc: int) -> float:
    """The reference's empirical learning rate for Blend as a cubic in ``ipc`` (method.md §3.3).

    lr = −2.397e-6·ipc³ + 0.01265·ipc² − 0.2558·ipc + 1.461 (ipc 10 → 0.166, 100 → ≈100,
    1000 → ≈9999). Large because the loss is averaged over the S free clusters.

    Raises:
      ValueError: ``ipc < 1``, or ``ipc`` so large (≳ 5,270) that the cubic is not positive:
        pass ``lr`` explicitly then.
    """
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1; got {ipc}")
    lr = -2.397e-6 * ipc**3 + 0.01265 * ipc**2 - 0.2558 * ipc + 1.461
    if lr <= 0:
        raise ValueError(
            f"the reference's learning-rate cubic is not positive at ipc={ipc} (lr={lr:.4g}); "
            "pass lr explicitly"
        )
    return float(lr)


class BlendOutput(NamedTuple):
    """Blended images, one per free cluster (docs/method.md §3.3).

    Attributes:
      images: ``[S, h, w, c]`` blended images (device array), in ``free_clusters`` order.
      labels: ``[S]`` int32 class of each cluster.
      cluster_ids: ``[S]`` int32 the free clusters blended.
      weights: ``[S, m_max]`` float32 final normalised weights, zero past each cluster's size.
      member_idx: ``[S, m_max]`` int32 training-set index of each weight's image, −1 for padding:
        ``images[s] == Σ_i weights[s, i] · x[member_idx[s, i]]``.
      loss_history: ``[iterations]`` float, the matching loss L before each update.
      n_guarded: clusters whose final weights hit the Σw → 0 guard (uniform weights used).
      lr: the learning rate used.
      timings: ``{"blend_s", "blend_compile_s"}`` seconds (run time excludes compilation), and
        the run's parts: ``blend_targets_s`` (gathering members and their target features),
        ``blend_iterations_s`` (the SGD steps), ``blend_finish_s`` (the images) and
        ``blend_iteration_s`` (a list: each step's seconds). What ``blend_s`` has beyond them
        is host work: checks, the chunk layout, the extractors' init, re-padding the weights.
    """

    images: jax.Array
    labels: np.ndarray
    cluster_ids: np.ndarray
    weights: np.ndarray
    member_idx: np.ndarray
    loss_history: np.ndarray
    n_guarded: int
    lr: float
    timings: dict[str, Any]  # seconds; blend_iteration_s is a list


def _normalise(w, seg, mmask, counts, num_segments: int, mode: str):
    """Normalised member weights ``[M]``: w / Σ_cluster w (``sum``) or a per-cluster softmax.

    ``sum`` guard: when a cluster's raw weights cancel (|Σw| ≤ 1e-6 Σ|w|, also all-zero or
    non-finite weights) its normalised weights are replaced by the uniform 1/n_s, i.e. its blended
    image is the cluster mean, and no gradient flows through that cluster at that step (the
    ``where`` picks a constant and the other branch divides by a safe 1). The result is never
    NaN/inf and every normalised weight is bounded by 1e6.
    """
    mf = mmask.astype(w.dtype)
    uniform = mf / jnp.maximum(counts, 1.0)[seg]
    if mode == "softmax":
        logits = jnp.where(mmask, w, -jnp.inf)
        top = jax.ops.segment_max(logits, seg, num_segments)
        z = jnp.where(mmask, w - top[seg], 0.0)
        e = jnp.where(mmask, jnp.exp(z), 0.0)
        tot = jax.ops.segment_sum(e, seg, num_segments)
        wn = e / jnp.where(tot > 0, tot, 1.0)[seg]
        return wn, jnp.zeros((num_segments,), bool)
    tot = jax.ops.segment_sum(w * mf, seg, num_segments)
    mag = jax.ops.segment_sum(jnp.abs(w) * mf, seg, num_segments)
    ok = (jnp.abs(tot) > _SUM_EPS * mag) & jnp.isfinite(tot) & jnp.isfinite(mag)
    safe = jnp.where(ok, tot, 1.0)
    wn = jnp.where(ok[seg], jnp.where(mmask, w, 0.0) / safe[seg], uniform)
    return wn, ~ok & (counts > 0)


def _pick(stacked: Params, e) -> Params:
    """Extractor ``e`` of params stacked on a leading axis."""
    return jax.tree.map(lambda a: a[e], stacked)


def _blend_images(wn, xm, seg, num_segments):
    return jax.ops.segment_sum(wn[:, None, None, None] * xm, seg, num_segments)


def blend_matching_loss(feats_KxD: jax.Array, mu_KxD: jax.Array, cmask_K: jax.Array,
                        inv_s: jax.Array) -> jax.Array:
    """Blend's matching loss from the features: ``inv_s · Σ_s cmask_s · mean_d (φ(x̃_s) − μ_s)²``.

    The reference's ``dist_match`` (an MSE between mean features) summed over clusters and
    divided by the total number S of free clusters (docs/method.md §3.3).

    Precision. The loss is computed in float32 at least (features of a lower precision are
    upcast) and has no matrix product at all: differences, squares and sums only, so no TF32 can
    enter it on A100/H100 (the precision test reads its lowered program, gradient included). The
    extractor's forward and backward passes around it (``apply_fn``'s convolutions, in
    :func:`blend_step_jitted` and for the targets in :func:`blend_prepare_jitted`) keep the
    backend's default precision, as training does, deliberately: that is what the reference
    does, PyTorch's ``torch.backends.cudnn.allow_tf32`` being True by default (the reference
    never changes it), so its cuDNN convolutions run in TF32 on Ampere and later GPUs; and the
    convolutions are nearly all of Blend's cost (``docs/design_notes.md``), which float32 would
    multiply by up to 8 on an A100 (19.5 against 156 TFLOPS), while the targets and the blended
    images' features are computed at one and the same precision either way. For float32
    convolutions as well, call Blend under ``jax.default_matmul_precision("float32")``.

    Args:
      feats_KxD: features ``[K, d]`` of the chunk's blended images.
      mu_KxD: their targets, the mean features of each cluster's members ``[K, d]``.
      cmask_K: ``[K]`` 1 for a real cluster, 0 for padding.
      inv_s: 1 / S.

    Returns:
      This chunk's share of the full-batch loss, a scalar.
    """
    f = feats_KxD.astype(jnp.promote_types(feats_KxD.dtype, jnp.float32))
    mu = mu_KxD.astype(jnp.promote_types(mu_KxD.dtype, jnp.float32))
    per_cluster = jnp.mean(jnp.square(f - mu), axis=-1)
    return jnp.sum(per_cluster * cmask_K) * inv_s


@partial(jax.jit, static_argnames=("apply_fn", "batch_size", "method"))
def blend_prepare_jitted(
    extractors, x, member_idx_M, seg_M, mmask_M, counts_K, *, apply_fn, batch_size, method
):
    """Gather one chunk's member images and their targets (jitted, for :func:`blend_clusters`).

    Args:
      extractors: params of E extractors stacked on a leading axis.
      x: the training images ``[n, h, w, c]``.
      member_idx_M, seg_M, mmask_M: ``[M]`` member rows of ``x``, their cluster in ``[0, K)``
        and a validity mask (padding: False).
      counts_K: ``[K]`` members per cluster (0 for a padded cluster).

    Returns:
      ``(xm [M, h, w, c], mu [E, K, d] mean member features per extractor, w0 [M] = 1/n_s)``.
    """
    k = counts_K.shape[0]
    counts = jnp.maximum(counts_K.astype(jnp.float32), 1.0)
    mf = mmask_M.astype(jnp.float32)
    xm = x[member_idx_M]

    def target(params):
        f = batched_features(apply_fn, params, xm, batch_size, method)
        return jax.ops.segment_sum(f * mf[:, None], seg_M, k) / counts[:, None]

    n_ext = jax.tree.leaves(extractors)[0].shape[0]
    mu = jnp.stack([target(_pick(extractors, e)) for e in range(n_ext)])
    return xm, mu, mf / counts[seg_M]


@partial(
    jax.jit, static_argnames=("apply_fn", "weights", "method"), donate_argnames=("w", "buf")
)
def blend_step_jitted(
    w, buf, it, extractors, xm, seg_M, mmask_M, counts_K, cmask_K, mu, lr, momentum, inv_s,
    *, apply_fn, weights, method,
):
    """One Blend SGD-momentum step on one chunk (jitted, for :func:`blend_clusters`).

    Args:
      w, buf: raw member weights ``[M]`` and momentum buffer (donated).
      it: iteration index; extractor ``it % E`` and target ``mu[it % E]`` are used.
      extractors, xm, mu: from :func:`blend_prepare_jitted`.
      seg_M, mmask_M, counts_K, cmask_K: the chunk layout (``cmask_K`` 0 for padded clusters).
      lr, momentum: SGD hyper-parameters; inv_s: 1 / (total free clusters S).

    Returns:
      ``(w, buf, loss)``: updated state and this chunk's share of the full-batch loss before
      the update.
    """
    k = counts_K.shape[0]
    counts = counts_K.astype(jnp.float32)
    e = it % jax.tree.leaves(extractors)[0].shape[0]
    params = _pick(extractors, e)

    def loss_fn(w):
        wn, _ = _normalise(w, seg_M, mmask_M, counts, k, weights)
        f = apply_features(apply_fn, params, _blend_images(wn, xm, seg_M, k), method)
        return blend_matching_loss(f, mu[e], cmask_K, inv_s)

    loss, g = jax.value_and_grad(loss_fn)(w)
    buf = momentum * buf + g  # PyTorch SGD momentum (dampening 0)
    return w - lr * buf, buf, loss


@partial(jax.jit, static_argnames=("weights",))
def _blend_finish(w, xm, seg_M, mmask_M, counts_K, *, weights):
    k = counts_K.shape[0]
    wn, guarded = _normalise(w, seg_M, mmask_M, counts_K.astype(jnp.float32), k, weights)
    return _blend_images(wn, xm, seg_M, k), wn, guarded


@partial(jax.jit, static_argnames=("init_fn",))
def init_extractors(keys_E: jax.Array, *, init_fn: InitFn) -> Params:
    """Random extractors ``init_fn(key)``, one per key, stacked on a leading axis ``[E, ...]``."""
    return jax.vmap(init_fn)(keys_E)


class ChunkLayout(NamedTuple):
    """Members of the free clusters, flat and sorted by cluster, cut into padded chunks.

    ``S`` free clusters, ``T`` members in all, ``Q`` chunks of ``K`` clusters, each chunk's
    members padded to the largest chunk's ``M`` (padded members and clusters are masked).

    Attributes:
      member: ``[T]`` training-set index of every member, sorted by cluster.
      cluster: ``[T]`` position in ``free_clusters`` of each member's cluster.
      starts: ``[S + 1]`` offset in ``member`` of each cluster's first member (then ``T``).
      counts: ``[S]`` members per free cluster.
      chunk: ``[T]`` chunk of each member.
      col: ``[T]`` slot of each member in its chunk.
      idx: ``[Q, M]`` int32 training-set index of each slot (0 for padding).
      seg: ``[Q, M]`` int32 cluster of each slot within its chunk, in ``[0, K)``.
      mmask: ``[Q, M]`` bool, True for real members.
      counts_qk: ``[Q, K]`` int32 members per cluster of each chunk (0 for a padded cluster).
      cmask: ``[Q, K]`` float32, 1 for real clusters.
    """

    member: np.ndarray
    cluster: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    chunk: np.ndarray
    col: np.ndarray
    idx: np.ndarray
    seg: np.ndarray
    mmask: np.ndarray
    counts_qk: np.ndarray
    cmask: np.ndarray


def chunk_layout(cluster_ids_N: np.ndarray, free_clusters_S: np.ndarray,
                 chunk_size: int) -> ChunkLayout:
    """The :class:`ChunkLayout` of the free clusters' members, ``chunk_size`` clusters a chunk.

    Args:
      cluster_ids_N: ``[n]`` cluster of each example, −1 for an excluded example.
      free_clusters_S: ``[S]`` distinct cluster ids, in the order of the chunks.
      chunk_size: K, clusters per chunk.
    """
    cid, free, k = cluster_ids_N, free_clusters_S, chunk_size
    pos_of = np.full(int(max(cid.max(), free.max())) + 2, -1, np.int64)
    pos_of[free] = np.arange(free.size)
    member = np.flatnonzero(cid >= 0)
    s = pos_of[cid[member]]
    keep = s >= 0
    member, s = member[keep], s[keep]
    order = np.argsort(s, kind="stable")
    member, s = member[order], s[order]
    counts = np.bincount(s, minlength=free.size)
    S = free.size
    q_count = -(-S // k)
    q_of = s // k
    starts = np.concatenate([[0], np.cumsum(counts)])  # member offset of each cluster
    chunk_start = starts[np.minimum(np.arange(q_count) * k, S)]
    chunk_end = starts[np.minimum((np.arange(q_count) + 1) * k, S)]
    m = int((chunk_end - chunk_start).max())
    col = np.arange(member.size) - chunk_start[q_of]
    idx = np.zeros((q_count, m), np.int32)
    seg = np.zeros((q_count, m), np.int32)
    mmask = np.zeros((q_count, m), bool)
    idx[q_of, col] = member
    seg[q_of, col] = s - q_of * k
    mmask[q_of, col] = True
    counts_qk = np.zeros(q_count * k, np.int32)
    counts_qk[:S] = counts
    cmask = np.zeros(q_count * k, np.float32)
    cmask[:S] = 1.0
    return ChunkLayout(member, s, starts, counts, q_of, col, idx, seg, mmask,
                       counts_qk.reshape(q_count, k), cmask.reshape(q_count, k))


def _check_blend_args(x, y_N, cluster_ids, free_clusters, *, iterations, lr, momentum, weights,
                      n_extractors, ipc, chunk_size, batch_size):
    """Validate :func:`blend_clusters`' arguments; returns host ``(y, cid, free, lr, chunk)``."""
    n = x.shape[0]
    y = np.asarray(y_N)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_N must be integer labels of shape [{n}]; got {y.dtype} {y.shape}")
    cid = np.asarray(cluster_ids)
    if cid.shape != (n,) or not np.issubdtype(cid.dtype, np.integer) or cid.min() < -1:
        raise ValueError(
            f"cluster_ids must be integers >= -1 of shape [{n}]; got {cid.dtype} {cid.shape}"
        )
    free = np.asarray(free_clusters)
    if free.ndim != 1 or free.size == 0 or not np.issubdtype(free.dtype, np.integer):
        raise ValueError(f"free_clusters must be a non-empty 1-D integer array; got {free.shape}")
    if np.unique(free).size != free.size or free.min() < 0:
        raise ValueError("free_clusters must be distinct non-negative cluster ids")
    if weights not in ("sum", "softmax"):
        raise ValueError(f"weights must be 'sum' or 'softmax'; got {weights!r}")
    if iterations < 0 or n_extractors < 1 or batch_size < 1:
        raise ValueError(
            "expected iterations >= 0, n_extractors >= 1, batch_size >= 1; got "
            f"{iterations}, {n_extractors}, {batch_size}"
        )
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1); got {momentum}")
    if lr is None:
        if ipc is None:
            raise ValueError("pass lr, or ipc to use the reference's learning-rate rule")
        lr = blend_lr(ipc)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number; got {lr}")
    chunk = free.size if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be None or >= 1; got {chunk_size}")
    return y, cid, free, lr, min(chunk, free.size)


def _check_blend_layout(lay: ChunkLayout, free: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Every free cluster has members, all of one class; returns each cluster's class ``[S]``."""
    if (lay.counts == 0).any():
        bad = free[lay.counts == 0][:10]
        raise ValueError(
            f"free clusters without members (e.g. {bad.tolist()}); pass the free clusters of "
            "split_free_residual, which skips empty clusters"
        )
    first = y[lay.member[lay.starts[:-1]]]
    if (y[lay.member] != first[lay.cluster]).any():
        raise ValueError("a free cluster mixes classes; clusters must be class-pure")
    return first


def _blend_chunks(lay: ChunkLayout, x, extractors, *, iterations, lr, momentum, apply_fn,
                  weights, batch_size, method):
    """Blend's compiled loop: per chunk, the targets, ``iterations`` SGD steps, the images.

    Every chunk has the same padded shapes, so each program compiles once (ahead of time, timed
    apart). The loops over chunks and iterations run on the host: each call is a large batched
    program, and on XLA:CPU the same forward/backward ran ≈1.4× slower inside a while loop
    (lax.scan) than as a top-level program (measured).

    Each stage is blocked on before the next starts, so the per-stage wall times add up to the
    loop's time (the steps depend on each other anyway; blocking costs one dispatch latency per
    iteration).

    Returns:
      ``((images [Q, K, h, w, c], wn [Q, M], losses [Q, iterations], guarded [Q, K]),
      compile_s, stage_s)``, the arrays ready (blocked); ``stage_s`` has the seconds spent in
      ``targets`` (gather + forward of the members), ``iterations`` and ``finish``, summed over
      chunks, and ``iteration_s`` (each step's seconds, in order).
    """
    idx, seg, mmask, counts, cmask = lay.idx, lay.seg, lay.mmask, lay.counts_qk, lay.cmask
    hyper = (jnp.float32(lr), jnp.float32(momentum), jnp.float32(1.0 / lay.counts.size))

    def step_args(q, w, buf, it, xm, mu):
        return (w, buf, jnp.int32(it), extractors, xm, seg[q], mmask[q], counts[q], cmask[q], mu,
                *hyper)

    prep, compile_s = compile_ahead(
        blend_prepare_jitted, extractors, x, idx[0], seg[0], mmask[0], counts[0],
        apply_fn=apply_fn, batch_size=int(batch_size), method=method,
    )
    clock = time.perf_counter
    t0 = clock()
    xm, mu, w = jax.block_until_ready(prep(extractors, x, idx[0], seg[0], mmask[0], counts[0]))
    first_targets_s = clock() - t0
    step, seconds = compile_ahead(
        blend_step_jitted, *step_args(0, w, jnp.zeros_like(w), 0, xm, mu), apply_fn=apply_fn,
        weights=weights, method=method,
    )
    compile_s += seconds
    finish, seconds = compile_ahead(_blend_finish, w, xm, seg[0], mmask[0], counts[0],
                                    weights=weights)
    compile_s += seconds

    outs, losses = [], []
    stage_s = {"targets": first_targets_s, "iterations": 0.0, "finish": 0.0, "iteration_s": []}
    for q in range(idx.shape[0]):
        t0 = clock()
        if q:
            xm, mu, w = jax.block_until_ready(prep(extractors, x, idx[q], seg[q], mmask[q],
                                                   counts[q]))
        buf = jnp.zeros_like(w)
        stage_s["targets"] += clock() - t0
        chunk_losses = []
        for it in range(iterations):
            t0 = clock()
            w, buf, loss = jax.block_until_ready(step(*step_args(q, w, buf, it, xm, mu)))
            stage_s["iteration_s"].append(clock() - t0)
            chunk_losses.append(loss)
        t0 = clock()
        outs.append(jax.block_until_ready(finish(w, xm, seg[q], mmask[q], counts[q])))
        losses.append(jnp.stack(chunk_losses) if iterations else jnp.zeros(0))
        stage_s["finish"] += clock() - t0
    stage_s["iterations"] = float(sum(stage_s["iteration_s"]))
    images, wn, guarded = (jnp.stack(o) for o in zip(*outs, strict=True))
    return (jax.block_until_ready((images, wn, jnp.stack(losses), guarded)), compile_s,
            stage_s)


def blend_clusters(
    apply_fn: ApplyFn,
    init_fn: InitFn,
    x_NxHxWxC: jax.Array,
    y_N: Any,
    cluster_ids: Any,
    free_clusters: Any,
    *,
    key: jax.Array,
    iterations: int = 12,
    lr: float | None = None,
    momentum: float = 0.5,
    weights: str = "sum",
    n_extractors: int = 1,
    ipc: int | None = None,
    chunk_size: int | None = 1024,
    batch_size: int = 1024,
    method: str | None = "features",
) -> BlendOutput:
    """Condense every free cluster into one blended image, all clusters at once (method.md §3.3).

    The extractor φ is a random frozen network ``init_fn(key)`` of the same architecture as the
    model (a key different from the partition's). With ``n_extractors > 1`` iteration ``it``
    uses a fresh ``init_fn(fold_in(key, it % n_extractors))`` and recomputes the targets μ_s
    (``n_extractors >= iterations``: a new extractor every iteration, the paper's expectation).
    To use one fixed, already built extractor pass ``init_fn=lambda key: params``.

    Args:
      apply_fn: ``apply_fn(params, x, method=method) -> [b, d]`` features.
      init_fn: ``init_fn(key) -> params``, pure (traced inside jit), e.g.
        :func:`jaxunlearn.models.init_fn_for`.
      x_NxHxWxC: training images ``[n, h, w, c]``.
      y_N: labels ``[n]``.
      cluster_ids: ``[n]`` cluster of each example; −1 excludes an example (use
        ``SplitOutput.blend_cluster_ids`` so only retain images are blended).
      free_clusters: ``[S]`` distinct cluster ids to blend, each with at least one member.
      key: PRNG key of the extractor(s).
      iterations: SGD iterations (12; 20 in the condensation comparison).
      lr: learning rate; ``None`` uses :func:`blend_lr` of ``ipc``.
      momentum: SGD momentum (0.5).
      weights: ``"sum"`` (w / Σw, the reference) or ``"softmax"``.
      n_extractors: 1 (one fixed φ, the reference) or more (see above).
      ipc: clusters per class, for the default ``lr``.
      chunk_size: clusters optimised together (bounds backward memory; the result does not
        depend on it); ``None``: all at once.
      batch_size: images per forward pass when computing the targets μ_s.
      method: ``apply_fn``'s method giving the embedding.

    Returns:
      A :class:`BlendOutput`; its ``loss_history`` is the full-batch loss over all S clusters.
    """
    jax.block_until_ready(x_NxHxWxC)  # pending upstream work is not this stage's time
    t0 = time.perf_counter()
    check_compile_s = check_images(x_NxHxWxC)
    y, cid, free, lr, chunk = _check_blend_args(
        x_NxHxWxC, y_N, cluster_ids, free_clusters, iterations=iterations, lr=lr,
        momentum=momentum, weights=weights, n_extractors=n_extractors, ipc=ipc,
        chunk_size=chunk_size, batch_size=batch_size,
    )
    lay = chunk_layout(cid, free, chunk)
    labels = _check_blend_layout(lay, free, y)

    # Extractors: init_fn(key) for the reference's single φ; otherwise one per distinct
    # iteration index it % n_extractors (never more than `iterations` of them).
    n_distinct = 1 if n_extractors == 1 else max(1, min(n_extractors, iterations))
    keys = key[None] if n_extractors == 1 else jax.vmap(
        lambda i: jax.random.fold_in(key, i))(jnp.arange(n_distinct))
    extractors, _, init_compile_s = timed(init_extractors, keys, init_fn=init_fn)
    (images, wn, losses, guarded), compile_s, stage_s = _blend_chunks(
        lay, jnp.asarray(x_NxHxWxC), extractors, iterations=iterations, lr=lr,
        momentum=momentum, apply_fn=apply_fn, weights=weights, batch_size=batch_size,
        method=method,
    )
    compile_s += init_compile_s + check_compile_s

    S = free.size
    images = images.reshape(-1, *images.shape[2:])[:S]
    m_max = int(lay.counts.max())
    within = np.arange(lay.member.size) - lay.starts[lay.cluster]
    w_pad = np.zeros((S, m_max), np.float32)
    i_pad = np.full((S, m_max), -1, np.int32)
    w_pad[lay.cluster, within] = np.asarray(wn)[lay.chunk, lay.col]
    i_pad[lay.cluster, within] = lay.member
    wall = time.perf_counter() - t0
    return BlendOutput(
        images=images,
        labels=labels.astype(np.int32),
        cluster_ids=free.astype(np.int32),
        weights=w_pad,
        member_idx=i_pad,
        loss_history=np.asarray(losses, np.float64).sum(axis=0),
        n_guarded=int(np.asarray(guarded).reshape(-1)[:S].sum()),
        lr=float(lr),
        timings={"blend_s": wall - compile_s, "blend_compile_s": compile_s,
                 "blend_targets_s": stage_s["targets"],
                 "blend_iterations_s": stage_s["iterations"],
                 "blend_finish_s": stage_s["finish"],
                 "blend_iteration_s": stage_s["iteration_s"]},
    )


def reduced_retain_set(
    x_NxHxWxC: jax.Array, y_N: Any, split: SplitOutput, blend: BlendOutput | None
) -> tuple[jax.Array, jax.Array]:
    """The reduced retain set R_residual ∪ {x̃_s} (method.md §3.3): residual images, then blended.

    Args:
      x_NxHxWxC: training images ``[n, h, w, c]``.
      y_N: labels ``[n]``.
      split: the :class:`SplitOutput` of the forget request.
      blend: the :class:`BlendOutput` of its free clusters (``None`` when there are none).

    Returns:
      ``(x [n_residual + S, h, w, c], y [n_residual + S] int32)``.
    """
    ridx = jnp.asarray(split.residual_idx)
    xs = [jnp.asarray(x_NxHxWxC)[ridx]]
    ys = [jnp.asarray(y_N, jnp.int32)[ridx]]
    if blend is not None:
        xs.append(blend.images.astype(xs[0].dtype))
        ys.append(jnp.asarray(blend.labels, jnp.int32))
    return jnp.concatenate(xs), jnp.concatenate(ys)


class CondenseOutput(NamedTuple):
    """Reduced retain set of one forget request with its stages (docs/method.md §3.2–3.3).

    Attributes:
      x, y: the reduced retain set ``[n_reduced, h, w, c]``, ``[n_reduced]``.
      split: the :class:`SplitOutput`.
      blend: the :class:`BlendOutput` (``None`` when no cluster is free).
      sizes: ``n_retain``, ``n_reduced``, ``n_free``, ``n_residual``, ``n_empty_free``,
        ``reduction`` (1 − n_reduced / n_retain).
      timings: ``split_s``, ``blend_s``, ``blend_compile_s``, ``total_s`` (split + blend run
        times, without compilation).
    """

    x: jax.Array
    y: jax.Array
    split: SplitOutput
    blend: BlendOutput | None
    sizes: dict[str, float]
    timings: dict[str, float]


def condense(
    apply_fn: ApplyFn,
    init_fn: InitFn,
    x_NxHxWxC: jax.Array,
    y_N: Any,
    partition: PartitionOutput,
    forget_idx: Any,
    retain_idx: Any,
    *,
    key: jax.Array,
    **blend_kwargs: Any,
) -> CondenseOutput:
    """Split + Blend + reduced retain set for one forget request (docs/method.md §3.2–3.3).

    Args:
      apply_fn, init_fn: the extractor's architecture (see :func:`blend_clusters`).
      x_NxHxWxC, y_N: the training set ``[n, h, w, c]``, ``[n]``.
      partition: the partition of the training set (``partition_by_class``).
      forget_idx, retain_idx: disjoint index sets of the training set.
      key: PRNG key of the Blend extractor (not the partition's).
      **blend_kwargs: passed to :func:`blend_clusters` (``ipc`` defaults to the partition's).

    Returns:
      A :class:`CondenseOutput`.
    """
    split = split_free_residual(
        partition.cluster_ids, forget_idx, retain_idx, partition.num_classes * partition.ipc
    )
    blend = None
    if split.n_free:
        blend_kwargs.setdefault("ipc", partition.ipc)
        blend = blend_clusters(
            apply_fn, init_fn, x_NxHxWxC, y_N, split.blend_cluster_ids, split.free_clusters,
            key=key, **blend_kwargs,
        )
    x_red, y_red = reduced_retain_set(x_NxHxWxC, y_N, split, blend)
    bt = ({k: blend.timings[k] for k in ("blend_s", "blend_compile_s")} if blend is not None
          else {"blend_s": 0.0, "blend_compile_s": 0.0})
    timings = {**split.timings, **bt, "total_s": split.timings["split_s"] + bt["blend_s"]}
    sizes = {
        "n_retain": split.n_retain,
        "n_reduced": split.reduced_size,
        "n_free": split.n_free,
        "n_residual": split.n_residual,
        "n_empty_free": split.n_empty_free,
        "reduction": 1.0 - split.reduced_size / split.n_retain,
    }
    return CondenseOutput(x_red, y_red, split, blend, sizes, timings)
