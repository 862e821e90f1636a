"""Dataset configurations by name, and their uniform-forgetting form (docs/method.md §1).

``dataset_config(name)`` gives the class-forgetting configuration of a dataset; names:

- ``digits``: the embedded 8×8 digits (configs/digits.py), offline, minutes on a CPU;
- ``cifar10``, ``svhn``, ``cinic10``: the paper's settings (ResNet-18; GPU work), each with a
  scaled-down form, ``scale="cpu"`` (``--scale cpu``: ConvNet-3, 500 images per class; not the
  paper's numbers);
- ``synthetic``: CIFAR-shaped stand-in data (32×32×3, 10 classes, 500 / 200 images per class)
  with the CPU-sized CIFAR-10 settings, for timings only (its accuracies mean nothing).

``digits`` and ``synthetic`` are CPU-sized configs (``scale="cpu"``, their only scale).
``get_config(name, fraction, scale)`` switches a config to uniform forgetting of ``fraction`` of
the training set (paper: 10%; the reference also has 0.1% and 50%).
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


def _cpu_only(name: str, make: Callable[[], StudyConfig]) -> Callable[[str], StudyConfig]:
    def get(scale: str = "cpu") -> StudyConfig:
        if scale != "cpu":
            raise ValueError(f"the {name} config is CPU-sized; it has no scale {scale!r}")
        return make()

    return get


DATASET_CONFIGS: dict[str, Callable[[str], StudyConfig]] = {
    "digits": _cpu_only("digits", digits.get_config),
    "cifar10": cifar10.get_config,
    "svhn": svhn.get_config,
    "cinic10": cinic10.get_config,
    "synthetic": _cpu_only("synthetic", _synthetic),
}


def dataset_config(name: str, scale: str | None = None) -> StudyConfig:
    """The configuration named ``name`` at ``scale`` (None: its own; see the module docstring)."""
    if name not in DATASET_CONFIGS:
        raise ValueError(f"unknown config {name!r}; expected one of {sorted(DATASET_CONFIGS)}")
    return DATASET_CONFIGS[name]() if scale is None else DATASET_CONFIGS[name](scale)


def get_config(name: str = "digits", fraction: float = 0.1,
               scale: str | None = None) -> StudyConfig:
    """``dataset_config(name, scale)`` with uniform forgetting of ``fraction`` of the training
    set."""
    cfg = dataset_config(name, scale)
    cfg.scenario = "uniform"
    cfg.forget_classes = None
    cfg.forget_fraction = fraction
    return cfg
