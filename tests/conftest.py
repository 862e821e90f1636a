"""Shared fixtures: tiny synthetic image problems (8×8), kept small so the suite runs in minutes.

Compilation flags. At the tests' tiny shapes XLA:CPU spends most of the suite's time compiling
(measured: 157 s of a 206 s run of four test files), so the tests compile with LLVM at -O0 and
XLA:CPU's loop emitters instead of its MLIR fusion emitters: the same files then compiled in
2.6x less time (``docs/testing.md`` has the measurements). The flags change how fast the
compiled code runs; what it computes agrees to float rounding (the golden-value tests pass under
both; a test that compared rounding noise between two programs was made to stop doing so).
``.ci/run`` runs the slow tier with XLA's default flags (``JAXUNLEARN_TEST_FAST_COMPILE=0``), so
production code generation is exercised end to end as well. Set that variable to 0 to run any
tier as production does.
"""

from __future__ import annotations

import os
import subprocess
import sys

FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def xla_flags_for_tests(extra: str = "") -> str:
    """The XLA_FLAGS of the test processes (subprocesses take the same), plus ``extra``."""
    fast = os.environ.get("JAXUNLEARN_TEST_FAST_COMPILE", "1") != "0"
    return " ".join(f for f in (FAST_COMPILE_FLAGS if fast else "", extra) if f)


# Before anything starts JAX's backend, which reads XLA_FLAGS once.
os.environ["XLA_FLAGS"] = xla_flags_for_tests(os.environ.get("XLA_FLAGS", ""))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxunlearn.hostmem import retain_freed_memory  # noqa: E402

retain_freed_memory(single_arena=False)  # tiny shapes, as the digits studies (hostmem.py)

# The CLIs turn JAX's persistent compilation cache on in the user's cache folder; the tests (and
# the study subprocesses they start) use it only when asked, in the folder asked for.
os.environ["JAXUNLEARN_COMPILE_CACHE"] = os.environ.get("JAXUNLEARN_TEST_COMPILE_CACHE", "0")

if os.environ.get("JAXUNLEARN_TEST_COMPILE_CACHE"):
    # Opt-in: JAX's persistent compilation cache in that folder, for every program, so a rerun
    # skips most compilation (measured: the default tier in 103 s warm against 146-175 s
    # without, docs/testing.md). Unbounded: bounding it (jax_compilation_cache_max_size) made
    # a cold run 3x slower here.
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAXUNLEARN_TEST_COMPILE_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def make_blobs_images(n_per_class: int = 40, num_classes: int = 4, size: int = 8,
                      channels: int = 1, seed: int = 0, noise: float = 0.3):
    """Class-structured 8×8 images: each class is a fixed random pattern plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(num_classes, size, size, channels)).astype(np.float32)
    y = np.repeat(np.arange(num_classes), n_per_class).astype(np.int32)
    x = protos[y] + noise * rng.normal(size=(len(y), size, size, channels)).astype(np.float32)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


@pytest.fixture(scope="session")
def blobs():
    return make_blobs_images()


@pytest.fixture
def on_host_devices(tmp_path):
    """``run(script_text) -> {1: array, 2: array}``: the script (``argv[1]``: device count, which
    it adds to XLA_FLAGS before JAX starts; ``argv[2]``: the .npy it saves) run in fresh
    processes with 1 and 2 forced host devices."""

    def run(script_text: str) -> dict[int, np.ndarray]:
        script = tmp_path / "on_devices.py"
        script.write_text(script_text)
        results = {}
        for n_dev in (1, 2):
            out = tmp_path / f"out{n_dev}.npy"
            env = dict(os.environ, XLA_FLAGS=xla_flags_for_tests())
            subprocess.run([sys.executable, str(script), str(n_dev), str(out)], check=True,
                           env=env, timeout=300)
            results[n_dev] = np.load(out)
        return results

    return run
