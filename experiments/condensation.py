"""Blend condensation inside a study: the partition once per seed (cached), then split + Blend per
forget request (docs/method.md §3). The library does the work (:mod:`jaxunlearn.partition`,
:mod:`jaxunlearn.condense`); this module only picks the networks, caches and reports times."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

import jax
import numpy as np

from experiments.io import atomic_write, exists
from experiments.plots import blend_grid_from_output
from experiments.seeds import partition_keys
from jaxunlearn import sharding
from jaxunlearn.condense import condense
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.partition import KMeansOptions, PartitionOutput, partition_by_class

__all__ = ["condense_for_study", "convnet", "kmeans_options", "partition_for_seed",
           "partition_images", "recluster"]

_TIMING_KEYS = ("embed_s", "kmeans_s", "embed_compile_s", "kmeans_compile_s")


def convnet(net: Any, image_shape: tuple, num_classes: int):
    """The random, never-trained ConvNet of ψ and φ (docs/method.md §3.1, §3.3), or any ConvNet of a
    :class:`~experiments.configs.base.NetSettings` (depth None: 3 at 32×32, 2 below)."""
    depth = net.depth or (3 if image_shape[0] >= 32 else 2)
    return build_model("convnet", num_classes, depth=depth, width=net.width)


def kmeans_options(cfg: Any) -> KMeansOptions:
    """The k-means settings of ``cfg``: its procedure (``reference``, the default, or
    ``sklearn``; see :class:`jaxunlearn.partition.KMeansOptions`)."""
    return KMeansOptions(procedure=cfg.kmeans_procedure)


def partition_images(cfg: Any, x: Any, y: Any, *, num_classes: int, net_classes: int,
                     psi_key: Any, kmeans_key: Any) -> PartitionOutput:
    """The Blend partition of images ``x`` (labels ``y`` in ``[0, num_classes)``): features of
    a random, never-trained ConvNet ψ (``cfg.condense_net`` with a head of ``net_classes``,
    initialised from ``psi_key``), then ``cfg.ipc`` k-means clusters per class."""
    net = convnet(cfg.condense_net, x.shape[1:], net_classes)
    psi = init_fn_for(net, x.shape[1:])(psi_key)
    return partition_by_class(net.apply, psi, x, y, num_classes=num_classes, ipc=cfg.ipc,
                              key=kmeans_key, kmeans=kmeans_options(cfg))


def partition_for_seed(cfg: Any, paths: Any, ctx: Any) -> PartitionOutput:
    """The seed's k-means partition of the training set, computed once and cached on disk."""
    path = os.path.join(paths.root, f"partition_seed{ctx.seed}_ipc{cfg.ipc}_"
                                    f"{cfg.kmeans_procedure}.npz")
    if exists(path):
        with np.load(path) as z:
            fields = {k: z[k] for k in z.files if k != "timings"}
            timings = json.loads(str(z["timings"]))
        return PartitionOutput(**{**fields, "ipc": int(fields["ipc"]),
                                  "num_classes": int(fields["num_classes"]),
                                  "inertia": float(fields["inertia"]),
                                  "n_empty": int(fields["n_empty"]), "timings": timings})
    s = ctx.splits
    psi_key, kmeans_key = partition_keys(ctx.keys)
    part = partition_images(cfg, s.train_x, s.train_y, num_classes=s.num_classes,
                            net_classes=s.num_classes, psi_key=psi_key, kmeans_key=kmeans_key)
    arrays = {k: np.asarray(v) for k, v in part._asdict().items() if k != "timings"}
    buf = io.BytesIO()
    np.savez(buf, timings=json.dumps(part.timings), **arrays)
    atomic_write(path, buf.getvalue())
    return part


def recluster(cfg: Any, ctx: Any, idx: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray,
                                                                        dict[str, float]]:
    """Partition the training images ``idx`` afresh, as the reference's ablations do.

    The reference's ``ablative_v1/v3/v5.py`` re-cluster the subset they condense
    (``create_sub_classes`` with k = the study's ipc and a fresh random ConvNet) before Blend.
    Here: a fresh ψ (the seed's partition keys folded with ``salt``) and per-class k-means with
    k = min(ipc, n_c): a class of the subset with at most ``ipc`` images (digits' small classes)
    keeps each image as its own cluster, since k-means cannot make more clusters than points.

    Returns:
      ``(cluster_ids, clusters, timings)``: ``[n_train]`` int32 ids (``c * ipc + j``; −1 outside
      ``idx``), the ``[S]`` non-empty cluster ids, ``{"embed_s", "kmeans_s"}`` (0 when every
      class was small).
    """
    s, ipc = ctx.splits, cfg.ipc
    idx = np.asarray(idx)
    y = s.train_y[idx]
    counts = np.bincount(y, minlength=s.num_classes)
    ids = np.full(len(s.train_y), -1, np.int32)
    small = np.isin(y, np.flatnonzero(counts <= ipc))
    if small.any():  # one cluster per image: its rank within its class
        rows, labels = idx[small], y[small]
        order = np.argsort(labels, kind="stable")
        first = np.searchsorted(labels[order], labels[order])
        ids[rows[order]] = labels[order] * ipc + (np.arange(len(order)) - first)
    timings = {"embed_s": 0.0, "kmeans_s": 0.0}
    big = np.flatnonzero(counts > ipc)
    if big.size:
        rows = idx[~small]
        local = np.full(s.num_classes, -1, np.int32)
        local[big] = np.arange(big.size)
        psi_key, kmeans_key = (jax.random.fold_in(k, salt) for k in partition_keys(ctx.keys))
        part = partition_images(cfg, s.train_x[rows], local[s.train_y[rows]],
                                num_classes=int(big.size), net_classes=s.num_classes,
                                psi_key=psi_key, kmeans_key=kmeans_key)
        cid = np.asarray(part.cluster_ids)
        ids[rows] = big[cid // ipc] * ipc + cid % ipc
        timings = {k: part.timings[k] for k in timings}
    return ids, np.unique(ids[ids >= 0]).astype(np.int32), timings


def condense_for_study(cfg: Any, paths: Any, ctx: Any, forget: Any) -> dict:
    """Reduced retain set for ``forget`` and its stage times (compile time apart).

    Returns a dict with ``x``, ``y`` (the reduced retain set) and ``embed_s``, ``kmeans_s``,
    ``split_s``, ``blend_s``, ``condense_compile_s``, ``n_free``, ``n_residual``,
    ``n_empty_free``, ``reduction``.
    """
    s = ctx.splits
    part = partition_for_seed(cfg, paths, ctx)
    net = convnet(cfg.condense_net, s.train_x.shape[1:], s.num_classes)
    out = condense(net.apply, init_fn_for(net, s.train_x.shape[1:]), s.train_x, s.train_y, part,
                   forget.forget_idx, forget.retain_idx, key=ctx.keys["extractor"],
                   **dataclasses.asdict(cfg.blend))
    grid = os.path.join(paths.root, "blend_grid.png")
    # the first condensed request's, drawn by the process that writes files
    if out.blend is not None and sharding.is_primary() and not os.path.exists(grid):
        blend_grid_from_output(grid, s.train_x, out.blend, seed=ctx.seed,
                               title=f"Blend ({cfg.dataset}, seed {ctx.seed}, ipc {cfg.ipc}): "
                                     "blended image (red) and its cluster's members")
    t = {**part.timings, **out.timings}
    return {
        "x": np.asarray(out.x), "y": np.asarray(out.y),
        "embed_s": t["embed_s"], "kmeans_s": t["kmeans_s"], "split_s": t["split_s"],
        "blend_s": t["blend_s"],
        "condense_compile_s": t["embed_compile_s"] + t["kmeans_compile_s"] + t["blend_compile_s"],
        "n_free": int(out.sizes["n_free"]), "n_residual": int(out.sizes["n_residual"]),
        "n_empty_free": int(out.sizes["n_empty_free"]), "reduction": float(out.sizes["reduction"]),
    }
