#!/usr/bin/env python3
"""How should a profile read its timings here: which statistic of a round's runs (the 10th
percentile or the median), and would shorter timing per model do as well?

Times a space once — ``--profiles`` independent profile journals and one validation of ``--nets``
random networks plus the LUT's probe networks in 9 rounds — and then reads the same timings in
several ways: each reading (``hwnas profile --reading p10|median``, with blocks inside a network
read the same way, and the shipped pair: p10, blocks under 50 µs at the median) builds its LUTs from the
journals and its validation figures from the same rows. With ``--shorter TARGET_MS:RUNS ...``
each profile is also read as if it had timed each model for only ``TARGET_MS`` per round (the
first runs of each measurement, at least ``min_runs``; a block alone is timed for
``op_target_ms`` already, and keeps all its runs where ``TARGET_MS`` is longer) and profiled only the first ``RUNS`` runs
of each network's blocks (the target profile's ``target_ms`` / ``profile_runs``), written as a
journal of its own. Prints per reading and journal the validation's self-diff, the fidelity
figures (raw and drift-corrected, as ``validate-lut`` computes them), how far each LUT's
predictions are from the first LUT's of the same settings and, for a shorter reading, from the
full one's ("shape": mean distance after dividing out the median ratio). Nothing is timed twice,
so all readings see the same machine.

    python bench/reading_ab.py                                  # darts @ 32, 1 thread, 2 profiles
    python bench/reading_ab.py --space proxyless --input-size 224 --out bench/out/ab-proxyless
    python bench/reading_ab.py --space proxyless --input-size 224 --shorter 50:12 30:8 --out bench/out/ab-short

The timings stay in ``--out`` (journals and ``validation.json``); a second run with the same
``--out`` reads them again without timing (with ``--shorter``, a profile whose journals lack a
round or an asked shorter reading is timed again, and says so). With ``--shorter`` each profile
also prints the time its runs took at each timing (a profiled run counted at the network's median
run time; warm-up, export and session set-up left out). About 3-5 minutes per space on a 2-core machine. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import stats
from validation import validation

from hwnas.measure import apart_pct
from hwnas.profiling import runner
from hwnas.profiling.profile import ProfileSettings, assemble, loaders, plan_work, run_meta, space_meta
from hwnas.profiling.runner import Job, Timed, TimingSettings, summarize
from hwnas.space import load_space


def first_runs(samples: list[float], s: TimingSettings) -> list[float]:
    """The runs a measurement with the settings ``s`` would have kept of ``samples``: a prefix."""
    total = 0.0
    for n, x in enumerate(samples):
        if runner.measured_enough(n, total, s):
            return samples[:n]
        total += x
    return samples


@dataclass
class Shorter:
    """Wraps a job's model: times it as asked and also writes the rows a shorter timing (``target_ms``,
    ``profile_runs``) would have read from the same runs to its ``journals``; adds the time its runs
    took to ``spent`` (per journal suffix; "" the full timing; a profiled run counted at the network's
    median run time)."""

    name: str
    kind: str
    inner: Timed
    rnd: int
    journals: dict[tuple[float, int], Path]
    spent: dict[str, float]
    blocks: dict[int, list[float]] = field(default_factory=dict)

    def time(self, s: TimingSettings) -> list[float]:
        samples = self.inner.time(s)
        if self.kind == "net":  # run_jobs asks for the blocks next: profile them now, keep them
            self.blocks = self.inner.node_times(s)
        self.kernels = getattr(self.inner, "kernels", {})
        run_ms = float(np.median(samples)) if self.blocks else 0.0
        self.spent[""] += (sum(samples) + run_ms * s.profile_runs) / 1e3
        for (target, runs), path in self.journals.items():
            rows: list[dict[str, object]] = [
                {"name": f"{self.name}#{i}", "round": self.rnd, **summarize(xs[:runs]),
                 "kernels": self.kernels.get(i, "")}
                for i, xs in sorted(self.blocks.items())
            ]  # fmt: skip
            kept = first_runs(samples, replace(s, target_ms=target))
            rows.append({"name": self.name, "round": self.rnd, **summarize(kept)})
            runner.append_rows(path, rows)
            self.spent[suffix(target, runs)] += (sum(kept) + run_ms * runs) / 1e3
        return samples

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        return self.blocks


def suffix(target_ms: float, runs: int) -> str:
    """A shorter timing's journal name suffix (the full timing's is "")."""
    return f"-{target_ms:g}ms-{runs}runs"


def shorter_arg(text: str) -> tuple[float, int]:
    """``--shorter``'s ``TARGET_MS:RUNS``."""
    try:
        t, r = text.split(":")
        target, runs = float(t), int(r)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TARGET_MS:RUNS, e.g. 50:12") from None
    if not (target > 0 and runs >= 1):
        raise argparse.ArgumentTypeError(f"{text!r}: TARGET_MS must be above 0 and RUNS at least 1")
    return target, runs


def complete(path: Path, jobs: int, rounds: int) -> bool:
    """``path`` is a journal with every job's every round."""
    return path.exists() and sum("#" not in r["name"] for r in runner.read_rows(path)) == jobs * rounds


def shape_apart(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance (%) of two predictions of the same networks after dividing out their median ratio."""
    q = a / b
    return float(np.mean(np.abs(q / np.median(q) - 1)) * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="darts")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profiles", type=int, default=2, help="independent profile journals (LUTs per reading)")
    ap.add_argument("--nets", type=int, default=50, help="validation networks")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks (as bench/fidelity.py)")
    ap.add_argument("--shorter", nargs="*", type=shorter_arg, default=[], metavar="TARGET_MS:RUNS",
                    help="shorter timings to read too")  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("bench/out/reading-ab"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    sp = load_space(a.space, a.input_size)
    base = ProfileSettings(threads=a.threads)
    timing = base.effective_timing
    shorter = list(dict.fromkeys(a.shorter))
    for target, runs in shorter:
        if target > timing.target_ms or runs > timing.profile_runs:
            ap.error(
                f"--shorter {target:g}:{runs} is not shorter than the profile's "
                f"{timing.target_ms:g}:{timing.profile_runs}"
            )
    work = plan_work(sp, base)
    load_op, load_net = loaders(base)
    variants = ["", *[suffix(t, r) for t, r in shorter]]
    for k in range(a.profiles):
        full = a.out / f"profile{k}.csv"
        journals = {(t, r): a.out / f"profile{k}{suffix(t, r)}.csv" for t, r in shorter}
        jobs = work.jobs(load_op, load_net)
        paths = [full, *journals.values()]
        if journals and not all(complete(p, len(jobs), base.rounds) for p in paths):
            gone = [p.name for p in paths if p.exists()]
            if gone:  # the shorter readings need every run of the profile, in step with its journal
                print(f"profile {k}: {', '.join(gone)} lack(s) rounds or shorter readings: timing it again", flush=True)
            for p in paths:
                p.unlink(missing_ok=True)
        spent = dict.fromkeys(variants, 0.0)

        def wrap(job: Job, journals: dict = journals, full: Path = full, spent: dict = spent) -> Job:
            def load() -> Timed:  # run_jobs loads a job for round r once its rounds before r are written
                rnd = sum(r["name"] == job.name for r in runner.read_rows(full))
                return Shorter(job.name, job.kind, job.load(), rnd, journals, spent)

            return Job(job.name, job.kind, load) if journals else job

        t0 = time.perf_counter()
        if runner.run_jobs([wrap(j) for j in jobs], base.rounds, timing, full):
            took = ", ".join(f"{v.lstrip('-') or 'full'} {s:.1f} s" for v, s in spent.items()) if journals else ""
            print(f"profile {k}: {time.perf_counter() - t0:.0f} s" + (f"; in timed runs: {took}" if took else ""),
                  flush=True)  # fmt: skip
    val = validation(a.out, sp, a.nets, a.seed, load_net, timing)
    print(f"\n{a.space} @ {a.input_size}, {a.threads} thread(s), {a.nets} networks, {a.profiles} LUT(s) per reading")
    print(f"{'reading/blocks':<15}{'timing':>14}{'LUT':>4}{'self-diff %':>12}{'MAPE %':>8}{'corr. MAPE %':>13}"
          f"{'corr. max %':>12}{'corr. ±5%':>10}{'Spearman':>9}{'drift %':>8}{'1st LUT %':>10}"
          f"{'full %':>8}")  # fmt: skip
    # each reading throughout, then the shipped pair (p10; blocks inside a network "auto": at the
    # median where under 50 us)
    pairs = [(r, r) for r in runner.READINGS] + [(runner.DEFAULT_READING, runner.DEFAULT_BLOCK_READING)]
    for reading, blocks in dict.fromkeys(pairs):
        s = ProfileSettings(threads=a.threads, reading=reading, block_reading=blocks)
        label = f"{reading}/{blocks}"
        measured, self_diff = val.read(reading)
        preds: dict[tuple[str, int], np.ndarray] = {}
        for v in variants:
            for k in range(a.profiles):
                journal = runner.read_rows(a.out / f"profile{k}{v}.csv")
                lut = assemble(space_meta(sp), s, work, journal, run_meta(s, 0.0))
                predicted, r, c = val.figures(lut, measured)
                preds[v, k] = predicted
                first = apart_pct(predicted, preds[v, 0])[0] if k else float("nan")
                full = shape_apart(predicted, preds["", k]) if v else float("nan")
                print(f"{label:<15}{v.lstrip('-') or 'full':>14}{k:>4}{self_diff:>12.2f}{r['mape_pct']:>8.2f}"
                      f"{c['mape_pct']:>13.2f}{c['max_error_pct']:>12.2f}{c['within_5pct'] * 100:>9.0f}%"
                      f"{r['spearman']:>9.4f}{(r.get('drift', 1.0) - 1) * 100:>+8.2f}{first:>10.2f}"
                      f"{full:>8.2f}")  # fmt: skip
            if a.profiles > 1:
                x, y = preds[v, 0], preds[v, 1]
                print(
                    f"{'':<15}{v.lstrip('-') or 'full':>14}  LUT 0 vs 1: shape {shape_apart(y, x):.2f} %, "
                    f"Spearman {stats.spearmanr(x, y).statistic:.4f}"
                )


if __name__ == "__main__":
    main()
