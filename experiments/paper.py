"""The paper's published numbers (Khan, arXiv 2507.09786, §7), to print beside a study's own.

Only CIFAR-10 with a ResNet-18 on the author's GPU, mean over 3 runs: random class forgetting
(every Table 1 row) and 10% uniform forgetting (the rows the paper gives). They are *not* this
project's measurements: a results table labels them "paper (CIFAR-10, ResNet-18, GPU)". The
paper's "retain acc" is measured on the retain set a method trained on (the Blend-reduced one with
condensation); a study records that as ``retain_acc_train_set`` beside its ``retain_acc`` on the
real retain set. Its "test acc" of class-wise rows includes the forgotten class.
"""

from __future__ import annotations

__all__ = ["PAPER_LABEL", "paper_rows"]

PAPER_LABEL = "paper (CIFAR-10, ResNet-18, GPU)"

# method -> (without DC, with DC), each {field: value}; fields as in a study's records
_CLASSWISE = {
    "retrain": ((49.76, 100.0, 0.0, 80.35, 1141.7), (50.51, 75.50, 0.0, 62.47, 224.5)),
    "cf": ((50.18, 100.0, 0.0, 81.19, 577.8), (55.39, 96.39, 0.30, 77.75, 112.3)),
    "bad_distill": ((62.83, 96.26, 1.23, 77.33, 284.5), (57.31, 98.88, 24.99, 81.19, 117.0)),
    "l1_sparse": ((47.32, 99.00, 0.0, 78.42, 358.6), (53.79, 96.36, 0.0, 77.66, 69.9)),
    "scrub": ((50.12, 15.28, 0.0, 13.80, 241.2), (50.00, 11.11, 0.0, 10.00, 61.6)),
    "pruning": ((50.87, 98.08, 0.0, 77.43, 235.5), (50.80, 100.0, 0.0, 72.65, 46.7)),
    "a_cf": ((51.71, 97.88, 0.0, 77.01, 75.8), (48.25, 98.92, 0.0, 77.45, 16.0)),
}
_FIELDS = ("mia", "retain_acc_train_set", "forget_acc", "test_acc", "unlearn_s")

# 10% uniform forgetting: what the paper gives (docs/method.md §7)
_UNIFORM = {
    "retrain": ({"unlearn_s": 1132.2}, {"unlearn_s": 664.7}),
    "cf": ({"unlearn_s": 561.8}, {"unlearn_s": 332.2}),
    "a_cf": ({"mia": 51.86, "test_acc": 86.18, "unlearn_s": 76.2},
             {"mia": 51.95, "test_acc": 86.23, "unlearn_s": 47.3}),
}


def paper_rows(dataset: str, scenario: str) -> dict[tuple[str, bool], dict[str, float]]:
    """``{(method, condensed): {field: value}}`` of the paper for a study of ``dataset`` and
    ``scenario`` (``classwise`` or ``uniform``); empty where the paper gives no numbers
    (SVHN, CINIC-10, other scenarios: the paper's tables for those are not transcribed here)."""
    if dataset != "cifar10":
        return {}
    if scenario == "classwise":
        return {(m, dc): dict(zip(_FIELDS, cols[dc], strict=True))
                for m, cols in _CLASSWISE.items() for dc in (False, True)}
    if scenario == "uniform":
        return {(m, dc): dict(cols[dc]) for m, cols in _UNIFORM.items() for dc in (False, True)}
    return {}
