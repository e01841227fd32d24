"""``hwnas report`` on real tiny runs: every picture a real PNG, embedded and linked in the page,
missing pieces named with the command that makes them, and the page opening in a browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import LEGACY_LUT, fast_settings, write_fake_fashion_mnist
from typer.testing import CliRunner

from hwnas.arch import Arch
from hwnas.cli import app
from hwnas.errors import HwnasError, UsageError
from hwnas.lut import LUT
from hwnas.profiling.profile import profile
from hwnas.report import align_layers, build_report, derived_choices, load_run
from hwnas.search import SearchConfig, run_search
from hwnas.space import load_space
from hwnas.train import TrainConfig, run_train

runner = CliRunner()
BLOCK_PNGS = {"network.png", "probabilities.png", "latency.png", "curves.png", "fidelity.png", "random_nets.png"}
CELL_PNGS = {"cell_normal.png", "cell_reduce.png", "probabilities_normal.png", "probabilities_reduce.png"}


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real search runs on fake Fashion-MNIST with tiny real LUTs: ``tiny`` with everything the
    other commands add (train/, measure.json, fidelity.json, random_nets.json), ``tiny_darts``
    with the search's files only."""
    root = tmp_path_factory.mktemp("report")
    data = write_fake_fashion_mnist(root / "fmnist")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_DATA", str(root / "cache"))
        for name in ("tiny", "tiny_darts"):
            lut = profile(
                load_space(name).with_params(in_channels=1, num_classes=10),
                fast_settings(calib_nets=0),
                root / f"{name}.csv",
            )
            cfg = SearchConfig(
                space=name, strategy="softmax", epochs=2, batch_size=8, limit=32, data_dir=str(data),
                input_size=int(lut.meta["input_size"]), budget_pct=50,
            )  # fmt: skip
            run_search(cfg, lut, root / name)
            out[name] = root / name
        run = out["tiny"]
        arch = Arch.load(run / "arch.json")
        run_train(
            arch, TrainConfig(epochs=2, batch_size=16, limit=48, test_limit=16, data_dir=str(data)), run / "train"
        )
    lut_path = root / "tiny.csv"
    res = cli("measure", run / "arch.json", "--lut", lut_path, "--rounds", "1", "--json")
    assert res.exit_code == 0, res.output
    (run / "measure.json").write_text(res.output[res.output.index("{") :])
    res = cli("validate-lut", "--lut", lut_path, "--nets", "3", "--rounds", "1", "--json", run / "fidelity.json")
    assert res.exit_code == 0, res.output
    # random_nets.json as bench/search_budget.py --quality --json writes it (figures made up: no training here)
    nets = [{"name": f"random {i}", "searched": False, "predicted_ms": arch.info["predicted_ms"] * (0.9 + 0.03 * i),
             "test_acc": 0.1 + 0.05 * i} for i in range(4)]  # fmt: skip
    doc = {"budget_ms": arch.info["budget_ms"], "train_epochs": 2, "train_limit": 48, "nets": nets}
    (run / "random_nets.json").write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def block_report(runs: dict[str, Path]):
    return build_report(runs["tiny"])


def assert_real_png(path: Path) -> None:
    """A PNG that decodes, with more than one colour in it."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert px.shape[0] > 50 and px.shape[1] > 50, (path, px.shape)
    assert px.var() > 0, f"{path} is blank"


def embedded(html: str) -> dict[str, bytes]:
    """PNG file name -> the bytes of the data URI embedded for it."""
    pat = r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" data-file="([^"]+)"'
    return {name: base64.b64decode(data) for data, name in re.findall(pat, html)}


def test_validate_lut_json_has_the_per_net_lists(runs: dict[str, Path]) -> None:
    doc = json.loads((runs["tiny"] / "fidelity.json").read_text())
    assert len(doc["predicted_ms"]) == len(doc["measured_ms"]) == doc["nets"] == 3
    assert all(v > 0 for v in doc["predicted_ms"] + doc["measured_ms"])
    assert doc["lut_sha256"] == LUT.load(runs["tiny"].parent / "tiny.csv").sha256  # what the report matches on


def test_block_run_report_draws_every_piece(runs: dict[str, Path], block_report) -> None:
    r = block_report
    run = runs["tiny"]
    assert r.html == run / "report" / "report.html"
    assert {p.name for p in r.images} == BLOCK_PNGS
    assert r.missing == () and r.problems == ()
    html = r.html.read_text()
    emb = embedded(html)
    assert set(emb) == BLOCK_PNGS
    for p in r.images:
        assert p.parent == r.html.parent
        assert_real_png(p)
        assert emb[p.name] == p.read_bytes(), f"{p.name}: the embedded picture is not the file beside the page"
        assert f'href="{p.name}"' in html
    assert "not in this run" not in html
    # the summary reads every file the other commands wrote
    doc = json.loads((run / "measure.json").read_text())
    assert doc["drift"] > 0  # the LUT's probe networks timed alongside: the net at the profile's speed
    measured = doc["measured_ms"] / doc["drift"]
    test_acc = json.loads((run / "train" / "result.json").read_text())["test_acc"]
    assert f"{measured:.3f} ms" in html and f"{100 * test_acc:.2f} %" in html
    assert (
        "measure.json, at the profile&#x27;s machine speed" in html
        or "measure.json, at the profile's machine speed" in html
    )
    assert "matches the LUT file" in html and "fidelity.json" in html


def test_cell_run_report_names_what_is_missing(runs: dict[str, Path]) -> None:
    r = build_report(runs["tiny_darts"])
    names = {p.name for p in r.images}
    assert CELL_PNGS <= names and not names & {"network.png", "fidelity.png", "random_nets.png"}
    for p in r.images:
        assert_real_png(p)
    html = r.html.read_text()
    assert set(embedded(html)) == names
    for what, command in (
        ("fidelity.json", "hwnas validate-lut"),
        ("measure.json", "hwnas measure"),
        ("random_nets.json", "bench/search_budget.py"),
        ("train/history.csv", "hwnas train"),
    ):
        line = next((m for m in r.missing if what in m), None)
        assert line is not None and command in line, (what, r.missing)
        assert re.search(rf"not in this run: [^<]*{re.escape(what)}[^<]*, produced by <code>[^<]*{command}", html), what


def test_derived_choices_are_the_arch_choices(runs: dict[str, Path]) -> None:
    darts = load_run(runs["tiny_darts"])
    marks, why = derived_choices(darts)
    geno = darts.arch.body["genotype"]
    assert why is None and len(marks) == len(geno["normal"]) + len(geno["reduce"])
    for cell in ("normal", "reduce"):
        for i, (op, src) in enumerate(geno[cell]):
            assert marks[f"{cell} node {i // 2} input {src}"] == op
    header = (runs["tiny_darts"] / "history.csv").read_text().splitlines()[0]
    assert set(marks) <= set(re.findall(r"p\[((?:normal|reduce) node \d+ input \d+)\]", header))  # rows exist
    blocks = load_run(runs["tiny"])
    aligned, why = align_layers(blocks)
    assert why is None and aligned is not None
    sp = load_space("tiny").with_params(in_channels=1, num_classes=10)
    slots = sp.slots()
    picks = [next(c for c in s.choices if c.label == a.choice) for s, a in zip(slots, aligned, strict=True)]
    assert sp.blocks_arch(picks).body == blocks.arch.body  # the marks rebuild the searched network
    rows = set(derived_choices(blocks)[0])
    header = (runs["tiny"] / "history.csv").read_text().splitlines()[0]
    assert rows == set(re.findall(r"p\[(layer \d+)\]", header))  # one mark per probability row


@pytest.mark.parametrize(
    "change, expect, status",
    [
        ("missing", "is not on this machine", "LUT file not found"),
        ("other", "is not the one the search used", "DIFFERS from the LUT file now on disk"),
        ("unusable", "cannot be used", "LUT file unusable"),
    ],
)
def test_lut_missing_or_changed_is_said_and_strip_drawn_without_shares(
    runs: dict[str, Path], tmp_path: Path, change: str, expect: str, status: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["tiny"], run, ignore=shutil.ignore_patterns("report", "*.pt"))
    doc = json.loads((run / "arch.json").read_text())
    if change == "missing":
        doc["info"]["lut"] = str(tmp_path / "gone.csv")
    elif change == "other":
        doc["info"]["lut_sha256"] = "0" * 64
    else:
        (tmp_path / "broken.csv").write_text("not,a\nlut,table\n")
        doc["info"]["lut"] = str(tmp_path / "broken.csv")
    (run / "arch.json").write_text(json.dumps(doc))
    r = build_report(run)
    html = r.html.read_text()
    assert re.search(rf"Latency shares: the LUT [^<]*{expect}", html), html[:3000]
    assert "matches the LUT file" not in html
    assert re.search(rf"<td>LUT sha256</td>\s*<td>[0-9a-f]{{16}}… \({status}\)</td>", html), status
    strip = r.html.parent / "network.png"
    assert strip in r.images
    assert_real_png(strip)
    assert load_run(run).prediction is None


@pytest.mark.parametrize(
    "lut, sha, flagged",
    [
        ("elsewhere/renamed.csv", "run's", False),  # another path, the same content: the run's LUT
        ("run's", "0" * 64, True),  # the same path, other content: another LUT
        ("elsewhere/tiny.csv", None, False),  # an older fidelity.json without lut_sha256: by file name
        ("elsewhere/other.csv", None, True),
    ],
)
def test_fidelity_json_is_matched_to_the_run_lut_by_sha256(
    runs: dict[str, Path], tmp_path: Path, lut: str, sha: str | None, flagged: bool
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["tiny"], run, ignore=shutil.ignore_patterns("report", "*.pt"))
    info = json.loads((run / "arch.json").read_text())["info"]
    doc = json.loads((run / "fidelity.json").read_text())
    doc["lut"] = info["lut"] if lut == "run's" else lut
    doc.pop("lut_sha256")
    if sha is not None:
        doc["lut_sha256"] = info["lut_sha256"] if sha == "run's" else sha
    (run / "fidelity.json").write_text(json.dumps(doc))
    r = build_report(run)
    html = r.html.read_text()
    said = [n for n in r.notes if n.startswith("fidelity.json is the report of LUT")]
    assert "fidelity.png" in {p.name for p in r.images}  # drawn either way
    if flagged:
        assert len(said) == 1 and f"this run was searched with {info['lut']}" in said[0], r.notes
        assert html.count("fidelity.json is the report of LUT") == 1
        if sha is not None:
            assert sha[:12] in said[0] and info["lut_sha256"][:12] in said[0]  # same path: the hashes tell them apart
    else:
        assert said == [] and "fidelity.json is the report of LUT" not in html, r.notes


@pytest.mark.parametrize("drift", [None, 1.4])
def test_fidelity_is_read_at_the_profiles_speed(runs: dict[str, Path], tmp_path: Path, drift: float | None) -> None:
    """A fidelity report taken while the machine ran 40 % slower than during the profile: its
    networks are drawn and summarised at the profile's speed (as the run's own net is), and the
    report says so; without a drift, as measured."""
    run = tmp_path / "run"
    shutil.copytree(runs["tiny"], run, ignore=shutil.ignore_patterns("report", "*.pt"))
    doc = json.loads((run / "fidelity.json").read_text())
    doc["predicted_ms"] = [1.0, 2.0, 3.0]
    doc["measured_ms"] = [1.4, 2.8, 4.2] if drift else [1.0, 2.0, 3.0]
    doc["drift"] = drift
    (run / "fidelity.json").write_text(json.dumps(doc))
    html = build_report(run).html.read_text()
    assert "3 random nets: MAPE 0.00 %, max 0.00 %, within ±5 % 100 %" in html
    assert ("drift +40.0 % removed" in html) is bool(drift)


def test_unusable_files_are_reported_not_raised(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["tiny"], run, ignore=shutil.ignore_patterns("report", "*.pt"))
    summary_only = {k: v for k, v in json.loads((run / "fidelity.json").read_text()).items() if not k.endswith("_ms")}
    (run / "fidelity.json").write_text(json.dumps(summary_only))
    (run / "random_nets.json").write_text("{not json")
    (run / "train" / "history.csv").write_bytes(b"")
    r = build_report(run)
    assert any("fidelity.json" in p and "predicted_ms" in p for p in r.problems), r.problems
    assert any("random_nets.json" in p for p in r.problems) and any("train/history.csv" in p for p in r.problems)
    html = r.html.read_text()
    assert "fidelity.json" in html and "not in this run" in html
    assert {p.name for p in r.images} == BLOCK_PNGS - {"fidelity.png", "random_nets.png"}


def test_cli_report_without_dot_and_its_errors(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no graphviz dot: the cells are drawn with matplotlib
    res = cli("report", runs["tiny_darts"], "-o", tmp_path / "elsewhere" / "cells.html")
    assert res.exit_code == 0, res.output
    html = (tmp_path / "elsewhere" / "cells.html").read_text()
    assert "drawn with matplotlib instead" in html and "not in this run" in res.output
    for name in CELL_PNGS:  # beside -o, not in the run directory
        assert_real_png(tmp_path / "elsewhere" / name)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "arch.json").write_text('{"schema": "hwnas.arch/1", "kind"')
    for bad, says in (
        (tmp_path / "nope", "no such run directory"),
        (tmp_path / "elsewhere", "no arch.json"),
        (broken, "not valid JSON"),
    ):
        res = cli("report", bad)
        assert res.exit_code == 1 and "Traceback" not in res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], res.output
        with pytest.raises(HwnasError, match=says):
            build_report(bad)
    res = cli("report", runs["tiny_darts"], "-o", tmp_path / "elsewhere")  # a directory, not the HTML file
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(r"-o \S*elsewhere is a directory; -o takes the file to write", lines[0])
    with pytest.raises(UsageError, match="is a directory"):
        build_report(runs["tiny_darts"], tmp_path / "elsewhere")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no chromium here (install.sh installs Debian's chromium)")
def test_report_opens_in_headless_chromium(block_report, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    cmd = [
        _chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,2000", f"--screenshot={shot}", block_report.html.resolve().as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=180)  # a guard against a hang, not a timing check
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert_real_png(shot)


QUICKSTART_RUN = Path(__file__).parent / "data" / "quickstart_run"


@pytest.mark.skipif(_chromium() is None, reason="no chromium here (install.sh installs Debian's chromium)")
def test_report_of_the_readme_main_job_opens_in_headless_chromium(tmp_path: Path, monkeypatch) -> None:
    """The report of the quick start's run (its small files, shipped in tests/data) renders, and
    headless Chromium screenshots it without errors."""
    (tmp_path / "latency_tables").mkdir()  # the arch names its LUT by a path relative to where it ran
    for f in LEGACY_LUT.parent.iterdir():
        shutil.copy(f, tmp_path / "latency_tables" / f.name)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART_RUN, run)
    res = build_report(run)
    html = res.html.read_text()
    assert "7.284 ms" in html and "76.32" in html  # the budget and the test accuracy of that run
    assert "matches the LUT file" in html and load_run(run).prediction is not None  # its LUT found and priced
    for png in res.html.parent.glob("*.png"):
        assert_real_png(png)
    shot = tmp_path / "shot.png"
    cmd = [
        _chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,3000", f"--screenshot={shot}", res.html.resolve().as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=180)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert_real_png(shot)
