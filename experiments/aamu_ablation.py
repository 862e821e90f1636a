"""Ablation of A-AMU's loss transform (method.md §4): three ``ecdf`` modes × two ``steepen``
options.

    python -m experiments.aamu_ablation --workdir runs/aamu_ablation
    python -m experiments.aamu_ablation --workdir runs/abl --set 'base_method="a_scrub"'

Runs the embedded class-wise study (digits, 3 seeds, with and without Blend) with Retrain and CF
as references and one A-AMU method (``a_cf`` by default) under six variants named
``a_cf[ecdf=MODE,steepen=S]`` (``method_hparams`` entries of the config, see
``configs/base.py``): every other hyper-parameter is the config's ``a_cf`` entry, and all
variants of a seed share the original model, the forget request and the unlearning key, so the
comparison is paired. Writes ``records.jsonl`` and ``results.md`` (the study's full table,
preceded by the ablation table: unlearning time, forget/test accuracy, MIA, gap to Retrain).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from experiments import cli
from experiments.configs.base import StudyConfig
from experiments.configs.digits import get_config as _digits_config
from experiments.io import atomic_write, prepare_workdir
from experiments.report import INTERVAL_NOTE, average_gap, format_ci
from experiments.study import run_study
from jaxunlearn.losses import ECDF_MODES, STEEPEN_MODES

__all__ = ["AAMUAblationConfig", "ablation_table", "get_config", "main", "run", "variants"]


@dataclasses.dataclass
class AAMUAblationConfig(StudyConfig):
    """The digits study plus the A-AMU method whose variants are compared."""

    base_method: str = "a_cf"
    references: tuple = ("retrain", "cf")


def variants(base_method: str) -> dict[str, dict]:
    """``{"base[ecdf=MODE,steepen=S]": method_hparams entry}`` for every ECDF mode and
    steepening option."""
    return {f"{base_method}[ecdf={e},steepen={s}]": {"method": base_method, "ecdf": e,
                                                      "steepen": s}
            for e in ECDF_MODES for s in STEEPEN_MODES}


def get_config() -> AAMUAblationConfig:
    base = _digits_config()
    cfg = AAMUAblationConfig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    cfg.name = "aamu_ablation"
    cfg.methods = ()  # filled by run() from base_method and references
    return cfg


def ablation_table(records: list[dict], cfg: StudyConfig) -> str:
    """One row per (variant, condensation): time, forget/test accuracy, MIA, gap to Retrain."""
    cols = [("unlearn s", "unlearn_s", 3), ("forget acc", "forget_acc", 2),
            ("test acc", "test_acc", 2), ("MIA", "mia", 2), ("retain acc", "retain_acc", 2)]
    lines = ["| method | ecdf | steepen | DC | " + " | ".join(c for c, _, _ in cols)
             + " | gap to Retrain | seeds |", "|" + "---|" * (len(cols) + 6)]
    methods = [m for m in dict.fromkeys(r["method"] for r in records) if m != "original"]
    for condensed in (False, True):
        for m in methods:
            rs = [r for r in records if r["method"] == m and bool(r["condensed"]) == condensed]
            if not rs:
                continue
            base, hp = cfg.method_of(m), cfg.method_hparams.get(m, {})
            cells = [format_ci([r.get(f) for r in rs], d) for _, f, d in cols]
            gap = format_ci(average_gap(records, m, condensed)) if base != "retrain" else "–"
            lines.append(f"| {base} | {hp.get('ecdf', '')} | {hp.get('steepen', '')} | "
                         f"{'yes' if condensed else 'no'} | " + " | ".join(cells)
                         + f" | {gap} | {len(rs)} |")
    return "\n".join(lines)


def run(config: StudyConfig, workdir: str) -> list[dict]:
    """Run the ablation into ``workdir``; return all its records."""
    cfg = config
    if not cfg.methods:
        named = variants(cfg.base_method)
        cfg.methods = (*cfg.references, *named)
        cfg.method_hparams = {**cfg.method_hparams, **named}
    records = run_study(cfg, workdir)
    paths = prepare_workdir(workdir)
    with open(paths.results) as f:
        study = f.read()
    table = ablation_table(records, cfg)
    atomic_write(paths.results, f"# A-AMU ablation ({cfg.base_method})\n\nCells: "
                 f"{INTERVAL_NOTE}; times in seconds (compile excluded).\n\n{table}\n\n{study}")
    atomic_write(os.path.join(paths.root, "ablation.md"), table + "\n")
    return records


def main(argv=None) -> int:
    return cli.main(get_config, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

