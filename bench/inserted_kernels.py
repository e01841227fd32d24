#!/usr/bin/env python3
"""How much of a network's kernel time is in kernels ONNX Runtime inserts itself, and where.

On x86 ONNX Runtime runs convolutions in a blocked NCHWc layout and inserts ``ReorderInput`` /
``ReorderOutput`` kernels where they meet kernels that need plain NCHW (a FactorizedReduce's
strided slices, a grouped conv, a channel shuffle, the head's flatten). They are in no block's
``/nodes.<i>/`` scope. ``hwnas profile`` charges each to the block that runs next
(:func:`hwnas.profiling.runner.block_kernels`); before, they were left to the whole-network
overhead term, which can only carry their average. This prints, per space, how many there are per
network, their share of its kernel time (min / median / max: the spread is what a constant cannot
carry), and the ops they are now charged to.

    python bench/inserted_kernels.py                                 # darts @ 32, proxyless and fbnet @ 224
    python bench/inserted_kernels.py --configs darts:32 --nets 50

One profiled session per network (node profiler on, so times read a little high; plain
``run`` calls, not the profile's bound inputs). A share is the median over runs of each run's. Figures, not
assertions; about 1 minute for the defaults.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hwnas.onnx_io import export_onnx
from hwnas.profiling import runner
from hwnas.space import load_space

RUNS = 12  # the first 2 are dropped as warm-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["darts:32", "proxyless:224", "fbnet:224"], help="space:size")
    ap.add_argument("--nets", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1000, help="seed of the networks (as bench/fidelity.py)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    for cfg in a.configs:
        name, size = cfg.split(":")
        sp = load_space(name, int(size))
        rng = random.Random(a.seed)
        counts, shares = [], []
        by_op: dict[str, float] = defaultdict(float)
        for _ in range(a.nets):
            arch = sp.sample(rng)
            with tempfile.TemporaryDirectory() as tmp:
                so = runner.session_options(a.threads, profile_prefix=str(Path(tmp) / "prof"))
                sess = ort.InferenceSession(
                    export_onnx(arch.build(), [arch.input]), so, providers=["CPUExecutionProvider"]
                )
                x = np.random.default_rng(0).standard_normal((1, *arch.input)).astype(np.float32)
                for _ in range(RUNS):
                    sess.run(None, {sess.get_inputs()[0].name: x})
                events = json.loads(Path(sess.end_profiling()).read_text())
            with_all, _ = runner.block_kernels(events, RUNS)
            kernels = runner.kernel_events(events)
            scoped, _ = runner.block_kernels([e for e in kernels if not runner.inserted(e)], RUNS)
            # per block and run, the inserted kernels' time: all its kernels less its own (ms)
            extra = {i: np.subtract(v, scoped.get(i, [0.0] * RUNS))[2:] for i, v in with_all.items()}
            for i, ms in extra.items():
                by_op[arch.plan.nodes[i].call.op] += float(np.median(ms)) / a.nets
            total = np.sum([v[2:] for v in with_all.values()], axis=0)
            counts.append(sum(1 for e in kernels if runner.inserted(e)) // RUNS)
            shares.append(float(np.median(np.sum(list(extra.values()), axis=0) / total)) * 100)
        top = ", ".join(f"{op} {ms * 1e3:.1f}" for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1]) if ms > 5e-4)
        print(
            f"{cfg:>14}  inserted kernels per network {min(counts)}-{max(counts)} (median {np.median(counts):.0f}); "
            f"share of kernel time {min(shares):.1f} / {np.median(shares):.1f} / {max(shares):.1f} % (min / median / max)"
        )
        print(f"{'':>14}  charged to (µs per network, mean): {top or '-'}")


if __name__ == "__main__":
    main()
