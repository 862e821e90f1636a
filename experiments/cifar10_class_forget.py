"""The paper's CIFAR-10 class-forgetting study (ResNet-18, SPEC hyper-parameters; meant for a GPU).

    python -m experiments.cifar10_class_forget --workdir runs/cifar10 --data_dir ~/data
    python -m experiments.cifar10_class_forget --workdir runs/cifar10_cpu --variant cpu

``--variant cpu`` is a scaled-down CPU-sized run (ConvNet-3, 500 images per class, ipc 100); it
is not the paper's setting. CIFAR-10 is read from the standard archives in ``--data_dir``
(downloaded when a network is available; otherwise the error lists the ways to provide it).
"""

from __future__ import annotations

import sys

from experiments.common import main_study
from experiments.configs.cifar10 import get_config

__all__ = ["get_config", "main"]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    variant = "paper"
    if "--variant" in argv:
        i = argv.index("--variant")
        variant = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i:i + 2]
    return main_study(lambda: get_config(variant), __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
