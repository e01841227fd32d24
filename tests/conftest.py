"""Shared fixtures: fast timing settings and a real (tiny) LUT measured once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hwnas.lut import LUT
from hwnas.profiling.profile import ProfileSettings, profile
from hwnas.profiling.runner import TimingSettings
from hwnas.space import load_space

# One intra-op thread: tests are behaviour, not speed, and two processes each spinning two OpenMP
# threads on a 2-core machine slow each other down tenfold.
torch.set_num_threads(1)

# A real ProxylessNAS LUT of 23 November 2026 (1 input channel, 10 classes; from before the role
# columns): the one tests/data/quickstart_run searched with, and the format older LUTs have.
LEGACY_LUT = Path(__file__).parent / "data" / "lut_2026-11-23" / "cpu-onnxruntime-t1__proxyless-224-1ch-10cls.csv"

# Real timing, but short: tests check behaviour, benchmarks in bench/ check figures.
FAST = TimingSettings(
    warmup_ms=1.0, min_warmup_runs=1, target_ms=1.0, min_runs=3, max_runs=50, profile_runs=3, op_target_ms=1.0
)


def fast_settings(**kw) -> ProfileSettings:
    return ProfileSettings(**{"rounds": 1, "max_rounds": 1, "calib_nets": 2, "timing": FAST, **kw})


FAST_TARGET_TOML = """
backend = "onnxruntime"
device = "cpu"
threads = 1
rounds = 1
max_rounds = 1
calib_nets = 2
[timing]
warmup_ms = 1.0
min_warmup_runs = 1
target_ms = 1.0
op_target_ms = 1.0
min_runs = 3
profile_runs = 3
"""


@pytest.fixture(scope="session")
def tiny_lut_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lut") / "tiny.csv"
    profile(load_space("tiny"), fast_settings(), path)
    return path


@pytest.fixture()
def tiny_lut(tiny_lut_path: Path) -> LUT:
    return LUT.load(tiny_lut_path)


@pytest.fixture()
def fast_target(tmp_path: Path) -> Path:
    p = tmp_path / "fast.toml"
    p.write_text(FAST_TARGET_TOML)
    return p


def write_fake_fashion_mnist(folder: Path, n_train: int = 64, n_test: int = 16, seed: int = 0) -> Path:
    """Tiny Fashion-MNIST look-alike: the four original file names, IDX format, gzip'd; labels
    follow the image brightness so a few steps of training can learn something."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = np.clip(rng.normal(labels[:, None, None] * 25, 20, (n, 28, 28)), 0, 255)
        blobs = {
            f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 2051, n, 28, 28) + images.astype(np.uint8).tobytes(),
            f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes(),
        }
        for name, blob in blobs.items():
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
    return folder
