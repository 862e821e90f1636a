"""The one loop of the unlearning studies: class-wise, uniform, multi-round, the retain-set ablation
and the A-AMU ablation all run :func:`run_study`.

For each seed: data splits → original model (checkpointed) → its forget request, one per round
(``cfg.rounds``; round r forgets a share of what round r − 1 retained) → for each *column* (a
retain set the methods train on) and round → every method → one evaluation record, appended to
``records.jsonl``; ``results.md`` and the plots are rewritten after every seed.

- Columns are a hook (:class:`Columns`). The default, :data:`BLEND_COLUMNS`, gives the two columns
  of the paper's tables: the real retain set and its Blend reduction (``cfg.condensation``). The
  ablation (``experiments/ablations.py``) passes its seven retain-set variants instead.
- Rounds: each method continues from *its own* previous-round model (SCRUB-style teachers are
  that model too: methods take their starting parameters as teacher), with a per-round
  unlearning key; its latest model is checkpointed under ``checkpoints/multiround/`` so an
  interrupted study resumes at the next round. The partition is computed once per seed (round 0)
  and reused; later rounds record its time as ``partition_reused_s`` instead of charging it again.
- Methods are built once per study; variants of one method (see ``configs/base.py``) share its
  unlearning key, so their comparison is paired.

Resuming: records already in ``records.jsonl`` are not recomputed, original models are restored
from their checkpoints, and the k-means partition of a seed is reloaded from
``partition_seed*.npz``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from experiments import seeds
from experiments.condensation import condense_for_study
from experiments.configs.base import StudyConfig
from experiments.io import (
    Ledger,
    Progress,
    StudyPaths,
    check_workdir,
    column_slug,
    exists,
    load_records,
    log,
    prepare_workdir,
    remove_tree,
    restore_params,
    save_config,
    save_params,
)
from experiments.report import column_label, write_report
from experiments.seeds import SeedContext
from jaxunlearn import sharding
from jaxunlearn.evaluate import evaluate_unlearning, loss_histogram
from jaxunlearn.metrics import accuracy
from jaxunlearn.mia import PHI_MODES, SWAP_RULES
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.unlearn import (
    Method,
    available_methods,
    factory_defaults,
    make_method,
    make_unlearn_data,
    run_method,
)

__all__ = ["BLEND_COLUMNS", "ROUND_TARGETS", "Column", "Columns", "RetainSet",
           "SeedColumns", "Study", "build_methods", "evaluate", "open_study", "record_ledger",
           "round_target", "run_study", "validate_config", "write_results"]


# ---------------------------------------------------------------------------------------------
# Columns: the retain sets a study compares


class Column(NamedTuple):
    """One retain set of a study, as its records name it."""

    condensed: bool              # the record's "condensed": trained on blended images
    variant: str | None = None   # the record's "variant" (the ablation's retain sets), if any
    dc_hparams: bool | None = None  # the methods' DC hyper-parameters? None: as ``condensed``

    @property
    def takes_dc_hparams(self) -> bool:
        """Whether the methods of this column take their with-condensation hyper-parameters."""
        return self.condensed if self.dc_hparams is None else self.dc_hparams


class RetainSet(NamedTuple):
    """What the methods of one column train on, and the stages that produced it."""

    x: Any
    y: Any
    stages: dict | None = None   # Blend stage times and sizes, added to every record


class SeedColumns(NamedTuple):
    """The columns of one seed (built once per seed by :attr:`Columns.for_seed`)."""

    retain_set: Callable[[Column, int, Any], RetainSet | None]  # (column, round, forget)
    fields: Callable[[Column | None], dict]  # extra record fields; None: the original's
    metrics: Callable[[Any], dict]           # extra metrics of a model's parameters


class Columns(NamedTuple):
    """How a study's columns are made: their names from the config, their sets per seed."""

    of_config: Callable[[StudyConfig], list[Column]]
    for_seed: Callable[[StudyConfig, StudyPaths, SeedContext, Any], SeedColumns]


def _blend_seed(cfg: StudyConfig, paths: StudyPaths, ctx: SeedContext, first_forget) -> SeedColumns:
    s = ctx.splits

    def retain_set(column: Column, round_: int, forget) -> RetainSet:
        if not column.condensed:
            return RetainSet(s.train_x[forget.retain_idx], s.train_y[forget.retain_idx])
        stages = condense_for_study(cfg, paths, ctx, forget)
        return RetainSet(stages.pop("x"), stages.pop("y"), stages)

    return SeedColumns(retain_set, lambda column: {}, lambda params: {})


BLEND_COLUMNS = Columns(lambda cfg: [Column(c) for c in cfg.condensation], _blend_seed)
"""Without and with Blend condensation (``cfg.condensation``): the paper's two columns."""


ROUND_TARGETS = ("new", "cumulative")  # which forget set a round acts on: see round_target


def record_ledger(path: str) -> Ledger:
    """The study's records keyed by method, column (condensed, variant), seed and round."""
    return Ledger(path, {"method": str, "condensed": bool, "variant": str, "seed": int,
                         "round": int}, defaults={"variant": None, "round": 0})


def _run(method: str, column: Column, seed: int, round_: int) -> dict:
    return {"method": method, "condensed": column.condensed, "variant": column.variant,
            "seed": seed, "round": round_}


# ---------------------------------------------------------------------------------------------
# Before any long work


def validate_config(cfg: StudyConfig) -> None:
    """Raise ValueError on anything in ``cfg`` that would fail later, before data or training.

    The methods' hyper-parameters are checked when the methods are built (:func:`open_study`,
    right after the dataset is read)."""
    known = available_methods()
    unknown = [m for m in cfg.methods if cfg.method_of(m) not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; registered: {', '.join(known)} (a "
                         "variant of one needs a method_hparams entry naming it in 'method')")
    if not cfg.methods:
        raise ValueError("no methods selected")
    if not cfg.seeds:
        raise ValueError("no seeds selected")
    if cfg.scenario not in ("classwise", "k_classwise", "uniform"):
        raise ValueError(
            f"scenario must be classwise, k_classwise or uniform, got {cfg.scenario!r}")
    if cfg.scenario == "uniform" and not 0.0 < cfg.forget_fraction < 1.0:
        raise ValueError(f"forget_fraction must be in (0, 1), got {cfg.forget_fraction}")
    if cfg.rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {cfg.rounds}")
    if cfg.rounds > 1 and cfg.scenario != "uniform":
        raise ValueError(f"multi-round forgetting is uniform (docs/method.md §1); got scenario "
                         f"{cfg.scenario!r}")
    if cfg.ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {cfg.ipc}")
    for name, value, allowed in (("mia.phi", cfg.mia.phi, PHI_MODES),
                                 ("mia.swap", cfg.mia.swap, SWAP_RULES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if cfg.round_target not in ROUND_TARGETS:
        raise ValueError(f"round_target must be one of {ROUND_TARGETS}, got {cfg.round_target!r}")


def build_methods(cfg: StudyConfig, apply_fn: Callable, init_fn: Callable,
                  condensed: tuple = (False, True)) -> dict[tuple[str, bool], Method]:
    """Every method of ``cfg`` with its hyper-parameters without and/or with condensation.

    Raises ValueError (building a method checks its hyper-parameters)."""
    return {(m, c): make_method(cfg.method_of(m), apply_fn, init_fn=init_fn, **cfg.hparams(m, c))
            for m in cfg.methods for c in condensed}


class Study(NamedTuple):
    """An opened study: its files, data, model, methods and the records already written."""

    paths: StudyPaths
    ds: Any
    apply_fn: Callable
    init_fn: Callable
    methods: dict
    ledger: Ledger


def open_study(cfg: StudyConfig, workdir: str, columns: list[Column]) -> Study:
    """Check ``cfg``, read the dataset, build the model and methods, check every seed's data,
    then create the workdir and save the resolved config; nothing is trained here."""
    validate_config(cfg)
    check_workdir(workdir)
    ds = seeds.load_study_dataset(cfg)
    model = build_model(cfg.model, ds.num_classes, **cfg.model_kwargs)
    init_fn = init_fn_for(model, ds.x_train.shape[1:])
    methods = build_methods(cfg, model.apply, init_fn,
                            tuple(dict.fromkeys(c.takes_dc_hparams for c in columns)))
    seeds.preflight(cfg, ds)
    paths = prepare_workdir(workdir)  # created only once the study is known to be runnable
    save_config(cfg, paths.config)
    return Study(paths, ds, model.apply, init_fn, methods, record_ledger(paths.records))


# ---------------------------------------------------------------------------------------------
# Records


def evaluate(cfg: StudyConfig, ctx: SeedContext, params: Any, forget, *,
             loss_hist: bool = True) -> dict:
    """Accuracies, the MIA and (``loss_hist``) the forget/unseen loss histograms of ``params``
    (docs/method.md §6)."""
    s = ctx.splits
    fx, fy = s.train_x[forget.forget_idx], s.train_y[forget.forget_idx]
    out = evaluate_unlearning(
        ctx.apply_fn, params,
        retain=(s.train_x[forget.retain_idx], s.train_y[forget.retain_idx]),
        forget=(fx, fy), test=(s.test_x, s.test_y), seed=ctx.seed,
        batch_size=cfg.eval_batch_size, mia_options=dataclasses.asdict(cfg.mia))
    if not loss_hist:
        return out
    # forget vs unseen losses for the report's histograms; "unseen" = the MIA's negatives
    # (evaluation-test examples of the classes present in the forget set).
    unseen = np.isin(s.test_y, np.unique(fy))
    out["loss_hist"] = loss_histogram(ctx.apply_fn, params, (fx, fy),
                                      (s.test_x[unseen], s.test_y[unseen]),
                                      batch_size=cfg.eval_batch_size)
    return out


def _base_record(cfg: StudyConfig, ctx: SeedContext, forgets: list, round_: int) -> dict:
    """The fields every record of round ``round_``'s forget request shares."""
    forget = forgets[round_]
    rec = {
        "study": cfg.name, "dataset": cfg.dataset, "model": cfg.model, "seed": ctx.seed,
        "scenario": cfg.scenario, "round": round_,
        "forget_classes": [int(c) for c in forget.classes],
        "forget_size": int(len(forget.forget_idx)), "retain_size": int(len(forget.retain_idx)),
    }
    if cfg.rounds > 1:
        prev = len(forgets[round_ - 1].forget_idx) if round_ else 0
        rec["new_forget_size"] = int(len(forget.forget_idx) - prev)
        rec["round_target"] = cfg.round_target  # which forget set the metrics are of
    return rec


def round_target(cfg: StudyConfig, forgets: list, round_: int):
    """The forget set that round ``round_``'s methods act on and are evaluated against.

    ``cfg.round_target == "new"`` (the reference's ``multiround_cond_unlearn.py``): the images
    this round adds: A-AMU's forget samples, SCRUB's forget passes, the MIA and the forget
    accuracy use them. ``"cumulative"``: every image forgotten so far. Either way the retain set
    (``retain_idx``) is the cumulative complement, and condensation splits against the
    cumulative forget set.
    """
    forget = forgets[round_]
    if round_ == 0 or cfg.round_target == "cumulative":
        return forget
    new = np.setdiff1d(forget.forget_idx, forgets[round_ - 1].forget_idx).astype(np.int32)
    return forget._replace(forget_idx=new)


def _original_record(cfg, ctx, forget, base: dict) -> dict:
    """The original model evaluated against ``forget`` (the "before" row)."""
    return {**base, "method": "original", "condensed": False,
            "train_size": int(len(ctx.splits.train_y)), "unlearn_s": 0.0, "compile_s": 0.0,
            **ctx.original_info, **evaluate(cfg, ctx, ctx.original, forget)}


def run_one(cfg: StudyConfig, paths: StudyPaths, ctx: SeedContext, forget, name: str,
            method: Method, column: Column, data, stages: dict | None, base: dict,
            params=None) -> dict:
    """Run and evaluate one method (from ``params``, default the original); return its record
    (its unlearned parameters under the unwritten key ``_params``)."""
    start = ctx.original if params is None else params
    # variants of one method share its unlearning key: their comparison is paired
    key = seeds.method_key(cfg, ctx.keys, name)
    tag = column_label(name, column.condensed)
    out = run_method(method, start, data, key, progress=f"{tag} seed {ctx.seed}")
    train_size = int(data.retain.n) if method.uses_retain else 0
    # the reference measures "retain accuracy" on the retain set the column trains on (the
    # Blend-reduced one with condensation: the paper's 100.00 for pruning with DC); ours,
    # retain_acc, is on the real retain set, and this one is the reference's
    n = int(data.retain.n)
    retain_train_set = sharding.to_host((data.retain.x[:n], data.retain.y[:n]))
    rec = {**base, "method": name, "condensed": column.condensed, "train_size": train_size,
           "hparams": {**factory_defaults(method.name), **method.hparams},
           "unlearn_s": out.unlearn_s, "compile_s": out.compile_s,
           **evaluate(cfg, ctx, out.params, forget),
           "retain_acc_train_set": accuracy(ctx.apply_fn, out.params, *retain_train_set,
                                            batch_size=cfg.eval_batch_size)}
    rec["total_s"] = out.unlearn_s
    if stages:
        rec.update(stages)
        rec["total_s"] += sum(stages.get(k, 0.0) for k in ("embed_s", "kmeans_s", "split_s",
                                                            "blend_s"))
    if cfg.save_params:
        save_params(os.path.join(paths.root, "params", _params_name(rec)), out.params)
    log(f"seed {ctx.seed} {tag}: retain {rec['retain_acc']:.1f} forget {rec['forget_acc']:.1f} "
        f"test {rec['test_acc']:.1f} MIA {rec['mia']:.1f} time {out.unlearn_s:.2f}s "
        f"(+{out.compile_s:.1f}s compile), trained on {train_size}")
    rec["_params"] = out.params
    return rec


def _params_name(rec: dict) -> str:
    return (f"{rec['method']}_{column_slug(rec['condensed'])}_seed{rec['seed']}"
            f"_round{rec.get('round', 0)}" + (f"_{rec['variant']}" if rec.get("variant") else ""))


def write_results(paths: StudyPaths) -> None:
    records = load_records(paths.records)  # every process takes part in reading them
    if sharding.is_primary():  # the one that writes files
        write_report(paths.root, records)


# ---------------------------------------------------------------------------------------------
# The loop


def run_study(cfg: StudyConfig, workdir: str, columns: Columns = BLEND_COLUMNS) -> list[dict]:
    """Run the study ``cfg`` into ``workdir`` (resuming); return all its records."""
    cols = columns.of_config(cfg)
    study = open_study(cfg, workdir, cols)
    paths, ledger = study.paths, study.ledger
    rounds = range(cfg.rounds)
    progress = Progress(sum(not ledger.has(_run(m, c, seed, r)) for seed in cfg.seeds
                            for c in cols for r in rounds for m in cfg.methods))
    for seed in cfg.seeds:
        if ledger.seed_done(seed, [_run("original", Column(False), seed, r) for r in rounds] + [
                _run(m, c, seed, r) for c in cols for r in rounds for m in cfg.methods]):
            continue
        ctx = seeds.prepare_seed(cfg, paths, study.ds, seed, study.apply_fn, study.init_fn)
        forgets = seeds.round_forget_sets(cfg, ctx.splits, seed)
        seed_cols = columns.for_seed(cfg, paths, ctx, forgets[0])
        for r in range(len(forgets)):  # the original model against each round's request
            if not ledger.has(_run("original", Column(False), seed, r)):
                base = {**_base_record(cfg, ctx, forgets, r), **seed_cols.fields(None)}
                rec = _original_record(cfg, ctx, round_target(cfg, forgets, r), base)
                ledger.append({**rec, **seed_cols.metrics(ctx.original)})
        for column in cols:
            _run_column(cfg, study, ctx, forgets, seed_cols, column, progress)
        write_results(paths)
    write_results(paths)
    return load_records(paths.records)


def _run_column(cfg: StudyConfig, study: Study, ctx: SeedContext, forgets: list,
                seed_cols: SeedColumns, column: Column, progress: Progress) -> None:
    """Every method on one column, round after round, each continuing from its own model."""
    paths, seed = study.paths, ctx.seed
    latest: dict = {}  # method -> its model after the last finished round
    for r, forget in enumerate(forgets):
        pending = [m for m in cfg.methods if not study.ledger.has(_run(m, column, seed, r))]
        if not pending:
            continue
        where = f"seed {seed}" + (f" round {r}" if cfg.rounds > 1 else "")
        log(f"{column_label(where, column.condensed)}"
            f"{f' [{column.variant}]' if column.variant else ''}: forgetting "
            f"{len(forget.forget_idx)} images (classes {list(forget.classes)}), retaining "
            f"{len(forget.retain_idx)}")
        retain = seed_cols.retain_set(column, r, forget)
        if retain is None:
            log(f"{where} [{column.variant}]: empty retain set for this column, skipped")
            continue
        stages = retain.stages
        if stages is not None and r > 0:
            # the partition is computed once, before any request: later rounds reuse it
            stages = {**stages, "partition_reused_s": stages["embed_s"] + stages["kmeans_s"],
                      "embed_s": 0.0, "kmeans_s": 0.0}
        s, target = ctx.splits, round_target(cfg, forgets, r)
        forget_xy = (s.train_x[target.forget_idx], s.train_y[target.forget_idx])
        data = make_unlearn_data((retain.x, retain.y), forget_xy, (s.unseen_x, s.unseen_y),
                                 s.num_classes)
        full_data = None  # the real retain set, for cfg.full_retain_methods in this column
        base = {**_base_record(cfg, ctx, forgets, r), **seed_cols.fields(column)}
        # a key per round, so rounds do not replay the same shuffles and samples
        rctx = ctx if r == 0 else ctx._replace(
            keys={**ctx.keys, "unlearn": jax.random.fold_in(ctx.keys["unlearn"], r)})
        for name in pending:
            progress.start(f"{column_label(name, column.condensed)} seed {seed}"
                           + (f" round {r}" if cfg.rounds > 1 else ""))
            start = None
            if r > 0:
                start = latest.get(name)
                if start is None:
                    start = _restore_round(_round_ckpt(paths, name, column, seed, r - 1),
                                           ctx.original)
            method_data, method_base = data, base
            if stages is not None and name in cfg.full_retain_methods:
                if full_data is None:
                    full_data = make_unlearn_data(
                        (s.train_x[forget.retain_idx], s.train_y[forget.retain_idx]), forget_xy,
                        (s.unseen_x, s.unseen_y), s.num_classes)
                method_data, method_base = full_data, {**base, "retain_set": "full"}
            rec = run_one(cfg, paths, rctx, target, name,
                          study.methods[(name, column.takes_dc_hparams)], column, method_data,
                          stages, method_base, params=start)
            params = rec.pop("_params")
            if r + 1 < cfg.rounds:  # written before the record: a resume finds it
                save_params(_round_ckpt(paths, name, column, seed, r), params)
            study.ledger.append({**rec, **seed_cols.metrics(params)})
            latest[name] = params
            old = _round_ckpt(paths, name, column, seed, r - 1)
            if r > 0:  # only the latest round is needed
                remove_tree(old)


def _round_ckpt(paths: StudyPaths, name: str, column: Column, seed: int, round_: int) -> str:
    tag = column_slug(column.condensed) + (f"_{column.variant}" if column.variant else "")
    return os.path.join(paths.checkpoints, "multiround", f"{name}_{tag}_seed{seed}_round{round_}")


def _restore_round(path: str, template):
    if not exists(path, kind="dir"):
        raise ValueError(f"the records say this round finished but its model checkpoint {path!r} "
                         "is missing, so the next round cannot continue from it; remove this "
                         "method's records of this seed from records.jsonl (or use a new workdir)")
    return restore_params(path, template)
