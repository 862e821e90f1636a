"""The paper's ablation of the retain set given to the unlearning method (CINIC-10 in the paper).

    python -m experiments.ablations --workdir runs/ablations                     # embedded digits
    python -m experiments.ablations --config cinic10 --workdir runs/abl --data_dir D   # paper, GPU
    python -m experiments.ablations --workdir runs/abl2 --set 'variants=["blend","full_retain"]'

One script, seven retain sets (``variants``, a config value), each unlearned with L1-Sparse under
10% uniform forgetting as in the paper. With the partition of the training set into clusters and
the free/residual split of the forget request (docs/method.md §3.1–3.2):

==================  ==========================================================================
variant             retain set trained on
==================  ==========================================================================
condense_all        every cluster's retain images blended into one image (no split)
blend               residual images raw + free clusters blended: the method (docs/method.md §3.3)
condensed_free      free clusters blended, residual images dropped
free_raw            free clusters' images, raw
condensed_residual  touched clusters' retain images blended, free images dropped
residual_raw        residual images, raw
full_retain         the whole retain set, raw (no partition, no condensation)
==================  ==========================================================================

As in the reference's ``ablative_v1``, ``v3`` and ``v5.py``, the three variants that condense a
subset other than the method's free clusters (``condense_all``, ``condensed_free``,
``condensed_residual``) first re-cluster that subset: a fresh random ConvNet and per-class k-means
with k = ipc, or k = min(ipc, n_c) where a class of the subset has fewer images than ipc (then
each of its images is its own cluster; digits' small classes); their stage times include it.
``--set recluster=false`` blends the seed's original clusters instead (this library's earlier
choice, so the set sizes differ). ``blend`` uses the original partition's free clusters, as the
method does.

Each record reports the MIA score, the accuracy on the free and on the residual retain images
(always the real images), forget and test accuracy, the unlearning time and the end-to-end time
(+ partition, split and Blend stages the variant needs). Every variant, raw or blended, uses the
method's with-condensation hyper-parameters (``method_hparams_dc``), as the reference's ablation
scripts all load the ``*_condense_hyperparameters.json`` files (L1-Sparse lr 5e-3 on CINIC-10);
``--set variant_hparams=by_set`` gives the raw variants the values without condensation. A
variant whose set is empty for a seed (e.g. no free cluster) is skipped with a message.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from experiments import cli
from experiments.condensation import convnet, partition_for_seed, recluster
from experiments.configs.base import StudyConfig
from experiments.configs.uniform import DATASET_CONFIGS
from experiments.configs.uniform import get_config as uniform_config
from experiments.io import log
from experiments.plots import blend_grid_from_output
from experiments.study import Column, Columns, RetainSet, SeedColumns, run_study
from jaxunlearn.condense import blend_clusters, split_free_residual
from jaxunlearn.metrics import accuracy
from jaxunlearn.models import init_fn_for

__all__ = ["VARIANTS", "VARIANT_COLUMNS", "AblationConfig", "get_config", "main", "run",
           "variant_sets"]

VARIANTS: dict[str, str] = {
    "condense_all": "condense all retain images",
    "blend": "residual raw + condensed free (the method)",
    "condensed_free": "condensed free images only",
    "free_raw": "free images, raw",
    "condensed_residual": "condensed residual images only",
    "residual_raw": "residual images, raw",
    "full_retain": "full retain set, raw",
}
# the retain images each blended variant condenses; "free_clusters" is the method's Blend of the
# original partition's free clusters, the others are re-clustered first (unless recluster=False)
_BLEND_OF = {"condense_all": "all", "blend": "free_clusters", "condensed_free": "free",
             "condensed_residual": "residual"}
_SALT = {"all": 1, "free": 2, "residual": 3}  # a fresh ψ and k-means key per re-clustered subset
VARIANT_HPARAMS = ("dc", "by_set")


@dataclasses.dataclass
class AblationConfig(StudyConfig):
    """A study configuration with the retain-set variants to compare."""

    variants: tuple[str, ...] = tuple(VARIANTS)
    recluster: bool = True         # re-cluster the subsets of v1/v3/v5 (reference) | original ids
    variant_hparams: str = "dc"    # dc: every variant the DC values (reference) | by_set


def get_config(name: str = "digits", scale: str | None = None) -> AblationConfig:
    """The ablation on the dataset configuration ``name``: L1-Sparse, 10% uniform forgetting."""
    base = uniform_config(name, 0.1, scale)
    cfg = AblationConfig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    cfg.name = "ablations"
    cfg.methods = ("l1_sparse",)
    # the columns are the variants (VARIANT_COLUMNS), not this field; it stays (False, True) so
    # the preflight checks ipc against the classes, as every variant but one needs the partition
    cfg.condensation = (False, True)
    return cfg


def variant_sets(cfg: StudyConfig, paths, ctx, forget, variants) -> dict:
    """Partition, split and the Blends the ``variants`` need.

    Returns a dict with ``free_idx``/``residual_idx`` (training-set indices of the raw free and
    residual retain images), ``split``, ``partition`` and, per variant, ``(x, y, stages)`` under
    ``sets[variant]`` (``None`` when its set is empty); ``blend_free`` is the BlendOutput of the
    free clusters when computed (for the figure).
    """
    s = ctx.splits
    part = partition_for_seed(cfg, paths, ctx)
    n_clusters = part.num_classes * part.ipc
    split = split_free_residual(part.cluster_ids, forget.forget_idx, forget.retain_idx,
                                n_clusters)
    free_idx = np.flatnonzero(split.blend_cluster_ids >= 0)
    residual_idx = np.asarray(split.residual_idx)
    net = convnet(cfg.condense_net, s.train_x.shape[1:], s.num_classes)
    init_fn = init_fn_for(net, s.train_x.shape[1:])
    cid = np.asarray(part.cluster_ids)

    blends: dict = {}

    def blend(which: str):
        """``(BlendOutput or None, {"embed_s", "kmeans_s"} of a re-clustering)``."""
        if which in blends:
            return blends[which]
        timings = {"embed_s": 0.0, "kmeans_s": 0.0}
        members = {"free": free_idx, "all": np.asarray(forget.retain_idx),
                   "residual": residual_idx}.get(which)
        if which == "free_clusters":
            ids, clusters = np.asarray(split.blend_cluster_ids), np.asarray(split.free_clusters)
        elif cfg.recluster:
            ids, clusters, timings = recluster(cfg, ctx, members, _SALT[which])
        else:
            ids = np.full(cid.shape, -1, np.int32)
            ids[members] = cid[members]
            clusters = np.unique(ids[ids >= 0]).astype(np.int32)
        out = None
        if clusters.size:
            out = blend_clusters(net.apply, init_fn, s.train_x, s.train_y, ids, clusters,
                                 key=ctx.keys["extractor"], ipc=cfg.ipc,
                                 **dataclasses.asdict(cfg.blend))
        blends[which] = out, timings
        return blends[which]

    partition_stage = {"embed_s": part.timings["embed_s"], "kmeans_s": part.timings["kmeans_s"]}
    split_s = split.timings["split_s"]
    sets = {}
    for v in variants:
        if v == "full_retain":
            sets[v] = (s.train_x[forget.retain_idx], s.train_y[forget.retain_idx], None)
            continue
        stages = {**partition_stage, "split_s": 0.0 if v == "condense_all" else split_s,
                  "blend_s": 0.0}
        xs, ys = [], []
        if v in ("blend", "residual_raw"):
            xs.append(s.train_x[residual_idx])
            ys.append(s.train_y[residual_idx])
        if v == "free_raw":
            xs.append(s.train_x[free_idx])
            ys.append(s.train_y[free_idx])
        if v in _BLEND_OF:
            b, reclustered = blend(_BLEND_OF[v])
            for k, t in reclustered.items():  # the re-clustering is part of this variant's work
                stages[k] += t
            if b is not None:
                xs.append(np.asarray(b.images))
                ys.append(np.asarray(b.labels))
                stages["blend_s"] = b.timings["blend_s"]
        n = sum(len(y) for y in ys)
        sets[v] = (np.concatenate(xs), np.concatenate(ys), stages) if n else None
    return {"free_idx": free_idx, "residual_idx": residual_idx, "split": split,
            "partition": part, "sets": sets,
            "blend_free": blends.get("free_clusters", (None,))[0]}


def _seed_columns(cfg: StudyConfig, paths, ctx, forget) -> SeedColumns:
    """Partition, split and Blends of one seed; records carry the split's sizes and every
    model's accuracy on the raw free and residual retain images."""
    t0 = time.perf_counter()
    vs = variant_sets(cfg, paths, ctx, forget, sorted(cfg.variants))
    log(f"seed {ctx.seed}: partition, split and Blends in {time.perf_counter() - t0:.1f}s; "
        f"{len(vs['free_idx'])} free and {len(vs['residual_idx'])} residual retain images")
    s = ctx.splits
    if vs["blend_free"] is not None and ctx.seed == cfg.seeds[0]:
        blend_grid_from_output(os.path.join(paths.root, "blend_grid.png"), s.train_x,
                               vs["blend_free"], seed=ctx.seed,
                               title=f"Blend of free clusters ({cfg.dataset}, seed {ctx.seed}): "
                                     "blended image (red) and its cluster's members")
    sizes = {"n_free_images": int(len(vs["free_idx"])), "n_residual": int(len(vs["residual_idx"])),
             "n_free_clusters": int(vs["split"].n_free)}
    raw = {"free_acc": vs["free_idx"], "residual_acc": vs["residual_idx"]}

    def retain_set(column: Column, round_: int, forget_) -> RetainSet | None:
        got = vs["sets"][column.variant]
        return None if got is None else RetainSet(*got)

    def fields(column: Column | None) -> dict:
        if column is None:  # the original model's record
            return sizes
        return {**sizes, "variant": column.variant, "variant_desc": VARIANTS[column.variant],
                "dc_hparams": column.takes_dc_hparams}

    def metrics(params) -> dict:
        """Accuracy (percent) on the raw free and residual retain images (None when empty)."""
        return {name: (accuracy(ctx.apply_fn, params, s.train_x[idx], s.train_y[idx],
                                batch_size=cfg.eval_batch_size) if len(idx) else None)
                for name, idx in raw.items()}

    return SeedColumns(retain_set, fields, metrics)


def _variant_columns(cfg: StudyConfig) -> list[Column]:
    by_set = getattr(cfg, "variant_hparams", "dc") == "by_set"
    return [Column(v in _BLEND_OF, v, None if by_set else True) for v in cfg.variants]


VARIANT_COLUMNS = Columns(_variant_columns, _seed_columns)
"""One column per retain-set variant; the DC hyper-parameters for all (``variant_hparams``)."""


def run(config: StudyConfig, workdir: str) -> list[dict]:
    """Run the ablation ``config`` into ``workdir``; return all its records."""
    variants = tuple(getattr(config, "variants", ()))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown or no variants {list(unknown)}; expected some of "
                         f"{list(VARIANTS)}")
    if getattr(config, "variant_hparams", "dc") not in VARIANT_HPARAMS:
        raise ValueError(f"variant_hparams must be one of {VARIANT_HPARAMS}; got "
                         f"{config.variant_hparams!r}")
    if config.scenario != "uniform":
        raise ValueError(f"the paper's ablation forgets uniformly; got scenario "
                         f"{config.scenario!r}")
    return run_study(config, workdir, VARIANT_COLUMNS)


def main(argv=None) -> int:
    return cli.main(get_config, run, __doc__, argv, configs=list(DATASET_CONFIGS),
                    scales=True)


if __name__ == "__main__":
    sys.exit(main())
