"""The search end to end on tiny spaces and tiny data: every strategy on both kinds of space."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import fast_settings, write_fake_fashion_mnist
from typer.testing import CliRunner

from hwnas.arch import Arch
from hwnas.cli import app
from hwnas.errors import HwnasError
from hwnas.lut import LUT
from hwnas.profiling.profile import profile
from hwnas.search import SearchConfig, run_search
from hwnas.space import load_space
from hwnas.strategies import STRATEGIES


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_DATA", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def luts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LUT]:
    """LUTs at the deployment shape of the fake data: 1 channel, 10 classes."""
    out = {}
    for name in ("tiny", "tiny_darts"):
        sp = load_space(name).with_params(in_channels=1, num_classes=10)
        out[name] = profile(sp, fast_settings(), tmp_path_factory.mktemp("lut") / f"{name}.csv")
    return out


def _cfg(space: str, data_dir: Path, lut: LUT, **kw) -> SearchConfig:
    base = SearchConfig(
        space=space, epochs=1, batch_size=8, limit=32, data_dir=str(data_dir), input_size=int(lut.meta["input_size"]),
        budget_ms=1e3, budget_floor=0.0,
    )  # fmt: skip
    return replace(base, **kw)


@pytest.mark.parametrize("strategy", [*STRATEGIES, "gdas"])
@pytest.mark.parametrize("space", ["tiny", "tiny_darts"])
def test_every_strategy_searches_both_kinds(space: str, strategy: str, data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts[space]
    hard = strategy == "gdas"
    cfg = _cfg(space, data_dir, lut, strategy="gumbel" if hard else strategy, hard=hard, epochs=2)
    arch = run_search(cfg, lut, tmp_path)
    again = Arch.load(tmp_path / "arch.json")
    assert again.to_dict() == arch.to_dict()
    assert arch.info["predicted_ms"] == pytest.approx(lut.predict(arch).total_ms, rel=1e-5)
    assert arch.info["predicted_ms"] <= cfg.budget_ms
    for field in ("budget_ms", "strategy", "seed", "lut_sha256", "min_latency_ms"):
        assert field in arch.info
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert len(history) == 1 + cfg.epochs and "e_lat_ms" in history[0] and "p[" in history[0]


@pytest.mark.parametrize("space", ["tiny", "tiny_darts"])
def test_unrolled_search_runs_and_differs_from_first_order(space: str, data_dir: Path, luts, tmp_path: Path) -> None:
    import torch

    lut = luts[space]
    cfg = _cfg(space, data_dir, lut, strategy="softmax", epochs=1, seed=2)
    run_search(cfg, lut, tmp_path / "first")
    run_search(replace(cfg, unrolled=True), lut, tmp_path / "second")
    first = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)["model"]
    second = torch.load(tmp_path / "second" / "checkpoint.pt", weights_only=True)["model"]
    alphas = [k for k in first if k.startswith("alphas.")]
    assert alphas and any(not torch.equal(first[k], second[k]) for k in alphas)
    assert json.loads((tmp_path / "second" / "arch.json").read_text())["info"]["unrolled"] is True


def test_tight_budget_is_kept_by_repair(data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts["tiny"]
    probe = run_search(_cfg("tiny", data_dir, lut), lut, tmp_path / "probe")
    floor = probe.info["min_latency_ms"]
    budget = floor * 1.0001
    arch = run_search(_cfg("tiny", data_dir, lut, budget_ms=budget), lut, tmp_path / "tight")
    assert lut.predict(arch).total_ms <= budget


@pytest.mark.parametrize("space", ["tiny", "tiny_darts"])
def test_derived_arch_uses_the_budget(space: str, data_dir: Path, luts, tmp_path: Path) -> None:
    from hwnas.search import _state_of
    from hwnas.strategies import make_strategy
    from hwnas.supernet import Supernet, row_costs, structure

    lut = luts[space]
    largest = run_search(_cfg(space, data_dir, lut, budget_ms=1e6, budget_floor=0.9), lut, tmp_path / "big")
    lo, hi = largest.info["min_latency_ms"], lut.predict(largest).total_ms
    budget = (lo + hi) / 2
    arch = run_search(_cfg(space, data_dir, lut, budget_ms=budget, budget_floor=0.9), lut, tmp_path / "mid")
    ms = lut.predict(arch).total_ms
    assert ms <= budget
    if ms < 0.9 * budget:  # allowed only when no single swap lands in (ms, budget]
        sp = load_space(space).with_params(in_channels=1, num_classes=10)
        net = Supernet(sp, make_strategy("softmax"), lut)
        costs, state = row_costs(structure(sp), lut.latency), _state_of(net, arch)
        for r, cur in state:
            for i, c in enumerate(net.rows[r].choices):
                if c != "none":
                    assert not (ms < ms + lut.scale * (costs[r][i] - costs[r][cur]) <= budget)


def test_budget_below_the_fastest_net_is_refused(data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts["tiny"]
    with pytest.raises(HwnasError, match="below the fastest network"):
        run_search(_cfg("tiny", data_dir, lut, budget_ms=1e-6), lut, tmp_path)
    assert not (tmp_path / "arch.json").exists()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_arch_json(strategy: str, data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts["tiny"]
    cfg = _cfg("tiny", data_dir, lut, strategy=strategy, epochs=2, seed=3)
    run_search(cfg, lut, tmp_path / "a")
    run_search(cfg, lut, tmp_path / "b")
    assert (tmp_path / "a" / "arch.json").read_bytes() == (tmp_path / "b" / "arch.json").read_bytes()


def test_resume_gives_the_uninterrupted_result(data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts["tiny_darts"]
    cfg = _cfg("tiny_darts", data_dir, lut, strategy="binary", epochs=3, seed=1)
    run_search(cfg, lut, tmp_path / "whole")

    def stop_after_two(st: dict) -> None:
        if st["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, lut, tmp_path / "cut", stop_after_two)
    assert not (tmp_path / "cut" / "arch.json").exists()
    run_search(cfg, lut, tmp_path / "cut", resume=True)
    assert (tmp_path / "cut" / "arch.json").read_bytes() == (tmp_path / "whole" / "arch.json").read_bytes()


def test_corrupt_checkpoint_on_resume(data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts["tiny"]
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(HwnasError, match="not a readable hwnas checkpoint"):
        run_search(_cfg("tiny", data_dir, lut), lut, tmp_path, resume=True)


def test_nan_loss_stops_with_the_step(data_dir: Path, luts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import hwnas.search as search

    calls = {"n": 0}
    real = search.F.cross_entropy

    def poisoned(*a, **k):
        calls["n"] += 1
        return real(*a, **k) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(search.F, "cross_entropy", poisoned)
    with pytest.raises(HwnasError, match=r"loss became nan at epoch 1, step 2"):
        run_search(_cfg("tiny", data_dir, luts["tiny"]), luts["tiny"], tmp_path)
    del torch


runner = CliRunner()


def test_cli_search(data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts["tiny"]
    args = ["search", "--space", "tiny", "--lut", str(lut.path), "--latency-budget", "1 s", "--epochs", "1",
            "--limit", "16", "--batch-size", "8", "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "predicted" in res.output and "priced at the deployment input" in res.output
    # binary (the default) on tiny, whose layer 1 offers a 1x1 skip projection beside MBConv: the user is told
    assert "differ in structure (layer 1: mbconv_k3_e1 vs skip)" in res.output
    assert "This search runs 1 weight step (more:" in " ".join(res.output.split())  # 8 of the 16 images, batch 8
    doc = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert doc["info"]["budget_ms"] == 1000.0
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, [*args, "--strategy", "softmax", "--force"])  # every candidate runs: no such note
    assert res.exit_code == 0 and "differ in structure" not in res.output, res.output
    res = runner.invoke(app, [*args, "--strategy", "gumbel", "--hard", "--force"])
    assert res.exit_code == 0 and "gumbel --hard runs one candidate per step" in res.output, res.output
    res = runner.invoke(app, [*args, "--separate-weights", "--force"])
    assert res.exit_code == 0 and "--separate-weights gives each its own weights" in res.output, res.output


@pytest.mark.parametrize("budget", ["-5ms", "0", "fast"])
def test_cli_bad_budgets(budget: str, luts, tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--space", "tiny", "--lut", str(luts["tiny"].path), "--latency-budget", budget])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output


def test_cli_unknown_strategy_and_loss(luts, tmp_path: Path) -> None:
    base = ["search", "--lut", str(luts["tiny"].path), "--latency-budget", "1ms"]
    assert runner.invoke(app, [*base, "--strategy", "random"]).exit_code == 2
    assert runner.invoke(app, [*base, "--loss", "l2"]).exit_code == 2


def test_missing_data_dir(luts, tmp_path: Path) -> None:
    lut = luts["tiny"]
    with pytest.raises(HwnasError):
        run_search(_cfg("tiny", tmp_path / "nope", lut), lut, tmp_path / "run")


def test_cli_percentile_budget(data_dir: Path, luts, tmp_path: Path) -> None:
    from hwnas.search import latency_percentile

    lut = luts["tiny"]
    args = ["search", "--space", "tiny", "--lut", str(lut.path), "--latency-budget", "p60", "--epochs", "1",
            "--limit", "16", "--batch-size", "8", "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "run" / "arch.json").read_text())["info"]
    sp = load_space("tiny").with_params(in_channels=1, num_classes=10)
    assert info["budget_pct"] == 60 and info["budget_ms"] == pytest.approx(latency_percentile(sp, lut, 60))
    assert info["predicted_ms"] <= info["budget_ms"]
    bad = runner.invoke(app, [*args[:6], "p100", *args[7:-1], str(tmp_path / "other")])
    assert bad.exit_code == 2 and "p1 to p99" in bad.output


@pytest.mark.parametrize(
    ("strategy", "hard"), [("softmax", False), ("binary", False), ("gumbel", False), ("gumbel", True)]
)
def test_config_records_the_strategy_defaults(strategy: str, hard: bool, data_dir: Path, luts, tmp_path: Path) -> None:
    """lr, architecture lr, warm-up and weight sharing default by strategy (one sampled path:
    0.01, 0.01, a third of the epochs, shared; else 0.05, 0.003, none, separate), and config.json
    says which were used; explicit values win."""
    from hwnas.search import ARCH_LR_ALL_PATHS, ARCH_LR_ONE_PATH, LR_ALL_PATHS, LR_ONE_PATH

    lut = luts["tiny"]
    run_search(_cfg("tiny", data_dir, lut, strategy=strategy, hard=hard, epochs=3), lut, tmp_path / "a")
    doc = json.loads((tmp_path / "a" / "config.json").read_text())
    one_path = strategy == "binary" or hard
    assert doc["lr"] == (LR_ONE_PATH if one_path else LR_ALL_PATHS)
    assert doc["arch_lr"] == (ARCH_LR_ONE_PATH if one_path else ARCH_LR_ALL_PATHS)
    assert doc["warmup_epochs"] == (1 if one_path else 0)
    assert doc["share_weights"] is one_path
    run_search(_cfg("tiny", data_dir, lut, strategy=strategy, hard=hard, lr=0.02, share_weights=not one_path),
               lut, tmp_path / "b")  # fmt: skip
    doc = json.loads((tmp_path / "b" / "config.json").read_text())
    assert doc["lr"] == 0.02 and doc["share_weights"] is (not one_path)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_warmup_epochs_leave_the_architecture_alone(strategy: str, data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts["tiny"]
    run_search(_cfg("tiny", data_dir, lut, strategy=strategy, epochs=2, warmup_epochs=1), lut, tmp_path)
    import csv

    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    probs = [[float(v) for k, v in r.items() if k.startswith("p[")] for r in rows]
    assert len(probs) == 2
    from hwnas.supernet import structure

    uniform = [1 / len(r.choices) for r in structure(load_space("tiny")).rows for _ in r.choices]
    assert probs[0] == pytest.approx(uniform, abs=1e-6)  # untouched logits after the warm-up epoch
    assert probs[1] != pytest.approx(uniform, abs=1e-6)  # the search epoch moved them


def test_cli_warmup_and_weight_options(data_dir: Path, luts, tmp_path: Path) -> None:
    lut = luts["tiny"]
    base = ["search", "--space", "tiny", "--lut", str(lut.path), "--latency-budget", "1 s", "--limit", "16",
            "--batch-size", "8", "--data-dir", str(data_dir)]  # fmt: skip
    res = runner.invoke(app, [*base, "--epochs", "2", "--warmup-epochs", "2", "--out", str(tmp_path / "r1")])
    assert res.exit_code == 2 and "--warmup-epochs 2" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r1" / "config.json").exists()
    args = [*base, "--epochs", "2", "--warmup-epochs", "1", "--separate-weights", "--lr", "0.003"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r2" / "config.json").read_text())
    assert doc["warmup_epochs"] == 1 and doc["share_weights"] is False and doc["lr"] == 0.003


def test_resume_names_the_setting_that_differs_and_reads_older_checkpoints(
    data_dir: Path, luts, tmp_path: Path
) -> None:
    import torch

    lut = luts["tiny"]
    cfg = _cfg("tiny", data_dir, lut, strategy="softmax", epochs=1)
    run_search(cfg, lut, tmp_path)
    ckpt = tmp_path / "checkpoint.pt"
    # a checkpoint written before device, warm-up and weight sharing were settings
    state = torch.load(ckpt, weights_only=True)
    old = json.loads(state["config"])
    for key in ("device", "warmup_epochs", "share_weights"):
        del old[key]
    old["lr"], old["arch_lr"] = 0.05, 3e-3  # older configs stored the numbers
    state["config"] = json.dumps(old, sort_keys=True)
    torch.save(state, ckpt)
    first = (tmp_path / "arch.json").read_bytes()
    run_search(cfg, lut, tmp_path, resume=True)  # the same options: accepted
    assert (tmp_path / "arch.json").read_bytes() == first
    with pytest.raises(HwnasError, match=r"lr 0\.05 there, 0\.02 now"):
        run_search(replace(cfg, lr=0.02), lut, tmp_path, resume=True)
    with pytest.raises(HwnasError, match=r"share_weights False there, True now"):
        run_search(replace(cfg, share_weights=True), lut, tmp_path, resume=True)


@pytest.mark.parametrize("space", ["proxyless", "tiny", "darts"])
def test_budget_repair_starts_from_the_decisions_the_search_derived(space: str) -> None:
    """The repair scores swaps with the log-probabilities of each decision's own row: the state it
    reads back from the derived arch is the argmax of every row, also where a stage's identical
    slots drop a block with zero."""
    import torch

    from hwnas.search import _state_of
    from hwnas.strategies import make_strategy
    from hwnas.supernet import Supernet

    torch.manual_seed(0)
    net = Supernet(load_space(space, input_size=32), make_strategy("softmax"))
    for _ in range(5):
        with torch.no_grad():
            for a in net.alphas:
                a.normal_()
        state = dict(_state_of(net, net.derive()))
        if net.space.kind == "blocks":
            assert state == {k: int(net.probs(k).argmax()) for k in range(len(net.rows))}
        else:  # DARTS: the two kept edges of each node, each with its best non-none op
            none = net.space.cell_ops.index("none")
            for row, op in state.items():
                p = net.probs(row).clone()
                p[none] = -1
                assert op == int(p.argmax())
