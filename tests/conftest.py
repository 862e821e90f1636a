"""Shared fixtures: tiny synthetic image problems (8×8), kept small so the suite runs in minutes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxunlearn.hostmem import retain_freed_memory

retain_freed_memory(single_arena=False)  # tiny shapes, as the digits studies (hostmem.py)


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
    """``run(script_text) -> {1: array, 2: array}``: the script (``argv[1]``: device count, set
    through XLA_FLAGS before JAX starts; ``argv[2]``: the .npy it saves) run in fresh processes
    with 1 and 2 forced host devices."""

    def run(script_text: str) -> dict[int, np.ndarray]:
        script = tmp_path / "on_devices.py"
        script.write_text(script_text)
        results = {}
        for n_dev in (1, 2):
            out = tmp_path / f"out{n_dev}.npy"
            env = dict(os.environ)
            env.pop("XLA_FLAGS", None)
            subprocess.run([sys.executable, str(script), str(n_dev), str(out)], check=True,
                           env=env, timeout=300)
            results[n_dev] = np.load(out)
        return results

    return run
