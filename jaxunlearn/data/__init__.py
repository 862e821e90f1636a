"""Data protocol of the study (method.md §1): sources, splits and forget requests, as host numpy.

Typical use::

    ds = load_dataset("digits", seed=0)         # or "mnist5k", "cifar10", "cinic10", "svhn"
    splits = make_splits(ds, unseen_pool="test70", unseen_fraction=0.5, seed=0)
    fs = make_forget_set(splits.train_y, "uniform", num_classes=splits.num_classes, fraction=0.1)
    fs2 = next_round_forget(splits.train_y, fs, 0.1, seed=1, num_classes=splits.num_classes)
"""

from jaxunlearn.data.base import (
    DatasetNotFoundError,
    ImageDataset,
    normalise_uint8_images,
    subsample_per_class,
    validate_images,
)
from jaxunlearn.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, read_cifar10
from jaxunlearn.data.cinic10 import CINIC10_CLASSES, CINIC10_MEAN, CINIC10_STD, read_cinic10
from jaxunlearn.data.forget import (
    SCENARIOS,
    ForgetSet,
    forget_set_from_indices,
    make_forget_set,
    next_round_forget,
)
from jaxunlearn.data.sources import DATASETS, default_data_dir, load_dataset
from jaxunlearn.data.splits import UNSEEN_POOLS, Splits, make_splits

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CINIC10_CLASSES",
    "CINIC10_MEAN",
    "CINIC10_STD",
    "DATASETS",
    "SCENARIOS",
    "UNSEEN_POOLS",
    "DatasetNotFoundError",
    "ForgetSet",
    "ImageDataset",
    "Splits",
    "default_data_dir",
    "forget_set_from_indices",
    "load_dataset",
    "make_forget_set",
    "make_splits",
    "next_round_forget",
    "normalise_uint8_images",
    "read_cifar10",
    "read_cinic10",
    "subsample_per_class",
    "validate_images",
]
