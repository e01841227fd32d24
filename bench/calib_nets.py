#!/usr/bin/env python3
"""How many random calibration networks, and how many rounds, should a profile time? Paired, from
one set of timings.

Times ``--profiles`` profile journals of a space with the largest ``--sizes`` calibration
networks in the most ``--rounds``, and one validation of ``--nets`` random networks plus the
space's probe networks in 9 rounds (the networks of ``bench/fidelity.py``). Then builds each
profile's LUT as if it had timed only the first N calibration networks in the first R rounds,
for each N of ``--sizes`` and R of ``--rounds``, and prints the fidelity figures per N, R and
LUT (drift-corrected as ``validate-lut`` computes them) and how far two LUTs of the same N and R
predict apart. A key's price is the median over its contexts, so more random networks pull it
toward the contexts a random network gives it, away from the probe networks' extremes; more
rounds are more chances to catch each job at the machine's usual speed. Left-out calibration
networks stay in the journal, so every N sees the same speed correction; left-out rounds do
not (a profile of R rounds would not have timed them). Also prints what one calibration network
and one round added to the profile's time, to weigh a gain against.

    python bench/calib_nets.py                                   # darts @ 32, 1 thread
    python bench/calib_nets.py --space proxyless --input-size 224 --out bench/out/calib-p224
    python bench/calib_nets.py --sizes 8 --rounds 3 6 --out bench/out/rounds-d32   # 3 or 6 rounds

The timings stay in ``--out``; a second run with the same ``--out`` reads them again without
timing. About 5-8 minutes per space on a 2-core machine. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import stats
from validation import validation

from hwnas.profiling import runner
from hwnas.profiling.profile import ProfileSettings, Work, assemble, loaders, plan_work, run_meta, space_meta
from hwnas.space import load_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="darts")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 24, 40], help="calibration networks to read")
    ap.add_argument("--rounds", nargs="+", type=int, default=[3], help="profile rounds to read (the first R)")
    ap.add_argument("--profiles", type=int, default=2)
    ap.add_argument("--nets", type=int, default=50, help="validation networks")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks (as bench/fidelity.py)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/calib-d32"))
    a = ap.parse_args()
    if min(a.sizes) < 0 or min(a.rounds) < 1:
        ap.error("--sizes must be 0 or more and --rounds 1 or more")
    a.out.mkdir(parents=True, exist_ok=True)
    sp = load_space(a.space, a.input_size)
    s = ProfileSettings(threads=a.threads, calib_nets=max(a.sizes), rounds=max(a.rounds))
    work = plan_work(sp, s)
    load_op, load_net = loaders(s)
    per_job: dict[str, float] = defaultdict(float)  # seconds, all rounds (export and set-up included)
    per_round: dict[int, float] = defaultdict(float)  # seconds, all profiles
    clock = [time.perf_counter()]

    def progress(done: int, total: int, name: str) -> None:
        now = time.perf_counter()
        per_job[name] += now - clock[0]
        per_round[(done - 1) * s.rounds // total] += now - clock[0]
        clock[0] = now

    timed = 0
    for k in range(a.profiles):
        journal = a.out / f"profile{k}.csv"
        t0 = clock[0] = time.perf_counter()
        # both profiles time the same networks (one seed), so each N reads the same ones in both
        if runner.run_jobs(work.jobs(load_op, load_net), s.rounds, s.effective_timing, journal, progress):
            timed += 1
            print(f"profile {k}: {time.perf_counter() - t0:.0f} s with {max(a.sizes)} calibration networks in "
                  f"{s.rounds} rounds", flush=True)  # fmt: skip
    val = validation(a.out, sp, a.nets, a.seed, load_net, s.effective_timing)
    measured, self_diff = val.read(s.reading)
    print(f"\n{a.space} @ {a.input_size}, {a.threads} thread(s), {a.nets} networks; validation self-diff "
          f"{self_diff:.2f} %, Spearman of a perfect LUT about {val.ceiling(s.reading):.4f}")  # fmt: skip
    print(f"{'calib':>5}{'rounds':>7}{'LUT':>4}{'MAPE %':>8}{'corr. MAPE %':>13}{'corr. max %':>12}{'corr. ±5%':>10}"
          f"{'Spearman':>9}{'fit MAPE %':>11}")  # fmt: skip
    probe_nets = {f"net:{n}": x for n, x in sp.probe_archs()}
    journals = [runner.read_rows(a.out / f"profile{k}.csv") for k in range(a.profiles)]
    for n, rounds in [(n, r) for n in sorted(set(a.sizes)) for r in sorted(set(a.rounds))]:
        sub = Work(work.ops, {**probe_nets, **{f"net:calib-{i}": work.nets[f"net:calib-{i}"] for i in range(n)}})
        preds = []
        for k in range(a.profiles):
            sk = replace(s, calib_nets=n, rounds=rounds)
            rows = [r for r in journals[k] if int(r["round"]) < rounds]
            lut = assemble(space_meta(sp), sk, sub, rows, run_meta(sk, 0.0))
            predicted, r, c = val.figures(lut, measured)
            preds.append(predicted)
            print(f"{n:>5}{rounds:>7}{k:>4}{r['mape_pct']:>8.2f}{c['mape_pct']:>13.2f}{c['max_error_pct']:>12.2f}"
                  f"{c['within_5pct'] * 100:>9.0f}%{r['spearman']:>9.4f}{lut.meta['model']['fit_mape_pct']:>11.2f}")  # fmt: skip
        if len(preds) > 1:
            q = preds[1] / preds[0]
            print(f"{'':>12}  LUT 0 vs 1: shape {np.mean(np.abs(q / np.median(q) - 1)) * 100:.2f} %, "
                  f"Spearman {stats.spearmanr(preds[0], preds[1]).statistic:.4f}")  # fmt: skip
    calib = [v for name, v in per_job.items() if name.startswith("net:calib-")]
    if calib and timed:
        print(f"\none calibration network took {np.mean(calib) / timed:.2f} s of a profile (mean over "
              f"{len(calib)} job(s) and {timed} profile(s): its {s.rounds} rounds and its export)")  # fmt: skip
    if per_round and timed:
        took = ", ".join(f"{per_round[r] / timed:.1f}" for r in sorted(per_round))
        print(f"its rounds took {took} s of a profile (the first exports the models)")


if __name__ == "__main__":
    main()
