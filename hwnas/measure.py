"""Whole-network measurement and the LUT fidelity report.

``measure_archs`` times whole networks end to end with the same backend, threads, batch and
timing discipline as a LUT, in rounds across all networks (so slow drift of the machine spreads
over all of them); ``fidelity`` compares those measurements with the LUT's predictions.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from hwnas.arch import Arch
from hwnas.errors import HwnasError
from hwnas.lut import LUT
from hwnas.profiling import runner
from hwnas.profiling.profile import ProfileSettings, check_target, loaders
from hwnas.profiling.runner import Job, TimingSettings, read_rows, round_medians
from hwnas.space import Space

Progress = Callable[[int, int, str], None]


def settings_from_lut(lut: LUT, **override: Any) -> ProfileSettings:
    """The measurement settings a LUT was built with, optionally overridden (None = keep)."""
    m = lut.meta
    base = {
        "backend": m["backend"], "device": m["device_kind"], "threads": int(m["threads"]),
        "batch": int(m["batch"]), "rounds": int(m.get("rounds", 3)),
        "timing": TimingSettings(**m.get("timing", {})),
    }  # fmt: skip
    base.update({k: v for k, v in override.items() if v is not None})
    return ProfileSettings(**base)


def measure_archs(archs: list[Arch], s: ProfileSettings, progress: Progress | None = None) -> list[float]:
    """Median-of-round-medians end-to-end latency (ms) of each arch on the target of ``s``."""
    check_target(s)
    _, load_net = loaders(s)
    jobs = [Job(f"arch{i}", "op", (lambda a=a: load_net(a))) for i, a in enumerate(archs)]
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.csv"
        runner.run_jobs(jobs, s.rounds, s.timing, results, progress)
        med = round_medians(read_rows(results))
    return [med[f"arch{i}"] for i in range(len(archs))]


def measure_onnx(path: Path, s: ProfileSettings, progress: Progress | None = None) -> float:
    """End-to-end latency (ms) of an ONNX file with ONNX Runtime under the settings ``s``."""
    if s.backend != "onnxruntime":
        raise HwnasError(f"{path}: an ONNX file is measured with --backend onnxruntime, not {s.backend}")
    check_target(s)
    job = Job("model", "op", lambda: runner.OrtModel(str(path), s.threads, s.device))
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.csv"
        runner.run_jobs([job], s.rounds, s.timing, results, progress)
        return round_medians(read_rows(results))["model"]


@dataclass(frozen=True)
class Fidelity:
    """Predicted vs measured latency of random networks of a space (ms, %)."""

    predicted: list[float]
    measured: list[float]
    profile_seconds: float | None

    @property
    def errors_pct(self) -> np.ndarray:
        return (np.array(self.predicted) / np.array(self.measured) - 1) * 100

    def summary(self) -> dict[str, Any]:
        e = np.abs(self.errors_pct)
        return {
            "nets": len(e),
            "mape_pct": float(e.mean()),
            "max_error_pct": float(e.max()),
            "within_5pct": float((e <= 5).mean()),
            "within_10pct": float((e <= 10).mean()),
            "spearman": float(stats.spearmanr(self.predicted, self.measured).statistic),
            "kendall": float(stats.kendalltau(self.predicted, self.measured).statistic),
            "bias_pct": float(self.errors_pct.mean()),
            "measured_range_ms": [float(min(self.measured)), float(max(self.measured))],
            "profile_seconds": self.profile_seconds,
        }


def fidelity(
    space: Space, lut: LUT, n: int, seed: int, s: ProfileSettings, progress: Progress | None = None
) -> Fidelity:
    """Sample ``n`` random archs of ``space`` (seeded), predict with ``lut``, measure each."""
    if n < 3:
        raise HwnasError(f"--nets must be at least 3 for rank correlations, got {n}")
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(n)]
    predicted = [lut.predict(a).total_ms for a in archs]  # fails before measuring if keys are missing
    measured = measure_archs(archs, s, progress)
    return Fidelity(predicted, measured, lut.meta.get("profile_seconds"))
