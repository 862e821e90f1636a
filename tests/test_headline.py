"""The paper's studies as a user runs them: default method lists, and the headline command end to
end on archives in the official layouts (CIFAR-10's python archive, CINIC-10's folders), offline.

The end-to-end runs cut every budget with ``--set`` (a ConvNet-3 of width 16, one original epoch,
one or two unlearning epochs, ipc 4, one seed) on random images: they check the plumbing a user
meets (data, every method and column, results.md, resume), not the paper's numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from archives import cifar_batches, write_cifar10, write_cinic10

from experiments import ablations, multiround, uniform_forget
from experiments.configs import cifar10, cinic10, digits, mnist5k, svhn
from experiments.configs.base import PAPER_METHODS, TABLE1_METHODS
from experiments.paper import PAPER_LABEL

ROOT = Path(__file__).resolve().parents[1]

# every method's budget cut to its smallest (A-methods already run one epoch)
_CUT = ["--set", "original.epochs=1", "--set", "original.warmup_epochs=0",
        "--set", "condense_net.width=16", "--set", "blend.iterations=2",
        "--set", 'model_kwargs={"depth": 3, "width": 16}',
        *[a for m in ("retrain", "cf", "bad_distill", "l1_sparse", "scrub")
          for a in ("--set", f"method_hparams.{m}.epochs=1")],
        "--set", "method_hparams.pruning.epochs=1", "--set", "method_hparams.pruning.prune_step=1"]


def test_the_papers_studies_run_the_papers_methods_by_default():
    assert TABLE1_METHODS == ("retrain", "cf", "bad_distill", "l1_sparse", "scrub", "pruning",
                              "a_cf")
    assert PAPER_METHODS == (*TABLE1_METHODS, "a_scrub", "a_sparse")
    paper = [m.get_config(scale) for m in (cifar10, svhn, cinic10) for scale in ("paper", "cpu")]
    paper += [uniform_forget.get_config(n, 0.1, "paper") for n in ("cifar10", "svhn", "cinic10")]
    paper += [multiround.get_config(n, "paper") for n in ("cifar10", "cinic10")]
    for cfg in paper:
        assert cfg.methods == PAPER_METHODS, cfg.name
        assert cfg.condensation == (False, True), cfg.name
        # the reference trains the original on every training image (no hold-out)
        assert cfg.val_fraction == 0.0 and "val_fraction" in cfg.notes, cfg.name
    # the embedded studies keep their own list and their validation hold-out (configs/base.py)
    for cfg in (digits.get_config(), mnist5k.get_config()):
        assert cfg.val_fraction == 0.1 and len(cfg.methods) == 14
    assert ablations.get_config("cinic10", "paper").methods == ("l1_sparse",)  # its own study
    # the reference's multi-round A-SCRUB trains on the full retain set with Blend
    assert multiround.get_config().full_retain_methods == ("a_scrub",)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=1800)


@pytest.mark.slow
def test_the_headline_command_end_to_end_on_an_official_cifar10_archive(tmp_path):
    # the python archive as the official file has it: data_batch_1..5 and test_batch, protocol-2
    # pickles with bytes keys, data [N, 3072] uint8 channel-major, labels; 40 / 30 per class
    write_cifar10(tmp_path / "data", "py2", False, cifar_batches(n_per_train_batch=80, n_test=300))
    work = tmp_path / "run"
    cmd = ["experiments.cifar10_class_forget", "--workdir", str(work), "--data_dir",
           str(tmp_path / "data"), "--model", "convnet", "--seeds", "1", "--ipc", "4", *_CUT]
    out = _run(cmd, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = [json.loads(line) for line in (work / "records.jsonl").read_text().splitlines()]
    got = {(r["method"], r["condensed"]) for r in records}
    assert got == {("original", False)} | {(m, dc) for m in PAPER_METHODS for dc in (False, True)}
    cfg = json.loads((work / "config.json").read_text())
    assert cfg["val_fraction"] == 0.0 and cfg["methods"] == list(PAPER_METHODS)
    for r in records:
        if r["method"] != "original":  # the reference's retain accuracy, on the trained set
            assert 0.0 <= r["retain_acc_train_set"] <= 100.0
            assert r["retain_size"] == 360 and r["forget_size"] == 40  # nothing held out
    results = (work / "results.md").read_text()
    assert f"Beside the paper: {PAPER_LABEL}" in results
    assert "| a_cf | yes | 48.25 / " in results and "| pruning | yes |" in results
    # a rerun resumes: nothing is recomputed
    again = _run(cmd, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seed 0: all records present, skipping" in again.stdout
    assert len((work / "records.jsonl").read_text().splitlines()) == len(records)


@pytest.mark.slow
def test_a_paper_study_on_a_cinic10_folder(tmp_path):
    write_cinic10(tmp_path / "data" / "cinic10", n_train=20, n_test=20)
    work = tmp_path / "run"
    cmd = ["experiments.uniform_forget", "--config", "cinic10", "--workdir", str(work),
           "--data_dir", str(tmp_path / "data"), "--model", "convnet", "--seeds", "1",
           "--ipc", "2", "--methods", "retrain,cf,a_cf", *_CUT]
    out = _run(cmd, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = [json.loads(line) for line in (work / "records.jsonl").read_text().splitlines()]
    assert {(r["method"], r["condensed"]) for r in records} == {("original", False)} | {
        (m, dc) for m in ("retrain", "cf", "a_cf") for dc in (False, True)}
    assert all(r["dataset"] == "cinic10" and r["scenario"] == "uniform" for r in records)
    assert "Beside the paper" not in (work / "results.md").read_text()  # no CINIC-10 numbers


def test_a_tfds_dataset_without_tensorflow_datasets_is_a_one_line_error(tmp_path):
    pytest.importorskip("numpy")
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorflow-datasets is installed here")
    out = _run(["experiments.class_forget", "--workdir", str(tmp_path / "w"), "--dataset",
                "tfds:mnist"], tmp_path)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "TensorFlow Datasets" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
