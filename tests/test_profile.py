"""Profiling on real backends (tiny spaces, short timing): coverage, resume, the standalone runner."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fast_settings
from scipy.stats import spearmanr

from hwnas.errors import HwnasError
from hwnas.lut import LUT, block_columns, block_prices
from hwnas.profiling import runner
from hwnas.profiling.profile import (
    REFIT_FOLDS,
    REFIT_LAMBDAS,
    ProfileSettings,
    calibration_archs,
    emit_onnx,
    import_results,
    plan_work,
    profile,
    refit_prices,
)
from hwnas.profiling.runner import Job, TimingSettings, read_rows
from hwnas.space import Space, load_space

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("space", ["tiny", "tiny_darts"])
def test_profile_covers_every_key_once(backend: str, space: str, tmp_path: Path) -> None:
    sp = load_space(space)
    out = tmp_path / "lut.csv"
    lut = profile(sp, fast_settings(backend=backend), out)
    assert sorted(lut.table["key"]) == sorted(c.key for c in sp.calls())
    assert lut.table["key"].is_unique
    assert (lut.table["context_n"] >= 1).all(), "every key must be seen inside a probe network"
    assert not out.with_name(out.name + ".work").exists()
    assert LUT.load(out).meta["backend"] == backend


class _Counting:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def time(self, s: TimingSettings) -> list[float]:
        self.log.append(self.name)
        return [1.0, 2.0, 3.0]

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        return {0: [0.5, 0.5]}


class _Recording(_Counting):
    """Records the timing settings each call gets, and which calls were made."""

    def time(self, s: TimingSettings) -> list[float]:
        self.log.append(f"time {s.target_ms:g}")
        return super().time(s)

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        self.log.append("blocks")
        return super().node_times(s)


@pytest.mark.parametrize(
    "kind, calls",
    [("op", ["time 30"]), ("net", ["time 80", "blocks"]), ("model", ["time 80"])],
)
def test_run_jobs_times_each_kind_as_its_settings_say(tmp_path: Path, kind: str, calls: list[str]) -> None:
    """A block alone measures for op_target_ms (its time prices nothing); a network for target_ms,
    and only a ``net`` job has its blocks timed (a ``model``, as `hwnas measure` times, does not)."""
    log: list[str] = []
    results = tmp_path / "r.csv"
    timing = TimingSettings(target_ms=80.0, op_target_ms=30.0)
    runner.run_jobs([Job("j", kind, lambda: _Recording(log, "j"))], 1, timing, results)
    assert [x for x in log if x != "j"] == calls
    assert {r["name"] for r in read_rows(results)} == ({"j", "j#0"} if kind == "net" else {"j"})


def test_run_jobs_resumes_without_redoing_rows(tmp_path: Path) -> None:
    log: list[str] = []
    jobs = [Job(f"j{i}", "net" if i == 2 else "op", (lambda i=i: _Counting(log, f"j{i}"))) for i in range(3)]
    results = tmp_path / "r.csv"
    stop_after = 4

    def interrupt(done: int, total: int, name: str) -> None:
        if done == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_jobs(jobs, 2, TimingSettings(), results, interrupt)
    assert len(log) == stop_after
    # a kill mid-write leaves half a line: it is dropped, not merged with the next row
    with results.open("a") as f:
        f.write("j1,1,0.5")
    assert runner.run_jobs(jobs, 2, TimingSettings(), results) == 6 - stop_after
    rows = read_rows(results)
    assert sorted((r["name"], r["round"]) for r in rows if "#" not in r["name"]) == sorted(
        (f"j{i}", str(r)) for i in range(3) for r in range(2)
    )
    assert [r for r in rows if r["name"] == "j2#0"] and len(log) == 6


def test_interrupted_profile_leaves_no_lut_and_resumes(tmp_path: Path) -> None:
    sp = load_space("tiny")
    out = tmp_path / "lut.csv"
    out.write_text("old table\n")  # an existing file must survive a failed run untouched

    def interrupt(done: int, total: int, name: str) -> None:
        if done == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile(sp, fast_settings(), out, interrupt)
    assert out.read_text() == "old table\n"
    lut = profile(sp, fast_settings(), out)
    total = len(plan_work(sp, fast_settings()).jobs(lambda c: None, lambda a: None))
    assert lut.meta["resumed"] is True
    assert lut.meta["job_rounds_timed_last_run"] == total - 10
    assert sorted(lut.table["key"]) == sorted(c.key for c in sp.calls())


def _interrupt_after_one_job(sp, out: Path) -> None:
    """Start a profile of ``sp`` to ``out`` and interrupt it after its first job-round."""

    def interrupt(done: int, total: int, name: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile(sp, fast_settings(), out, interrupt)


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    sp = load_space("tiny")
    _interrupt_after_one_job(sp, tmp_path / "lut.csv")
    with pytest.raises(HwnasError, match="interrupted profile with other settings"):
        profile(sp, fast_settings(threads=2), tmp_path / "lut.csv")


def test_a_journal_of_an_older_hwnas_is_not_resumed(tmp_path: Path) -> None:
    """A journal whose block rows were read another way (before inserted kernels were charged to
    blocks) would mix with new rows in one LUT: one line says to start over, and nothing is lost."""
    sp = load_space("tiny")
    out = tmp_path / "lut.csv"
    _interrupt_after_one_job(sp, out)
    state = tmp_path / "lut.csv.work" / "state.json"
    old = json.loads(state.read_text())
    del old["journal"]  # as written before the journal had a kind
    state.write_text(json.dumps(old))
    with pytest.raises(HwnasError, match=r"from another hwnas version.*delete"):
        profile(sp, fast_settings(), out)
    assert state.exists() and not out.exists()
    state.write_text("{ torn")  # damaged: nothing says what the journal holds
    with pytest.raises(HwnasError, match=r"state.json is unreadable; delete"):
        profile(sp, fast_settings(), out)
    assert state.exists() and not out.exists()


def test_hard_kill_then_resume(tmp_path: Path, fast_target: Path) -> None:
    out = tmp_path / "lut.csv"
    cmd = [sys.executable, "-m", "hwnas", "profile", "--space", "tiny", "--target", str(fast_target), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = out.with_name(out.name + ".work") / "results.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and len(read_rows(results)) >= 15:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if out.exists():  # the machine was fast enough to finish first: nothing to resume
        pytest.skip("profile finished before it could be killed")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lut = LUT.load(out)
    assert lut.meta["resumed"] is True
    assert sorted(lut.table["key"]) == sorted(c.key for c in load_space("tiny").calls())


def test_standalone_runner_round_trip(tmp_path: Path) -> None:
    sp = load_space("tiny_darts")
    folder = tmp_path / "ops"
    n = emit_onnx(sp, fast_settings(refit_nets=10), folder)
    assert n == len(list(folder.glob("*.onnx")))
    kinds = Counter(m["kind"] for m in json.loads((folder / "manifest.json").read_text())["models"])
    assert kinds["model"] == 10, "the refit networks go to the board too, to be timed whole"
    # the runner needs neither torch nor hwnas: run the profilers/ copy with torch made unimportable
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    shadow = tmp_path / "shadow"
    (shadow / "torch").mkdir(parents=True)
    (shadow / "torch" / "__init__.py").write_text("raise ImportError('no torch on this board')\n")
    (shadow / "hwnas").mkdir()
    (shadow / "hwnas" / "__init__.py").write_text("raise ImportError('no hwnas on this board')\n")
    res = subprocess.run(
        [sys.executable, str(ROOT / "profilers" / "ort_runner.py"), str(folder)], capture_output=True, text=True,
        env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (folder / "times.info.json").exists()
    lut = import_results(folder / "times.csv", tmp_path / "lut.csv")
    assert sorted(lut.table["key"]) == sorted(c.key for c in sp.calls())
    assert lut.meta["imported_from"].endswith("times.csv")
    whole = plan_work(sp, fast_settings(refit_nets=10)).timed_whole
    assert lut.meta["refit_nets"] == 10 and lut.meta["model"]["refit"]["nets"] == len(whole)
    manifest = json.loads((folder / "manifest.json").read_text())
    older = json.loads(json.dumps(manifest))  # a manifest from before refit networks: their rows are not read
    del older["hwnas"]["refit"], older["hwnas"]["profile_settings"]["refit_nets"]
    (folder / "manifest.json").write_text(json.dumps(older))
    plain = import_results(folder / "times.csv", tmp_path / "plain.csv")
    assert plain.meta["refit_nets"] == 0 and plain.meta["model"]["refit"] is None
    older["hwnas"]["refit"] = None
    (folder / "manifest.json").write_text(json.dumps(older))
    with pytest.raises(HwnasError, match="not a manifest written by `hwnas profile --emit-onnx`"):
        import_results(folder / "times.csv", tmp_path / "bad.csv")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert lut.table["kernels"].notna().any(), "the board's runner records kernels per block too"
    assert lut.meta["settings"]["onnxruntime"]["inserted_kernels"] == "charged to the block that runs next"
    # a runner from before inserted kernels were charged: its LUT says they were left out
    info = json.loads((folder / "times.info.json").read_text())
    del info["ort_settings"]["inserted_kernels"]
    (folder / "times.info.json").write_text(json.dumps(info))
    older = import_results(folder / "times.csv", tmp_path / "older.csv")
    assert older.meta["settings"]["onnxruntime"]["inserted_kernels"].startswith("left out")
    # figures damaged on the way back from the board: one line naming the row, no LUT written
    text = (folder / "times.csv").read_text()
    head = text.splitlines()[0].split(",")
    block = next(line for line in text.splitlines() if "#" in line.split(",")[0])
    for field, value in (("kernels", "x"), ("median_ms", "nan"), ("runs", "-3")):
        cells = block.split(",")
        cells[head.index(field)] = value
        (folder / "times.csv").write_text(text.replace(block, ",".join(cells)))
        with pytest.raises(HwnasError, match=f"{field} '{value}' is not a non-negative number"):
            import_results(folder / "times.csv", tmp_path / "lut2.csv")
        assert not (tmp_path / "lut2.csv").exists()


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """A folder ``hwnas profile --emit-onnx`` wrote for the tiny space, as copied to a board."""
    folder = tmp_path / "ops"
    emit_onnx(load_space("tiny"), fast_settings(), folder)
    return folder


def _refused(capsys: pytest.CaptureFixture[str], folder: Path, args: list[str], *words: str) -> str:
    """Run the board runner on ``folder``; assert it exits 1 with one ``error:`` line holding ``words``."""
    capsys.readouterr()
    assert runner.main([str(folder), *args]) == 1
    err = capsys.readouterr().err.strip()  # progress lines ([k/n] job) may come before the error
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in err, err
    assert all(w in last for w in words), err
    return last


def test_the_standalone_runner_resumes_only_its_own_kind_of_results(
    board: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    times, info = board / "times.csv", board / "times.info.json"
    assert runner.main([str(board)]) == 0
    saved = json.loads(info.read_text())
    assert saved["complete"] is True and saved["journal"] == runner.JOURNAL and saved["resumed"] is False
    text = times.read_text()
    assert runner.main([str(board)]) == 0, "a finished run resumes with nothing left to time"
    assert times.read_text() == text and json.loads(info.read_text()) == saved, "and keeps its record"
    lines, n_rows = text.splitlines(keepends=True), len(read_rows(times))
    first_job = next(i for i, line in enumerate(lines[1:], 1) if "#" not in line.split(",")[0])
    times.write_text("".join(lines[: first_job + 1]))  # killed after its first job
    info.write_text(json.dumps({**saved, "complete": False}))
    assert runner.main([str(board)]) == 0
    assert len(read_rows(times)) == n_rows and json.loads(info.read_text())["resumed"] is True
    text, saved = times.read_text(), json.loads(info.read_text())

    def refused(args: list[str], *words: str) -> None:
        before = info.read_bytes() if info.exists() else None
        _refused(capsys, board, args, *words)
        assert times.read_text() == text, "a refused resume leaves the results as they were"
        assert (info.read_bytes() if info.exists() else None) == before, "... and their record"

    refused(["--threads", "2"], "other settings (threads 1 then, 2 now)", "re-run with --threads 1 --provider cpu")
    for other in ({"rounds": 5}, {"onnxruntime": "1.0.0"}, {"device": "another board"}, {"models_sha256": "0"}):
        info.write_text(json.dumps({**saved, **other}))
        refused([], "another manifest, onnxruntime or machine", next(iter(other)), f"delete {times}")
    for prior in ({k: v for k, v in saved.items() if k != "journal"}, {**saved, "journal": runner.JOURNAL - 1}):
        info.write_text(json.dumps(prior))  # a file an older runner began or finished
        refused([], "another version of this runner", f"delete {times}")
    for damaged in (None, "{ torn"):  # an older runner wrote its info only at the end; or it was lost
        info.unlink(missing_ok=True)
        if damaged:
            info.write_text(damaged)
        refused([], "no readable times.info.json", f"delete {times}")
    info.write_text(json.dumps(saved))
    lut = import_results(board, tmp_path / "median.csv", reading="median")  # the folder stands for its times.csv
    assert lut.meta["imported_from"] == str(times) and lut.meta["reading"] == "median"
    assert lut.meta["threads"] == 1 and lut.meta["space"] == "tiny" and lut.meta["resumed"] is True
    other = tmp_path / "other.csv"
    for content, words in (
        (b"\x00\x01garbage", "not a results file of ort_runner.py (no header line)"),
        (b"a,b\n1,2\n", "its header lacks name, round, median_ms"),
        (text.splitlines(keepends=True)[0].encode(), "holds no timings yet; run `python ort_runner.py"),
    ):
        other.write_bytes(content)
        with pytest.raises(HwnasError, match=re.escape(words)):
            import_results(other, tmp_path / "lut.csv", manifest_dir=board)
    info.write_text(json.dumps({**saved, "threads": 2, "complete": False}))  # this runner, killed
    with pytest.raises(HwnasError, match=r"has not finished it; run `python ort_runner.py \S+ --threads 2"):
        import_results(times, tmp_path / "lut.csv")
    info.write_text("{ torn")
    with pytest.raises(HwnasError, match=r"damaged .*copy it again from the board"):
        import_results(times, tmp_path / "lut.csv")
    assert not (tmp_path / "lut.csv").exists()


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_the_standalone_runner_reports_bad_input_in_one_line(
    board: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = json.loads((board / runner.MANIFEST).read_text())
    assert all(len(m["sha256"]) == 64 for m in manifest["models"]) and manifest["opset"] >= 17
    assert runner.main([str(board)]) == 0
    order = [r["name"] for r in read_rows(board / "times.csv") if r["round"] == "0" and "#" not in r["name"]]
    (board / "times.csv").unlink()
    (board / "times.info.json").unlink()
    last = next(m for m in manifest["models"] if m["name"] == order[-1])  # timed last in round 0
    model = board / last["file"]
    good = model.read_bytes()

    model.unlink()  # left behind when the folder was copied to the board
    _refused(capsys, board, [], "1 model file(s) of the manifest are missing", model.name)
    model.write_bytes(good[:-100])  # cut short on the way
    _refused(capsys, board, [], "differ from the manifest's checksums", model.name)
    assert not (board / "times.csv").exists(), "nothing is timed before the folder is whole"
    # a file as written that this onnxruntime cannot load (e.g. too old for its opset)
    bad = b"not an onnx model"
    model.write_bytes(bad)
    last["sha256"] = hashlib.sha256(bad).hexdigest()
    (board / runner.MANIFEST).write_text(json.dumps(manifest))
    _refused(capsys, board, [], str(model), "cannot load or run it", "upgrade onnxruntime")
    assert read_rows(board / "times.csv"), "the jobs timed before it are kept"
    assert json.loads((board / "times.info.json").read_text())["complete"] is False
    model.write_bytes(good)
    last["sha256"] = hashlib.sha256(good).hexdigest()
    (board / runner.MANIFEST).write_text(json.dumps(manifest))

    for arg, words in (("0", "must be 1 or more"), ("two", "must be a whole number")):
        with pytest.raises(SystemExit) as exit_:
            runner.main([str(board), "--threads", arg])
        assert exit_.value.code == 2 and words in capsys.readouterr().err
    not_ours = board / "notes.txt"  # appending rows would damage it; a torn tail would even be cut off
    not_ours.write_text("my notes, no newline at the end")
    _refused(capsys, board, ["--out", str(not_ours)], "is not a results file of ort_runner.py", "choose another --out")
    assert not_ours.read_text() == "my notes, no newline at the end"
    (board / "a-folder").mkdir()
    _refused(capsys, board, ["--out", str(board / "a-folder")], "a-folder", "check the --out path")
    if "CUDAExecutionProvider" not in runner.ort.get_available_providers():
        _refused(capsys, board, ["--provider", "cuda", "--out", str(board / "cuda.csv")], "CUDAExecutionProvider")
        # an onnxruntime-gpu whose CUDA libraries are missing: ORT falls back to the CPU with a warning
        monkeypatch.setattr(runner, "providers_for", lambda p: ["CUDAExecutionProvider", "CPUExecutionProvider"])
        _refused(capsys, board, ["--provider", "cuda", "--out", str(board / "cuda.csv")], "fell back to the CPU")
        monkeypatch.undo()
    (board / runner.MANIFEST).write_text(json.dumps({**manifest, "settings": {**manifest["settings"], "threads": 0}}))
    _refused(capsys, board, ["--out", str(board / "t0.csv")], "threads 0; it must be 1 or more")
    (board / runner.MANIFEST).write_text(json.dumps({**manifest, "models": [{"name": "op:x"}]}))
    _refused(capsys, board, [], "not a manifest from `hwnas profile --emit-onnx`")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_cuda_without_gpu_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(HwnasError, match="no CUDA GPU"):
        profile(load_space("tiny"), fast_settings(backend="torch", device="cuda"), tmp_path / "x.csv")
    with pytest.raises(HwnasError, match="CUDAExecutionProvider"):
        profile(load_space("tiny"), fast_settings(device="cuda"), tmp_path / "x.csv")
    # onnxruntime-gpu without its CUDA libraries: ORT falls back to the CPU with only a warning
    monkeypatch.setattr(runner, "providers_for", lambda p: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(HwnasError, match="fell back to the CPU"):
        profile(load_space("tiny"), fast_settings(device="cuda"), tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_cuda_profile_uses_events(tmp_path: Path) -> None:
    lut = profile(load_space("tiny"), fast_settings(backend="torch", device="cuda"), tmp_path / "cuda.csv")
    assert lut.meta["device_kind"] == "cuda"
    assert (lut.table["latency_ms"] > 0).all()


def _synthetic_space(space: str, seed: int) -> tuple:
    """A space's profile plan (8 calibration networks) with made-up true block times (5-50 µs)
    and kernel counts (1-6) per key: ``(space, settings, work, keys, true_ms, kernels)``."""
    sp = load_space(space)
    s = fast_settings(calib_nets=8)
    rng = random.Random(seed)
    keys = sorted({c.key for c in sp.calls() if c.priced})
    true_ms = {k: rng.uniform(0.005, 0.05) for k in keys}
    kernels = {k: rng.randint(1, 6) for k in keys}
    return sp, s, plan_work(sp, s), keys, true_ms, kernels


def _journal(
    work,
    true_ms: dict[str, float],
    kernels: dict[str, int],
    kernel_ms: float,
    with_counts: bool,
    missed: dict[str, float] | None = None,
) -> list:
    """Journal rows of a profile whose node profiler adds ``kernel_ms`` to every kernel it times,
    of networks that run as ``sum(true_ms) + 0.05`` ms. ``missed``: per key, work a network does
    for the block that its in-network reading misses and its time alone carries twice over."""
    missed = missed or {}

    def row(name: str, ms: float, **extra) -> dict[str, str]:
        return {
            "name": name,
            "round": "0",
            "median_ms": str(ms),
            "p10_ms": str(ms),
            "p90_ms": str(ms),
            "runs": "9",
            **extra,
        }

    off = random.Random(0)  # alone: warmer caches, and off by its own share per key (no exact predictor)
    rows = [row(n, (true_ms[c.key] + 2 * missed.get(c.key, 0.0)) * (1.0 if missed else 1.3) * off.uniform(0.8, 1.2))
            for n, c in work.ops.items()]  # fmt: skip
    for name, arch in work.nets.items():
        total = 0.05
        for i, node in enumerate(arch.plan.nodes):
            if node.call.priced:
                k, t = kernels[node.call.key], true_ms[node.call.key]
                total += t + missed.get(node.call.key, 0.0)
                rows.append(row(f"{name}#{i}", t + kernel_ms * k, **({"kernels": str(k)} if with_counts else {})))
        rows.append(row(name, total))
    return rows


@pytest.mark.parametrize("space", ["tiny", "tiny_darts"])
def test_the_lut_removes_what_the_node_profiler_adds_per_kernel(space: str) -> None:
    """Blocks of a few µs read high in ORT's node profiler by about the same amount per kernel;
    the LUT's model finds that amount from the whole networks, so sums of its latencies predict
    them, and without kernel counts (torch) it keeps the plain model."""
    from hwnas.profiling.profile import assemble, space_meta

    sp, s, work, keys, true_ms, kernels = _synthetic_space(space, 3)
    lut = assemble(space_meta(sp), s, work, _journal(work, true_ms, kernels, 0.002, True), {})
    model = lut.meta["model"]
    assert model["kernel_ms"] == pytest.approx(0.002, rel=1e-3)
    assert model["scale"] == pytest.approx(1.0, rel=1e-3)
    assert model["overhead_ms"] == pytest.approx(0.05, rel=1e-2)
    for k in keys:
        assert lut.latency[k] == pytest.approx(true_ms[k], abs=1e-4)
    assert set(lut.table["kernels"]) == set(kernels.values())
    assert max(abs(n["error_pct"]) for n in model["nets"]) < 0.1

    assert model["isolated_share"] == 0.0 and model["fit_choice"]["chosen"] == "in_network"  # exact already

    plain = assemble(space_meta(sp), s, work, _journal(work, true_ms, kernels, 0.002, False), {})
    assert plain.meta["model"]["kernel_ms"] == 0.0  # nothing removed: the prices are the blocks' readings
    t = plain.meta["model"]["isolated_share"]
    blend = (1 - t) * plain.table["profiled_ms"] + t * plain.table["isolated_ms"]
    assert list(plain.table["latency_ms"]) == pytest.approx(list(blend), rel=1e-12)

    honest = assemble(space_meta(sp), s, work, _journal(work, true_ms, kernels, 0.0, True), {})
    assert honest.meta["model"]["kernel_ms"] < 1e-6  # nothing added: nothing removed


@pytest.mark.parametrize("space", ["tiny", "tiny_darts"])
def test_a_blended_lut_predicts_the_networks_its_fit_was_made_on(space: str) -> None:
    """Networks that do work for their blocks which the in-network readings miss and the blocks'
    times alone carry: the profile chooses the blend, and the table it writes (``latency_ms``
    and, for blocks in a shared role, ``shared_ms``) predicts every network it was fitted on
    within 2 %, where the in-network sum alone misses some by more."""
    from hwnas.profiling.profile import assemble, space_meta

    sp, s, work, keys, true_ms, kernels = _synthetic_space(space, 6)
    rng = random.Random(1)
    missed = {k: rng.uniform(0.0, 0.5) * true_ms[k] for k in keys}
    rows = _journal(work, true_ms, kernels, 0.002, True, missed)
    lut = assemble(space_meta(sp), s, work, rows, {})
    model = lut.meta["model"]
    assert model["fit_choice"]["chosen"] == "with_isolated" and 0.2 < model["isolated_share"] < 0.8
    measured = runner.round_medians(rows)
    for name, arch in work.nets.items():
        assert lut.predict(arch).total_ms == pytest.approx(measured[name], rel=0.02), name
    if space == "tiny_darts":
        assert lut.shared and any(r == "shared" for a in work.nets.values() for r in a.plan.roles())
    worst = model["fit_choice"]["in_network_loo_mape_pct"]
    assert worst > model["fit_choice"]["with_isolated_loo_mape_pct"]


def _nets_of(rng: np.random.Generator, n: int, blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` made-up networks of ``blocks`` blocks: each block's in-network price and its time
    alone (which tells what the in-network price misses, and is off by its own 5 %)."""
    inner = rng.uniform(0.003, 0.05, (n, blocks))
    missed = rng.uniform(0.0, 0.01, (n, blocks))  # work the node profiler does not see
    alone = (inner + 2 * missed) * rng.uniform(0.95, 1.05, (n, blocks))
    return inner, missed, alone


def test_the_whole_net_model_blends_in_the_blocks_times_alone_only_where_that_predicts_better() -> None:
    """Networks whose whole time holds work the in-network times miss and the times alone carry:
    the blend is chosen (its leave-one-out error is lower) and predicts them within 1.5 %, where
    the in-network sum alone misses by more. Where the in-network sum is the whole story, it
    stays alone (share 0), its scale and overhead as :func:`fit_model` finds them."""
    from hwnas.profiling.profile import fit_model, fit_whole

    rng = np.random.default_rng(3)
    inner, missed, alone = _nets_of(rng, 15, rng.integers(20, 60))
    xs, xi = inner.sum(1), alone.sum(1)
    ys = (inner + missed).sum(1) + 0.05
    fit = fit_whole(xs, xi, ys, lambda t: None)
    assert fit["choice"]["chosen"] == "with_isolated" and 0.1 < fit["isolated_share"] < 0.9
    t = fit["isolated_share"]
    pred = fit["scale"] * ((1 - t) * xs + t * xi) + fit["overhead_ms"]
    one = fit_model(xs, ys)
    assert np.abs(pred / ys - 1).max() < 0.015 < np.abs((one[0] * xs + one[1]) / ys - 1).max()
    c = fit["choice"]
    assert c["with_isolated_loo_mape_pct"] < c["in_network_loo_mape_pct"]

    exact = 1.1 * xs + 0.05  # the in-network sum explains every network
    fit = fit_whole(xs, xi, exact, lambda t: None)
    assert fit["isolated_share"] == 0.0 and fit["choice"]["chosen"] == "in_network"
    assert (fit["scale"], fit["overhead_ms"]) == pytest.approx(fit_model(xs, exact), rel=1e-9)
    few = fit_whole(xs[:5], xi[:5], ys[:5], lambda t: None)  # too few networks to judge by leaving one out
    assert few["isolated_share"] == 0.0 and few["choice"]["in_network_loo_mape_pct"] is None


def test_the_blend_is_refused_where_its_overhead_would_predict_the_fastest_network_at_nothing() -> None:
    """A blend whose negative overhead takes more than half of the space's fastest network (its
    block sum given by ``floor``) is not kept: the in-network model is."""
    from hwnas.profiling.profile import fit_whole

    rng = np.random.default_rng(4)
    inner, missed, alone = _nets_of(rng, 15, 40)
    xs, xi = inner.sum(1), alone.sum(1)
    ys = (inner + missed).sum(1) - 0.2  # a large negative overhead
    kept = fit_whole(xs, xi, ys, lambda t: None)
    assert kept["choice"]["chosen"] == "with_isolated" and kept["overhead_ms"] < 0
    refused = fit_whole(xs, xi, ys, lambda t: 0.1)  # a fastest network of 0.1 ms worth of blocks
    assert refused["isolated_share"] == 0.0 and refused["choice"]["chosen"] == "in_network"


def test_each_round_times_the_jobs_in_its_own_seeded_order(tmp_path: Path) -> None:
    """A model's place in a round must not bias it (e.g. always timed last): each round walks the
    jobs in another order, the same on every run so that a resumed profile redoes nothing."""
    orders = []
    for run in range(2):
        log: list[str] = []
        jobs = [Job(f"j{i}", "op", (lambda i=i, log=log: _Counting(log, f"j{i}"))) for i in range(8)]
        runner.run_jobs(jobs, 3, TimingSettings(), tmp_path / f"r{run}.csv")
        orders.append([log[r * 8 : (r + 1) * 8] for r in range(3)])
    assert orders[0] == orders[1]
    assert len({tuple(o) for o in orders[0]}) == 3
    assert all(sorted(o) == [f"j{i}" for i in range(8)] for o in orders[0])


def test_a_journal_written_before_kernel_counts_keeps_its_columns(tmp_path: Path) -> None:
    results = tmp_path / "r.csv"
    results.write_text("name,round,median_ms,p10_ms,p90_ms,runs\nj0,0,1.0,1.0,1.0,3\n")
    runner.append_rows(results, [{"name": "j1#0", "round": 0, "median_ms": 0.5, "p10_ms": 0.5, "p90_ms": 0.5,
                                  "runs": 3, "kernels": 2}, {"name": "j1", "round": 0, "median_ms": 1.0,
                                  "p10_ms": 1.0, "p90_ms": 1.0, "runs": 3}])  # fmt: skip
    assert results.read_text().splitlines()[0] == "name,round,median_ms,p10_ms,p90_ms,runs"
    assert [r["name"] for r in read_rows(results)] == ["j0", "j1#0", "j1"]


STATS = ("median_ms", "p10_ms", "p90_ms")


def _in_rounds(rows: list[dict[str, str]], rounds: int, slow: Callable[[int, str], float]) -> list[dict[str, str]]:
    """One round's journal rows as ``rounds`` rounds, each in its own shuffled order, every job's
    batch (its block rows, then its own row) multiplied by ``slow(position it ran at, job name)``
    (the whole round slow: its median and its 10th and 90th percentile alike)."""
    batches: list[list[dict[str, str]]] = [[]]
    for r in rows:
        batches[-1].append(r)
        if "#" not in r["name"]:
            batches.append([])
    out, pos = [], 0
    for rnd in range(rounds):
        order = batches[:-1]
        random.Random(rnd).shuffle(order)
        for batch in order:
            f = slow(pos, batch[-1]["name"])
            out += [{**r, "round": str(rnd), **{k: str(float(r[k]) * f) for k in STATS}} for r in batch]
            pos += 1
    return out


def test_speed_factors_undo_an_episode_of_a_slower_machine() -> None:
    """A shared machine runs 1.5x slower for a while; every model timed meanwhile reads 1.5x
    high. The factors find the episode from the models' own other rounds, and the corrected
    round values are the machine's usual times; without correction they keep the episode."""
    true = {f"j{i}": 0.1 * (i + 1) for i in range(8)}
    rows = [{"name": n, "round": "0", "median_ms": str(t), "p10_ms": str(t), "p90_ms": str(t), "runs": "9"}
            for n, t in true.items()]  # fmt: skip
    journal = _in_rounds(rows, 5, lambda pos, name: 1.5 if 12 <= pos < 24 else 1.0)
    steady = runner.round_values(journal)
    raw = runner.round_values(journal, steady=False)
    for n, t in true.items():
        assert steady[n] == pytest.approx([t] * 5, rel=1e-9)
    assert sum(v > 1.4 * true[n] for n, vs in raw.items() for v in vs) == 12
    factors = runner.speed_factors([r["name"] for r in journal], [float(r["median_ms"]) for r in journal])
    assert [round(f, 9) for f in factors] == [1.5 if 12 <= i < 24 else 1.0 for i in range(40)]


def test_speed_factors_leave_what_they_cannot_judge_alone() -> None:
    assert runner.speed_factors(["a"] * 20, [1.0, 2.0] * 10) == [1.0] * 20  # one job: no one to compare with
    assert runner.speed_factors(["a", "b", "c"] * 3, [1.0, 2.0, 3.0] * 3) == [1.0] * 9  # too few job-rounds
    names = [f"j{i % 6}" for i in range(30)]
    assert runner.speed_factors(names, [float(i % 6 + 1) for i in range(30)]) == [1.0] * 30  # a steady machine
    zero = [0.0 if i == 7 else float(i % 6 + 1) for i in range(30)]  # an imported 0: no speed to read from it
    assert runner.speed_factors(names, zero) == [1.0] * 30


def test_a_stretch_of_slow_runs_within_rounds_does_not_reach_a_p10_lut() -> None:
    """A network whose rounds each ran half in a slow stretch: their medians read 1.5x high (its
    blocks' too), their 10th percentiles the machine's own speed. A LUT read at p10 throughout is
    the steady machine's; one read at the median carries the stretch (what ``--reading median``
    trades), and so does a block read at its median (``block_reading``: ``median``, or ``auto``
    for a block under 50 µs), in that network's contexts (the price of reading it finer)."""
    from hwnas.profiling.profile import assemble, space_meta

    sp, s, work, keys, true_ms, kernels = _synthetic_space("tiny", 5)
    steady = _in_rounds(_journal(work, true_ms, kernels, 0.002, True), 3, lambda pos, name: 1.0)
    victim = "net:calib-3"
    half_slow = [
        {**r, "median_ms": str(1.5 * float(r["median_ms"]))} if r["name"].split("#")[0] == victim else r for r in steady
    ]
    assert s.reading == "p10" and s.block_reading == "auto"
    auto = assemble(space_meta(sp), s, work, half_slow, {})
    s = replace(s, block_reading="p10")
    clean = assemble(space_meta(sp), s, work, steady, {})
    lut = assemble(space_meta(sp), s, work, half_slow, {})
    assert lut.meta["reading"] == "p10" and lut.meta["reading_field"] == "p10_ms"
    for k in keys:
        assert lut.latency[k] == pytest.approx(clean.latency[k], rel=1e-6)
    assert lut.meta["model"]["scale"] == pytest.approx(clean.meta["model"]["scale"], rel=1e-6)
    by_median = assemble(space_meta(sp), replace(s, reading="median"), work, half_slow, {})
    measured = {n["name"]: n["measured_ms"] for n in by_median.meta["model"]["nets"]}
    truth = {n["name"]: n["measured_ms"] for n in clean.meta["model"]["nets"]}
    assert measured["calib-3"] == pytest.approx(1.5 * truth["calib-3"], rel=1e-6)
    assert by_median.meta["reading"] == "median"
    # auto: the network itself is read at p10, its small blocks' contexts at the median
    assert {n["name"]: n["measured_ms"] for n in auto.meta["model"]["nets"]}["calib-3"] == pytest.approx(
        truth["calib-3"], rel=1e-6
    )
    assert auto.meta["block_reading"] == "auto"
    # a block read at its median carries the stretch (the price of reading small blocks finer)
    block = next(n for n in runner.round_medians(steady) if n.startswith(victim + "#"))
    slow_blocks = runner.round_medians(half_slow, block_reading="median")
    assert slow_blocks[block] == pytest.approx(1.5 * runner.round_medians(steady, block_reading="median")[block])


def test_blocks_inside_a_network_are_read_at_the_block_reading() -> None:
    """A block's time inside a network is read at ``block_reading``: by default (``auto``) at the
    median where the block's median over its rounds is under 50 µs (the node profiler's whole
    microseconds put a small block's 10th percentile on its lowest value), one choice for all its
    rounds, and at ``reading`` (p10) above. Whole networks and blocks alone keep ``reading``, and
    the machine's speed is judged from them; on torch (clock readings) ``auto`` is ``reading``."""
    from hwnas.profiling.profile import assemble, space_meta

    sp, s, work, keys, true_ms, kernels = _synthetic_space("tiny", 5)
    assert (s.reading, s.block_reading, s.effective_block_reading) == ("p10", "auto", "auto")
    assert replace(s, backend="torch").effective_block_reading == "p10"
    journal = _in_rounds(_journal(work, true_ms, kernels, 0.002, True), 3, lambda pos, name: 1.0)

    def scaled(rows: list[dict[str, str]], field: str, f: float, blocks: bool) -> list[dict[str, str]]:
        return [{**r, field: str(float(r[field]) * f)} if ("#" in r["name"]) == blocks else r for r in rows]

    # a round's median 5 % above its p10 everywhere (the spread of its runs); blocks all under 50 µs
    small = scaled(scaled(scaled(journal, "p10_ms", 0.5, True), "median_ms", 0.525, True), "median_ms", 1.05, False)
    big = scaled(scaled(small, "p10_ms", 1000.0, True), "median_ms", 1000.0, True)
    assert max(float(r["median_ms"]) for r in small if "#" in r["name"]) < runner.COARSE_BELOW_MS
    assert min(float(r["median_ms"]) for r in big if "#" in r["name"]) >= runner.COARSE_BELOW_MS

    def as_timed(rows: list[dict[str, str]], field_of: Callable[[str], str]) -> dict[str, list[float]]:
        by: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            by.setdefault(r["name"], []).append((int(r["round"]), float(r[field_of(r["name"])])))
        return {n: [v for _, v in sorted(xs)] for n, xs in by.items()}

    for rows, block_field in ((small, "median_ms"), (big, "p10_ms")):
        got = runner.round_values(rows, steady=False, reading="p10", block_reading="auto")
        assert got == as_timed(rows, lambda n, b=block_field: b if "#" in n else "p10_ms")
        # the speed factors come from the job rows' p10: a round whose medians alone read slow (every
        # job's, and the blocks') moves no job's value, only the blocks read at their median
        steady = runner.round_values(rows, reading="p10", block_reading="auto")
        slow = [{**r, "median_ms": str(1.3 * float(r["median_ms"]))} if r["round"] == "1" else r for r in rows]
        moved = {n: vs[1] for n, vs in runner.round_values(slow, reading="p10", block_reading="auto").items()}
        for name, vs in steady.items():
            f = 1.3 if "#" in name and block_field == "median_ms" else 1.0
            assert moved[name] == pytest.approx(vs[1] * f, rel=1e-9), name
    # a block near 50 µs is read one way in all its rounds: its median over rounds decides
    name = next(r["name"] for r in small if "#" in r["name"])
    by_round = {0: 0.048, 1: 0.052, 2: 0.049}  # ms: one round above 50 µs, the median under
    near = [{**r, "median_ms": str(by_round[int(r["round"])]), "p10_ms": str(0.9 * by_round[int(r["round"])])}
            if r["name"] == name else r for r in small]  # fmt: skip
    read = runner.round_values(near, steady=False, reading="p10", block_reading="auto")[name]
    assert read == [0.048, 0.052, 0.049]

    clean = assemble(space_meta(sp), s, work, small, {})
    assert clean.meta["block_reading"] == "auto" and clean.meta["reading"] == "p10"
    for field, block_reading, moves in (
        ("median_ms", "auto", True), ("p10_ms", "auto", False), ("median_ms", "median", True),
        ("p10_ms", "median", False), ("p10_ms", "p10", True), ("median_ms", "p10", False),
    ):  # fmt: skip
        base = assemble(space_meta(sp), replace(s, block_reading=block_reading), work, small, {})
        lut = assemble(
            space_meta(sp), replace(s, block_reading=block_reading), work, scaled(small, field, 1.3, True), {}
        )
        before, after = base.table.set_index("key"), lut.table.set_index("key")
        moved_keys = [
            k for k in keys if after.at[k, "profiled_ms"] != pytest.approx(before.at[k, "profiled_ms"], rel=1e-6)
        ]
        assert bool(moved_keys) == moves, (field, block_reading)
        assert list(after["isolated_ms"]) == pytest.approx(list(before["isolated_ms"]), rel=1e-9)  # alone: ``reading``
        nets = [n["measured_ms"] for n in lut.meta["model"]["nets"]]  # whole networks: ``reading``
        assert nets == pytest.approx([n["measured_ms"] for n in base.meta["model"]["nets"]], rel=1e-9)
    # whole networks and blocks alone are read at ``reading``: their medians move nothing
    lut = assemble(space_meta(sp), s, work, scaled(small, "median_ms", 1.3, False), {})
    assert list(lut.table["latency_ms"]) == pytest.approx(list(clean.table["latency_ms"]), rel=1e-9)
    with pytest.raises(HwnasError, match="unknown block_reading 'mean'"):
        replace(s, block_reading="mean")


@pytest.mark.parametrize("space", ["tiny", "tiny_darts"])
def test_a_slow_episode_in_the_profile_does_not_reach_the_lut(space: str) -> None:
    """A network timed during slow episodes in 2 of its 3 rounds reads 1.5x high as the median of
    its rounds; the LUT (its blocks' times, its whole-net model) is the one of a steady machine."""
    from hwnas.profiling.profile import assemble, space_meta

    sp, s, work, keys, true_ms, kernels = _synthetic_space(space, 5)
    rows = _journal(work, true_ms, kernels, 0.002, True)
    victim = "net:calib-3"
    steady = _in_rounds(rows, 3, lambda pos, name: 1.0)
    at = [i for i, r in enumerate(r for r in steady if "#" not in r["name"]) if r["name"] == victim][:2]
    noisy = _in_rounds(rows, 3, lambda pos, name: 1.5 if any(abs(pos - a) <= 6 for a in at) else 1.0)
    assert runner.round_medians(noisy, steady=False)[victim] == pytest.approx(
        1.5 * runner.round_medians(steady)[victim]
    ), "the episode reaches the plain median of rounds"
    clean = assemble(space_meta(sp), s, work, steady, {})
    lut = assemble(space_meta(sp), s, work, noisy, {})
    for k in keys:
        assert lut.latency[k] == pytest.approx(clean.latency[k], rel=1e-6)
    assert lut.meta["model"]["scale"] == pytest.approx(clean.meta["model"]["scale"], rel=1e-6)
    assert max(abs(n["error_pct"]) for n in lut.meta["model"]["nets"]) < 0.1
    assert clean.meta["machine_speed"]["p10"] == clean.meta["machine_speed"]["p90"] == 1.0
    spread = lut.meta["machine_speed"]  # the episodes are recorded, as the machine's own
    assert spread["p10"] == pytest.approx(1.0) and spread["p90"] == pytest.approx(1.5)


def _kernel_events(plan: list[tuple[str, int]], runs: int) -> list[dict]:
    """Node-profiler events of ``runs`` runs of ``plan`` (kernel name, duration in µs), with the
    session's own events among them and the list out of time order, as a trace may be."""
    events, ts = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 1}], 0
    for _ in range(runs):
        for name, dur in plan:
            ts += 1 + dur
            events.append({"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur})
            events.append({"cat": "Node", "name": f"{name}_fence_before", "ts": ts, "dur": 0})
    return events[::-1]


def test_kernels_the_runtime_inserts_are_charged_to_the_block_that_needs_them() -> None:
    """ONNX Runtime inserts layout reorders that are in no block's scope; each is charged to the
    block that runs next (at the plan's end, the one before), so every kernel's time is in a block."""
    plan = [
        ("ReorderInput", 3),  # the network's input into blocked layout: for block 0
        ("/nodes.0/conv/Conv", 10),
        ("ReorderOutput_token_7", 4),  # inside block 1, around its slices
        ("/nodes.1/Slice", 1),
        ("ReorderInput_token_2", 5),
        ("/nodes.1/conv_2/Conv", 8),
        ("/nodes.2/pool/GlobalAveragePool", 2),
        ("ReorderOutput_token_9", 6),  # after the last block: for it
    ]
    per_run, kernels = runner.block_kernels(_kernel_events(plan, 3), 3)
    assert kernels == {0: 2, 1: 4, 2: 2}
    assert per_run == {b: pytest.approx([ms] * 3) for b, ms in {0: 0.013, 1: 0.018, 2: 0.008}.items()}

    with pytest.raises(RuntimeError, match="not 2 runs of one plan"):
        runner.block_kernels(_kernel_events(plan, 3), 2)
    with pytest.raises(RuntimeError, match="not 3 runs of one plan"):  # 6 runs read as 3
        runner.block_kernels(_kernel_events(plan, 6), 3)
    swapped = _kernel_events(plan, 2)
    kernels = [e for e in swapped if e["name"].endswith("_kernel_time")][:2]  # the last run's last two
    kernels[0]["name"], kernels[1]["name"] = kernels[1]["name"], kernels[0]["name"]  # ran in another order
    with pytest.raises(RuntimeError, match="not 2 runs of one plan"):
        runner.block_kernels(swapped, 2)


@pytest.mark.parametrize("space", ["tiny", "tiny_darts", "darts", "proxyless", "fbnet"])
def test_every_kernel_of_a_real_network_is_in_a_block(space: str, tmp_path: Path) -> None:
    """On the real runtime, the blocks' in-network times add up to all the kernel time a run of
    the network takes: nothing ONNX Runtime runs (its layout reorders included) is left out."""
    import json

    import numpy as np
    import onnxruntime as ort

    from hwnas.onnx_io import export_onnx

    sp = load_space(space, 32)
    arch = sp.sample(random.Random(7))
    so = runner.session_options(1, profile_prefix=str(tmp_path / "prof"))
    sess = ort.InferenceSession(export_onnx(arch.build(), [arch.input]), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, *arch.input)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"x0": x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_run, kernels = runner.block_kernels(events, 3)
    ks = runner.kernel_events(events)
    assert sum(kernels.values()) == len(ks) // 3
    assert sum(sum(v) for v in per_run.values()) == pytest.approx(sum(e["dur"] for e in ks) / 1e3)
    priced = {i for i, n in enumerate(arch.plan.nodes) if n.call.priced}
    assert set(per_run) <= priced and set(per_run) == set(kernels)
    if space == "darts" and platform.machine() in ("x86_64", "AMD64"):  # NCHWc: reorders around slices
        assert any(runner.inserted(e) for e in ks), "no inserted kernel to charge"


@pytest.mark.parametrize("noise_pct", [0.0, 4.0])
def test_round_spread_reads_each_models_own_noise_not_the_machines(noise_pct: float) -> None:
    """Twelve models in 9 rounds, each job-round off by its own noise (log-normal, ``noise_pct``),
    and a stretch of the machine 1.5x slower for all: the spread read is the models' noise,
    the episode's models alike (the speed correction takes the episode out first)."""
    rng = random.Random(3)
    rows = [{"name": f"j{i}", "round": "0", "median_ms": str(0.1 * (i + 1)), "p10_ms": str(0.1 * (i + 1)),
             "p90_ms": str(0.1 * (i + 1)), "runs": "9"} for i in range(12)]  # fmt: skip
    noise = [rng.lognormvariate(0.0, noise_pct / 100) for _ in range(12 * 9)]
    journal = _in_rounds(rows, 9, lambda pos, name: noise[pos] * (1.5 if 30 <= pos < 50 else 1.0))
    spread = runner.round_spread_pct(journal, [f"j{i}" for i in range(12)])
    assert spread == pytest.approx(noise_pct, abs=max(0.1, 0.25 * noise_pct))
    assert runner.round_spread_pct(journal[:12], ["j0"]) is None  # one round: nothing to compare


class _Noisy:
    """A model whose every round reads ``ms`` (a net's blocks: ``blocks``) times its own factor
    for (model, round): 1 on a quiet machine, log-normal on a noisy one."""

    def __init__(self, ms: float, blocks: dict[int, float], factor: float, profiled: Callable[[], None] | None = None):
        self.ms, self.blocks, self.factor, self.profiled = ms, blocks, factor, profiled

    def time(self, s: TimingSettings) -> list[float]:
        return [self.ms * self.factor] * 5

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        if self.profiled:
            self.profiled()
        return {i: [ms * self.factor] * 5 for i, ms in self.blocks.items()}


def _noisy_loaders(noise_pct: float, loads: dict[str, int], profiled: Counter[str] | None = None):
    """``loaders`` for a profile on a machine whose models read ``noise_pct`` apart from round to
    round; ``loads`` counts each model's loads (one per round timed), ``profiled`` each network's
    runs under the node profiler."""
    rng = random.Random(11)

    def ms_of(key: str) -> float:
        return 0.01 + int(hashlib.sha256(key.encode()).hexdigest()[:4], 16) / 65536 * 0.04

    def factor(name: str) -> float:
        loads[name] = loads.get(name, 0) + 1
        return rng.lognormvariate(0.0, noise_pct / 100)

    def load_op(call):
        return _Noisy(ms_of(call.key), {}, factor(f"op:{call.key}"))

    def load_net(arch):
        blocks = {i: ms_of(n.call.key) for i, n in enumerate(arch.plan.nodes) if n.call.priced}
        name = f"net:{arch.to_json()}"
        count = None if profiled is None else (lambda: profiled.update([name]))
        return _Noisy(0.05 + sum(blocks.values()), blocks, factor(name), count)

    return lambda s: (load_op, load_net)


@pytest.mark.parametrize("noise_pct, rounds, steady", [(0.0, 3, True), (10.0, 5, False)])
def test_a_noisy_machine_gets_more_rounds_and_a_quiet_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noise_pct: float, rounds: int, steady: bool
) -> None:
    """After ``rounds`` rounds a profile times more rounds of its networks (the blocks alone keep
    their ``rounds``), up to ``max_rounds``, while a whole network's median is uncertain by more
    than ``steady_pct``; the metadata says how many it took and why; one progress bar counts every
    job-round once, in order."""
    import hwnas.profiling.profile as prof

    loads: dict[str, int] = {}
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(prof, "loaders", _noisy_loaders(noise_pct, loads))
    s = fast_settings(rounds=3, max_rounds=5)
    sp = load_space("tiny")
    work = plan_work(sp, s)
    lut = profile(sp, s, tmp_path / "lut.csv", lambda done, total, name: seen.append((done, total)))
    spread = lut.meta["round_spread"]
    assert lut.meta["rounds"] == spread["rounds"] == rounds
    assert {n: c for n, c in loads.items() if n.startswith("op:")} == {f"op:{c.key}": 3 for c in work.ops.values()}
    assert {n: c for n, c in loads.items() if n.startswith("net:")} == {
        f"net:{a.to_json()}": rounds for a in work.nets.values()
    }
    timed = 3 * len(work.ops) + rounds * len(work.nets)
    assert [d for d, _ in seen] == list(range(1, timed + 1)) and seen[-1][1] == timed
    assert spread["steady"] is steady and (spread["se_pct"] <= 2.0) is steady
    assert spread["min_rounds"] == 3 and spread["max_rounds"] == 5 and spread["steady_pct"] == 2.0
    assert spread["sd_pct"] == pytest.approx(noise_pct, abs=0.5 + 0.3 * noise_pct)
    fixed = profile(load_space("tiny"), replace(s, max_rounds=3), tmp_path / "fixed.csv")
    assert fixed.meta["rounds"] == 3  # --max-rounds at --rounds: exactly --rounds


def test_an_interrupted_extra_round_resumes_to_the_same_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile killed in a round it added on a noisy machine decides the same on resuming (the
    same journal rows) and times only what is missing."""
    import hwnas.profiling.profile as prof

    monkeypatch.setattr(prof, "loaders", _noisy_loaders(10.0, {}))
    sp, s, out = load_space("tiny"), fast_settings(rounds=3, max_rounds=5), tmp_path / "lut.csv"
    work = plan_work(sp, s)
    jobs, nets = len(work.ops) + len(work.nets), len(work.nets)

    def interrupt(done: int, total: int, name: str) -> None:
        if total == 3 * jobs + nets and done == 3 * jobs + 2:  # in round 4, which times the networks only
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile(sp, s, out, interrupt)
    assert not out.exists()
    lut = profile(sp, s, out)
    assert lut.meta["resumed"] is True and lut.meta["rounds"] == 5
    assert lut.meta["job_rounds_timed_last_run"] == 3 * jobs + 2 * nets - (3 * jobs + 2)


def _priced(space: Space, n: int, seed: int) -> tuple[list, dict[str, float]]:
    """``n`` random networks of ``space`` and a price per key (ms, 0.01-0.05, from its hash)."""
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(n)]
    prices = {
        c.key: 0.01 + int(hashlib.sha256(c.key.encode()).hexdigest()[:4], 16) / 65536 * 0.04 for c in space.calls()
    }
    return archs, prices


def _whole(arch, main: dict[str, float], shared: dict[str, float]) -> float:
    return 0.05 + sum(ms for _, ms in block_prices(arch.plan, main, shared))


@pytest.mark.parametrize("space", ["tiny", "tiny_darts"])
def test_refit_moves_a_mispriced_key_towards_what_whole_networks_take(space: str) -> None:
    """Where the node profiler mispriced a key, random networks timed whole refit it: the key's
    price moves towards its true one and unseen networks are predicted and ranked better; a
    price the networks agree with is left (nearly) alone."""
    sp = load_space(space)
    archs, true = _priced(sp, 80, 5)
    per_net = [Counter(n.call.key for n, _ in block_columns(a.plan, {})) for a in archs]
    varied = max(true, key=lambda k: np.var([c[k] for c in per_net]))  # a key whose count varies most
    lut = {**true, varied: 3 * true[varied]}  # the profile read this key 3x too slow
    ys = np.array([_whole(a, true, {}) for a in archs])
    fit = refit_prices(lut, {}, 1.0, 0.05, archs, ys)
    assert fit["chosen"] != "none" and fit["cv_spearman"][fit["chosen"]] > fit["cv_spearman"]["none"]
    new = {k: max(0.0, v + fit["delta_ms"]["main"].get(k, 0.0)) for k, v in lut.items()}
    assert abs(new[varied] - true[varied]) < 0.5 * abs(lut[varied] - true[varied])
    unseen, _ = _priced(sp, 40, 6)
    truth = np.array([_whole(a, true, {}) for a in unseen])
    before = np.array([_whole(a, lut, {}) for a in unseen])
    after = np.array([fit["scale"] * (_whole(a, new, {}) - 0.05) + fit["overhead_ms"] for a in unseen])
    assert np.mean(np.abs(after / truth - 1)) < 0.5 * np.mean(np.abs(before / truth - 1))
    assert spearmanr(after, truth)[0] > spearmanr(before, truth)[0]


def test_refit_keeps_prices_that_already_rank_the_networks() -> None:
    """Networks the LUT predicts exactly: no refit, the prices stay as they are; too few networks
    to cross-validate, or networks that all take the same time: no refit either."""
    sp = load_space("tiny_darts")
    archs, prices = _priced(sp, 30, 7)
    ys = np.array([_whole(a, prices, {}) for a in archs])
    fit = refit_prices(prices, {}, 1.0, 0.05, archs, ys)
    assert fit["chosen"] == "none" and fit["cv_spearman"]["none"] == pytest.approx(1.0) and "delta_ms" not in fit
    few = refit_prices(prices, {}, 1.0, 0.05, archs[: 2 * REFIT_FOLDS - 1], ys[: 2 * REFIT_FOLDS - 1])
    assert few["chosen"] == "none" and few["cv_spearman"] == {}
    alike = refit_prices(prices, {}, 1.0, 0.05, archs, np.full(len(archs), 0.5))  # nothing to rank by
    assert alike["chosen"] == "none" and alike["cv_spearman"] == {}


def test_refit_networks_are_timed_whole_in_the_first_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``refit_nets`` random networks, their own draw (not the calibration networks), are timed
    whole only (never under the node profiler) in the profile's ``rounds``, not its extra ones;
    the metadata records the refit. Without them there is none."""
    import hwnas.profiling.profile as prof

    loads: dict[str, int] = {}
    profiled: Counter[str] = Counter()
    monkeypatch.setattr(prof, "loaders", _noisy_loaders(10.0, loads, profiled))  # noisy: extra rounds are taken
    sp = load_space("tiny")
    s = fast_settings(rounds=3, max_rounds=5, refit_nets=12)
    work = plan_work(sp, s)
    drawn = [a.to_json() for a in work.refit.values()]
    assert len(drawn) == 12 and drawn != [a.to_json() for _, a in calibration_archs(sp, s.seed, 12)]
    assert [a.to_json() for a in plan_work(sp, s).refit.values()] == drawn  # the same seed, the same networks
    lut = profile(sp, s, tmp_path / "lut.csv")
    assert lut.meta["rounds"] == 5 and lut.meta["refit_nets"] == 12
    want: Counter[str] = Counter()
    for a in work.nets.values():  # probe and calibration networks: every round
        want[f"net:{a.to_json()}"] += 5
    for a in work.refit.values():
        want[f"net:{a.to_json()}"] += 3
    assert {n: c for n, c in loads.items() if n.startswith("net:")} == dict(want)
    assert profiled == Counter({f"net:{a.to_json()}": 5 for a in work.nets.values()})  # never a refit network
    refit = lut.meta["model"]["refit"]
    assert refit["nets"] == len(work.nets) + 12  # every network timed whole
    assert set(refit["cv_spearman"]) == {"none", *(f"{x:g}" for x in REFIT_LAMBDAS)}
    plain = profile(sp, replace(s, refit_nets=0), tmp_path / "plain.csv")
    assert plain.meta["model"]["refit"] is None and plain.meta["refit_nets"] == 0


def test_refit_nets_must_not_be_negative() -> None:
    with pytest.raises(HwnasError, match="refit-nets >= 0"):
        ProfileSettings(refit_nets=-1)


def test_a_profile_with_refit_networks_prices_what_whole_networks_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key the node profiler reads at a third of what it adds to a whole network: the profile's
    refit networks move its price, and the LUT predicts networks of another draw better than the
    same profile without them."""
    import hwnas.profiling.profile as prof

    sp = load_space("tiny_darts")
    archs, true = _priced(sp, 60, 8)
    per_net = [Counter(n.call.key for n, _ in block_columns(a.plan, {})) for a in archs]
    varied = max(true, key=lambda k: np.var([c[k] for c in per_net]))
    seen = {**true, varied: true[varied] / 3}  # what the node profiler reads for it

    def loaders(s):
        def load_net(arch):
            blocks = {i: seen[n.call.key] for i, n in enumerate(arch.plan.nodes) if n.call.priced}
            return _Noisy(_whole(arch, true, {}), blocks, 1.0)

        return (lambda call: _Noisy(seen[call.key], {}, 1.0)), load_net

    monkeypatch.setattr(prof, "loaders", loaders)
    s = fast_settings(rounds=1, calib_nets=4)
    plain = profile(sp, s, tmp_path / "plain.csv")
    refit = profile(sp, replace(s, refit_nets=40), tmp_path / "refit.csv")
    assert refit.meta["model"]["refit"]["chosen"] != "none"
    price = dict(zip(refit.table["key"], refit.table["latency_ms"], strict=True))
    assert price[varied] > 2 * dict(zip(plain.table["key"], plain.table["latency_ms"], strict=True))[varied]
    truth = np.array([_whole(a, true, {}) for a in archs])
    err = {
        lut: np.mean(np.abs(np.array([lut.predict(a).total_ms for a in archs]) / truth - 1)) for lut in (plain, refit)
    }
    assert err[refit] < 0.5 * err[plain]


def test_a_refit_is_applied_only_where_its_model_is_plausible() -> None:
    """A refit whose whole-net model is implausible (scale outside 0.5-2) leaves the prices alone
    and says why; a plausible one moves them, keeping each at or above 0 and naming those it had
    to keep there."""
    from hwnas.profiling.profile import _apply_refit

    sp = load_space("tiny_darts")
    archs, prices = _priced(sp, 12, 9)
    low = min(prices, key=prices.get)
    table = [{"key": k, "latency_ms": v, "shared_ms": None} for k, v in prices.items()]
    delta = {"main": {low: -2 * prices[low], next(iter(prices)): 0.001}, "shared": {}}
    refit = {"chosen": "1e-05", "nets": 12, "cv_spearman": {}, "overhead_ms": 0.0, "delta_ms": delta}

    def sums(main: dict[str, float], shared: dict[str, float]) -> np.ndarray:
        return np.array([sum(ms for _, ms in block_prices(a.plan, main, shared)) for a in archs])

    declined = _apply_refit(table, {**refit, "scale": 3.0}, sums, lambda main: None)
    assert (
        declined["chosen"] == "none" and declined["refused"] == "1e-05" and "implausible (scale)" in declined["reason"]
    )
    assert "delta_ms" not in declined and [r["latency_ms"] for r in table] == list(prices.values())
    applied = _apply_refit(table, {**refit, "scale": 1.0}, sums, lambda main: None)
    price = {r["key"]: r["latency_ms"] for r in table}
    assert applied["chosen"] == "1e-05" and applied["clamped"] == [f"{low} (latency_ms)"] and price[low] == 0.0
    first = next(iter(prices))
    assert price[first] == pytest.approx(prices[first] + 0.001 if first != low else 0.0)


def test_a_profile_interrupted_before_a_settings_field_existed_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal whose recorded settings lack a field added since (``refit_nets``) was timed with
    its default: it resumes, while one recorded with another value is still refused."""
    import hwnas.profiling.profile as prof

    monkeypatch.setattr(prof, "loaders", _noisy_loaders(0.0, {}))
    sp, s, out = load_space("tiny"), fast_settings(), tmp_path / "lut.csv"

    def interrupt(done: int, total: int, name: str) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile(sp, s, out, interrupt)
    state = tmp_path / "lut.csv.work" / "state.json"
    recorded = json.loads(state.read_text())
    del recorded["settings"]["refit_nets"]
    state.write_text(json.dumps(recorded))
    with pytest.raises(HwnasError, match="interrupted profile with other settings"):
        profile(sp, replace(s, refit_nets=12), out)
    assert profile(sp, s, out).meta["resumed"] is True
