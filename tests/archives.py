"""Small dataset archives in the official layouts, written by the tests (no download here).

- CIFAR-10: ``cifar-10-batches-py/`` (the python archive: ``data_batch_1..5``, ``test_batch``;
  pickled dicts with ``data`` [N, 3072] uint8, channel-major, and ``labels``), as a folder or a
  ``.tar.gz``, in several pickle dialects, or the binary format;
- CINIC-10: ``train|valid|test/<class>/*.png``.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from jaxunlearn.data import CINIC10_CLASSES

__all__ = ["binary_blob", "cifar_batches", "pickle_blob", "targz", "write_cifar10",
           "write_cinic10"]


def cifar_batches(n_per_train_batch=4, n_test=6):
    rng = np.random.default_rng(123)
    batches = {}
    for i in range(1, 6):
        data = rng.integers(0, 256, (n_per_train_batch, 3072), dtype=np.uint8)
        labels = [(j + n_per_train_batch * (i - 1)) % 10 for j in range(n_per_train_batch)]
        batches[f"data_batch_{i}"] = (data, labels)
    data = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    batches["test_batch"] = (data, [j % 10 for j in range(n_test)])
    return batches


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as in the official (Python 2) CIFAR pickles."""

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def pickle_blob(data, labels, style: str) -> bytes:
    if style == "py2":  # the official files: Python 2 strings, numpy 1.x module names
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump({b"batch_label": b"x", b"labels": labels, b"data": data})
        return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    if style == "py_bytes":  # a Python 3 writer with bytes keys, newest protocol (_frombuffer)
        return pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=5)
    return pickle.dumps({"batch_label": "x", "labels": labels, "data": data}, protocol=2)


def binary_blob(data, labels) -> bytes:
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], data], axis=1).tobytes()


def write_cifar10(root: Path, fmt: str, packed: bool, batches) -> Path:
    folder = "cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py"
    files = {}
    for name, (data, labels) in batches.items():
        if fmt == "bin":
            files[name + ".bin"] = binary_blob(data, labels)
        else:
            files[name] = pickle_blob(data, labels, fmt)
    files["readme.html"] = b"<html></html>"
    if not packed:
        (root / folder).mkdir(parents=True)
        for name, blob in files.items():
            (root / folder / name).write_bytes(blob)
        return root / folder
    archive = root / ("cifar-10-binary.tar.gz" if fmt == "bin" else "cifar-10-python.tar.gz")
    archive.write_bytes(targz({f"{folder}/{n}": b for n, b in files.items()}))
    return archive


def targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def write_cinic10(root: Path, n_train=2, n_test=1):
    from PIL import Image

    rng = np.random.default_rng(7)
    images = {}
    for split, n in (("train", n_train), ("test", n_test), ("valid", 1)):
        for ci, cls in enumerate(CINIC10_CLASSES):
            (root / split / cls).mkdir(parents=True)
            for j in range(n):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                name = f"cifar10-{split}-{j}.png"
                if split == "train" and ci == 3 and j == 1:  # a grayscale image, as in CINIC-10
                    gray = arr[..., 0]
                    Image.fromarray(gray, mode="L").save(root / split / cls / name)
                    arr = np.repeat(gray[..., None], 3, axis=-1)
                else:
                    Image.fromarray(arr).save(root / split / cls / name)
                images[(split, ci, j)] = arr
    return images
