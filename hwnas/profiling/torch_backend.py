"""torch eager timing on the CPU and on CUDA (events and synchronisation).

On the CPU a run is timed with ``time.perf_counter``; blocks inside a network are timed by
reading the clock between the network's nodes (the forward is synchronous). On CUDA, events are
recorded around a run (and between nodes) and read after ``torch.cuda.synchronize`` — host
timers around asynchronous kernel launches measure only the launch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

import torch

from hwnas.arch import PlanNet
from hwnas.errors import HwnasError
from hwnas.ops import OpCall
from hwnas.profiling.runner import TimingSettings, cpu_step, time_runs

# glibc's malloc returns big buffers to the OS after each call, so torch eager page-faults
# thousands of times per forward (measured: 11.6 vs 16.5 ms for MobileNetV2, depending on the
# process). Raising both thresholds keeps the buffers. Values are bytes.
MALLOC_SETTINGS = {"M_MMAP_THRESHOLD": 1 << 30, "M_TRIM_THRESHOLD": 1 << 31}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_malloc() -> dict[str, int] | None:
    """Raise glibc's mmap/trim thresholds for this process; returns what was set (None: not glibc)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_SETTINGS["M_MMAP_THRESHOLD"]) and libc.mallopt(
            _M_TRIM_THRESHOLD, MALLOC_SETTINGS["M_TRIM_THRESHOLD"]
        )
    except (OSError, AttributeError):
        return None
    return dict(MALLOC_SETTINGS) if ok else None


def check_device(device: str) -> torch.device:
    """The torch device for ``cpu``/``cuda``; one clear error when CUDA is asked for but absent."""
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise HwnasError(
                "--device cuda: no CUDA GPU is visible to torch here (torch.cuda.is_available() is False); "
                "run on a machine with a GPU and a CUDA build of torch, or use --device cpu"
            )
        return torch.device("cuda")
    raise HwnasError(f"unknown device {device!r}; expected cpu or cuda")


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    from hwnas.profiling.runner import cpu_name

    return cpu_name()


def cuda_step(fn: Callable[[], object]) -> Callable[[], float]:
    """A step timed by CUDA events: record, run, record, wait for the end event, read ms."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def step() -> float:
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    return step


class TorchTimed:
    """An op or a whole network in eval mode on ``device`` with a fixed random input."""

    def __init__(self, module: torch.nn.Module, in_shapes: list[tuple[int, ...]], device: str, batch: int = 1) -> None:
        self.dev = check_device(device)
        self.module = module.eval().to(self.dev)
        gen = torch.Generator().manual_seed(0)
        self.inputs = [torch.randn(batch, *s, generator=gen).to(self.dev) for s in in_shapes]

    def _run(self) -> None:
        with torch.inference_mode():
            self.module(*self.inputs)

    def time(self, s: TimingSettings) -> list[float]:
        step = cuda_step(self._run) if self.dev.type == "cuda" else cpu_step(self._run)
        return time_runs(step, s)

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        """Per-node times inside the network (``module`` must be a :class:`PlanNet`)."""
        net = self.module
        if not isinstance(net, PlanNet):
            raise TypeError("node_times needs a PlanNet")
        n = len(net.nodes)
        out: dict[int, list[float]] = {i: [] for i in range(n)}
        cuda = self.dev.type == "cuda"
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)] if cuda else []
        stamps: list[float] = []

        def mark(i: int) -> None:
            if cuda:
                events[i].record()
            else:
                stamps.append(time.perf_counter())

        for r in range(max(s.min_warmup_runs, 5) + s.profile_runs):
            stamps.clear()

            with torch.inference_mode():
                net.forward(self.inputs[0], mark=mark)
            if cuda:
                events[-1].synchronize()
                times = [events[i].elapsed_time(events[i + 1]) for i in range(n)]
            else:
                times = [(stamps[i + 1] - stamps[i]) * 1e3 for i in range(n)]
            if r >= max(s.min_warmup_runs, 5):
                for i, t in enumerate(times):
                    out[i].append(t)
        return out


def op_timed(call: OpCall, device: str, batch: int) -> TorchTimed:
    arity = int(call.param_dict.get("n", 1))
    return TorchTimed(call.build(), [call.in_shape] * arity, device, batch)
