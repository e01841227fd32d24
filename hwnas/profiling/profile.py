"""Build a latency table for a space on a target: what ``hwnas profile`` runs.

Method (recorded in the LUT metadata as ``model.method = "context"``):

1. every unique op call of the space is timed alone (``isolated_ms``, for ``op_target_ms`` a
   round: between the networks a probe of the machine's speed, and in step 4 perhaps a share of
   the key's price);
2. the space's probe networks (which together contain every op call, see
   :meth:`hwnas.space.Space.probe_archs`) and ``calib_nets`` random networks are timed whole, and
   each of their blocks is timed *inside* them (ONNX Runtime's node profiler; for torch, the clock
   read between nodes; a kernel ONNX Runtime inserted itself, such as a layout reorder, counts
   for the block that runs next). A block alone in a hot loop runs with warmer caches and without
   the layout conversions a network amortises, so in-network times are what a network is made of;
   a key's ``profiled_ms`` is the median of its in-network times, and ``kernels`` how many
   kernels ONNX Runtime ran for it;
3. ``predicted = scale * sum(profiled_ms) - scale * kernel_ms * sum(kernels) + overhead_ms`` is
   fitted by relative least squares to the whole-network times (``overhead_ms``: per-run
   overhead and glue the blocks do not own; ``kernel_ms``: what the node profiler adds to each
   kernel it times, about 2 µs per kernel here, which matters for blocks of 5-40 µs). A key's
   in-network price is ``profiled_ms - kernel_ms * kernels`` (not below 0). Without kernel
   counts (torch, older journals) ``kernel_ms`` is 0;
4. the whole-net model is fitted twice (:func:`fit_whole`): on the sums of the in-network prices
   alone, and on those and the sums of the blocks' times alone together; the second is kept where
   it predicts the profile's own networks better when each is left out of the fit in turn (for
   15 of 18 DARTS @ 32 profiles of 4 December 2026, whose blocks of a few µs the node profiler
   reads coarsely; for none of 10 ProxylessNAS @ 224 profiles). Each key's ``latency_ms =
   (1 - isolated_share) * in-network price + isolated_share * isolated_ms`` (``isolated_share``
   0 where the first is kept), so that the table prices a network as ``scale * sum(latency_ms) +
   overhead_ms``, the one formula every user of a LUT applies;
5. with ``refit_nets`` (0 by default), that many more random networks are timed whole only, and
   every price (a key in each of its roles) is refitted on them and the calibration networks
   (:func:`refit_prices`): moved by a ridge-regularised correction, with ``scale`` and
   ``overhead_ms`` anew, where that ranks networks left out of the fit better. The formula stays
   the same; ``model.refit`` records the corrections.

All jobs run in rounds (round ``r`` of every job before round ``r + 1`` of any, in a seeded
shuffled order per round). A round's *reading* of a model is the 10th percentile of its runs
(``ProfileSettings.reading``; ``median`` for a dedicated board): a shared machine also slows down
for part of a round, which moves a round's median but not its fast tail. A block's time inside a
network is read at the median of its profiled runs where it is under 50 µs (``block_reading``
``"auto"``, :data:`hwnas.profiling.runner.COARSE_BELOW_MS`: the node profiler reports whole
microseconds). Each figure is the median over rounds of the readings, each divided first by the
machine's speed when it was timed
(:func:`hwnas.profiling.runner.speed_factors`: a shared machine runs in episodes of seconds 1.5x
slower, which hit every model timed meanwhile alike). After ``rounds`` rounds, more rounds of
the networks are timed, up to ``max_rounds``, while a whole network's median is uncertain by more
than ``steady_pct`` (:func:`steady_rounds`).
Results go to a journal in ``<out>.work/`` as they come, so an interrupted profile resumes where
it stopped; the LUT is written only when complete, atomically.
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwnas import __version__
from hwnas.arch import Arch
from hwnas.checks import is_number
from hwnas.errors import HwnasError
from hwnas.lut import LUT, LutError, block_columns, block_prices
from hwnas.ops import OpCall, parse_key
from hwnas.profiling import runner
from hwnas.profiling.runner import Job, Timed, TimingSettings, read_rows, round_medians
from hwnas.space import SPACES_DIR, Space

BACKENDS = ("onnxruntime", "torch")
DEVICES = ("cpu", "cuda")
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ProfileSettings:
    """How a LUT is measured; every field is recorded in the LUT metadata."""

    backend: str = "onnxruntime"  # onnxruntime | torch
    device: str = "cpu"  # cpu | cuda (ONNX Runtime's CUDA provider, or torch on CUDA)
    threads: int = 1  # intra-op threads, fixed for the whole profile
    batch: int = 1
    rounds: int = 3  # time-separated rounds; a figure is the median over rounds of each round's reading
    # then more rounds, up to max_rounds, while a whole network's median over the rounds is uncertain by more
    # than steady_pct (its standard error, from how far the networks move from round to round: steady_rounds).
    # Those extra rounds time the networks only: on 4 December 2026 a quiet machine's ProxylessNAS @ 224
    # networks moved 2-4.6 % from round to round and took 3-5 rounds, 56-58 s in 5 (the target is 60), of
    # which the blocks alone were 4.2 s a round. Re-read from five stored 5-round journals (three ProxylessNAS @ 224,
    # two DARTS @ 32) without the blocks alone in rounds 4-5, the LUTs ranked 50 networks as well
    # (Spearman 0.9948 / 0.9950 / 0.9950 against 0.9943 / 0.9948 / 0.9951; 0.9920 / 0.9891 against
    # 0.9920 / 0.9878) and moved 0.2-1.9 % in level, as much as stopping at 3 rounds moved them
    max_rounds: int = 5
    steady_pct: float = 2.0
    reading: str = runner.DEFAULT_READING  # the statistic of a round's runs that is its reading (runner.READINGS)
    # the same for a block's runs inside a network ("auto": the median under 50 us, where ONNX
    # Runtime's node profiler's whole microseconds are coarse; see effective_block_reading)
    block_reading: str = runner.DEFAULT_BLOCK_READING
    calib_nets: int = 8  # random networks added to the probe networks for the whole-net model
    # random networks timed whole only (in the first `rounds` rounds), whose times refit each price
    # (refit_prices); 0: none. Costs about 0.7 s a network on DARTS @ 32 (its export and 3 rounds)
    refit_nets: int = 0
    seed: int = 0  # picks the calibration and refit networks
    timing: TimingSettings = field(default_factory=TimingSettings)
    spinning: bool | None = None  # ORT pool threads spin when idle; None: on iff threads > 1 (ORT's default)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise HwnasError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.device not in DEVICES:
            raise HwnasError(f"unknown device {self.device!r}; expected one of {', '.join(DEVICES)}")
        if (
            self.threads < 1 or self.batch < 1 or self.rounds < 1 or self.max_rounds < 1
            or self.calib_nets < 0 or self.refit_nets < 0
        ):  # fmt: skip
            raise HwnasError("threads, batch, rounds and max-rounds must be >= 1, calib-nets and refit-nets >= 0")
        if not (is_number(self.steady_pct) and self.steady_pct > 0):
            raise HwnasError(f"steady_pct must be a number above 0 (percent), got {self.steady_pct!r}")
        if self.reading not in runner.READINGS:
            raise HwnasError(f"unknown reading {self.reading!r}; expected one of {', '.join(runner.READINGS)}")
        if self.block_reading not in runner.BLOCK_READINGS:
            raise HwnasError(
                f"unknown block_reading {self.block_reading!r}; expected one of {', '.join(runner.BLOCK_READINGS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def effective_block_reading(self) -> str:
        """How block rows are read: ``block_reading``, except that ``"auto"`` means ``reading``
        on torch, whose in-network times are clock readings, not ONNX Runtime's whole-µs node
        profiler."""
        return self.reading if self.block_reading == "auto" and self.backend != "onnxruntime" else self.block_reading

    @property
    def ort_spinning(self) -> bool:
        return self.threads > 1 if self.spinning is None else self.spinning

    @property
    def effective_timing(self) -> TimingSettings:
        """The timing settings, with a 50 ms cool-down between models when pool threads spin
        (a spinning pool slowed the next session 3.7x on this project's machines)."""
        if self.backend == "onnxruntime" and self.ort_spinning and self.timing.cooldown_ms < 50:
            return replace(self.timing, cooldown_ms=50.0)
        return self.timing


@dataclass(frozen=True)
class Work:
    """What a profile times, by job name: op calls (alone), networks (whole and their blocks inside
    them) and refit networks (whole only, :func:`refit_prices`)."""

    ops: dict[str, OpCall]
    nets: dict[str, Arch]
    refit: dict[str, Arch] = field(default_factory=dict)

    @property
    def timed_whole(self) -> dict[str, Arch]:
        """Every network the profile times whole: the probe and calibration networks, then the
        refit networks."""
        return {**self.nets, **self.refit}

    def jobs(self, load_op: Callable[[OpCall], Timed], load_net: Callable[[Arch], Timed]) -> list[Job]:
        jobs = [Job(n, "op", (lambda c=c: load_op(c))) for n, c in self.ops.items()]
        jobs += [Job(n, "net", (lambda a=a: load_net(a))) for n, a in self.nets.items()]
        jobs += [Job(n, "model", (lambda a=a: load_net(a))) for n, a in self.refit.items()]
        return jobs


def plan_work(space: Space, s: ProfileSettings) -> Work:
    """The op calls and networks a profile of ``space`` times (deterministic for a seed)."""
    ops = {f"op:{c.key}": c for c in space.calls()}
    nets = {f"net:{name}": a for name, a in space.probe_archs() + calibration_archs(space, s.seed, s.calib_nets)}
    return Work(ops, nets, {f"net:{name}": a for name, a in refit_archs(space, s.seed, s.refit_nets)})


def calibration_archs(space: Space, seed: int, n: int) -> list[tuple[str, Arch]]:
    """The ``n`` random calibration networks a profile with ``seed`` times, by name (``calib-<i>``):
    drawn again from the same seed, they are the ones that profile timed."""
    rng = random.Random(seed)
    return [(f"calib-{i}", space.sample(rng)) for i in range(n)]


def refit_archs(space: Space, seed: int, n: int) -> list[tuple[str, Arch]]:
    """The ``n`` random refit networks a profile with ``seed`` times, by name (``refit-<i>``),
    drawn from their own stream (not the calibration networks')."""
    rng = random.Random(f"refit-{seed}")
    return [(f"refit-{i}", space.sample(rng)) for i in range(n)]


def _arity(call: OpCall) -> int:
    return int(call.param_dict.get("n", 1))


def loaders(s: ProfileSettings) -> tuple[Callable[[OpCall], Timed], Callable[[Arch], Timed]]:
    """Functions that turn an op call / an arch into something the loop can time on the target
    (with ONNX Runtime, each model exported to ONNX once, when first loaded)."""
    if s.backend == "torch":
        from hwnas.profiling.torch_backend import TorchTimed, check_device, op_timed, tune_malloc

        check_device(s.device)
        tune_malloc()
        import torch

        torch.set_num_threads(s.threads)
        return (lambda c: op_timed(c, s.device, s.batch)), (
            lambda a: TorchTimed(a.build(), [a.input], s.device, s.batch)
        )

    runner.providers_for(s.device)  # fail now if the provider is absent
    onnx_cache: dict[str, bytes] = {}  # export once; each round opens a fresh session on it

    def load(m: OpCall | Arch) -> Timed:
        key = m.key if isinstance(m, OpCall) else m.to_json()
        if key not in onnx_cache:
            onnx_cache[key] = export_model(m, s.batch)
        return runner.OrtModel(onnx_cache[key], s.threads, s.device, spinning=s.ort_spinning)

    return load, load


def export_model(m: OpCall | Arch, batch: int) -> bytes:
    """ONNX of an op call's block (one input per operand) or of an arch's network."""
    from hwnas.onnx_io import export_onnx

    if isinstance(m, OpCall):
        return export_onnx(m.build(), [m.in_shape] * _arity(m), batch)
    return export_onnx(m.build(), [m.input], batch)


def check_target(s: ProfileSettings) -> None:
    """Fail early, with one clear line, if the target cannot be timed here."""
    if s.device == "cuda":
        if s.backend == "torch":
            from hwnas.profiling.torch_backend import check_device

            check_device("cuda")
        else:
            try:  # a session, not just the provider list: ORT falls back to the CPU if CUDA cannot start
                runner.open_session(_identity_onnx(), runner.session_options(1), "cuda")
            except runner.ProviderError as e:
                raise HwnasError(f"--device cuda --backend onnxruntime: {e}") from None


def _identity_onnx() -> bytes:
    """The smallest ONNX model (y = x, one float): enough to open a session on a provider."""
    import onnx.helper as oh
    from onnx import TensorProto

    from hwnas.onnx_io import OPSET

    io = [oh.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = oh.make_graph([oh.make_node("Identity", ["x"], ["y"])], "identity", io[:1], io[1:])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)]).SerializeToString()


def device_name(s: ProfileSettings) -> str:
    if s.device == "cuda" and s.backend == "torch":
        from hwnas.profiling.torch_backend import device_name as dn

        return dn("cuda")
    return runner.cpu_name() if s.device == "cpu" else "cuda (onnxruntime)"


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "hwnas": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
    }  # fmt: skip


def default_lut_path(space: Space, s: ProfileSettings, root: Path = Path("latency_tables")) -> Path:
    """``latency_tables/<device>-<backend>-t<threads>[-b<batch>]__<space>-<size>[-w<mult>][-<C>ch-<K>cls].csv``."""
    b = f"-b{s.batch}" if s.batch != 1 else ""
    w = f"-w{space.width_mult:g}" if space.width_mult != 1 else ""
    default_shape = (space.raw.get("in_channels", 3), space.raw.get("num_classes", 1000))
    shape = (
        f"-{space.in_channels}ch-{space.num_classes}cls"
        if (space.in_channels, space.num_classes) != default_shape
        else ""
    )
    return root / f"{s.device}-{s.backend}-t{s.threads}{b}__{space.name}-{space.input_size}{w}{shape}.csv"


def assemble(
    space_meta: dict[str, Any],
    s: ProfileSettings,
    work: Work,
    rows: list[dict[str, str]],
    extra: dict[str, Any],
) -> LUT:
    """Turn journal rows into a LUT: in-network figures per key (medians over networks, positions and
    rounds of each round's reading) and the fitted whole-net model."""
    med = round_medians(rows, reading=s.reading, block_reading=s.effective_block_reading)
    by_round: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_round[r["name"]].append(r)
    lacking = [n for n in [*work.ops, *work.nets, *work.refit] if n not in med]
    if lacking:
        raise LutError(f"the measurements lack {len(lacking)} job(s), e.g. {lacking[0]}; re-run to finish them")
    counts = _kernel_counts(rows)
    counted = all(n in counts for n in med if "#" in n)  # not with torch, nor in an older journal
    context: dict[tuple[str, str], list[float]] = defaultdict(list)  # by (key, "" or "shared")
    kernels: dict[tuple[str, str], list[int]] = defaultdict(list)
    for name, arch in work.nets.items():
        plan = arch.plan
        for i, (node, role) in enumerate(zip(plan.nodes, plan.roles(), strict=True)):
            if node.call.priced:
                for g in ((node.call.key, "shared" if role == "shared" else ""), (node.call.key, "*")):
                    context[g].append(med.get(f"{name}#{i}", 0.0))  # absent: the runtime removed it
                    if counted:
                        kernels[g].append(counts.get(f"{name}#{i}", 0))  # absent: no kernel ran for it

    def median(xs: list[float] | list[int]) -> float | None:
        return statistics.median(xs) if xs else None

    table = []
    for name, call in work.ops.items():
        rs = by_round[name]
        own, shared = (call.key, ""), (call.key, "shared")
        main = own if context[own] else shared  # a key the probes saw only as shared: priced so throughout
        split = bool(context[own] and context[shared])
        k_main, k_shared = median(kernels[main]), median(kernels[shared]) if split else None
        table.append({
            "key": call.key, "op": call.op, "params": call.param_str, "input": call.shape_str,
            "profiled_ms": median(context[main]) if context[main] else med[name],
            "kernels": round(k_main) if k_main is not None else None,
            "isolated_ms": med[name],
            "isolated_p10_ms": statistics.median(float(r["p10_ms"]) for r in rs),
            "isolated_p90_ms": statistics.median(float(r["p90_ms"]) for r in rs),
            "context_n": len(context[main]),
            "shared_profiled_ms": median(context[shared]) if split else None,
            "shared_kernels": round(k_shared) if k_shared is not None else None,
            "shared_n": len(context[shared]) if split else None,
        })  # fmt: skip
    # the profiler's cost per kernel is fitted on each key's figures over all its contexts (with
    # the roles apart it moved with their few shared contexts, and priced worse on 3 December)
    whole = [(c.key, context[c.key, "*"], kernels[c.key, "*"]) for c in work.ops.values()]
    prof = {k: median(ctx) if ctx else r["profiled_ms"] for (k, ctx, _), r in zip(whole, table, strict=True)}
    kern = {k: round(median(ks)) if ks else 0 for k, _, ks in whole}
    archs = list(work.nets.values())
    ys = np.array([med[n] for n in work.nets])

    def sums(main: dict[str, float], shared: dict[str, float]) -> np.ndarray:
        return np.array([sum(ms for _, ms in block_prices(a.plan, main, shared)) for a in archs], dtype=float)

    kernel_ms = fit_kernel_ms(sums(prof, {}), sums(kern, {}), ys, [prof[k] / kern[k] for k in prof if kern[k]])
    for r in table:
        r["latency_ms"] = max(0.0, r["profiled_ms"] - kernel_ms * (r["kernels"] or 0))
        r["shared_ms"] = (
            max(0.0, r["shared_profiled_ms"] - kernel_ms * (r["shared_kernels"] or 0))
            if r["shared_profiled_ms"] is not None
            else None
        )
    lat = {r["key"]: r["latency_ms"] for r in table}
    iso = {r["key"]: r["isolated_ms"] for r in table}
    from hwnas.supernet import fastest_sum

    space = _space_from_meta(space_meta, work)

    def floor(t: float) -> float | None:  # the fastest network's block sum, blocks at (1 - t) latency + t isolated
        return fastest_sum(space, {k: (1 - t) * lat[k] + t * iso[k] for k in lat}) if space is not None else None

    fit = fit_whole(sums(*_prices(table)), sums(iso, {}), ys, floor)
    t = fit["isolated_share"]
    if t:  # a block in any role: a blend of its price there and its time alone
        for r in table:
            r["latency_ms"] = (1 - t) * r["latency_ms"] + t * r["isolated_ms"]
            if r["shared_ms"] is not None:
                r["shared_ms"] = (1 - t) * r["shared_ms"] + t * r["isolated_ms"]
    scale, overhead = fit["scale"], fit["overhead_ms"]
    refit = None
    if work.refit:  # every network timed whole: the probe, calibration and refit networks
        whole = work.timed_whole
        refit = refit_prices(*_prices(table), scale, overhead, list(whole.values()), np.array([med[n] for n in whole]))
        if refit["chosen"] != "none":
            refit = _apply_refit(
                table, refit, sums, lambda main: fastest_sum(space, main) if space is not None else None
            )
            if refit["chosen"] != "none":
                scale, overhead = refit["scale"], refit["overhead_ms"]
    xs = sums(*_prices(table))
    pred = scale * xs + overhead
    nets = [
        {"name": n.removeprefix("net:"), "measured_ms": float(y), "sum_ms": float(x), "predicted_ms": float(p),
         "error_pct": float((p / y - 1) * 100)}
        for n, x, y, p in zip(work.nets, xs, ys, pred, strict=True)
    ]  # fmt: skip
    meta = {
        **space_meta,
        "device_kind": s.device, "backend": s.backend, "provider": s.device if s.backend == "onnxruntime" else None,
        "threads": s.threads, "batch": s.batch, "rounds": s.rounds, "timing": asdict(s.effective_timing),
        "reading": s.reading, "reading_field": runner.READINGS[s.reading], "block_reading": s.effective_block_reading,
        "unit": "ms", "keys": len(table),
        "machine_speed": runner.speed_spread(rows, s.reading),  # how far the machine's speed moved (corrected for)
        "model": {
            "method": "context",
            "formula": "predicted_ms = scale * sum(latency_ms of the network's blocks) + overhead_ms",
            "latency_ms": "(1 - isolated_share) * max(0, profiled_ms - kernel_ms * kernels) + isolated_share * "
                          "isolated_ms: the block's in-network time without what the node profiler adds to each "
                          "kernel it times, blended, where the fit chose it (fit_choice), with its time alone "
                          "(shared_ms alike, from shared_profiled_ms); then, where a refit was chosen (refit), "
                          "plus refit.delta_ms, not below 0",
            "roles": "a key priced by its role (hwnas.arch.role_priced: a stride-1 cell edge whose op leads "
                     "with a ReLU, a cell edge without weights, a cell node's sum) is priced at shared_ms where "
                     "ONNX Runtime runs part or all of its work in another node's kernel (an earlier op's ReLU "
                     "of the same input, an earlier edge's identical pool, a conv writing one of the sum's "
                     "inputs that the Add is fused into), at latency_ms where it runs on its own",
            "fit": "relative least squares over the probe and calibration networks"
                   + ("; scale, overhead_ms and the prices then refitted on the refit and calibration networks "
                      "(refit)" if refit and refit["chosen"] != "none" else ""),
            "scale": float(scale), "overhead_ms": float(overhead), "kernel_ms": float(kernel_ms),
            "isolated_share": float(t), "fit_choice": fit["choice"], "refit": refit,
            "fit_mape_pct": float(np.mean([abs(n["error_pct"]) for n in nets])) if nets else None,
            "nets": nets,
        },
        **extra,
    }  # fmt: skip
    return LUT.from_rows(table, meta)


def _kernel_counts(rows: list[dict[str, str]]) -> dict[str, int]:
    """Per block row name (``net:x#i``), the kernels it ran as (the median over rounds); rows
    without a count (torch, journals written before counts existed) are left out."""
    by: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        k = r.get("kernels")
        if "#" in r["name"] and k not in (None, ""):
            by[r["name"]].append(int(k))
    return {n: round(statistics.median(v)) for n, v in by.items()}


def fit_kernel_ms(sums: np.ndarray, kernels: np.ndarray, ys: np.ndarray, per_kernel_ms: list[float]) -> float:
    """What the node profiler adds to each kernel it times (ms), from ``y = a*sum - a*k*kernels + c``.

    ``sums`` are the networks' sums of profiled block times, ``kernels`` their kernel counts and
    ``ys`` their whole-network times; fitted by relative least squares. The fit is kept only when
    it is physical: at least 6 networks whose kernel counts are not all alike, ``a`` in (0.5, 2),
    and ``k`` above 0 and below the median of the keys' profiled time per kernel (the profiler
    cannot add more than a typical kernel's own time). Otherwise 0: the plain sum model.
    """
    if len(ys) < 6 or not per_kernel_ms or np.ptp(kernels) == 0 or np.ptp(sums) <= 1e-9:
        return 0.0
    a, b, _c = _relative_lstsq([sums, kernels, np.ones_like(sums)], ys)
    if not 0.5 < a < 2.0:
        return 0.0
    k = float(-b / a)
    return k if 0.0 < k < statistics.median(per_kernel_ms) else 0.0


#: How much lower the leave-one-out error (MAPE) of the whole-net model with the blocks' times alone
#: must be than that of the in-network sum alone for :func:`fit_whole` to choose it: a share of it,
#: and percentage points (two models that both fit to rounding are not told apart by it).
TWO_TERM_GAIN = 0.02
TWO_TERM_GAIN_POINTS = 0.05


def fit_whole(xs: np.ndarray, xi: np.ndarray, ys: np.ndarray, floor: Callable[[float], float | None]) -> dict[str, Any]:
    """The whole-network model over a profile's networks: ``y = scale * ((1 - t) x + t xi) + overhead``.

    ``xs``: each network's sum of its blocks' in-network prices; ``xi``: its sum of its blocks'
    times alone (``isolated_ms``, every priced block whatever its role); ``ys``: its whole time;
    all ms. ``floor(t)``: the block sum of the space's fastest network, each block priced at
    ``(1 - t)`` its in-network price plus ``t`` its time alone (None: unknown; see
    :func:`fit_model`).

    Two models: the in-network sum alone (``t = 0``, :func:`fit_model`), and the blend
    (:func:`fit_blend`: ``a x + b xi + c``, ``a, b >= 0``, ``scale = a + b``, ``t = b / (a + b)``,
    the share of a block's price its time alone carries). Each is judged by its leave-one-out
    error over the networks, every fold fitted as the model itself is (the blend's folds fall back
    to the in-network fit where the blend is implausible). The blend is chosen when its error is
    lower by ``TWO_TERM_GAIN`` of the other's and by ``TWO_TERM_GAIN_POINTS``, and it is plausible
    on all the networks; otherwise ``t = 0``. Returns ``scale``, ``overhead_ms``,
    ``isolated_share`` (``t``) and ``choice``: both leave-one-out MAPEs (%), which was chosen,
    and, where the blend was better but not plausible, why (``refused``).

    Why: on DARTS @ 32 (blocks of 3-50 µs, networks of about 1 ms) the in-network times, whole
    microseconds per kernel from the node profiler, miss work a network does around its blocks
    that their times alone carry (a block whose work another kernel took reads 0 in the network,
    yet the network still moves its data). On 18 DARTS profiles of 4 December 2026 it was chosen
    for 15 and raised the Spearman against five validations combined from 0.9895 to 0.9925 on
    average (``bench/RESULTS.md``); on 10 ProxylessNAS @ 224 profiles (blocks of 0.1-2 ms) it
    was chosen for none.
    """
    scale, overhead = fit_model(xs, ys, floor(0.0))
    out: dict[str, Any] = {"scale": scale, "overhead_ms": overhead, "isolated_share": 0.0}
    out["choice"] = {"in_network_loo_mape_pct": None, "with_isolated_loo_mape_pct": None, "chosen": "in_network"}
    if len(ys) < 6 or np.ptp(xs) <= 1e-9 or np.ptp(xi) <= 1e-9:
        return out

    def one(k: np.ndarray) -> Callable[[int], float]:
        sc, ov = fit_model(xs[k], ys[k], floor(0.0))
        return lambda j: sc * xs[j] + ov

    def two(k: np.ndarray) -> Callable[[int], float]:
        fit = fit_blend(xs[k], xi[k], ys[k], floor)
        if isinstance(fit, str):
            return one(k)
        sc, ov, t = fit
        return lambda j: sc * ((1 - t) * xs[j] + t * xi[j]) + ov

    e1, e2 = _loo_mape(one, len(ys), ys), _loo_mape(two, len(ys), ys)
    choice: dict[str, Any] = {"in_network_loo_mape_pct": e1, "with_isolated_loo_mape_pct": e2, "chosen": "in_network"}
    out["choice"] = choice
    if not e2 < min((1 - TWO_TERM_GAIN) * e1, e1 - TWO_TERM_GAIN_POINTS):
        return out
    fit = fit_blend(xs, xi, ys, floor)
    if isinstance(fit, str):
        choice["refused"] = fit
        return out
    sc, ov, t = fit
    return {"scale": sc, "overhead_ms": ov, "isolated_share": t, "choice": {**choice, "chosen": "with_isolated"}}


def fit_blend(
    xs: np.ndarray, xi: np.ndarray, ys: np.ndarray, floor: Callable[[float], float | None]
) -> tuple[float, float, float] | str:
    """``y = a xs + b xi + c`` with ``a, b >= 0`` by relative least squares, as ``(scale = a + b,
    overhead = c, t = b / (a + b))``; or, where that is not a plausible model, why not (``"no
    share"``: ``b`` is 0; ``"scale"`` or ``"floor"``: see :func:`_plausible`)."""
    a, b, c = _relative_lstsq([xs, xi, np.ones_like(xs)], ys, nonneg=2)
    if not b > 0:
        return "no share"
    t = b / (a + b)
    why = _plausible(a + b, c, (1 - t) * xs + t * xi, floor(t))
    return why or (a + b, c, t)


def _plausible(scale: float, overhead: float, xs: np.ndarray, x_floor: float | None) -> str | None:
    """Why ``y = scale * x + overhead`` fitted on block sums ``xs`` is not a plausible whole-net
    model (None when it is): ``"scale"`` outside (0.5, 2), or ``"floor"``, a negative overhead
    taking more than half of the predicted time of the smallest network fitted or of the space's
    fastest (``x_floor``, its block sum; a fit on mid-sized networks must not predict the
    smallest at or below zero)."""
    if not 0.5 < scale < 2.0:
        return "scale"
    lo = float(xs.min()) if x_floor is None else min(float(xs.min()), x_floor)
    return "floor" if overhead < -0.5 * scale * lo else None


def _loo_mape(fit: Callable[[np.ndarray], Callable[[int], float]], n: int, ys: np.ndarray) -> float:
    """Leave-one-out mean relative error (%): ``fit(mask)`` fits on the networks ``mask`` keeps
    and returns a predictor of network ``j``; each network is predicted by a fit without it."""
    return float(np.mean([abs(fit(np.arange(n) != j)(j) / ys[j] - 1) for j in range(n)]) * 100)


def fit_model(xs: np.ndarray, ys: np.ndarray, x_floor: float | None = None) -> tuple[float, float]:
    """``y = scale * x + overhead`` over the calibration networks, by relative least squares
    (each network's error as a share of its time: what the fidelity report's MAPE measures).

    Where that is not plausible (:func:`_plausible`: ``x_floor`` is the block sum of the space's
    fastest network), the fit goes through the origin (overhead 0).
    """
    if len(xs) == 0:
        return 1.0, 0.0
    if len(xs) >= 3 and np.ptp(xs) > 1e-9:
        scale, overhead = _relative_lstsq([xs, np.ones_like(xs)], ys)
        if _plausible(scale, overhead, xs, x_floor) is None:
            return scale, overhead
    (scale,) = _relative_lstsq([xs], ys)
    return (scale, 0.0) if scale > 0 else (1.0, 0.0)


#: Ridge strengths :func:`refit_prices` tries, on each price's change as a share of the typical
#: block's price (1e-4: moving one price by the typical price weighs as much as a 1 % error on
#: every network); and the folds of its cross-validation.
REFIT_LAMBDAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
REFIT_FOLDS = 5


def refit_prices(
    main: dict[str, float],
    shared: dict[str, float],
    scale: float,
    overhead: float,
    archs: list[Arch],
    ys: np.ndarray,
) -> dict[str, Any]:
    """Corrections to a LUT's prices from whole random networks: ``y = a p + c + sum_j n_j b_j``.

    ``main``/``shared``: each key's price (ms) in its main and its shared role; ``scale``,
    ``overhead``: the whole-net model (``p = scale * block sum + overhead``); ``archs``, ``ys``:
    networks and their whole times (ms). ``n_j``: how many of a network's blocks take price ``j``
    (a key in one of its roles, :func:`hwnas.lut.block_columns`). Fitted by relative least squares
    with a ridge on the ``b_j`` (scaled by the typical block's price, ``mean(y) / mean(blocks)``),
    its strength chosen from ``REFIT_LAMBDAS`` by ``REFIT_FOLDS``-fold cross-validation: the
    Spearman rank correlation of each network's prediction, fitted without it, with its time.
    No refit (``chosen: "none"``) where the prices as they are rank the networks at least as well,
    or where ``a`` is not above 0. Otherwise the LUT's formula holds with ``scale = a * scale``,
    ``overhead = a * overhead + c`` and each price moved by ``b_j / (a * scale)`` (the caller
    keeps it at or above 0).

    Returns ``chosen`` (the strength, or ``"none"`` with the ``reason``), the folds' Spearman per
    strength and for the prices as they are (``cv_spearman``), ``nets``, and where chosen ``a``,
    ``c_ms``, the model before (``scale_before``, ``overhead_ms_before``) and after (``scale``,
    ``overhead_ms``) and ``delta_ms`` (``{"main": {key: ms}, "shared": {key: ms}}``).

    Why: on DARTS @ 32 a block's in-network time depends on its neighbours beyond what a price
    per key and role can hold, and the node profiler reads blocks of a few µs coarsely; a LUT
    ranked 50 networks at Spearman 0.988-0.994 against four validations combined (4 December
    2026). Refitted on the first 150 / 200 of 300 random networks timed whole in 3 rounds (a
    one-off measurement), the same six LUTs read 0.9916-0.9936 / 0.9928-0.9939; in fidelity runs
    with 150 refit networks, six LUTs read 0.9908-0.9950 against a fresh validation. It lifts the
    floor more than the mean: paired on two profiles it cost one 0.001 and gave the other 0.0045
    (``bench/RESULTS.md``).
    """
    from scipy.stats import spearmanr

    cols: list[tuple[str, str]] = []
    index: dict[tuple[str, str], int] = {}
    counts: list[dict[int, int]] = []
    p = np.zeros(len(archs))
    for i, a in enumerate(archs):
        c: dict[int, int] = defaultdict(int)
        for node, col in block_columns(a.plan, shared):
            j = index.setdefault((col, node.call.key), len(cols))
            if j == len(cols):
                cols.append((col, node.call.key))
            c[j] += 1
            p[i] += (shared if col == "shared" else main)[node.call.key]
        counts.append(c)
    p = scale * p + overhead
    F = np.zeros((len(archs), len(cols)))
    for i, c in enumerate(counts):
        for j, k in c.items():
            F[i, j] = k
    x = np.column_stack([p, np.ones(len(archs)), F])
    typical = float(np.mean(ys) / max(np.mean(F.sum(axis=1)), 1.0))
    out: dict[str, Any] = {"nets": len(archs), "chosen": "none", "cv_spearman": {}}
    if len(archs) < 2 * REFIT_FOLDS:
        return {**out, "reason": f"fewer than {2 * REFIT_FOLDS} networks timed whole"}
    if np.ptp(p) <= 0 or np.ptp(ys) <= 0:
        return {**out, "reason": "the networks all take the same time: nothing to rank them by"}

    def fit(mask: np.ndarray, lam: float) -> np.ndarray:
        rows = np.flatnonzero(mask)
        xs = x[rows] / ys[rows, None]
        reg = np.diag([0.0, 0.0] + [lam / typical**2] * len(cols)) * len(rows)
        return np.linalg.lstsq(xs.T @ xs + reg, xs.T @ np.ones(len(rows)), rcond=None)[0]

    fold = np.arange(len(archs)) % REFIT_FOLDS
    scores = {"none": float(spearmanr(p, ys)[0])}
    for lam in REFIT_LAMBDAS:
        q = np.zeros(len(archs))
        for f in range(REFIT_FOLDS):
            q[fold == f] = x[fold == f] @ fit(fold != f, lam)
        scores[f"{lam:g}"] = float(spearmanr(q, ys)[0])
    out["cv_spearman"] = scores
    rank = {k: v if v == v else -1.0 for k, v in scores.items()}  # NaN (networks all alike): no rank
    best = max(rank, key=lambda k: (rank[k], k == "none"))  # a tie keeps the prices as they are
    if best == "none":
        return {**out, "reason": "the prices as they are ranked the networks best"}
    coef = fit(np.ones(len(archs), dtype=bool), float(best))
    a, c0, b = float(coef[0]), float(coef[1]), coef[2:]
    if not a > 0:
        return {**out, "reason": f"the refit's weight of the prices as they are, a = {a:.3g}, is not above 0"}
    delta: dict[str, dict[str, float]] = {"main": {}, "shared": {}}
    for (col, key), bj in zip(cols, b, strict=True):
        delta[col][key] = float(bj / (a * scale))
    fitted = {"a": a, "c_ms": c0, "scale_before": scale, "overhead_ms_before": overhead}
    return {**out, "chosen": best, **fitted, "scale": a * scale, "overhead_ms": a * overhead + c0, "delta_ms": delta}


def _prices(table: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """A table's prices (ms) by key: in the main role (``latency_ms``) and, where it has one, in
    the shared role (``shared_ms``); what :func:`hwnas.lut.block_prices` takes."""
    return (
        {r["key"]: r["latency_ms"] for r in table},
        {r["key"]: r["shared_ms"] for r in table if r["shared_ms"] is not None},
    )


def _apply_refit(
    table: list[dict[str, Any]],
    refit: dict[str, Any],
    sums: Callable[[dict[str, float], dict[str, float]], np.ndarray],
    fastest: Callable[[dict[str, float]], float | None],
) -> dict[str, Any]:
    """Move ``table``'s prices by a chosen refit (:func:`refit_prices`), each kept at or above 0
    (the keys where that bit are listed in ``clamped``), where the refitted whole-net model is
    plausible (:func:`_plausible`, on the block sums ``sums`` gives of the probe and calibration
    networks for main and shared prices, and on the space's fastest network, whose block sum
    ``fastest`` gives for main prices, None if unknown);
    otherwise leave the table alone and return the refit declined, with why."""
    moved = []
    for r in table:
        for col, field_ in (("main", "latency_ms"), ("shared", "shared_ms")):
            if r[field_] is not None and r["key"] in refit["delta_ms"][col]:
                moved.append((r, field_, r[field_] + refit["delta_ms"][col][r["key"]]))
    clamped = sorted(f"{r['key']} ({field_})" for r, field_, v in moved if v < 0)
    lat, sh = _prices(table)
    for r, field_, v in moved:
        (lat if field_ == "latency_ms" else sh)[r["key"]] = max(0.0, v)
    why = _plausible(refit["scale"], refit["overhead_ms"], sums(lat, sh), fastest(lat))
    if why is not None:
        kept = {k: v for k, v in refit.items() if k not in ("scale", "overhead_ms", "delta_ms")}
        return {
            **kept,
            "chosen": "none",
            "refused": refit["chosen"],
            "reason": f"the refitted model is implausible ({why})",
        }
    for r, field_, v in moved:
        r[field_] = max(0.0, v)
    return {**refit, "clamped": clamped}


def _relative_lstsq(columns: list[np.ndarray], ys: np.ndarray, nonneg: int = 0) -> list[float]:
    """Coefficients ``c`` minimising ``sum(((X @ c) / y - 1) ** 2)``, ``X``'s columns given: each
    network's error as a share of its time, what the fidelity report's MAPE judges. The first
    ``nonneg`` coefficients are kept at or above 0."""
    x = np.vstack(columns).T / np.maximum(ys, 1e-12)[:, None]
    if nonneg:
        from scipy.optimize import lsq_linear

        lower = [0.0] * nonneg + [-np.inf] * (len(columns) - nonneg)
        return [float(c) for c in lsq_linear(x, np.ones_like(ys), bounds=(lower, np.inf)).x]
    coef, *_ = np.linalg.lstsq(x, np.ones_like(ys), rcond=None)
    return [float(c) for c in coef]


def space_from_meta(space_meta: dict[str, Any]) -> Space:
    """The profiled space, reloaded from a LUT's metadata (:func:`space_meta`'s fields); raises
    :class:`HwnasError` if its file is not at hand."""
    from hwnas.space import load_space

    sp = load_space(
        space_meta.get("space_source") or space_meta["space"],
        int(space_meta["input_size"]),
        float(space_meta["width_mult"]),
    )
    return sp.with_params(in_channels=space_meta.get("in_channels"), num_classes=space_meta.get("num_classes"))


def _space_from_meta(space_meta: dict[str, Any], work: Work) -> Space | None:
    """:func:`space_from_meta`, or None if the space's file is not at hand."""
    try:
        return space_from_meta(space_meta)
    except HwnasError:
        return None


def space_meta(space: Space) -> dict[str, Any]:
    raw = json.dumps(space.raw, sort_keys=True, default=str).encode()
    shipped = Path(space.source).resolve().parent == SPACES_DIR
    return {
        # a shipped space is recorded by name, so the LUT stays usable from another checkout
        "space": space.name, "space_source": space.name if shipped else space.source,
        "space_sha256": hashlib.sha256(raw).hexdigest(),
        "input_size": space.input_size, "width_mult": space.width_mult,
        "in_channels": space.in_channels, "num_classes": space.num_classes,
    }  # fmt: skip


def run_meta(s: ProfileSettings, seconds: float) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if s.backend == "onnxruntime":
        settings["onnxruntime"] = runner.ort_settings(s.ort_spinning)
    else:
        from hwnas.profiling.torch_backend import MALLOC_SETTINGS

        settings["glibc_malloc"] = MALLOC_SETTINGS
    settings["speed_correction"] = speed_correction()
    return {
        "device": device_name(s), "versions": versions(), "settings": settings,
        "date": runner.local_time(), "host": socket.gethostname(), "user": getpass.getuser(),
        "profile_seconds": round(seconds, 1), "seed": s.seed, "calib_nets": s.calib_nets, "refit_nets": s.refit_nets,
    }  # fmt: skip


def speed_correction() -> dict[str, Any]:
    """How the figures were corrected for the machine's changing speed (recorded in the metadata)."""
    return {
        "window": runner.SPEED_WINDOW,
        "method": "each round's reading divided by the machine's speed when it was timed: the median, over "
                  "the window job-rounds either side and itself, of log(reading / the job's usual time), "
                  "alternated 5 times with the usual times; speeds scaled to a median of 1",
    }  # fmt: skip


def lock_path(out: Path) -> Path:
    """The lock file a profile holds while it writes ``out``: ``<out>.lock``."""
    return out.with_name(out.name + ".lock")


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<out>.lock`` (``fcntl.flock``) while a profile writes ``out``.

    A second profile of the same output fails at once with one line naming the holder's PID,
    instead of interleaving its rows into the same journal. The kernel drops the lock when its
    holder dies (even by SIGKILL), so a killed profile never blocks the next run. Where ``fcntl``
    is missing (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on the platforms hwnas is tested on
        yield
        return
    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HwnasError(
            f"{out}: cannot create its folder {path.parent} ({e.strerror}); choose another --out"
        ) from None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "unknown"
            os.close(fd)
            raise HwnasError(
                f"{out}: another profile (PID {holder}) is writing it; wait for it to finish, or choose another --out"
            ) from None
        try:  # the holder before us may have removed the file as it finished: lock the file at the path
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with suppress(OSError):
            os.unlink(path)  # while still holding the lock: a waiter re-checks the path (above)
        os.close(fd)


def steady_rounds(rows: list[dict[str, str]], s: ProfileSettings, work: Work, rounds: int) -> dict[str, Any]:
    """Whether the first ``rounds`` rounds of a profile's journal ``rows`` are enough.

    ``sd_pct``: how far a whole network moves from round to round after the speed correction
    (:func:`hwnas.profiling.runner.round_spread_pct`, over the profile's networks); ``se_pct``:
    the standard error of a network's median over ``rounds`` such readings (``1.2533 sd /
    sqrt(rounds)``, as for normal noise). ``steady`` when ``se_pct <= s.steady_pct``, or when
    there is no spread to judge. On a quiet VM (4 December 2026) DARTS @ 32 networks moved under
    1 % from round to round and 3 rounds were enough; ProxylessNAS @ 224 networks moved 2-4.6 %
    (each round's fresh session places its memory anew) and took 3-5. On a shared VM (3 December
    2026) networks moved 2-14 %, and profiles timed in 5-6 rounds predicted better on average and
    agreed better with each other (``bench/RESULTS.md``).
    """
    sd = runner.round_spread_pct([r for r in rows if int(r["round"]) < rounds], work.nets, s.reading)
    se = None if sd is None else float(1.2533 * sd / np.sqrt(rounds))
    return {
        "rounds": rounds, "min_rounds": s.rounds, "max_rounds": max(s.rounds, s.max_rounds),
        "sd_pct": sd, "se_pct": se, "steady_pct": s.steady_pct, "steady": bool(se is None or se <= s.steady_pct),
    }  # fmt: skip


def profile(space: Space, s: ProfileSettings, out: Path, progress: Progress | None = None) -> LUT:
    """Measure a LUT for ``space`` on the target of ``s`` and write it to ``out`` (resumable).

    Only one profile at a time may write ``out`` (see :func:`output_lock`).
    """
    check_target(s)
    with output_lock(out):
        return _profile(space, s, out, progress)


def _profile(space: Space, s: ProfileSettings, out: Path, progress: Progress | None) -> LUT:
    work_dir = out.with_name(out.name + ".work")
    for stale in out.parent.glob(f"{glob.escape(work_dir.name)}.done-*"):  # a kill while deleting a journal
        shutil.rmtree(stale, ignore_errors=True)
    settings = _resume_settings(s)
    state = {"space": space_meta(space), "settings": settings, "journal": runner.JOURNAL}
    state_file = work_dir / "state.json"
    if state_file.exists():
        diff = runner.differing(_with_defaults(runner.read_json_object(state_file)), state)
        if diff is None:
            raise HwnasError(f"{state_file} is unreadable; delete {work_dir} to start over")
        if diff[:1] == ["journal"]:
            raise HwnasError(
                f"{work_dir} holds an interrupted profile from another hwnas version, which may have read block "
                f"times differently; delete {work_dir} to start over"
            )
        if diff:
            raise HwnasError(
                f"{work_dir} holds an interrupted profile with other settings (its {' and '.join(diff)}); re-run it "
                f"with the same options to resume, or delete {work_dir} to start over"
            )
    resumed = (work_dir / "results.csv").exists()
    work_dir.mkdir(parents=True, exist_ok=True)
    runner.write_json_atomic(state_file, state)
    work = plan_work(space, s)
    load_op, load_net = loaders(s)
    results = work_dir / "results.csv"
    t0 = time.perf_counter()
    jobs = work.jobs(load_op, load_net)
    rounds = s.rounds
    timed = runner.run_jobs(jobs, rounds, s.effective_timing, results, progress)
    spread = steady_rounds(read_rows(results), s, work, rounds)
    # Rounds beyond s.rounds time the networks only (whole, and their blocks inside them): the rule
    # asks for them because whole networks move, and the LUT's prices are the blocks' in-network
    # times. A block alone is a reference figure and a probe of the machine's speed, which the
    # networks' rows also give (see ProfileSettings.max_rounds).
    nets = [j for j in jobs if j.kind == "net"]
    counted = rounds * len(jobs)  # job-rounds the progress bar has counted
    while rounds < s.max_rounds and not spread["steady"]:
        rounds += 1  # a resumed profile takes the same decisions: on the same rows, rounds already timed are kept
        step = None if progress is None else _after(progress, counted)
        timed += runner.run_jobs(nets, rounds, s.effective_timing, results, step, first_round=rounds - 1)
        counted += len(nets)
        spread = steady_rounds(read_rows(results), s, work, rounds)
    rows = [r for r in read_rows(results) if int(r["round"]) < rounds]
    extra = {
        **run_meta(s, time.perf_counter() - t0), "resumed": resumed, "job_rounds_timed_last_run": timed,
        "round_spread": spread,
    }  # fmt: skip
    lut = assemble(space_meta(space), replace(s, rounds=rounds), work, rows, extra)
    lut.save(out)
    # rename, then delete: a kill while deleting must not leave a half-emptied journal that the
    # next run would take for a profile to resume (it would measure everything again)
    done = work_dir.with_name(f"{work_dir.name}.done-{os.getpid()}")
    work_dir.rename(done)
    shutil.rmtree(done, ignore_errors=True)
    return lut


def _with_defaults(prior: dict[str, Any] | None) -> dict[str, Any] | None:
    """A profile's recorded state with the settings it predates (fields added to
    :class:`ProfileSettings` since, e.g. ``refit_nets``) at their defaults, which is what that
    profile timed with."""
    if prior is None or not isinstance(prior.get("settings"), dict):
        return prior
    return {**prior, "settings": {**_resume_settings(ProfileSettings()), **prior["settings"]}}


def _resume_settings(s: ProfileSettings) -> dict[str, Any]:
    """The settings a profile's journal records, and must match to be resumed: all but
    ``block_reading``, which says how rows are read into the LUT, not what is timed (a journal
    of either resumes)."""
    return {k: v for k, v in s.to_dict().items() if k != "block_reading"}


def _after(progress: Progress, done: int) -> Progress:
    """``progress`` for a later call of the job loop: its job-rounds counted after ``done`` earlier
    ones, so that one bar runs on through a profile's extra rounds."""
    return lambda k, total, name: progress(done + k, done + total, name)


# -- the standalone runner's side -----------------------------------------------------------


def emit_onnx(space: Space, s: ProfileSettings, folder: Path) -> int:
    """Write the per-op models, the probe networks (and any refit networks) and ``manifest.json``
    for ``ort_runner.py``."""
    from hwnas.onnx_io import OPSET

    if s.backend != "onnxruntime":
        raise HwnasError("--emit-onnx writes ONNX models for ONNX Runtime; use --backend onnxruntime")
    folder.mkdir(parents=True, exist_ok=True)
    work = plan_work(space, s)
    models = []

    def add(name: str, kind: str, file: str, data: bytes) -> None:
        runner.atomic_write(folder / file, data)
        models.append({"name": name, "kind": kind, "file": file, "sha256": hashlib.sha256(data).hexdigest()})

    for i, (name, call) in enumerate(work.ops.items()):
        add(name, "op", f"op_{i:04d}.onnx", export_model(call, s.batch))
    for i, (name, arch) in enumerate(work.nets.items()):
        add(name, "net", f"net_{i:04d}.onnx", export_model(arch, s.batch))
    for i, (name, arch) in enumerate(work.refit.items()):
        add(name, "model", f"refit_{i:04d}.onnx", export_model(arch, s.batch))
    manifest = {
        "opset": OPSET,  # checksums (sha256) and opset let the board tell a damaged copy from an old onnxruntime
        "settings": {
            "threads": s.threads,
            "provider": s.device,
            "rounds": s.rounds,
            "spinning": s.ort_spinning,
            "timing": asdict(s.effective_timing),
        },
        "hwnas": {
            "version": __version__,
            "space": space_meta(space),
            "profile_settings": s.to_dict(),
            "ops": {n: c.key for n, c in work.ops.items()},
            "nets": {n: a.to_dict() for n, a in work.nets.items()},
            "refit": {n: a.to_dict() for n, a in work.refit.items()},
        },
        "models": models,
    }
    runner.write_json_atomic(folder / runner.MANIFEST, manifest)
    return len(models)


def import_results(times_csv: Path, out: Path, manifest_dir: Path | None = None, reading: str | None = None) -> LUT:
    """Turn the standalone runner's ``times.csv`` (and its ``.info.json``) into a LUT at ``out``.

    ``times_csv`` may be the folder ``--emit-onnx`` wrote (its ``times.csv`` is read). The space,
    settings and networks come from that folder's manifest, the threads from the runner's record;
    ``reading`` (a key of ``runner.READINGS``) overrides the manifest's, since the runner records both.
    """
    if times_csv.is_dir():
        times_csv = times_csv / "times.csv"
    folder = manifest_dir or times_csv.parent
    try:
        manifest = json.loads((folder / runner.MANIFEST).read_text())
        hw = manifest["hwnas"]
        s = ProfileSettings(**{**hw["profile_settings"], "timing": TimingSettings(**hw["profile_settings"]["timing"])})
        work = Work(
            {n: parse_key(k) for n, k in hw["ops"].items()},
            {n: Arch.from_dict(a, f"{folder / runner.MANIFEST} net {n}") for n, a in hw["nets"].items()},
            {n: Arch.from_dict(a, f"{folder / runner.MANIFEST} net {n}") for n, a in hw.get("refit", {}).items()},
        )
    except FileNotFoundError:
        raise HwnasError(
            f"{folder / runner.MANIFEST}: missing; --import needs the folder written by --emit-onnx"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise HwnasError(
            f"{folder / runner.MANIFEST}: not a manifest written by `hwnas profile --emit-onnx` ({e})"
        ) from None
    if not times_csv.exists():
        raise HwnasError(f"{times_csv}: no such file; run `python ort_runner.py {folder}` on the target first")
    problem = runner.not_results(times_csv)
    if problem:
        raise HwnasError(
            f"{times_csv}: {problem}; give the times.csv the runner wrote beside {folder / runner.MANIFEST}"
        )
    info_path = times_csv.with_name(times_csv.stem + ".info.json")
    info = runner.read_json_object(info_path) if info_path.exists() else {}
    if info is None:
        raise HwnasError(
            f"{info_path}: damaged (not the JSON object the runner writes whole); copy it again from the board "
            "(without it the LUT could not say which threads, device or onnxruntime timed it)"
        )
    if info.get("complete") is False:
        again = f"python ort_runner.py {folder} --threads {info.get('threads')} --provider {info.get('provider')}"
        if times_csv != folder / "times.csv":
            again += f" --out {times_csv}"
        raise HwnasError(f"{times_csv}: the runner has not finished it; run `{again}` on the target to finish it")
    s = replace(s, threads=int(info.get("threads", s.threads)), reading=reading or s.reading)
    extra = {
        "device": info.get("device", "unknown (no .info.json beside the results)"),
        "versions": {"onnxruntime": info.get("onnxruntime"), "numpy": info.get("numpy"), "hwnas": __version__},
        "settings": {
            "onnxruntime": _runner_settings(info, s),
            "speed_correction": speed_correction(),
        },
        "date": info.get("date"), "profile_seconds": info.get("seconds"), "resumed": info.get("resumed"),
        "imported_from": str(times_csv),
        "seed": s.seed, "calib_nets": s.calib_nets, "refit_nets": s.refit_nets,
    }  # fmt: skip
    rows = read_rows(times_csv)
    if not rows:
        raise HwnasError(f"{times_csv}: holds no timings yet; run `python ort_runner.py {folder}` on the target")
    _check_imported(rows, times_csv, folder)
    lut = assemble(hw["space"], s, work, rows, extra)
    lut.save(out)
    return lut


def _runner_settings(info: dict[str, Any], s: ProfileSettings) -> dict[str, Any]:
    """The ORT settings the board runner recorded in its ``.info.json``, as the LUT's metadata
    keeps them; what the info does not say is recorded as not known (or, for a runner from before
    inserted kernels were charged to blocks, as left out)."""
    if "ort_settings" not in info:
        return {**runner.ort_settings(s.ort_spinning), "inserted_kernels": "unknown (no .info.json beside the results)"}
    return {"inserted_kernels": "left out (a runner from before they were charged to blocks)", **info["ort_settings"]}


def _check_imported(rows: list[dict[str, str]], times_csv: Path, folder: Path) -> None:
    """Refuse, in one line, a runner's results file whose figures are not numbers (edited or
    damaged on its way back from the board), before they reach the model fit."""
    for r in rows:
        bad = [f for f in ("median_ms", "p10_ms", "p90_ms") if not _number(r[f])]
        if not r["round"].isdigit() or not r["runs"].isdigit():
            bad.append("round" if not r["round"].isdigit() else "runs")
        if r.get("kernels") not in (None, "") and not str(r["kernels"]).isdigit():
            bad.append("kernels")
        if bad:
            raise HwnasError(
                f"{times_csv}: row {r['name']!r}, round {r['round']!r}: {bad[0]} {r[bad[0]]!r} is not a "
                f"non-negative number; re-run `python ort_runner.py {folder}` on the target"
            )


def _number(text: str) -> bool:
    """``text`` reads as a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        return False
    return is_number(v) and v >= 0
