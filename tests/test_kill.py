"""Kill and resume: ``hwnas profile`` and ``hwnas search`` SIGKILLed at seeded random points, re-run
with the same arguments, end where an uninterrupted run ends; at no kill point is an output partial.

Every run is a real ``python -m hwnas`` process (about 2-4 s of start-up each), so the kill points
are chosen from what the runs take here: during start-up, after a random number of finished
job-rounds (profile) or at random times within the start-up plus about one epoch (search).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_fake_fashion_mnist

from hwnas.arch import Arch
from hwnas.lut import COLUMNS, LUT, meta_path
from hwnas.profiling.profile import ProfileSettings, plan_work
from hwnas.profiling.runner import read_rows
from hwnas.space import load_space

pytestmark = pytest.mark.slow

KILLS = 10  # at least this many kills must land while the process runs
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fixed threads: same numbers every run


@dataclass
class Run:
    proc: subprocess.Popen
    started: float
    log: Path

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> bool:
        """SIGKILL the run; True if it was still running (the kill landed)."""
        landed = self.running
        if landed:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return landed

    def finish(self, timeout: float = 300) -> int:
        """Let the run end by itself; its exit code."""
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Run:
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "hwnas", *cmd], stdout=subprocess.DEVNULL, stderr=err,
            env=env or ENV, start_new_session=True,
        )  # fmt: skip
    return Run(proc, time.monotonic(), log)


def _wait(cond: Callable[[], bool], run: Run, limit: float = 120) -> None:
    """Poll until ``cond()`` or the run exits (a run that finishes early is not a failure here)."""
    end = time.monotonic() + limit
    while run.running and not cond() and time.monotonic() < end:
        time.sleep(0.01)


# -- profile -------------------------------------------------------------------------------------


def _job_rounds(results: Path, total: int) -> int:
    """Job-rounds in the journal while a profile runs (all of them once it has cleaned up)."""
    try:
        return sum(1 for r in read_rows(results) if "#" not in r["name"])
    except FileNotFoundError:  # removed between the check and the read: the profile is done
        return total


def _check_profile_outputs(out: Path, keys: list[str], results: Path) -> None:
    """At any kill point: the LUT is absent or complete; the journal holds no row twice."""
    if meta_path(out).exists():
        json.loads(meta_path(out).read_text())  # written whole or not at all
    if out.exists():
        lut = LUT.load(out)
        assert sorted(lut.table["key"]) == keys
    rows = [(r["name"], r["round"]) for r in read_rows(results)]
    assert len(rows) == len(set(rows)), "a journal row is recorded twice"


def test_profile_killed_again_and_again_ends_complete(tmp_path: Path, fast_target: Path) -> None:
    rng = random.Random(20240605)
    out = tmp_path / "lut.csv"
    results = out.with_name(out.name + ".work") / "results.csv"
    rounds = 5  # about 170 job-rounds: room for every kill, and for a second profile meanwhile
    cmd = ["profile", "--space", "tiny", "--target", str(fast_target), "--rounds", str(rounds), "--out", str(out)]
    space = load_space("tiny")
    keys = sorted(c.key for c in space.calls())
    total = rounds * len(plan_work(space, ProfileSettings(calib_nets=2)).jobs(lambda c: None, lambda a: None))
    landed, runs, checked_lock = 0, 0, False
    kills: list[str] = []  # what each kill interrupted, for the failure message
    while landed < KILLS + 1 and not (out.exists() and not results.parent.exists()):
        run = _start(cmd, tmp_path / f"profile-{runs}.log")
        runs += 1
        at_start = _job_rounds(results, total)
        if landed == 0:  # the first kill lands in start-up (imports, state file, first model)
            time.sleep(rng.uniform(0.05, 2.0))
        elif landed == KILLS:  # the last one once every job is timed: in the assembly, the save, the clean-up
            _wait(lambda: _job_rounds(results, total) >= total, run)
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            target = min(total, at_start + rng.randint(1, 4))
            _wait(lambda target=target: _job_rounds(results, total) >= target, run)
            if not checked_lock and landed >= 2 and run.running:  # a second profile of the same LUT meanwhile
                # freeze the first (it keeps its lock) so it cannot finish while the second starts up
                os.killpg(run.proc.pid, signal.SIGSTOP)
                second = subprocess.run([sys.executable, "-m", "hwnas", *cmd], capture_output=True, text=True,
                                        env=ENV, timeout=120)  # fmt: skip
                checked_lock = True
                assert second.returncode == 1, second.stderr
                last = second.stderr.strip().splitlines()[-1]
                assert f"another profile (PID {run.proc.pid}) is writing it" in last, second.stderr
                assert "Traceback" not in second.stderr
            time.sleep(rng.uniform(0.0, 0.1))
        landed += run.kill()
        kills.append(
            f"{time.monotonic() - run.started:.2f}s: job-rounds {at_start}->{_job_rounds(results, total)}/{total}"
        )
        _check_profile_outputs(out, keys, results)
    assert landed >= KILLS, f"only {landed} kills landed before the profile finished: {kills}"
    assert checked_lock, "the profile never ran long enough to try a second one beside it"
    if results.parent.exists():  # not finished: one more run, left alone
        run = _start(cmd, tmp_path / "profile-final.log")
        assert run.finish() == 0, run.stderr()
    lut = LUT.load(out)
    assert sorted(lut.table["key"]) == keys, "every key the space needs, exactly once"
    assert lut.meta["resumed"] is True and lut.meta["job_rounds_timed_last_run"] < total
    lines = out.read_text().splitlines(keepends=True)
    assert lines[-1].endswith("\n") and all(len(r) == len(COLUMNS) for r in csv.reader(io.StringIO("".join(lines))))
    assert not results.parent.exists() and not list(tmp_path.glob("lut.csv.work*")), "the journal outlives the LUT"


# -- search --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def search_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """A fake Fashion-MNIST and a LUT of the tiny space at its shape (latencies made up: the search
    only needs them fixed)."""
    root = tmp_path_factory.mktemp("search")
    data = write_fake_fashion_mnist(root / "fmnist", n_train=512)
    sp = load_space("tiny").with_params(in_channels=1, num_classes=10)
    rows = [{"key": c.key, "op": c.op, "params": c.param_str, "input": c.shape_str, "latency_ms": 0.01 + 0.002 * i,
             "isolated_ms": 0.01, "isolated_p10_ms": 0.01, "isolated_p90_ms": 0.01, "context_n": 1}
            for i, c in enumerate(sp.calls())]  # fmt: skip
    meta = {"space": "tiny", "space_source": "tiny", "input_size": 32, "width_mult": 1.0, "in_channels": 1,
            "num_classes": 10, "device": "test", "device_kind": "cpu", "backend": "onnxruntime", "threads": 1,
            "batch": 1, "model": {"scale": 1.0, "overhead_ms": 0.02}}  # fmt: skip
    lut = root / "tiny-1ch.csv"
    LUT.from_rows(rows, meta).save(lut)
    return data, lut, {**ENV, "HWNAS_DATA": str(root / "cache")}


EPOCHS = 6


def _search_cmd(data: Path, lut: Path, out: Path) -> list[str]:
    cmd = ["search", "--space", "tiny", "--lut", str(lut), "--latency-budget", "1s", "--epochs", str(EPOCHS),
           "--limit", "512", "--batch-size", "8", "--data-dir", str(data), "--seed", "3", "--out", str(out)]  # fmt: skip
    # --resume needs a checkpoint: a run killed before its first one is started afresh
    return cmd + (["--resume"] if (out / "checkpoint.pt").exists() else [])


def _epochs_done(run: Path) -> int:
    """Epochs in the history (written, whole, just before each checkpoint)."""
    path = run / "history.csv"
    return max(0, len(path.read_bytes().splitlines()) - 1) if path.exists() else 0


def _check_search_outputs(run: Path, ref: Path) -> None:
    """At any kill point every file of the run is absent or whole, and agrees with the reference."""
    if (run / "arch.json").exists():
        Arch.load(run / "arch.json")
        assert (run / "arch.json").read_bytes() == (ref / "arch.json").read_bytes()
    if (run / "history.csv").exists():
        assert (ref / "history.csv").read_bytes().startswith((run / "history.csv").read_bytes())
    if (run / "config.json").exists():
        assert (run / "config.json").read_bytes() == (ref / "config.json").read_bytes()
    if (run / "checkpoint.pt").exists():
        import torch

        state = torch.load(run / "checkpoint.pt", weights_only=True)
        assert 1 <= state["epoch"] <= EPOCHS and state["epoch"] in (_epochs_done(run), _epochs_done(run) - 1)


def _reference_run(cmd: list[str], ref: Path, log: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd`` (writing to ``ref``) uninterrupted; its start-up time and time per epoch (s)."""
    whole = _start(cmd, log, env)
    _wait(lambda: (ref / "config.json").exists(), whole)
    startup = time.monotonic() - whole.started  # imports, data, network: until the first epoch starts
    _wait(lambda: _epochs_done(ref) >= EPOCHS, whole)
    epoch = (time.monotonic() - whole.started - startup) / EPOCHS
    assert whole.finish() == 0, whole.stderr()
    return startup, epoch


def _kill_until_done(
    cmd_of: Callable[[Path], list[str]],
    run: Path,
    ref: Path,
    timing: tuple[float, float],
    seed: int,
    check: Callable[[Path, Path], None],
    env: dict[str, str],
) -> list[str]:
    """Start ``cmd_of(run)`` and SIGKILL it at seeded points until ``KILLS`` kills landed (in
    start-up, inside an epoch, or after a checkpoint), calling ``check(run, ref)`` after each;
    then let one last run finish. Returns what each kill interrupted."""
    startup, epoch = timing
    rng = random.Random(seed)
    landed = runs = 0
    kills: list[str] = []  # what each kill interrupted, for failure messages
    while landed < KILLS:
        proc = _start(cmd_of(run), run.parent / f"{run.name}-{runs}.log", env)
        runs += 1
        done = _epochs_done(run)
        mode = rng.choice(["start-up", "inside an epoch", "after a checkpoint"])
        if mode == "after a checkpoint" and EPOCHS - done < 3:  # leave the last epochs to the final run
            mode = "inside an epoch"
        if mode == "after a checkpoint":  # this run saves an epoch or two, then dies
            _wait(lambda done=done: _epochs_done(run) > done, proc)
            time.sleep(rng.uniform(0.0, 0.5 * epoch))
        elif mode == "start-up":
            time.sleep(rng.uniform(0.1, startup))
        else:  # inside this run's first epoch: its work is lost, the checkpoint before it is not
            time.sleep(rng.uniform(startup, startup + 0.9 * epoch))
        landed += proc.kill()
        kills.append(f"{mode} at {time.monotonic() - proc.started:.2f}s: epochs {done}->{_epochs_done(run)}")
        check(run, ref)
    assert _epochs_done(run) > 0, f"no run lived past a checkpoint, so none resumed from one: {kills}"
    final = _start(cmd_of(run), run.parent / f"{run.name}-final.log", env)
    assert final.finish() == 0, final.stderr()
    return kills


def test_search_killed_again_and_again_writes_what_an_uninterrupted_run_writes(
    tmp_path: Path, search_inputs: tuple[Path, Path, dict[str, str]]
) -> None:
    data, lut, env = search_inputs
    ref, run = tmp_path / "ref", tmp_path / "run"
    timing = _reference_run(_search_cmd(data, lut, ref), ref, tmp_path / "ref.log", env)
    _kill_until_done(lambda out: _search_cmd(data, lut, out), run, ref, timing, 1789, _check_search_outputs, env)
    for name in ("arch.json", "history.csv", "config.json"):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), f"{name} differs from the uninterrupted run"


# -- train ---------------------------------------------------------------------------------------


def _train_cmd(arch: Path, data: Path, out: Path) -> list[str]:
    # always --resume: a run killed before its first last.pt starts afresh (with a note)
    return ["train", str(arch), "--epochs", str(EPOCHS), "--limit", "512", "--batch-size", "8", "--data-dir",
            str(data), "--seed", "5", "--out", str(out), "--resume"]  # fmt: skip


def _result(run: Path) -> dict:
    doc = json.loads((run / "result.json").read_text())
    for volatile in ("seconds", "arch", "weights"):
        doc.pop(volatile)
    return doc


def _check_train_outputs(run: Path, ref: Path) -> None:
    """At any kill point every file of the run is absent or whole, and agrees with the reference."""
    import torch

    if (run / "history.csv").exists():
        assert (ref / "history.csv").read_bytes().startswith((run / "history.csv").read_bytes())
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            assert isinstance(torch.load(run / name, weights_only=True), dict)
    if (run / "arch.json").exists():
        assert (run / "arch.json").read_bytes() == (ref / "arch.json").read_bytes()


def test_train_killed_again_and_again_ends_with_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, search_inputs: tuple[Path, Path, dict[str, str]]
) -> None:
    import torch

    from hwnas.weights import load_weights

    data, _, env = search_inputs
    arch = tmp_path / "arch.json"
    arch.write_text(load_space("tiny").with_params(in_channels=1, num_classes=10).sample(random.Random(7)).to_json())
    ref, run = tmp_path / "ref", tmp_path / "run"
    timing = _reference_run(_train_cmd(arch, data, ref), ref, tmp_path / "ref.log", env)
    kills = _kill_until_done(lambda out: _train_cmd(arch, data, out), run, ref, timing, 4242, _check_train_outputs, env)
    assert (run / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
    assert _result(run) == _result(ref)
    a, b = load_weights(ref / "best.pt").state_dict, load_weights(run / "best.pt").state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"weights differ after {kills}"
