"""The command line as a user drives it: every command, and bad input as one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from hwnas.cli import app
from hwnas.lut import LUT, meta_path
from hwnas.measure import combine

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(res, code: int = 1) -> str:
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error:"), res.output
    return " ".join(lines)


@pytest.fixture()
def samples(tmp_path: Path) -> Path:
    d = tmp_path / "samples"
    res = run("sample", "--space", "tiny", "--n", "3", "--seed", "7", "--out", d)
    assert res.exit_code == 0, res.output
    return d


def test_sample_is_seeded_and_valid(samples: Path, tmp_path: Path) -> None:
    files = sorted(samples.glob("arch_*.json"))
    assert len(files) == 3
    again = tmp_path / "again"
    assert run("sample", "--space", "tiny", "--n", "3", "--seed", "7", "--out", again).exit_code == 0
    assert [f.read_text() for f in files] == [f.read_text() for f in sorted(again.glob("*.json"))]
    assert json.loads(files[0].read_text())["info"]["seed"] == 7


def test_sample_takes_the_data_sets_shape(tmp_path: Path) -> None:
    """Shaped like a LUT profiled with --in-channels 1 --num-classes 10 (the quick start's)."""
    res = run("sample", "--space", "tiny", "--n", "2", "--in-channels", "1", "--num-classes", "10", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    from hwnas.arch import Arch

    for f in sorted(tmp_path.glob("arch_*.json")):
        keys = [c.key for c in Arch.load(f).plan.calls]
        assert keys[0].endswith("|1x32x32") and "classes=10," in keys[-1], (keys[0], keys[-1])


def test_predict_and_measure(samples: Path, tiny_lut_path: Path, fast_target: Path, tmp_path: Path) -> None:
    arch = samples / "arch_000.json"
    res = run("predict", arch, "--lut", tiny_lut_path)
    assert res.exit_code == 0 and "ms predicted" in res.output and "note:" not in res.output, res.output
    other = tmp_path / "other.json"  # names another space: its ops are priced, the whole-net model is not its own
    other.write_text(json.dumps({**json.loads(arch.read_text()), "space": "proxyless"}))
    res = run("predict", other, "--lut", tiny_lut_path)
    assert res.exit_code == 0 and "note: the network is of space 'proxyless'" in res.output, res.output
    res = run("predict", arch, "--lut", tiny_lut_path, "--json")
    doc = json.loads(res.output)
    assert doc["predicted_ms"] > 0 and doc["blocks"] and len(doc["lut_sha256"]) == 64
    assert doc["macs"] > 0 and doc["params"] > 0
    res = run("measure", arch, "--lut", tiny_lut_path, "--rounds", "1", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output[res.output.index("{") :])
    assert doc["measured_ms"] > 0 and doc["predicted_ms"] > 0 and doc["settings"]["threads"] == 1


def test_predict_several_archs_reads_the_lut_once_and_prints_each(samples: Path, tiny_lut_path: Path) -> None:
    files = sorted(samples.glob("arch_*.json"))
    alone = [json.loads(run("predict", f, "--lut", tiny_lut_path, "--json").output) for f in files]
    res = run("predict", *files, "--lut", tiny_lut_path)
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 + len(files) and lines[0].startswith("predicted on "), res.output
    for f, line, doc in zip(files, lines[1:], alone, strict=True):
        assert line.startswith(str(f)) and f" {doc['predicted_ms']:.3f} ms " in line, line
    together = json.loads(run("predict", *files, "--lut", tiny_lut_path, "--json").output)
    assert together == alone  # a list of what each alone prints, in the order given
    bad = samples / "bad.json"
    bad.write_text("{")
    res = run("predict", files[0], bad, "--lut", tiny_lut_path)
    assert "bad.json" in one_line_error(res) and "ms predicted" not in res.output  # nothing printed before


def test_measure_torch_backend(samples: Path) -> None:
    res = run("measure", samples / "arch_001.json", "--backend", "torch", "--rounds", "1")
    assert res.exit_code == 0 and "ms measured (torch" in res.output, res.output


def test_validate_lut_prints_the_figures(tiny_lut_path: Path, tmp_path: Path) -> None:
    report = tmp_path / "fid.json"
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "1", "--json", report)
    assert res.exit_code == 0, res.output
    for figure in ("MAPE", "max |error|", "within ±5%", "within ±10%", "Spearman", "Kendall", "profile time"):
        assert figure in res.output
    doc = json.loads(report.read_text())
    assert len(doc["measured_ms"]) == 4 and 0 <= doc["within_10pct"] <= 1
    assert "repeatability" not in doc and "repeatability" not in res.output  # one round: nothing to compare
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "2", "--json", report)
    assert res.exit_code == 2 and "exists; pass --force" in res.output, "an earlier report is kept"
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "2", "--json", report, "--force")
    assert res.exit_code == 0 and "repeatability" in res.output and "Spearman" in res.output, res.output
    rep = json.loads(report.read_text())["repeatability"]
    assert rep["mean_diff_pct"] >= 0 and rep["max_diff_pct"] >= rep["mean_diff_pct"]
    assert rep["spearman"] is None or -1 <= rep["spearman"] <= 1
    # a --json that cannot be written is refused before any network is measured
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "1", "--json", tmp_path)
    assert res.exit_code == 2 and "is a directory" in res.output and "MAPE" not in res.output
    lut_bytes = tiny_lut_path.read_bytes()
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--json", tiny_lut_path, "--force")
    assert res.exit_code == 2 and "is the LUT itself" in res.output and tiny_lut_path.read_bytes() == lut_bytes


def test_validate_lut_judges_against_earlier_measurements_of_the_same_networks(
    tiny_lut_path: Path, tmp_path: Path
) -> None:
    """``--also``: a report of the same networks from an earlier run is combined with this one and
    the figures printed against both; a report of other networks is refused before anything is
    measured, and no report is written."""
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "1", "--json", first)
    assert res.exit_code == 0, res.output
    doc = json.loads(first.read_text())
    assert doc["target"]["threads"] == 1 and len(doc["archs_sha256"]) == 64 and doc["space"]["space"] == "tiny"
    assert "combined" not in doc and "measurements combined" not in res.output
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "1", "--also", first, "--json", second)
    assert res.exit_code == 0, res.output
    assert "against 2 measurements combined" in res.output and "vs each other" in res.output, res.output
    now = json.loads(second.read_text())
    both = now["combined"]
    assert both["agreement"]["measurements"] == 2 and both["also"] == [str(first)]
    # the figures are the predictions against both measurements combined, at this one's level
    together = np.array(combine([now["measured_ms"], doc["measured_ms"]]))
    predicted = np.array(now["predicted_ms"])
    assert both["mape_pct"] == pytest.approx(float(np.mean(np.abs(predicted / together - 1)) * 100))
    assert both["spearman"] == pytest.approx(float(stats.spearmanr(predicted, together).statistic), nan_ok=True)
    pair = float(stats.spearmanr(now["measured_ms"], doc["measured_ms"]).statistic)
    assert both["agreement"]["spearman_mean"] == pytest.approx(pair, nan_ok=True)
    # the level: each report brought to the profile's speed by the drift its own reference networks read
    assert len(doc["references"]) == len(now["references"]) > 0
    assert both["level"]["from"] == "every measurement" and "all 2 measurements" in res.output
    d_now, d_first = both["level"]["drifts"]
    assert d_now == pytest.approx(now["drift"]) and d_first == pytest.approx(doc["drift"])
    at_profile = np.sqrt(np.array(now["measured_ms"]) / d_now * np.array(doc["measured_ms"]) / d_first)
    assert both["corrected"]["mape_pct"] == pytest.approx(float(np.mean(np.abs(predicted / at_profile - 1)) * 100))
    second.unlink()
    # a report without reference networks (an older one): the level is this measurement's alone
    older = tmp_path / "older.json"
    older.write_text(json.dumps({k: v for k, v in doc.items() if k != "references"}))
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "1", "--also", older, "--json", second)
    assert res.exit_code == 0, res.output
    now = json.loads(second.read_text())
    assert now["combined"]["level"] == {"from": "this measurement", "drifts": [now["drift"], None]}
    together = np.array(combine([now["measured_ms"], doc["measured_ms"]]))
    scaled = np.array(now["predicted_ms"]) * now["drift"]
    assert now["combined"]["corrected"]["mape_pct"] == pytest.approx(
        float(np.mean(np.abs(scaled / together - 1)) * 100)
    )
    assert "this one only (1 without" in res.output
    second.unlink()
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--seed", "7", "--also", first, "--json", second)
    line = one_line_error(res)
    assert "measured other networks" in line and "--seed" in line and "MAPE" not in res.output
    assert not second.exists()
    # one report given twice, or as its own --json, would count twice or be overwritten: refused
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--also", first, "--also", first)
    assert "given twice" in one_line_error(res, 2) and "MAPE" not in res.output
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--also", first, "--json", first, "--force")
    assert "is also the --json report" in one_line_error(res, 2) and json.loads(first.read_text()) == doc


def test_validate_lut_says_when_the_machine_is_too_noisy(tiny_lut_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hwnas.measure

    def noisy(rounds: list[list[float]]) -> dict[str, float | None]:
        return {"mean_diff_pct": 12.5, "max_diff_pct": 30.0, "spearman": 0.5, "spearman_ceiling": 0.8165}

    monkeypatch.setattr(hwnas.measure, "repeatability", noisy)
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "2")
    assert res.exit_code == 0 and "disagree with themselves by 12.5 %" in res.output, res.output
    assert "Spearman of a perfect LUT" in res.output and "about 0.8165" in res.output, res.output
    # a quiet measurement is not flagged; halves with no positive rank agreement give no ceiling
    quiet = {"mean_diff_pct": 0.5, "spearman": -0.2, "spearman_ceiling": None}
    monkeypatch.setattr(hwnas.measure, "repeatability", lambda rounds: {**noisy(rounds), **quiet})
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--rounds", "2")
    assert res.exit_code == 0 and "disagree with themselves" not in res.output, res.output
    assert "Spearman of a perfect LUT" not in res.output, res.output


def test_validate_lut_space_option_names_the_space_file(tiny_lut_path: Path) -> None:
    """--space loads the networks from another file of the LUT's space (here the shipped one, by
    path); a space that does not exist is one line naming it, before anything is measured."""
    from hwnas.space import SPACES_DIR

    res = run(
        "validate-lut", "--lut", tiny_lut_path, "--space", SPACES_DIR / "tiny.toml", "--nets", "3", "--rounds", "1"
    )
    assert res.exit_code == 0 and "MAPE" in res.output, res.output
    res = run("validate-lut", "--lut", tiny_lut_path, "--space", "no_such_space", "--nets", "3", "--rounds", "1")
    assert res.exit_code == 1 and "no_such_space" in res.output and "MAPE" not in res.output, res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("reading", ["p10", "median"])
def test_profile_reading_reaches_the_lut_and_its_measurements(
    reading: str, samples: Path, tmp_path: Path, fast_target: Path
) -> None:
    out = tmp_path / "t.csv"
    res = run("profile", "--space", "tiny", "--target", fast_target, "--reading", reading, "--out", out)
    assert res.exit_code == 0, res.output
    assert json.loads(meta_path(out).read_text())["reading"] == reading
    res = run("measure", samples / "arch_000.json", "--lut", out, "--rounds", "1")
    assert res.exit_code == 0 and f"{reading} of runs" in res.output, res.output


def test_profile_command_and_force(tmp_path: Path, fast_target: Path) -> None:
    out = tmp_path / "t.csv"
    res = run("profile", "--space", "tiny", "--target", fast_target, "--out", out)
    assert res.exit_code == 0, res.output
    assert "whole-net model" in res.output and out.exists() and meta_path(out).exists()
    before = out.read_bytes()
    res = run("profile", "--space", "tiny", "--target", fast_target, "--out", out)
    assert "--force" in one_line_error(res, 2)
    assert out.read_bytes() == before


@pytest.mark.parametrize("limit, warned", [(-1.0, True), (1e9, False)])
def test_profile_warns_when_its_model_misses_its_own_networks(
    limit: float, warned: bool, tmp_path: Path, fast_target: Path, monkeypatch
) -> None:
    """A profile measured on a busy machine fits its own calibration networks badly: the user is
    told at once, not after building a search on it."""
    import hwnas.cli

    monkeypatch.setattr(hwnas.cli, "FIT_WARN_PCT", limit)
    out = tmp_path / "t.csv"
    res = run("profile", "--space", "tiny", "--target", fast_target, "--out", out)
    assert res.exit_code == 0 and out.exists(), res.output
    fit = json.loads(meta_path(out).read_text())["model"]["fit_mape_pct"]
    assert ("warning: the whole-net model misses the networks it was fitted on" in res.output) is warned
    assert (f"by {fit:.1f} %" in res.output) is warned


@pytest.mark.parametrize("limit, warned", [(-1.0, True), (1e9, False)])
def test_profile_warns_when_the_machine_changed_speed(
    limit: float, warned: bool, tmp_path: Path, fast_target: Path, monkeypatch
) -> None:
    """The speed the machine ran at over the profile is in the metadata; past the limit the
    user is told that the LUT's level is that machine's median speed."""
    import hwnas.cli

    monkeypatch.setattr(hwnas.cli, "SPEED_WARN_PCT", limit)
    out = tmp_path / "t.csv"
    res = run("profile", "--space", "tiny", "--target", fast_target, "--rounds", "2", "--max-rounds", "3", "--out", out)
    assert res.exit_code == 0 and out.exists(), res.output
    taken = json.loads(meta_path(out).read_text())["rounds"]
    assert taken in (2, 3) and f"{taken} rounds (of 2-3): a whole network moved" in res.output
    speed = json.loads(meta_path(out).read_text())["machine_speed"]
    assert 0 < speed["p10"] <= 1 <= speed["p90"] and speed["job_rounds"] > 11
    assert ("warning: the machine's speed moved by" in res.output) is warned


def test_spaces_and_ops_list() -> None:
    res = run("spaces")
    assert res.exit_code == 0 and "proxyless" in res.output and "darts" in res.output
    res = run("ops")
    assert res.exit_code == 0 and "mbconv" in res.output and "sep_conv_3x3" in res.output


def test_emit_and_import(tmp_path: Path, fast_target: Path) -> None:
    folder = tmp_path / "ops"
    res = run("profile", "--space", "tiny", "--target", fast_target, "--emit-onnx", folder)
    assert res.exit_code == 0 and "ort_runner.py" in res.output, res.output
    res = run("profile", "--import", folder / "times.csv", "--out", tmp_path / "x.csv")
    assert "ort_runner.py" in one_line_error(res)
    res = run("profile", "--import", folder, "--threads", "2", "--space", "tiny", "--out", tmp_path / "x.csv")
    assert "not from --space, --threads; drop them" in one_line_error(res, 2)
    res = run("profile", "--space", "tiny", "--emit-onnx", tmp_path / "other", "--out", tmp_path / "x.csv")
    assert "--emit-onnx writes no LUT" in one_line_error(res, 2) and not (tmp_path / "other").exists()
    manifest = (folder / "manifest.json").read_bytes()
    res = run("profile", "--space", "tiny_darts", "--target", fast_target, "--emit-onnx", folder)
    assert "already holds models and a manifest" in one_line_error(res, 2), "a board's times.csv may rely on them"
    assert (folder / "manifest.json").read_bytes() == manifest
    res = run("profile", "--space", "tiny", "--target", fast_target, "--emit-onnx", folder / "manifest.json")
    assert "is a file" in one_line_error(res, 2)
    res = run("profile", "--space", "tiny", "--target", fast_target, "--emit-onnx", folder, "--force")
    assert res.exit_code == 0, res.output


def test_paths_that_cannot_be_written_or_read_are_one_line(tmp_path: Path, samples: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    res = run("sample", "--space", "tiny", "--n", "1", "--out", a_file)  # an --out that is a file, not a folder
    assert "a-file" in one_line_error(res) and a_file.read_text() == "x"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    res = run("measure", empty, "--rounds", "1")
    assert "ONNX Runtime cannot load or run it" in one_line_error(res)


def test_report_out_must_be_html(samples: Path, tmp_path: Path) -> None:
    arch = samples / "arch_000.json"
    before = arch.read_bytes()
    res = run("report", samples, "-o", arch)
    assert "ending in .html" in one_line_error(res, 2) and arch.read_bytes() == before


@pytest.mark.parametrize(
    "target", sorted((Path(__file__).parent.parent / "profilers").glob("*.toml")), ids=lambda p: p.name
)
def test_every_shipped_target_profile_loads(target: Path) -> None:
    from hwnas.cli import load_target
    from hwnas.profiling.profile import ProfileSettings
    from hwnas.profiling.runner import TimingSettings

    raw = load_target(target)
    s = ProfileSettings(**{**raw, "timing": TimingSettings(**raw.get("timing", {}))})
    assert s.backend in ("onnxruntime", "torch") and s.rounds >= 1


@pytest.mark.parametrize(
    ("line", "words"),
    [("[timing]\nprofile_runs = 0", "timing.profile_runs must be a whole number >= 1"),
     ("[timing]\nmax_runs = 0", "timing.max_runs must be a whole number >= 1"),
     ("batch = 100000", "batch must be an integer <= 4096"),
     ("max_rounds = 0", "max_rounds must be an integer >= 1"),
     ("refit_nets = -1", "refit_nets must be an integer >= 0"),
     ("refit_nets = 5000", "refit_nets must be an integer <= 2000"),
     ("steady_pct = 0", "steady_pct must be a number above 0 (percent)"),
     ("steady_pct = \"2\"", "steady_pct must be a number above 0 (percent)")],
)  # fmt: skip
def test_a_target_profile_keeps_the_command_line_bounds(tmp_path: Path, line: str, words: str) -> None:
    target = tmp_path / "t.toml"
    target.write_text(line + "\n")
    res = run("profile", "--space", "tiny", "--target", target, "--out", tmp_path / "x.csv")
    assert words in one_line_error(res, 2)
    assert not (tmp_path / "x.csv.work").exists()


# -- bad input ------------------------------------------------------------------------------


def test_unknown_space(tmp_path: Path) -> None:
    assert "unknown space 'nope'" in one_line_error(run("sample", "--space", "nope", "--out", tmp_path))


def test_unknown_backend_is_a_usage_error() -> None:
    res = run("profile", "--backend", "tvm")
    assert res.exit_code == 2 and "tvm" in res.output


def test_cuda_without_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    msg = one_line_error(
        run("profile", "--space", "tiny", "--device", "cuda", "--backend", "torch", "--out", tmp_path / "x.csv")
    )
    assert "no CUDA GPU" in msg
    assert not (tmp_path / "x.csv").exists()


def test_lut_lacking_keys(tiny_lut_path: Path, tmp_path: Path) -> None:
    assert run("sample", "--space", "tiny", "--width-mult", "2", "--n", "1", "--out", tmp_path).exit_code == 0
    msg = one_line_error(run("predict", tmp_path / "arch_000.json", "--lut", tiny_lut_path))
    assert "lacks" in msg and "hwnas profile --space tiny" in msg and "--width-mult 2" in msg


def test_lut_other_input_size(tiny_lut_path: Path, tmp_path: Path) -> None:
    assert run("sample", "--space", "tiny", "--input-size", "64", "--n", "1", "--out", tmp_path).exit_code == 0
    assert "input size 32" in one_line_error(run("predict", tmp_path / "arch_000.json", "--lut", tiny_lut_path))


@pytest.mark.parametrize(("flag", "value"), [("--threads", "2"), ("--backend", "torch"), ("--batch", "4")])
def test_measure_against_a_lut_of_other_settings(flag: str, value: str, samples: Path, tiny_lut_path: Path) -> None:
    msg = one_line_error(run("measure", samples / "arch_000.json", "--lut", tiny_lut_path, flag, value))
    assert f"{flag.strip('-')} {value} was asked" in msg


def test_truncated_lut(samples: Path, tiny_lut_path: Path, tmp_path: Path) -> None:
    p = tmp_path / "cut.csv"
    data = tiny_lut_path.read_bytes()
    p.write_bytes(data[: data.rindex(b"\n", 0, len(data) // 2) + 5])  # cut mid-line
    shutil.copy(meta_path(tiny_lut_path), meta_path(p))
    assert "cut off" in one_line_error(run("predict", samples / "arch_000.json", "--lut", p))


def test_malformed_arch(tiny_lut_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "hwnas.arch/1", "kind": "blocks"}')
    assert "missing field" in one_line_error(run("predict", bad, "--lut", tiny_lut_path))
    bad.write_text("{")
    assert "not valid JSON" in one_line_error(run("predict", bad, "--lut", tiny_lut_path))


def test_sample_refuses_to_overwrite(samples: Path) -> None:
    before = (samples / "arch_000.json").read_text()
    msg = one_line_error(run("sample", "--space", "tiny", "--n", "1", "--seed", "99", "--out", samples), 2)
    assert "--force" in msg and (samples / "arch_000.json").read_text() == before


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    res = run("--debug", "sample", "--space", "nope", "--out", tmp_path)
    assert res.exit_code != 0 and res.exception is not None and not isinstance(res.exception, SystemExit)


@pytest.mark.parametrize(
    "kind, said",
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("binary", "not a text file"),
        ("not toml", "not valid TOML"),
        ("unknown field", "unknown field(s) speed"),
        ("bool threads", "threads must be an integer >= 1, got True"),
        ("fractional runs", "timing.min_runs must be a whole number >= 1, got 2.5"),
        ("unknown reading", "reading must be one of p10, median, got 'mean'"),
        ("number reading", "reading must be a string, got 10"),
        ("unknown block reading", "block_reading must be one of p10, median, auto, got 'mean'"),
        ("number block reading", "block_reading must be a string, got 10"),
    ],
)
def test_bad_target_profile_is_one_line(kind: str, said: str, tmp_path: Path) -> None:
    target = {"missing": tmp_path / "nope.toml", "directory": tmp_path}.get(kind, tmp_path / "t.toml")
    if kind == "binary":
        target.write_bytes(b"\xb3\x00\xff" * 20)
    elif kind == "not toml":
        target.write_text("threads = = 1\n")
    elif kind == "unknown field":
        target.write_text("speed = 3\n")
    elif kind == "bool threads":
        target.write_text("threads = true\n")
    elif kind == "fractional runs":
        target.write_text("[timing]\nmin_runs = 2.5\n")
    elif kind == "unknown reading":
        target.write_text('reading = "mean"\n')
    elif kind == "number reading":
        target.write_text("reading = 10\n")
    elif kind == "unknown block reading":
        target.write_text('block_reading = "mean"\n')
    elif kind == "number block reading":
        target.write_text("block_reading = 10\n")
    out = tmp_path / "lut.csv"
    res = run("profile", "--space", "tiny", "--target", target, "--out", out)
    assert said in one_line_error(res, 2) and "Traceback" not in res.output, res.output
    assert not out.exists()


@pytest.mark.parametrize("speed", [1.0, 1.2, 0.85])
def test_validate_lut_says_when_the_machine_runs_at_another_speed_than_the_profile(
    speed: float, tiny_lut_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Networks that take what the LUT predicts, times ``speed``: the raw figures carry the
    machine's drift, the drift-corrected ones do not, and from 5 % on a note says which is which."""
    import random

    from hwnas.lut import LUT
    from hwnas.measure import reference_nets
    from hwnas.profiling import runner
    from hwnas.space import load_space

    lut = LUT.load(tiny_lut_path)
    space = load_space("tiny")
    rng = random.Random(5)
    truth = [lut.predict(space.sample(rng)).total_ms for _ in range(4)] + [t for _, t in reference_nets(space, lut)]

    def timed(jobs, rounds, timing, progress=None):  # runner.time_job_rows, without timing anything
        return [{"name": j.name, "round": str(rnd), **dict.fromkeys(("median_ms", "p10_ms", "p90_ms"), str(truth[i] * speed)),
                 "runs": "9"} for rnd in range(rounds) for i, j in enumerate(jobs)]  # fmt: skip

    monkeypatch.setattr(runner, "time_job_rows", timed)
    res = run("validate-lut", "--lut", tiny_lut_path, "--nets", "4", "--seed", "5", "--rounds", "2")
    assert res.exit_code == 0, res.output
    noted = "than when the LUT was profiled" in res.output
    assert noted == (speed != 1.0), res.output
    if noted:
        assert f"runs {abs(speed - 1) * 100:.1f} % {'slower' if speed > 1 else 'faster'}" in res.output


@pytest.mark.parametrize("speed", [1.0, 1.3])
def test_measure_reads_the_network_at_the_profiles_speed(
    speed: float, samples: Path, tiny_lut_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network that takes what the LUT predicts, on a machine ``speed`` times slower than during
    the profile: measured beside the LUT's probe networks, it reads ``speed`` times the prediction
    as timed and the prediction at the profile's speed; ``--no-references`` times it alone."""
    from hwnas.arch import Arch
    from hwnas.lut import LUT
    from hwnas.measure import reference_nets
    from hwnas.profiling import runner
    from hwnas.space import load_space

    lut = LUT.load(tiny_lut_path)
    arch = samples / "arch_000.json"
    pred = lut.predict(Arch.load(arch)).total_ms
    refs = [t for _, t in reference_nets(load_space("tiny"), lut)]
    seen = []

    def timed(jobs, rounds, timing, progress=None):  # runner.time_job_rows, without timing anything
        seen.append(len(jobs))
        truth = [pred, *refs][: len(jobs)]
        return [{"name": j.name, "round": str(rnd), **dict.fromkeys(("median_ms", "p10_ms", "p90_ms"), str(truth[i] * speed)),
                 "runs": "9"} for rnd in range(rounds) for i, j in enumerate(jobs)]  # fmt: skip

    monkeypatch.setattr(runner, "time_job_rows", timed)
    doc = json.loads(run("measure", arch, "--lut", tiny_lut_path, "--rounds", "3", "--json").stdout)
    assert doc["references"] == len(refs) >= 3 and seen[-1] == 1 + len(refs)
    assert doc["measured_ms"] == pytest.approx(pred * speed) and doc["drift"] == pytest.approx(speed)
    assert doc["measured_at_profile_speed_ms"] == pytest.approx(pred)
    res = run("measure", arch, "--lut", tiny_lut_path, "--rounds", "3")
    assert f"{pred:.3f} ms at the profile's machine speed" in res.stdout and "(+0.0%)" in res.stdout, res.output
    from hwnas.checks import signed_pct

    assert signed_pct(-1e-16) == "+0.0", "the drift divided out exactly up to floating point reads +0.0, not -0.0"
    doc = json.loads(run("measure", arch, "--lut", tiny_lut_path, "--no-references", "--json").stdout)
    assert seen[-1] == 1 and doc["drift"] is None and doc["measured_at_profile_speed_ms"] is None
    assert doc["measured_ms"] == pytest.approx(pred * speed)


def test_measure_times_several_models_in_the_same_rounds(
    samples: Path, tiny_lut_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Networks that take what the LUT predicts, on a machine 1.3 times slower than during the
    profile: measured together, each reads its own time, and the probe networks are timed once."""
    from hwnas.arch import Arch
    from hwnas.lut import LUT
    from hwnas.measure import reference_nets
    from hwnas.profiling import runner
    from hwnas.space import load_space

    lut = LUT.load(tiny_lut_path)
    archs = sorted(samples.glob("arch_*.json"))
    preds = [lut.predict(Arch.load(a)).total_ms for a in archs]
    refs = [t for _, t in reference_nets(load_space("tiny"), lut)]
    seen = []

    def timed(jobs, rounds, timing, progress=None):  # runner.time_job_rows, without timing anything
        seen.append([j.name for j in jobs])
        truth = [*preds, *refs]
        return [{"name": j.name, "round": str(rnd), **dict.fromkeys(("median_ms", "p10_ms", "p90_ms"), str(truth[i] * 1.3)),
                 "runs": "9"} for rnd in range(rounds) for i, j in enumerate(jobs)]  # fmt: skip

    monkeypatch.setattr(runner, "time_job_rows", timed)
    res = run("measure", *archs, "--lut", tiny_lut_path, "--rounds", "3", "--json")
    docs = json.loads(res.stdout)
    assert len(seen) == 1 and len(seen[0]) == len(archs) + len(refs), seen  # one measurement, probes once
    assert [d["model"] for d in docs] == [str(a) for a in archs]
    for d, pred in zip(docs, preds, strict=True):
        assert d["measured_ms"] == pytest.approx(pred * 1.3) and d["drift"] == pytest.approx(1.3)
        assert d["measured_at_profile_speed_ms"] == pytest.approx(pred) and d["predicted_ms"] == pytest.approx(pred)
    lines = run("measure", *archs, "--lut", tiny_lut_path, "--rounds", "3").stdout.strip().splitlines()
    assert len(lines) == 2 + len(archs) and "ran +30.0 % vs then" in lines[0], lines
    for a, line, pred in zip(archs, lines[1:-1], preds, strict=True):
        assert line.startswith(str(a)) and f"{pred:.3f} ms at the profile's speed" in line and "(+0.0%)" in line
    assert lines[-1].startswith("prediction vs measured at the profile's speed: MAPE 0.00 %"), lines[-1]
    assert "100 % within ±5 %" in lines[-1] and "(3 networks)" in lines[-1], lines[-1]
    bad = samples / "bad.json"
    bad.write_text("{")
    assert "bad.json" in one_line_error(run("measure", archs[0], bad, "--lut", tiny_lut_path))
    assert len(seen) == 2, "nothing is timed when a file is bad"


def test_profile_says_what_its_refit_did(tmp_path: Path, fast_target: Path) -> None:
    res = run("profile", "--space", "tiny", "--target", fast_target, "--refit-nets", "10", "--out", tmp_path / "x.csv")
    assert res.exit_code == 0, res.output
    meta = LUT.load(tmp_path / "x.csv").meta
    refit, text = meta["model"]["refit"], " ".join(res.output.split())
    assert meta["refit_nets"] == 10 and f"refit on {refit['nets']} networks timed whole: prices" in text
    if refit["chosen"] == "none":
        assert f"prices kept ({refit['reason']})" in text
    else:
        assert f"prices moved (ridge {refit['chosen']};" in text
    res = run("profile", "--space", "tiny", "--refit-nets", "-1", "--out", tmp_path / "y.csv")
    assert res.exit_code == 2 and not (tmp_path / "y.csv").exists()
