"""Training a derived architecture from scratch on (fake) Fashion-MNIST: ``hwnas train``."""

from __future__ import annotations

import io
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import write_fake_fashion_mnist
from typer.testing import CliRunner

from hwnas.arch import Arch
from hwnas.cli import app
from hwnas.errors import HwnasError
from hwnas.space import load_space
from hwnas.train import TrainConfig, TrainNet, at_resolution, eval_arch, run_train, train_arch
from hwnas.weights import load_weights

SPACES = ["tiny", "tiny_darts"]


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HWNAS_DATA", str(tmp_path / "cache"))
    return write_fake_fashion_mnist(tmp_path / "fm", n_train=96, n_test=32)


def _arch(space: str) -> Arch:
    sp = load_space(space).with_params(in_channels=1, num_classes=10)
    if space == "proxyless":
        sp = sp.with_params(width_mult=0.25)
    return sp.sample(random.Random(0))


@pytest.mark.parametrize("space", [*SPACES, "proxyless"])
def test_train_arch_learns_and_reports(space: str, data: Path) -> None:
    arch = _arch(space)
    res = train_arch(arch, epochs=2, batch_size=16, data_dir=data, seed=0)
    assert 0.0 <= res.test_acc <= 1.0 and res.train_loss > 0 and res.params > 0 and 1 <= res.best_epoch <= 2
    again = train_arch(arch, epochs=2, batch_size=16, data_dir=data, seed=0)
    assert (again.test_acc, again.train_loss, again.best_epoch) == (res.test_acc, res.train_loss, res.best_epoch)


@pytest.mark.parametrize("space", SPACES)
def test_train_writes_a_run_that_resumes_to_the_same_weights(space: str, data: Path, tmp_path: Path) -> None:
    arch = _arch(space)
    extra = {"auxiliary": 0.4, "drop_path": 0.2, "cells": 4, "channels": 6} if space == "tiny_darts" else {}
    cfg = TrainConfig(epochs=3, batch_size=16, data_dir=str(data), seed=1, **extra)
    whole = tmp_path / "whole"
    res = run_train(arch, cfg, whole)
    for name in ("arch.json", "best.pt", "last.pt", "history.csv", "result.json", "config.json"):
        assert (whole / name).is_file(), name
    result = json.loads((whole / "result.json").read_text())
    assert result["test_acc"] == res.test_acc and result["best_epoch"] == res.best_epoch
    w = load_weights(whole / "best.pt")
    assert w.test_acc == res.test_acc and w.epoch == res.best_epoch
    trained = Arch.load(whole / "arch.json")
    assert w.arch.body == trained.body
    if extra:  # the evaluation-time network: more cells and channels, reductions at 1/3 and 2/3
        assert trained.body["layers"] == 4 and trained.body["C"] == 6 and trained.body["reduce_at"] == [1, 2]
        assert not any(k.startswith("aux") for k in w.state_dict)  # the auxiliary head is not exported


@pytest.mark.parametrize("space", SPACES)
def test_resumed_training_equals_uninterrupted(space: str, data: Path, tmp_path: Path) -> None:
    """A run stopped after epoch 1 and resumed ends with the same weights, history and result."""
    arch = _arch(space)
    cfg = TrainConfig(epochs=3, batch_size=16, data_dir=str(data), seed=2)
    whole, part = tmp_path / "whole", tmp_path / "part"
    run_train(arch, cfg, whole)

    class Stop(Exception):
        pass

    def stop_after_first(st: dict) -> None:
        if st["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        run_train(arch, cfg, part, progress=stop_after_first)
    assert (part / "history.csv").read_text().count("\n") == 2  # header and epoch 1
    with pytest.raises(HwnasError, match=r"other settings \(lr 0\.025 there, 0\.1 now\)"):
        run_train(arch, replace(cfg, lr=0.1), part, resume=True)
    run_train(arch, cfg, part, resume=True)
    for name in ("history.csv", "result.json"):
        a, b = (whole / name).read_text(), (part / name).read_text()
        if name == "result.json":
            a, b = json.loads(a), json.loads(b)
            for d in (a, b):
                d.pop("seconds"), d.pop("arch"), d.pop("weights")
        assert a == b, name
    wa, wb = load_weights(whole / "best.pt").state_dict, load_weights(part / "best.pt").state_dict
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_drop_path_and_aux_head_act_only_in_training() -> None:
    arch = eval_arch(_arch("tiny_darts"), cells=3)
    net = TrainNet(at_resolution(arch, 1, 16), 10, auxiliary=True)
    net.drop_prob = 0.5
    x = torch.randn(4, 1, 16, 16)
    net.train()
    logits, aux = net(x)
    assert logits.shape == (4, 10) and aux is not None and aux.shape == (4, 10)
    net.eval()
    logits_eval, aux_eval = net(x)
    assert aux_eval is None
    assert torch.allclose(logits_eval, net.net(x))  # eval: exactly the exported network


def test_block_arch_refuses_darts_only_settings(data: Path) -> None:
    arch = _arch("tiny")
    for kw in ({"cells": 5}, {"auxiliary": 0.4}, {"drop_path": 0.2}):
        with pytest.raises(HwnasError, match="DARTS cell archs"):
            run_train(arch, TrainConfig(epochs=1, data_dir=str(data), **kw))


def test_arch_for_other_channels_is_refused(data: Path) -> None:
    arch = load_space("tiny").with_params(in_channels=3, num_classes=10).sample(random.Random(0))
    with pytest.raises(HwnasError, match="3-channel input"):
        run_train(arch, TrainConfig(epochs=1, data_dir=str(data)))


def test_cli_train_then_export(data: Path, tmp_path: Path) -> None:
    arch_path = tmp_path / "run" / "arch.json"
    arch_path.parent.mkdir()
    arch_path.write_text(_arch("tiny").to_json())
    runner = CliRunner()
    args = ["train", str(arch_path), "--epochs", "2", "--batch-size", "16", "--data-dir", str(data)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and (tmp_path / "run" / "train" / "best.pt").is_file()
    before = (tmp_path / "run" / "train" / "best.pt").read_bytes()
    again = runner.invoke(app, args)  # an existing run is not overwritten without --force / --resume
    assert again.exit_code == 2 and "--resume" in again.output
    assert (tmp_path / "run" / "train" / "best.pt").read_bytes() == before
    r = runner.invoke(app, [*args, "--resume"])  # all epochs done: re-evaluates, same result
    assert r.exit_code == 0, r.output
    onnx = tmp_path / "m.onnx"
    r = runner.invoke(
        app, ["export", str(arch_path), "--weights", str(tmp_path / "run" / "train" / "best.pt"), "-o", str(onnx),
              "--no-time"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert onnx.is_file()


def _state_bytes(state: object) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["garbage", "parts missing", "foreign weights"])
def test_cli_resume_of_a_corrupt_state_is_one_line(kind: str, data: Path, tmp_path: Path) -> None:
    """A state that is not one, one with its parts missing, or one whose weights are not this
    network's: one line, exit 1, and the file is left as it was."""
    from hwnas.train import STATE_FORMAT

    arch_path = tmp_path / "arch.json"
    arch_path.write_text(_arch("tiny").to_json())
    args = ["train", str(arch_path), "--epochs", "1", "--batch-size", "16", "--data-dir", str(data), "--resume"]
    if kind == "foreign weights":  # a real state, its weights swapped for another network's
        r = CliRunner().invoke(app, args[:-1])
        assert r.exit_code == 0, r.output
        state = torch.load(tmp_path / "train" / "last.pt", weights_only=True)
        bad = _state_bytes({**state, "model": {"w": torch.zeros(1)}})
    else:
        (tmp_path / "train").mkdir()
        bad = b"not a checkpoint" if kind == "garbage" else _state_bytes({"format": STATE_FORMAT})
    (tmp_path / "train" / "last.pt").write_bytes(bad)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and "delete it to start over" in r.output and "Traceback" not in r.output, r.output
    assert (tmp_path / "train" / "last.pt").read_bytes() == bad


def test_cli_resume_with_another_arch_is_refused(data: Path, tmp_path: Path) -> None:
    """--resume in a run directory continues that run's network: another arch, even one whose
    weights have the same shapes (here: only the activation differs), is refused in one line."""
    arch = _arch("tiny")
    (tmp_path / "a.json").write_text(arch.to_json())
    doc = json.loads(arch.to_json())
    doc["stem"]["act"] = "relu6" if doc["stem"]["act"] != "relu6" else "relu"
    (tmp_path / "b.json").write_text(json.dumps(doc))
    out = tmp_path / "run"
    base = ["--epochs", "1", "--batch-size", "16", "--data-dir", str(data), "--out", str(out)]
    r = CliRunner().invoke(app, ["train", str(tmp_path / "a.json"), *base])
    assert r.exit_code == 0, r.output
    before = (out / "last.pt").read_bytes()
    r = CliRunner().invoke(app, ["train", str(tmp_path / "b.json"), *base, "--resume"])
    assert r.exit_code == 1 and "trained another network" in r.output and "Traceback" not in r.output, r.output
    assert (out / "last.pt").read_bytes() == before
    r = CliRunner().invoke(app, ["train", str(tmp_path / "a.json"), *base, "--resume"])  # the same arch resumes
    assert r.exit_code == 0, r.output


def test_cuda_without_a_gpu_is_one_line(data: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    arch_path = tmp_path / "arch.json"
    arch_path.write_text(_arch("tiny").to_json())
    r = CliRunner().invoke(app, ["train", str(arch_path), "--epochs", "1", "--data-dir", str(data), "--device", "cuda"])
    assert r.exit_code == 1 and "no CUDA GPU" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("batch", [64, 1])
def test_out_of_gpu_memory_names_a_smaller_batch(batch: int, data: Path, tmp_path: Path, monkeypatch) -> None:
    """A CUDA out-of-memory error (raised here by a patched forward) becomes one line with half the
    batch size, and names the state --resume continues from once one exists."""
    from hwnas import train as train_mod

    calls = {"n": 0}
    real = train_mod.TrainNet.forward
    limit = 96 if batch > 1 else 8
    first_epoch = -(-int(limit * 0.9) // batch)  # training batches in an epoch (90 % of limit)

    def forward(self, x):
        calls["n"] += self.training
        if calls["n"] > first_epoch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, x)

    monkeypatch.setattr(train_mod.TrainNet, "forward", forward)
    cfg = TrainConfig(epochs=3, batch_size=batch, data_dir=str(data), limit=limit)
    with pytest.raises(HwnasError) as e:
        run_train(_arch("tiny"), cfg, tmp_path / "run")
    msg = str(e.value)
    assert f"--batch-size {batch}; try --batch-size {max(1, batch // 2)}" in msg and "\n" not in msg
    assert "last.pt" in msg  # the first epoch was saved before memory ran out


def test_cli_resume_with_other_cells_names_the_setting(data: Path, tmp_path: Path) -> None:
    """A DARTS run resumed with the same arch but another --cells is told which setting differs
    (the network differs too, but the setting is what the user changed)."""
    (tmp_path / "a.json").write_text(_arch("tiny_darts").to_json())
    out = tmp_path / "run"
    base = ["train", str(tmp_path / "a.json"), "--epochs", "1", "--batch-size", "16", "--data-dir", str(data)]
    base += ["--channels", "6", "--out", str(out)]
    r = CliRunner().invoke(app, [*base, "--cells", "4"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, [*base, "--cells", "5", "--resume"])
    assert r.exit_code == 1 and "other settings (cells 4 there, 5 now)" in r.output, r.output
    assert "drop --resume and pass --force" in r.output
