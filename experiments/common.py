"""The study engine shared by every experiment script.

``run_study(cfg, workdir)`` runs, for each seed: data splits → original model (checkpointed) →
forget request → (Blend condensation) → every method → evaluation record, appending one JSON line
per (method, condensed, seed, round) to ``records.jsonl`` and rewriting ``results.md``.

Resuming: records already in ``records.jsonl`` are not recomputed, original models are restored
from their checkpoints, and the k-means partition of a seed is reloaded from
``partition_seed*.npz``.
Files are written atomically (temp file + rename; records are appended line by line), so nothing
written is lost when a run fails or is interrupted.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from experiments.configs.base import StudyConfig, to_json
from jaxunlearn import data as jdata
from jaxunlearn import train
from jaxunlearn.evaluate import evaluate_unlearning
from jaxunlearn.mia import mia_nonmember_index
from jaxunlearn.models import build_model, init_params
from jaxunlearn.unlearn import available_methods, make_method, make_unlearn_data, run_method

__all__ = [
    "SeedContext",
    "StudyPaths",
    "atomic_write",
    "base_record",
    "build_parser",
    "build_unlearn_data",
    "config_from_args",
    "load_records",
    "load_study_dataset",
    "method_hparams",
    "open_study",
    "original_record",
    "parse_seeds",
    "preflight",
    "prepare_seed",
    "prepare_workdir",
    "registry_name",
    "run_and_report",
    "run_study",
    "seed_splits",
    "split_variant",
    "synthetic_dataset",
    "validate_config",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Workdir


class StudyPaths(NamedTuple):
    root: str
    config: str
    records: str
    results: str
    checkpoints: str


def prepare_workdir(workdir: str) -> StudyPaths:
    """Create ``workdir`` (ValueError if it is a file) and name its files."""
    workdir = _check_workdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    return StudyPaths(workdir, os.path.join(workdir, "config.json"),
                      os.path.join(workdir, "records.jsonl"), os.path.join(workdir, "results.md"),
                      os.path.join(workdir, "checkpoints"))


def _check_workdir(workdir: str) -> str:
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir!r} exists and is not a directory")
    return workdir


def atomic_write(path: str, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_records(path: str) -> list[dict]:
    """Records of ``records.jsonl``; a torn last line (interrupted write) is ignored."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def append_record(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(strip_private(record), sort_keys=True, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def record_key(r: dict) -> tuple:
    return (r["method"], bool(r["condensed"]), int(r["seed"]), int(r.get("round", 0)))


# ---------------------------------------------------------------------------------------------
# Validation before any long work


def validate_config(cfg: StudyConfig) -> None:
    """Raise ValueError on anything that would fail later, before data or training."""
    known = available_methods()
    unknown = [m for m in cfg.methods if registry_name(m) not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; registered: {', '.join(known)}")
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
    build_model(cfg.model, 10, **cfg.model_kwargs)  # an unknown model or keyword fails here
    if cfg.ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {cfg.ipc}")
    for m in cfg.methods:  # building a method checks its hyper-parameters
        for condensed in cfg.condensation:
            make_method(registry_name(m), lambda p, x: x, init_fn=lambda k: None,
                        **method_hparams(cfg, m, condensed))


# ---------------------------------------------------------------------------------------------
# Named hyper-parameter variants of one registered method: "a_cf[ecdf=anchored]"


def split_variant(name: str) -> tuple[str, dict[str, Any]]:
    """``"a_cf[ecdf=anchored,lr=1e-3]"`` -> ``("a_cf", {"ecdf": "anchored", "lr": 0.001})``.

    A study can run one registered method under several hyper-parameter variants: each variant
    is a method name of its own (its rows, records and unlearning key are its own), built from
    the registry entry before ``[``. Values are JSON (``1e-3``, ``true``) or bare strings.
    """
    if "[" not in name:
        return name, {}
    if not name.endswith("]") or name.index("[") == 0:
        raise ValueError(f"method variant must look like 'method[key=value,...]'; got {name!r}")
    base, inner = name[:-1].split("[", 1)
    overrides: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in inner.split(","))):
        if "=" not in item:
            raise ValueError(f"method variant {name!r}: expected key=value, got {item!r}")
        key, value = (t.strip() for t in item.split("=", 1))
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return base, overrides


def registry_name(name: str) -> str:
    """The registered method behind a (possibly variant) method name."""
    return split_variant(name)[0]


def method_hparams(cfg: StudyConfig, name: str, condensed: bool) -> dict[str, Any]:
    """Hyper-parameters of ``name``: its base method's, then an entry of the variant's own full
    name in ``method_hparams``/``method_hparams_dc`` if any, then the bracketed overrides."""
    base, overrides = split_variant(name)
    hp = cfg.hparams(base, condensed)
    if name != base:
        hp.update(cfg.hparams(name, condensed))
    hp.update(overrides)
    return hp


# ---------------------------------------------------------------------------------------------
# One seed's context: splits, model, original parameters


def load_study_dataset(cfg: StudyConfig) -> Any:
    """The study's dataset: ``jaxunlearn.data.load_dataset``, or ``synthetic`` (see below)."""
    if cfg.dataset == "synthetic":
        return synthetic_dataset(cfg.max_per_class_train or 500, cfg.max_per_class_test or 200)
    return jdata.load_dataset(cfg.dataset, cfg.data_dir,
                              max_per_class_train=cfg.max_per_class_train,
                              max_per_class_test=cfg.max_per_class_test)


def synthetic_dataset(n_train_per_class: int, n_test_per_class: int, num_classes: int = 10,
                      shape: tuple = (32, 32, 3), seed: int = 0) -> Any:
    """CIFAR-shaped stand-in data for timings (no download): NOT a benchmark of accuracy.

    Each class is four smooth random prototypes (8×8 noise upsampled to 32×32) plus pixel
    noise, so models learn it and k-means finds structure, at CIFAR-10's shapes and sizes.
    """
    rng = np.random.default_rng([seed, 2026])
    h, w, c = shape
    coarse = rng.normal(size=(num_classes, 4, h // 4, w // 4, c)).astype(np.float32)
    protos = coarse.repeat(4, axis=2).repeat(4, axis=3)

    def draw(n):
        y = np.repeat(np.arange(num_classes, dtype=np.int32), n)
        x = protos[y, rng.integers(0, 4, y.size)]
        x += rng.normal(scale=0.8, size=x.shape).astype(np.float32)
        return x, y

    (xtr, ytr), (xte, yte) = draw(n_train_per_class), draw(n_test_per_class)
    return jdata.ImageDataset(xtr, ytr, xte, yte, num_classes, "synthetic")


class SeedContext(NamedTuple):
    seed: int
    splits: Any            # jaxunlearn.data.Splits
    apply_fn: Callable
    init_fn: Callable
    original: Any          # the original model's parameters
    original_info: dict    # best epoch, validation accuracy, training time
    keys: dict             # purpose -> PRNG key


def _keys(seed: int) -> dict:
    names = ("data", "init", "train", "partition", "extractor", "forget", "unlearn", "mia")
    root = jax.random.key(seed)
    return {n: jax.random.fold_in(root, i) for i, n in enumerate(names)}


def _restore_or_train(cfg: StudyConfig, paths: StudyPaths, seed: int, model, init_fn,
                      splits, keys) -> tuple[Any, dict]:
    import orbax.checkpoint as ocp

    ckpt = os.path.join(paths.checkpoints, f"original_seed{seed}")
    info_path = ckpt + ".json"
    template = init_fn(keys["init"])
    if os.path.exists(info_path) and os.path.isdir(ckpt):
        params = ocp.StandardCheckpointer().restore(ckpt, template)
        with open(info_path) as f:
            info = json.load(f)
        log(f"seed {seed}: original model restored from {ckpt}")
        return params, info
    o = cfg.original
    log(f"seed {seed}: training the original {cfg.model} for {o['epochs']} epochs "
        f"on {len(splits.train_y)} images")
    pool = train.make_pool(splits.train_x, splits.train_y)
    t0 = time.perf_counter()
    out = train.fit(model.apply, template, pool, keys["train"], epochs=o["epochs"],
                    batch_size=o["batch_size"],
                    optimizer=train.sgd(o["lr"], o["momentum"], o["weight_decay"]),
                    lr_schedule=train.cosine_with_warmup(o["lr"], o["epochs"], o["warmup_epochs"]),
                    val=(splits.val_x, splits.val_y), progress=f"original seed {seed}")
    jax.block_until_ready(out.params)
    info = {"best_epoch": out.best_epoch, "val_acc": out.best_val_acc,
            "train_s": time.perf_counter() - t0}
    os.makedirs(paths.checkpoints, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    if os.path.exists(ckpt):  # a partial checkpoint from an interrupted run
        import shutil

        shutil.rmtree(ckpt)
    checkpointer.save(ckpt, out.params)
    checkpointer.wait_until_finished()
    atomic_write(info_path, json.dumps(info))  # written last: marks the checkpoint complete
    log(f"seed {seed}: original model best epoch {out.best_epoch}, val acc {out.best_val_acc:.2f}%")
    return out.params, info


def seed_splits(cfg: StudyConfig, ds: Any, seed: int) -> Any:
    """The data splits of ``seed`` (cheap: index arithmetic and copies, no training)."""
    return jdata.make_splits(ds, unseen_pool=cfg.unseen_pool, unseen_fraction=cfg.unseen_fraction,
                             val_fraction=cfg.val_fraction, seed=seed)


def prepare_seed(cfg: StudyConfig, paths: StudyPaths, ds: Any, seed: int) -> SeedContext:
    """Splits, model and original parameters (restored from the checkpoint when present)."""
    keys = _keys(seed)
    splits = seed_splits(cfg, ds, seed)
    model = build_model(cfg.model, ds.num_classes, **cfg.model_kwargs)
    shape = tuple(splits.train_x.shape[1:])

    def init_fn(key):
        return init_params(model, key, shape)

    params, info = _restore_or_train(cfg, paths, seed, model, init_fn, splits, keys)
    return SeedContext(seed, splits, model.apply, init_fn, params, info, keys)


def make_forget(cfg: StudyConfig, ctx: SeedContext, among=None) -> Any:
    return _forget_set(cfg, ctx.splits, ctx.seed, among)


def _forget_set(cfg: StudyConfig, splits: Any, seed: int, among=None) -> Any:
    return jdata.make_forget_set(
        splits.train_y, cfg.scenario, num_classes=splits.num_classes, seed=seed,
        classes=cfg.forget_classes, k=cfg.k_classes, fraction=cfg.forget_fraction, among=among)


def preflight(cfg: StudyConfig, ds: Any) -> None:
    """Check everything that depends on the data before any training.

    For every seed: its splits and first forget request (bad, repeated or missing classes,
    forgetting every class, an empty forget set, fewer than 5 forget or matching test examples
    for the MIA) and, with condensation, that every class of its training split holds at least
    ``ipc`` images. Raises the ValueError the later stage would raise, minutes early."""
    for seed in cfg.seeds:
        splits = seed_splits(cfg, ds, seed)
        forget = _forget_set(cfg, splits, seed)
        mia_nonmember_index(splits.train_y[forget.forget_idx], splits.test_y)  # ≥ 5 of each
        if True in cfg.condensation:
            counts = np.bincount(splits.train_y, minlength=splits.num_classes)
            if counts.min() < cfg.ipc:
                small = ", ".join(f"class {c}: {n}" for c, n in enumerate(counts) if n < cfg.ipc)
                raise ValueError(
                    f"ipc={cfg.ipc} clusters per class needs at least {cfg.ipc} training images "
                    f"in every class; seed {seed}'s training split has fewer ({small}); lower "
                    "--ipc or run with --no_condensation")


# ---------------------------------------------------------------------------------------------
# Condensation (Blend) for one forget request


def condense_retain(cfg: StudyConfig, paths: StudyPaths, ctx: SeedContext, forget) -> dict:
    """The Blend-reduced retain set for ``forget`` and its stage times (SPEC §3)."""
    from experiments.condensation import condense_for_study

    return condense_for_study(cfg, paths, ctx, forget)


# ---------------------------------------------------------------------------------------------
# The study


def _base_record(cfg: StudyConfig, ctx: SeedContext, forget, round_: int) -> dict:
    return {
        "study": cfg.name, "dataset": cfg.dataset, "model": cfg.model, "seed": ctx.seed,
        "scenario": cfg.scenario, "round": round_,
        "forget_classes": [int(c) for c in forget.classes],
        "forget_size": int(len(forget.forget_idx)), "retain_size": int(len(forget.retain_idx)),
    }


def _evaluate(cfg, ctx, params, forget) -> dict:
    from experiments.plots import loss_histogram

    s = ctx.splits
    fx, fy = s.train_x[forget.forget_idx], s.train_y[forget.forget_idx]
    out = evaluate_unlearning(
        ctx.apply_fn, params,
        retain=(s.train_x[forget.retain_idx], s.train_y[forget.retain_idx]),
        forget=(fx, fy), test=(s.test_x, s.test_y), seed=ctx.seed,
        batch_size=cfg.eval_batch_size)
    # forget vs unseen losses for the report's histograms; "unseen" = the MIA's negatives
    # (evaluation-test examples of the classes present in the forget set).
    unseen = np.isin(s.test_y, np.unique(fy))
    out["loss_hist"] = loss_histogram(ctx.apply_fn, params, (fx, fy),
                                      (s.test_x[unseen], s.test_y[unseen]),
                                      batch_size=cfg.eval_batch_size)
    return out


def original_record(cfg: StudyConfig, ctx: SeedContext, forget, base: dict) -> dict:
    """The record of the original model evaluated against ``forget`` (the "before" row)."""
    return {**base, "method": "original", "condensed": False,
            "train_size": int(len(ctx.splits.train_y)), "unlearn_s": 0.0, "compile_s": 0.0,
            **ctx.original_info, **_evaluate(cfg, ctx, ctx.original, forget)}


def build_unlearn_data(cfg: StudyConfig, paths: StudyPaths, ctx: SeedContext, forget,
                       condensed: bool):
    """Device pools for one forget request: the real retain set, or its Blend reduction.

    Returns ``(data, stages)``; ``stages`` (None without condensation) holds the Blend stage
    times and sizes of :func:`condense_retain`.
    """
    s = ctx.splits
    stages = condense_retain(cfg, paths, ctx, forget) if condensed else None
    if stages is not None:
        rx, ry = stages.pop("x"), stages.pop("y")
    else:
        rx, ry = s.train_x[forget.retain_idx], s.train_y[forget.retain_idx]
    data = make_unlearn_data((rx, ry), (s.train_x[forget.forget_idx], s.train_y[forget.forget_idx]),
                             (s.unseen_x, s.unseen_y), s.num_classes)
    return data, stages


def open_study(cfg: StudyConfig, workdir: str, key: Callable[[dict], tuple] = record_key):
    """Validate ``cfg``, create the workdir, save the resolved config, load the dataset.

    Returns ``(paths, dataset, done)`` where ``done`` is the set of ``key(record)`` of the
    records already written (a rerun skips them).
    """
    validate_config(cfg)
    _check_workdir(workdir)
    ds = load_study_dataset(cfg)
    preflight(cfg, ds)
    paths = prepare_workdir(workdir)  # created only once the study is known to be runnable
    _save_config(cfg, paths)
    return paths, ds, {key(r) for r in load_records(paths.records)}


def base_record(cfg: StudyConfig, ctx: SeedContext, forget, round_: int) -> dict:
    """The fields every record of ``forget`` (round ``round_``) shares."""
    return _base_record(cfg, ctx, forget, round_)


def run_study(cfg: StudyConfig, workdir: str, *, methods_cache: dict | None = None) -> list[dict]:
    """Run the single-round study described by ``cfg`` into ``workdir``; return all records."""
    paths, ds, done = open_study(cfg, workdir)
    methods_cache = {} if methods_cache is None else methods_cache
    for seed in cfg.seeds:
        todo = [(m, c) for c in cfg.condensation for m in ("original", *cfg.methods)
                if (m, c, seed, 0) not in done and not (m == "original" and c)]
        if not todo:
            log(f"seed {seed}: all records present, skipping")
            continue
        ctx = prepare_seed(cfg, paths, ds, seed)
        forget = make_forget(cfg, ctx)
        log(f"seed {seed}: forgetting {len(forget.forget_idx)} images "
            f"(classes {list(forget.classes)}), retaining {len(forget.retain_idx)}")
        base = _base_record(cfg, ctx, forget, 0)
        if ("original", False, seed, 0) not in done:
            append_record(paths.records, original_record(cfg, ctx, forget, base))
        for condensed in cfg.condensation:
            pending = [m for m in cfg.methods if (m, condensed, seed, 0) not in done]
            if not pending:
                continue
            data, stages = build_unlearn_data(cfg, paths, ctx, forget, condensed)
            for name in pending:
                rec = run_one(cfg, paths, ctx, forget, name, condensed, data, stages,
                              methods_cache, base)
                append_record(paths.records, rec)
        write_results(paths)
    write_results(paths)
    return load_records(paths.records)


def run_one(cfg, paths, ctx, forget, name, condensed, data, stages, methods_cache, base,
            params=None) -> dict:
    """Build (once per study), run and evaluate one method; return its record."""
    key = (name, condensed)
    if key not in methods_cache:
        methods_cache[key] = make_method(registry_name(name), ctx.apply_fn, init_fn=ctx.init_fn,
                                         **method_hparams(cfg, name, condensed))
    method = methods_cache[key]
    start = ctx.original if params is None else params
    # variants of one method share its unlearning key: their comparison is paired
    key_m = jax.random.fold_in(ctx.keys["unlearn"], zlib.crc32(registry_name(name).encode()))
    out = run_method(method, start, data, key_m,
                     progress=f"{name}{' +DC' if condensed else ''} seed {ctx.seed}")
    train_size = int(data.retain.n) if method.uses_retain else 0
    rec = {**base, "method": name, "condensed": condensed, "train_size": train_size,
           "unlearn_s": out.unlearn_s, "compile_s": out.compile_s,
           **_evaluate(cfg, ctx, out.params, forget)}
    if stages:
        rec.update(stages)
        rec["total_s"] = out.unlearn_s + sum(stages.get(k, 0.0) for k in
                                             ("embed_s", "kmeans_s", "split_s", "blend_s"))
    else:
        rec["total_s"] = out.unlearn_s
    if cfg.save_params:
        _save_params(paths, rec, out.params)
    log(f"seed {ctx.seed} {name}{' +DC' if condensed else ''}: retain {rec['retain_acc']:.1f} "
        f"forget {rec['forget_acc']:.1f} test {rec['test_acc']:.1f} MIA {rec['mia']:.1f} "
        f"time {out.unlearn_s:.2f}s (+{out.compile_s:.1f}s compile), trained on {train_size}")
    rec["_params"] = out.params  # removed before writing; lets multi-round studies continue
    return rec


def _save_params(paths: StudyPaths, rec: dict, params: Any) -> None:
    import orbax.checkpoint as ocp

    name = (f"{rec['method']}_{'dc' if rec['condensed'] else 'nodc'}_seed{rec['seed']}"
            f"_round{rec.get('round', 0)}" + (f"_{rec['variant']}" if rec.get("variant") else ""))
    path = os.path.join(paths.root, "params", name)
    if os.path.exists(path):
        import shutil

        shutil.rmtree(path)
    c = ocp.StandardCheckpointer()
    c.save(path, params)
    c.wait_until_finished()


def _save_config(cfg: StudyConfig, paths: StudyPaths) -> None:
    text = to_json(cfg)
    if os.path.exists(paths.config):
        with open(paths.config) as f:
            old = json.load(f)  # raw JSON: configs derived from StudyConfig add fields
        # methods, seeds and columns may grow on a rerun; anything else changes the numbers.
        ignore = ("methods", "seeds", "condensation", "save_params", "data_dir")
        a = {k: v for k, v in old.items() if k not in ignore}
        b = {k: v for k, v in json.loads(text).items() if k not in ignore}
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ValueError(f"workdir {paths.root!r} holds a study with a different configuration "
                             f"(differs in {diff}); use another --workdir")
    atomic_write(paths.config, text)


def write_results(paths: StudyPaths) -> None:
    from experiments.report import write_report

    write_report(paths.root, load_records(paths.records))


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser(description: str, configs: Sequence[str] | None = None):
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workdir", required=True, help="output folder (created; reruns resume)")
    if configs:
        p.add_argument("--config", default=configs[0], choices=list(configs),
                       help=f"dataset configuration (default {configs[0]}; ':cpu' = the "
                            "scaled-down CPU variant of a paper dataset)")
    p.add_argument("--methods", help="comma-separated method names (default: the config's); "
                   "'all' for every registered method")
    p.add_argument("--seeds", help="comma-separated seeds, or a count such as 3")
    p.add_argument("--dataset", help="dataset name (digits, cifar10, cinic10, svhn, tfds:NAME)")
    p.add_argument("--data_dir", help="where the dataset archives are")
    p.add_argument("--model", help="convnet | resnet18 | resnet50")
    p.add_argument("--no_condensation", action="store_true", help="skip the with-Blend column")
    p.add_argument("--only_condensation", action="store_true", help="only the with-Blend column")
    p.add_argument("--ipc", type=int, help="Blend clusters per class")
    p.add_argument("--save_params", action="store_true", help="save every unlearned model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override any config field, e.g. --set original.epochs=5 "
                        "--set method_hparams.cf.epochs=10")
    return p


def _parse_list(text: str, cast=str) -> tuple:
    # commas inside brackets belong to a method variant ("a_cf[ecdf=paper,lr=1e-3]")
    return tuple(cast(t.strip()) for t in re.split(r",(?![^\[]*\])", text) if t.strip())


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: a count (``3`` = seeds 0, 1, 2) or a list (``0,4``; ``7,`` for seed 7)."""
    seeds = _parse_list(text, int)
    if len(seeds) == 1 and "," not in text:
        if seeds[0] < 1:
            raise ValueError(f"--seeds {text} selects no seed: a single number is a count "
                             "(--seeds 1 runs seed 0); pick seeds with a list such as "
                             "--seeds 0,4 or --seeds 7,")
        return tuple(range(seeds[0]))
    return seeds


def config_from_args(cfg: StudyConfig, args) -> StudyConfig:
    """Apply command-line overrides to ``cfg``."""
    if args.methods:
        cfg.methods = (tuple(available_methods()) if args.methods == "all"
                       else _parse_list(args.methods))
    if args.seeds:
        cfg.seeds = parse_seeds(args.seeds)
    if args.model is not None and args.model != cfg.model:
        # the config's model keywords belong to its own model (a ConvNet's depth and width)
        cfg.model_kwargs = {}
    for field in ("dataset", "data_dir", "model", "ipc"):
        if getattr(args, field, None) is not None:
            setattr(cfg, field, getattr(args, field))
    if args.no_condensation and args.only_condensation:
        raise ValueError("--no_condensation and --only_condensation exclude each other")
    if args.no_condensation:
        cfg.condensation = (False,)
    if args.only_condensation:
        cfg.condensation = (True,)
    if args.save_params:
        cfg.save_params = True
    for item in args.set:
        _apply_override(cfg, item)
    return cfg


def _apply_override(cfg: StudyConfig, item: str) -> None:
    if "=" not in item:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass  # a bare string
    parts = key.split(".")
    if not hasattr(cfg, parts[0]):
        raise ValueError(f"unknown config field {parts[0]!r}")
    if len(parts) == 1:
        setattr(cfg, parts[0], tuple(value) if isinstance(value, list) else value)
        return
    target = getattr(cfg, parts[0])
    for p in parts[1:-1]:
        target = target.setdefault(p, {})
    target[parts[-1]] = value


def main_study(get_config: Callable[[], StudyConfig], description: str,
               argv: Iterable[str] | None = None, runner: Callable | None = None,
               configs: Sequence[str] | None = None) -> int:
    """Entry point shared by the study scripts: parse flags, run, print the table.

    With ``configs`` (names of dataset configurations) the scripts take ``--config NAME`` and
    ``get_config(NAME)`` is called; otherwise ``get_config()``.
    """
    args = build_parser(description, configs).parse_args(argv)
    return run_and_report(
        lambda: config_from_args(get_config(args.config) if configs else get_config(), args),
        runner or run_study, args.workdir)


def run_and_report(make_config: Callable[[], Any], run: Callable[[Any, str], Any],
                   workdir: str) -> int:
    """Build the config, run the study into ``workdir`` and print its ``results.md``.

    Returns the exit code: 0, or 2 after printing the message of a ValueError,
    FileNotFoundError or ImportError (bad input, missing data, a missing optional extra such as
    ``jaxunlearn[tfds]``) raised before or during the run.
    """
    try:
        cfg = make_config()
        t0 = time.perf_counter()
        run(cfg, workdir)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = prepare_workdir(workdir)
    with open(paths.results) as f:
        print(f.read())
    log(f"done in {time.perf_counter() - t0:.1f}s; records in {paths.records}")
    return 0


def strip_private(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return str(x)
