"""The configuration machinery of every study, and the paper's with-condensation values.

A config is a dataclass with typed sections (:class:`TrainSchedule`, :class:`BlendSettings`,
:class:`NetSettings`), saved as ``config.json`` in the workdir. Library code never sees it: the
experiments unpack it into function arguments.

Where the paper's hyper-parameters live (docs/method.md §4, §5; CIFAR-10 / ResNet-18):

- the unlearning methods' values **without** condensation are the defaults of their factories in
  :mod:`jaxunlearn.unlearn` (``make_method("cf", apply_fn)`` is the paper's CF);
- the values that change **with** condensation are :data:`PAPER_METHODS_DC` below (method.md §5: "lr
  w/o DC, then with DC"): the factories cannot know whether their retain set was condensed;
- a config's ``method_hparams`` / ``method_hparams_dc`` hold only its deviations, each with its
  reason (see ``configs/digits.py``);
- the reference sets its values per dataset *and model* (its ``hyperparameters/*.json``, copied
  into ``tests/data/reference_hparams/`` and checked value by value against these configs by
  ``tests/test_reference_hparams.py``): a dataset config keeps the method tables of the other
  models it has reference values for in ``model_method_hparams``, and :func:`use_model` (the
  ``--model`` flag) switches to them. :data:`RESNET50_METHODS` / :data:`RESNET50_METHODS_DC`
  are the ResNet-50 values of the reference's CIFAR-10 files.

A study may also run one registered method under several names (the A-AMU ablation): an entry of
``method_hparams`` whose key is not a registered method names its method in ``"method"``, e.g.
``{"a_cf_paper": {"method": "a_cf", "ecdf": "paper"}}``. Such a variant starts from its method's
entries and adds its own; it has its own rows and records, and shares its method's unlearning key
(so variants are compared paired).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from typing import Any, ClassVar

from jaxunlearn.condense import blend_lr

__all__ = ["PAPER_METHODS", "PAPER_METHODS_DC", "RESNET50_METHODS", "RESNET50_METHODS_DC",
           "TABLE1_METHODS", "BlendSettings", "Config", "MIASettings", "NetSettings",
           "StudyConfig", "SCALES", "TrainSchedule", "apply_scale", "cpu_blend_lr", "derive",
           "from_json", "merge_methods", "paper_study", "to_json", "use_model"]

# The rows of the paper's Table 1 (method.md §7), in its order, and what the paper's studies run:
# those plus the other two A-AMU methods of docs/method.md §4.
TABLE1_METHODS = ("retrain", "cf", "bad_distill", "l1_sparse", "scrub", "pruning", "a_cf")
PAPER_METHODS = (*TABLE1_METHODS, "a_scrub", "a_sparse")

# The paper's values that change with condensation (method.md §5), over the factories' defaults.
PAPER_METHODS_DC: dict[str, dict[str, Any]] = {
    "distill": dict(lr=5e-3),
    "scrub": dict(lr=5e-3, m_steps=9),  # forget passes in epochs 0..9, as the reference
    "bad_distill": dict(lr=5e-3, retain_fraction=1.0),
    "l1_sparse": dict(lr=5e-3),
    "neggrad_plus": dict(lr=5e-3),
    "random_label": dict(lr=5e-3),
    "salun": dict(lr=5e-3),
}

# ResNet-50 (the reference's cifar10_resnet50_*.json; SVHN's ResNet-50 files equal them without
# condensation): the values that differ from ResNet-18's, over the factories' defaults...
RESNET50_METHODS: dict[str, dict[str, Any]] = {
    "cf": dict(lr=0.03),
    "distill": dict(lr=0.03),
    "bad_distill": dict(lr=5e-3, epochs=30),
    "l1_sparse": dict(alpha=1e-5, epochs=40, no_l1_epochs=3),
    "pruning": dict(lr=0.03),
}
# ... and with condensation, over PAPER_METHODS_DC (CF and pruning keep lr 0.03).
RESNET50_METHODS_DC: dict[str, dict[str, Any]] = {
    "bad_distill": dict(lr=3e-3),
}


def merge_methods(*tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One method table from several, later entries over earlier ones, method by method."""
    out: dict[str, dict[str, Any]] = {}
    for table in tables:
        for name, entries in table.items():
            out[name] = {**out.get(name, {}), **copy.deepcopy(entries)}
    return out


@dataclasses.dataclass
class TrainSchedule:
    """SGD, coupled weight decay, warm-up + cosine per epoch (method.md §2: the original model)."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    epochs: int = 200
    warmup_epochs: int = 10


@dataclasses.dataclass
class BlendSettings:
    """Blend's optimisation (docs/method.md §3.3)."""

    lr: float | None = None       # None: the reference's blend_lr(ipc); the CPU forms set it
    iterations: int = 12
    momentum: float = 0.5
    weights: str = "sum"          # sum (reference) | softmax
    n_extractors: int = 1         # 1 (reference: one fixed φ) | more (a fresh φ per iteration)


@dataclasses.dataclass
class MIASettings:
    """The MIA's options (:func:`jaxunlearn.mia.mia_score`); the reference's procedure."""

    phi: str = "reference"        # reference (stable_phi's clamps) | exact
    swap: str = "reference"       # reference (2nd attack vs the whole test split) | flip | none
    standardize: bool = False     # False (reference: raw φ) | True (StandardScaler first)


@dataclasses.dataclass
class NetSettings:
    """A random, never-trained ConvNet (ψ, φ, DM's extractors) or an evaluation ConvNet."""

    width: int = 128
    depth: int | None = None      # None: 3 at 32×32 inputs, 2 at 8×8


@dataclasses.dataclass
class Config:
    """What every study's configuration has: the data, the seeds, the random ConvNets, notes.

    ``GROWABLE`` names the fields a rerun in the same workdir may change (more seeds, more
    methods...) without invalidating the records already written.
    """

    GROWABLE: ClassVar[tuple[str, ...]] = ("seeds", "data_dir")

    name: str = "study"
    dataset: str = "digits"
    data_dir: str | None = None
    max_per_class_train: int | None = None   # seeded class-balanced subsample
    max_per_class_test: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    # the random ConvNets ψ (partition) and φ (Blend)
    condense_net: NetSettings = dataclasses.field(default_factory=NetSettings)
    # the partition's per-class k-means: reference (DC_Unlearning's kmeans_pytorch: k-means++,
    # Σ‖Δc‖ < tol, empty → random point) | sklearn (greedy k-means++, relative tol, farthest)
    kmeans_procedure: str = "reference"
    notes: dict = dataclasses.field(default_factory=dict)  # reasons for values off the paper's


@dataclasses.dataclass
class StudyConfig(Config):
    """An unlearning study (class-wise, uniform, multi-round); see the dataset configs."""

    GROWABLE: ClassVar[tuple[str, ...]] = ("methods", "seeds", "condensation", "save_params",
                                           "data_dir")

    name: str = "class_forget"
    dataset: str = "cifar10"
    model: str = "resnet18"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    # forgetting scenario (docs/method.md §1)
    scenario: str = "classwise"               # classwise | k_classwise | uniform
    forget_classes: tuple[int, ...] | None = None  # None: drawn from the seed
    k_classes: int = 1
    forget_fraction: float = 0.1
    rounds: int = 1                           # multi-round studies: > 1
    round_target: str = "new"                 # new (reference) | cumulative: see multiround.py
    # splits
    unseen_pool: str = "test70"               # test70 (reference) | heldout
    unseen_fraction: float = 0.7
    val_fraction: float = 0.1
    # original model (docs/method.md §2)
    original: TrainSchedule = dataclasses.field(default_factory=TrainSchedule)
    # Blend (docs/method.md §3)
    condensation: tuple[bool, ...] = (False, True)  # each method without and with Blend
    ipc: int = 1000
    blend: BlendSettings = dataclasses.field(default_factory=BlendSettings)
    # unlearning methods (docs/method.md §4, §5): deviations from the factories' defaults, see above
    methods: tuple[str, ...] = ("retrain", "cf")
    # methods that train on the real retain set in the Blend column too (records say
    # retain_set "full"): the reference's multi-round A-SCRUB (multiround.py)
    full_retain_methods: tuple[str, ...] = ()
    method_hparams: dict = dataclasses.field(default_factory=dict)
    method_hparams_dc: dict = dataclasses.field(
        default_factory=lambda: copy.deepcopy(PAPER_METHODS_DC))
    # the method tables of the other models the reference has values for on this dataset:
    # {model: {"method_hparams": ..., "method_hparams_dc": ...}}; see use_model
    model_method_hparams: dict = dataclasses.field(default_factory=dict)
    eval_batch_size: int = 512
    mia: MIASettings = dataclasses.field(default_factory=MIASettings)
    save_params: bool = False                 # save each unlearned model's weights

    def method_of(self, name: str) -> str:
        """The registered method behind the study's method ``name`` (itself, or a variant's)."""
        entry = self.method_hparams.get(name, {})
        return entry.get("method", name) if isinstance(entry, dict) else name

    def hparams(self, name: str, condensed: bool) -> dict[str, Any]:
        """The keyword arguments of ``name``'s factory: its method's entries, then the variant's
        own (with the DC entries after each when ``condensed``)."""
        hp: dict[str, Any] = {}
        for n in dict.fromkeys((self.method_of(name), name)):
            for table, entry in (("method_hparams", self.method_hparams.get(n, {})),
                                 ("method_hparams_dc", self.method_hparams_dc.get(n, {}))):
                if not isinstance(entry, dict):
                    raise ValueError(f"{table}.{n} must be a JSON object of hyper-parameters "
                                     f"(e.g. {{\"epochs\": 5}}); got {entry!r}")
            hp.update(self.method_hparams.get(n, {}))
            if condensed:
                hp.update(self.method_hparams_dc.get(n, {}))
        hp.pop("method", None)
        return hp


def derive(base: Config, cls: type[Config], **changes: Any) -> Config:
    """A ``cls`` config (a subclass of ``base``'s class, e.g. a study's own config) holding a
    deep copy of every field of ``base``, then ``changes``."""
    fields = {f.name: copy.deepcopy(getattr(base, f.name)) for f in dataclasses.fields(base)
              if f.init}
    return cls(**{**fields, **changes})


def use_model(cfg: Config, model: str) -> Config:
    """Switch ``cfg`` (in place) to ``model``, with that model's method values where it has them.

    The config's ``model_kwargs`` belong to its own model (a ConvNet's depth and width) and are
    dropped. When ``cfg.model_method_hparams`` has tables for ``model`` (the reference's values
    for this dataset and model), they replace ``method_hparams`` and ``method_hparams_dc``;
    variants (entries naming their method) are kept. Without tables the values stay (e.g.
    CINIC-10 has no ResNet-50 file in the reference: ResNet-18's values are used).
    """
    if model == cfg.model:
        return cfg
    cfg.model = model
    cfg.model_kwargs = {}
    tables = getattr(cfg, "model_method_hparams", {}).get(model)
    if tables is not None:
        variants = {n: e for n, e in cfg.method_hparams.items() if "method" in e}
        cfg.method_hparams = {**copy.deepcopy(tables["method_hparams"]), **variants}
        cfg.method_hparams_dc = copy.deepcopy(tables["method_hparams_dc"])
    return cfg


def to_json(cfg: Config) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True, default=list)


def from_json(cls: type[Config], text: str) -> Config:
    """The ``cls`` config saved as ``text`` by :func:`to_json` (sections and tuples restored); a
    ``config.json``'s ``provenance`` (where the run came from, not a setting) is ignored."""
    raw = json.loads(text)
    raw.pop("provenance", None)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            raw[f.name] = kind(**raw[f.name])
        elif isinstance(raw[f.name], list):
            raw[f.name] = tuple(raw[f.name])
    return cls(**raw)


SCALES = ("paper", "cpu")


def cpu_blend_lr(paper_ipc: int, cpu_ipc: int) -> float:
    """The Blend learning rate that gives ``cpu_ipc`` clusters per class the per-cluster step
    ``lr / S`` of ``blend_lr(paper_ipc)`` at ``paper_ipc`` (S ∝ ipc: Blend's loss is a mean over
    the S free clusters, and each cluster's weights only see their own term)."""
    return blend_lr(paper_ipc) * cpu_ipc / paper_ipc


def paper_study(**fields: Any) -> StudyConfig:
    """A study of one of the paper's datasets (CIFAR-10, SVHN, CINIC-10) with the paper's design:
    :data:`PAPER_METHODS` with and without Blend, and the original model trained on the whole
    training split (``val_fraction=0``, the last epoch kept), as the reference trains it (it
    holds nothing out; it picks its epoch on the test set, which this project does not copy).
    ``--set val_fraction=0.1`` brings back a validation hold-out for epoch selection.

    The embedded digits and mnist5k studies keep their 10% hold-out: they are this project's
    studies, with no reference numbers to match, and epoch selection on held-out data is the
    sound rule there.
    """
    cfg = StudyConfig(methods=PAPER_METHODS, val_fraction=0.0, **fields)
    cfg.notes = {**cfg.notes, "val_fraction": "0 (the reference trains on every training image "
                 "and keeps no hold-out; the last epoch is kept)"}
    return cfg


def apply_scale(cfg: StudyConfig, scale: str, *, cpu_ipc: int, note: str,
                blend_measured: str = "") -> StudyConfig:
    """``cfg`` itself for ``scale="paper"``; its documented CPU-sized form for ``"cpu"``.

    The CPU-sized form of a paper dataset (``--scale cpu``): a ConvNet-3 (width 128, the
    paper's condensation network) on a seeded class-balanced subsample of 500 training / 200
    test images per class, ``cpu_ipc`` clusters per class (chosen per dataset so clusters hold
    as many images as at the paper's scale), 30 original epochs, the paper's unlearning budgets.
    A scaled-down run, not the paper's numbers; ``note`` says so in ``config.json``.

    Blend's learning rate is set to :func:`cpu_blend_lr`, the paper's per-cluster step
    ``lr / S``: the reference's ``blend_lr(cpu_ipc)`` would make that step 10–60× smaller than at
    the paper's ipc, and Blend would barely move; ``notes["blend_lr"]`` gives both rates and what
    ``bench/blend_lr.py`` measured at each (``blend_measured``).
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    if scale == "paper":
        return cfg
    paper_ipc = cfg.ipc
    small, paper = blend_lr(cpu_ipc), cpu_blend_lr(paper_ipc, cpu_ipc)
    cfg.notes = {**cfg.notes, "blend_lr": (
        f"blend_lr({cpu_ipc}) = {small:.4g} makes a per-cluster step lr/S {paper / small:.0f}x "
        f"smaller than blend_lr({paper_ipc}) at ipc {paper_ipc}; lr {paper:.4g} gives the "
        f"paper's step and is used (blend.lr). {blend_measured}")}
    cfg.blend.lr = paper
    cfg.model = "convnet"
    cfg.model_kwargs = dict(depth=3, width=128)
    # ≈4 min per 50k-image ConvNet epoch on 2 CPU cores (PLATFORM.md): subsample to 5k images.
    cfg.max_per_class_train = 500
    cfg.max_per_class_test = 200
    cfg.ipc = cpu_ipc
    cfg.original = TrainSchedule(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                                 epochs=30, warmup_epochs=3)
    cfg.notes = {**cfg.notes, "cpu": note}
    return cfg
