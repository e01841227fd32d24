#!/usr/bin/env python3
"""Search-step benchmark: time and peak memory of one search step per strategy, against training
one fixed network of the same space. Figures, not assertions.

The setting is the project's target (ProxylessNAS space, width 0.5, 64x64 input, batch 16, 2
intra-op threads, 3 input channels, 10 classes as the search's datasets have)::

    binary step <= 2.5 x fixed step          (physical floor ~2: an architecture and a weight pass)
    binary peak memory above import <= 1/3 of softmax's

Configurations:

* ``fixed`` — one training step (forward, cross-entropy, backward, SGD step with the search's
  momentum and weight decay) of the network of the space with the same MBConv in every layer that
  offers it (``--fixed mbconv_k3_e6`` by default: MobileNetV2's block, whose step is close to the
  mean of the paths the binary weight step samples; the fixed first layer keeps its k3 e1 block);
* ``binary``, ``softmax``, ``gumbel``, ``gumbel-hard`` — one full search step of
  :func:`hwnas.search.run_search`'s first-order loop, by its own functions
  :func:`hwnas.search.arch_step` and :func:`hwnas.search.weight_step`: the
  architecture step (``phase = "arch"``: forward on the architecture batch, CE + hinge latency term,
  backward, Adam step on the logits, for binary the rescale of the sampled pairs, the expected
  latency again for the dual-ascent update) then the weight step (``phase = "weights"``: forward,
  CE, backward, SGD step; no gradient clipping, as in the search). The latency term is priced by a
  synthetic LUT (every key of the space at 1 ms, scale 1, no overhead) so the real expected-latency
  code runs; the budget is half the initial expected latency, so the hinge is active and its
  gradient is computed.

Time: the configurations run in interleaved rounds (round r of every configuration before round
r + 1, so drift hits all alike) after warm-up rounds; each figure is the median over the rounds
(``time.perf_counter``). For the search strategies the weight and architecture steps are also timed
apart. Memory (measured first, while this process is still small): each configuration runs in its
own fresh process (``--one CONFIG``, one after the other), which reads its peak RSS (VmHWM; ``ru_maxrss``
would carry over the parent's peak) once torch and hwnas are imported, the batches built and a
throwaway SGD, Adam and conv backward run (torch's lazy imports, ~150 MB here: import cost, not
search memory) -- the baseline -- and again after ``--mem-steps`` steps (the peak); the figure is
peak minus baseline. The default glibc allocator is used, as ``hwnas search`` does. "weights MB" is
the size of the parameters trained by SGD (gradients and momentum hold one more copy each; binary
creates a path's momentum only once that path was sampled, so its peak still grows slowly later).

    python bench/search_step.py                     # all five: ~1.5 min on a quiet 2-core machine
    python bench/search_step.py --rounds 10 --warmup 1 --mem-steps 2 --no-memory
    python bench/search_step.py --one binary        # memory of one configuration, one JSON line

Prints a table (median step ms, weight / arch step ms, ratio to fixed, peak MB above baseline,
ratio to softmax) and one line per target with its ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hwnas.lut import LUT
from hwnas.objectives import DualLambda, get_objective
from hwnas.search import arch_step, weight_step
from hwnas.space import Space, load_space
from hwnas.strategies import make_strategy
from hwnas.supernet import Supernet, structure

CONFIGS = ("fixed", "binary", "softmax", "gumbel", "gumbel-hard")
BATCH, SIZE, WIDTH, THREADS, CLASSES = 16, 64, 0.5, 2, 10
# the search's defaults for softmax (hwnas.search.SearchConfig); the one-path strategies default to
# lower learning rates (hwnas.search.resolve_defaults), which do not change what a step costs
LR, ARCH_LR, LAM0, DUAL_LR, TAU0, LOSS = 0.05, 3e-3, 1.0, 0.05, 5.0, "hinge"


def space() -> Space:
    return load_space("proxyless", input_size=SIZE, width_mult=WIDTH).with_params(in_channels=3, num_classes=CLASSES)


def synthetic_lut(sp: Space) -> LUT:
    """Every key the supernet prices at 1 ms, scale 1, no overhead."""
    st = structure(sp)
    calls = [c for calls, _ in st.mixed.values() for c in calls] + st.fixed
    keys = sorted({c.key for c in calls if c.priced})
    rows = [
        {"key": k, "op": k.split("|")[0], "params": k.split("|")[1], "input": k.split("|")[2], "latency_ms": 1.0,
         "isolated_ms": 1.0, "isolated_p10_ms": 1.0, "isolated_p90_ms": 1.0, "context_n": 1}
        for k in keys
    ]  # fmt: skip
    meta = {
        "space": sp.name, "input_size": sp.input_size, "width_mult": sp.width_mult, "device": "synthetic",
        "device_kind": "cpu", "backend": "onnxruntime", "threads": THREADS, "batch": 1,
        "model": {"scale": 1.0, "overhead_ms": 0.0},
    }  # fmt: skip
    return LUT.from_rows(rows, meta)


def batches(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Two random batches (weights, architecture), as the search's two halves of the data."""
    g = torch.Generator().manual_seed(seed)
    x, xa = (torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(2))
    y, ya = (torch.randint(0, CLASSES, (BATCH,), generator=g) for _ in range(2))
    return x, y, xa, ya


class Fixed:
    """Training step of one network of the space (the same MBConv wherever a layer offers it)."""

    def __init__(self, sp: Space, choice: str) -> None:
        slots = sp.slots()
        if not any(c.label == choice for s in slots for c in s.choices):
            labels = sorted({c.label for s in slots for c in s.choices})
            raise SystemExit(f"--fixed {choice!r} is not a choice of the space; choose one of {', '.join(labels)}")
        picks = [next((c for c in s.choices if c.label == choice), s.choices[0]) for s in slots]
        self.net = sp.blocks_arch(picks).build()
        self.net.train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR, momentum=0.9, weight_decay=3e-4)

    def params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def step(self, x, y, xa, ya) -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = F.cross_entropy(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        float(loss.detach())
        return time.perf_counter() - t0, 0.0


class Search:
    """One step of hwnas.search.run_search's loop (see the module docstring)."""

    def __init__(self, sp: Space, lut: LUT, name: str) -> None:
        base, hard = name.split("-")[0], name.endswith("-hard")
        self.strategy = make_strategy(base, hard=hard)
        self.strategy.tau = TAU0
        self.net = Supernet(sp, self.strategy, lut)
        self.net.train()
        self.objective = get_objective(LOSS)
        self.dual = DualLambda(LAM0, DUAL_LR)
        with torch.no_grad():
            self.budget = 0.5 * float(self.net.expected_latency_ms())
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=LR, momentum=0.9, weight_decay=3e-4)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=ARCH_LR, betas=(0.5, 0.999), weight_decay=1e-3)

    def params(self) -> int:
        return sum(p.numel() for p in self.net.weight_parameters())

    def step(self, x, y, xa, ya) -> tuple[float, float]:
        """(weight step s, architecture step s): the search loop's own two steps, arch first."""
        return self.run((x, y), (xa, ya))

    def run(
        self, train: tuple[torch.Tensor, ...], val: tuple[torch.Tensor, ...], dist: Any = None
    ) -> tuple[float, float]:
        """:meth:`step` on batches as the loop passes them; with ``dist`` (a data-parallel process,
        ``bench/distributed.py``) each batch is this process's shard ``(x, y, weight)``."""
        t0 = time.perf_counter()
        arch_step(self.net, self.a_opt, self.objective, self.dual, self.budget, val, finite, dist=dist)
        t1 = time.perf_counter()
        loss, logits = weight_step(self.net, self.w_opt, train, finite, dist=dist)
        _stats = float(loss), int((logits.argmax(1) == train[1]).sum())  # the loop's statistics
        t2 = time.perf_counter()
        return t2 - t1, t1 - t0


def finite(loss: torch.Tensor) -> None:
    if not math.isfinite(float(loss.detach())):
        raise SystemExit(f"the loss became {float(loss.detach())}")


def make(name: str, sp: Space, lut: LUT, fixed_choice: str) -> Fixed | Search:
    return Fixed(sp, fixed_choice) if name == "fixed" else Search(sp, lut, name)


def warm_torch() -> None:
    """Torch's lazy imports and runtime set-up, part of the baseline: the first optimiser imports
    torch._dynamo (~150 MB RSS here), the first conv backward starts the thread pools."""
    p = torch.nn.Parameter(torch.zeros(1))
    torch.optim.SGD([p], lr=0.1, momentum=0.9).step()
    torch.optim.Adam([p]).step()
    conv = torch.nn.Conv2d(3, 4, 3)
    F.cross_entropy(conv(torch.randn(2, 3, 8, 8)).mean((2, 3)), torch.zeros(2, dtype=torch.long)).backward()


def maxrss_mb() -> float:
    """This process's peak RSS (MB): VmHWM on Linux, else ru_maxrss.

    ru_maxrss is no good in a child: exec carries the parent's peak over into it (a child of a
    process that once held 800 MB reports >= 800 MB), while VmHWM belongs to the new address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one(name: str, steps: int, fixed_choice: str) -> dict[str, Any]:
    """Peak RSS above the baseline (imports, batches, torch warm-up) over ``steps`` steps of one configuration."""
    torch.manual_seed(0)
    random.seed(0)
    sp = space()
    lut = synthetic_lut(sp)
    data = batches()
    warm_torch()
    base = maxrss_mb()
    cfg = make(name, sp, lut, fixed_choice)
    built = maxrss_mb()
    for _ in range(steps):
        cfg.step(*data)
    peak = maxrss_mb()
    return {
        "config": name, "baseline_mb": base, "built_mb": built - base, "peak_mb": peak - base, "steps": steps,
        "weights_mb": cfg.params() * 4 / 2**20,
    }  # fmt: skip


def timing(rounds: int, warmup: int, fixed_choice: str) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    random.seed(0)
    sp = space()
    lut = synthetic_lut(sp)
    data = batches()
    cfgs = {n: make(n, sp, lut, fixed_choice) for n in CONFIGS}
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in CONFIGS}
    t_start = time.perf_counter()
    for r in range(warmup + rounds):
        last = {}
        for n, cfg in cfgs.items():
            last[n] = cfg.step(*data)
            if r >= warmup:
                times[n].append(last[n])
        what = f"warm-up {r + 1}" if r < warmup else f"round {r - warmup + 1}"
        print(
            f"  {what}: " + "  ".join(f"{n} {sum(t) * 1e3:.0f} ms" for n, t in last.items()),
            file=sys.stderr,
            flush=True,
        )
    out = {}
    for n, ts in times.items():
        tot = [w + a for w, a in ts]
        out[n] = {
            "step_ms": statistics.median(tot) * 1e3, "min_ms": min(tot) * 1e3, "max_ms": max(tot) * 1e3,
            "weights_ms": statistics.median(w for w, _ in ts) * 1e3, "arch_ms": statistics.median(a for _, a in ts) * 1e3,
        }  # fmt: skip
    out["_"] = {"seconds": time.perf_counter() - t_start}
    return out


def memory(steps: int, fixed_choice: str) -> dict[str, dict[str, Any]]:
    """Each configuration in its own fresh process, one after the other (two at once would put four
    intra-op threads on two cores, which slows torch by up to 100x)."""
    out: dict[str, dict[str, Any]] = {}
    for n in CONFIGS:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--one",
            n,
            "--mem-steps",
            str(steps),
            "--fixed",
            fixed_choice,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr}")
        out[n] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  memory {n}: {out[n]['peak_mb']:.1f} MB above baseline", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds (each runs every configuration once)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    ap.add_argument("--mem-steps", type=int, default=3, help="steps per memory process")
    ap.add_argument("--fixed", default="mbconv_k3_e6", help="the choice in every layer of the fixed network")
    ap.add_argument("--one", choices=CONFIGS, help="memory of one configuration in this process; prints JSON")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory processes")
    a = ap.parse_args()
    torch.set_num_threads(THREADS)
    if a.one:
        print(json.dumps(one(a.one, a.mem_steps, a.fixed)), flush=True)
        return
    t0 = time.perf_counter()
    print(
        f"proxyless x{WIDTH:g} @ {SIZE}px, batch {BATCH}, 3 in-channels, {CLASSES} classes, {THREADS} threads, "
        f"torch {torch.__version__}; fixed = {a.fixed} in every layer; {a.rounds} rounds after {a.warmup} warm-up",
        flush=True,
    )
    mem = None if a.no_memory else memory(a.mem_steps, a.fixed)
    tm = timing(a.rounds, a.warmup, a.fixed)
    print()
    head = f"{'config':<12}{'step ms':>9}{'min':>8}{'max':>8}{'weights ms':>11}{'arch ms':>9}{'x fixed':>9}"
    if mem:
        head += f"{'weights MB':>11}{'built MB':>9}{'peak MB':>9}{'x softmax':>10}"
    print(head)
    fx = tm["fixed"]["step_ms"]
    for n in CONFIGS:
        t = tm[n]
        wa = ("", "") if n == "fixed" else (f"{t['weights_ms']:.1f}", f"{t['arch_ms']:.1f}")
        line = (
            f"{n:<12}{t['step_ms']:>9.1f}{t['min_ms']:>8.1f}{t['max_ms']:>8.1f}{wa[0]:>11}{wa[1]:>9}"
            f"{t['step_ms'] / fx:>9.2f}"
        )
        if mem:
            m = mem[n]
            line += (
                f"{m['weights_mb']:>11.1f}{m['built_mb']:>9.1f}{m['peak_mb']:>9.1f}"
                f"{m['peak_mb'] / mem['softmax']['peak_mb']:>10.2f}"
            )
        print(line)
    print()
    if mem:
        print(
            f"baseline RSS (imports, batches, torch warm-up) {mem['fixed']['baseline_mb']:.0f} MB; peak over {a.mem_steps} steps "
            f"from a fresh process; built = after building the net and optimisers"
        )
    print(f"timing took {tm['_']['seconds']:.0f} s; total {time.perf_counter() - t0:.0f} s")
    print()
    ratio = tm["binary"]["step_ms"] / fx
    print(f"binary step / fixed step = {ratio:.2f} (target <= 2.5): {'met' if ratio <= 2.5 else 'MISSED'}")
    if mem:
        r = mem["binary"]["peak_mb"] / mem["softmax"]["peak_mb"]
        print(f"binary peak / softmax peak = {r:.2f} (target <= 0.33): {'met' if r <= 1 / 3 else 'MISSED'}")
    for n in ("softmax", "gumbel", "gumbel-hard"):
        print(f"{n} step / fixed step = {tm[n]['step_ms'] / fx:.2f}")
    b = tm["binary"]
    print(
        f"binary weight step / fixed step = {b['weights_ms'] / fx:.2f}; binary arch step / fixed step = {b['arch_ms'] / fx:.2f}"
    )
    if mem:
        for n in ("fixed", "gumbel", "gumbel-hard"):
            print(f"{n} peak / softmax peak = {mem[n]['peak_mb'] / mem['softmax']['peak_mb']:.2f}")
        print(f"binary peak / fixed peak = {mem['binary']['peak_mb'] / mem['fixed']['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
