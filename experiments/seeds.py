"""What a seed determines: PRNG keys by purpose, data splits, forget requests, original model.

Every study draws its randomness from :func:`seed_keys`: one root key per seed, folded with a
fixed index per purpose, so a purpose's key never depends on which other purposes a study uses.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from experiments.configs.base import Config, StudyConfig
from experiments.io import StudyPaths, atomic_write, exists, log, restore_params, save_params
from jaxunlearn import data as jdata
from jaxunlearn import optim, pools, train
from jaxunlearn.mia import mia_nonmember_index

__all__ = ["PURPOSES", "SeedContext", "load_study_dataset", "make_forget", "partition_keys",
           "preflight", "prepare_seed", "round_forget_sets", "seed_keys", "seed_splits",
           "synthetic_dataset"]

# Purposes of a seed's keys, in the order of their fold-in index: append, never reorder.
PURPOSES = ("data", "init", "train", "partition", "extractor", "forget", "unlearn", "mia", "dm",
            "gm", "idm")


def seed_keys(seed: int) -> dict[str, jax.Array]:
    """``{purpose: key}``: ``fold_in(key(seed), i)`` for the i-th purpose of :data:`PURPOSES`."""
    root = jax.random.key(seed)
    return {n: jax.random.fold_in(root, i) for i, n in enumerate(PURPOSES)}


def method_key(cfg: StudyConfig, keys: dict[str, jax.Array], name: str) -> jax.Array:
    """The unlearning key of the study's method ``name``, the one rule every study uses:
    ``keys["unlearn"]`` folded with the CRC-32 of its registered method
    (:meth:`~experiments.configs.base.StudyConfig.method_of`), so the variants of one method
    share its key and their comparison is paired."""
    return jax.random.fold_in(keys["unlearn"], zlib.crc32(cfg.method_of(name).encode()))


def partition_keys(keys: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """``(ψ's init key, k-means key)`` of the Blend partition, both from the partition purpose."""
    return keys["partition"], jax.random.fold_in(keys["partition"], 1)


# ---------------------------------------------------------------------------------------------
# Data


def load_study_dataset(cfg: Config, download: bool = True) -> Any:
    """The study's dataset: ``jaxunlearn.data.load_dataset``, or ``synthetic`` (see below).

    A dataset missing from ``data_dir`` fails within seconds with the ways to provide it
    (``download``: after one short attempt to fetch the official archive, where a loader can).
    """
    if cfg.dataset == "synthetic":
        return synthetic_dataset(cfg.max_per_class_train or 500, cfg.max_per_class_test or 200)
    return jdata.load_dataset(cfg.dataset, cfg.data_dir, download=download,
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


def seed_splits(cfg: StudyConfig, ds: Any, seed: int) -> Any:
    """The data splits of ``seed`` (cheap: index arithmetic and copies, no training)."""
    return jdata.make_splits(ds, unseen_pool=cfg.unseen_pool, unseen_fraction=cfg.unseen_fraction,
                             val_fraction=cfg.val_fraction, seed=seed)


def make_forget(cfg: StudyConfig, splits: Any, seed: int, among=None) -> Any:
    """The first forget request of ``seed`` (the study's scenario; ``among``: see data)."""
    return jdata.make_forget_set(
        splits.train_y, cfg.scenario, num_classes=splits.num_classes, seed=seed,
        classes=cfg.forget_classes, k=cfg.k_classes, fraction=cfg.forget_fraction, among=among)


def round_forget_sets(cfg: StudyConfig, splits: Any, seed: int) -> list:
    """The cumulative forget set of every round (round r > 0 draws with seed ``seed + 1000 r``):
    round r forgets ``forget_fraction`` of the retain set left after round r − 1 (method.md §1)."""
    sets = [make_forget(cfg, splits, seed)]
    for r in range(1, cfg.rounds):
        sets.append(jdata.next_round_forget(splits.train_y, sets[-1], cfg.forget_fraction,
                                            seed=seed + 1000 * r, num_classes=splits.num_classes))
    return sets


def preflight(cfg: StudyConfig, ds: Any) -> None:
    """Check everything that depends on the data before any training.

    For every seed: its splits and first forget request (bad, repeated or missing classes,
    forgetting every class, an empty forget set, fewer than 5 forget or matching test examples
    for the MIA) and, with condensation, that every class of its training split holds at least
    ``ipc`` images. Raises the ValueError the later stage would raise, minutes early."""
    for seed in cfg.seeds:
        splits = seed_splits(cfg, ds, seed)
        forget = make_forget(cfg, splits, seed)
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
# The original model of a seed


class SeedContext(NamedTuple):
    seed: int
    splits: Any            # jaxunlearn.data.Splits
    apply_fn: Callable
    init_fn: Callable
    original: Any          # the original model's parameters
    original_info: dict    # best epoch, validation accuracy, training time
    keys: dict             # purpose -> PRNG key


def _restore_or_train(cfg: StudyConfig, paths: StudyPaths, seed: int, apply_fn, init_fn,
                      splits, keys) -> tuple[Any, dict]:
    ckpt = os.path.join(paths.checkpoints, f"original_seed{seed}")
    info_path = ckpt + ".json"
    template = init_fn(keys["init"])
    if exists(info_path) and exists(ckpt, kind="dir"):
        params = restore_params(ckpt, template)
        with open(info_path) as f:
            info = json.load(f)
        log(f"seed {seed}: original model restored from {ckpt}")
        return params, info
    o = cfg.original
    log(f"seed {seed}: training the original {cfg.model} for {o.epochs} epochs "
        f"on {len(splits.train_y)} images")
    pool = pools.make_pool(splits.train_x, splits.train_y)
    t0 = time.perf_counter()
    out = train.fit(apply_fn, template, pool, keys["train"], epochs=o.epochs,
                    batch_size=o.batch_size,
                    optimizer=optim.sgd(o.lr, o.momentum, o.weight_decay),
                    lr_schedule=optim.cosine_with_warmup(o.lr, o.epochs, o.warmup_epochs),
                    # no hold-out (val_fraction 0, the paper's datasets): the last epoch
                    val=(splits.val_x, splits.val_y) if len(splits.val_y) else None,
                    progress=f"original seed {seed}")
    jax.block_until_ready(out.params)
    info = {"best_epoch": out.best_epoch, "val_acc": out.best_val_acc,
            "train_s": time.perf_counter() - t0}
    save_params(ckpt, out.params)
    atomic_write(info_path, json.dumps(info))  # written last: marks the checkpoint complete
    if len(splits.val_y):
        log(f"seed {seed}: original model best epoch {out.best_epoch}, "
            f"val acc {out.best_val_acc:.2f}%")
    else:
        log(f"seed {seed}: original model trained ({o.epochs} epochs, no hold-out: last epoch)")
    return out.params, info


def prepare_seed(cfg: StudyConfig, paths: StudyPaths, ds: Any, seed: int, apply_fn: Callable,
                 init_fn: Callable) -> SeedContext:
    """Splits, keys and the original parameters (restored from the checkpoint when present) of
    ``seed`` for the study's model ``apply_fn`` / ``init_fn``."""
    keys = seed_keys(seed)
    splits = seed_splits(cfg, ds, seed)
    params, info = _restore_or_train(cfg, paths, seed, apply_fn, init_fn, splits, keys)
    return SeedContext(seed, splits, apply_fn, init_fn, params, info, keys)
