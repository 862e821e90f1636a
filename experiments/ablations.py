"""The paper's ablation of the retain set given to the unlearning method (CINIC-10 in the paper).

    python -m experiments.ablations --workdir runs/ablations                     # embedded digits
    python -m experiments.ablations --config cinic10 --workdir runs/abl --data_dir D   # paper, GPU
    python -m experiments.ablations --workdir runs/abl2 --set 'variants=["blend","full_retain"]'

One script, seven retain sets (``variants``, a config value), each unlearned with L1-Sparse under
10% uniform forgetting as in the paper. With the partition of the training set into clusters and
the free/residual split of the forget request (SPEC §3.1–3.2):

==================  ==========================================================================
variant             retain set trained on
==================  ==========================================================================
condense_all        every cluster's retain images blended into one image (no split)
blend               residual images raw + free clusters blended: the method (SPEC §3.3)
condensed_free      free clusters blended, residual images dropped
free_raw            free clusters' images, raw
condensed_residual  touched clusters' retain images blended, free images dropped
residual_raw        residual images, raw
full_retain         the whole retain set, raw (no partition, no condensation)
==================  ==========================================================================

Each record reports the MIA score, the accuracy on the free and on the residual retain images
(always the real images), forget and test accuracy, the unlearning time and the end-to-end time
(+ partition, split and Blend stages the variant needs). Variants that train on blended images
use the method's with-condensation hyper-parameters (``method_hparams_dc``), the others those
without. A variant whose set is empty for a seed (e.g. no free cluster) is skipped with a message.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from experiments.common import (
    append_record,
    base_record,
    load_records,
    log,
    main_study,
    make_forget,
    open_study,
    original_record,
    prepare_seed,
    run_one,
    write_results,
)
from experiments.configs.base import StudyConfig
from experiments.configs.uniform import DATASET_CONFIGS
from experiments.configs.uniform import get_config as uniform_config
from jaxunlearn.unlearn import make_unlearn_data

__all__ = ["VARIANTS", "AblationConfig", "get_config", "main", "run", "variant_sets"]

VARIANTS: dict[str, str] = {
    "condense_all": "condense all retain images",
    "blend": "residual raw + condensed free (the method)",
    "condensed_free": "condensed free images only",
    "free_raw": "free images, raw",
    "condensed_residual": "condensed residual images only",
    "residual_raw": "residual images, raw",
    "full_retain": "full retain set, raw",
}
# which Blend each variant needs: over the free clusters, every cluster, the touched clusters
_BLEND_OF = {"condense_all": "all", "blend": "free", "condensed_free": "free",
             "condensed_residual": "residual"}


@dataclasses.dataclass
class AblationConfig(StudyConfig):
    """A study configuration with the retain-set variants to compare."""

    variants: tuple = tuple(VARIANTS)


def get_config(name: str = "digits") -> AblationConfig:
    """The ablation on the dataset configuration ``name``: L1-Sparse, 10% uniform forgetting."""
    base = uniform_config(name, 0.1)
    cfg = AblationConfig(**dataclasses.asdict(base))
    cfg.name = "ablations"
    cfg.methods = ("l1_sparse",)
    cfg.condensation = (False, True)  # only picks the hyper-parameters per variant, see above
    return cfg


def _key(r: dict) -> tuple:
    return (r["method"], r.get("variant"), int(r["seed"]))


def variant_sets(cfg: StudyConfig, paths, ctx, forget, variants) -> dict:
    """Partition, split and the Blends the ``variants`` need.

    Returns a dict with ``free_idx``/``residual_idx`` (training-set indices of the raw free and
    residual retain images), ``split``, ``partition`` and, per variant, ``(x, y, stages)`` under
    ``sets[variant]`` (``None`` when its set is empty); ``blend_free`` is the BlendOutput of the
    free clusters when computed (for the figure).
    """
    from experiments.condensation import condense_net, partition_for_seed
    from jaxunlearn.condense import blend_clusters, split_free_residual
    from jaxunlearn.partition import init_fn_for

    s = ctx.splits
    part = partition_for_seed(cfg, paths, ctx)
    n_clusters = part.num_classes * part.ipc
    split = split_free_residual(part.cluster_ids, forget.forget_idx, forget.retain_idx,
                                n_clusters)
    free_idx = np.flatnonzero(split.blend_cluster_ids >= 0)
    residual_idx = np.asarray(split.residual_idx)
    net = condense_net(cfg, s.train_x.shape[1:], s.num_classes)
    init_fn = init_fn_for(net, s.train_x.shape[1:])
    cid = np.asarray(part.cluster_ids)

    blends: dict = {}

    def blend(which: str):
        if which in blends:
            return blends[which]
        ids = np.full(cid.shape, -1, np.int32)
        members = {"free": free_idx, "all": np.asarray(forget.retain_idx),
                   "residual": residual_idx}[which]
        ids[members] = cid[members]
        clusters = np.unique(ids[ids >= 0]).astype(np.int32)
        if which == "free":
            clusters = np.asarray(split.free_clusters)
        out = None
        if clusters.size:
            out = blend_clusters(net.apply, init_fn, s.train_x, s.train_y, ids, clusters,
                                 key=ctx.keys["extractor"], ipc=cfg.ipc, **cfg.blend)
        blends[which] = out
        return out

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
            b = blend(_BLEND_OF[v])
            if b is not None:
                xs.append(np.asarray(b.images))
                ys.append(np.asarray(b.labels))
                stages["blend_s"] = b.timings["blend_s"]
        n = sum(len(y) for y in ys)
        sets[v] = (np.concatenate(xs), np.concatenate(ys), stages) if n else None
    return {"free_idx": free_idx, "residual_idx": residual_idx, "split": split,
            "partition": part, "sets": sets, "blend_free": blends.get("free")}


def _split_accs(cfg, ctx, params, free, residual) -> dict:
    """Accuracy (percent) on the raw free and residual retain images (None when empty)."""
    from jaxunlearn.metrics import accuracy

    return {name: (accuracy(ctx.apply_fn, params, *xy, batch_size=cfg.eval_batch_size)
                   if len(xy[1]) else None)
            for name, xy in (("free_acc", free), ("residual_acc", residual))}


def run(config: StudyConfig, workdir: str) -> list[dict]:
    """Run the ablation ``config`` into ``workdir``; return all its records."""
    cfg = config
    variants = tuple(getattr(cfg, "variants", VARIANTS))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown or no variants {list(unknown)}; expected some of "
                         f"{list(VARIANTS)}")
    if cfg.scenario != "uniform":
        raise ValueError(f"the paper's ablation forgets uniformly; got scenario {cfg.scenario!r}")
    paths, ds, done = open_study(cfg, workdir, key=_key)
    methods_cache: dict = {}
    for seed in cfg.seeds:
        pending = [(m, v) for v in variants for m in cfg.methods if (m, v, seed) not in done]
        if not pending and ("original", None, seed) in done:
            log(f"seed {seed}: all records present, skipping")
            continue
        ctx = prepare_seed(cfg, paths, ds, seed)
        forget = make_forget(cfg, ctx)
        t0 = time.perf_counter()
        vs = variant_sets(cfg, paths, ctx, forget, sorted({v for _, v in pending}))
        log(f"seed {seed}: partition, split and Blends in {time.perf_counter() - t0:.1f}s; "
            f"{len(vs['free_idx'])} free and {len(vs['residual_idx'])} residual retain images")
        s = ctx.splits
        free = (s.train_x[vs["free_idx"]], s.train_y[vs["free_idx"]])
        residual = (s.train_x[vs["residual_idx"]], s.train_y[vs["residual_idx"]])

        base = {**base_record(cfg, ctx, forget, 0), "n_free_images": int(len(vs["free_idx"])),
                "n_residual": int(len(vs["residual_idx"])),
                "n_free_clusters": int(vs["split"].n_free)}
        if ("original", None, seed) not in done:
            rec = original_record(cfg, ctx, forget, base)
            append_record(paths.records,
                          {**rec, **_split_accs(cfg, ctx, ctx.original, free, residual)})
        if vs["blend_free"] is not None and seed == cfg.seeds[0]:
            from experiments.plots import blend_grid_from_output

            blend_grid_from_output(os.path.join(paths.root, "blend_grid.png"), s.train_x,
                                   vs["blend_free"], seed=seed,
                                   title=f"Blend of free clusters ({cfg.dataset}, seed {seed}): "
                                         "blended image (red) and its cluster's members")
        for name, v in pending:
            got = vs["sets"][v]
            if got is None:
                log(f"seed {seed} {name} [{v}]: empty retain set for this variant, skipped")
                continue
            x, y, stages = got
            condensed = v in _BLEND_OF
            data = make_unlearn_data((x, y), (s.train_x[forget.forget_idx],
                                              s.train_y[forget.forget_idx]),
                                     (s.unseen_x, s.unseen_y), s.num_classes)
            rec = run_one(cfg, paths, ctx, forget, name, condensed, data, stages, methods_cache,
                          {**base, "variant": v, "variant_desc": VARIANTS[v]})
            params = rec.pop("_params")
            append_record(paths.records, {**rec, **_split_accs(cfg, ctx, params, free, residual)})
        write_results(paths)
    write_results(paths)
    return load_records(paths.records)


def main(argv=None) -> int:
    return main_study(get_config, __doc__.splitlines()[0], argv, runner=run,
                      configs=list(DATASET_CONFIGS))


if __name__ == "__main__":
    sys.exit(main())
