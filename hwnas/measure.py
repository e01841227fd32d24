"""Whole-network measurement and the LUT fidelity report.

``measure_beside`` and ``measure_rounds`` time whole networks end to end with the same backend,
threads, batch, reading and timing discipline as a LUT, in rounds across all networks (so slow
drift of the machine spreads over all of them), the former beside the networks the LUT's profile
timed whole (:func:`reference_nets`) to read the machine's drift since the profile;
``fidelity`` compares such measurements with the LUT's predictions.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from hwnas.arch import Arch, ArchError
from hwnas.checks import is_number
from hwnas.errors import HwnasError
from hwnas.lut import LUT, LutError
from hwnas.profiling import runner
from hwnas.profiling.profile import ProfileSettings, calibration_archs, check_target, loaders, space_meta
from hwnas.profiling.runner import Job, Timed, TimingSettings
from hwnas.space import Space

Progress = Callable[[int, int, str], None]


TARGET_FIELDS = ("backend", "device", "threads", "batch")
# Where Fidelity.against read the level of its drift-corrected figures (its ``level.from``).
LEVEL_EVERY = "every measurement"
LEVEL_THIS = "this measurement"
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
    ceiling = rank_ceiling(rho, 2) if rho is not None else None
    return {"mean_diff_pct": mean, "max_diff_pct": most, "spearman": rho, "spearman_ceiling": ceiling}


def rank_ceiling(r: float, k: int) -> float | None:
    """About the rank correlation a perfect predictor would read against the combination of ``k``
    measurements that agree pairwise at ``r``: the square root of their Spearman-Brown reliability
    ``k r / (1 + (k - 1) r)`` (its correlation with the true times). None where ``r <= 0``."""
    return math.sqrt(k * r / (1 + (k - 1) * r)) if r > 0 else None


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
class Earlier:
    """An earlier measurement of the same networks (:func:`earlier_measurement`): each network's
    time (ms) and the reference networks timed in its rounds with their times then (ms; empty for
    reports written before they were recorded)."""

    measured: list[float]
    references: tuple[tuple[Arch, float], ...] = ()

    def drift_for(self, lut: LUT, space: Space) -> float | None:
        """This occasion's drift since ``lut``'s profile, as :meth:`Fidelity.drift_for` reads it
        (:func:`drift_against`; None when it timed none of ``lut``'s reference networks)."""
        return drift_against(self.references, lut, space)


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

    def against(self, earlier: Sequence[Earlier], lut: LUT, space: Space) -> dict[str, Any]:
        """The figures against this measurement combined with ``earlier`` measurements of the same
        networks (:func:`combine`, at this one's level), with how all of them agree in rank
        (``agreement``, :func:`agreement`).

        ``corrected``: the predictions against the networks at the profile's speed. Where every
        measurement timed some of ``lut``'s reference networks (:func:`drift_against`), each is
        brought there by its own drift and the geometric mean taken per network, so the level too
        is read on every occasion (``level``: :data:`LEVEL_EVERY`, with ``drifts``); otherwise
        the predictions are scaled by this measurement's drift alone, as in :meth:`summary`
        (``level``: :data:`LEVEL_THIS`)."""
        occasions = [self, *earlier]
        ms = [o.measured for o in occasions]
        p, m = np.array(self.predicted), np.array(combine(ms))
        out: dict[str, Any] = {"agreement": agreement(ms), **_stats(p, m)}
        drifts = [o.drift_for(lut, space) for o in occasions]  # each read the same way
        at_profile = at_profile_speed(ms, drifts)
        if at_profile is not None:
            out["corrected"] = _stats(p, np.array(at_profile))
            out["level"] = {"from": LEVEL_EVERY, "drifts": drifts}
        elif drifts[0] is not None:
            out["corrected"] = _stats(p * drifts[0], m)
            out["level"] = {"from": LEVEL_THIS, "drifts": drifts}
        return out

    def record(self) -> dict[str, Any]:
        """Each network's figures as a report stores them (ms): the predictions, the measurement
        (and as timed), and the reference networks with their times now, which a later
        ``validate-lut --also`` reads the level of this occasion from (:func:`earlier_measurement`)."""
        return {
            "predicted_ms": self.predicted, "measured_ms": self.measured, "measured_as_timed_ms": self.measured_as_timed,
            "references": [{"arch": a.to_dict(), "ms": t} for a, t in self.references],
        }  # fmt: skip

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


def validation_archs(space: Space, n: int, seed: int) -> list[Arch]:
    """The ``n`` random networks a fidelity report of ``space`` with ``seed`` measures."""
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def archs_sha256(archs: Sequence[Arch]) -> str:
    """One hash of networks in order (their plain JSON): which networks a report measured, so that
    measurements of the same networks on other occasions can be recognised and combined."""
    h = hashlib.sha256()
    for a in archs:
        h.update(a.to_json().encode())
    return h.hexdigest()


def combine(measurements: Sequence[Sequence[float]]) -> list[float]:
    """Several measurements of the same networks as one (ms, at the first one's level).

    Each later measurement is brought to the first one's level by the median over the networks
    of ``first / it`` (the machine's speed differs between occasions), then each network's
    figure is the geometric mean of its figures. On a shared machine a measurement is only
    reproducible across occasions to a degree (4 December 2026: five validations of the same 50
    DARTS @ 32 networks, taken hours apart, agreed at Spearman 0.981-0.992 pairwise, while each
    one's interleaved halves put its ceiling at 0.994-0.998), so a rank figure judged against
    one occasion carries that occasion's own error; their combination carries less.
    """
    first = np.asarray(measurements[0], dtype=float)
    logs = [np.log(first)]
    for m in measurements[1:]:
        x = np.asarray(m, dtype=float)
        logs.append(np.log(x) + float(np.median(np.log(first / x))))
    return _geomean(logs)


def _geomean(logs: Sequence[np.ndarray]) -> list[float]:
    """Per network, the geometric mean of several measurements given as their logs."""
    return [float(v) for v in np.exp(np.mean(logs, axis=0))]


def at_profile_speed(measurements: Sequence[Sequence[float]], drifts: Sequence[float | None]) -> list[float] | None:
    """Several measurements of the same networks as one, at a LUT's profile speed (ms): each
    divided by its own drift since that profile (:func:`drift_against`; > 1: the machine ran
    slower on that occasion than during the profile), then the geometric mean per network. None
    where a drift is unknown.

    Up to one factor this is :func:`combine`; the factor is the level read on every occasion's
    reference networks, not on one (one occasion's drift is as noisy as the occasion)."""
    if any(d is None for d in drifts):
        return None
    return _geomean([np.log(np.asarray(m, dtype=float) / d) for m, d in zip(measurements, drifts, strict=True)])


def agreement(measurements: Sequence[Sequence[float]]) -> dict[str, Any]:
    """How well ``K >= 2`` measurements of the same networks agree in rank with each other.

    ``spearman_min`` / ``spearman_mean`` / ``spearman_max``: over the pairs. Measurements taken
    on different occasions do not share an occasion's drift, unlike the interleaved halves of one
    (:func:`repeatability`), so this is the honest figure of how reproducible a rank is on the
    machine. ``ceiling_one``: about the Spearman a perfect predictor would read against one
    measurement (:func:`rank_ceiling` of the mean pairwise ``r``, ``k = 1``); ``ceiling_combined``: against
    their :func:`combine` (``k = K``). Approximations, as :func:`repeatability`'s; None where
    ``r`` is not positive.
    """
    k = len(measurements)
    if k < 2:
        raise ValueError("agreement needs two or more measurements")
    rs = [float(stats.spearmanr(measurements[i], measurements[j]).statistic) for i in range(k) for j in range(i + 1, k)]
    r = float(np.mean(rs))
    return {
        "measurements": k,
        "spearman_min": min(rs), "spearman_mean": r, "spearman_max": max(rs),
        "ceiling_one": rank_ceiling(r, 1),
        "ceiling_combined": rank_ceiling(r, k),
    }  # fmt: skip


def measurement_target(s: ProfileSettings) -> dict[str, Any]:
    """What a measurement's figures depend on besides the networks: backend, device, threads,
    batch and reading. Recorded in a report, so that only like measurements are combined."""
    return {"backend": s.backend, "device": s.device, "threads": s.threads, "batch": s.batch, "reading": s.reading}


def report_fields(space: Space, archs: Sequence[Arch], s: ProfileSettings) -> dict[str, Any]:
    """What a report records of its measurement, so that a later ``validate-lut --also`` can
    recognise the same networks measured the same way (:func:`earlier_measurement`): the space,
    ``archs_sha256`` (:func:`archs_sha256`), ``target`` (:func:`measurement_target`) and the date."""
    return {
        "space": space_meta(space), "archs_sha256": archs_sha256(archs), "target": measurement_target(s),
        "date": runner.local_time(),
    }  # fmt: skip


def earlier_measurement(path: Path, digest: str, seed: int, n: int, target: dict[str, Any]) -> Earlier:
    """An earlier report of the same networks: a ``validate-lut --json`` file (or
    ``bench/fidelity.py``'s ``*.validation.json``) whose ``archs_sha256`` is ``digest`` and whose
    ``target`` (:func:`measurement_target`) is ``target``. Raises :class:`HwnasError` with one
    line naming the problem and the fix."""
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise HwnasError(
            f"--also {path}: cannot read it ({e.strerror or e}); name a validate-lut --json report"
        ) from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise HwnasError(f"--also {path}: not JSON ({e}); name a validate-lut --json report") from None
    if not isinstance(doc, dict) or "measured_ms" not in doc:
        raise HwnasError(f"--also {path}: not a validate-lut --json report (no measured_ms); name one")
    if "archs_sha256" not in doc:
        raise HwnasError(
            f"--also {path}: it does not say which networks it measured (no archs_sha256: written by an older "
            "hwnas); measure again with validate-lut --json"
        )
    if doc["archs_sha256"] != digest:
        raise HwnasError(
            f"--also {path} measured other networks than these {n} of seed {seed} (its seed {doc.get('seed')!r}, "
            f"{len(doc['measured_ms']) if isinstance(doc['measured_ms'], list) else '?'} networks); give --seed and "
            "--nets as it had, and the same space and input size"
        )
    there = doc.get("target")
    if not isinstance(there, dict):
        raise HwnasError(
            f"--also {path} does not record the settings it was measured under (no target: written by an older "
            "hwnas); measure again with validate-lut --json, or drop this --also"
        )
    diff = [f"{k} {there.get(k)!r}, not {v!r}" for k, v in target.items() if there.get(k) != v]
    if diff:
        raise HwnasError(
            f"--also {path} was measured with {'; '.join(diff)}: judge a LUT profiled with those settings against "
            "it, or drop this --also"
        )
    ms = doc["measured_ms"]
    if not (isinstance(ms, list) and len(ms) == n and all(is_number(v) and v > 0 for v in ms)):
        raise HwnasError(f"--also {path}: measured_ms is not {n} positive numbers; the file is damaged, measure again")
    return Earlier([float(v) for v in ms], _read_references(path, doc.get("references", [])))


def _read_references(path: Path, refs: Any) -> tuple[tuple[Arch, float], ...]:
    """A report's reference networks and their times (ms). A damaged list is refused; networks
    this hwnas cannot read (another arch schema) leave the report without references, so that
    only its level, not its measurement, is lost (the table then says so)."""
    if not isinstance(refs, list):
        raise HwnasError(f"--also {path}: references is not a list; the file is damaged, measure again")
    out = []
    for i, r in enumerate(refs):
        if not (isinstance(r, dict) and "arch" in r and is_number(r.get("ms")) and r["ms"] > 0):
            raise HwnasError(
                f"--also {path}: references[{i}] is not an arch with a positive ms; the file is damaged, measure again"
            )
        try:
            out.append((Arch.from_dict(r["arch"], f"--also {path}: references[{i}]"), float(r["ms"])))
        except ArchError:
            return ()
    return tuple(out)


def fidelity(
    space: Space, lut: LUT, archs: Sequence[Arch], s: ProfileSettings, progress: Progress | None = None
) -> Fidelity:
    """Predict ``archs`` of ``space`` (a report's random networks: :func:`validation_archs`) with
    ``lut`` and measure each.

    The LUT's reference networks (:func:`reference_nets`) are measured in the same rounds to
    estimate the machine's drift.
    ``measured`` is corrected for the machine's changing speed (:func:`measure_rounds`);
    ``measured_as_timed`` / ``repeat_as_timed`` are the same rounds without that correction.
    """
    n = len(archs)
    if n < 3:
        raise HwnasError(f"--nets must be at least 3 for rank correlations, got {n}")
    archs = list(archs)
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
