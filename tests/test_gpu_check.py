"""bench/gpu_check.py, the one prepared GPU check: its tiny size runs on CPU end to end, from the
checkout alone, with the modules the GPU image lacks made unimportable; a failing stage is
reported and the stages that do not need it still run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import xla_flags_for_tests

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
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


def test_tiny_run_on_cpu_without_the_missing_modules(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags_for_tests())
    env.pop("PYTHONPATH", None)
    out_dir = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(SCRIPT), "--size", "tiny", "--out", str(out_dir)],
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
