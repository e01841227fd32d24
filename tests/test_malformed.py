"""Nothing crashes, nothing is damaged: every malformed input in tests/malformed/ is one clear line.

Each case of ``tests/malformed/MANIFEST.toml`` names a file, the substring its error must contain
and (by its folder) the loader that reads it. Every loader is also run on every file: whatever a
user hands to whichever command, the answer is an :class:`HwnasError` of one line that names the
file, never another exception. Through the CLI the same inputs exit 1 or 2 with one line on stderr,
and files that were there before (outputs of earlier runs, the inputs themselves) are untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hwnas.arch import Arch
from hwnas.cli import app
from hwnas.errors import HwnasError
from hwnas.lut import LUT, meta_path
from hwnas.measure import settings_from_lut
from hwnas.space import load_space

CORPUS = Path(__file__).resolve().parent / "malformed"
GOOD = CORPUS / "good"
GOOD_LUT = GOOD / "tiny.csv"
GOOD_ARCH = GOOD / "arch.json"
LOADER_OF_FOLDER = {"lut": "lut", "lut_meta": "lut", "arch": "arch", "space": "space"}


@dataclass(frozen=True)
class Case:
    """One malformed input of the manifest."""

    file: str  # relative to tests/malformed/
    error: str  # substring the one-line error must contain
    why: str
    error_also: str | None = None
    ask: dict[str, Any] = field(default_factory=dict)  # settings a command asks of the LUT
    sidecar: bool = True  # a .csv gets good/tiny.meta.json beside it

    @property
    def loader(self) -> str:
        return LOADER_OF_FOLDER[self.file.split("/", 1)[0]]

    @property
    def id(self) -> str:
        return self.file.replace("/", ":")


def _cases() -> list[Case]:
    return [Case(**c) for c in tomllib.loads((CORPUS / "MANIFEST.toml").read_text())["case"]]


CASES = _cases()


def _stage(case: Case, tmp: Path, loader: str) -> tuple[Path, list[Path]]:
    """Copy a case's file(s) into ``tmp`` as ``loader`` reads them.

    Returns the path to hand to the loader and every file staged (the error must name one of them).
    """
    src = CORPUS / case.file
    dst = tmp / src.name
    shutil.copyfile(src, dst)
    if loader != "lut":
        return dst, [dst]
    if src.name.endswith(".meta.json"):  # broken metadata beside the good table
        csv = tmp / (src.name.removesuffix(".meta.json") + ".csv")
        shutil.copyfile(GOOD_LUT, csv)
        return csv, [csv, dst]
    if src.suffix == ".csv" and case.sidecar:  # broken table beside the good metadata, its hash dropped
        meta = json.loads(meta_path(GOOD_LUT).read_text())
        meta.pop("csv_sha256")
        meta_path(dst).write_text(json.dumps(meta))
        return dst, [dst, meta_path(dst)]
    return dst, [dst]


def _load_lut(path: Path, ask: dict[str, Any]) -> None:
    """What predict and measure do with a LUT: load it, then price an arch or take its settings."""
    lut = LUT.load(path)
    if ask:
        settings_from_lut(lut, **ask)
    else:
        lut.predict(Arch.load(GOOD_ARCH))


def _load_arch(path: Path, ask: dict[str, Any]) -> None:
    Arch.load(path)


def _load_space(path: Path, ask: dict[str, Any]) -> None:
    load_space(path).sample(random.Random(0))


LOADERS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "lut": _load_lut,
    "arch": _load_arch,
    "space": _load_space,
}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_the_corpus_is_large_and_covers_every_loader() -> None:
    assert len(CASES) >= 40
    assert {c.loader for c in CASES} == set(LOADERS)
    listed = {c.file for c in CASES}
    on_disk = {str(p.relative_to(CORPUS)) for d in LOADER_OF_FOLDER for p in (CORPUS / d).iterdir()}
    assert listed == on_disk, "every file in the corpus has a manifest entry and every entry a file"


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_the_good_baselines_load(loader: str) -> None:
    """The cases break valid files; the valid files themselves load (so each error is the break's)."""
    files = {"lut": [GOOD_LUT], "arch": [GOOD_ARCH, GOOD / "cells_arch.json"],
             "space": [GOOD / "space.toml", GOOD / "cells_space.toml"]}[loader]  # fmt: skip
    for f in files:
        LOADERS[loader](f, {})


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_case_is_its_own_one_line_error(case: Case, tmp_path: Path) -> None:
    path, staged = _stage(case, tmp_path, case.loader)
    with pytest.raises(HwnasError) as info:
        LOADERS[case.loader](path, case.ask)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert case.error in msg, msg
    assert case.error_also is None or case.error_also in msg, msg
    assert any(p.name in msg for p in staged), f"the error does not name the file: {msg}"


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_loader_refuses_every_file_in_one_line(case: Case, loader: str, tmp_path: Path) -> None:
    """An arch where a LUT is expected, a LUT where a space is expected...: still one clear line."""
    src = CORPUS / case.file
    path = tmp_path / src.name
    shutil.copyfile(src, path)
    with pytest.raises(HwnasError) as info:
        LOADERS[loader](path, {})
    msg = str(info.value)
    assert "\n" not in msg and src.name in msg, msg


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_a_folder_where_a_file_belongs_is_one_line(loader: str, tmp_path: Path) -> None:
    folder = tmp_path / "runs.csv"
    folder.mkdir()
    with pytest.raises(HwnasError) as info:
        LOADERS[loader](folder, {})
    assert "\n" not in str(info.value) and str(folder) in str(info.value)


runner = CliRunner()


def _cli_args(case: Case, path: Path, tmp: Path) -> list[str]:
    if case.loader == "lut" and case.ask:
        flags = [a for k, v in case.ask.items() for a in (f"--{k}", str(v))]
        return ["measure", str(GOOD_ARCH), "--lut", str(path), *flags, "--rounds", "1"]
    if case.loader == "lut":
        return ["predict", str(GOOD_ARCH), "--lut", str(path)]
    if case.loader == "arch":
        return ["predict", str(path), "--lut", str(GOOD_LUT)]
    return ["sample", "--space", str(path), "--n", "1", "--out", str(tmp / "samples")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_prints_one_line_and_exits_1_or_2(case: Case, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    path, staged = _stage(case, inputs, case.loader)
    before = _digests(inputs)
    res = runner.invoke(app, _cli_args(case, path, tmp_path))
    assert res.exit_code in (1, 2), res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.stdout == "", res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    assert case.error in lines[0] and any(p.name in lines[0] for p in staged), lines[0]
    assert _digests(inputs) == before, "a refused input was modified"
    assert not (tmp_path / "samples").exists(), "a refused space left samples behind"


def _refused_by_load(case: Case, path: Path) -> bool:
    """True if the file itself is refused (not only what a command then asks of it)."""
    try:
        {"lut": LUT.load, "arch": Arch.load, "space": load_space}[case.loader](path)
    except HwnasError:
        return True
    return False


def _other_commands(case: Case, path: Path, tmp: Path) -> list[list[str]]:
    """The other commands that read this kind of input, as a user would call them."""
    if case.loader == "lut":
        return [
            ["validate-lut", "--lut", str(path), "--nets", "3"],
            ["measure", str(GOOD_ARCH), "--lut", str(path)],
            ["search", "--space", "tiny", "--lut", str(path), "--latency-budget", "5ms", "--out", str(tmp / "run")],
        ]
    if case.loader == "arch":
        return [["measure", str(path), "--backend", "onnxruntime"]]
    return [["profile", "--space", str(path), "--out", str(tmp / "lut.csv")]]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_command_reading_the_input_refuses_it_in_one_line(case: Case, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    path, staged = _stage(case, inputs, case.loader)
    if not _refused_by_load(case, path):
        pytest.skip("the file loads; only what predict/measure then ask of it is wrong (tested above)")
    before = _digests(inputs)
    for args in _other_commands(case, path, tmp_path):
        res = runner.invoke(app, args)
        assert res.exit_code in (1, 2) and isinstance(res.exception, SystemExit), (args[0], res.output)
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
        assert any(p.name in lines[0] for p in staged), lines[0]
    assert _digests(inputs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"], "a refused input left output behind"


def test_cli_in_a_real_process(tmp_path: Path) -> None:
    """``python -m hwnas`` as a user runs it: exit code, one stderr line, no traceback (one case per loader)."""
    picks = {c.loader: c for c in CASES if not c.ask}
    procs = []
    for loader, case in sorted(picks.items()):
        folder = tmp_path / loader
        folder.mkdir()
        path, _ = _stage(case, folder, loader)
        cmd = [sys.executable, "-m", "hwnas", *_cli_args(case, path, folder)]
        env = {**os.environ, "COLUMNS": "40", "OMP_NUM_THREADS": "1"}  # a narrow terminal must not wrap the line
        procs.append((case, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)))
    for case, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert case.error in err, err


# -- nothing damaged: an existing output survives a refused input byte for byte --------------------


@pytest.fixture()
def bad_lut(tmp_path: Path) -> Path:
    path, _ = _stage(next(c for c in CASES if c.file == "lut/truncated_last_line.csv"), tmp_path, "lut")
    return path


def test_validate_lut_keeps_an_existing_report(bad_lut: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_bytes(b'{"mape_pct": 1.5}\n')
    res = runner.invoke(app, ["validate-lut", "--lut", str(bad_lut), "--nets", "3", "--json", str(report), "--force"])
    assert res.exit_code == 1 and "cut off" in res.stderr, res.output
    assert report.read_bytes() == b'{"mape_pct": 1.5}\n'


def test_sample_force_keeps_existing_archs_when_the_space_is_bad(tmp_path: Path) -> None:
    out = tmp_path / "samples"
    res = runner.invoke(app, ["sample", "--space", str(GOOD / "space.toml"), "--n", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    before = _digests(out)
    bad = CORPUS / "space" / "unknown_op.toml"
    res = runner.invoke(app, ["sample", "--space", str(bad), "--n", "2", "--out", str(out), "--force"])
    assert res.exit_code == 1 and "unknown op 'zero9'" in res.stderr, res.output
    assert _digests(out) == before


def test_profile_force_keeps_the_lut_when_the_space_is_bad(tmp_path: Path) -> None:
    out = tmp_path / "lut.csv"
    shutil.copyfile(GOOD_LUT, out)
    shutil.copyfile(meta_path(GOOD_LUT), meta_path(out))
    before = _digests(tmp_path)
    bad = CORPUS / "space" / "stage_stride_3.toml"
    res = runner.invoke(app, ["profile", "--space", str(bad), "--out", str(out), "--force"])
    assert res.exit_code == 1 and "stride must be 1 or 2" in res.stderr, res.output
    assert _digests(tmp_path) == before
    assert not out.with_name(out.name + ".work").exists()


def test_search_force_keeps_the_run_when_the_lut_is_bad(bad_lut: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("arch.json", "history.csv", "config.json"):
        (run / name).write_text(f"{name} of an earlier search\n")
    before = _digests(run)
    for args in (
        ["--lut", str(bad_lut), "--latency-budget", "5ms"],
        ["--lut", str(GOOD_LUT), "--latency-budget", "-5ms"],
    ):
        res = runner.invoke(app, ["search", "--space", "tiny", *args, "--out", str(run), "--force"])
        assert res.exit_code in (1, 2) and len(res.stderr.splitlines()) == 1, res.output
    assert _digests(run) == before


def test_predict_and_measure_leave_their_inputs_alone(bad_lut: Path) -> None:
    folder = bad_lut.parent
    before = _digests(folder)
    for cmd in (["predict", str(GOOD_ARCH), "--lut", str(bad_lut)], ["measure", str(GOOD_ARCH), "--lut", str(bad_lut)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 1 and "cut off" in res.stderr, res.output
    assert _digests(folder) == before


def test_cli_error_keeps_brackets_in_paths(tmp_path: Path) -> None:
    folder = tmp_path / "[exp]"
    folder.mkdir()
    shutil.copyfile(CORPUS / "arch" / "unknown_op.json", folder / "a.json")
    res = runner.invoke(app, ["predict", str(folder / "a.json"), "--lut", str(GOOD_LUT)])
    assert res.exit_code == 1
    assert str(folder / "a.json") in res.stderr, res.stderr
