#!/usr/bin/env python3
"""Data-parallel search throughput: 1 process against 2 (torch.distributed, gloo, CPU). Figures only.

The setting is bench/search_step.py's (ProxylessNAS space, width 0.5, 64x64 input, 3 channels, 10
classes, synthetic LUT, hinge loss with an active budget) at a global batch of ``--batch`` (32:
16 per process with 2 processes, search_step's batch). One search step is what
:func:`hwnas.search.run_search` runs: the architecture step on one batch then the weight step on
another, so a step processes ``2 x batch`` images; with 2 processes each runs its shard
(:func:`hwnas.distributed.shard`) through the same :func:`hwnas.search.arch_step` /
:func:`hwnas.search.weight_step` with the process group, the cross-entropy summed and the
gradients averaged by ``all_reduce`` (:mod:`hwnas.distributed`). Data loading is not timed.

Configurations, each in fresh processes (spawned), one after the other, in interleaved rounds:

* ``1 proc x 1 thread`` — the single-process search, one intra-op thread;
* ``1 proc x 2 threads`` — the single-process search using both cores (what ``hwnas search`` does
  on this machine by default);
* ``2 procs x 1 thread`` — ``torchrun --nproc-per-node 2`` (torchrun sets OMP_NUM_THREADS=1).

Each figure is the median over rounds of the mean step time of ``--steps`` steps after ``--warmup``
steps; images/s = 2 x batch / step time. "comm ms" is the time per step the processes spend in
``all_reduce`` (the global loss sums and the gradient averages, including waiting for the other
process). On a 2-core machine two processes share the cores that one process with two threads
would use, so expect little gain there; data parallelism pays with one GPU (or one machine) per
process.

    python bench/distributed.py                       # binary and softmax: ~2 min on a quiet 2-core VM
    python bench/distributed.py --strategies binary --rounds 2 --steps 5
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_step import CLASSES, SIZE, WIDTH, Search, space, synthetic_lut

CONFIGS = (("1 proc x 1 thread", 1, 1), ("1 proc x 2 threads", 1, 2), ("2 procs x 1 thread", 2, 1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(
    rank: int, world: int, threads: int, port: int, strategy: str, batch: int, steps: int, warmup: int, q: Any
) -> None:
    """One process of a configuration; rank 0 puts ``{"step_s": [...], "comm_s": total}`` on ``q``."""
    import torch.distributed as tdist

    from hwnas.distributed import session, shard

    torch.set_num_threads(threads)
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
         "WORLD_SIZE": str(world), "HWNAS_DIST_BACKEND": "gloo"}
    )  # fmt: skip
    comm = [0.0]
    if world > 1:
        real = tdist.all_reduce

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            out = real(*a, **k)
            comm[0] += time.perf_counter() - t0
            return out

        tdist.all_reduce = timed  # hwnas.distributed calls it through the module
    with session() as dist:
        torch.manual_seed(0)
        sp = space()
        search = Search(sp, synthetic_lut(sp), strategy)
        g = torch.Generator().manual_seed(1)
        x, xa = (torch.randn(batch, 3, SIZE, SIZE, generator=g) for _ in range(2))
        y, ya = (torch.randint(0, CLASSES, (batch,), generator=g) for _ in range(2))
        if dist is not None:
            pos, w = shard(batch, dist.rank, dist.world)
            wt = torch.tensor(w)
            train, val = (x[pos], y[pos], wt), (xa[pos], ya[pos], wt)
        else:
            train, val = (x, y), (xa, ya)

        def step() -> None:
            search.run(train, val, dist)

        for _ in range(warmup):
            step()
        if dist is not None:
            tdist.barrier()
        comm[0] = 0.0
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        if rank == 0:
            q.put({"step_s": times, "comm_s": comm[0]})


def run(world: int, threads: int, strategy: str, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    args = (world, threads, _free_port(), strategy, batch, steps, warmup, q)
    mp.start_processes(worker, args=args, nprocs=world, join=True, start_method="spawn")
    return q.get(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategies", nargs="+", default=["binary", "softmax"], help="binary softmax gumbel gumbel-hard")
    ap.add_argument("--batch", type=int, default=32, help="global batch (images per half per step)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per launch")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3, help="launches per configuration (interleaved)")
    a = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"proxyless x{WIDTH:g} @ {SIZE}px, global batch {a.batch} (x2 images per step: arch + weights), "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start, torch {torch.__version__}; "
        f"{a.rounds} rounds x {a.steps} steps after {a.warmup} warm-up",
        flush=True,
    )
    t_start = time.perf_counter()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(a.rounds):
        for strategy in a.strategies:
            for name, world, threads in CONFIGS:
                res = run(world, threads, strategy, a.batch, a.steps, a.warmup)
                results.setdefault((strategy, name), []).append(res)
                ms = statistics.mean(res["step_s"]) * 1e3
                print(f"  round {r + 1} {strategy:<8} {name:<20} {ms:8.1f} ms/step", file=sys.stderr, flush=True)
    print()
    print(f"{'strategy':<10}{'config':<22}{'step ms':>9}{'images/s':>10}{'vs 1x1':>8}{'vs 1x2':>8}{'comm ms':>9}")
    for strategy in a.strategies:
        fig = {}
        for name, _, _ in CONFIGS:
            runs = results[(strategy, name)]
            step = statistics.median(statistics.mean(x["step_s"]) for x in runs)
            comm = statistics.median(x["comm_s"] / len(x["step_s"]) for x in runs)
            fig[name] = (step, comm)
        base1, base2 = fig[CONFIGS[0][0]][0], fig[CONFIGS[1][0]][0]
        for name, (step, comm) in fig.items():
            print(
                f"{strategy:<10}{name:<22}{step * 1e3:>9.1f}{2 * a.batch / step:>10.1f}{base1 / step:>8.2f}"
                f"{base2 / step:>8.2f}{comm * 1e3:>9.1f}"
            )
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {load:.2f} at start, {load_end:.2f} at the end; took {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
