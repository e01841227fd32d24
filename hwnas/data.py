"""Data sets for the architecture search, read offline only: nothing here ever downloads.

Three sources, chosen by name in :func:`load_dataset`:

``fashion-mnist`` (default)
    The four original ``.gz`` files of Debian's package ``dataset-fashion-mnist`` (or of a
    ``--data-dir``), unpacked once into a data cache because torchvision reads them only
    uncompressed under ``<root>/FashionMNIST/raw/``. Cache: ``$HWNAS_DATA`` if set, else
    ``~/.cache/hwnas/data``.
``cifar10``
    CIFAR-10 in its python format: ``<data-dir>/cifar-10-batches-py/``.
``imagefolder``
    Any torchvision ``ImageFolder`` tree (one sub-folder per class); ``train/`` and ``val/``
    (or ``test/``) sub-folders are used for the two splits where present.

:func:`search_split` splits a training set into the two disjoint halves of a DARTS-style bilevel
search (weights / architecture) and :func:`make_loader` makes a loader whose order is a function
of its seed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from hwnas.errors import HwnasError

DATASETS = ("fashion-mnist", "cifar10", "imagefolder")
DEFAULT_DATASET = "fashion-mnist"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
# The four files in the order train images, train labels, test images, test labels.
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Where the Debian package puts them, used when `dpkg -L` is not available.
FASHION_MNIST_KNOWN_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
IDX_MAGIC = {"images": 2051, "labels": 2049}  # big-endian uint8 IDX: 3 dims for images, 1 for labels
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGEFOLDER_DEFAULT_SIZE = 32  # pixels: ImageFolder images have no native size, so they are resized to this

# Per-channel mean and std of the training pixels in [0, 1]; ImageFolder uses ImageNet's.
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

HOW_TO_GET_FASHION_MNIST = (
    f"run `apt-get install {FASHION_MNIST_PACKAGE}` or pass --data-dir with the four Fashion-MNIST files "
    "(train-images-idx3-ubyte.gz, ...) or the FashionMNIST/raw folder"
)


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a data set: ``image_size`` in pixels (height == width)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int


def default_cache_dir() -> Path:
    """The data cache: ``$HWNAS_DATA`` if set, else ``~/.cache/hwnas/data``."""
    env = os.environ.get("HWNAS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hwnas" / "data"


def find_fashion_mnist_gz() -> list[Path] | None:
    """The four ``.gz`` files of Debian's ``dataset-fashion-mnist`` package, or None if it is absent.

    Asks ``dpkg -L`` where the package put them, falling back to the known install folders.
    Order: train images, train labels, test images, test labels (:data:`FASHION_MNIST_FILES`).
    """
    wanted = {f"{name}.gz" for name in FASHION_MNIST_FILES}
    found: dict[str, Path] = {}
    try:
        listing = subprocess.run(
            ["dpkg", "-L", FASHION_MNIST_PACKAGE], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        listing = None
    if listing is not None and listing.returncode == 0:
        for line in listing.stdout.splitlines():
            path = Path(line.strip())
            if path.name in wanted and path.is_file():
                found.setdefault(path.name, path)
    for folder in FASHION_MNIST_KNOWN_DIRS:
        for name in wanted - found.keys():
            if (folder / name).is_file():
                found[name] = folder / name
    if len(found) < len(wanted):
        return None
    return [found[f"{name}.gz"] for name in FASHION_MNIST_FILES]


def _source_files(source: Path) -> list[Path]:
    """The four Fashion-MNIST files in ``source``, each plain or ``.gz`` (plain preferred)."""
    if not source.is_dir():
        raise HwnasError(f"Fashion-MNIST data dir {source} does not exist; {HOW_TO_GET_FASHION_MNIST}")
    files, missing = [], []
    for name in FASHION_MNIST_FILES:
        plain, packed = source / name, source / f"{name}.gz"
        if plain.is_file():
            files.append(plain)
        elif packed.is_file():
            files.append(packed)
        else:
            missing.append(f"{name}[.gz]")
    if missing:
        raise HwnasError(
            f"Fashion-MNIST data dir {source} lacks {', '.join(missing)}: it must hold the four files "
            f"{', '.join(FASHION_MNIST_FILES)} (each may be .gz) or FashionMNIST/raw/ with them"
        )
    return files


def _cache_key(files: Sequence[Path]) -> str:
    """A short digest of where the source files are and which versions they are (size, mtime)."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _check_idx_header(head: bytes, name: str, origin: Path) -> None:
    kind = "images" if "images" in name else "labels"
    magic = int.from_bytes(head[:4], "big") if len(head) >= 4 else None
    if magic != IDX_MAGIC[kind]:
        raise HwnasError(
            f"{origin} is not a Fashion-MNIST {kind} file (IDX magic number {magic}, expected {IDX_MAGIC[kind]}); "
            f"{HOW_TO_GET_FASHION_MNIST}"
        )


def _unpack(origin: Path, dest: Path) -> None:
    """Write ``origin`` (gzip or plain) uncompressed to ``dest`` atomically: a temp file beside, then rename."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        opener = gzip.open if origin.suffix == ".gz" else open
        with os.fdopen(fd, "wb") as out, opener(origin, "rb") as src:
            head = src.read(4)
            _check_idx_header(head, dest.name, origin)
            out.write(head)
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, dest)
    except (OSError, EOFError, zlib.error) as e:
        raise HwnasError(f"cannot unpack {origin} into {dest.parent}: {e}; {HOW_TO_GET_FASHION_MNIST}") from e
    finally:
        tmp.unlink(missing_ok=True)


def prepare_fashion_mnist(cache: Path | None = None, source: Path | None = None) -> Path:
    """Make Fashion-MNIST readable by torchvision and return the root to pass to ``FashionMNIST(root)``.

    ``source`` is a folder holding the four files (each plain or ``.gz``); None means the Debian
    package's files (:func:`find_fashion_mnist_gz`). They are unpacked once into
    ``<cache>/fashion-mnist-<digest>/FashionMNIST/raw/``, the digest naming the source files and
    their versions, so a later call with the same source reuses them untouched and another source
    never mixes with them. ``cache`` defaults to :func:`default_cache_dir`. Each file is written
    atomically, so an interrupted run leaves no partial file behind.

    Raises HwnasError if the package is absent (no ``source``), the source lacks a file, a file is
    not in the IDX format, or the cache is not writable.
    """
    if source is None:
        files = find_fashion_mnist_gz()
        if files is None:
            raise HwnasError(
                f"Fashion-MNIST not found: Debian's package {FASHION_MNIST_PACKAGE} is absent; "
                f"{HOW_TO_GET_FASHION_MNIST}"
            )
    else:
        files = _source_files(Path(source))
    cache = Path(cache) if cache is not None else default_cache_dir()
    root = cache / f"fashion-mnist-{_cache_key(files)}"
    raw = root / "FashionMNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HwnasError(f"cannot create the data cache {raw}: {e}; set HWNAS_DATA to a writable folder") from e
    for origin, name in zip(files, FASHION_MNIST_FILES, strict=True):
        if not (raw / name).is_file():
            _unpack(origin, raw / name)
    return root


def _fashion_mnist_root(data_dir: Path | None) -> Path:
    """A torchvision root for Fashion-MNIST: ``data_dir`` itself where it is one (or its raw folder), else prepared."""
    if data_dir is None:
        return prepare_fashion_mnist()
    if not data_dir.is_dir():
        raise HwnasError(f"data dir {data_dir} does not exist; {HOW_TO_GET_FASHION_MNIST}")

    def has_raw(raw: Path) -> bool:
        return all((raw / name).is_file() for name in FASHION_MNIST_FILES)

    if has_raw(data_dir / "FashionMNIST" / "raw"):
        return data_dir
    if data_dir.name == "raw" and data_dir.parent.name == "FashionMNIST" and has_raw(data_dir):
        return data_dir.parent.parent
    return prepare_fashion_mnist(source=data_dir)


class _OfflineCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10 that checks its files exist instead of their checksums.

    So a subset or re-packed copy in the same format loads too. The class names are CIFAR-10's
    fixed ten, so ``batches.meta`` is not needed.
    """

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        self.classes = list(CIFAR10_CLASSES)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def _cifar10_root(data_dir: Path | None) -> Path:
    how = f"pass --data-dir with the folder holding {CIFAR10_FOLDER}/ (CIFAR-10, python version)"
    if data_dir is None:
        raise HwnasError(f"cifar10 needs a data dir: {how}")
    if not data_dir.is_dir():
        raise HwnasError(f"data dir {data_dir} does not exist; {how}")
    root = data_dir.parent if data_dir.name == CIFAR10_FOLDER else data_dir
    folder = root / CIFAR10_FOLDER
    missing = [n for n in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES if not (folder / n).is_file()]
    if missing:
        expected = ", ".join(f"{CIFAR10_FOLDER}/{n}" for n in missing)
        raise HwnasError(f"data dir {data_dir} lacks {expected}; {how}: data_batch_1..5 and test_batch")
    return root


def _imagefolder_dir(data_dir: Path | None, train: bool) -> Path:
    how = "pass --data-dir with an ImageFolder tree (one sub-folder of images per class; optional train/ and val/)"
    if data_dir is None:
        raise HwnasError(f"imagefolder needs a data dir: {how}")
    if not data_dir.is_dir():
        raise HwnasError(f"data dir {data_dir} does not exist; {how}")
    if not (data_dir / "train").is_dir():
        return data_dir
    if train:
        return data_dir / "train"
    for name in ("val", "test"):
        if (data_dir / name).is_dir():
            return data_dir / name
    raise HwnasError(f"data dir {data_dir} has train/ but no val/ or test/ for the evaluation split; add val/")


def _transform(image_size: int | None, mean: Sequence[float], std: Sequence[float]) -> transforms.Compose:
    steps: list = [transforms.Resize((image_size, image_size))] if image_size is not None else []
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(mean, std)])


def load_dataset(
    name: str = DEFAULT_DATASET, data_dir: Path | None = None, train: bool = True, image_size: int | None = None
) -> tuple[Dataset, DataInfo]:
    """Load a data set split offline; items are ``(image, label)``: a float tensor (C, H, W), an int.

    ``name``: one of :data:`DATASETS` (``_`` and ``-`` alike, any case). ``data_dir``: where the
    files are; optional for Fashion-MNIST (default: Debian's package via the cache), required for
    the others (see the module docstring). ``train``: the training split, else the test / val one.
    ``image_size`` (pixels): resize to a square of this side; None keeps the native size (28 for
    Fashion-MNIST, 32 for CIFAR-10) or, for ImageFolder, uses 32. Images are then scaled to [0, 1]
    and normalised with the data set's per-channel mean and std.

    Raises HwnasError for an unknown name, a missing data dir, a data dir without the expected
    files, or Fashion-MNIST with neither the Debian package nor a data dir.
    """
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise HwnasError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if image_size is not None and image_size < 1:
        raise HwnasError(f"image size must be a positive number of pixels, got {image_size}")
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None

    if key == "fashion-mnist":
        root = _fashion_mnist_root(data_dir)
        ds: Dataset = datasets.FashionMNIST(
            root, train=train, download=False, transform=_transform(image_size, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        )
        return ds, DataInfo(key, 10, 1, image_size or 28)
    if key == "cifar10":
        root = _cifar10_root(data_dir)
        try:
            ds = _OfflineCIFAR10(
                root, train=train, download=False, transform=_transform(image_size, CIFAR10_MEAN, CIFAR10_STD)
            )
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError) as e:
            raise HwnasError(
                f"cannot read CIFAR-10 from {root / CIFAR10_FOLDER}: {e!r}; expected the python version"
            ) from e
        return ds, DataInfo(key, len(ds.classes), 3, image_size or 32)

    folder = _imagefolder_dir(data_dir, train)
    size = image_size or IMAGEFOLDER_DEFAULT_SIZE
    try:
        ds = datasets.ImageFolder(folder, transform=_transform(size, IMAGENET_MEAN, IMAGENET_STD))
    except FileNotFoundError as e:
        raise HwnasError(
            f"data dir {folder} is not an ImageFolder tree ({e}); expected one sub-folder of images per class"
        ) from e
    return ds, DataInfo(key, len(ds.classes), 3, size)


def search_split(dataset: Dataset, seed: int, fraction: float = 0.5, limit: int | None = None) -> tuple[Subset, Subset]:
    """Split a training set into two disjoint parts for a bilevel search: (weights, architecture).

    DARTS-style: the weights are trained on the first part, the architecture on the second, both
    taken from the training split (the test split stays unseen). Examples are drawn by a seeded
    permutation, so the split is a function of ``(len(dataset), seed, fraction, limit)`` only.
    ``fraction``: the weights part's share, in (0, 1). ``limit``: use at most this many examples in
    all (for quick runs and tests); None uses the whole set. Both parts hold at least one example.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if not 0.0 < fraction < 1.0:
        raise HwnasError(f"search split fraction must be between 0 and 1 (exclusive), got {fraction}")
    if limit is not None and limit < 2:
        raise HwnasError(f"search split limit must be at least 2 examples, got {limit}")
    total = n if limit is None else min(limit, n)
    if total < 2:
        raise HwnasError(f"cannot split a data set of {n} example(s) in two for the search; it needs at least 2")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)[:total].tolist()
    n_weights = min(max(int(total * fraction), 1), total - 1)
    return Subset(dataset, sorted(order[:n_weights])), Subset(dataset, sorted(order[n_weights:]))


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; the other RNGs a transform may use follow it.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int, workers: int = 0) -> DataLoader:
    """A DataLoader whose shuffling comes from a ``torch.Generator`` seeded with ``seed``.

    Two loaders made with the same arguments yield the same batches in the same order, epoch by
    epoch (each new epoch of one loader reshuffles). ``workers``: loader processes (0: in this one).
    """
    if batch_size < 1:
        raise HwnasError(f"batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise HwnasError(f"data loader workers must be 0 or more, got {workers}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        worker_init_fn=_seed_worker if workers > 0 else None,
    )
