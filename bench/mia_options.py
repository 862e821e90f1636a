"""How much the MIA's options move the score, on the models of a finished study (no timing).

The paper's MIA (``jaxunlearn.mia``) follows the reference code by default: φ is its clamped
``stable_phi``, the logistic regression sees raw φ (no StandardScaler), and an AUC ≤ 42 triggers
the reference's swap (a second attack against the test split of every class). This script
re-scores every model of a study workdir run with ``--save_params`` (and the originals) under
each option and prints how far each option's score and plain AUC are from the default:

    python -m experiments.class_forget --workdir runs/cf --save_params
    python bench/mia_options.py runs/cf

Options compared with the default (phi=reference, standardize=False, swap=reference):
``standardize=True``; ``phi=exact``; ``swap=flip`` (this library's earlier rule); ``swap=none``.
Only round-0 records are scored (the multi-round study's later rounds need their round's
forget set; see ``experiments.study.round_target``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import seeds  # noqa: E402
from experiments.configs.base import StudyConfig, from_json  # noqa: E402
from experiments.io import load_records, restore_params  # noqa: E402
from experiments.study import _params_name  # noqa: E402
from jaxunlearn.metrics import predict_logits  # noqa: E402
from jaxunlearn.mia import logit_confidence, mia_from_scores, mia_nonmember_index  # noqa: E402
from jaxunlearn.models import build_model, init_fn_for  # noqa: E402

OPTIONS = {
    "default": {},
    "standardize": {"standardize": True},
    "phi=exact": {"phi": "exact"},
    "swap=flip": {"swap": "flip"},
    "swap=none": {"swap": "none"},
}


def score_all(workdir: str) -> list[dict]:
    """One row per model: its record's key and the MIA under every option."""
    with open(os.path.join(workdir, "config.json")) as f:
        known = {f.name for f in __import__("dataclasses").fields(StudyConfig)}
        raw = {k: v for k, v in json.load(f).items() if k in known}
    cfg = from_json(StudyConfig, json.dumps(raw))
    ds = seeds.load_study_dataset(cfg)
    model = build_model(cfg.model, ds.num_classes, **cfg.model_kwargs)
    template = init_fn_for(model, ds.x_train.shape[1:])(seeds.seed_keys(0)["init"])
    rows = []
    records = load_records(os.path.join(workdir, "records.jsonl"), ("method", "condensed", "seed"))
    for rec in records:
        if rec.get("round", 0) != 0:
            continue
        seed = int(rec["seed"])
        if rec["method"] == "original":
            path = os.path.join(workdir, "checkpoints", f"original_seed{seed}")
        else:
            path = os.path.join(workdir, "params", _params_name(rec))
        if not os.path.isdir(path):
            continue
        params = restore_params(os.path.abspath(path), template)
        splits = seeds.seed_splits(cfg, ds, seed)
        forget = seeds.make_forget(cfg, splits, seed)
        fx, fy = splits.train_x[forget.forget_idx], splits.train_y[forget.forget_idx]
        keep = mia_nonmember_index(fy, splits.test_y)
        f_logits = predict_logits(model.apply, params, fx, 512)
        t_logits = predict_logits(model.apply, params, splits.test_x, 512)
        row = {"method": rec["method"], "condensed": rec["condensed"], "seed": seed}
        for name, opts in OPTIONS.items():
            phi = opts.get("phi", "reference")
            m = np.asarray(logit_confidence(f_logits, fy, phi=phi))
            t = np.asarray(logit_confidence(t_logits, splits.test_y, phi=phi))
            rest = {k: v for k, v in opts.items() if k != "phi"}
            out = mia_from_scores(m, t[keep], t, seed=seed, **rest)
            row[name] = (out.score, out.auc)
        if abs(row["default"][0] - rec["mia"]) > 1e-6:
            print(f"warning: {rec['method']} seed {seed}: re-scored {row['default'][0]:.3f}, "
                  f"record says {rec['mia']:.3f}", file=sys.stderr)
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> str:
    lines = [f"{len(rows)} models (original + unlearned, round 0)", "",
             "| option | score: mean abs diff | max abs diff | models changed by > 1 | "
             "plain auc: mean abs diff | max abs diff |", "|---|---|---|---|---|---|"]
    base = np.array([r["default"] for r in rows])
    for name in OPTIONS:
        if name == "default":
            continue
        got = np.array([r[name] for r in rows])
        d = np.abs(got - base)
        lines.append(f"| {name} | {d[:, 0].mean():.2f} | {d[:, 0].max():.2f} | "
                     f"{int((d[:, 0] > 1).sum())} | {d[:, 1].mean():.2f} | {d[:, 1].max():.2f} |")
    swapped = sum(r["default"][1] <= 42.0 for r in rows)
    lines += ["", f"swap ran (plain auc ≤ 42) for {swapped} of {len(rows)} models"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+", help="study workdirs run with --save_params")
    args = p.parse_args(argv)
    for w in args.workdirs:
        print(f"## {w}\n")
        rows = score_all(w)
        if not rows:
            print("no saved models: run the study with --save_params\n")
            continue
        print(summary(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
