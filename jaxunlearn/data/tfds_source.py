"""Image-classification datasets from TensorFlow Datasets, used only when already prepared.

``tfds`` is imported lazily (the ``tfds`` extra). Offline, ``tfds.load`` retries its download for
minutes before failing, so this module checks first that the prepared dataset (its
``dataset_info.json``) or a manual archive is on disk, and otherwise fails at once with the
command that prepares it. Datasets under a remote ``data_dir`` (``gs://...``) are handed to tfds
unchecked.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxunlearn.data.base import DatasetNotFoundError

__all__ = ["SVHN_MEAN", "SVHN_STD", "default_tfds_dir", "read_tfds"]

# Per-channel statistics of the SVHN (cropped digits) train split, as commonly used.
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)

_INSTALL = ('pip install tensorflow-datasets tensorflow-cpu importlib_resources pillow '
            '(in a checkout: pip install -e ".[tfds]")')


def default_tfds_dir() -> str:
    """tfds's own default data folder: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.environ.get("TFDS_DATA_DIR") or str(Path("~/tensorflow_datasets").expanduser())


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"loading tfds datasets needs TensorFlow Datasets: {_INSTALL}"
        ) from e
    return tfds


def _is_prepared(tfds_dir: str, name: str) -> bool:
    """True when ``<tfds_dir>/<name>[/<config>]/<version>/dataset_info.json`` exists."""
    base, _, version = name.partition(":")
    root = Path(tfds_dir) / base
    if not root.is_dir():
        return False
    pattern = f"**/{version}/dataset_info.json" if version else "**/dataset_info.json"
    return next(root.glob(pattern), None) is not None


def _has_manual_archive(tfds_dir: str) -> bool:
    manual = Path(tfds_dir) / "downloads" / "manual"
    return manual.is_dir() and any(manual.iterdir())


def _not_prepared_message(name: str, tfds_dir: str) -> str:
    return (
        f"tfds dataset {name!r} is not prepared in {tfds_dir} (no dataset_info.json under "
        f"{Path(tfds_dir) / name.partition(':')[0]}, no archive in {tfds_dir}/downloads/manual). "
        "Loading it here would make tfds try to download it, which offline retries for minutes. "
        "Ways to provide it:\n"
        f"  1. {_INSTALL}, then on a machine with internet run "
        f"`tfds build {name.partition(':')[0]} --data_dir {tfds_dir}` and copy the folder here;\n"
        f"  2. or put the dataset's manual archive into {tfds_dir}/downloads/manual/;\n"
        "  3. or point to another prepared folder with data_dir=... (--data_dir in the "
        "experiment scripts) or TFDS_DATA_DIR."
    )


def read_tfds(
    name: str, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Reads the train and test splits of a prepared tfds image-classification dataset.

    Args:
      name: tfds name, optionally with config and version (``svhn_cropped``,
        ``cifar10:3.0.2``).
      data_dir: tfds data folder; ``default_tfds_dir()`` when None.

    Returns:
      ``(x_train [n, h, w, c] uint8, y_train [n] int32, x_test [m, h, w, c] uint8, y_test [m]
      int32, num_classes)``.

    Raises:
      ImportError: tensorflow-datasets is not installed (names the extra to install).
      DatasetNotFoundError: the dataset is neither prepared nor available as a manual archive.
    """
    tfds = _import_tfds()
    tfds_dir = str(data_dir) if data_dir is not None else default_tfds_dir()
    remote = "://" in tfds_dir
    prepared = remote or _is_prepared(tfds_dir, name)
    if not prepared and not _has_manual_archive(tfds_dir):
        raise DatasetNotFoundError(_not_prepared_message(name, tfds_dir))
    builder = tfds.builder(name, data_dir=tfds_dir)
    if not prepared:
        builder.download_and_prepare()  # from the manual archive
    splits = set(builder.info.splits.keys())
    if not {"train", "test"} <= splits:
        raise ValueError(f"tfds dataset {name!r} needs 'train' and 'test' splits, has {splits}")

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
        x, y = tfds.as_numpy(ds)
        x = np.asarray(x)
        if x.dtype != np.uint8 or x.ndim != 4:
            raise ValueError(
                f"tfds dataset {name!r}: expected uint8 images [n, h, w, c], got dtype {x.dtype} "
                f"shape {x.shape}"
            )
        return x, np.asarray(y).astype(np.int32)

    x_train, y_train = read("train")
    x_test, y_test = read("test")
    try:
        num_classes = int(builder.info.features["label"].num_classes)
    except (KeyError, AttributeError, TypeError):
        num_classes = int(max(y_train.max(), y_test.max())) + 1
    return x_train, y_train, x_test, y_test, num_classes
