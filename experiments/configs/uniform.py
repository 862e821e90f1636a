"""Dataset configurations by name, and their uniform-forgetting form (SPEC §1).

``dataset_config(name)`` gives the class-forgetting configuration of a dataset; names:

- ``digits``: the embedded 8×8 digits (configs/digits.py), offline, minutes on a CPU;
- ``cifar10``, ``svhn``, ``cinic10``: the paper's settings (ResNet-18; GPU work), each with a
  scaled-down ``:cpu`` variant (ConvNet-3, 500 images per class; not the paper's numbers);
- ``synthetic``: CIFAR-shaped stand-in data (32×32×3, 10 classes, 500 / 200 images per class)
  with the ``cifar10:cpu`` settings, for timings only (its accuracies mean nothing).

``get_config(name, fraction)`` switches it to uniform forgetting of ``fraction`` of the training
set (paper: 10%; the reference also has 0.1% and 50%).
"""

from __future__ import annotations

from collections.abc import Callable

from experiments.configs import cifar10, cinic10, digits, svhn
from experiments.configs.base import StudyConfig

__all__ = ["DATASET_CONFIGS", "dataset_config", "get_config"]


def _synthetic() -> StudyConfig:
    cfg = cifar10.get_config("cpu")
    cfg.dataset = "synthetic"
    cfg.notes = {**cfg.notes, "synthetic": "CIFAR-shaped synthetic data: timings only"}
    return cfg


DATASET_CONFIGS: dict[str, Callable[[], StudyConfig]] = {
    "digits": digits.get_config,
    "cifar10": lambda: cifar10.get_config("paper"),
    "cifar10:cpu": lambda: cifar10.get_config("cpu"),
    "svhn": lambda: svhn.get_config("paper"),
    "svhn:cpu": lambda: svhn.get_config("cpu"),
    "cinic10": lambda: cinic10.get_config("paper"),
    "cinic10:cpu": lambda: cinic10.get_config("cpu"),
    "synthetic": _synthetic,
}


def dataset_config(name: str) -> StudyConfig:
    """The configuration named ``name`` (see the module docstring)."""
    if name not in DATASET_CONFIGS:
        raise ValueError(f"unknown config {name!r}; expected one of {sorted(DATASET_CONFIGS)}")
    return DATASET_CONFIGS[name]()


def get_config(name: str = "digits", fraction: float = 0.1) -> StudyConfig:
    """``dataset_config(name)`` with uniform forgetting of ``fraction`` of the training set."""
    cfg = dataset_config(name)
    cfg.scenario = "uniform"
    cfg.forget_classes = None
    cfg.forget_fraction = fraction
    return cfg
