"""CIFAR-10 from the official archives, read with numpy alone (no TensorFlow) (docs/method.md §1).

Accepted layouts, looked up in ``data_dir`` in this order:

- ``cifar-10-batches-py/`` (the extracted python archive: pickled dicts with ``data`` [N, 3072]
  uint8 in CHW order and ``labels``),
- ``cifar-10-python.tar.gz`` (read straight from the tarball, nothing is extracted),
- ``cifar-10-batches-bin/`` (the extracted binary archive: records of 1 label byte + 3,072 CHW
  pixel bytes),
- ``cifar-10-binary.tar.gz``.

When none is present and downloads are allowed, the python archive is fetched once from the
official URL with a short timeout and an MD5 check and written atomically; when that fails a
``DatasetNotFoundError`` lists the ways to provide the data, within seconds.

The pickles are read with an unpickler that only resolves the few numpy names a CIFAR batch
needs, so a tampered archive cannot run code.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from jaxunlearn.data.base import DatasetNotFoundError

__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "DOWNLOAD_TIMEOUT_S",
    "find_cifar10",
    "locate_or_download",
    "read_cifar10",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# Socket timeout for the download (connection and each read). Short on purpose: an offline
# machine must get the "how to provide the data" message in seconds, not after retries.
DOWNLOAD_TIMEOUT_S = 10.0

_PY_DIR = "cifar-10-batches-py"
_PY_TAR = "cifar-10-python.tar.gz"
_BIN_DIR = "cifar-10-batches-bin"
_BIN_TAR = "cifar-10-binary.tar.gz"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_RECORD = 3 * 32 * 32


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """The numpy callables a pickled uint8 array refers to, under numpy 1.x and 2.x names."""
    probe = np.zeros(1, np.uint8)
    reconstruct = probe.__reduce__()[0]
    frombuffer = probe.__reduce_ex__(5)[0]
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how python 3 protocol-2 pickles store bytes
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler for CIFAR batches: plain containers and numpy arrays, nothing else."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a CIFAR pickle (only numpy arrays are "
                "expected; the archive may be corrupt or not CIFAR-10)"
            ) from None


def _parse_pickle_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    # latin1 is how numpy arrays pickled by Python 2 (the official files) load under Python 3.
    batch = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not isinstance(batch, dict):
        raise ValueError(f"{where}: expected a pickled dict, got {type(batch).__name__}")

    def field(key: str):
        for k in (key, key.encode()):
            if k in batch:
                return batch[k]
        raise ValueError(f"{where}: pickled batch has no {key!r} entry (keys: {list(batch)})")

    data = np.asarray(field("data"))
    labels = np.asarray(field("labels"))
    if data.ndim != 2 or data.shape[1] != _RECORD or data.dtype != np.uint8:
        raise ValueError(
            f"{where}: expected 'data' of shape [N, {_RECORD}] uint8, got shape {data.shape} "
            f"dtype {data.dtype}"
        )
    if labels.shape != (data.shape[0],):
        raise ValueError(
            f"{where}: expected {data.shape[0]} labels, got an array of shape {labels.shape}"
        )
    return data, labels.astype(np.int32)


def _parse_binary_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(raw) % (_RECORD + 1):
        raise ValueError(
            f"{where}: size {len(raw)} bytes is not a multiple of the {_RECORD + 1}-byte record"
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, _RECORD + 1)
    return records[:, 1:], records[:, 0].astype(np.int32)


def _batch_files(path: Path) -> dict[str, bytes | Path]:
    """The batch files of a folder or tarball, by base name (bytes for a tarball, else paths)."""
    names = {*_TRAIN_BATCHES, _TEST_BATCH}
    if path.is_dir():
        return {f.name: f for f in path.iterdir() if f.is_file() and f.name.split(".")[0] in names}
    # Read members straight from the tarball (nothing is extracted, so no path traversal), in
    # one streaming pass: random access into a .gz would decompress it again for every member.
    files = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                if m.isfile() and Path(m.name).name.split(".")[0] in names:
                    files[Path(m.name).name] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(
            f"{path} is not a readable CIFAR-10 archive ({e}); delete it and download it again"
        ) from e
    return files


def read_cifar10(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads CIFAR-10 from one archive or extracted folder, in either official format.

    Args:
      path: ``cifar-10-python.tar.gz``, ``cifar-10-binary.tar.gz``, or an extracted
        ``cifar-10-batches-py/`` or ``cifar-10-batches-bin/`` folder. The format is told by the
        batch file names (``data_batch_1.bin`` means the binary format).

    Returns:
      ``(x_train [50000, 32, 32, 3] uint8 HWC, y_train [50000] int32, x_test [10000, 32, 32, 3]
      uint8, y_test [10000] int32)`` (smaller for smaller archives).

    Raises:
      ValueError: a batch file is missing or malformed.
    """
    path = Path(path)
    files = _batch_files(path)
    binary = f"{_TRAIN_BATCHES[0]}.bin" in files
    parse = _parse_binary_batch if binary else _parse_pickle_batch
    suffix = ".bin" if binary else ""

    def load(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        for name in names:
            blob = files.get(name + suffix)
            if blob is None:
                raise ValueError(
                    f"{path}: missing batch file {name + suffix!r} (found {sorted(files)}); "
                    "expected data_batch_1..5 and test_batch, as in the official archive"
                )
            raw = blob.read_bytes() if isinstance(blob, Path) else blob
            parts.append(parse(raw, f"{path}/{name}{suffix}"))
        data = np.concatenate([p[0] for p in parts])
        # Records are channel-major (CHW): 1,024 red, then green, then blue bytes.
        x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        return x, np.concatenate([p[1] for p in parts])

    x_train, y_train = load(_TRAIN_BATCHES)
    x_test, y_test = load((_TEST_BATCH,))
    return x_train, y_train, x_test, y_test


def find_cifar10(data_dir: str | os.PathLike) -> Path | None:
    """The first CIFAR-10 archive or extracted folder found in ``data_dir``, or None."""
    root = Path(data_dir)
    for name in (_PY_DIR, _PY_TAR, _BIN_DIR, _BIN_TAR):
        p = root / name
        if p.exists():
            return p
    return None


def _missing_message(data_dir: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found in {data_dir} ({reason}). Ways to provide it:\n"
        f"  1. download {CIFAR10_URL} (md5 {CIFAR10_MD5}) or "
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and put the .tar.gz file, or "
        f"its extracted {_PY_DIR}/ or {_BIN_DIR}/ folder, into {data_dir};\n"
        "  2. or point to the folder that holds it: set JAXUNLEARN_DATA=/path/to/folder, or pass "
        "data_dir=... to load_dataset (--data_dir in the experiment scripts);\n"
        '  3. or use TensorFlow Datasets (pip install -e ".[tfds]" in a checkout), prepare it with '
        "`tfds build cifar10`, then load_dataset('tfds:cifar10')."
    )


def _download(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Downloads ``url`` to ``dest`` atomically (temp file + rename) after an MD5 check."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ValueError(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def locate_or_download(data_dir: Path, download: bool) -> Path:
    """Finds the archive, downloading it when allowed; fails fast with instructions."""
    found = find_cifar10(data_dir)
    if found is not None:
        return found
    if not download:
        raise DatasetNotFoundError(_missing_message(data_dir, "download=False"))
    dest = data_dir / _PY_TAR
    try:
        _download(CIFAR10_URL, dest, CIFAR10_MD5, DOWNLOAD_TIMEOUT_S)
    except (OSError, ValueError) as e:  # URLError, timeouts and refused connections are OSErrors
        raise DatasetNotFoundError(
            _missing_message(data_dir, f"download from {CIFAR10_URL} failed: {e}")
        ) from e
    return dest
