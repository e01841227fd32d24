#!/usr/bin/env python3
"""The measurement loop and the ONNX Runtime timer; needs only onnxruntime and numpy.

This file is imported by ``hwnas profile`` and is also the standalone runner for a board where
torch and hwnas are absent (``profilers/ort_runner.py`` is this file):

    hwnas profile --space proxyless --emit-onnx ops/      # workstation: per-op models + probe nets
                                                          # (+ refit networks, timed whole: kind "model")
    python ort_runner.py ops/                             # board: writes ops/times.csv
    hwnas profile --space proxyless --import ops/times.csv --out my.csv   # workstation: the LUT

Timing discipline (all times in milliseconds):

* one session per model, a fixed intra-op thread count, thread spinning off (spinning pools slow
  other sessions for ~30 ms after each run), inputs and outputs bound once through IOBinding;
* a warm-up of at least ``warmup_ms`` before every measurement (the first runs after a switch
  are 1.1-6x slower), then ``time.perf_counter`` around each run;
* every model is timed in several *rounds*: round ``r`` of every model before round ``r + 1``
  of any, so slow drift of the machine spreads over all models instead of biasing some, and in
  a different (seeded) order each round, so a model's place in a round does not bias it either;
* for a whole network (kind ``net``) each round also records every block's time *inside* the
  network (ONNX Runtime's node profiler, nodes mapped to blocks by their ``/nodes.<i>/`` scope;
  a kernel the runtime inserted itself, such as a layout reorder, to the block that runs next).

Results are rows ``name, round, median_ms, p10_ms, p90_ms, runs[, kernels]`` appended durably to a
CSV (``kernels``: for a block inside a network, how many kernels ONNX Runtime ran for it), in the
order they ran; a killed run resumes where it stopped (finished rows are never redone). Reading
them, a round's *reading* is one statistic of its runs (``READINGS``: the 10th percentile by
default; a block inside a network can be read another way, ``BLOCK_READINGS``), divided by the
machine's speed when it was timed (``speed_factors``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

MANIFEST = "manifest.json"
# How a journal's block rows are read; a journal of another kind is not resumed (its rows would
# mix with ours in one LUT). 2: kernels ONNX Runtime inserts are charged to blocks (block_kernels).
# A profile records it in its state.json, the standalone runner in its results' .info.json.
JOURNAL = 2
RESULT_FIELDS = ("name", "round", "median_ms", "p10_ms", "p90_ms", "runs")  # every row has them
OPTIONAL_FIELDS = ("kernels",)  # block rows from ONNX Runtime's profiler; absent in older files
NODE_SCOPE = re.compile(r"/nodes\.(\d+)/")
# Job-rounds either side of a job-round whose residuals estimate the machine's speed at it (see
# speed_factors). On a VM that ran in episodes 1.5x slower, 5 cut the disagreement of a validation's
# even and odd rounds from 4.0 to 2.4 % on one data set and from 21.5 to 1.9 % on another (3 and 8
# did about as well in a simpler form of the correction).
SPEED_WINDOW = 5
# Which statistic of a round's runs is its reading (a journal row's field). A shared VM also slows
# down for parts of a round: the median of a round half in a slow stretch reads the slow speed,
# its 10th percentile still the machine's own. On a VM running in 1.5x slower stretches of 0.2-20 s,
# p10 instead of the median cut the disagreement of a validation's even and odd rounds from 3.0 to
# 1.7 % (DARTS @ 32) and the drift-corrected error of two DARTS LUTs from 3.0 / 5.2 to 2.0 / 3.4 %
# MAPE (Spearman 0.95 -> 0.97); on ProxylessNAS @ 224 2.2 / 2.7 to 1.8 / 2.1 %. On a quiet
# machine p10 reads a few percent below the median (one model's spread of runs); a LUT and the
# measurements compared with it read the same statistic. On a quiet machine (4 December 2026,
# evening) p10 throughout still beat the median throughout, for both spaces (bench/reading_ab.py).
READINGS = {"p10": "p10_ms", "median": "median_ms"}
DEFAULT_READING = "p10"
# The reading of a block's time inside a network (a profile's ``net#i`` rows): a key of READINGS,
# or "auto", the median where the block's median (over its rounds, as timed) is under
# COARSE_BELOW_MS and ``reading`` above, one choice per block for all its rounds.
# ONNX Runtime's node profiler reports each kernel in whole microseconds, and DARTS @ 32 blocks
# run in 1-20 us, so such a block's runs take a few integer values: their 10th percentile sits on
# the lowest, their median nearer the block's time. On a quiet machine (4 December 2026, 18:15
# UTC) six DARTS @ 32 profiles with their blocks read at the median ranked 50 networks against
# four validations combined at Spearman 0.9919 on average (5 of 6 at 0.99 or above), against
# 0.9898 (1 of 6) at p10; three ProxylessNAS @ 224 profiles, whose blocks all run 50 us or more,
# read 0.9949 at the median and 0.9957 at p10 (against two validations combined), so above the
# threshold a block keeps the reading that resists a shared machine's slow stretches.
BLOCK_READINGS = (*READINGS, "auto")
DEFAULT_BLOCK_READING = "auto"
COARSE_BELOW_MS = 0.05  # 1 us of the node profiler is 2 % or more of a block under this


@dataclass(frozen=True)
class TimingSettings:
    """How one model is timed in one round. Defaults suit CPU blocks of 0.01-20 ms."""

    warmup_ms: float = 30.0  # first runs after a switch are slow: discard at least this long
    min_warmup_runs: int = 3
    target_ms: float = 80.0  # measure for at least this long per round ...
    min_runs: int = 10  # ... and at least this many runs
    max_runs: int = 2000
    profile_runs: int = 20  # profiled runs per round for in-network block times
    cooldown_ms: float = 0.0  # pause before each model, so another session's spinning threads go idle
    # A block timed alone (a job of kind "op") measures this long instead of ``target_ms``: a LUT
    # prices blocks by their in-network times, so its alone time is a reference figure and a probe
    # of the machine's speed between the networks (speed_factors), not a price. On the stored
    # profiles of 3 December, 30 instead of 80 ms moved their predictions by 0.03-0.38 %, less
    # than two profiles differ (1.0-1.6 %), and cut the blocks' share of a ProxylessNAS @ 224
    # profile from 34-37 s to 18 s.
    op_target_ms: float = 30.0

    def for_kind(self, kind: str) -> TimingSettings:
        """The settings a job of ``kind`` (:class:`Job`) is timed with: ``op_target_ms`` as its
        target for a block alone, these settings for anything else."""
        return replace(self, target_ms=self.op_target_ms) if kind == "op" else self


def time_runs(step: Callable[[], float], s: TimingSettings) -> list[float]:
    """Warm up, then call ``step`` (runs once, returns its duration in ms) until enough is timed."""
    if s.cooldown_ms > 0:
        time.sleep(s.cooldown_ms / 1e3)
    t0 = time.perf_counter()
    n = 0
    while n < s.min_warmup_runs or (time.perf_counter() - t0) * 1e3 < s.warmup_ms:
        step()
        n += 1
    samples: list[float] = []
    total = 0.0
    while not measured_enough(len(samples), total, s):
        ms = step()
        samples.append(ms)
        total += ms
    return samples


def measured_enough(runs: int, total_ms: float, s: TimingSettings) -> bool:
    """``runs`` runs taking ``total_ms`` in all are what ``s`` asks a measurement for: at least
    ``min_runs`` runs and ``target_ms``, or ``max_runs`` runs."""
    return runs >= s.max_runs or (runs >= s.min_runs and total_ms >= s.target_ms)


def cpu_step(fn: Callable[[], object]) -> Callable[[], float]:
    """A step that runs a synchronous ``fn`` once and returns its wall time in ms."""

    def step() -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    return step


def summarize(samples: list[float]) -> dict[str, float]:
    """Median, 10th and 90th percentile (ms) and the count of a list of run times."""
    arr = np.asarray(samples, dtype=np.float64)
    return {
        "median_ms": float(np.median(arr)),
        "p10_ms": float(np.percentile(arr, 10)),
        "p90_ms": float(np.percentile(arr, 90)),
        "runs": len(samples),
    }


class Timed(Protocol):
    """Something the loop can time: one op (kind ``op``) or a whole network (kind ``net``)."""

    def time(self, s: TimingSettings) -> list[float]: ...

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        """Per-block in-network times (ms per run) keyed by plan node index; nets only.

        A timer that knows how many kernels ran for each block may also set ``kernels``
        (plan node index -> count) as it does so.
        """
        ...


# -- ONNX Runtime ---------------------------------------------------------------------------


def session_options(threads: int, spinning: bool = False, profile_prefix: str | None = None) -> ort.SessionOptions:
    """Session options of every timed session: fixed threads, sequential, all graph optimisations.

    ``spinning`` lets idle pool threads spin (ORT's default, what a deployed app gets with more
    than one thread); off, an idle thread sleeps and the next parallel op must wake it.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def ort_settings(spinning: bool) -> dict[str, object]:
    """The ORT session settings recorded in a LUT's metadata."""
    return {
        "intra_op_spinning": spinning,
        "inter_op_threads": 1,
        "execution_mode": "sequential",
        "graph_optimization": "all",
        "io_binding": True,
        "fresh_session_per_round": True,
        "inserted_kernels": "charged to the block that runs next",  # layout reorders (block_kernels)
    }


class ProviderError(RuntimeError):
    """ONNX Runtime cannot run a session on the execution provider asked for."""


def providers_for(provider: str) -> list[str]:
    """``cpu`` -> the CPU execution provider; ``cuda`` -> CUDA EP (CPU EP for what it lacks).
    Raises :class:`ProviderError` if this onnxruntime has no CUDA EP."""
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ProviderError(
                "onnxruntime has no CUDAExecutionProvider here; on a CUDA machine install onnxruntime-gpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"unknown provider {provider!r}; expected cpu or cuda")


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line (ONNX Runtime's can run to many), or its type."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open_session(model: bytes | str, so: ort.SessionOptions, provider: str) -> ort.InferenceSession:
    """An ORT session of ``model`` on ``provider``. ONNX Runtime falls back to the CPU, with only a
    warning, when its CUDA provider cannot start (missing CUDA or cuDNN libraries): that would time
    the CPU under the name of the GPU, so it raises :class:`ProviderError` instead."""
    sess = ort.InferenceSession(model, so, providers=providers_for(provider))
    if provider == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise ProviderError(
            "onnxruntime could not start its CUDA provider here (it fell back to the CPU); install the CUDA and "
            "cuDNN libraries this onnxruntime-gpu was built for"
        )
    return sess


class OrtModel:
    """An ONNX model in an ORT session with random inputs and outputs bound once."""

    def __init__(
        self, model: bytes | str, threads: int, provider: str = "cpu", seed: int = 0, spinning: bool = False
    ) -> None:
        self.model, self.threads, self.provider, self.spinning = model, threads, provider, spinning
        self.sess = open_session(model, session_options(threads, spinning), provider)
        self.io, self._keep = self._bind(self.sess, seed)
        self.kernels: dict[int, int] = {}  # per block, the kernels ORT ran for it (set by node_times)

    def _bind(self, sess: ort.InferenceSession, seed: int) -> tuple[ort.IOBinding, list[ort.OrtValue]]:
        rng = np.random.default_rng(seed)
        dev = "cuda" if self.provider == "cuda" else "cpu"
        io = sess.io_binding()
        keep = []
        for inp in sess.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in inp.shape]  # a dynamic batch runs at 1
            val = ort.OrtValue.ortvalue_from_numpy(rng.standard_normal(shape).astype(np.float32), dev, 0)
            keep.append(val)
            io.bind_ortvalue_input(inp.name, val)
        for out in sess.get_outputs():
            io.bind_output(out.name, dev)
        sess.run_with_iobinding(io)  # let ORT allocate the outputs once, then keep them bound
        outs = io.get_outputs()
        io.clear_binding_outputs()
        for out, val in zip(sess.get_outputs(), outs, strict=True):
            io.bind_ortvalue_output(out.name, val)
            keep.append(val)
        return io, keep

    def run(self) -> None:
        self.sess.run_with_iobinding(self.io)
        if self.provider == "cuda":
            self.io.synchronize_outputs()

    def time(self, s: TimingSettings) -> list[float]:
        return time_runs(cpu_step(self.run), s)

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        """In-network block times from ORT's node profiler (kernel time of each node, ms); also
        sets ``kernels``, how many kernels (profiled nodes) each block ran as."""
        with tempfile.TemporaryDirectory() as tmp:
            so = session_options(self.threads, self.spinning, os.path.join(tmp, "prof"))
            sess = open_session(self.model, so, self.provider)
            io, _keep = self._bind(sess, 0)
            warm = max(s.min_warmup_runs, 5)
            for _ in range(warm + s.profile_runs):
                sess.run_with_iobinding(io)
            with open(sess.end_profiling()) as f:
                events = json.load(f)
        per_run, self.kernels = block_kernels(events, 1 + warm + s.profile_runs)  # _bind ran once
        return {i: runs[1 + warm : 1 + warm + s.profile_runs] for i, runs in per_run.items()}


def kernel_events(events: list[dict]) -> list[dict]:
    """The kernel events (``<node>_kernel_time``, ``dur`` in µs) of ONNX Runtime's node-profiler
    ``events``, in time order (ties in the order the profiler wrote them, which is execution order)."""
    ks = (e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"))
    return sorted(ks, key=lambda e: e["ts"])


def inserted(event: dict) -> bool:
    """A kernel event of a node ONNX Runtime inserted itself: in no block's ``/nodes.<i>/`` scope."""
    return not NODE_SCOPE.search(event["name"])


def block_kernels(events: list[dict], runs: int) -> tuple[dict[int, list[float]], dict[int, int]]:
    """Per block (plan node index): its kernel time in each of ``runs`` runs (ms), and how many
    kernels it ran as, from ONNX Runtime's node-profiler ``events``.

    A sequential session runs one fixed plan, so its kernel events in time order are ``runs``
    copies of one sequence. A kernel in a block's ``/nodes.<i>/`` scope is that block's. A kernel
    ONNX Runtime inserted itself (a layout reorder between its blocked NCHWc kernels and plain
    NCHW ones, e.g. around a FactorizedReduce's slices; on CUDA also the copies between host and
    device) is charged to the block that runs next in the plan, the one that needs it (at the
    plan's end, the one before). Left out, such reorders were 2-5 % of a DARTS @ 32 network's
    kernel time, varying with its ops, and the sum under-priced the networks that have many
    (``bench/inserted_kernels.py``). Raises ``RuntimeError`` if the events are not ``runs`` alike
    runs.
    """
    ks = kernel_events(events)
    n = len(ks) // runs
    plan = [e["name"] for e in ks[:n]]
    alike = len(set(plan)) == n and all(e["name"] == plan[k % n] for k, e in enumerate(ks))  # names are unique
    if n == 0 or len(ks) != n * runs or not alike:
        raise RuntimeError(f"the node profiler recorded {len(ks)} kernels, not {runs} runs of one plan")
    owner = [int(m.group(1)) if (m := NODE_SCOPE.search(name)) else None for name in plan]
    after: int | None = None
    for j in reversed(range(n)):  # an inserted kernel belongs to the block that runs next ...
        owner[j] = after = owner[j] if owner[j] is not None else after
    before: int | None = None
    for j in range(n):  # ... or, at the plan's end, to the one before
        owner[j] = before = owner[j] if owner[j] is not None else before
    per_run: dict[int, list[float]] = defaultdict(lambda: [0.0] * runs)
    for k, e in enumerate(ks):
        if owner[k % n] is not None:  # None only when no kernel is in a block's scope
            per_run[owner[k % n]][k // n] += e["dur"] / 1e3
    kernels: dict[int, int] = defaultdict(int)
    for o in owner:
        if o is not None:
            kernels[o] += 1
    return dict(per_run), dict(kernels)


# -- the loop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One model to time. ``kind``: ``op``, a block alone (timed for ``TimingSettings.op_target_ms``);
    ``net``, a network whose blocks are also timed in it (:meth:`Timed.node_times`); ``model``, a
    network or model timed whole only."""

    name: str
    kind: str
    load: Callable[[], Timed]


def append_rows(path: Path, rows: Iterable[dict[str, object]]) -> None:
    """Append one job-round's rows and make them durable: a kill loses at most the rows in flight.

    The caller puts the job's own row last: it marks the batch complete. A kill can cut a write
    anywhere (even one ``write`` call, at a page boundary), so :func:`_drop_torn_tail` first
    removes what a cut batch left: a partial line and block rows whose job row never came.
    """
    _drop_torn_tail(path)
    new = not path.exists() or path.stat().st_size == 0
    if new:
        fields = [*RESULT_FIELDS, *OPTIONAL_FIELDS]
    else:  # keep the columns the file has (one written before ``kernels`` existed stays consistent)
        with path.open(newline="") as f:
            fields = next(csv.reader(f), list(RESULT_FIELDS))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    if new:
        w.writeheader()
    for row in rows:
        w.writerow({k: row.get(k, "") for k in fields})
    with path.open("ab") as f:
        f.write(buf.getvalue().encode())
        f.flush()
        os.fsync(f.fileno())


def _parent(name: str) -> str:
    """``net:x#3`` (block 3 inside network ``net:x``) -> ``net:x``; a job's own row is its parent."""
    return name.split("#", 1)[0]


def _drop_torn_tail(path: Path) -> None:
    """Cut what a kill left at the end of a results file: half a line, and block rows (``name#i``)
    after the last job row whose job row is nowhere in the file (their batch never completed).

    Files written before job rows came last (job row first, then its blocks) keep their tail: the
    job row of those block rows is present.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1 if data and not data.endswith(b"\n") else len(data)
    lines = data[:keep].splitlines(keepends=True)
    cut = len(lines)
    while cut > 1:  # line 0 is the header; a batch ends with its job row, so only the tail can be cut
        row = next(csv.reader([lines[cut - 1].decode("utf-8", errors="replace")]), [])
        if len(row) < 2 or "#" not in row[0] or _line_start(_parent(row[0]), row[1]) in data[:keep]:
            break  # a job row, or a block row whose job row is in the file (the older order)
        cut -= 1
    keep = sum(len(line) for line in lines[:cut])
    if keep < len(data):
        with path.open("r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())


def _line_start(name: str, rnd: str) -> bytes:
    """How a results line for job ``name`` in round ``rnd`` starts, as the CSV writer writes it."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([name, rnd])
    return b"\n" + buf.getvalue().rstrip("\n").encode() + b","


def not_results(path: Path) -> str | None:
    """Why ``path`` is not a results file of this runner, in a few words; None when it is one,
    is missing or empty, or holds only the start of a header (a kill during the first write)."""
    if not path.exists():
        return None
    with path.open("rb") as f:
        head = f.read(4096)
    line, newline, _ = head.partition(b"\n")
    if not newline:
        header = ",".join([*RESULT_FIELDS, *OPTIONAL_FIELDS]).encode()
        return None if header.startswith(head) else "not a results file of ort_runner.py (no header line)"
    fields = next(csv.reader([line.decode("utf-8", errors="replace")]), [])
    missing = [f for f in RESULT_FIELDS if f not in fields]
    return f"not a results file of ort_runner.py (its header lacks {', '.join(missing)})" if missing else None


def read_rows(path: Path) -> list[dict[str, str]]:
    """Complete rows of a results file: a truncated last line (a kill mid-write) and block rows
    whose job row is missing (a batch cut short) are dropped."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    rows = [r for r in csv.DictReader(lines) if all(r.get(k) not in (None, "") for k in RESULT_FIELDS)]
    jobs = {(r["name"], r["round"]) for r in rows if "#" not in r["name"]}
    return [r for r in rows if (_parent(r["name"]), r["round"]) in jobs]


def run_jobs(
    jobs: list[Job],
    rounds: int,
    timing: TimingSettings,
    results: Path,
    progress: Callable[[int, int, str], None] | None = None,
    fresh: bool = True,
    first_round: int = 0,
) -> int:
    """Time every job in rounds ``first_round`` to ``rounds - 1``, appending rows to ``results``;
    resumable.

    A job's rows for a round are written together after it finished, so a round is either wholly
    recorded or redone. ``progress(done, total, name)`` is called after each job-round (``total``:
    the job-rounds of this call). Returns how many job-rounds were timed (not skipped as already
    done).

    With ``fresh`` (the default) every round loads its model anew (a new session, new buffers):
    one session's memory placement can make it a few percent faster or slower than another's
    for its whole life, so the median over rounds is also a median over placements.
    """
    done = {(r["name"], int(r["round"])) for r in read_rows(results)}
    loaded: dict[str, Timed] = {}
    total = (rounds - first_round) * len(jobs)
    k = timed = 0
    for rnd in range(first_round, rounds):
        order = list(jobs)
        random.Random(rnd).shuffle(order)  # seeded: a resumed run walks the same order
        for job in order:
            k += 1
            if (job.name, rnd) in done:
                if progress:
                    progress(k, total, job.name)
                continue
            if fresh or job.name not in loaded:
                loaded.pop(job.name, None)
                loaded[job.name] = job.load()
            model = loaded[job.name]
            rows = [{"name": job.name, "round": rnd, **summarize(model.time(timing.for_kind(job.kind)))}]
            if job.kind == "net":
                blocks = sorted(model.node_times(timing).items())
                kernels: dict[int, int] = getattr(model, "kernels", {})
                rows = [
                    {"name": f"{job.name}#{i}", "round": rnd, **summarize(xs), "kernels": kernels.get(i, "")}
                    for i, xs in blocks
                ] + rows
            append_rows(results, rows)  # the job's own row last: it marks the batch complete
            timed += 1
            if progress:
                progress(k, total, job.name)
    return timed


def time_jobs(
    jobs: list[Job],
    rounds: int,
    timing: TimingSettings,
    progress: Callable[[int, int, str], None] | None = None,
    reading: str = DEFAULT_READING,
) -> dict[str, list[float]]:
    """Time ``jobs`` in ``rounds`` rounds (:func:`run_jobs`, its journal in a temporary folder)
    and return each job's per-round readings (ms, :func:`round_values`), in round order: a one-off
    measurement that need not survive a kill (a profile keeps its journal instead)."""
    return round_values(time_job_rows(jobs, rounds, timing, progress), reading=reading)


def time_job_rows(
    jobs: list[Job], rounds: int, timing: TimingSettings, progress: Callable[[int, int, str], None] | None = None
) -> list[dict[str, str]]:
    """:func:`time_jobs`'s measurement as the journal rows it wrote, in the order they ran."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.csv"
        run_jobs(jobs, rounds, timing, results, progress)
        return read_rows(results)


def speed_factors(names: list[str], values: list[float], window: int = SPEED_WINDOW) -> list[float]:
    """How much slower (> 1) or faster (< 1) than its median speed the machine ran at each job-round.

    ``names`` and ``values`` are the job-rounds in the order they ran (a job's name and its round's
    reading, ms). A shared machine changes speed in episodes of seconds (1.5x slower, on this project's
    VMs) that hit every model timed meanwhile alike. The model is ``value = usual(job) * speed(time)``:
    a job-round's residual is ``log(value / usual)``, and the speed at a job-round is the median
    residual of the ``window`` job-rounds either side of it and itself (near the ends, as many
    either side as there are on the shorter side). Five passes, alternating:
    the usual times from the values corrected so far (the first pass takes each job's fastest
    round, so that a job timed in slow episodes in most of its rounds still finds its usual time;
    later passes the median), then the speeds. The speeds are last divided by their median: the
    figures are the machine at its median speed over the run. All 1.0 when there is too little to
    compare: fewer than ``2 * window + 1`` job-rounds, or fewer than 3 jobs timed in 2 or more rounds.
    """
    n = len(values)
    if not _judgeable(names, window):
        return [1.0] * n
    vals = np.asarray(values, dtype=np.float64)
    factor = np.ones(n)
    for k in range(5):
        by: dict[str, list[float]] = defaultdict(list)
        for name, v in zip(names, vals / factor, strict=True):
            by[name].append(v)
        pick = np.min if k == 0 else np.median
        usual = np.array([float(pick(by[name])) for name in names])
        ok = (vals > 0) & (usual > 0)  # a reading of 0 (an imported file) says nothing about speed
        res = np.log(np.where(ok, vals, 1.0) / np.where(ok, usual, 1.0))
        half = [min(window, i, n - 1 - i) for i in range(n)]  # symmetric near the ends too
        factor = np.exp([np.median(res[i - h : i + h + 1]) for i, h in enumerate(half)])
    factor = factor / np.median(factor)
    return [float(f) for f in factor]


def _judgeable(names: list[str], window: int) -> bool:
    """Enough job-rounds (``2 * window + 1``) of enough jobs (3 timed in 2 or more rounds) to
    judge the machine's speed from them."""
    counts: dict[str, int] = defaultdict(int)
    for name in names:
        counts[name] += 1
    return len(names) >= 2 * window + 1 and sum(c >= 2 for c in counts.values()) >= 3


def _field(reading: str) -> str:
    """The journal field that holds ``reading`` (a key of ``READINGS``)."""
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; expected one of {', '.join(READINGS)}")
    return READINGS[reading]


def speed_spread(rows: list[dict[str, str]], reading: str = DEFAULT_READING) -> dict[str, float] | None:
    """How much the machine's speed changed over the job rows of a journal (:func:`speed_factors`
    of their ``reading``): the 10th and 90th percentile of its speed factors (the median is 1;
    above 1, slower), and the job-rounds judged; None when there was too little to judge (as for
    :func:`speed_factors`)."""
    field = _field(reading)
    jobs = [r for r in rows if "#" not in r["name"]]
    names = [r["name"] for r in jobs]
    if not _judgeable(names, SPEED_WINDOW):
        return None
    lo, hi = np.percentile(speed_factors(names, [float(r[field]) for r in jobs]), [10, 90])
    return {"p10": float(lo), "p90": float(hi), "job_rounds": len(names)}


def round_values(
    rows: list[dict[str, str]], steady: bool = True, reading: str = DEFAULT_READING, block_reading: str | None = None
) -> dict[str, list[float]]:
    """Each name's per-round readings (ms), in round order.

    A round's reading is the statistic ``reading`` of its runs (``READINGS``: ``p10``, the
    default, or ``median``); a block row's (``net#i``, a block's time inside a network) is
    ``block_reading`` of its runs (``BLOCK_READINGS``; ``"auto"``: the median where the block's
    median over its rounds is under ``COARSE_BELOW_MS``, else ``reading``; None: ``reading``).
    With ``steady`` (the default) each is
    divided by the machine's speed when it was timed (:func:`speed_factors` of the job rows'
    ``reading`` in file order, which is the order they ran; a block row takes its job's factor),
    so an episode of a slower machine does not count as the model's own time. ``steady=False``:
    the readings as timed.
    """
    field = _field(reading)
    block_field = _field(reading if block_reading in (None, "auto") else block_reading)
    fine: set[str] = set()  # blocks "auto" reads at the median: one choice per block, not per round
    if block_reading == "auto":
        medians: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if "#" in r["name"]:
                medians[r["name"]].append(float(r["median_ms"]))
        fine = {n for n, xs in medians.items() if statistics.median(xs) < COARSE_BELOW_MS}

    def value(r: dict[str, str]) -> float:
        if "#" not in r["name"]:
            return float(r[field])
        return float(r["median_ms" if r["name"] in fine else block_field])

    jobs = [r for r in rows if "#" not in r["name"]]
    factors = speed_factors([r["name"] for r in jobs], [float(r[field]) for r in jobs]) if steady else [1.0] * len(jobs)
    at = {(r["name"], r["round"]): f for r, f in zip(jobs, factors, strict=True)}
    by: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        f = at.get((_parent(r["name"]), r["round"]), 1.0)
        by[r["name"]].append((int(r["round"]), value(r) / f))
    return {k: [v for _, v in sorted(xs)] for k, xs in by.items()}


def round_spread_pct(rows: list[dict[str, str]], names: Iterable[str], reading: str = DEFAULT_READING) -> float | None:
    """How far a model's reading moves from round to round after the speed correction: one
    standard deviation, in percent, pooled over the models ``names`` (:func:`round_values`).

    Estimated as 1.4826 x the median of ``|log(a / b)|`` over every pair of rounds ``a``, ``b`` of
    each model, over sqrt(2): the standard deviation of normal noise, unmoved by a few outlying
    rounds and by how many rounds there are. None when no model of ``names`` has 2 rounds.
    """
    by = round_values(rows, reading=reading)
    diffs = [
        abs(float(np.log(a / b)))
        for name in names
        for i, a in enumerate(by.get(name, []))
        for b in by[name][i + 1 :]
        if a > 0 and b > 0
    ]
    return float(1.4826 * statistics.median(diffs) / np.sqrt(2) * 100) if diffs else None


def round_medians(
    rows: list[dict[str, str]], steady: bool = True, reading: str = DEFAULT_READING, block_reading: str | None = None
) -> dict[str, float]:
    """Each name's figure: the median over rounds of its per-round readings (ms); ``steady``,
    ``reading`` and ``block_reading`` as for :func:`round_values`."""
    return {k: statistics.median(v) for k, v in round_values(rows, steady, reading, block_reading).items()}


# -- the standalone runner ------------------------------------------------------------------


def local_time() -> str:
    """The local date and time as every record of hwnas writes it (ISO 8601 with the UTC offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path``, fsync, rename over it: a kill leaves the old or the new file.

    The one atomic writer of hwnas (here so that the standalone runner has it too).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if hasattr(os, "fchmod"):  # mkstemp's 0600 would hide the file from other users
                os.fchmod(f.fileno(), _file_mode(path))
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_mode(path: Path) -> int:
    """The permissions a rewrite of ``path`` keeps: its own, or those ``open`` gives a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_csv_atomic(path: Path, rows: list[dict[str, object]]) -> None:
    """Write ``rows`` (dicts with the same keys, in order) as a CSV with a header, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue().encode())


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON atomically (see :func:`atomic_write`)."""
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


class RunnerError(Exception):
    """A problem the standalone runner reports in one line (no traceback), exiting 1."""


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def differing(prior: dict | None, now: dict) -> list[str] | None:
    """The keys of ``now`` whose values ``prior`` (what an interrupted run recorded when it began)
    does not share, ``journal`` first; None when there is no ``prior`` to compare (missing or
    unreadable). A run is resumed only when this is empty: rows of another journal kind or other
    settings would mix with ours in one LUT."""
    if prior is None:
        return None
    keys = [k for k in now if prior.get(k) != now[k]]
    return sorted(keys, key=lambda k: k != "journal")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time the ONNX models written by `hwnas profile --emit-onnx`.")
    ap.add_argument("folder", type=Path, help="folder with manifest.json and the .onnx files")
    ap.add_argument("--out", type=Path, default=None, help="results CSV (default: FOLDER/times.csv)")
    ap.add_argument("--threads", type=_positive, default=None, help="intra-op threads (default: the manifest's)")
    ap.add_argument("--provider", choices=["cpu", "cuda"], default=None, help="default: the manifest's")
    a = ap.parse_args(argv)
    try:
        return _run(a)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an --out in a missing or read-only folder, a full disk, ...
        print(f"error: {e.filename or ''}: {e.strerror or e}; check the --out path and its folder", file=sys.stderr)
        return 1


def _run(a: argparse.Namespace) -> int:
    try:
        manifest = json.loads((a.folder / MANIFEST).read_text())
        st = manifest["settings"]
        timing = TimingSettings(**st["timing"])
        models = [(str(m["name"]), str(m["kind"]), str(m["file"]), m.get("sha256")) for m in manifest["models"]]
        rounds = int(st["rounds"])
        threads = a.threads or int(st["threads"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
        raise RunnerError(f"{a.folder / MANIFEST}: not a manifest from `hwnas profile --emit-onnx` ({e})") from None
    if threads < 1:
        raise RunnerError(f"{a.folder / MANIFEST}: threads {threads}; it must be 1 or more (or pass --threads)")
    provider = a.provider or st.get("provider", "cpu")
    try:
        providers_for(provider)
    except (ProviderError, ValueError) as e:
        raise RunnerError(str(e)) from None
    _check_models(a.folder, [(f, sha) for _, _, f, sha in models])
    spinning = bool(st.get("spinning", False))
    out = a.out or a.folder / "times.csv"
    info_path = out.with_name(out.stem + ".info.json")
    models_sha = hashlib.sha256(json.dumps(manifest["models"], sort_keys=True).encode()).hexdigest()
    run = {
        "journal": JOURNAL, "threads": threads, "provider": provider, "rounds": rounds, "timing": asdict(timing),
        "spinning": spinning, "onnxruntime": ort.__version__, "device": cpu_name(), "models_sha256": models_sha,
    }  # fmt: skip
    problem = not_results(out)
    if problem:  # appending would damage someone else's file
        raise RunnerError(f"{out} exists and is {problem}; choose another --out, or delete it")
    prior = read_json_object(info_path) if info_path.exists() else None
    resumed = bool(read_rows(out))
    if resumed:  # a run to resume: only one of this runner's kind with the same settings
        problem = _resume_problem(prior, run, out, info_path)
        if problem:
            raise RunnerError(problem)
    write_json_atomic(info_path, {**run, "complete": False})  # marks the results file as this run's

    def loader(file: str) -> Callable[[], Timed]:
        def load() -> Timed:
            try:
                return OrtModel(str(a.folder / file), threads, provider, spinning=spinning)
            except ProviderError as e:
                raise RunnerError(str(e)) from None
            except Exception as e:  # ONNX Runtime's load errors derive from Exception only
                raise RunnerError(
                    f"{a.folder / file}: onnxruntime {ort.__version__} cannot load or run it ({first_line(e)}); the "
                    f"file is as written, so this onnxruntime is too old for the models (ONNX opset "
                    f"{manifest.get('opset', 'of the manifest')}) or lacks an op: upgrade onnxruntime, then delete "
                    f"{out} and run again (timings of two onnxruntime versions do not mix)"
                ) from None

        return load

    jobs = [Job(name, kind, loader(file)) for name, kind, file, _ in models]

    def show(done: int, total: int, name: str) -> None:
        print(f"[{done}/{total}] {name}", file=sys.stderr)

    t0 = time.perf_counter()
    timed = run_jobs(jobs, rounds, timing, out, show)
    if not timed and prior and prior.get("complete") and not differing(prior, run):
        info = prior  # a finished run asked again: nothing timed, its record stays as it was
    else:
        info = {
            **run, "complete": True, "ort_settings": ort_settings(spinning),
            "seconds": round(time.perf_counter() - t0, 1), "resumed": resumed,  # seconds: this invocation's
            "date": local_time(),
            "numpy": np.__version__, "runner": "ort_runner.py",
        }  # fmt: skip
    write_json_atomic(info_path, info)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _check_models(folder: Path, files: list[tuple[str, str | None]]) -> None:
    """Refuse, before timing anything, a folder whose model files are missing or differ from the
    manifest's checksums (manifests from before checksums were written are checked for presence)."""
    missing = [f for f, _ in files if not (folder / f).is_file()]
    if missing:
        raise RunnerError(
            f"{folder}: {len(missing)} model file(s) of the manifest are missing, e.g. {missing[0]}; copy the "
            "whole folder `hwnas profile --emit-onnx` wrote"
        )
    damaged = [f for f, sha in files if sha and sha256_file(folder / f) != sha]
    if damaged:
        raise RunnerError(
            f"{folder}: {len(damaged)} model file(s) differ from the manifest's checksums (damaged on the way?), "
            f"e.g. {damaged[0]}; copy the whole folder `hwnas profile --emit-onnx` wrote again"
        )


def read_json_object(path: Path) -> dict | None:
    """``path``'s JSON object, or None if it is missing, unreadable or not a JSON object (a
    journal's or a results file's record, which a kill or a bad copy may have damaged)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _resume_problem(prior: dict | None, run: dict, out: Path, info_path: Path) -> str | None:
    """Why the results ``out``, begun under ``prior`` (their ``.info.json``), must not be resumed by
    ``run`` (this runner and its settings), in one line with what to do; None if they may."""
    diff = differing(prior, run)
    if diff is None:
        return (
            f"{out} has no readable {info_path.name} beside it (a runner from before 3 December 2026 wrote it only "
            f"at the end, or it was lost), so these timings cannot be told from another runner's; delete {out} to "
            "time the models again (a finished file can be imported as it is)"
        )
    if not diff:
        return None
    if diff[0] == "journal":
        return (
            f"{out} holds timings from another version of this runner, which may have read block times "
            f"differently; delete {out} to time the models again"
        )
    assert prior is not None
    then = ", ".join(
        f"{k} {prior.get(k)} then, {run[k]} now" if k in ("threads", "provider", "rounds") else k for k in diff
    )
    if set(diff) <= {"threads", "provider"}:
        again = f"--threads {prior.get('threads')} --provider {prior.get('provider')}"
        return (
            f"{out} holds timings taken with other settings ({then}); re-run with {again} to resume, or delete "
            f"{out} to start over"
        )
    return (
        f"{out} holds timings begun with another manifest, onnxruntime or machine ({then}); delete {out} to start "
        "over, or time on the machine and with the folder that began it"
    )


if __name__ == "__main__":
    sys.exit(main())
