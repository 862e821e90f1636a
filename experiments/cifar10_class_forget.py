"""The paper's CIFAR-10 class-forgetting study (ResNet-18, the paper's hyper-parameters; GPU).

    python -m experiments.cifar10_class_forget --workdir runs/cifar10 --data_dir ~/data
    python -m experiments.cifar10_class_forget --workdir runs/cifar10_cpu --scale cpu

``--scale cpu`` is a scaled-down CPU-sized run (ConvNet-3, 500 images per class, ipc 100); it
is not the paper's setting. CIFAR-10 is read from the standard archives in ``--data_dir``
(downloaded when a network is available; otherwise the error lists the ways to provide it).
"""

from __future__ import annotations

import sys

from experiments import cli
from experiments.configs.cifar10 import get_config
from experiments.study import run_study

__all__ = ["get_config", "main"]


def main(argv=None) -> int:
    return cli.main(get_config, run_study, __doc__, argv, scales=True)


if __name__ == "__main__":
    sys.exit(main())
