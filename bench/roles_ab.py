#!/usr/bin/env python3
"""Would pricing a DARTS edge by its ReLU's role predict better? Reads the timings
``bench/reading_ab.py`` stored (its ``--out``: profile journals and ``validation.json``), times nothing.

ONNX Runtime merges identical ReLUs on one input (common-subexpression elimination): of a cell's
edges whose op starts with a ReLU and that read the same state, the first keeps it and the later
ones run one kernel fewer. The shipped LUT prices a key by the median over all its contexts in the
probe networks. The role-priced reading prices a stride-1 sep_conv / dil_conv edge by the median
over its contexts with the same role ("own": the first ReLU-first reader of its input in plan
order; "shared": a later one; all contexts where the probes lack the role), less ``kernel_ms`` per
kernel as shipped, and refits ``scale`` and ``overhead_ms`` on the profile's networks as
``assemble`` does. No fitted parameter is added. Prints, per profile, both readings' drift-
corrected MAPE, max error and Spearman against the validation (p10 reading, as shipped).

    python bench/reading_ab.py --space darts --input-size 32 --out bench/out/ab-d32   # times
    python bench/roles_ab.py --out bench/out/ab-d32                                    # reads

Figures, not assertions (see bench/RESULTS.md for what it showed).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from hwnas.arch import Arch
from hwnas.measure import drift_of
from hwnas.profiling import runner
from hwnas.profiling.profile import (
    ProfileSettings,
    _kernel_counts,
    assemble,
    fit_model,
    plan_work,
    run_meta,
    space_meta,
)
from hwnas.space import load_space
from hwnas.supernet import fastest_sum

RELU_FIRST = {"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "relu_conv_bn", "factorized_reduce"}
PRICED = ("sep_conv", "dil_conv")  # the ops whose role is priced (stride 1)


def roles(a: Arch) -> list[str]:
    """Per plan node: "own" / "shared" for a stride-1 sep/dil edge (first ReLU-first reader of its
    input, or a later one), "" for every other node."""
    seen: set[int] = set()
    out = []
    for node in a.plan.nodes:
        c = node.call
        relu_first = c.op in RELU_FIRST or (c.op == "skip_connect" and c.param_dict.get("stride") == 2)
        first = node.inputs[0] not in seen if node.inputs else True
        if relu_first:
            seen.add(node.inputs[0])
        priced = relu_first and c.op.startswith(PRICED) and c.param_dict.get("stride") == 1
        out.append(("own" if first else "shared") if priced else "")
    return out


def role_priced(rows: list[dict[str, str]], work, kernel_ms: float, sp, reading: str):
    """A predictor ``Arch -> ms`` priced by role from a profile's journal ``rows``."""
    med = runner.round_medians(rows, reading=reading)
    counts = _kernel_counts(rows)
    ctx: dict[tuple[str, str], list[float]] = defaultdict(list)
    kern: dict[tuple[str, str], list[int]] = defaultdict(list)
    for name, a in work.nets.items():
        for i, (node, role) in enumerate(zip(a.plan.nodes, roles(a), strict=True)):
            if node.call.priced:
                for g in {(node.call.key, role), (node.call.key, "*")}:
                    ctx[g].append(med.get(f"{name}#{i}", 0.0))
                    if f"{name}#{i}" in counts:
                        kern[g].append(counts[f"{name}#{i}"])

    def lat(key: str, role: str) -> float:
        g = (key, role) if (key, role) in ctx else (key, "*")
        k = kern.get(g) or kern.get((key, "*")) or [0]
        return max(0.0, statistics.median(ctx[g]) - kernel_ms * round(statistics.median(k)))

    def total(a: Arch) -> float:
        return sum(lat(n.call.key, r) for n, r in zip(a.plan.nodes, roles(a), strict=True) if n.call.priced)

    xs = np.array([total(a) for a in work.nets.values()])
    ys = np.array([med[n] for n in work.nets])
    plain = {key: lat(key, "*") for key, _ in ctx}
    scale, overhead = fit_model(xs, ys, fastest_sum(sp, plain))
    return lambda a: scale * total(a) + overhead


def figures(predicted: np.ndarray, measured: np.ndarray) -> str:
    e = np.abs(predicted / measured - 1) * 100
    return f"{e.mean():6.2f} % {e.max():7.2f} % {stats.spearmanr(predicted, measured).statistic:8.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="a folder bench/reading_ab.py wrote")
    ap.add_argument("--space", default="darts")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nets", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks (as reading_ab.py)")
    a = ap.parse_args()
    sp = load_space(a.space, a.input_size)
    s = ProfileSettings(threads=a.threads)
    work = plan_work(sp, s)
    rng = random.Random(a.seed)
    archs = [sp.sample(rng) for _ in range(a.nets)]
    probes = sp.probe_archs()
    by = runner.round_values(json.loads((a.out / "validation.json").read_text()), reading=s.reading)
    measured = np.array([float(np.median(by[f"arch{i}"])) for i in range(a.nets + len(probes))])
    print(f"{a.space} @ {a.input_size}, {a.nets} networks, {s.reading} reading, drift-corrected")
    print(f"{'profile':<14}{'reading':<14}{'MAPE':>8}{'max':>10}{'Spearman':>9}")
    for journal in sorted(a.out.glob("profile[0-9].csv")):
        rows = runner.read_rows(journal)
        lut = assemble(space_meta(sp), s, work, rows, run_meta(s, 0.0))
        recorded = {n["name"]: n["measured_ms"] for n in lut.meta["model"]["nets"]}
        kept = [(i, x, recorded[name]) for i, (name, x) in enumerate(probes) if name in recorded]
        drift = drift_of([measured[a.nets + i] for i, _, _ in kept], [(x, then) for _, x, then in kept]) or 1.0
        shipped = np.array([lut.predict(x).total_ms for x in archs]) * drift
        by_role = role_priced(rows, work, lut.meta["model"]["kernel_ms"], sp, s.reading)
        priced = np.array([by_role(x) for x in archs]) * drift
        print(f"{journal.stem:<14}{'shipped':<14}{figures(shipped, measured[: a.nets])}")
        print(f"{'':<14}{'role-priced':<14}{figures(priced, measured[: a.nets])}")


if __name__ == "__main__":
    main()
