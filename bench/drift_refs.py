#!/usr/bin/env python3
"""Which networks should re-time the machine's drift since a profile? Paired, from one timing.

``validate-lut``, ``hwnas measure --lut`` and ``hwnas export --lut`` re-time reference networks
beside what they measure and divide by the machine's drift since the profile: the median over
the references of ``now / recorded`` (:func:`hwnas.measure.drift_of`). The references were the
LUT's probe networks (every layer one candidate), which are not networks a search derives. This
bench times ``--nets`` random validation networks (the seed of ``bench/fidelity.py``), the
space's probe networks and the profile's random calibration networks (regenerated from the
LUT's seed: :func:`hwnas.profiling.profile.calibration_archs`) in 9 rounds (``--rounds``), then reads each
stored LUT of ``--luts`` with the drift estimated from the probe networks, the calibration
networks, or both, and prints the drift-corrected figures and the bias left (the mean signed
error: what a wrong level leaves). ``ideal`` is the drift the random networks themselves would
give (the median of measured / predicted), which no command can know.

    python bench/drift_refs.py --space darts --input-size 32 \\
        --luts bench/out/fid-*/darts-32-t1*.csv --out bench/out/drift-d32

The timings stay in ``--out/timings.json``; a second run with the same ``--out`` reads them
again. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from validation import f4

from hwnas.lut import LUT
from hwnas.measure import VALIDATION_ROUNDS, Fidelity, repeatability, settings_from_lut, validation_archs
from hwnas.profiling import runner
from hwnas.profiling.profile import calibration_archs, loaders
from hwnas.profiling.runner import Job
from hwnas.space import load_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="darts")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--luts", nargs="+", type=Path, required=True, help="LUTs of this space and size")
    ap.add_argument("--nets", type=int, default=50, help="validation networks")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks (as bench/fidelity.py)")
    ap.add_argument("--rounds", type=int, default=VALIDATION_ROUNDS, help="rounds for every network")
    ap.add_argument("--out", type=Path, default=Path("bench/out/drift-d32"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    sp = load_space(a.space, a.input_size)
    luts = [LUT.load(p) for p in a.luts]
    plans = {(lut.meta["seed"], lut.meta["calib_nets"]) for lut in luts}
    if len(plans) != 1:
        ap.error(f"the LUTs drew different calibration networks (seed, count): {sorted(plans)}")
    seed, calib = plans.pop()
    s = settings_from_lut(luts[0], rounds=a.rounds)
    refs = dict(sp.probe_archs() + calibration_archs(sp, seed, calib))
    archs = validation_archs(sp, a.nets, a.seed)
    models = archs + list(refs.values())
    path = a.out / "timings.json"
    if not path.exists():
        _, load_net = loaders(s)
        jobs = [Job(f"arch{i}", "model", (lambda x=x: load_net(x))) for i, x in enumerate(models)]
        runner.write_json_atomic(path, runner.time_job_rows(jobs, s.rounds, s.effective_timing))
    rows = json.loads(path.read_text())
    timed = ({r["name"] for r in rows}, 1 + max(int(r["round"]) for r in rows))
    if timed != ({f"arch{i}" for i in range(len(models))}, a.rounds):
        ap.error(f"{path} holds {len(timed[0])} networks in {timed[1]} rounds, not {len(models)} in {a.rounds}: "
                 "name another --out")  # fmt: skip
    by = runner.round_values(rows, reading=s.reading)
    rounds = [by[f"arch{i}"] for i in range(len(models))]
    now = dict(zip(refs, (float(np.median(r)) for r in rounds[a.nets :]), strict=True))
    measured = [float(np.median(r)) for r in rounds[: a.nets]]
    rep = repeatability(rounds[: a.nets]) or {}
    print(f"{a.space} @ {a.input_size}, {a.nets} networks, {len(refs)} references ({calib} calibration networks), "
          f"{len(rounds[0])} rounds; validation self-diff {rep.get('mean_diff_pct', float('nan')):.2f} %, "
          f"its halves' Spearman {f4(rep.get('spearman'))}\n")  # fmt: skip
    print(
        f"{'LUT':<48}{'drift from':>12}{'drift %':>9}{'MAPE %':>8}{'max %':>7}{'±5 %':>6}{'bias %':>8}{'Spearman':>9}"
    )
    summary: dict[str, list[tuple[float, float]]] = {}  # per estimator: (MAPE, |bias|) per LUT
    for p, lut in zip(a.luts, luts, strict=True):
        recorded = {n["name"]: n["measured_ms"] for n in lut.meta["model"]["nets"]}
        ratio = {n: now[n] / recorded[n] for n in refs}
        predicted = [lut.predict(x).total_ms for x in archs]
        groups = {
            "probes": [v for n, v in ratio.items() if not n.startswith("calib-")],
            "calibration": [v for n, v in ratio.items() if n.startswith("calib-")],
            "both": list(ratio.values()),
            "ideal": [m / q for m, q in zip(measured, predicted, strict=True)],
        }
        for label, values in groups.items():
            drift = float(np.median(values))
            c = Fidelity(predicted, measured, drift, None).summary()["corrected"]
            print(f"{str(p)[-48:]:<48}{label:>12}{(drift - 1) * 100:>+9.2f}{c['mape_pct']:>8.2f}"
                  f"{c['max_error_pct']:>7.1f}{c['within_5pct'] * 100:>5.0f}%{c['bias_pct']:>+8.2f}{c['spearman']:>9.4f}")  # fmt: skip
            summary.setdefault(label, []).append((c["mape_pct"], abs(c["bias_pct"])))
    print(f"\nmean over the {len(luts)} LUTs (MAPE %, |bias| %; LUTs with a smaller |bias| than from the probes):")
    for label, figs in summary.items():
        better = sum(b < p for (_, b), (_, p) in zip(figs, summary["probes"], strict=True))
        print(f"{label:>12}{np.mean([m for m, _ in figs]):>8.2f}{np.mean([b for _, b in figs]):>8.2f}{better:>4}")


if __name__ == "__main__":
    main()
