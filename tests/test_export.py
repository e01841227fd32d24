"""hwnas export: BN folding, parity, dynamic batch, metadata, re-verification, and every bad input.

Networks come from both tiny spaces: random samples and the archs a short search derives with
each strategy. Trained weights are simulated with random batch-norm statistics (random-init
batch norms are identities, which would hide a wrong fold).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import fast_settings, write_fake_fashion_mnist
from torch import nn
from typer.testing import CliRunner

from hwnas.arch import Arch
from hwnas.cli import app
from hwnas.errors import HwnasError
from hwnas.export import (
    PARITY_ATOL,
    ExportError,
    arch_from_onnx,
    check_model,
    export_model,
    fold_batchnorm,
    pin_batch,
    read_metadata,
    run_onnx,
    time_result,
)
from hwnas.lut import LUT
from hwnas.measure import reference_nets
from hwnas.profiling.profile import profile, space_from_meta
from hwnas.search import SearchConfig, run_search
from hwnas.space import load_space
from hwnas.strategies import STRATEGIES
from hwnas.weights import save_weights

SPACES = ("tiny", "tiny_darts")
runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(res, code: int) -> str:
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def scramble_bn(net: nn.Module, seed: int) -> nn.Module:
    """Random batch-norm statistics and affine parameters, as training leaves them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return net


def trained(arch: Arch, path: Path, seed: int = 0, acc: float | None = 0.875) -> Path:
    """A weights file as hwnas train writes it, for ``arch``, with non-trivial batch norms."""
    torch.manual_seed(seed)
    save_weights(path, arch, scramble_bn(arch.build(), seed), epoch=3, test_acc=acc)
    return path


def sample(space: str, k: int) -> Arch:
    return load_space(space).sample(random.Random(k))


@pytest.fixture(scope="module")
def derived(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Arch]:
    """The arch a one-epoch search derives, per space and strategy (1 channel, 10 classes; ~5 s)."""
    tmp = tmp_path_factory.mktemp("search")
    old = os.environ.get("HWNAS_DATA")
    os.environ["HWNAS_DATA"] = str(tmp / "cache")
    try:
        data = write_fake_fashion_mnist(tmp / "fmnist")
        out = {}
        for space in SPACES:
            sp = load_space(space).with_params(in_channels=1, num_classes=10)
            lut = profile(sp, fast_settings(), tmp / f"{space}.csv")
            for strategy in STRATEGIES:
                cfg = SearchConfig(
                    space=space, strategy=strategy, epochs=1, batch_size=8, limit=16, data_dir=str(data),
                    input_size=int(lut.meta["input_size"]), budget_ms=1e3, budget_floor=0.0,
                )  # fmt: skip
                out[space, strategy] = run_search(cfg, lut, tmp / f"{space}-{strategy}")
        return out
    finally:
        if old is None:
            os.environ.pop("HWNAS_DATA", None)
        else:
            os.environ["HWNAS_DATA"] = old


# -- folding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", SPACES)
def test_fold_batchnorm_keeps_outputs(space: str) -> None:
    for k in range(4):
        a = sample(space, k)
        net = scramble_bn(a.build(), k).eval()
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        folded, n = fold_batchnorm(net)
        assert n == n_bn > 0  # every BN of both spaces follows convs (DARTS's reduce: a concat of two)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == n_bn  # the original is untouched
        x = torch.randn(3, *a.input)
        with torch.no_grad():
            want, got = net(x), folded(x)
        assert want.abs().max() > 1e-2  # not a trivially small output
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


# -- export: parity, dynamic batch, metadata ------------------------------------------------------


def _export_and_verify(a: Arch, tmp_path: Path, seed: int) -> None:
    w = trained(a, tmp_path / "best.pt", seed)
    out = tmp_path / "m.onnx"
    res = export_model(a, out, weights=w)
    assert res.trained and res.max_abs_diff <= PARITY_ATOL and res.bn_left == 0 and res.bn_folded > 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")  # dynamic batch
    # independent parity at a batch the export did not use
    net = a.build()
    net.load_state_dict(torch.load(w, weights_only=True)["state_dict"])
    x = np.random.default_rng(seed).standard_normal((4, *a.input)).astype(np.float32)
    import onnxruntime as ort

    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x0": x})[0]
    with torch.no_grad():
        want = net.eval()(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (4, a.plan.nodes[-1].call.out_shape[0])
    assert np.abs(got - want).max() <= PARITY_ATOL
    # metadata round trip
    assert arch_from_onnx(out).to_dict() == a.to_dict()
    meta = read_metadata(out)
    assert meta["weights_sha256"] == hashlib.sha256(w.read_bytes()).hexdigest() and float(meta["test_acc"]) == 0.875
    assert meta["trained"] == "true" and meta["version"] and int(meta["params"]) > 0
    # re-verification with the weights compares outputs
    check = check_model(out, a, w)
    assert check.max_abs_diff is not None and check.max_abs_diff <= PARITY_ATOL and not check.unchecked


@pytest.mark.parametrize("k", [0, 1])
@pytest.mark.parametrize("space", SPACES)
def test_export_sampled(space: str, k: int, tmp_path: Path) -> None:
    _export_and_verify(sample(space, k), tmp_path, k)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("space", SPACES)
def test_export_derived(space: str, strategy: str, derived, tmp_path: Path) -> None:
    a = derived[space, strategy]
    _export_and_verify(a, tmp_path, 7)
    assert json.loads(read_metadata(tmp_path / "m.onnx")["arch"])["info"]["strategy"] == strategy


def test_budget_and_prediction_recorded(derived, tmp_path: Path) -> None:
    a = derived["tiny", "binary"]
    lut = LUT.load(a.info["lut"])
    refs = reference_nets(space_from_meta(lut.meta), lut)
    res = time_result(export_model(a, tmp_path / "m.onnx", lut=lut), fast_settings(), refs=refs)
    assert res.drift is not None and res.drift > 0  # the LUT's probe networks, timed alongside
    meta = read_metadata(tmp_path / "m.onnx")
    assert float(meta["predicted_ms"]) == pytest.approx(lut.predict(a).total_ms)
    assert float(meta["budget_ms"]) == a.info["budget_ms"] and meta["lut_sha256"] == lut.sha256
    assert meta["trained"] == "false" and "weights_sha256" not in meta
    assert res.measured_ms is not None and res.measured_ms > 0 and res.torch_ms is not None and res.torch_ms > 0
    assert torch.get_num_threads() == 1  # timing restores the thread count


def test_darts_weights_with_more_channels_export_the_trained_net(tmp_path: Path) -> None:
    a = sample("tiny_darts", 3)
    big = Arch(a.kind, a.space, (3, 24, 24), {**a.body, "C": 8, "layers": 4, "reduce_at": [1, 3]}, {})
    res = export_model(a, tmp_path / "m.onnx", weights=trained(big, tmp_path / "best.pt"))
    assert any("trained with the same genotype at C=8, 4 cells" in n for n in res.notes)
    assert any("trained at 24 px" in n for n in res.notes)
    stored = arch_from_onnx(tmp_path / "m.onnx")
    assert stored.body["C"] == 8 and stored.body["layers"] == 4 and stored.input == a.input
    assert res.max_abs_diff <= PARITY_ATOL


def test_pin_batch(tmp_path: Path) -> None:
    a = sample("tiny", 0)
    export_model(a, tmp_path / "m.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    pinned = pin_batch(data, 4)
    assert onnx.load_from_string(pinned).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert pin_batch(pinned, 4) is pinned
    with pytest.raises(ExportError, match="fixed batch of 4; measure it with --batch 4"):
        pin_batch(pinned, 2)


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture()
def arch_file(tmp_path: Path) -> Path:
    p = tmp_path / "arch.json"
    p.write_text(sample("tiny", 5).to_json())
    return p


def test_cli_export_predict_measure(arch_file: Path, tiny_lut_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    res = run("export", arch_file, "-o", out, "--lut", tiny_lut_path, "--rounds", "1")
    assert res.exit_code == 0, res.output
    for text in (
        "UNTRAINED weights",
        "0 left in the graph",
        "onnx.checker ok",
        "measured",
        "predicted",
        "ORT/torch",
        "at the profile's machine speed",
    ):
        assert text in res.stdout, res.stdout
    pred_json = json.loads(run("predict", arch_file, "--lut", tiny_lut_path, "--json").stdout)
    res = run("predict", out, "--lut", tiny_lut_path, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["predicted_ms"] == pred_json["predicted_ms"] == float(read_metadata(out)["predicted_ms"])
    assert doc["macs"] == pred_json["macs"]
    res = run("measure", out, "--lut", tiny_lut_path, "--rounds", "1", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["measured_ms"] > 0 and doc["predicted_ms"] == pred_json["predicted_ms"]
    res = run("measure", out, "--rounds", "1", "--batch", "3")
    assert res.exit_code == 0 and "batch 3" in res.stdout, res.output
    res = run("export", arch_file, "-o", tmp_path / "j.onnx", "--no-time", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["max_abs_diff"] <= PARITY_ATOL and doc["measured_ms"] is None and doc["trained"] is False


def test_cli_check_only(arch_file: Path, tmp_path: Path) -> None:
    a = Arch.load(arch_file)
    w = trained(a, tmp_path / "best.pt")
    out = tmp_path / "m.onnx"
    res = run("export", arch_file, "--weights", w, "-o", out, "--no-time")
    assert res.exit_code == 0 and "trained weights" in res.stdout and "test accuracy 87.50%" in res.stdout, res.output
    res = run("export", "--check-only", "-o", out)
    assert res.exit_code == 0, res.output
    assert "ok: onnx.checker" in res.stdout and "ok: ONNX Runtime runs at batch 1 and 3" in res.stdout
    assert "not checked: output parity with torch: pass --weights" in res.stdout
    res = run("export", arch_file, "--check-only", "-o", out, "--weights", w)
    assert res.exit_code == 0 and "ok: parity with" in res.stdout and "not checked" not in res.stdout, res.output
    other = tmp_path / "other.json"
    other.write_text(sample("tiny", 6).to_json())
    assert "another network" in one_line_error(run("export", other, "--check-only", "-o", out), 1)
    w2 = trained(a, tmp_path / "again.pt", seed=1)
    assert "other weights" in one_line_error(run("export", "--check-only", "-o", out, "--weights", w2), 1)
    assert "no such ONNX file" in one_line_error(run("export", "--check-only", "-o", tmp_path / "nope.onnx"), 1)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    assert "not a readable ONNX" in one_line_error(run("export", "--check-only", "-o", tmp_path / "junk.onnx"), 1)


# -- bad input --------------------------------------------------------------------------------------


def test_arch_of_another_schema(arch_file: Path, tmp_path: Path) -> None:
    doc = json.loads(arch_file.read_text())
    doc["schema"] = "hwnas.arch/0"
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps(doc))
    msg = one_line_error(run("export", bad, "-o", tmp_path / "m.onnx", "--no-time"), 1)
    assert "hwnas.arch/0" in msg and not (tmp_path / "m.onnx").exists()
    assert "needs the arch JSON" in one_line_error(run("export", "-o", tmp_path / "m.onnx"), 2)


def test_weights_that_do_not_match(arch_file: Path, tmp_path: Path) -> None:
    a = Arch.load(arch_file)
    out = tmp_path / "m.onnx"
    w = trained(sample("tiny", 6), tmp_path / "other.pt")
    msg = one_line_error(run("export", arch_file, "--weights", w, "-o", out, "--no-time"), 1)
    assert "another network" in msg and "layers[" in msg
    # the same arch, but one tensor of the wrong shape: the first mismatching tensor is named
    w = trained(a, tmp_path / "bad.pt")
    doc = torch.load(w, weights_only=True)
    key = next(k for k in doc["state_dict"] if k.endswith("conv.weight") or ".body." in k)
    doc["state_dict"][key] = torch.zeros(1, 2, 3)
    torch.save(doc, w)
    msg = one_line_error(run("export", arch_file, "--weights", w, "-o", out, "--no-time"), 1)
    assert repr(key) in msg and "(1, 2, 3)" in msg
    del doc["state_dict"][key]
    torch.save(doc, w)
    assert f"{key!r} is missing" in one_line_error(run("export", arch_file, "--weights", w, "-o", out), 1)
    w.write_bytes(b"garbage")
    assert "not a readable hwnas weights file" in one_line_error(run("export", arch_file, "--weights", w, "-o", out), 1)
    assert not out.exists()


def test_output_directory_missing_or_read_only(arch_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "m.onnx"  # made, as every command makes its output's folders
    res = run("export", arch_file, "-o", missing, "--no-time")
    assert res.exit_code == 0 and missing.is_file(), res.output
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
    else:  # root writes through permission bits; /sys refuses new files to everyone
        ro = Path("/sys")
        try:
            (ro / "hwnas_probe").write_bytes(b"")
        except OSError:
            pass
        else:
            (ro / "hwnas_probe").unlink()
            pytest.skip("no read-only directory available as root here")
    try:
        msg = one_line_error(run("export", arch_file, "-o", ro / "m.onnx"), 2)
        assert "cannot write" in msg and not (ro / "m.onnx").exists()
        msg = one_line_error(run("export", arch_file, "-o", ro / "sub" / "m.onnx"), 2)  # checked where it is made
        assert f"cannot write to {ro}" in msg and not (ro / "sub").exists()
        assert not [p for p in ro.iterdir() if p.name.startswith(".m.onnx")]
    finally:
        if ro != Path("/sys"):
            ro.chmod(0o755)


def test_existing_output_needs_force(arch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    msg = one_line_error(run("export", arch_file, "-o", out, "--no-time"), 2)
    assert "--force" in msg and out.read_bytes() == b"keep me"
    res = run("export", arch_file, "-o", out, "--no-time", "--force")
    assert res.exit_code == 0, res.output
    assert arch_from_onnx(out).to_dict() == Arch.load(arch_file).to_dict()


def test_onnx_without_metadata(arch_file: Path, tiny_lut_path: Path, tmp_path: Path) -> None:
    from hwnas.onnx_io import export_onnx

    a = Arch.load(arch_file)
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(export_onnx(a.build(), [a.input]))
    msg = one_line_error(run("predict", plain, "--lut", tiny_lut_path), 1)
    assert "not exported by hwnas export" in msg and "pass the arch JSON" in msg
    msg = one_line_error(run("measure", plain, "--lut", tiny_lut_path, "--rounds", "1"), 1)
    assert "not exported by hwnas export" in msg and "without --lut" in msg
    res = run("measure", plain, "--rounds", "1")  # a foreign ONNX is still measurable, without a prediction
    assert res.exit_code == 0 and "ms measured" in res.stdout, res.output
    assert "not exported by hwnas export" in one_line_error(run("export", "--check-only", "-o", plain), 1)
    with pytest.raises(HwnasError, match="not exported by hwnas export"):
        arch_from_onnx(plain)
    assert run_onnx(str(plain), tuple(a.input), (1,))[0].shape == (1, 10)
