"""Shared fixtures: fast timing settings and a real (tiny) LUT measured once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwnas.lut import LUT
from hwnas.profiling.profile import ProfileSettings, profile
from hwnas.profiling.runner import TimingSettings
from hwnas.space import load_space

# Real timing, but short: tests check behaviour, benchmarks in bench/ check figures.
FAST = TimingSettings(warmup_ms=1.0, min_warmup_runs=1, target_ms=1.0, min_runs=3, max_runs=50, profile_runs=3)


def fast_settings(**kw) -> ProfileSettings:
    return ProfileSettings(**{"rounds": 1, "calib_nets": 2, "timing": FAST, **kw})


FAST_TARGET_TOML = """
backend = "onnxruntime"
device = "cpu"
threads = 1
rounds = 1
calib_nets = 2
[timing]
warmup_ms = 1.0
min_warmup_runs = 1
target_ms = 1.0
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
