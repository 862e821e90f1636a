"""Uniform random forgetting study (method.md §1, §7: the paper's 10% uniform-forgetting table).

    python -m experiments.uniform_forget --workdir runs/uniform                  # embedded digits
    python -m experiments.uniform_forget --workdir runs/uniform50 --set forget_fraction=0.5
    python -m experiments.uniform_forget --config cifar10 --workdir runs/c10u --data_dir D

Forgets a seeded uniform random ``forget_fraction`` of the training set (default 10%; the
reference also runs 0.1% and 50%: ``--set forget_fraction=0.001`` / ``0.5``), then runs every
selected method without and with Blend condensation, 3 seeds by default. Records and tables are
those of the class-forgetting study (``config.json``, ``records.jsonl``, ``results.md``, plots);
a rerun resumes. ``--config`` picks the dataset configuration (``digits``, ``cifar10``,
``svhn``, ``cinic10``, ``synthetic`` for CIFAR-shaped timings; ``--scale cpu`` for the CPU-sized
form of a paper dataset).

On the digits (≈810 training images) 0.1% is a single image: too few for the MIA's 5-fold
cross-validation, so that option is for CIFAR-scale data (50 images).
"""

from __future__ import annotations

import sys

from experiments import cli
from experiments.configs.base import StudyConfig
from experiments.configs.uniform import DATASET_CONFIGS
from experiments.configs.uniform import get_config as uniform_config
from experiments.study import run_study

__all__ = ["get_config", "main", "run"]


def get_config(name: str = "digits", fraction: float = 0.1,
               scale: str | None = None) -> StudyConfig:
    """Uniform forgetting of ``fraction`` on the dataset configuration ``name``."""
    cfg = uniform_config(name, fraction, scale)
    cfg.name = "uniform_forget"
    return cfg


def run(config: StudyConfig, workdir: str) -> list[dict]:
    """Run the study ``config`` into ``workdir``; return its records."""
    if config.scenario != "uniform":
        raise ValueError(f"this study forgets uniformly; got scenario {config.scenario!r}")
    return run_study(config, workdir)


def main(argv=None) -> int:
    return cli.main(get_config, run, __doc__, argv, configs=list(DATASET_CONFIGS),
                    scales=True)


if __name__ == "__main__":
    sys.exit(main())
