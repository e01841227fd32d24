"""hwnas.data on tiny fake data sets written in the real formats (and the real Fashion-MNIST where installed)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from hwnas import data
from hwnas.data import DataInfo, find_fashion_mnist_gz, load_dataset, make_loader, prepare_fashion_mnist, search_split
from hwnas.errors import HwnasError

N_TRAIN, N_TEST = 20, 10


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test's data cache in its tmp_path, never in the user's home."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HWNAS_DATA", str(cache))
    return cache


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def fake_fashion_mnist(folder: Path, packed: bool = True) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST files in IDX format (gzip'd like the originals if ``packed``); returns the labels."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        labels[prefix] = rng.integers(0, 10, n)
        blobs = {
            f"{prefix}-images-idx3-ubyte": idx_images(rng.integers(0, 256, (n, 28, 28))),
            f"{prefix}-labels-idx1-ubyte": idx_labels(labels[prefix]),
        }
        for name, blob in blobs.items():
            if packed:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
    return labels


def fake_cifar10(root: Path, per_batch: int = 4) -> dict[str, list[int]]:
    """CIFAR-10's python format: pickled dicts of uint8 rows (3*32*32, channel-major) and labels.

    Written with pickle here only because that is the data set's own format. Keys are str, as the
    originals (pickled by Python 2) read back with ``encoding="latin1"``.
    """
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels[name] = rng.integers(0, 10, per_batch).tolist()
        batch = {"data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8), "labels": labels[name]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return labels


def fake_imagefolder(root: Path, classes=("cat", "dog"), per_class: int = 3) -> None:
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels, mode="RGB").save(root / split / c / f"{i}.png")


def raised(fn, *args, **kw) -> str:
    with pytest.raises(HwnasError) as info:
        fn(*args, **kw)
    message = str(info.value)
    assert "\n" not in message, "an error is one line"
    return message


# --- Fashion-MNIST -----------------------------------------------------------------------------------------


def test_prepare_unpacks_once_atomically(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path / "src")
    root = prepare_fashion_mnist(tmp_path / "c", source=tmp_path / "src")
    raw = root / "FashionMNIST" / "raw"
    assert root.parent == tmp_path / "c"
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.FASHION_MNIST_FILES)  # no temp file left
    mtimes = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    assert prepare_fashion_mnist(tmp_path / "c", source=tmp_path / "src") == root
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == mtimes


def test_prepare_keeps_sources_apart(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path / "a")
    fake_fashion_mnist(tmp_path / "b", packed=False)  # plain files are accepted too
    a = prepare_fashion_mnist(tmp_path / "c", source=tmp_path / "a")
    b = prepare_fashion_mnist(tmp_path / "c", source=tmp_path / "b")
    assert a != b
    for name in data.FASHION_MNIST_FILES:
        assert (a / "FashionMNIST/raw" / name).read_bytes() == (b / "FashionMNIST/raw" / name).read_bytes()


def test_load_fashion_mnist_from_gz(tmp_path: Path, _cache: Path) -> None:
    labels = fake_fashion_mnist(tmp_path / "src")
    train, info = load_dataset("fashion-mnist", data_dir=tmp_path / "src")
    test, _ = load_dataset("fashion-mnist", data_dir=tmp_path / "src", train=False)
    assert info == DataInfo("fashion-mnist", 10, 1, 28)
    assert (len(train), len(test)) == (N_TRAIN, N_TEST)
    x, _ = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert [train[i][1] for i in range(N_TRAIN)] == labels["train"].tolist()
    assert [test[i][1] for i in range(N_TEST)] == labels["t10k"].tolist()
    assert any(_cache.iterdir()), "the default cache is $HWNAS_DATA"


def test_load_fashion_mnist_resized(tmp_path: Path) -> None:
    fake_fashion_mnist(tmp_path / "src")
    ds, info = load_dataset("Fashion_MNIST", data_dir=tmp_path / "src", image_size=32)
    assert ds[0][0].shape == (1, 32, 32) and info.image_size == 32


@pytest.mark.parametrize("layout", ["root", "raw"])
def test_load_fashion_mnist_unpacked_in_place(tmp_path: Path, _cache: Path, layout: str) -> None:
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    labels = fake_fashion_mnist(raw, packed=False)
    ds, _ = load_dataset("fashion-mnist", data_dir=tmp_path / "tv" if layout == "root" else raw, train=False)
    assert [ds[i][1] for i in range(N_TEST)] == labels["t10k"].tolist()
    assert not _cache.exists(), "a torchvision root is read where it is, not copied"


def test_fashion_mnist_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    msg = raised(load_dataset, "fashion-mnist", data_dir=tmp_path / "empty")
    assert "lacks" in msg and "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "does not exist" in raised(load_dataset, "fashion-mnist", data_dir=tmp_path / "nowhere")

    bad = tmp_path / "bad"
    fake_fashion_mnist(bad)
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03 not labels"))
    assert "IDX magic number" in raised(load_dataset, "fashion-mnist", data_dir=bad)
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    assert "cannot unpack" in raised(load_dataset, "fashion-mnist", data_dir=bad)

    monkeypatch.setattr(data, "find_fashion_mnist_gz", lambda: None)
    msg = raised(load_dataset, "fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg


@pytest.mark.skipif(find_fashion_mnist_gz() is None, reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(_cache: Path) -> None:
    train, info = load_dataset()
    test, _ = load_dataset(train=False)
    assert (len(train), len(test), info.num_classes) == (60000, 10000, 10)
    assert len(set(train.targets.tolist())) == 10
    assert train[0][0].shape == (1, 28, 28)
    assert next(_cache.iterdir()).name.startswith("fashion-mnist-")


# --- CIFAR-10 and ImageFolder ------------------------------------------------------------------------------


def test_load_cifar10(tmp_path: Path) -> None:
    labels = fake_cifar10(tmp_path)
    train, info = load_dataset("cifar10", data_dir=tmp_path)
    test, _ = load_dataset("cifar-10", data_dir=tmp_path / "cifar-10-batches-py", train=False)
    assert info == DataInfo("cifar10", 10, 3, 32)
    assert (len(train), len(test)) == (20, 4)
    assert train[0][0].shape == (3, 32, 32)
    assert [train[i][1] for i in range(4)] == labels["data_batch_1"]
    assert [test[i][1] for i in range(4)] == labels["test_batch"]
    ds, info = load_dataset("cifar10", data_dir=tmp_path, image_size=16)
    assert ds[0][0].shape == (3, 16, 16) and info.image_size == 16


def test_cifar10_errors(tmp_path: Path) -> None:
    assert "needs a data dir" in raised(load_dataset, "cifar10")
    assert "does not exist" in raised(load_dataset, "cifar10", data_dir=tmp_path / "nowhere")
    msg = raised(load_dataset, "cifar10", data_dir=tmp_path)
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg and "test_batch" in msg
    fake_cifar10(tmp_path / "c")
    (tmp_path / "c/cifar-10-batches-py/test_batch").write_bytes(b"garbage")
    assert "cannot read CIFAR-10" in raised(load_dataset, "cifar10", data_dir=tmp_path / "c", train=False)


def test_load_imagefolder(tmp_path: Path) -> None:
    fake_imagefolder(tmp_path / "imgs")
    train, info = load_dataset("imagefolder", data_dir=tmp_path / "imgs")
    val, _ = load_dataset("imagefolder", data_dir=tmp_path / "imgs", train=False)
    assert info == DataInfo("imagefolder", 2, 3, 32)
    assert (len(train), len(val)) == (6, 6)
    assert train[0][0].shape == (3, 32, 32)
    assert sorted({train[i][1] for i in range(6)}) == [0, 1]
    flat, info = load_dataset("imagefolder", data_dir=tmp_path / "imgs" / "val", image_size=8)
    assert flat[0][0].shape == (3, 8, 8) and info.num_classes == 2


def test_imagefolder_errors(tmp_path: Path) -> None:
    assert "needs a data dir" in raised(load_dataset, "imagefolder")
    assert "does not exist" in raised(load_dataset, "imagefolder", data_dir=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert "not an ImageFolder" in raised(load_dataset, "imagefolder", data_dir=tmp_path / "empty")
    (tmp_path / "only_train" / "train" / "cat").mkdir(parents=True)
    assert "no val/" in raised(load_dataset, "imagefolder", data_dir=tmp_path / "only_train", train=False)


def test_unknown_dataset() -> None:
    msg = raised(load_dataset, "mnist-ish")
    assert "unknown data set" in msg and "fashion-mnist, cifar10, imagefolder" in msg


# --- search split and loaders ------------------------------------------------------------------------------


def test_search_split_disjoint_and_deterministic() -> None:
    ds = TensorDataset(torch.arange(101))
    w, a = search_split(ds, seed=0)
    assert set(w.indices).isdisjoint(a.indices)
    assert sorted([*w.indices, *a.indices]) == list(range(101))
    assert len(w) == 50 and len(a) == 51
    w2, a2 = search_split(ds, seed=0)
    assert (w2.indices, a2.indices) == (w.indices, a.indices)
    assert search_split(ds, seed=1)[0].indices != w.indices


def test_search_split_limit_and_fraction() -> None:
    ds = TensorDataset(torch.arange(100))
    w, a = search_split(ds, seed=3, fraction=0.75, limit=20)
    assert (len(w), len(a)) == (15, 5)
    assert set(w.indices).isdisjoint(a.indices)
    assert len(search_split(ds, seed=3, limit=1000)[0]) == 50  # a limit above the size uses everything
    assert "fraction" in raised(search_split, ds, 0, fraction=1.0)
    assert "limit" in raised(search_split, ds, 0, limit=1)


def test_make_loader_reproducible() -> None:
    ds = TensorDataset(torch.arange(64))

    def order(seed: int, shuffle: bool = True) -> list[int]:
        return torch.cat([b[0] for b in make_loader(ds, batch_size=8, shuffle=shuffle, seed=seed)]).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(0)) == list(range(64))
    assert order(0, shuffle=False) == list(range(64))
    loader = make_loader(ds, batch_size=8, shuffle=True, seed=0)
    first, second = (torch.cat([b[0] for b in loader]).tolist() for _ in range(2))
    assert first == order(0) and second != first  # each epoch reshuffles, from the same seeded sequence


def test_find_without_dpkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dpkg(*args, **kw):
        raise FileNotFoundError("dpkg")

    monkeypatch.setattr(data.subprocess, "run", no_dpkg)
    monkeypatch.setattr(data, "FASHION_MNIST_KNOWN_DIRS", (tmp_path / "pkg",))
    assert find_fashion_mnist_gz() is None
    fake_fashion_mnist(tmp_path / "pkg")
    found = find_fashion_mnist_gz()
    assert found is not None and [p.name for p in found] == [f"{n}.gz" for n in data.FASHION_MNIST_FILES]
