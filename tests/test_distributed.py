"""Data-parallel search: 2 CPU processes (torchrun, gloo) compute what one process computes on the
same global batches, for every strategy; a checkpoint resumes on another number of processes.

What "the same" means: ``--batch-size`` is global and the processes sample the same paths, so the
data, the samples and the loss are the single process's; BatchNorm statistics are per process (as
with DistributedDataParallel without SyncBatchNorm, which runs on GPUs only). The reference is
therefore one process that runs every forward once per shard of the batch, as the processes cut it
(:func:`hwnas.distributed.shard`), from the same RNG state (so each shard draws the samples every
process draws): the same BatchNorm statistics, one process, no torch.distributed. With two
processes the averaged gradients are even bitwise the reference's (a two-term sum, and x2 / 2 are
exact); the tolerance leaves room for rounding elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import fast_settings, write_fake_fashion_mnist

from hwnas.data import make_loader
from hwnas.distributed import MIN_SHARD, shard, shard_loader
from hwnas.errors import HwnasError
from hwnas.lut import LUT
from hwnas.profiling.profile import profile
from hwnas.search import SearchConfig, run_search
from hwnas.space import load_space
from hwnas.strategies import STRATEGIES
from hwnas.supernet import Supernet

WORLD = 2
TESTS = Path(__file__).parent
# (space, strategy, hard): every strategy on the block space, gumbel --hard too, binary on a cell space
CASES = [("tiny", s, False) for s in STRATEGIES] + [("tiny", "gumbel", True), ("tiny_darts", "binary", False)]
TOL = {"atol": 1e-6, "rtol": 1e-5}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _env(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_DATA", str(cache))
    monkeypatch.setenv("HWNAS_DIST_BACKEND", "gloo")  # CPU processes even where GPUs are present
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def luts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LUT]:
    out = {}
    for name in ("tiny", "tiny_darts"):
        sp = load_space(name).with_params(in_channels=1, num_classes=10)
        path = tmp_path_factory.mktemp("lut") / f"{name}.csv"
        profile(sp, fast_settings(), path)
        out[name] = LUT.load(path)  # as the processes read it (the CSV rounds to 6 digits)
    return out


def _cfg(space: str, data_dir: Path, lut: LUT, **kw) -> SearchConfig:
    # 16 examples per half in batches of 5: global batches 5, 5, 5, 1 -> shards of 3 + 2, and a last
    # batch of one example that rank 1 pads with a zero-weight copy (every shard padded to 2)
    base = SearchConfig(
        space=space, epochs=2, batch_size=5, limit=32, data_dir=str(data_dir), input_size=int(lut.meta["input_size"]),
        budget_ms=1e3, budget_floor=0.0, seed=4,
    )  # fmt: skip
    return replace(base, **kw)


@contextmanager
def per_shard_batchnorm(world: dict[str, int]) -> Iterator[None]:
    """One process computing what ``world["n"]`` processes compute: each forward runs once per
    shard, every shard from the same RNG state, and returns the logits of the real examples in
    batch order (the loss is then the batch mean, as the processes' global mean)."""
    real = Supernet.forward

    def forward(self: Supernet, x: torch.Tensor) -> torch.Tensor:
        if world["n"] == 1:
            return real(self, x)  # one process: no shards, no padding
        state = torch.get_rng_state()
        outs = []
        for r in range(world["n"]):
            pos, weights = shard(len(x), r, world["n"])
            torch.set_rng_state(state)
            out = real(self, x[pos])
            outs.append(out[[i for i, w in enumerate(weights) if w]])
        return torch.cat(outs)

    Supernet.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        Supernet.forward = real  # type: ignore[method-assign]


def _state(run: Path) -> dict[str, torch.Tensor]:
    model = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    return {k: v for k, v in model.items() if k.startswith("alphas.") or (v.is_floating_point() and "running" not in k)}


def _assert_same_search(got: Path, want: Path) -> None:
    a, b = _state(got), _state(want)
    assert a.keys() == b.keys()
    alphas = [k for k in a if k.startswith("alphas.")]
    assert alphas and any(float(a[k].abs().max()) > 1e-4 for k in alphas)  # the search moved them
    for k in a:
        torch.testing.assert_close(a[k], b[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")
    assert json.loads((got / "arch.json").read_text()) == json.loads((want / "arch.json").read_text())


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_shards_cover_every_batch_once() -> None:
    for world in (1, 2, 3, 4):
        for n in range(1, 13):
            parts = [shard(n, r, world) for r in range(world)]
            real = [p for pos, w in parts for p, wi in zip(pos, w, strict=True) if wi == 1.0]
            assert real == list(range(n))  # contiguous, in rank order, each example once
            for pos, w in parts:
                assert len(pos) >= MIN_SHARD and set(w) <= {0.0, 1.0} and all(0 <= p < n for p in pos)


def test_shard_loaders_together_are_the_single_process_loader(data_dir: Path) -> None:
    from hwnas.data import load_dataset

    ds, _ = load_dataset("fashion-mnist", data_dir)
    for world in (2, 3):
        whole = [y for _, y in make_loader(ds, 7, True, 11)]
        ranks = [[(y, w) for _, y, w in shard_loader(make_loader(ds, 7, True, 11), r, world)] for r in range(world)]
        assert all(len(r) == len(whole) for r in ranks)
        for step, y in enumerate(whole):
            joined = torch.cat([r[step][0][r[step][1] == 1] for r in ranks])
            assert torch.equal(joined, y)


def test_distributed_path_with_one_process_is_the_plain_search(data_dir: Path, luts, tmp_path: Path) -> None:
    """An initialised process group of one: the data-parallel code path (sharded loaders, global
    means, gradient all-reduce, lockstep checks) gives the single-process search."""
    import torch.distributed as dist

    lut = luts["tiny"]
    cfg = _cfg("tiny", data_dir, lut, strategy="binary")
    run_search(cfg, lut, tmp_path / "plain")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        run_search(cfg, lut, tmp_path / "group")
        with pytest.raises(HwnasError, match="unrolled"):
            run_search(replace(cfg, strategy="softmax", unrolled=True), lut, tmp_path / "unrolled")
    finally:
        dist.destroy_process_group()
    _assert_same_search(tmp_path / "group", tmp_path / "plain")


@pytest.fixture(scope="module")
def two_process_runs(data_dir: Path, luts, tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    """Every case searched by 2 processes in one torchrun launch (one process group)."""
    root = tmp_path_factory.mktemp("dist")
    jobs = [
        {"cfg": asdict(_cfg(sp, data_dir, luts[sp], strategy=st, hard=hard)), "lut": str(luts[sp].path),
         "out": str(root / f"{sp}-{st}-{hard}")}
        for sp, st, hard in CASES
    ]  # fmt: skip
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {"HWNAS_DATA": str(cache), "HWNAS_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        _torchrun(str(TESTS / "dist_worker.py"), str(root / "jobs.json"))
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("space", "strategy", "hard"), CASES)
def test_two_processes_match_one_process_on_the_same_global_batches(
    space: str, strategy: str, hard: bool, two_process_runs: Path, data_dir: Path, luts, tmp_path: Path
) -> None:
    lut = luts[space]
    run = two_process_runs / f"{space}-{strategy}-{hard}"
    with per_shard_batchnorm({"n": WORLD}):
        run_search(_cfg(space, data_dir, lut, strategy=strategy, hard=hard), lut, tmp_path)
    _assert_same_search(run, tmp_path)
    ranks = [json.loads((run / f"arch.rank{r}.json").read_text()) for r in range(WORLD)]
    assert ranks[0] == ranks[1] == json.loads((run / "arch.json").read_text())  # every process returns it


@pytest.mark.slow
def test_torchrun_cli_resumes_a_one_process_checkpoint(data_dir: Path, luts, tmp_path: Path) -> None:
    """Epoch 1 in one process (interrupted), epoch 2 by ``torchrun -m hwnas search --resume`` on 2
    processes; the reference switches from one shard to two after epoch 1."""
    lut = luts["tiny"]
    cfg = _cfg("tiny", data_dir, lut, strategy="gumbel")

    def stop_after_one(st: dict) -> None:
        if st["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, lut, tmp_path / "run", stop_after_one)
    args = ["-m", "hwnas", "search", "--space", "tiny", "--lut", str(lut.path), "--latency-budget", "1 s",
            "--budget-floor", "0", "--strategy", "gumbel", "--epochs", "2", "--limit", "32", "--batch-size", "5",
            "--seed", "4", "--data-dir", str(data_dir), "--input-size", str(cfg.input_size),
            "--out", str(tmp_path / "run"), "--resume"]  # fmt: skip
    res = _torchrun(*args)
    assert res.stdout.count("wrote ") == 1 and "error" not in res.stderr  # rank 0 alone reports
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 1 + cfg.epochs

    world = {"n": 1}

    def two_after_one(st: dict) -> None:
        world["n"] = WORLD

    with per_shard_batchnorm(world):
        run_search(cfg, lut, tmp_path / "ref", two_after_one)
    _assert_same_search(tmp_path / "run", tmp_path / "ref")
