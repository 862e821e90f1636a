"""CINIC-10 / ResNet-18 with the paper's settings (docs/method.md §1, §3.1, §4, §5): GPU work.

Data: the CINIC-10 folder (``train/<class>/*.png``: 9,000 per class; ``test/``: 90,000 images)
in ``--data_dir``, read by ``jaxunlearn.data.load_dataset("cinic10")``. The paper runs its
ablation and its multi-round study on CINIC-10.

Command (any study takes ``--config cinic10``)::

    python -m experiments.multiround --config cinic10 --workdir runs/cinic10_multiround --data_dir D
    python -m experiments.ablations --config cinic10 --workdir runs/cinic10_ablation --data_dir D

Values that differ from CIFAR-10 (configs/base.py), each from the paper or the reference's
CINIC-10 hyper-parameter files (``cinic10_resnet18(_condense)_hyperparameters.json``): ipc 800
(clusters of ≈11 images), A-CF learning rate 1e-4 (method.md §4; A-SCRUB and A-Sparse keep their
1e-4,
as the files say), and the reference's CINIC-10 baseline values below, among them SCRUB's
m_steps 10 with condensation (CIFAR-10: 9). The reference has no CINIC-10 ResNet-50 file:
``--model resnet50`` keeps these ResNet-18 values.

``get_config("cpu")`` (``--scale cpu``): ConvNet-3 on 500 training / 200 test images per
class, ipc 44 (clusters of ≈11 as at the paper's scale), 30 original epochs. A scaled-down run,
not the paper's numbers.
"""

from __future__ import annotations

from experiments.configs.base import StudyConfig, apply_scale, paper_study

__all__ = ["get_config"]


# Blend's learning rate in the CPU-sized form (apply_scale, bench/blend_lr.py)
_BLEND_MEASURED = (
    "bench/blend_lr.py, synthetic CIFAR-shaped data, class-wise, 2 seeds: 12 iterations lower "
    "the matching loss 0.1% at lr 14.49 and 3.0-3.1% at lr 366.6; weights move 0.006 vs "
    "0.15-0.16 (mean L1 distance from uniform), 0% vs 4-5% of them negative (the reference "
    "does not clamp), no cluster guarded. Chosen: lr 366.6 (the paper's step)"
)


def get_config(scale: str = "paper") -> StudyConfig:
    cfg = paper_study(name="cinic10", dataset="cinic10", model="resnet18", ipc=800,
                      unseen_fraction=0.7)
    # docs/method.md §4: A-CF's learning rate is 1e-4 on CINIC-10. The reference's
    # cinic10_resnet18(_condense)_hyperparameters.json, where they differ from CIFAR-10:
    cfg.method_hparams = {
        "a_cf": dict(lr=1e-4),
        "scrub": dict(lr=5e-3),                    # w/o DC (CIFAR-10: 1e-2)
        "bad_distill": dict(lr=5e-3, retain_fraction=0.7234),  # CIFAR-10: 1e-2, 62.34%
        "pruning": dict(lr=0.01),                  # w/o DC (w DC: 0.04 as CIFAR-10)
    }
    cfg.method_hparams_dc.update(
        scrub=dict(lr=1e-3, m_steps=10),           # w DC (CIFAR-10: 5e-3, m_steps 9)
        pruning=dict(lr=0.04),
    )
    cfg.notes = {**cfg.notes, "ipc": "800 (paper, CINIC-10): clusters of ~11 images",
                 "hparams": "A-CF lr 1e-4 (method.md §4); SCRUB (w DC: lr 1e-3, m_steps 10), bad "
                            "distillation and pruning from the reference's CINIC-10 files; no "
                            "ResNet-50 file: --model resnet50 keeps these values"}
    # clusters of ≈11 images, as ipc 800 on the paper's 9,000 images per class
    return apply_scale(cfg, scale, cpu_ipc=44,
                       note="5k-image subsample, ConvNet-3, ipc 44 (clusters of ~11 as the "
                            "paper's ipc 800), 30 original epochs, paper's unlearning budgets",
                       blend_measured=_BLEND_MEASURED)
