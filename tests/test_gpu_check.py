"""bench/gpu_check.py, the one prepared GPU check: its tiny size runs on CPU end to end, from the
checkout alone, with the modules the GPU image lacks made unimportable; a failing stage is
reported and the stages that do not need it still run. With --reference it runs the reference's
A-CF epochs in a child process (a stub harness here) and prints ours / reference; a child that
fails is one line and leaves the exit status to our stages."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import xla_flags_for_tests

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
REF_SCRIPT = ROOT / "bench" / "gpu_check_reference.py"
ROWS = ("data", "features", "kmeans", "split", "blend", "a_cf_full", "a_cf_reduced", "cf_full")
PAPER_LABEL = "paper (CIFAR-10, ResNet-18, author's GPU)"
# Not in the GPU image (ott-jax, mlxtend, tensorflow, tfds; nor matplotlib, tqdm, pillow, which
# the library declares but the image's jax/flax/optax/chex/orbax/scikit-learn/torch do not pull).
BLOCKED = ("ott", "mlxtend", "tensorflow", "tensorflow_datasets", "matplotlib", "tqdm", "PIL")

# Runs argv[1] as __main__ (argv[2:] its arguments) with BLOCKED unimportable.
BLOCKER = textwrap.dedent(f"""
    import importlib.abc, runpy, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"{{name}} is blocked: the GPU image does not have it")

    sys.meta_path.insert(0, Blocker())
    try:
        import mlxtend  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker does not work")
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


# Stands in for a python with torch running bench/gpu_check_reference.py: it is run as
# `stub <harness> --ref_dir ... --out ...` and writes the harness's record (4 s and 2 s).
STUB_REF_PYTHON = """#!{python}
import json, os, sys
harness, args = sys.argv[1], dict(zip(sys.argv[2::2], sys.argv[3::2]))
assert harness.endswith("gpu_check_reference.py"), harness
print("stub harness: timing the reference")
retain = {{"a_cf_full": 360}}
if "--reduced" in args:
    retain["a_cf_reduced"] = int(args["--reduced"])
record = {{"ok": True, "ref_dir": args["--ref_dir"], "torch": "0.0+stub", "cuda": None,
          "device": args["--device"], "device_name": "stub cpu", "torch_num_threads": 2,
          "model": "stub ConvNet", "batch_size": int(args["--batch_size"]), "stubbed": [],
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "argv": sys.argv[2:],
          "seconds": {{"warmup_one_batch": 0.5, "a_cf_full": 4.0, "a_cf_reduced": 2.0}},
          "retain": retain}}
with open(args["--out"], "w") as f:
    json.dump(record, f)
"""

FAILING_REF_PYTHON = """#!{python}
import sys
print("Traceback (most recent call last):", file=sys.stderr)
print("ModuleNotFoundError: No module named 'torch'", file=sys.stderr)
raise SystemExit(1)
"""


def _executable(path: Path, text: str) -> str:
    path.write_text(text.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def test_tiny_run_on_cpu_without_the_missing_modules(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags_for_tests())
    env.pop("PYTHONPATH", None)
    env.pop("GLIBC_TUNABLES", None)
    out_dir = tmp_path / "results"
    ref_dir = tmp_path / "DC_Unlearning"
    ref_dir.mkdir()
    stub = _executable(tmp_path / "ref_python", STUB_REF_PYTHON)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(SCRIPT), "--size", "tiny", "--out", str(out_dir),
         "--reference", str(ref_dir), "--ref_python", stub],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # not the checkout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    record = json.loads((out_dir / "gpu_check_tiny.json").read_text())
    assert record["failed"] == []
    assert Path(record["machine"]["jaxunlearn"]) == ROOT / "jaxunlearn"  # the checkout's copy
    for row in ROWS:
        r = record["stages"][row]
        assert r["ok"], (row, r)
        assert r["run_s"] >= 0 and r["compile_s"] >= 0, (row, r)
    assert record["stages"]["a_cf_full"]["retain"] == 9 * 40
    red = record["setup"]["reduced_retain"]
    assert record["stages"]["a_cf_reduced"]["retain"] == red["n_reduced"] < 9 * 40
    assert record["sums"]["with_blend"]["run_s"] >= 0

    text = proc.stdout
    assert PAPER_LABEL in text
    for figure in ("5.58", "47.80", "75.80", "16.00"):
        assert figure in text, figure
    assert "freshly initialised" in text and "peak device memory" in text

    # the reference (stub): our sizes, device and batch went to it, with our allocator settings
    ref = record["reference"]
    assert ref["ok"], ref
    args = dict(zip(ref["result"]["argv"][::2], ref["result"]["argv"][1::2], strict=True))
    assert args["--size"] == "tiny" and args["--device"] == "cpu"
    assert args["--batch_size"] == str(record["stages"]["a_cf_full"]["batch"]) == "64"
    assert args["--reduced"] == str(red["n_reduced"])
    assert Path(args["--ref_dir"]) == ref_dir
    assert ref["result"]["glibc_tunables"] == ref["glibc_tunables"]
    assert "glibc.malloc.arena_max=1" in ref["glibc_tunables"]
    for row in ("a_cf_full", "a_cf_reduced"):
        assert ref["ratios"][row]["ours_over_reference"] == pytest.approx(
            record["stages"][row]["run_s"] / ref["result"]["seconds"][row])
    assert "  | stub harness: timing the reference" in text
    assert "reference A-CF epoch, full retain (360 images)" in text
    assert f"reference A-CF epoch, reduced retain ({red['n_reduced']} images)" in text
    assert "did NOT run" not in text


def _load_module():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failing_stage_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    gc = _load_module()

    def ok(*rows):
        return lambda ctx, size: {r: {"run_s": 1.0, "compile_s": 0.5} for r in rows}

    def boom(ctx, size):
        raise RuntimeError("out of memory\nsecond line")

    fakes = {stage: ok(*rows) for stage, _, rows, _ in gc.STAGES}
    monkeypatch.setattr(gc, "RUNNERS", {**fakes, "partition": boom})
    assert gc.main(["--size", "tiny", "--out", str(tmp_path)]) == 1

    text = capsys.readouterr().out
    assert "features + k-means: FAILED (RuntimeError): out of memory" in text
    assert "second line" not in text
    assert "split + Blend: skipped (needs partition)" in text
    record = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    assert record["failed"] == ["partition", "condense", "a_cf_reduced"]
    ran = {row for row, r in record["stages"].items() if r["ok"]}
    assert ran == {"data", "a_cf_full", "cf_full"}
    assert record["sums"]["without_blend"]["run_s"] == 1.0
    assert record["sums"]["with_blend"]["run_s"] is None


def _fake_runners(gc, monkeypatch, n_reduced=120):
    """Every stage returns 1 s run + 0.5 s compile; condense leaves a reduced set of n_reduced."""

    def ok(stage, rows):
        def run(ctx, size):
            if stage == "condense":
                ctx["setup"]["reduced_retain"] = {"n_reduced": n_reduced}
            extra = {"batch": 64, "retain": 360} if stage.startswith("a_cf") else {}
            return {r: {"run_s": 1.0, "compile_s": 0.5, **extra} for r in rows}
        return run

    monkeypatch.setattr(gc, "RUNNERS", {stage: ok(stage, rows) for stage, _, rows, _ in gc.STAGES})


def test_reference_rows_and_ratios(tmp_path, monkeypatch, capsys):
    gc = _load_module()
    _fake_runners(gc, monkeypatch)
    stub = _executable(tmp_path / "ref_python", STUB_REF_PYTHON)
    assert gc.main(["--size", "tiny", "--out", str(tmp_path), "--reference", str(tmp_path),
                    "--ref_python", stub]) == 0

    text = capsys.readouterr().out
    # ours 1 s against the reference's 4 s (full) and 2 s (reduced)
    assert "reference A-CF epoch, full retain (360 images)" in text
    assert "reference A-CF epoch, reduced retain (120 images)" in text
    lines = {line.split("(")[0].strip(): line for line in text.splitlines()
             if line.startswith("reference A-CF epoch")}
    assert lines["reference A-CF epoch, full retain"].split()[-3:] == ["4.00", "1.00", "0.25x"]
    assert lines["reference A-CF epoch, reduced retain"].split()[-3:] == ["2.00", "1.00", "0.50x"]
    assert f"GLIBC_TUNABLES={gc.FAIR_GLIBC}" in text

    record = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    ref = record["reference"]
    assert ref["ok"] and ref["device"] == "cpu" and ref["glibc_tunables"] == gc.FAIR_GLIBC
    assert ref["result"]["glibc_tunables"] == gc.FAIR_GLIBC  # the child got our settings
    assert ref["result"]["seconds"]["a_cf_full"] == 4.0
    assert ref["ratios"]["a_cf_full"] == {"ours_over_reference": 0.25,
                                          "ours_with_compile_over_reference": 0.375}
    assert ref["ratios"]["a_cf_reduced"]["ours_over_reference"] == 0.5
    assert "--reduced" in ref["command"] and "120" in ref["command"]


def test_a_failing_reference_is_one_line_and_exit_0(tmp_path, monkeypatch, capsys):
    gc = _load_module()
    _fake_runners(gc, monkeypatch)
    failing = _executable(tmp_path / "ref_python", FAILING_REF_PYTHON)
    for py in (failing, str(tmp_path / "no_such_python")):
        assert gc.main(["--size", "tiny", "--out", str(tmp_path), "--reference", str(tmp_path),
                        "--ref_python", py]) == 0  # our stages ran
        text = capsys.readouterr().out
        record = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
        ref = record["reference"]
        assert not ref["ok"] and ref["ratios"] == {}
        assert "reference: did NOT run (" in text
        assert "the reference did NOT run" in text
        assert "reference A-CF epoch, full retain" not in text
        assert record["failed"] == [] and record["stages"]["a_cf_full"]["ok"]
        if py == failing:
            assert ref["reason"] == ("exit status 1: ModuleNotFoundError: No module named "
                                     "'torch'")
        else:
            assert ref["reason"].startswith(f"cannot start {py}")


def test_the_harness_times_our_sizes_and_imports_no_torch_at_load():
    gc = _load_module()
    spec = importlib.util.spec_from_file_location("gpu_check_reference_under_test", REF_SCRIPT)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    assert "torch" not in sys.modules
    assert set(harness.SIZES) == set(gc.SIZES)
    for name, size in harness.SIZES.items():
        for key in ("train_per_class", "test_per_class", "image", "model"):
            assert size[key] == gc.SIZES[name][key], (name, key)
    assert harness.FORGET_CLASS == gc.FORGET_CLASS
