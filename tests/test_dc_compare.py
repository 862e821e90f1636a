"""The dataset-condensation comparison (experiments/dc_compare.py) on a tiny setting."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from experiments import dc_compare
from experiments.configs.base import NetSettings
from experiments.io import load_records


def _tiny(seeds=(0,), ipcs=(1, 2)):
    cfg = dc_compare.get_config("digits")
    cfg.seeds, cfg.ipcs, cfg.dm_budgets = seeds, ipcs, (1, 10)
    cfg.condense_net = NetSettings(width=16, depth=2)
    cfg.eval = dataclasses.replace(cfg.eval, width=16, steps=40)
    cfg.dm = dataclasses.replace(cfg.dm, calibration_iterations=3)
    cfg.gm = dataclasses.replace(cfg.gm, calibration_iterations=1)
    cfg.idm = dataclasses.replace(cfg.idm, calibration_iterations=3)
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dc") / "run")
    return workdir, dc_compare.run(_tiny(), workdir)


@pytest.mark.slow
def test_records_and_numbers(tiny_run):
    workdir, records = tiny_run
    by = {(r["method"], r["ipc"], r["seed"]): r for r in records}
    baselines = [f"{n}_x{b}" for n in ("dm", "gm", "idm") for b in (1, 10)]
    expected = {("full_data", None, 0)} | {
        (m, ipc, 0) for ipc in (1, 2) for m in ("random_real", "blend", *baselines)}
    assert set(by) == expected and len(records) == len(expected)
    for r in records:
        for field in ("method", "ipc", "seed", "condense_s", "partition_s", "compile_s",
                      "iterations", "test_acc", "n_images"):
            assert field in r, (field, r)
        assert 0.0 <= r["test_acc"] <= 100.0
        assert r["condense_s"] >= 0.0 and r["partition_s"] >= 0.0
        # one training budget for every set: 40 steps (sets here are below one batch)
        if r["method"] != "full_data":
            assert r["eval_steps"] == 40
    assert by[("full_data", None, 0)]["n_images"] == 898
    for ipc in (1, 2):
        blend = by[("blend", ipc, 0)]
        assert blend["n_images"] == 10 * ipc and blend["iterations"] == 20
        assert blend["partition_s"] > 0.0 and blend["blend_s"] > 0.0
        assert blend["loss_last"] < blend["loss_first"]  # Blend lowered its matching loss
        assert blend["test_acc"] > 30.0  # chance is 10% on ten classes
        assert by[("random_real", ipc, 0)]["n_images"] == 10 * ipc
        # each baseline's budget is b × Blend's (+partition) time as a calibrated iteration
        # count, the same rule for DM, GM and IDM (DM's record keys kept)
        budget = blend["condense_s"] + blend["partition_s"]
        for n in ("dm", "gm", "idm"):
            d1, d10 = by[(f"{n}_x1", ipc, 0)], by[(f"{n}_x10", ipc, 0)]
            for b, d in ((1, d1), (10, d10)):
                assert d["n_images"] == 10 * ipc and d["baseline"] == n
                assert d["budget_s"] == pytest.approx(b * budget)
                assert d["base_iterations"] == pytest.approx(budget / d["iter_s"])
                # one name per value (the baseline-prefixed copies are gone)
                assert not {f"{n}_budget_s", f"{n}_iter_s", f"{n}_base_iterations"} & set(d)
                assert d["iterations"] == max(1, round(b * d["base_iterations"]))
            assert d10["iterations"] >= d1["iterations"]
            if d1["base_iterations"] >= 3:  # away from the max(1, ·) floor: ≈ 10× the iterations
                assert d10["iterations"] / d1["iterations"] == pytest.approx(10, rel=0.2)
        assert by[("gm_x1", ipc, 0)]["gm_loops"] == [1, 1]  # the reference's loops at ipc <= 5


@pytest.mark.slow
def test_outputs(tiny_run):
    workdir, _ = tiny_run
    for name in ("config.json", "records.jsonl", "results.md", "blend_grid_ipc1.png",
                 "blend_grid_ipc2.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    with open(os.path.join(workdir, "blend_grid_ipc1.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(workdir, "results.md")) as f:
        table = f.read()
    for label in ("Blend (blend only)", "Blend (+partition)", "DM (1× Blend time)",
                  "DM (10× Blend time)", "GM (1× Blend time)", "GM (10× Blend time)",
                  "IDM (1× Blend time)", "IDM (10× Blend time)", "Random real images",
                  "Full training set"):
        assert label in table
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert saved["blend"]["iterations"] == 20
    assert (saved["dm"]["lr"], saved["dm"]["dsa"]) == (0.01, True)  # the reference's cond.py
    assert (saved["gm"]["lr"], saved["gm"]["lr_net"], saved["idm"]["lr"]) == (0.1, 0.01, 0.01)


@pytest.mark.slow
def test_rerun_recomputes_nothing(tiny_run, monkeypatch):
    workdir, records = tiny_run
    with open(os.path.join(workdir, "records.jsonl")) as f:
        before = f.read()

    def fail(*a, **k):
        raise AssertionError("a rerun must not condense or train again")

    for name in ("blend_clusters", "partition_by_class", "distribution_matching",
                 "gradient_matching", "improved_distribution_matching"):
        monkeypatch.setattr(dc_compare, name, fail)
    monkeypatch.setattr(dc_compare.train, "run_phases", fail)
    again = dc_compare.run(_tiny(), workdir)
    with open(os.path.join(workdir, "records.jsonl")) as f:
        assert f.read() == before
    assert again == load_records(os.path.join(workdir, "records.jsonl")) == records


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"ipc \[88\] is larger than a class.*87 images"):
        dc_compare.run(_tiny(ipcs=(1, 88)), str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()  # rejected before anything is written
    with pytest.raises(ValueError, match="ipc: expected integers >= 1"):
        dc_compare.run(_tiny(ipcs=(0,)), str(tmp_path / "b"))
    cfg = _tiny()
    cfg.dataset = "mnist-ish"
    with pytest.raises(ValueError, match="unknown dataset"):
        dc_compare.run(cfg, str(tmp_path / "c"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        dc_compare.run(_tiny(), str(tmp_path / "file"))
    cfg = _tiny()
    cfg.dm_budgets = (1, -2)
    with pytest.raises(ValueError, match="dm_budgets"):
        dc_compare.run(cfg, str(tmp_path / "d"))
    cfg = _tiny()
    cfg.baselines = ("dm", "mtt")
    with pytest.raises(ValueError, match="baselines"):
        dc_compare.run(cfg, str(tmp_path / "e"))
    with pytest.raises(ValueError, match="ipc=7"):  # GM's loops are the reference's table
        dc_compare.run(_tiny(ipcs=(7,)), str(tmp_path / "f"))
    cfg = _tiny(ipcs=(7,))
    cfg.baselines = ("dm", "idm")  # without GM, ipc 7 is fine: checked up front only
    dc_compare._check_gm_loops(cfg)
    assert not any((tmp_path / n).exists() for n in "def")


def test_missing_cifar10_fails_fast(tmp_path):
    from jaxunlearn.data import DatasetNotFoundError

    cfg = dc_compare.get_config("cifar10")
    cfg.data_dir = str(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError):
        dc_compare.run(cfg, str(tmp_path / "w"))


def test_main_reports_errors(tmp_path, capsys):
    assert dc_compare.main(["--workdir", str(tmp_path / "w"), "--set", "ipcs=[100]"]) == 2
    assert "larger than a class" in capsys.readouterr().err
    assert dc_compare.main(["--workdir", str(tmp_path / "w"), "--set", "eval.stepz=3"]) == 2
    assert "unknown config field 'eval.stepz'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a study-only flag: dc_compare has no methods
        dc_compare.main(["--workdir", str(tmp_path / "w"), "--methods", "cf"])


def test_the_command_line_sets_the_comparisons_values():
    from experiments import cli

    base = dc_compare.get_config()
    args = cli.build_parser("x", base, dc_compare.CONFIGS).parse_args(
        ["--workdir", "w", "--config", "cifar10", "--seeds", "2", "--set", "ipcs=[2,4]",
         "--set", "dm_budgets=[1]", "--set", "eval.steps=7", "--set", "full_data=false",
         "--set", "dm.lr=1.0", "--set", "dm.dsa=false", "--set", 'baselines=["dm","idm"]'])
    cfg = cli.apply_args(dc_compare.get_config(args.config), args)
    assert cfg.dataset == "cifar10" and cfg.condense_net.width == 128  # the CIFAR-10 nets
    assert (cfg.seeds, cfg.ipcs, cfg.dm_budgets) == ((0, 1), (2, 4), (1,))
    assert cfg.eval.steps == 7 and cfg.eval.width == 128 and cfg.full_data is False
    assert (cfg.dm.lr, cfg.dm.dsa, cfg.baselines) == (1.0, False, ("dm", "idm"))
