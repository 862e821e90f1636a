"""Shared fixtures: tiny synthetic image problems (8×8), kept small so the suite runs in minutes."""

from __future__ import annotations

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
