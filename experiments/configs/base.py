"""The study configuration and the paper's hyper-parameters (SPEC §2, §4, §5; CIFAR-10/ResNet-18).

A config is a plain dataclass, saved as ``config.json`` in the workdir. Library code never sees it:
the experiments unpack it into function arguments.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

__all__ = ["PAPER_METHODS", "PAPER_METHODS_DC", "StudyConfig", "from_json", "pick_variant",
           "to_json"]

# SPEC §5 (and §4 for the A-AMU methods), without condensation. Keys are factory keywords.
PAPER_METHODS: dict[str, dict[str, Any]] = {
    "retrain": dict(lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=100, warmup_epochs=5,
                    batch_size=64),
    "cf": dict(lr=0.04, momentum=0.502, weight_decay=0.0014, epochs=50, warmup_epochs=5,
               batch_size=64),
    "distill": dict(lr=0.04, momentum=0.86, weight_decay=1e-3, epochs=50, batch_size=64),
    "scrub": dict(lr=1e-2, m_steps=5, momentum=0.9, weight_decay=5e-4, epochs=15,
                  warmup_epochs=5, batch_size=64),
    "bad_distill": dict(lr=1e-2, momentum=0.9, weight_decay=5e-4, epochs=20, batch_size=64,
                        retain_fraction=0.6234),
    "l1_sparse": dict(lr=1e-2, momentum=0.9, weight_decay=5e-4, epochs=30, alpha=1e-4,
                      batch_size=64),
    "pruning": dict(lr=0.04, momentum=0.9, weight_decay=5e-4, epochs=20, batch_size=64),
    "ssd": dict(alpha=10.0, lam=1.0),
    "neggrad_plus": dict(lr=1e-2, momentum=0.9, weight_decay=5e-4, epochs=5, beta=0.999,
                         batch_size=64),
    "random_label": dict(lr=1e-2, momentum=0.9, weight_decay=5e-4, epochs=10, batch_size=64),
    "salun": dict(lr=1e-2, momentum=0.9, weight_decay=5e-4, epochs=10, batch_size=64),
    "a_cf": dict(lr=2.4e-4, epochs=1, batch_size=64),
    "a_scrub": dict(lr=1e-4, epochs=1, batch_size=64),
    "a_sparse": dict(lr=1e-4, epochs=1, batch_size=64),
}

# Overrides with condensation (SPEC §5: "lr w/o DC, then with DC").
PAPER_METHODS_DC: dict[str, dict[str, Any]] = {
    "distill": dict(lr=5e-3),
    "scrub": dict(lr=5e-3, m_steps=9),
    "bad_distill": dict(lr=5e-3, retain_fraction=1.0),
    "l1_sparse": dict(lr=5e-3),
    "neggrad_plus": dict(lr=5e-3),
    "random_label": dict(lr=5e-3),
    "salun": dict(lr=5e-3),
}


@dataclasses.dataclass
class StudyConfig:
    """Everything a study needs; see the dataset configs for values and reasons."""

    name: str = "class_forget"
    dataset: str = "cifar10"
    data_dir: str | None = None
    max_per_class_train: int | None = None   # CPU-sized variants subsample (seeded)
    max_per_class_test: int | None = None
    model: str = "resnet18"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    seeds: tuple = (0, 1, 2)
    # forgetting scenario (SPEC §1)
    scenario: str = "classwise"               # classwise | k_classwise | uniform
    forget_classes: tuple | None = None       # None: drawn from the seed
    k_classes: int = 1
    forget_fraction: float = 0.1
    rounds: int = 1                           # multi-round studies: > 1
    # splits
    unseen_pool: str = "test70"               # test70 (reference) | heldout
    unseen_fraction: float = 0.7
    val_fraction: float = 0.1
    # original model (SPEC §2)
    original: dict = dataclasses.field(default_factory=lambda: dict(
        lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=200, warmup_epochs=10))
    # Blend (SPEC §3)
    condensation: tuple = (False, True)       # run each method without and with Blend
    ipc: int = 1000
    blend: dict = dataclasses.field(default_factory=lambda: dict(
        iterations=12, momentum=0.5, weights="sum", n_extractors=1))
    # the random ConvNets ψ (partition) and φ (Blend): depth None = 3 at 32×32, 2 at 8×8
    condense_net: dict = dataclasses.field(default_factory=lambda: dict(width=128, depth=None))
    # unlearning methods (SPEC §4, §5)
    methods: tuple = ("retrain", "cf")
    method_hparams: dict = dataclasses.field(default_factory=lambda: copy.deepcopy(PAPER_METHODS))
    method_hparams_dc: dict = dataclasses.field(
        default_factory=lambda: copy.deepcopy(PAPER_METHODS_DC))
    eval_batch_size: int = 512
    save_params: bool = False                 # save each unlearned model's weights
    notes: dict = dataclasses.field(default_factory=dict)  # reasons for scaled-down values

    def hparams(self, method: str, condensed: bool) -> dict[str, Any]:
        """The hyper-parameters of ``method``, with the DC overrides when ``condensed``."""
        hp = dict(self.method_hparams.get(method, {}))
        if condensed:
            hp.update(self.method_hparams_dc.get(method, {}))
        return hp


def to_json(cfg: StudyConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True, default=list)


def from_json(text: str) -> StudyConfig:
    raw = json.loads(text)
    for k in ("seeds", "forget_classes", "condensation", "methods"):
        if raw.get(k) is not None:
            raw[k] = tuple(raw[k])
    return StudyConfig(**raw)


def pick_variant(cfg: StudyConfig, variant: str, *, cpu_ipc: int, cpu_note: str) -> StudyConfig:
    """``cfg`` itself for ``variant="paper"``; its documented CPU-sized form for ``"cpu"``.

    The CPU-sized form of a paper dataset: a ConvNet-3 (width 128, the paper's condensation
    network) on a seeded class-balanced subsample of 500 training / 200 test images per class,
    ``cpu_ipc`` clusters per class (chosen per dataset so clusters hold as many images as at
    the paper's scale), 30 original epochs, the paper's unlearning budgets. A scaled-down run,
    not the paper's numbers; ``cpu_note`` says so in ``config.json``.
    """
    if variant == "paper":
        return cfg
    if variant != "cpu":
        raise ValueError(f"variant must be 'paper' or 'cpu', got {variant!r}")
    cfg.model = "convnet"
    cfg.model_kwargs = dict(depth=3, width=128)
    # ≈4 min per 50k-image ConvNet epoch on 2 CPU cores (PLATFORM.md): subsample to 5k images.
    cfg.max_per_class_train = 500
    cfg.max_per_class_test = 200
    cfg.ipc = cpu_ipc
    cfg.original = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=30,
                        warmup_epochs=3)
    cfg.notes = {**cfg.notes, "cpu": cpu_note}
    return cfg
