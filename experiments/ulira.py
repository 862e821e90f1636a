"""U-LiRA: per-example membership audits of unlearning, from many models trained at once.

    python -m experiments.ulira --workdir runs/ulira_digits
    python -m experiments.ulira --config mnist5k --workdir runs/ulira_mnist5k

The paper's MIA (:mod:`jaxunlearn.mia`) is one logistic regression on one score per example,
at population level. This study audits every method per example, with the likelihood-ratio
attack of Hayes et al. 2024 (U-LiRA) and the forgetting quality of the NeurIPS 2023 unlearning
challenge (Triantafillou et al. 2024); the statistics, and the papers they follow, are in
:mod:`jaxunlearn.audit`. The models come from the stacked engine (:mod:`jaxunlearn.ensemble`).

For each seed:

1. **The audited forget set F**: ``forget_size`` training examples drawn uniformly at random
   (uniform forgetting: a class-wise forget set would make a per-example audit degenerate). The
   other training examples R are split into N = ``shadow_models + target_models`` random halves
   H_1..H_N (:func:`jaxunlearn.ensemble.random_halves`).
2. **Originals**: model i trains on H_i ∪ F (the study's original schedule, every model for
   its ``epochs``, no validation selection: ``fit(models=N)``).
3. **The reference population** ("retrained"): Retrain without Blend on H_i, from a fresh
   initialisation and with the originals' own schedule: exact unlearning of F. Its own key, so
   it is independent of the ``retrain`` row below.
4. **Every method × column** (without / with Blend) unlearns F from the N originals at once
   (``run_method(models=N)``), model i keeping H_i (or its Blend reduction) as retain set. Two
   controls are rows of the table: ``original`` (no unlearning: the positive control, a working
   attack scores above 50%) and ``retrain`` (a second, independent Retrain: the sanity check,
   about 50%).
5. **The audit**: φ = the logit-scaled confidence of each model on each example of F. The first
   ``shadow_models`` models of both populations fit the per-example Gaussians; the last
   ``target_models`` of each are attacked (:func:`jaxunlearn.audit.ulira`). The forgetting
   quality uses all N models of both populations (:func:`jaxunlearn.audit.forgetting_quality`).
   The paper's MIA (forget set against the test split) is computed on each target model, for
   comparison.

Writes ``records.jsonl`` (one record per method, column and seed), ``phi/`` (the φ arrays of
every population, from which the audit is recomputed), ``results.md`` and ``ulira_roc.png``
(ROC per method on log axes). A rerun resumes: the originals are checkpointed, the reference's
φ is saved and finished rows are not recomputed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import numpy as np

from experiments import cli, seeds
from experiments.condensation import convnet, partition_images
from experiments.configs.base import StudyConfig, derive
from experiments.configs.digits import get_config as _digits_config
from experiments.configs.mnist5k import get_config as _mnist5k_config
from experiments.io import (
    Ledger,
    Progress,
    atomic_write,
    check_workdir,
    column_slug,
    exists,
    load_records,
    log,
    prepare_workdir,
    restore_params,
    save_config,
    save_params,
)
from experiments.plots import ulira_roc_plot
from experiments.report import column_label, format_ci
from jaxunlearn import audit, ensemble, optim, pools, sharding, train
from jaxunlearn.condense import condense
from jaxunlearn.evaluate import evaluate_unlearning
from jaxunlearn.mia import logit_confidence
from jaxunlearn.models import build_model, init_fn_for
from jaxunlearn.unlearn import make_method, make_unlearn_data, run_method, stack_unlearn_data

__all__ = ["CONFIGS", "Populations", "UliraConfig", "audit_row", "get_config", "main",
           "make_populations", "results_markdown", "run", "train_originals", "unlearn_models"]

CONFIGS = ("digits", "mnist5k")
CONTROLS = ("original",)  # rows that are not methods: the originals themselves
REFERENCE = "retrain"      # the registered method of the reference population


@dataclasses.dataclass
class UliraConfig(StudyConfig):
    """A U-LiRA audit (see the module docstring)."""

    GROWABLE: ClassVar[tuple[str, ...]] = (*StudyConfig.GROWABLE, "notes")

    name: str = "ulira"
    scenario: str = "uniform"
    forget_size: int = 40       # K audited examples
    shadow_models: int = 32     # per population: fit the per-example Gaussians
    target_models: int = 16     # per population: attacked
    bootstrap: int = 1000       # draws of the audit's two-way bootstrap
    chunk: int | None = None    # models vmapped together (ensemble.Ensemble; None: all of them)


def ulira_config(base: StudyConfig) -> UliraConfig:
    """``base`` (a dataset's class-wise config) as an audit of the issue's methods: Retrain, CF,
    A-CF, SCRUB, SalUn, random-label and NegGrad+, without and with Blend, one seed."""
    cfg = derive(base, UliraConfig, name="ulira", scenario="uniform")
    cfg.methods = ("retrain", "cf", "a_cf", "scrub", "salun", "random_label", "neggrad_plus")
    cfg.seeds = (0,)
    # Exact unlearning is the originals' own training without F: the reference population and
    # the retrain row train with the originals' schedule (not Retrain's defaults, the paper's
    # CIFAR recipe of 100 epochs at lr 0.1). Otherwise the attack could tell the populations
    # apart by their recipes instead of by membership.
    o = cfg.original
    cfg.method_hparams = {**cfg.method_hparams, "retrain": dict(
        lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, epochs=o.epochs,
        warmup_epochs=o.warmup_epochs, batch_size=o.batch_size)}
    # each model trains on half the training split: ipc halves too, so that Blend's clusters
    # keep the ≈5 images of the class-wise study's
    cfg.ipc = max(1, cfg.ipc // 2)
    cfg.notes = {**cfg.notes, "ulira": f"ipc {cfg.ipc}: each model trains on half the "
                 "training split (clusters of ~5 images, as the class-wise study's); every "
                 "model trains its original epochs without validation selection; Retrain (the "
                 "reference and the retrain row) uses the originals' schedule"}
    return cfg


def get_config(name: str = "digits") -> UliraConfig:
    """The audit on ``digits`` or ``mnist5k`` (run times: ``docs/reproduce.md`` §10)."""
    if name == "digits":
        return ulira_config(_digits_config())
    if name == "mnist5k":
        cfg = ulira_config(_mnist5k_config())
        # Sized to run within ≈45 min on 2 CPU cores (docs/design_notes.md has the timings):
        # Retrain (the sanity row), CF and A-CF (the paper's question) and SalUn (the method
        # that over-forgot on digits), without Blend, 16 shadow and 16 target models.
        cfg.condensation = (False,)
        cfg.methods = ("retrain", "cf", "a_cf", "salun")
        cfg.shadow_models = 16
        cfg.chunk = 1
        cfg.notes = {**cfg.notes, "ulira_mnist5k": "mnist5k: Retrain, CF, A-CF and SalUn "
                     "without Blend, 16 shadow and 16 target models per population, models "
                     "one at a time inside each step (a 45-minute budget on 2 cores)"}
        return cfg
    raise ValueError(f"unknown configuration {name!r}; expected one of {CONFIGS}")


def validate(cfg: UliraConfig) -> None:
    """Raise ValueError on a setting this study cannot run, before any data or training."""
    if cfg.shadow_models < 2 or cfg.target_models < 1:
        raise ValueError(f"need shadow_models >= 2 and target_models >= 1; got "
                         f"{cfg.shadow_models} and {cfg.target_models}")
    if cfg.forget_size < 1:
        raise ValueError(f"forget_size must be >= 1, got {cfg.forget_size}")
    if cfg.rounds != 1:
        raise ValueError("the audit is single-round")
    if not cfg.seeds or not cfg.methods or not cfg.condensation:
        raise ValueError("no seeds, methods or columns selected")


# ---------------------------------------------------------------------------------------------
# Populations: which examples every model trains on


@dataclasses.dataclass(frozen=True)
class Populations:
    """The index sets of one seed's audit (indices into the training split).

    Attributes:
      forget: ``[K]`` the audited forget set F.
      halves: ``[N, n_R]`` bool: model i's half of the other training examples R.
      rest: ``[n_R]`` the indices of R.
    """

    forget: np.ndarray
    halves: np.ndarray
    rest: np.ndarray

    @property
    def models(self) -> int:
        return int(self.halves.shape[0])

    def retain(self, i: int) -> np.ndarray:
        """Model i's retain set H_i (training-split indices)."""
        return self.rest[self.halves[i]]

    def trained_on(self, i: int) -> np.ndarray:
        """Model i's original training set H_i ∪ F, F last."""
        return np.concatenate([self.retain(i), self.forget])


def make_populations(n_train: int, forget_size: int, models: int, key: jax.Array) -> Populations:
    """F (uniform) and N random halves of the rest.

    Raises:
      ValueError: a forget set larger than half the training split.
    """
    if not 1 <= forget_size <= n_train // 2:
        raise ValueError(f"forget_size must be in [1, {n_train // 2}] for {n_train} training "
                         f"examples; got {forget_size}")
    k_f, k_h = jax.random.split(key)
    order = np.asarray(jax.random.permutation(k_f, n_train))
    forget = np.sort(order[:forget_size]).astype(np.int32)
    rest = np.sort(order[forget_size:]).astype(np.int32)
    return Populations(forget, ensemble.random_halves(k_h, rest.size, models), rest)


# ---------------------------------------------------------------------------------------------
# Training and unlearning N models at once


def train_originals(cfg: UliraConfig, splits: Any, pops: Populations, apply_fn, init_fn,
                    keys: dict) -> tuple[Any, float]:
    """The N originals, model i on H_i ∪ F (stacked parameters) and the wall-clock seconds."""
    n = pops.models
    pool = pools.make_pool(splits.train_x, splits.train_y)
    include = np.zeros((n, pool.y.shape[0]), bool)
    for i in range(n):
        include[i, pops.trained_on(i)] = True
    o = cfg.original
    params = ensemble.init_models(init_fn, jax.random.split(keys["init"], n))
    t0 = time.perf_counter()
    out = train.fit(apply_fn, params, pool, jax.random.split(keys["train"], n), epochs=o.epochs,
                    batch_size=o.batch_size, optimizer=optim.sgd(o.lr, o.momentum, o.weight_decay),
                    lr_schedule=optim.cosine_with_warmup(o.lr, o.epochs, o.warmup_epochs),
                    include=include, models=ensemble.Ensemble(n, chunk=cfg.chunk),
                    progress=f"{n} originals")
    return jax.block_until_ready(out.params), time.perf_counter() - t0


def _blend_retain(cfg: UliraConfig, splits: Any, pops: Populations, i: int,
                  keys: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """Model i's Blend-reduced retain set: its own partition of H_i ∪ F (a fresh ψ and k-means
    per model), the clusters untouched by F condensed. Returns ``(x, y, seconds)``."""
    idx = pops.trained_on(i)
    x, y = splits.train_x[idx], splits.train_y[idx]
    shape = x.shape[1:]
    net = convnet(cfg.condense_net, shape, splits.num_classes)
    psi_key, kmeans_key = (jax.random.fold_in(k, i) for k in seeds.partition_keys(keys))
    t0 = time.perf_counter()
    part = partition_images(cfg, x, y, num_classes=splits.num_classes,
                            net_classes=splits.num_classes, psi_key=psi_key,
                            kmeans_key=kmeans_key)
    n_r = idx.size - pops.forget.size
    out = condense(net.apply, init_fn_for(net, shape), x, y, part,
                   np.arange(n_r, idx.size, dtype=np.int32), np.arange(n_r, dtype=np.int32),
                   key=jax.random.fold_in(keys["extractor"], i),
                   **dataclasses.asdict(cfg.blend))
    return np.asarray(out.x), np.asarray(out.y), time.perf_counter() - t0


def unlearn_models(cfg: UliraConfig, splits: Any, pops: Populations, originals: Any, method: Any,
                   key: jax.Array, retain_sets: Sequence[tuple[Any, Any]]) -> Any:
    """Run ``method`` over the N stacked originals at once; model i forgets F and keeps
    ``retain_sets[i]``. Returns :class:`~jaxunlearn.unlearn.UnlearnOutput` (stacked params)."""
    fx, fy = splits.train_x[pops.forget], splits.train_y[pops.forget]
    datas = [make_unlearn_data(retain_sets[i], (fx, fy), (splits.unseen_x, splits.unseen_y),
                               splits.num_classes) for i in range(pops.models)]
    return run_method(method, originals, stack_unlearn_data(datas),
                      jax.random.split(key, pops.models),
                      models=ensemble.Ensemble(pops.models, chunk=cfg.chunk),
                      progress=f"{method.name} x{pops.models}")


def _phi(apply_fn, params: Any, splits: Any, pops: Populations, batch_size: int) -> np.ndarray:
    """``[N, K]`` logit-scaled confidences of every model on F."""
    logits = ensemble.predict_models(apply_fn, params, splits.train_x[pops.forget], batch_size)
    labels = np.broadcast_to(splits.train_y[pops.forget], logits.shape[:2])
    return logit_confidence(logits, labels, phi="exact")


# ---------------------------------------------------------------------------------------------
# The audit of one population against the reference


def audit_row(phi_NxK: np.ndarray, ref_NxK: np.ndarray, shadows: int, *, n_boot: int = 1000,
              seed: int = 0) -> dict:
    """U-LiRA and the forgetting quality of one population against the reference population.

    Args:
      phi_NxK: the audited population's φ (N models, K examples; the first ``shadows`` models
        are shadows, the rest targets).
      ref_NxK: the reference (retrained) population's φ, same layout.
      shadows: S.
      n_boot, seed: the bootstrap of :func:`jaxunlearn.audit.ulira`.

    Returns:
      A flat dict of the record's audit fields (fractions in [0, 1]).
    """
    u = audit.ulira(phi_NxK[:shadows], ref_NxK[:shadows], phi_NxK[shadows:], ref_NxK[shadows:],
                    n_boot=n_boot, seed=seed)
    fq = audit.forgetting_quality(phi_NxK, ref_NxK)
    return {
        "ulira_acc": u.accuracy, "ulira_acc_ci": list(u.accuracy_ci),
        "ulira_best_acc": u.best_accuracy,
        "ulira_auc": u.auc, "ulira_auc_ci": list(u.auc_ci),
        "ulira_tpr1": u.tpr_at_1, "ulira_tpr1_ci": list(u.tpr_at_1_ci),
        "ulira_tpr01": u.tpr_at_01, "ulira_tpr01_ci": list(u.tpr_at_01_ci),
        "ulira_pairs": int(u.n_pairs),
        "ulira_binomial_se": float(audit.binomial_se(0.5, u.n_pairs)),
        "per_example_acc": [float(v) for v in u.per_example_accuracy],
        "fq": fq.score, "fq_models": int(fq.n_models), "fq_max_epsilon": float(fq.max_epsilon),
        "fq_mean_epsilon": float(np.mean(fq.epsilon)),
        "fq_capped": int(np.sum(fq.capped)),
    }


def _paper_mia(cfg: UliraConfig, splits: Any, pops: Populations, apply_fn, params: Any) -> dict:
    """The paper's MIA and accuracies of every target model (forget set F against the test
    split; retain accuracy on the model's own H_i)."""
    fx, fy = splits.train_x[pops.forget], splits.train_y[pops.forget]
    rows = []
    for i in range(cfg.shadow_models, pops.models):
        r = pops.retain(i)
        rows.append(evaluate_unlearning(
            apply_fn, ensemble.model_at(params, i), retain=(splits.train_x[r], splits.train_y[r]),
            forget=(fx, fy), test=(splits.test_x, splits.test_y), seed=i,
            batch_size=cfg.eval_batch_size, mia_options=dataclasses.asdict(cfg.mia)))
    out = {}
    for k in ("mia", "mia_auc", "forget_acc", "retain_acc", "test_acc"):
        out[k] = float(np.mean([r[k] for r in rows]))
        out[f"{k}_targets"] = [float(r[k]) for r in rows]
    return out


# ---------------------------------------------------------------------------------------------
# The study


def _phi_path(root: str, name: str, condensed: bool, seed: int) -> str:
    return os.path.join(root, "phi", f"{name}_{column_slug(condensed)}_seed{seed}.npy")


def _save_phi(path: str, phi: np.ndarray) -> None:
    import io

    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, phi)
    atomic_write(path, buf.getvalue())


def _run(method: str, condensed: bool, seed: int) -> dict:
    return {"method": method, "condensed": condensed, "seed": seed}


def run(cfg: UliraConfig, workdir: str) -> list[dict]:
    """Run the audit ``cfg`` into ``workdir`` (resuming); return its records."""
    validate(cfg)
    check_workdir(workdir)
    ds = seeds.load_study_dataset(cfg)
    model = build_model(cfg.model, ds.num_classes, **cfg.model_kwargs)
    init_fn = init_fn_for(model, ds.x_train.shape[1:])
    methods = {(m, c): make_method(cfg.method_of(m), model.apply, init_fn=init_fn,
                                   **cfg.hparams(m, c))
               for m in cfg.methods for c in cfg.condensation}
    reference = make_method(REFERENCE, model.apply, init_fn=init_fn,
                            **cfg.hparams(REFERENCE, False))
    paths = prepare_workdir(workdir)
    save_config(cfg, paths.config)
    ledger = Ledger(paths.records, {"method": str, "condensed": bool, "seed": int})
    n = cfg.shadow_models + cfg.target_models
    progress = Progress(sum(not ledger.has(_run(m, c, seed)) for seed in cfg.seeds
                            for m in cfg.methods for c in cfg.condensation))
    for seed in cfg.seeds:
        if ledger.seed_done(seed, [_run(m, c, seed) for m in (*CONTROLS, *cfg.methods)
                                   for c in cfg.condensation if not (m in CONTROLS and c)]):
            continue
        keys = seeds.seed_keys(seed)
        splits = seeds.seed_splits(cfg, ds, seed)
        pops = make_populations(len(splits.train_y), cfg.forget_size, n,
                                jax.random.fold_in(keys["forget"], 14))
        template = ensemble.init_models(init_fn, jax.random.split(keys["init"], n))
        ckpt = os.path.join(paths.checkpoints, f"originals_seed{seed}")
        if exists(ckpt, kind="dir"):
            originals, train_s = restore_params(ckpt, template), float("nan")
            log(f"seed {seed}: {n} originals restored from {ckpt}")
        else:
            log(f"seed {seed}: training {n} originals at once, each on a random half of "
                f"{pops.rest.size} images plus the {pops.forget.size} audited ones")
            originals, train_s = train_originals(cfg, splits, pops, model.apply, init_fn, keys)
            save_params(ckpt, originals)
            log(f"seed {seed}: originals trained in {train_s:.1f}s")
        ref_path = _phi_path(paths.root, "reference", False, seed)
        real = [(splits.train_x[pops.retain(i)], splits.train_y[pops.retain(i)])
                for i in range(n)]
        if exists(ref_path):
            ref_phi = np.load(ref_path)
        else:
            out = unlearn_models(cfg, splits, pops, originals, reference,
                                 seeds.method_key(cfg, keys, "reference"),
                                 real)
            ref_phi = _phi(model.apply, out.params, splits, pops, cfg.eval_batch_size)
            _save_phi(ref_path, ref_phi)
            log(f"seed {seed}: reference population (Retrain x{n}) in {out.unlearn_s:.1f}s")
        base = {"study": cfg.name, "dataset": cfg.dataset, "seed": seed, "models": n,
                "shadow_models": cfg.shadow_models, "target_models": cfg.target_models,
                "forget_size": int(pops.forget.size), "half_size": int(pops.halves[0].sum())}
        if not ledger.has(_run("original", False, seed)):
            phi = _phi(model.apply, originals, splits, pops, cfg.eval_batch_size)
            _save_phi(_phi_path(paths.root, "original", False, seed), phi)
            rec = {**base, "method": "original", "condensed": False, "unlearn_s": 0.0,
                   "train_s": train_s, **audit_row(phi, ref_phi, cfg.shadow_models,
                                                   n_boot=cfg.bootstrap, seed=seed),
                   **_paper_mia(cfg, splits, pops, model.apply, originals)}
            ledger.append(rec)
            _log_row(rec)
        blended = None
        for condensed in cfg.condensation:
            pending = [m for m in cfg.methods if not ledger.has(_run(m, condensed, seed))]
            if not pending:
                continue
            retain_sets, blend_s = real, 0.0
            if condensed:
                if blended is None:
                    log(f"seed {seed}: Blend for each of the {n} models")
                    parts = [_blend_retain(cfg, splits, pops, i, keys) for i in range(n)]
                    blended = [(x, y) for x, y, _ in parts], float(sum(p[2] for p in parts))
                retain_sets, blend_s = blended
            for name in pending:
                progress.start(f"{column_label(name, condensed)} x{n} models seed {seed}")
                method = methods[(name, condensed)]
                key = seeds.method_key(cfg, keys, name)  # paired with its method
                out = unlearn_models(cfg, splits, pops, originals, method, key, retain_sets)
                phi = _phi(model.apply, out.params, splits, pops, cfg.eval_batch_size)
                _save_phi(_phi_path(paths.root, name, condensed, seed), phi)
                rec = {**base, "method": name, "condensed": condensed,
                       "unlearn_s": out.unlearn_s, "compile_s": out.compile_s,
                       "blend_s": blend_s if condensed else 0.0,
                       "retain_size_mean": float(np.mean([len(r[1]) for r in retain_sets])),
                       **audit_row(phi, ref_phi, cfg.shadow_models, n_boot=cfg.bootstrap,
                                   seed=seed),
                       **_paper_mia(cfg, splits, pops, model.apply, out.params)}
                ledger.append(rec)
                _log_row(rec)
        write_results(paths.root, cfg)
    write_results(paths.root, cfg)
    return load_records(paths.records)


def _log_row(r: dict) -> None:
    lo, hi = r["ulira_acc_ci"]
    log(f"seed {r['seed']} {column_label(r['method'], r['condensed'])}: U-LiRA accuracy "
        f"{100 * r['ulira_acc']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}], AUC "
        f"{100 * r['ulira_auc']:.1f}, FQ {r['fq']:.3f}, paper MIA {r['mia']:.1f}, forget acc "
        f"{r['forget_acc']:.1f}, test acc {r['test_acc']:.1f}, {r['unlearn_s']:.1f}s")


# ---------------------------------------------------------------------------------------------
# Report


def _pct_ci(v: float, ci: Sequence[float]) -> str:
    return f"{100 * v:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _order(records: Sequence[dict], cfg_methods: Sequence[str]) -> list[dict]:
    rank = {m: i for i, m in enumerate((*CONTROLS, *cfg_methods))}
    return sorted(records, key=lambda r: (r["seed"], bool(r["condensed"]),
                                          rank.get(r["method"], 99)))


def results_markdown(records: Sequence[dict], methods: Sequence[str],
                     exposed: dict[tuple, int] | None = None) -> str:
    """The audit table (one row per method, column and seed), the controls and the rankings.

    ``exposed``: ``(method, condensed, seed) -> `` the number of audited examples whose
    per-example attack accuracy has a 95% Wilson interval above 50% (from the saved φ; a column
    of the table when given)."""
    exposed = exposed or {}
    if not records:
        return "# U-LiRA audit\n\nNo records yet.\n"
    first = records[0]
    lines = [
        f"# U-LiRA audit ({first['dataset']})", "",
        f"K = {first['forget_size']} audited examples (uniform, fixed per seed); N = "
        f"{first['models']} models per population, each trained on a random half "
        f"({first['half_size']} images) plus F; {first['shadow_models']} shadows fit the "
        f"per-example Gaussians, {first['target_models']} targets per population are attacked "
        f"({first['target_models']} × K pairs per side). Reference population: Retrain without "
        "Blend (exact unlearning), an independent draw from the `retrain` row.", "",
        "U-LiRA accuracy at the likelihood-ratio test's own threshold (50 = the attack cannot "
        "tell the method's models from retrained ones), AUC and TPR at 1% / 0.1% FPR, all in "
        "percent with 95% two-way bootstrap intervals (targets × examples); FQ: the NeurIPS-2023 "
        f"forgetting quality from all N models of each population (N = {first['models']}: ε "
        f"resolves up to {first['fq_max_epsilon']:.2f}; exact unlearning does not score 1, see "
        "`jaxunlearn.audit`); the paper's MIA (50 = ideal), forget and test accuracy: means over "
        "the target models.", "",
        "Exposed: audited examples (of K) whose own attack accuracy (over the "
        f"{2 * first['target_models']} target models) has a 95% Wilson interval above 50%.", "",
        "| method | Blend | U-LiRA acc | AUC | TPR@1% | TPR@0.1% | exposed | FQ (mean ε) | "
        "paper MIA | forget acc | test acc | time, N models (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in _order(records, methods):
        t = r["unlearn_s"] + r.get("blend_s", 0.0)
        lines.append(
            f"| {r['method']} | {'yes' if r['condensed'] else 'no'} | "
            f"{_pct_ci(r['ulira_acc'], r['ulira_acc_ci'])} | "
            f"{_pct_ci(r['ulira_auc'], r['ulira_auc_ci'])} | "
            f"{_pct_ci(r['ulira_tpr1'], r['ulira_tpr1_ci'])} | "
            f"{_pct_ci(r['ulira_tpr01'], r['ulira_tpr01_ci'])} | "
            f"{exposed.get((r['method'], bool(r['condensed']), r['seed']), '–')} | "
            f"{r['fq']:.3f} ({r['fq_mean_epsilon']:.2f}) | "
            f"{format_ci(r['mia_targets'], 1)} | {format_ci(r['forget_acc_targets'], 1)} | "
            f"{format_ci(r['test_acc_targets'], 1)} | "
            + (f"{t:.1f}" if r["method"] not in CONTROLS else "–") + " |")
    lines += ["", "## Controls", ""]
    for r in records:
        if r["method"] == REFERENCE and not r["condensed"]:
            se = r["ulira_binomial_se"]
            lines.append(f"- Sanity (seed {r['seed']}): Retrain against the reference scores "
                         f"{100 * r['ulira_acc']:.1f}% (binomial SE at 50%: {100 * se:.1f} "
                         f"points; {abs(r['ulira_acc'] - 0.5) / se:.1f} SE from 50).")
        if r["method"] == "original":
            se = r["ulira_binomial_se"]
            lines.append(f"- Positive control (seed {r['seed']}): the originals, not unlearned, "
                         f"score {100 * r['ulira_acc']:.1f}% ({(r['ulira_acc'] - 0.5) / se:.1f} "
                         "SE above 50).")
    lines += ["", "## Rankings", "",
              "Closest to Retrain first: by U-LiRA accuracy (distance to 50%), and by the paper's "
              "MIA (distance of the target models' mean to 50).", ""]
    for seed in sorted({r["seed"] for r in records}):
        rows = [r for r in records if r["seed"] == seed and r["method"] not in CONTROLS]
        by_u = sorted(rows, key=lambda r: abs(r["ulira_acc"] - 0.5))
        by_m = sorted(rows, key=lambda r: abs(r["mia"] - 50.0))
        lines.append(f"- seed {seed}, U-LiRA: " + ", ".join(_tag(r) for r in by_u))
        lines.append(f"- seed {seed}, paper's MIA: " + ", ".join(_tag(r) for r in by_m))
    return "\n".join(lines) + "\n"


def _tag(r: dict) -> str:
    return column_label(r["method"], r["condensed"])


def write_results(root: str, cfg: UliraConfig) -> None:
    """``results.md`` and ``ulira_roc.png`` from the records and the saved φ arrays."""
    records = load_records(os.path.join(root, "records.jsonl"))  # every process takes part
    if not sharding.is_primary():  # the one that writes files (and the φ files it reads)
        return
    curves, exposed = {}, {}
    for r in records:
        ref = _phi_path(root, "reference", False, r["seed"])
        own = _phi_path(root, r["method"], bool(r["condensed"]), r["seed"])
        if not (os.path.exists(ref) and os.path.exists(own)):
            continue
        phi, ref_phi = np.load(own), np.load(ref)
        s = r["shadow_models"]
        u = audit.ulira(phi[:s], ref_phi[:s], phi[s:], ref_phi[s:], n_boot=0)
        exposed[(r["method"], bool(r["condensed"]), r["seed"])] = int(
            np.sum(u.per_example_accuracy_ci[:, 0] > 0.5))
        if r["seed"] == cfg.seeds[0]:
            curves[_tag(r)] = (u.fpr, u.tpr, u.auc)
    atomic_write(os.path.join(root, "results.md"),
                 results_markdown(records, cfg.methods, exposed))
    if curves:
        ulira_roc_plot(os.path.join(root, "ulira_roc.png"), curves,
                       title=f"U-LiRA ROC ({records[0]['dataset']}, seed {cfg.seeds[0]})")


def main(argv=None) -> int:
    return cli.main(get_config, run, __doc__, argv, configs=CONFIGS)


if __name__ == "__main__":
    sys.exit(main())
