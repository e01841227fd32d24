"""Nothing lost: a journal cut at any byte resumes to complete rows, one profile per LUT at a time,
and files hwnas writes atomically are as readable as any other file.

The kill-and-resume runs of the real commands are in test_kill.py (slow); these are the fast,
deterministic pieces they rely on.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from conftest import fast_settings
from typer.testing import CliRunner

from hwnas.cli import app
from hwnas.errors import HwnasError
from hwnas.profiling import runner
from hwnas.profiling.profile import lock_path, output_lock, profile
from hwnas.profiling.runner import Job, TimingSettings, atomic_write, read_rows
from hwnas.space import load_space


class _Fake:
    """A model whose times are fixed numbers: the journal, not the clock, is under test."""

    def __init__(self, name: str, blocks: int) -> None:
        self.name, self.blocks = name, blocks

    def time(self, s: TimingSettings) -> list[float]:
        return [1.0 + len(self.name) / 100] * 3

    def node_times(self, s: TimingSettings) -> dict[int, list[float]]:
        return {i: [0.1 * (i + 1)] * 3 for i in range(self.blocks)}


JOBS = [
    Job("op:a", "op", lambda: _Fake("op:a", 0)),
    Job("net:x", "net", lambda: _Fake("net:x", 40)),  # batches of several KB: more than one page
    Job("op:b", "op", lambda: _Fake("op:b", 0)),
    Job("net:y", "net", lambda: _Fake("net:y", 25)),
]
ROUNDS = 2


def _raw_rows(path: Path) -> list[tuple[str, str]]:
    return [(r["name"], r["round"]) for r in csv.DictReader(io.StringIO(path.read_text()))]


def _check_complete(path: Path) -> None:
    rows = read_rows(path)
    names = [(r["name"], r["round"]) for r in rows]
    assert len(names) == len(set(names)), "a job-round or block row is recorded twice"
    assert _raw_rows(path) == names, "the file holds rows that reading drops"
    expected = {(j.name, str(r)) for j in JOBS for r in range(ROUNDS)}
    expected |= {(f"{j.name}#{i}", str(r)) for j in JOBS if j.kind == "net" for i in range(len(j.load().node_times(TimingSettings()))) for r in range(ROUNDS)}  # fmt: skip
    assert set(names) == expected


def test_a_journal_cut_at_any_byte_resumes_to_complete_rows(tmp_path: Path) -> None:
    """A kill can cut a batch anywhere (even inside one write call): resuming must redo the
    job-round whose batch was cut, keep every finished one, and record nothing twice."""
    full = tmp_path / "full.csv"
    runner.run_jobs(JOBS, ROUNDS, TimingSettings(), full)
    _check_complete(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.csv"
    line_ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    for k in sorted({*line_ends, *range(0, len(data), 61)}):  # every whole-line cut, and cuts inside lines
        cut.write_bytes(data[:k])
        runner.run_jobs(JOBS, ROUNDS, TimingSettings(), cut)
        _check_complete(cut)


def test_rows_of_a_cut_batch_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    runner.run_jobs(JOBS[:2], 1, TimingSettings(), path)
    data = path.read_bytes()
    path.write_bytes(data + b"net:x#0,1,0.1,0.1,0.1,3\nnet:x#1,1,0.2,0.2,0.2,3\n")  # round 1's batch, cut
    assert {r["round"] for r in read_rows(path)} == {"0"}


# -- one profile per LUT --------------------------------------------------------------------------


def test_a_second_profile_of_the_same_lut_fails_at_once(tmp_path: Path, fast_target: Path) -> None:
    out = tmp_path / "lut.csv"
    with output_lock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
        with pytest.raises(HwnasError, match=rf"another profile \(PID {os.getpid()}\) is writing it"):
            profile(load_space("tiny"), fast_settings(), out)
        res = CliRunner().invoke(app, ["profile", "--space", "tiny", "--target", str(fast_target), "--out", str(out)])
        assert res.exit_code == 1, res.output
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and f"PID {os.getpid()}" in last and str(out) in last, res.stderr
    assert not out.exists() and not out.with_name(out.name + ".work").exists(), "the refused profile wrote"
    assert not lock_path(out).exists(), "the lock file outlives its holder"


def test_a_lock_left_by_a_killed_profile_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "lut.csv"
    lock_path(out).write_text("999999\n")  # a holder killed with SIGKILL: the file stays, the flock does not
    with output_lock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())


# -- atomic writes ---------------------------------------------------------------------------------


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    new = tmp_path / "new.json"
    atomic_write(new, b"{}\n")
    assert new.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    os.chmod(new, 0o640)
    atomic_write(new, b"[]\n")
    assert new.read_bytes() == b"[]\n" and new.stat().st_mode & 0o777 == 0o640
