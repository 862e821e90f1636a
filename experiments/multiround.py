"""Multi-round uniform forgetting (SPEC §1; the paper's multi-round study, CINIC-10 in the paper).

    python -m experiments.multiround --workdir runs/multiround                 # embedded digits
    python -m experiments.multiround --config cinic10 --workdir runs/mr --data_dir D   # paper, GPU

Round 0 forgets ``forget_fraction`` (10%) of the training set; round r forgets 10% of the retain
set left after round r−1 (cumulative 10% → 19% → 27.1% over the default 3 rounds). Every method
continues from *its own* previous-round model (SCRUB-style teachers are that model too, since the
methods take their starting parameters as teacher). With condensation the k-means partition of
a seed is computed once (round 0, cached on disk) and reused; the free/residual split and Blend
are redone each round against the cumulative forget set. Each round's record carries ``round``;
its ``total_s`` is that round's unlearning plus its condensation (split + Blend), and round 0's
also includes the partition (embedding + k-means). Evaluation uses the cumulative forget set.

Resuming: finished rounds are not recomputed; each method's latest model is checkpointed under
``checkpoints/multiround/`` so the next round continues from it after an interruption.
"""

from __future__ import annotations

import os
import shutil
import sys

import jax

from experiments.common import (
    append_record,
    base_record,
    build_unlearn_data,
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
from jaxunlearn import data as jdata

__all__ = ["get_config", "main", "round_forget_sets", "run"]


def get_config(name: str = "digits") -> StudyConfig:
    """The multi-round study on the dataset configuration ``name`` (10% per round, 3 rounds)."""
    cfg = uniform_config(name, 0.1)
    cfg.name = "multiround"
    cfg.rounds = 3
    return cfg


def round_forget_sets(cfg: StudyConfig, ctx) -> list:
    """The cumulative forget set of every round (round r draws with seed ``seed + 1000 r``)."""
    sets = [make_forget(cfg, ctx)]
    for r in range(1, cfg.rounds):
        sets.append(jdata.next_round_forget(ctx.splits.train_y, sets[-1], cfg.forget_fraction,
                                            seed=ctx.seed + 1000 * r,
                                            num_classes=ctx.splits.num_classes))
    return sets


def _round_base(cfg: StudyConfig, ctx, forgets: list, r: int) -> dict:
    new = len(forgets[r].forget_idx) - (len(forgets[r - 1].forget_idx) if r else 0)
    return {**base_record(cfg, ctx, forgets[r], r), "new_forget_size": int(new)}


def _ckpt_path(paths, name: str, condensed: bool, seed: int, round_: int) -> str:
    return os.path.join(paths.checkpoints, "multiround",
                        f"{name}_{'dc' if condensed else 'nodc'}_seed{seed}_round{round_}")


def _save_params(path: str, params) -> None:
    import orbax.checkpoint as ocp

    if os.path.exists(path):  # a partial checkpoint of an interrupted run
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    c = ocp.StandardCheckpointer()
    c.save(path, params)
    c.wait_until_finished()


def _restore_params(path: str, template):
    import orbax.checkpoint as ocp

    if not os.path.isdir(path):
        raise ValueError(f"the records say this round finished but its model checkpoint {path!r} "
                         "is missing, so the next round cannot continue from it; remove this "
                         "method's records of this seed from records.jsonl (or use a new workdir)")
    return ocp.StandardCheckpointer().restore(path, template)


def run(config: StudyConfig, workdir: str) -> list[dict]:
    """Run the multi-round study ``config`` into ``workdir``; return all its records."""
    cfg = config
    if cfg.scenario != "uniform":
        raise ValueError(f"multi-round forgetting is uniform (SPEC §1); got scenario "
                         f"{cfg.scenario!r}")
    paths, ds, done = open_study(cfg, workdir)
    methods_cache: dict = {}
    for seed in cfg.seeds:
        keys = [(m, c, seed, r) for r in range(cfg.rounds) for c in cfg.condensation
                for m in cfg.methods] + [("original", False, seed, r) for r in range(cfg.rounds)]
        if all(k in done for k in keys):
            log(f"seed {seed}: all rounds present, skipping")
            continue
        ctx = prepare_seed(cfg, paths, ds, seed)
        forgets = round_forget_sets(cfg, ctx)
        for r, forget in enumerate(forgets):  # the original model against each round's request
            if ("original", False, seed, r) not in done:
                append_record(paths.records,
                              original_record(cfg, ctx, forget, _round_base(cfg, ctx, forgets, r)))
        for condensed in cfg.condensation:
            latest: dict = {}  # method -> its model after the last finished round
            for r, forget in enumerate(forgets):
                pending = [m for m in cfg.methods if (m, condensed, seed, r) not in done]
                if not pending:
                    continue
                log(f"seed {seed} round {r}{' +DC' if condensed else ''}: forgetting "
                    f"{len(forget.forget_idx)} images in all, retaining {len(forget.retain_idx)}")
                data, stages = build_unlearn_data(cfg, paths, ctx, forget, condensed)
                if stages is not None and r > 0:
                    # the partition is computed once, before any request: later rounds reuse it
                    stages.update(partition_reused_s=stages["embed_s"] + stages["kmeans_s"],
                                  embed_s=0.0, kmeans_s=0.0)
                base = _round_base(cfg, ctx, forgets, r)
                # a key per round, so rounds do not replay the same shuffles and samples
                rctx = ctx if r == 0 else ctx._replace(
                    keys={**ctx.keys, "unlearn": jax.random.fold_in(ctx.keys["unlearn"], r)})
                for name in pending:
                    if r == 0:
                        start = None
                    elif name in latest:
                        start = latest[name]
                    else:
                        start = _restore_params(_ckpt_path(paths, name, condensed, seed, r - 1),
                                                ctx.original)
                    rec = run_one(cfg, paths, rctx, forget, name, condensed, data, stages,
                                  methods_cache, base, params=start)
                    params = rec.pop("_params")
                    if r + 1 < cfg.rounds:  # written before the record: a resume finds it
                        _save_params(_ckpt_path(paths, name, condensed, seed, r), params)
                    append_record(paths.records, rec)
                    latest[name] = params
                    old = _ckpt_path(paths, name, condensed, seed, r - 1)
                    if r > 0 and os.path.isdir(old):  # only the latest round is needed
                        shutil.rmtree(old)
        write_results(paths)
    write_results(paths)
    return load_records(paths.records)


def main(argv=None) -> int:
    return main_study(get_config, __doc__.splitlines()[0], argv, runner=run,
                      configs=list(DATASET_CONFIGS))


if __name__ == "__main__":
    sys.exit(main())

