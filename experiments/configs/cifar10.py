"""CIFAR-10 / ResNet-18 class forgetting with the paper's settings (SPEC §2–§5): GPU work.

Command: ``python -m experiments.cifar10_class_forget --workdir runs/cifar10 --data_dir DIR``.
Expected (paper, 3 seeds, its GPU): A-CF MIA ≈ 51.7 / 48.3 w/o / w DC, test acc ≈ 77, unlearning
≈ 76 s → 16 s with Blend; see SPEC §7 and docs/reproduce.md.

``get_config("cpu")`` (``--scale cpu``) is the documented CPU-sized variant: a ConvNet-3 (width
128, the paper's condensation network) on 500 training / 200 test images per class, ipc 100
(clusters of ≈5 as at the paper's scale), 30 original epochs. It is a scaled-down run, not the
paper's numbers.
"""

from __future__ import annotations

from experiments.configs.base import StudyConfig, apply_scale

__all__ = ["get_config"]


def get_config(scale: str = "paper") -> StudyConfig:
    cfg = StudyConfig(name="cifar10_class_forget", dataset="cifar10", model="resnet18",
                      ipc=1000, unseen_fraction=0.7)
    # clusters of ≈5 images, as ipc 1000 on the full 5,000 images per class
    return apply_scale(cfg, scale, cpu_ipc=100,
                       note="5k-image subsample, ConvNet-3, ipc 100, 30 original epochs, "
                            "paper's unlearning budgets")
