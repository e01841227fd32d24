#!/usr/bin/env python3
"""How reproducible is a validation across occasions, and how do LUTs read against several?

A fidelity report times its networks in interleaved rounds, so the halves it compares share the
occasion (the machine's state over those minutes) and its "Spearman of a perfect LUT" reads
high. This bench takes stored reports of the same networks from different occasions (``hwnas
validate-lut --json`` files, ``bench/fidelity.py``'s ``*.validation.json``), each checked as
``validate-lut --also`` checks it (:func:`hwnas.measure.earlier_measurement`), and prints:

* how the reports agree in rank with each other (pairwise, and each against the combination of
  the others), and the Spearman a perfect LUT would read against one report and against all of
  them combined (:func:`hwnas.measure.agreement`);
* for each stored LUT of ``--luts``, its Spearman against each report and against their
  combination (:func:`hwnas.measure.combine`), and its MAPE, max error and share within ±5 %
  against the combination with the level matched by the networks themselves (the median of
  measured / predicted: the best any level would give, lower than a report's); and,
  where every report recorded its reference networks (``references``, written since the evening
  of 4 December 2026), the MAPE with the level read on them (``MAPE drift``: each report brought
  to the LUT's profile speed by its own drift, :func:`hwnas.measure.at_profile_speed`), as
  ``validate-lut --also`` reads it.

    python bench/occasions.py --reports bench/out/occasions-d32/*.json \\
        --luts bench/out/fid-1204-*/darts-32-t1*.csv

Reads files only; times nothing. Figures, not assertions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats
from validation import f4

from hwnas.errors import HwnasError
from hwnas.lut import LUT
from hwnas.measure import (
    agreement,
    archs_sha256,
    at_profile_speed,
    combine,
    earlier_measurement,
    measurement_target,
    settings_from_lut,
    validation_archs,
)
from hwnas.space import load_space


def spearman(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    return float(stats.spearmanr(a, b).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", nargs="+", type=Path, required=True, help="reports of the same networks")
    ap.add_argument("--luts", nargs="+", type=Path, required=True, help="LUTs of the space and size")
    ap.add_argument("--space", default="darts")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--nets", type=int, default=50, help="validation networks")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks (as bench/fidelity.py)")
    a = ap.parse_args()
    if len(a.reports) < 2:
        ap.error("give two or more --reports")
    sp = load_space(a.space, a.input_size)
    archs = validation_archs(sp, a.nets, a.seed)
    luts = {p: LUT.load(p) for p in a.luts}
    target = measurement_target(settings_from_lut(next(iter(luts.values()))))
    for p, lut in luts.items():  # every LUT of this space and size, for the reports' settings
        there = (lut.meta.get("space"), lut.meta.get("input_size"), measurement_target(settings_from_lut(lut)))
        if there != (a.space, a.input_size, target):
            ap.error(f"{p} is a LUT of {there[0]} @ {there[1]} under {there[2]}, not of {a.space} @ {a.input_size} "
                     f"under {target} like the first LUT")  # fmt: skip
    try:
        reports = {p: earlier_measurement(p, archs_sha256(archs), a.seed, a.nets, target) for p in a.reports}
    except HwnasError as e:
        ap.error(str(e))
    names = [f"#{i + 1}" for i in range(len(reports))]
    ms = [e.measured for e in reports.values()]
    ag = agreement(ms)
    print(f"{a.space} @ {a.input_size}: {a.nets} networks of seed {a.seed}, {len(ms)} reports")
    for n, p in zip(names, reports, strict=True):
        print(f"  {n}: {p}")
    print("\nthe reports against each other (Spearman):")
    print(" " * 4 + "".join(f"{n:>8}" for n in names))
    for i, n in enumerate(names):
        print(f"{n:>4}" + "".join(f"{spearman(ms[i], ms[j]):8.4f}" if j != i else " " * 8 for j in range(len(ms))))
    if len(ms) >= 3:
        print("each against the combination of the others: " + ", ".join(
            f"{n} {spearman(ms[i], combine(ms[:i] + ms[i + 1 :])):.4f}" for i, n in enumerate(names)
        ))  # fmt: skip
    print(
        f"pairwise {ag['spearman_min']:.4f}-{ag['spearman_max']:.4f} (mean {ag['spearman_mean']:.4f}); "
        f"a perfect LUT would read about {f4(ag['ceiling_one'])} against one report, "
        f"{f4(ag['ceiling_combined'])} against all {len(ms)}"
    )
    both = np.array(combine(ms))
    print(
        f"\n{'LUT':<48} {'Sp. min':>8} {'Sp. max':>8} {'Sp. all':>8} {'MAPE':>7} {'max':>7} {'±5 %':>6} {'MAPE drift':>10}"
        "   (min/max: against one report; all: against the combination)"
    )
    rows = []
    for p, lut in luts.items():
        pred = np.array([lut.predict(x).total_ms for x in archs])
        one = [spearman(pred, m) for m in ms]
        err = np.abs(pred * float(np.median(both / pred)) / both - 1) * 100
        rows.append((min(one), max(one), spearman(pred, both), err.mean(), err.max(), (err <= 5).mean() * 100))
        r = rows[-1]
        at = at_profile_speed(ms, [e.drift_for(lut, sp) for e in reports.values()])
        read = f"{np.mean(np.abs(pred / np.array(at) - 1)) * 100:6.2f}%" if at is not None else "n/a"
        print(f"{p!s:<48} {f4(r[0]):>8} {f4(r[1]):>8} {f4(r[2]):>8} {r[3]:6.2f}% {r[4]:6.1f}% {r[5]:5.0f}% {read:>10}")
    x = np.array(rows)
    print(
        f"\nmeans over {len(rows)} LUTs: Spearman {x[:, 0].mean():.4f}-{x[:, 1].mean():.4f} against one report, "
        f"{x[:, 2].mean():.4f} against all; at or above 0.99 against all: {int((x[:, 2] >= 0.99).sum())} of "
        f"{len(rows)}; MAPE {x[:, 3].mean():.2f} %"
    )


if __name__ == "__main__":
    main()
