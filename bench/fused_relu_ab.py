#!/usr/bin/env python3
"""Should a conv that ONNX Runtime fuses with the next block's leading ReLU be charged to the block
that owns the conv? (DARTS @ 32, one thread; an A/B of a change not shipped.)

Where every reader of a DARTS preprocessing conv's output (``relu_conv_bn``; also the stem) starts
with a ReLU, ONNX Runtime merges those ReLUs and fuses the one left into the conv, and names the
fused kernel after the ReLU: ``/nodes.J/op/op.0/Relu_output_0_nchwc``, in the scope of the first
reader J. ``runner.block_kernels`` charges a kernel to the block whose scope names it, so today
the reader J carries the conv (20-70 µs) and the preprocessing block reads 0 or only its own
ReLU; where a pool or an identity reads the state too, nothing is fused and each block reads its
own work. A key's price is the median over its contexts, which mixes both.

The alternative read here ("fused"): such a kernel — the first kernel of a block that leads with a
ReLU, a Conv, named after a ReLU's output — is charged to the block that writes that block's input;
and a stride-1 cell edge whose ReLU was fused that way is priced in its shared-ReLU role (as when
an earlier edge runs the ReLU; ``Plan.roles``), where its input is written by a conv-ending op
other than a factorized reduce (whose output is a BN after a concat, into which nothing fuses)
and every reader of it leads with a ReLU.

Each profile's networks are timed once: the node profiler's events are read both ways, into two
journals (``profileK.csv`` today's, ``profileK-fused.csv`` the alternative; the op and network
rows are the same). Then one validation of ``--nets`` random networks plus the probe networks
(9 rounds), as ``bench/reading_ab.py``. Prints per LUT and reading the fidelity figures (raw and
drift-corrected, as ``validate-lut``) and the per-op spread of a key's readings across its
contexts (mean over keys of the median absolute deviation, µs): the price transfers to another
network only as well as that spread allows. Every ``--out`` folder without timings is timed
(about 4.5 minutes each on a 2-core machine); with several, the summary averages over all.

    python bench/fused_relu_ab.py --out bench/out/fused-ab/out1 bench/out/fused-ab/out2

The change is done by replacing ``runner.block_kernels`` and ``Plan.roles`` in this process only.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from validation import validation

from hwnas.arch import Arch, Plan
from hwnas.profiling import runner
from hwnas.profiling.profile import ProfileSettings, Work, assemble, loaders, plan_work, run_meta, space_meta
from hwnas.profiling.runner import NODE_SCOPE, Job, Timed, TimingSettings, summarize
from hwnas.space import Space, load_space

TODAY_KERNELS = runner.block_kernels
TODAY_ROLES = Plan.roles
CONVS = ("Conv", "FusedConv")


def fused_block_kernels(events: list[dict], runs: int, writers: dict[int, int]) -> tuple[dict, dict]:
    """``runner.block_kernels``, but a Conv kernel named after a ReLU that is the first kernel of
    a block J in ``writers`` (blocks that lead with a ReLU -> the block that writes J's input)
    is charged to that writer."""
    ks = runner.kernel_events(events)
    n = len(ks) // runs
    names = [e["name"] for e in ks[:n]]
    ops = [e.get("args", {}).get("op_name", "") for e in ks[:n]]
    owner = [int(m.group(1)) if (m := NODE_SCOPE.search(name)) else None for name in names]
    first: dict[int, int] = {}
    for j, o in enumerate(owner):
        if o is not None:
            first.setdefault(o, j)
    for block, writer in writers.items():
        j = first.get(block)
        if j is not None and ops[j] in CONVS and "Relu_output" in names[j].rsplit("/", 1)[-1]:
            owner[j] = writer
    after: int | None = None
    for j in reversed(range(n)):  # inserted kernels as block_kernels charges them
        owner[j] = after = owner[j] if owner[j] is not None else after
    before: int | None = None
    for j in range(n):
        owner[j] = before = owner[j] if owner[j] is not None else before
    per_run: dict[int, list[float]] = defaultdict(lambda: [0.0] * runs)
    for k, e in enumerate(ks):
        if owner[k % n] is not None:
            per_run[owner[k % n]][k // n] += e["dur"] / 1e3
    return dict(per_run), dict(Counter(o for o in owner if o is not None))


def fused_roles(self: Plan) -> tuple[str, ...]:
    """``Plan.roles``, and a ReLU-led edge whose ReLU its input's conv runs is "shared"."""
    roles = list(TODAY_ROLES(self))
    readers: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(self.nodes):
        for j in n.inputs:
            readers[j].append(i)

    def fused(i: int) -> bool:
        c = self.nodes[i].call if i >= 0 else None
        return (
            c is not None
            and c.trailing_conv
            and c.op != "factorized_reduce"
            and all(self.nodes[r].call.leading_relu for r in readers[i])
        )

    for k, n in enumerate(self.nodes):
        if roles[k] == "own" and n.call.leading_relu and not n.call.weightless and fused(n.inputs[0]):
            roles[k] = "shared"
    return tuple(roles)


def writers_of(arch: Arch) -> dict[int, int]:
    """Blocks that lead with a ReLU, each with the block that writes its input."""
    return {j: n.inputs[0] for j, n in enumerate(arch.plan.nodes) if n.call.leading_relu and n.inputs[0] >= 0}


class BothWays:
    """A network's model whose node profile is also read the fused way, into ``alt``."""

    def __init__(self, inner: Timed, writers: dict[int, int], key: tuple[str, int], alt: dict) -> None:
        self.inner, self.writers, self.key, self.alt = inner, writers, key, alt
        self.kernels: dict[int, int] = {}

    def time(self, s: TimingSettings) -> list[float]:
        return self.inner.time(s)

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        seen: dict[str, Any] = {}

        def both(events: list[dict], runs: int) -> tuple[dict, dict]:
            seen["fused"] = fused_block_kernels(events, runs, self.writers)
            return TODAY_KERNELS(events, runs)

        runner.block_kernels = both
        try:
            out = self.inner.node_times(s)
        finally:
            runner.block_kernels = TODAY_KERNELS
        per_run, kernels = seen["fused"]
        skip = 1 + max(s.min_warmup_runs, 5)  # as OrtModel.node_times: _bind's run and the warm-up
        self.alt[self.key] = [
            {"name": f"{self.key[0]}#{i}", "round": self.key[1], **summarize(xs[skip : skip + s.profile_runs]),
             "kernels": kernels.get(i, "")}
            for i, xs in sorted(per_run.items())
        ]  # fmt: skip
        self.kernels = getattr(self.inner, "kernels", {})
        return out


def time_profile(work: Work, s: ProfileSettings, load_op: Callable, load_net: Callable, out: Path, k: int) -> None:
    """Time one profile; write today's journal and the fused one."""
    today, fused = out / f"profile{k}.csv", out / f"profile{k}-fused.csv"
    alt: dict[tuple[str, int], list[dict]] = {}
    rounds: Counter = Counter()
    jobs = []
    for job in work.jobs(load_op, load_net):
        if job.kind == "net":

            def load(job: Job = job) -> Timed:
                rnd = rounds[job.name]
                rounds[job.name] += 1
                return BothWays(job.load(), writers_of(work.nets[job.name]), (job.name, rnd), alt)

            job = Job(job.name, job.kind, load)
        jobs.append(job)
    today.unlink(missing_ok=True)
    t0 = time.perf_counter()
    runner.run_jobs(jobs, s.rounds, s.effective_timing, today)
    print(f"{out} profile {k}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows: list[dict[str, Any]] = []
    for r in runner.read_rows(today):  # the same rows in the same order, the blocks read the fused way
        if "#" not in r["name"]:
            rows += alt.get((r["name"], int(r["round"])), [])
            rows.append(r)
    runner.append_rows(fused, rows)


def spread(sp: Space, work: Work, journal: list[dict[str, str]]) -> dict[str, float]:
    """Per op: the mean over its keys (and roles) of the median absolute deviation of a key's
    readings across its contexts (µs; a context's reading is its median over rounds)."""
    vals: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in journal:
        if "#" in r["name"]:
            net, i = r["name"].split("#")
            vals[net, int(i)].append(float(r["p10_ms"]))
    ctx: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for name, arch in work.nets.items():
        for i, (n, role) in enumerate(zip(arch.plan.nodes, arch.plan.roles(), strict=True)):
            if n.call.priced and (name, i) in vals:
                ctx[n.call.op, n.call.key, role].append(float(np.median(vals[name, i])) * 1e3)
    per_op: dict[str, list[float]] = defaultdict(list)
    for (op, _, _), xs in ctx.items():
        if len(xs) >= 3:
            per_op[op].append(float(np.median(np.abs(np.array(xs) - np.median(xs)))))
    return {op: float(np.mean(v)) for op, v in sorted(per_op.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, nargs="+", default=[Path("bench/out/fused-ab/run")])
    ap.add_argument("--profiles", type=int, default=2, help="profiles per folder")
    ap.add_argument("--nets", type=int, default=50, help="validation networks")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the validation networks (as bench/fidelity.py)")
    a = ap.parse_args()
    sp = load_space("darts", 32)
    s = ProfileSettings()
    work = plan_work(sp, s)
    load_op, load_net = loaders(s)
    table: dict[str, list[dict[str, float]]] = defaultdict(list)
    spreads: dict[str, list[dict[str, float]]] = defaultdict(list)
    for out in a.out:
        out.mkdir(parents=True, exist_ok=True)
        for k in range(a.profiles):
            if not (out / f"profile{k}-fused.csv").exists():
                time_profile(work, s, load_op, load_net, out, k)
        val = validation(out, sp, a.nets, a.seed, load_net, s.effective_timing)
        measured, self_diff = val.read(s.reading)
        print(
            f"\n{out}: validation self-diff {self_diff:.2f} %, Spearman of a perfect LUT about {val.ceiling(s.reading):.4f}"
        )
        for variant, roles in (("today", TODAY_ROLES), ("fused", fused_roles)):
            Plan.roles = roles  # type: ignore[method-assign]
            try:
                for k in range(a.profiles):
                    journal = runner.read_rows(out / f"profile{k}{'-fused' if variant == 'fused' else ''}.csv")
                    lut = assemble(space_meta(sp), s, work, journal, run_meta(s, 0.0))
                    _, r, c = val.figures(lut, measured)
                    row = {"MAPE": r["mape_pct"], "corr. MAPE": c["mape_pct"], "corr. max": c["max_error_pct"],
                           "corr. ±5 %": c["within_5pct"] * 100, "Spearman": r["spearman"],
                           "fit": lut.meta["model"]["fit_mape_pct"]}  # fmt: skip
                    table[variant].append(row)
                    spreads[variant].append(spread(sp, work, journal))
                    print(f"  {variant:<6} LUT {k}: " + "  ".join(f"{n} {v:.4f}" if n == "Spearman" else f"{n} {v:.2f}"
                                                          for n, v in row.items()))  # fmt: skip
            finally:
                Plan.roles = TODAY_ROLES  # type: ignore[method-assign]
    n = len(table["today"])
    print(f"\nmeans over {n} LUT(s), today -> fused (for how many LUTs fused is better):")
    for name in table["today"][0]:
        x = np.array([r[name] for r in table["today"]])
        y = np.array([r[name] for r in table["fused"]])
        better = int(np.sum(y > x)) if name in ("Spearman", "corr. ±5 %") else int(np.sum(y < x))
        print(f"  {name:<11} {x.mean():8.4f} -> {y.mean():8.4f}   better for {better} of {n}")
    print("spread of a key's readings across contexts (µs, mean over keys and LUTs), today -> fused:")
    for op in spreads["fused"][0]:
        x = np.mean([d.get(op, np.nan) for d in spreads["today"]])
        y = np.mean([d[op] for d in spreads["fused"]])
        print(f"  {op:<18} {x:6.2f} -> {y:6.2f}")


if __name__ == "__main__":
    main()
