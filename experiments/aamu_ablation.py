"""Ablation of A-AMU's loss transform: three ``ecdf`` modes × two ``steepen`` options (SPEC §4).

    python -m experiments.aamu_ablation --workdir runs/aamu_ablation
    python -m experiments.aamu_ablation --workdir runs/abl --set 'base_method="a_scrub"'

Runs the embedded class-wise study (digits, 3 seeds, with and without Blend) with Retrain and CF
as references and one A-AMU method (``a_cf`` by default) under six variants,
``a_cf[ecdf=MODE,steepen=S]``: every other hyper-parameter is the config's ``a_cf`` entry, and
all variants of a seed share the original model, the forget request and the unlearning key, so
the comparison is paired. Writes ``records.jsonl`` and ``results.md`` (the study's full table,
preceded by the ablation table: unlearning time, forget/test accuracy, MIA, gap to Retrain).
"""

from __future__ import annotations

import dataclasses
import os
import sys

from experiments.common import atomic_write, main_study, prepare_workdir, run_study
from experiments.configs.base import StudyConfig
from experiments.configs.digits import get_config as _digits_config
from experiments.report import average_gap, format_ci
from jaxunlearn.losses import ECDF_MODES, STEEPEN_MODES

__all__ = ["AAMUAblationConfig", "ablation_table", "get_config", "main", "run", "variant_names"]


@dataclasses.dataclass
class AAMUAblationConfig(StudyConfig):
    """The digits study plus the A-AMU method whose variants are compared."""

    base_method: str = "a_cf"
    references: tuple = ("retrain", "cf")


def variant_names(base_method: str) -> list[str]:
    """``base[ecdf=MODE,steepen=S]`` for every ECDF mode and steepening option."""
    return [f"{base_method}[ecdf={e},steepen={s}]" for e in ECDF_MODES for s in STEEPEN_MODES]


def get_config() -> AAMUAblationConfig:
    cfg = AAMUAblationConfig(**dataclasses.asdict(_digits_config()))
    cfg.name = "aamu_ablation"
    cfg.methods = ()  # filled by run() from base_method and references
    return cfg


def ablation_table(records: list[dict]) -> str:
    """One row per (variant, condensation): time, forget/test accuracy, MIA, gap to Retrain."""
    from experiments.common import split_variant

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
            base, hp = split_variant(m)
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
        cfg.methods = (*cfg.references, *variant_names(cfg.base_method))
    records = run_study(cfg, workdir)
    paths = prepare_workdir(workdir)
    with open(paths.results) as f:
        study = f.read()
    table = ablation_table(records)
    atomic_write(paths.results, f"# A-AMU ablation ({cfg.base_method})\n\nMean ± 95% CI over "
                 f"seeds; times in seconds (compile excluded).\n\n{table}\n\n{study}")
    atomic_write(os.path.join(paths.root, "ablation.md"), table + "\n")
    return records


def main(argv=None) -> int:
    return main_study(get_config, __doc__.splitlines()[0], argv, runner=run)


if __name__ == "__main__":
    sys.exit(main())

