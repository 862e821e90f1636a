"""experiments.forgetting_curves: budgets, the Retrain-level criterion, and a tiny study."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from experiments import forgetting_curves as fc
from experiments.configs.base import NetSettings, TrainSchedule
from experiments.io import load_records
from jaxunlearn.models import build_model


def _point(forget, test, auc, t=1.0, step=1, multiple=1):
    return {"forget_acc": forget, "test_retained_acc": test, "mia_auc": auc, "unlearn_s": t,
            "step": step, "multiple": multiple, "blend_stages_s": 0.0}


TARGET = {"forget_acc": 0.0, "test_retained_acc": 95.0, "mia_auc": 60.0}


def test_reach_needs_two_consecutive_evaluations_within_every_tolerance():
    ok, bad = _point(4.0, 91.0, 64.0), _point(6.0, 91.0, 64.0)  # bad: forget acc 6 > 0 + 5
    assert fc.meets(ok, TARGET, 5.0) and not fc.meets(bad, TARGET, 5.0)
    assert not fc.meets(_point(0.0, 89.9, 60.0), TARGET, 5.0)   # test acc below 95 − 5
    assert not fc.meets(_point(0.0, 95.0, 54.9), TARGET, 5.0)   # AUC more than 5 below
    assert not fc.meets(_point(0.0, 95.0, 65.1), TARGET, 5.0)   # AUC more than 5 above
    pts = [_point(100, 95, 90, t=0.0, step=0), dict(ok, unlearn_s=1.0, step=1), bad,
           dict(ok, unlearn_s=3.0, step=3), dict(ok, unlearn_s=4.0, step=4)]
    # step 1 meets alone (step 2 fails): the reach is at step 3, confirmed by step 4
    assert fc.reach(pts, TARGET)["step"] == 3
    assert fc.reach(pts, TARGET, consecutive=1)["step"] == 1
    # the last evaluation cannot start a reach; a single evaluation (Retrain) counts alone
    assert fc.reach(pts[:4], TARGET) is None
    assert fc.reach([ok], TARGET) is ok and fc.reach([bad], TARGET) is None
    # without the MIA test, an AUC far from Retrain's no longer blocks the reach
    far = [dict(ok, mia_auc=80.0, step=i) for i in (1, 2)]
    assert fc.reach(far, TARGET) is None and fc.reach(far, TARGET, mia=False)["step"] == 1


def test_budget_multiples_stretch_the_whole_schedule():
    assert fc.stretched_hparams("cf", {"lr": 0.01}, 2) == {
        "lr": 0.01, "epochs": 100, "warmup_epochs": 10}
    scrub = fc.stretched_hparams("scrub", {"m_steps": 9}, 5)
    assert (scrub["epochs"], scrub["warmup_epochs"], scrub["m_steps"]) == (75, 25, 49)
    l1 = fc.stretched_hparams("l1_sparse", {"epochs": 10}, 10)
    assert (l1["epochs"], l1["no_l1_epochs"]) == (100, 10)


def test_constant_rate_methods_run_ten_times_longer_at_their_rate():
    cfg = fc.get_config("digits")
    model = build_model("convnet", 10, depth=2, width=8)
    runs = fc.build_runs(cfg, model.apply, lambda key: None)
    a_cf = runs[("a_cf", False, 10)]
    assert a_cf.epochs == 10 and a_cf.hparams["budget_epochs"] == 1
    # A-CF's one-epoch cosine is its constant rate; ten epochs keep it (no cosine to 0)
    assert {a_cf.lr_schedule(e) for e in range(10)} == {2.4e-4}
    assert runs[("neggrad_plus", True, 10)].lr_schedule is None
    assert {m for (n, c, m) in runs if n == "cf"} == {1, 2, 5, 10}
    assert {m for (n, c, m) in runs if n == "retrain"} == {1}
    assert runs[("cf", False, 5)].epochs == 5 * runs[("cf", False, 1)].epochs
    # a decaying schedule run as if it were constant is refused
    cfg.budget_methods = ("scrub", "l1_sparse")
    with pytest.raises(ValueError, match="list it in budget_methods"):
        fc.build_runs(cfg, model.apply, lambda key: None)


def test_configs_and_their_errors():
    d, m = fc.get_config("digits"), fc.get_config("mnist5k")
    assert len(d.methods) == 10 and len(d.seeds) == 5 and d.condensation == (False, True)
    assert m.dataset == "mnist5k" and "retrain" in m.methods and "a_cf" in m.methods
    with pytest.raises(ValueError, match="unknown configuration"):
        fc.get_config("cifar10")
    for change, match in ((dict(methods=("cf",)), "retrain"),
                          (dict(budget_multiples=(2, 1)), "increasing"),
                          (dict(scenario="uniform"), "class-wise"),
                          (dict(budget_methods=("retrain",)), "target")):
        with pytest.raises(ValueError, match=match):
            fc.validate(dataclasses.replace(fc.get_config("digits"), **change))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = fc.get_config("digits")
    cfg.seeds = (0,)
    cfg.model_kwargs = dict(depth=2, width=16)
    cfg.original = TrainSchedule(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64,
                                 epochs=3, warmup_epochs=0)
    cfg.condense_net = NetSettings(width=16, depth=None)
    cfg.blend = dataclasses.replace(cfg.blend, iterations=2)
    cfg.methods = ("retrain", "cf", "a_cf")
    cfg.method_hparams = {"retrain": dict(epochs=2, warmup_epochs=0),
                          "cf": dict(epochs=2, warmup_epochs=1),
                          "a_cf": dict(batch_size=16)}
    cfg.budget_multiples = (1, 2)
    cfg.constant_multiple = 3
    cfg.evals_per_budget = 4
    workdir = str(tmp_path_factory.mktemp("curves"))
    return cfg, workdir, fc.run(cfg, workdir)


@pytest.mark.slow
def test_tiny_study_records_curves_budgets_and_the_report(tiny_run):
    cfg, workdir, records = tiny_run
    keys = {(r["method"], r["condensed"], r["multiple"]) for r in records}
    assert keys == {("original", False, 0), *((m, c, k) for c in (False, True) for m, k in (
        ("retrain", 1), ("cf", 1), ("cf", 2), ("a_cf", 3)))}
    original = next(r for r in records if r["method"] == "original")
    for r in records:
        if r["method"] == "original":
            continue
        assert r["unlearn_s"] > 0 and r["steps"] > 0
        assert 0 <= r["forget_acc"] <= 100 and 0 <= r["test_retained_acc"] <= 100
        if r["condensed"]:
            assert r["blend_stages_s"] > 0 and r["train_size"] < original["retain_size"]
        if r["method"] != "a_cf":
            assert r["curve"] == [] and r["eval_every"] is None
            continue
        curve = r["curve"]
        # one epoch of the retain set at batch 16, 4 evaluations per budget, 3 budgets
        budget_steps = int(np.ceil(r["train_size"] / 16))
        assert r["eval_every"] == max(1, budget_steps // 4)
        assert [p["step"] for p in curve][:2] == [0, r["eval_every"]]
        assert curve[-1]["step"] == r["steps"] == 3 * budget_steps
        # the first point is the original model; time grows; the last point is the record's
        assert curve[0]["forget_acc"] == original["forget_acc"]
        assert curve[0]["mia_auc"] == original["mia_auc"]
        times = [p["unlearn_s"] for p in curve]
        assert times == sorted(times) and times[-1] == r["unlearn_s"]
        assert curve[-1]["forget_acc"] == r["forget_acc"]
    # budget-tied runs: 2× took twice the steps of 1×
    steps = {(r["method"], r["condensed"], r["multiple"]): r.get("steps") for r in records}
    assert steps[("cf", False, 2)] == 2 * steps[("cf", False, 1)]
    text = open(os.path.join(workdir, "results.md")).read()
    assert "## Time to Retrain level" in text and "## Every seed" in text
    assert "## Without the MIA test" in text
    # two columns × (summary, without the MIA test, seed, 3 budgets)
    assert text.count("| a_cf |") == 2 * (1 + 1 + 1 + 3)
    assert os.path.getsize(os.path.join(workdir, "forgetting_curves.png")) > 10_000


@pytest.mark.slow
def test_the_reach_table_follows_the_records(tiny_run):
    cfg, workdir, records = tiny_run
    rows = fc.reach_table(records)
    assert {(r["method"], r["condensed"]) for r in rows} == {
        (m, c) for m in ("retrain", "cf", "a_cf") for c in (False, True)}
    target = next(r for r in rows if r["method"] == "retrain" and not r["condensed"])
    assert target["reached"] and target["time_s"] > 0   # Retrain meets its own level
    for r in rows:
        if r["reached"]:
            assert r["time_s"] is not None and r["steps"] is not None
            if r["condensed"]:
                assert r["total_s"] > r["time_s"]


@pytest.mark.slow
def test_a_rerun_resumes_without_new_records(tiny_run):
    cfg, workdir, records = tiny_run
    again = fc.run(cfg, workdir)
    assert len(again) == len(records) == len(load_records(os.path.join(workdir,
                                                                        "records.jsonl")))
    jax.clear_caches()
