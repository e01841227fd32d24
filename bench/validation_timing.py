#!/usr/bin/env python3
"""Does timing each network longer per round make a validation agree with itself better?

A validation (``validate-lut``, ``bench/fidelity.py``) times each network for ``target_ms`` (80 ms)
per round, 9 rounds, and reads each round's p10. On this project's shared VMs a DARTS @ 32
validation (networks of 1-3 ms) disagreed with itself by 2-5 % between its even and odd rounds,
and its halves' rank correlation put the Spearman a perfect LUT could read at about 0.965-0.994:
the issue's 0.99 could not be judged. This bench times the same ``--nets`` random networks (the
seed of ``bench/fidelity.py``) and the LUT's reference networks once per ``--targets`` value, all
of them in the same shuffled rounds, so every variant sees the same machine. For each variant it
prints the measurement's self-diff (even vs odd rounds), its halves' Spearman and the ceiling
that implies (:func:`hwnas.measure.repeatability`), and each LUT's drift-corrected figures
against it (the drift from that variant's own reference networks), at the p10 and median
readings.

    python bench/validation_timing.py --luts bench/out/fid-1204-1325/darts-32-t1*.csv \\
        --targets 80 320 --out bench/out/vtiming-d32

The timings stay in ``--out/timings.json``; a second run with the same ``--out`` reads them again.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from validation import f4

from hwnas.lut import LUT
from hwnas.measure import (
    VALIDATION_ROUNDS,
    Fidelity,
    drift_against,
    reference_nets,
    repeatability,
    settings_from_lut,
    validation_archs,
)
from hwnas.profiling import runner
from hwnas.profiling.profile import loaders, space_from_meta, space_meta
from hwnas.profiling.runner import Job, Timed, TimingSettings


class TimedFor:
    """A model timed for ``target_ms`` per round whatever the loop asks."""

    def __init__(self, model: Timed, target_ms: float) -> None:
        self.model, self.target_ms = model, target_ms

    def time(self, s: TimingSettings) -> list[float]:
        return self.model.time(replace(s, target_ms=self.target_ms))

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        raise NotImplementedError("timed whole only")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--luts", nargs="+", type=Path, required=True, help="LUTs of one space and size")
    ap.add_argument("--targets", nargs="+", type=float, default=[80.0, 320.0], help="ms per network per round")
    ap.add_argument("--nets", type=int, default=50, help="validation networks")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks (as bench/fidelity.py)")
    ap.add_argument("--rounds", type=int, default=VALIDATION_ROUNDS, help="rounds (2 or more: halves are compared)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/vtiming"))
    a = ap.parse_args()
    if a.rounds < 2:
        ap.error("--rounds must be 2 or more: the measurement's halves (even vs odd rounds) are compared")
    names = [f"t{t:g}" for t in a.targets]
    if len(set(names)) != len(names):
        ap.error(f"--targets repeats a value: {' '.join(n[1:] for n in names)}")
    luts = [LUT.load(p) for p in a.luts]
    sp = space_from_meta(luts[0].meta)
    priced = space_meta(sp)  # what each LUT's metadata must say of the space it priced
    others = [p for p, lut in zip(a.luts, luts, strict=True) if {k: lut.meta.get(k) for k in priced} != priced]
    if others or len({(lut.meta.get("seed"), lut.meta.get("calib_nets")) for lut in luts}) != 1:
        ap.error(f"the LUTs priced other spaces than {a.luts[0]} ({', '.join(map(str, others))}) or drew other "
                 "calibration networks (seed, calib_nets)")  # fmt: skip
    refs = [x for x, _ in reference_nets(sp, luts[0])]
    archs = validation_archs(sp, a.nets, a.seed)
    models = archs + refs
    plan = {"space": sp.name, "input_size": sp.input_size, "seed": a.seed, "nets": a.nets, "references": len(refs),
            "rounds": a.rounds, "targets": a.targets}  # fmt: skip
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "timings.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if {k: saved.get(k) for k in plan} != plan:
            ap.error(f"{path} was timed for { ({k: saved.get(k) for k in plan}) }, not {plan}: name another --out")
    else:
        s = settings_from_lut(luts[0], rounds=a.rounds)
        _, load_net = loaders(s)
        jobs = [
            Job(f"{n}/{i}", "model", (lambda x=x, t=t: TimedFor(load_net(x), t)))
            for n, t in zip(names, a.targets, strict=True)
            for i, x in enumerate(models)
        ]
        saved = {**plan, "rows": runner.time_job_rows(jobs, s.rounds, s.effective_timing)}
        runner.write_json_atomic(path, saved)
    print(f"{sp.name} @ {sp.input_size}, {a.nets} networks + {len(refs)} references, {a.rounds} rounds, "
          f"targets {a.targets} ms, all in the same rounds\n")  # fmt: skip
    head = f"{'reading':<8}{'ms':>6}{'self-diff %':>12}{'max %':>7}{'halves Sp':>10}{'ceiling':>8}"
    print(head + "".join(f"{'MAPE ' + str(k):>9}{'Sp ' + str(k):>9}" for k in range(len(luts))))
    predicted = [[lut.predict(x).total_ms for x in archs] for lut in luts]
    for reading in ("p10", "median"):
        by = runner.round_values(saved["rows"], reading=reading)
        for n, t in zip(names, a.targets, strict=True):
            rounds = [by[f"{n}/{i}"] for i in range(len(models))]
            rep = repeatability(rounds[: a.nets]) or {}
            measured = [float(np.median(r)) for r in rounds[: a.nets]]
            line = (f"{reading:<8}{t:>6g}{rep['mean_diff_pct']:>12.2f}{rep['max_diff_pct']:>7.1f}"
                    f"{f4(rep.get('spearman')):>10}{f4(rep.get('spearman_ceiling')):>8}")  # fmt: skip
            now = list(zip(refs, (float(np.median(r)) for r in rounds[a.nets :]), strict=True))
            for lut, p in zip(luts, predicted, strict=True):
                drift = drift_against(now, lut, sp)
                c = Fidelity(p, measured, drift, None).summary().get("corrected")
                line += f"{c['mape_pct']:>9.2f}{c['spearman']:>9.4f}" if c else f"{'n/a':>9}{'n/a':>9}"
            print(line)
    print("\nLUTs: " + ", ".join(f"{k} {p}" for k, p in enumerate(a.luts)))
    print("MAPE and Sp: drift-corrected by each LUT's own reference networks timed here (n/a: none shared)")


if __name__ == "__main__":
    main()
