"""Class-wise forgetting study (the paper's Table of §7) on the embedded digits data.

    python -m experiments.class_forget --workdir runs/class_forget

Runs offline in minutes on 2 CPU cores: 3 seeds (each with its own original model and forgotten
class), every selected method without and with Blend condensation. Writes ``config.json``,
``records.jsonl`` and ``results.md`` into the workdir; a rerun resumes. Flags choose methods
(``--methods cf,a_cf`` or ``all``), seeds, dataset and model; ``--set KEY=JSON`` overrides any
config value (see ``experiments/configs``).
"""

from __future__ import annotations

import sys

from experiments import cli
from experiments.configs.base import StudyConfig
from experiments.configs.digits import get_config as _digits_config
from experiments.study import run_study

__all__ = ["get_config", "main", "run"]


def get_config() -> StudyConfig:
    return _digits_config()


def run(config: StudyConfig, workdir: str) -> list[dict]:
    """Run the study ``config`` into ``workdir``; return its records."""
    return run_study(config, workdir)


def main(argv=None) -> int:
    return cli.main(get_config, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
