#!/usr/bin/env python3
"""Which reading of a round's runs predicts better here: the 10th percentile or the median?

Times a space once — ``--profiles`` independent profile journals and one validation of ``--nets``
random networks plus the LUT's probe networks in 9 rounds — and then reads the same timings both
ways (``hwnas profile --reading p10|median``): each reading builds its LUTs from the journals and
its validation figures from the same rows. Prints, per reading, the validation's self-diff and,
per LUT, the fidelity figures (raw and drift-corrected, as ``validate-lut`` computes them), and
how far the LUTs' predictions are apart. Nothing is timed twice, so the two readings see the
same machine.

    python bench/reading_ab.py                                  # darts @ 32, 1 thread, 2 profiles
    python bench/reading_ab.py --space proxyless --input-size 224 --out bench/out/ab-proxyless

The timings stay in ``--out`` (journals and ``validation.json``); a second run with the same
``--out`` reads them again without timing. About 3-5 minutes per space on a 2-core machine.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from hwnas.measure import VALIDATION_ROUNDS, Fidelity, drift_of, repeatability
from hwnas.profiling import runner
from hwnas.profiling.profile import ProfileSettings, assemble, loaders, plan_work, run_meta, space_meta
from hwnas.profiling.runner import Job
from hwnas.space import load_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="darts")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profiles", type=int, default=2, help="independent profile journals (LUTs per reading)")
    ap.add_argument("--nets", type=int, default=50, help="validation networks")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks (as bench/fidelity.py)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/reading-ab"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    sp = load_space(a.space, a.input_size)
    base = ProfileSettings(threads=a.threads)
    work = plan_work(sp, base)
    load_op, load_net = loaders(base)
    for k in range(a.profiles):  # run_jobs resumes a journal it finds
        t0 = time.perf_counter()
        if runner.run_jobs(work.jobs(load_op, load_net), base.rounds, base.effective_timing, a.out / f"profile{k}.csv"):
            print(f"profile {k}: {time.perf_counter() - t0:.0f} s", flush=True)
    rng = random.Random(a.seed)
    archs = [sp.sample(rng) for _ in range(a.nets)]
    probes = sp.probe_archs()  # re-timed beside the validation networks: the drift since each profile
    val = a.out / "validation.json"
    if not val.exists():
        nets = archs + [x for _, x in probes]
        jobs = [Job(f"arch{i}", "op", (lambda x=x: load_net(x))) for i, x in enumerate(nets)]
        t0 = time.perf_counter()
        runner.write_json_atomic(val, runner.time_job_rows(jobs, VALIDATION_ROUNDS, base.effective_timing))
        print(f"validation: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = json.loads(val.read_text())
    print(f"\n{a.space} @ {a.input_size}, {a.threads} thread(s), {a.nets} networks, {a.profiles} LUT(s) per reading")
    print(f"{'reading':<8}{'LUT':>4}{'self-diff %':>12}{'MAPE %':>8}{'corr. MAPE %':>13}{'corr. max %':>12}"
          f"{'corr. ±5%':>10}{'Spearman':>9}{'drift %':>8}{'2nd LUT %':>10}")  # fmt: skip
    for reading in runner.READINGS:
        s = ProfileSettings(threads=a.threads, reading=reading)
        by = runner.round_values(rows, reading=reading)
        rounds = [by[f"arch{i}"] for i in range(len(archs) + len(probes))]
        measured = [float(np.median(r)) for r in rounds]
        self_diff = (repeatability(rounds[: a.nets]) or {}).get("mean_diff_pct", float("nan"))
        preds = []
        for k in range(a.profiles):
            lut = assemble(space_meta(sp), s, work, runner.read_rows(a.out / f"profile{k}.csv"), run_meta(s, 0.0))
            predicted = [lut.predict(x).total_ms for x in archs]
            recorded = {n["name"]: n["measured_ms"] for n in lut.meta["model"].get("nets", [])}
            kept = [(i, x, recorded[name]) for i, (name, x) in enumerate(probes) if name in recorded]
            drift = drift_of([measured[a.nets + i] for i, _, _ in kept], [(x, then) for _, x, then in kept])
            r = Fidelity(predicted, measured[: a.nets], drift, None).summary()
            c = r.get("corrected", r)
            apart = np.abs(np.array(predicted) / np.array(preds[0]) - 1).mean() * 100 if preds else float("nan")
            preds.append(predicted)
            print(f"{reading:<8}{k:>4}{self_diff:>12.2f}{r['mape_pct']:>8.2f}{c['mape_pct']:>13.2f}"
                  f"{c['max_error_pct']:>12.2f}{c['within_5pct'] * 100:>9.0f}%{r['spearman']:>9.4f}"
                  f"{(r.get('drift', 1.0) - 1) * 100:>+8.2f}{apart:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
