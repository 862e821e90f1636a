"""Train / validation / unseen-pool / evaluation-test splits of a dataset (docs/method.md §1).

Two protocols for the unseen pool U that A-AMU draws from during unlearning:

- ``test70`` (the reference): the official test split is split, stratified, into
  ``unseen_fraction`` (70%) for U and the rest for evaluation.
- ``heldout``: U is a stratified slice of the training data, of the size ``test70`` would give
  (``unseen_fraction`` × test size), that the original model never trains on; the whole test
  split is the evaluation set, so no test image is seen during unlearning.

In both, the validation slice (best-epoch selection only) is a stratified ``val_fraction`` of the
training data, drawn first and from its own seeded stream: for a given seed it is the same images
under both protocols, and the ``heldout`` training set is the ``test70`` one minus U.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxunlearn.checks import check_choice, check_fraction
from jaxunlearn.data.base import (
    ImageDataset,
    rng_for,
    round_half_up,
    stratified_split,
    validate_images,
)

__all__ = ["UNSEEN_POOLS", "Splits", "make_splits"]

UNSEEN_POOLS = ("test70", "heldout")


class Splits(NamedTuple):
    """The four disjoint parts of a dataset used by a study (host numpy).

    Attributes:
      train_x, train_y: D, ``[n, h, w, c]`` float32 / ``[n]`` int32, what the original model
        trains on; forget and retain sets are index arrays into these.
      val_x, val_y: validation slice for best-epoch selection; never used for unlearning or
        evaluation (may be empty when ``val_fraction`` is 0).
      unseen_x, unseen_y: the unseen pool U used inside unlearning (A-AMU).
      test_x, test_y: the evaluation test set.
      num_classes: number of classes C.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    unseen_x: np.ndarray
    unseen_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int


def make_splits(
    ds: ImageDataset,
    *,
    unseen_pool: str = "test70",
    unseen_fraction: float = 0.7,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Splits a dataset into train D, validation, unseen pool U and evaluation test (method.md §1).

    Every split is stratified (each class's share within one example of proportional) and fixed
    by ``seed``; every part keeps the original order of its examples.

    Args:
      ds: the dataset (``load_dataset`` output or any ``ImageDataset``).
      unseen_pool: ``test70`` (U from the test split, the reference) or ``heldout`` (U from the
        training data).
      unseen_fraction: size of U as a fraction of the test split, in (0, 1) (0.7 in the paper;
        the digits study uses 0.5).
      val_fraction: size of the validation slice as a fraction of the training split, in [0, 1).
      seed: seed of the draws.

    Returns:
      ``Splits``. CIFAR-10 with the defaults: train 45,000, val 5,000, unseen 7,000, test 3,000
      (``heldout``: train 38,000, val 5,000, unseen 7,000, test 10,000).

    Raises:
      ValueError: unknown ``unseen_pool``, fractions out of range, invalid images, or a split
        that would come out empty.
    """
    check_choice(unseen_pool, UNSEEN_POOLS, "unseen_pool")
    unseen_fraction = check_fraction("unseen_fraction", unseen_fraction)
    val_fraction = check_fraction("val_fraction", val_fraction, allow_zero=True)
    rng_val, rng_unseen = rng_for(seed, "val"), rng_for(seed, "unseen")
    num_classes = ds.num_classes
    validate_images(ds.x_train, ds.y_train, num_classes)
    validate_images(ds.x_test, ds.y_test, num_classes)

    n_train, n_test = len(ds.y_train), len(ds.y_test)
    n_val = round_half_up(val_fraction * n_train)
    n_unseen = round_half_up(unseen_fraction * n_test)
    n_fit = n_train - n_val - (n_unseen if unseen_pool == "heldout" else 0)
    n_eval = n_test - (n_unseen if unseen_pool == "test70" else 0)
    sizes = {"train": n_fit, "unseen": n_unseen, "test": n_eval}
    if min(sizes.values()) < 1:
        raise ValueError(
            f"splits of {n_train} training and {n_test} test images with unseen_pool="
            f"{unseen_pool!r}, unseen_fraction={unseen_fraction}, val_fraction={val_fraction} "
            f"would leave an empty part: sizes {sizes}"
        )

    y_train = ds.y_train
    val_idx, rest_idx = stratified_split(y_train, n_val, num_classes, rng_val)
    if unseen_pool == "test70":
        unseen_idx, test_idx = stratified_split(ds.y_test, n_unseen, num_classes, rng_unseen)
        train_idx = rest_idx
        unseen_x, unseen_y = ds.x_test[unseen_idx], ds.y_test[unseen_idx]
    else:
        sub_unseen, sub_train = stratified_split(
            y_train[rest_idx], n_unseen, num_classes, rng_unseen
        )
        train_idx, unseen_src = rest_idx[sub_train], rest_idx[sub_unseen]
        test_idx = slice(None)  # the whole test split, as a view
        unseen_x, unseen_y = ds.x_train[unseen_src], y_train[unseen_src]

    return Splits(
        train_x=ds.x_train[train_idx],
        train_y=y_train[train_idx],
        val_x=ds.x_train[val_idx],
        val_y=y_train[val_idx],
        unseen_x=unseen_x,
        unseen_y=unseen_y,
        test_x=ds.x_test[test_idx],
        test_y=ds.y_test[test_idx],
        num_classes=num_classes,
    )
