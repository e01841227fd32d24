"""Whole-network measurement and the LUT fidelity report.

``measure_beside`` and ``measure_rounds`` time whole networks end to end with the same backend,
threads, batch, reading and timing discipline as a LUT, in rounds across all networks (so slow
drift of the machine spreads over all of them), the former beside the networks the LUT's profile
timed whole (:func:`reference_nets`) to read the machine's drift since the profile;
``fidelity`` compares such measurements with the LUT's predictions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from hwnas.arch import Arch
from hwnas.checks import is_number
from hwnas.errors import HwnasError
from hwnas.lut import LUT, LutError
from hwnas.profiling import runner
from hwnas.profiling.profile import ProfileSettings, calibration_archs, check_target, loaders
from hwnas.profiling.runner import Job, Timed, TimingSettings
from hwnas.space import Space

Progress = Callable[[int, int, str], None]


TARGET_FIELDS = ("backend", "device", "threads", "batch")
# Rounds a fidelity report gives each validation network at least: its own noise must not blur the
# figures. On a shared 2-core VM, runs with 9 rounds showed half the disagreement between a
# measurement's even and odd rounds that runs with 5 did (1.4-2.1 % vs 2.5-4 % mean on DARTS
# networks of about 1 ms; separate runs on one noisy day).
VALIDATION_ROUNDS = 9


def settings_from_lut(lut: LUT, **override: Any) -> ProfileSettings:
    """The measurement settings a LUT was built with; ``rounds`` may be overridden (None = keep).

    Asking for another backend, device, thread count or batch than the LUT's is refused: a
    measurement under other settings than the prediction's compares nothing.
    """
    m = lut.meta
    base = {
        "backend": m["backend"], "device": m["device_kind"], "threads": int(m["threads"]),
        "batch": int(m["batch"]), "rounds": int(m.get("rounds", 3)),
        "reading": m.get("reading", "median"),  # LUTs from before the reading was recorded took medians
        "timing": TimingSettings(**m.get("timing", {})),
        "spinning": m.get("settings", {}).get("onnxruntime", {}).get("intra_op_spinning"),
    }  # fmt: skip
    for k, v in override.items():
        if v is None:
            continue
        if k in TARGET_FIELDS and v != base[k]:
            raise LutError(
                f"{lut.path or 'the LUT'} was measured with {k} {base[k]} but {k} {v} was asked; "
                f"drop --{k} to use the LUT's, or profile a LUT with --{k} {v}"
            )
        base[k] = v
    return ProfileSettings(**base)


def device_note(lut: LUT, s: ProfileSettings) -> str | None:
    """A note when the LUT was measured on another device than the one measuring now."""
    from hwnas.profiling.profile import device_name

    here = device_name(s)
    there = lut.meta.get("device")
    if there and there != here:
        return f"note: {lut.path or 'the LUT'} was measured on {there!r}; this machine is {here!r}"
    return None


def measure_rounds(archs: list[Arch], s: ProfileSettings, progress: Progress | None = None) -> list[list[float]]:
    """Each arch's per-round end-to-end latency reading (ms, ``s.reading``), rounds in order, on the
    target of ``s``.

    Each round's reading is divided by the machine's speed when it was timed, as a profile's are
    (:func:`hwnas.profiling.runner.speed_factors`; with fewer than 3 archs there is nothing to
    compare with, and the readings are as timed).
    """
    return measure_rounds_both(archs, s, progress)[0]


def measure_rounds_both(
    archs: list[Arch], s: ProfileSettings, progress: Progress | None = None
) -> tuple[list[list[float]], list[list[float]]]:
    """One measurement, two readings: :func:`measure_rounds`'s, and the same rounds as timed."""
    check_target(s)
    _, load_net = loaders(s)
    jobs = [Job(f"arch{i}", "model", (lambda a=a: load_net(a))) for i, a in enumerate(archs)]
    rows = runner.time_job_rows(jobs, s.rounds, s.effective_timing, progress)
    steady = runner.round_values(rows, reading=s.reading)
    timed = runner.round_values(rows, steady=False, reading=s.reading)
    return [steady[f"arch{i}"] for i in range(len(archs))], [timed[f"arch{i}"] for i in range(len(archs))]


def apart_pct(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """How far two sets of figures for the same networks are apart: the mean and the max of
    ``|a / b - 1|``, in percent (two halves of a measurement, two LUTs' predictions, ...)."""
    d = np.abs(np.asarray(a, dtype=float) / np.asarray(b, dtype=float) - 1) * 100
    return float(d.mean()), float(d.max())


def repeatability(rounds: list[list[float]]) -> dict[str, float | None] | None:
    """How well the measurement agrees with itself: each net's rounds split into two halves (even
    and odd rounds; with an odd count the even half has one more), each half summarised like the
    whole (median of its rounds), the halves compared.

    ``mean_diff_pct`` / ``max_diff_pct``: mean / max of ``|a / b - 1|`` (%); ``spearman``: the
    halves' rank correlation (None for fewer than 3 nets or a constant half). Each half has half
    the rounds and both are noisy, so the whole measurement's own noise is roughly half the mean
    difference; fidelity errors of that order are the machine's, not the LUT's. None with fewer
    than 2 rounds.

    ``spearman_ceiling``: an estimate of the rank correlation a perfect predictor would reach
    against the whole measurement, ``sqrt(2 r / (1 + r))`` for the halves' ``r`` (the
    Spearman-Brown reliability of the whole; its square root is the whole's correlation with the
    networks' true times). An approximation: it treats ranks like values and the halves as equal
    (with an odd count of rounds they are not), and slow drift the interleaved halves share
    counts as agreement, so on a drifting machine it reads high. None where ``r`` is None or not
    positive.
    """
    if not rounds or min(len(r) for r in rounds) < 2:
        return None
    a = np.array([np.median(r[0::2]) for r in rounds])
    b = np.array([np.median(r[1::2]) for r in rounds])
    mean, most = apart_pct(a, b)
    rho: float | None = None
    if len(a) >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0:
        rho = float(stats.spearmanr(a, b).statistic)
    ceiling = math.sqrt(2 * rho / (1 + rho)) if rho is not None and rho > 0 else None
    return {"mean_diff_pct": mean, "max_diff_pct": most, "spearman": rho, "spearman_ceiling": ceiling}


def onnx_loader(path: Path, s: ProfileSettings, shown: Path | None = None) -> Callable[[], Timed]:
    """What times an ONNX file with ONNX Runtime under the settings ``s`` (a fresh session per call).
    A file ONNX Runtime cannot load or run (not ONNX, an op or input type it lacks) raises
    :class:`HwnasError` naming ``shown`` (default ``path``; e.g. the user's file for a timing copy)."""
    name = shown or path
    if s.backend != "onnxruntime":
        raise HwnasError(f"{name}: an ONNX file is measured with --backend onnxruntime, not {s.backend}")

    def load() -> Timed:
        try:
            return runner.OrtModel(str(path), s.threads, s.device, spinning=s.ort_spinning)
        except runner.ProviderError:
            raise
        except Exception as e:  # ONNX Runtime's load and run errors derive from Exception only
            raise HwnasError(
                f"{name}: ONNX Runtime cannot load or run it ({runner.first_line(e)}); measure a float-input model "
                "`hwnas export` wrote"
            ) from None

    return load


def measure_beside(
    models: list[Arch | Callable[[], Timed]],
    refs: list[tuple[Arch, float]],
    s: ProfileSettings,
    progress: Progress | None = None,
    timing: TimingSettings | None = None,
) -> tuple[list[float], float | None]:
    """Time ``models`` (archs, built on ``s``'s backend, or loaders such as :func:`onnx_loader`)
    and the reference networks ``refs`` (:func:`reference_nets`) in the same rounds under ``s``.

    Returns each model's latency (ms: the median over rounds of its readings, corrected for the
    machine's changing speed when there are 3 or more jobs to compare) and the machine's drift
    since the profile: the median over the references of ``now / recorded`` (above 1: slower
    now), None without references. ``latency / drift`` is the model at the profile's speed,
    the figure a prediction from that LUT is comparable with. ``timing``: instead of ``s``'s.
    """
    check_target(s)
    _, load_net = loaders(s)
    nets = [(lambda m=m: load_net(m)) if isinstance(m, Arch) else m for m in models]
    nets += [lambda a=a: load_net(a) for a, _ in refs]
    jobs = [Job(f"model{i}" if i < len(models) else f"ref{i - len(models)}", "model", f) for i, f in enumerate(nets)]
    by = runner.time_jobs(jobs, s.rounds, timing or s.effective_timing, progress, reading=s.reading)
    figures = [float(np.median(by[j.name])) for j in jobs]
    return figures[: len(models)], drift_of(figures[len(models) :], refs)


def drift_of(now: list[float], refs: list[tuple[Arch, float]]) -> float | None:
    """How much slower (> 1) the machine runs now than during the profile: the median over the
    reference networks of their time now (``now``, ms) over the time the LUT recorded."""
    return float(np.median([n / then for n, (_, then) in zip(now, refs, strict=True)])) if refs else None


def drift_against(timed: Sequence[tuple[Arch, float]], lut: LUT, space: Space) -> float | None:
    """How much slower (> 1) the machine runs now than during ``lut``'s profile, read from networks
    timed now (``timed``: each network and its time, ms) that are also ``lut``'s reference
    networks (:func:`reference_nets`; a profile with the same seed has the same ones), each
    matched by network, not by position. None when they share none."""
    now, refs = [], []
    for a, then in reference_nets(space, lut):
        t = next((t for r, t in timed if r == a), None)
        if t is not None:
            now.append(t)
            refs.append((a, then))
    return drift_of(now, refs)


def _stats(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    err = (predicted / measured - 1) * 100
    e = np.abs(err)
    return {
        "mape_pct": float(e.mean()),
        "max_error_pct": float(e.max()),
        "within_5pct": float((e <= 5).mean()),
        "within_10pct": float((e <= 10).mean()),
        "spearman": float(stats.spearmanr(predicted, measured).statistic),
        "kendall": float(stats.kendalltau(predicted, measured).statistic),
        "bias_pct": float(err.mean()),
    }


@dataclass(frozen=True)
class Fidelity:
    """Predicted vs measured latency of random networks of a space (ms, %).

    ``drift`` is how much slower (>1) or faster the machine runs now than when the LUT was
    measured: the median ratio of the networks the LUT's profile timed whole (its probe and
    calibration networks, :func:`reference_nets`) re-measured now, in the same rounds as the
    validation networks, to their times in the LUT's metadata. The ``corrected`` figures
    scale the predictions by it, separating the predictor's error from the machine's drift.
    ``repeat`` is the measurement's agreement with itself (:func:`repeatability`), the floor
    under which the figures say nothing about the LUT.
    """

    predicted: list[float]
    measured: list[float]
    drift: float | None
    profile_seconds: float | None
    repeat: dict[str, float | None] | None = None
    measured_as_timed: list[float] | None = None  # the same rounds without the speed correction
    repeat_as_timed: dict[str, float | None] | None = None
    references: tuple[tuple[Arch, float], ...] = ()  # the reference networks and their times now (ms)

    def drift_for(self, lut: LUT, space: Space) -> float | None:
        """The drift of another LUT of the same space since its profile, read from this
        measurement's reference networks (:func:`drift_against`), so that two LUTs are judged
        against one measurement without timing anything again."""
        return drift_against(self.references, lut, space)

    def summary(self) -> dict[str, Any]:
        p, m = np.array(self.predicted), np.array(self.measured)
        out: dict[str, Any] = {"nets": len(m), **_stats(p, m)}
        if self.drift is not None:
            out["drift"] = self.drift
            out["corrected"] = _stats(p * self.drift, m)
        out["measured_range_ms"] = [float(m.min()), float(m.max())]
        if self.repeat is not None:
            out["repeatability"] = self.repeat
        if self.measured_as_timed is not None:
            out["as_timed"] = {**_stats(p, np.array(self.measured_as_timed)), "repeatability": self.repeat_as_timed}
        out["profile_seconds"] = self.profile_seconds
        return out


def reference_nets(space: Space, lut: LUT, calibration: bool = True) -> list[tuple[Arch, float]]:
    """The networks the LUT's profile timed whole, with the times its metadata recorded (ms): its
    probe networks and (``calibration``) its random calibration networks, drawn again from the
    profile's seed (:func:`hwnas.profiling.profile.calibration_archs`).

    A network is left out where the LUT does not predict it as the profile's fit did (relative
    difference above 1e-4: the space file or its sampler changed since, so the network drawn now
    is not the one timed then). The calibration networks are random networks like the ones a
    search derives: re-timed beside the probe networks, they read the machine's drift since the
    profile closer to what such networks see (``bench/drift_refs.py``)."""
    recorded = {n["name"]: n for n in lut.meta["model"].get("nets", [])}
    nets = space.probe_archs()
    if calibration:
        seed, n = lut.meta.get("seed"), lut.meta.get("calib_nets")
        nets += calibration_archs(space, seed, n) if isinstance(seed, int) and isinstance(n, int) else []
    out = []
    for name, a in nets:
        r = recorded.get(name)
        if r is None or not _predicts_as_recorded(lut, a, r.get("predicted_ms")):
            continue
        out.append((a, r["measured_ms"]))
    return out


def _predicts_as_recorded(lut: LUT, arch: Arch, recorded_ms: Any) -> bool:
    """Whether ``lut`` predicts ``arch`` as its profile's fit recorded (True where nothing was)."""
    if not is_number(recorded_ms):
        return True
    try:
        return math.isclose(lut.predict(arch).total_ms, recorded_ms, rel_tol=1e-4)
    except LutError:
        return False


def fidelity(
    space: Space, lut: LUT, n: int, seed: int, s: ProfileSettings, progress: Progress | None = None
) -> Fidelity:
    """Sample ``n`` random archs of ``space`` (seeded), predict with ``lut``, measure each.

    The LUT's reference networks (:func:`reference_nets`) are measured in the same rounds to
    estimate the machine's drift.
    ``measured`` is corrected for the machine's changing speed (:func:`measure_rounds`);
    ``measured_as_timed`` / ``repeat_as_timed`` are the same rounds without that correction.
    """
    if n < 3:
        raise HwnasError(f"--nets must be at least 3 for rank correlations, got {n}")
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(n)]
    predicted = [lut.predict(a).total_ms for a in archs]  # fails before measuring if keys are missing
    refs = reference_nets(space, lut)
    rounds, timed = measure_rounds_both(archs + [a for a, _ in refs], s, progress)
    measured = [float(np.median(r)) for r in rounds]
    drift = drift_of(measured[n:], refs)
    return Fidelity(
        predicted, measured[:n], drift, lut.meta.get("profile_seconds"), repeatability(rounds[:n]),
        [float(np.median(r)) for r in timed[:n]], repeatability(timed[:n]),
        tuple((a, t) for (a, _), t in zip(refs, measured[n:], strict=True)),
    )  # fmt: skip
