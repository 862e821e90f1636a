"""results.md reads true: intervals within the measured range, the plain AUC beside the paper's
score, per-seed outcomes counted, a three-line headline, the paper's numbers labelled."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import report
from experiments.paper import PAPER_LABEL


def test_an_interval_never_leaves_the_range_of_what_was_measured():
    # three seeds of a bimodal outcome: forgot on one, not on two (Student t: 66.7 ± 143)
    mean, low, high = report.seed_interval([0.0, 100.0, 100.0])
    assert (mean, low, high) == (pytest.approx(200 / 3), 0.0, 100.0)  # fewer than 5: min-max
    assert report.format_ci([0.0, 100.0, 100.0], 1) == "66.7 [0.0, 100.0]"
    rng = np.random.default_rng(0)
    for n in (5, 8, 20):  # 5 or more: a bootstrap percentile interval, inside [min, max]
        vals = np.where(rng.random(n) < 0.5, 0.0, 100.0)
        vals[:2] = (0.0, 100.0)
        mean, low, high = report.seed_interval(vals)
        assert 0.0 <= low <= mean <= high <= 100.0
    assert report.seed_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == report.seed_interval(
        [1.0, 2.0, 3.0, 4.0, 5.0])  # reproducible
    assert report.format_ci([7.0]) == "7.00" and report.format_ci([]) == "–"
    assert report.format_ci([None, float("nan")]) == "–"
    assert report.format_ci([3.0, 3.0]) == "3.00"  # no interval to show


def _rec(method, condensed, seed, forget_acc, **kw):
    return {"method": method, "condensed": condensed, "seed": seed, "forget_acc": forget_acc,
            "retain_acc": 100.0, "test_acc": 90.0, "mia": 50.0, "mia_auc": 48.0,
            "unlearn_s": 1.0, "total_s": 1.5 if condensed else 1.0, "train_size": 10,
            "study": "s", "dataset": "digits", "model": "convnet", "scenario": "classwise", **kw}


def _records():
    out = []
    for seed in range(3):
        for dc in (False, True):
            out.append(_rec("retrain", dc, seed, 0.0))
            out.append(_rec("cf", dc, seed, 100.0))
            out.append(_rec("a_cf", dc, seed, 2.0 if seed == 0 else 90.0))
    return out


def test_the_table_names_both_membership_numbers_and_counts_seeds_that_forgot():
    records = _records()
    assert report.forgot_like_retrain(records, "a_cf", False) == "1 of 3"
    assert report.forgot_like_retrain(records, "cf", True) == "0 of 3"
    assert report.forgot_like_retrain(records, "retrain", False) == "–"
    table = report.results_table(records)
    assert "| MIA score (paper's) | MIA AUC (plain) |" in table
    assert "| a_cf | 50.00 | 48.00 | 100.00 | 60.67 [2.00, 90.00] | 1 of 3 |" in table
    assert "±" not in table


def test_the_headline_is_three_lines_at_the_top(tmp_path):
    text = report.write_report(str(tmp_path), _records())
    head = text.split("### ")[0]
    lines = [ln for ln in head.splitlines() if ln.startswith("- **")]
    assert [ln.split("**")[1] for ln in lines] == ["retrain", "cf", "a_cf"]
    assert ("- **a_cf**: without Blend, forget acc 60.7% (like Retrain on 1 of 3 seeds), test acc "
            "90.0%, 1.00 s; with Blend, forget acc 60.7% (like Retrain on 1 of 3 seeds), test acc "
            "90.0%, 1.50 s.") in lines
    assert "min, max" in head and "Beside the paper" not in text  # digits: no paper numbers


def test_the_papers_numbers_sit_beside_ours_for_cifar10_only():
    records = [{**r, "dataset": "cifar10", "retain_acc_train_set": 99.0} for r in _records()]
    table = report.paper_table(records)
    assert "| a_cf | yes | 48.25 / 50.00 | 98.92 / 99.00 | 0.0 / 60.67 | 77.45 / 90.00 |" in table
    assert "| scrub | no | 50.12 / – |" in table  # a Table 1 row this run did not make
    assert report.paper_table([{**r, "dataset": "cinic10"} for r in records]) == ""
    assert PAPER_LABEL == "paper (CIFAR-10, ResNet-18, GPU)"
