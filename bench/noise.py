#!/usr/bin/env python3
"""How steady is this machine? One network timed back to back for a while, in windows.

A shared VM can run in stretches of seconds much slower than between them (on this project's
VMs: 1.68 ms and 2.6 ms for one DARTS network at 32 px). Run this before a profile or a fidelity
report: if the windows' medians disagree by more than a few percent, the LUT's figures will carry
the machine's noise (``hwnas profile`` corrects for speed changes within a run, not between runs).

    python bench/noise.py                         # a random DARTS network at 32 px, 60 s, 3 s windows
    python bench/noise.py --space proxyless --input-size 224 --seconds 30

Prints the percentiles of all runs and each window's p10 / median / p90 (ms). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from hwnas.onnx_io import export_onnx
from hwnas.profiling import runner
from hwnas.space import load_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="darts")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--window", type=float, default=3.0, help="seconds per window")
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    arch = load_space(a.space, a.input_size).sample(random.Random(a.seed))
    model = runner.OrtModel(export_onnx(arch.build(), [arch.input], 1), a.threads, "cpu")
    for _ in range(50):
        model.run()
    times, stamps = [], []
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < a.seconds:
        model.run()
        times.append((time.perf_counter() - now) * 1e3)
        stamps.append(now - start)
    ts, at = np.array(times), np.array(stamps)
    p = np.percentile(ts, [1, 10, 50, 90, 99])
    print(f"{a.space} @ {a.input_size}, {a.threads} thread(s): {len(ts)} runs in {a.seconds:.0f} s; "
          f"p1 {p[0]:.3f}  p10 {p[1]:.3f}  median {p[2]:.3f}  p90 {p[3]:.3f}  p99 {p[4]:.3f} ms")  # fmt: skip
    meds = []
    for w in np.arange(0, a.seconds, a.window):
        sel = ts[(at >= w) & (at < w + a.window)]
        if len(sel):
            meds.append(float(np.median(sel)))
            lo, mid, hi = np.percentile(sel, [10, 50, 90])
            print(f"{w:6.0f} s  n={len(sel):5d}  p10 {lo:.3f}  median {mid:.3f}  p90 {hi:.3f}")
    if meds:
        print(f"window medians: slowest / fastest = {max(meds) / min(meds):.2f}")


if __name__ == "__main__":
    main()
