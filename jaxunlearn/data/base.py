"""Shared pieces of the data package: the dataset container, image validation, seeded sampling.

Everything here works on host numpy arrays: data preparation happens once, before anything is put
on a device, so plain numpy with an explicitly seeded ``np.random.Generator`` (:func:`rng_for`,
one stream per purpose) is the right tool. The argument checks themselves are those of
:mod:`jaxunlearn.checks`, shared with the partition and condensation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxunlearn.checks import check_images, check_labels, check_num_classes

__all__ = [
    "DatasetNotFoundError",
    "ImageDataset",
    "normalise_uint8_images",
    "rng_for",
    "round_half_up",
    "stratified_split",
    "subsample",
    "subsample_per_class",
    "validate_images",
]


class ImageDataset(NamedTuple):
    """An image-classification dataset on the host, ready for training (docs/method.md §1).

    Attributes:
      x_train: ``[n, h, w, c]`` float32, pixels scaled to [0, 1] then normalised per channel.
      y_train: ``[n]`` int32 labels in ``[0, num_classes)``.
      x_test: ``[m, h, w, c]`` float32, normalised like ``x_train``.
      y_test: ``[m]`` int32.
      num_classes: number of classes C.
      name: the dataset's name as given to ``load_dataset`` (canonical spelling).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and could not be fetched; the message says how to provide it."""


# Distinct purposes draw from distinct streams of the same user seed, so that e.g. the forget set
# drawn with seed 0 is not correlated with the validation slice drawn with seed 0.
_PURPOSES = {
    "dataset_split": 1,
    "subsample_train": 2,
    "subsample_test": 3,
    "svhn_balance": 4,
    "val": 5,
    "unseen": 6,
    "forget": 7,
}


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """A numpy generator for one purpose of one user seed (never seeded from the clock).

    Args:
      seed: the user's seed, a non-negative int (checked here).
      purpose: one of ``dataset_split``, ``subsample_train``, ``subsample_test``,
        ``svhn_balance``, ``val``, ``unseen``, ``forget``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng([int(seed), _PURPOSES[purpose]])


def round_half_up(x: float) -> int:
    """``x`` rounded to the nearest int, halves up (``⌊x + ½⌋``; Python's ``round`` is to even)."""
    return int(np.floor(x + 0.5))


def _class_quotas(counts_C: np.ndarray, n_take: int, rng: np.random.Generator) -> np.ndarray:
    """Splits ``n_take`` over classes in proportion to ``counts_C`` (largest remainder).

    Each class gets floor or ceil of its proportional share and the quotas sum to ``n_take``
    exactly; ties between equal remainders are broken by a seeded random order rather than by
    class index, so no class is systematically favoured.
    """
    n = int(counts_C.sum())
    exact = counts_C * (n_take / n)
    quota = np.floor(exact).astype(np.int64)
    short = n_take - int(quota.sum())
    if short > 0:
        order = np.lexsort((rng.random(len(counts_C)), -(exact - quota)))
        quota[order[:short]] += 1
    return np.minimum(quota, counts_C)


def _take_per_class(
    y_n: np.ndarray, quota_C: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``quota_C[c]`` random examples of every class c; returns (taken, rest), both sorted.

    Vectorised: a random permutation is grouped by class with a stable sort, so the rank of an
    example inside its class group is uniformly random, and an example is taken when its rank is
    below its class quota.
    """
    n = len(y_n)
    num_classes = len(quota_C)
    counts = np.bincount(y_n, minlength=num_classes)
    perm = rng.permutation(n)
    by_class = perm[np.argsort(y_n[perm], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    y_sorted = y_n[by_class]
    rank = np.arange(n) - starts[y_sorted]
    taken = rank < quota_C[y_sorted]
    return np.sort(by_class[taken]), np.sort(by_class[~taken])


def stratified_split(
    y_n: np.ndarray, n_take: int, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified random split of ``arange(len(y_n))`` into ``n_take`` indices and the rest.

    Args:
      y_n: ``[n]`` integer labels.
      n_take: size of the first part, split over classes in proportion to their counts.
      num_classes: C.
      rng: the generator of the draw (:func:`rng_for`).

    Returns:
      ``(taken, rest)``: sorted int64 index arrays.
    """
    counts = np.bincount(y_n, minlength=num_classes)
    return _take_per_class(y_n, _class_quotas(counts, n_take, rng), rng)


def subsample(
    y_n: np.ndarray, max_per_class: int, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """:func:`subsample_per_class` with an explicit generator (e.g. one of :func:`rng_for`).

    Returns:
      ``[n']`` sorted int64 indices into ``y_n``, at most ``max_per_class`` of every class.
    """
    counts = np.bincount(y_n, minlength=num_classes)
    taken, _ = _take_per_class(y_n, np.minimum(counts, int(max_per_class)), rng)
    return taken


def subsample_per_class(
    y_n: np.ndarray, max_per_class: int, num_classes: int, *, seed: int = 0
) -> np.ndarray:
    """Seeded class-balanced subsample: at most ``max_per_class`` examples of every class.

    Args:
      y_n: ``[n]`` integer labels.
      max_per_class: cap per class (a class with fewer examples keeps all of them).
      num_classes: number of classes C.
      seed: seed of the draw.

    Returns:
      ``[n']`` sorted int64 indices into ``y_n``.
    """
    if isinstance(max_per_class, bool) or not isinstance(max_per_class, int | np.integer):
        raise ValueError(f"max_per_class must be a positive int, got {max_per_class!r}")
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive int, got {max_per_class}")
    return subsample(y_n, max_per_class, num_classes, rng_for(seed, "subsample_train"))


def normalise_uint8_images(
    x_u8_NxHxWxC: np.ndarray, mean_C: Sequence[float], std_C: Sequence[float]
) -> np.ndarray:
    """Scales uint8 pixels to [0, 1] and normalises each channel: ``(x/255 - mean) / std``.

    Args:
      x_u8_NxHxWxC: ``[n, h, w, c]`` uint8 images.
      mean_C: per-channel mean of the [0, 1]-scaled pixels, length c.
      std_C: per-channel standard deviation, length c.

    Returns:
      ``[n, h, w, c]`` float32 (a single float copy; the arithmetic runs in place).
    """
    mean = np.asarray(mean_C, np.float32)
    std = np.asarray(std_C, np.float32)
    x = x_u8_NxHxWxC.astype(np.float32)
    x /= np.float32(255.0)
    x -= mean
    x /= std
    return x


def validate_images(x: np.ndarray, y: np.ndarray, num_classes: int) -> None:
    """Checks an image/label pair; raises ``ValueError`` saying what was expected and given.

    Args:
      x: ``[n, h, w, c]`` floating-point images, all finite, n ≥ 1.
      y: ``[n]`` integer labels in ``[0, num_classes)``.
      num_classes: number of classes C (a positive int).

    Raises:
      ValueError: wrong rank or empty axes, non-float images, NaN/inf pixels, non-integer or
        out-of-range labels, or mismatched lengths.
    """
    check_num_classes(num_classes)
    check_images(x, "images")
    check_labels(y, num_classes, n=x.shape[0], name="labels")
