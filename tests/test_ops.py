"""Every registered op builds, has the shape it declares, exports to ONNX and runs the same in ORT."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwnas.onnx_io import export_onnx
from hwnas.ops import OpCall, OpError, get_op, make_call, parse_key, register_op, registered_ops

MB = {"act": "relu6", "groups": 1}
# (params, input shape) per op: several per op so each code path (residual, stride, groups,
# projection, reduction) runs. A new op without cases fails test_every_op_has_cases.
CASES: dict[str, list[tuple[dict, tuple[int, int, int]]]] = {
    "conv_bn_act": [({"out": 8, "k": 3, "stride": 2, "act": "relu6"}, (3, 16, 16)),
                    ({"out": 6, "k": 3, "stride": 1, "act": "none"}, (3, 9, 9))],
    "mbconv": [({**MB, "out": 8, "k": 3, "e": 1, "stride": 1}, (8, 10, 10)),
               ({**MB, "out": 16, "k": 5, "e": 6, "stride": 2}, (8, 11, 11)),
               ({**MB, "out": 8, "k": 7, "e": 3, "stride": 1}, (8, 8, 8)),
               ({"act": "relu", "groups": 2, "out": 8, "k": 3, "e": 1, "stride": 1}, (8, 8, 8)),
               ({"act": "relu", "groups": 2, "out": 12, "k": 5, "e": 3, "stride": 2}, (8, 8, 8))],
    "zero": [({"out": 8, "stride": 1}, (8, 6, 6))],
    "skip": [({"out": 8, "stride": 1}, (8, 6, 6)), ({"out": 12, "stride": 2}, (8, 6, 6))],
    "head": [({"mix": 16, "classes": 10, "act": "relu6"}, (8, 4, 4)), ({"mix": 0, "classes": 5, "act": "none"}, (8, 3, 3))],
    "none": [({"stride": 1}, (4, 8, 8)), ({"stride": 2}, (4, 8, 8))],
    "max_pool_3x3": [({"stride": 1}, (4, 8, 8)), ({"stride": 2}, (4, 8, 8))],
    "avg_pool_3x3": [({"stride": 1}, (4, 8, 8)), ({"stride": 2}, (4, 8, 8))],
    "skip_connect": [({"stride": 1}, (4, 8, 8)), ({"stride": 2}, (4, 8, 8))],
    "sep_conv_3x3": [({"stride": 1}, (4, 8, 8)), ({"stride": 2}, (4, 8, 8))],
    "sep_conv_5x5": [({"stride": 1}, (4, 8, 8)), ({"stride": 2}, (4, 8, 8))],
    "dil_conv_3x3": [({"stride": 1}, (4, 8, 8)), ({"stride": 2}, (4, 8, 8))],
    "dil_conv_5x5": [({"stride": 1}, (4, 8, 8)), ({"stride": 2}, (4, 8, 8))],
    "relu_conv_bn": [({"out": 8, "k": 1, "stride": 1}, (12, 8, 8))],
    "factorized_reduce": [({"out": 8}, (4, 8, 8)), ({"out": 6}, (5, 10, 12))],
    "add": [({"n": 2}, (4, 6, 6)), ({"n": 3}, (4, 6, 6))],
    "concat": [({"n": 4}, (4, 6, 6))],
}  # fmt: skip

ALL = [(op, p, s) for op, cases in CASES.items() for p, s in cases]


def test_every_op_has_cases() -> None:
    assert set(CASES) == set(registered_ops())


def _randomize_bn(m: nn.Module) -> None:
    """Non-trivial BN statistics, so folding BN into convs is actually checked."""
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)


@pytest.mark.parametrize(("op", "params", "shape"), ALL, ids=[f"{o}-{i}" for i, (o, _, _) in enumerate(ALL)])
def test_op_builds_shapes_exports_and_matches_ort(op: str, params: dict, shape: tuple[int, int, int]) -> None:
    call = make_call(op, params, shape)
    module = call.build().eval()
    _randomize_bn(module)
    n_in = int(params.get("n", 1))
    torch.manual_seed(0)
    xs = [torch.randn(2, *shape) for _ in range(n_in)]
    with torch.no_grad():
        y = module(*xs)
    want = call.out_shape
    if op == "head":
        assert tuple(y.shape) == (2, want[0])
    else:
        assert tuple(y.shape) == (2, *want)
    onx = export_onnx(module, [shape] * n_in, batch=2)
    sess = ort.InferenceSession(onx, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {f"x{i}": x.numpy() for i, x in enumerate(xs)})
    np.testing.assert_allclose(got, y.numpy(), atol=1e-4, rtol=1e-4)
    # the registry's leading_relu (which the LUT's ReLU roles rest on) says what the graph does
    graph = onnx.load_from_string(onx).graph
    readers = [n.op_type for n in graph.node if "x0" in n.input]
    assert call.leading_relu == (readers == ["Relu"]), readers
    # ... and its trailing_conv (which the price of a DARTS node's sum rests on)
    writers = [n.op_type for n in graph.node if graph.output[0].name in n.output]
    assert call.trailing_conv == (writers in (["Conv"], ["BatchNormalization"])), writers
    # ... and whether it is weightless (ONNX Runtime merges two such calls on one tensor)
    assert call.weightless == (not list(module.parameters()) and not list(module.buffers()))


def test_key_is_canonical() -> None:
    a = make_call("mbconv", {**MB, "out": 16, "k": 3, "e": 6, "stride": 1}, (16, 8, 8))
    b = make_call("mbconv", {"stride": 1.0, "e": 6.0, "k": 3, "out": 16, "groups": 1, "act": "relu6"}, (16, 8, 8))
    assert a == b and a.key == b.key
    assert a.key == "mbconv|act=relu6,e=6,groups=1,k=3,out=16,stride=1|16x8x8"
    c = make_call("mbconv", {**MB, "out": 16, "k": 3, "e": 2.5, "stride": 1}, (16, 8, 8))
    assert "e=2.5" in c.key


@pytest.mark.parametrize(("op", "params", "shape"), ALL[::3])
def test_parse_key_round_trips(op: str, params: dict, shape: tuple[int, int, int]) -> None:
    call = make_call(op, params, shape)
    assert parse_key(call.key) == call


def test_unknown_op_lists_registered() -> None:
    with pytest.raises(OpError, match=r"registered ops: .*mbconv"):
        get_op("mbconv2")


@pytest.mark.parametrize(
    ("op", "params", "match"),
    [
        ("mbconv", {"out": 8, "k": 3, "e": 6, "stride": 1, "act": "relu6"}, "missing groups"),
        ("skip", {"out": 8, "stride": 1, "k": 3}, "unexpected k"),
        ("mbconv", {**MB, "out": 8, "k": 4, "e": 6, "stride": 1}, "odd"),
        ("mbconv", {**MB, "out": 8, "k": 3, "e": 6, "stride": 3}, "stride must be 1 or 2"),
        ("mbconv", {"act": "relu", "groups": 3, "out": 8, "k": 3, "e": 1, "stride": 1}, "groups=3 must divide"),
        ("zero", {"out": 16, "stride": 1}, "keep its shape"),
        ("factorized_reduce", {"out": 8}, "even height"),
        ("conv_bn_act", {"out": 8, "k": 3, "stride": 1, "act": "gelu"}, "act must be"),
    ],
)
def test_bad_params_are_one_clear_error(op: str, params: dict, match: str) -> None:
    with pytest.raises(OpError, match=match):
        make_call(op, params, (8, 7, 7))


@pytest.mark.parametrize("key", ["mbconv|k=3", "nope|stride=1|4x8x8", "skip|out=8,stride=1|4x8", "skip|out|4x8x8"])
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(OpError):
        parse_key(key)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(OpError, match="already registered"):
        register_op("mbconv", params=(), out_shape=lambda s, p: s)(nn.Identity)


def test_free_ops_are_not_priced() -> None:
    assert not make_call("zero", {"out": 8, "stride": 1}, (8, 4, 4)).priced
    assert not make_call("none", {"stride": 1}, (8, 4, 4)).priced
    assert isinstance(make_call("sep_conv_3x3", {"stride": 1}, (8, 4, 4)), OpCall)
    assert make_call("sep_conv_3x3", {"stride": 1}, (8, 4, 4)).priced
