"""CINIC-10 from its standard folder layout, read with pillow (docs/method.md §1).

Layout: ``<root>/{train,valid,test}/<class>/*.png`` with the ten CIFAR-10 class names. The paper
uses the train split (9,000 images per class) and the test split; ``valid`` is not read.
``<root>`` is looked up as ``<data_dir>/cinic10``, ``<data_dir>/CINIC-10``, ``<data_dir>/cinic-10``
or ``<data_dir>`` itself. There is no automatic download (the archive is ~700 MB and served from a
repository page, not a stable file URL).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxunlearn.data.base import DatasetNotFoundError

__all__ = [
    "CINIC10_CLASSES",
    "CINIC10_MEAN",
    "CINIC10_STD",
    "CINIC10_URL",
    "find_cinic10",
    "locate",
    "read_cinic10",
]

CINIC10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CINIC10_MEAN = (0.47889522, 0.47227842, 0.43047404)
CINIC10_STD = (0.24205776, 0.23828046, 0.25874835)
CINIC10_URL = "https://datashare.ed.ac.uk/handle/10283/3192"
_ROOT_NAMES = ("cinic10", "CINIC-10", "cinic-10", "CINIC10")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_cinic10(data_dir: str | os.PathLike) -> Path | None:
    """The CINIC-10 root (the folder holding ``train/`` and ``test/``) in ``data_dir``, or None."""
    base = Path(data_dir)
    for root in (*(base / n for n in _ROOT_NAMES), base):
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root
    return None


def _read_split(split_dir: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(
            'reading CINIC-10 needs pillow: pip install pillow'
        ) from e
    missing = [c for c in CINIC10_CLASSES if not (split_dir / c).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"{split_dir}: missing class folders {missing}; expected one folder per class "
            f"{list(CINIC10_CLASSES)}"
        )
    # Sorted file names make the example order, hence every seeded split, reproducible.
    files = [
        sorted(p for p in (split_dir / c).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        for c in CINIC10_CLASSES
    ]
    labels = np.concatenate([np.full(len(f), i, np.int32) for i, f in enumerate(files)])
    paths = [p for f in files for p in f]
    if not paths:
        raise DatasetNotFoundError(f"{split_dir}: the class folders hold no .png images")
    x = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            # A few CINIC-10 images (from ImageNet) are grayscale; every image becomes RGB.
            arr = np.asarray(im.convert("RGB"))
        if arr.shape != (size, size, 3):
            raise ValueError(
                f"{p}: expected a {size}×{size} image, got {arr.shape[1]}×{arr.shape[0]}"
            )
        x[i] = arr
    return x, labels


def read_cinic10(
    root: str | os.PathLike, *, size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads the train and test splits of a CINIC-10 folder.

    Args:
      root: the folder holding ``train/<class>/*.png`` and ``test/<class>/*.png``.
      size: expected image side (32 for CINIC-10).

    Returns:
      ``(x_train [n, size, size, 3] uint8, y_train [n] int32, x_test [m, size, size, 3] uint8,
      y_test [m] int32)``, classes numbered in the order of ``CINIC10_CLASSES``.
    """
    root = Path(root)
    x_train, y_train = _read_split(root / "train", size)
    x_test, y_test = _read_split(root / "test", size)
    return x_train, y_train, x_test, y_test


def _missing_message(data_dir: Path) -> str:
    return (
        f"CINIC-10 not found in {data_dir}: expected a folder with train/<class>/*.png and "
        f"test/<class>/*.png, at {data_dir}/cinic10 (or CINIC-10, cinic-10, or {data_dir} "
        "itself). Ways to provide it:\n"
        f"  1. download CINIC-10.tar.gz from {CINIC10_URL} and extract it to {data_dir}/cinic10;\n"
        "  2. or point to the folder that holds it: set JAXUNLEARN_DATA=/path/to/folder, or pass "
        "data_dir=... to load_dataset (--data_dir in the experiment scripts)."
    )


def locate(data_dir: Path) -> Path:
    """The CINIC-10 root under ``data_dir``; fails fast with the ways to get it (no download)."""
    root = find_cinic10(data_dir)
    if root is None:
        raise DatasetNotFoundError(_missing_message(data_dir))
    return root
