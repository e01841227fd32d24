"""The validation the paired benches (``reading_ab.py``, ``calib_nets.py``, ``fused_relu_ab.py``)
share: ``n`` random networks of a space (the seed of ``bench/fidelity.py``) and the space's probe
networks, timed whole in ``VALIDATION_ROUNDS`` rounds once and kept in ``validation.json``, then
read against any number of LUTs built from journals timed beside it. Not a script.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.arch import Arch
from hwnas.lut import LUT
from hwnas.measure import VALIDATION_ROUNDS, Fidelity, drift_of, reference_nets, repeatability, validation_archs
from hwnas.profiling import runner
from hwnas.profiling.runner import Job, Timed, TimingSettings
from hwnas.space import Space


def f4(v: float | None) -> str:
    """A rank figure as the benches print it: 4 decimals, ``n/a`` where there is none."""
    return "n/a" if v is None else f"{v:.4f}"


@dataclass(frozen=True)
class Validation:
    """The validation's networks and its journal rows (the random networks first, ``arch0`` ...,
    then the probe networks in the order of :meth:`Space.probe_archs`)."""

    space: Space
    archs: list[Arch]
    rows: list[dict[str, str]]

    def read(self, reading: str) -> tuple[list[float], float]:
        """Each network's time (ms, the median over rounds of ``reading``, speed-corrected) and the
        random networks' self-diff (%, even vs odd rounds)."""
        rounds = self._rounds(reading)
        return [float(np.median(r)) for r in rounds], self._repeat(rounds).get("mean_diff_pct", float("nan"))

    def ceiling(self, reading: str) -> float:
        """The Spearman a perfect LUT would read against the random networks' times
        (:func:`hwnas.measure.repeatability`'s ``spearman_ceiling``; nan where there is none)."""
        return self._repeat(self._rounds(reading)).get("spearman_ceiling") or float("nan")

    def _rounds(self, reading: str) -> list[list[float]]:
        by = runner.round_values(self.rows, reading=reading)
        return [by[f"arch{i}"] for i in range(len(self.archs) + len(self.space.probe_archs()))]

    def _repeat(self, rounds: list[list[float]]) -> dict[str, Any]:
        return repeatability(rounds[: len(self.archs)]) or {}

    def figures(self, lut: LUT, measured: list[float]) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """``lut``'s predictions of the random networks, and its fidelity figures as
        ``validate-lut`` computes them: raw, and drift-corrected (the raw ones when there is no drift).
        Every LUT read here recorded every probe network, in the order the validation timed them; the
        drift is read from them alone (``validate-lut`` also re-times the calibration networks, which
        the stored validations did not time; ``bench/drift_refs.py`` compares the two)."""
        n = len(self.archs)
        predicted = np.array([lut.predict(x).total_ms for x in self.archs])
        drift = drift_of(measured[n:], reference_nets(self.space, lut, calibration=False))
        r = Fidelity(list(predicted), measured[:n], drift, None).summary()
        return predicted, r, r.get("corrected", r)


def validation(
    out: Path, space: Space, nets: int, seed: int, load_net: Callable[[Arch], Timed], timing: TimingSettings
) -> Validation:
    """``out/validation.json``'s validation of ``space``, timed first if it is not there."""
    archs = validation_archs(space, nets, seed)
    path = out / "validation.json"
    if not path.exists():
        models = archs + [x for _, x in space.probe_archs()]
        jobs = [Job(f"arch{i}", "model", (lambda x=x: load_net(x))) for i, x in enumerate(models)]
        t0 = time.perf_counter()
        runner.write_json_atomic(path, runner.time_job_rows(jobs, VALIDATION_ROUNDS, timing))
        print(f"{path}: {time.perf_counter() - t0:.0f} s", flush=True)
    return Validation(space, archs, json.loads(path.read_text()))
