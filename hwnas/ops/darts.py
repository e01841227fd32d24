"""The DARTS cell ops (Liu et al., 2019), in DARTS's ReLU-conv-BN order.

Edge ops keep the channel count; ``stride`` is 2 on the edges that leave a reduction cell's
inputs. ``relu_conv_bn`` and ``factorized_reduce`` are the cell preprocessing; ``add`` sums a
node's inputs and ``concat`` joins the intermediate nodes into the cell output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hwnas.ops.blocks import conv_out
from hwnas.ops.registry import OpError, Shape, register_op

#: The eight DARTS candidates, in the order of the DARTS paper's PRIMITIVES.
DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


def _edge_shape(shape: Shape, p: dict[str, Any]) -> Shape:
    s = int(p["stride"])
    return (shape[0], conv_out(shape[1], s), conv_out(shape[2], s))


def _check_stride(shape: Shape, p: dict[str, Any]) -> None:
    if int(p["stride"]) not in (1, 2):
        raise OpError(f"stride must be 1 or 2, got {p['stride']}")


def _check_even(shape: Shape, p: dict[str, Any]) -> None:
    if shape[1] % 2 or shape[2] % 2:
        raise OpError(
            f"factorized reduce needs an even height and width, got {shape[1]}x{shape[2]}; "
            "choose an input size divisible by 4"
        )


def _check_edge(shape: Shape, p: dict[str, Any]) -> None:
    _check_stride(shape, p)


def _check_skip(shape: Shape, p: dict[str, Any]) -> None:
    _check_stride(shape, p)
    if int(p["stride"]) == 2:
        _check_even(shape, p)


def _edge(name: str, **kw: Any):
    return register_op(name, params=("stride",), out_shape=_edge_shape, check=kw.pop("check", _check_edge), **kw)


@_edge("none", priced=False, weightless=True)
class NoneOp(nn.Module):
    """DARTS's ``none``: zeros of the output shape (the edge is absent in a derived cell)."""

    def __init__(self, c_in: int, *, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


@_edge("max_pool_3x3", weightless=True)
class MaxPool3x3(nn.MaxPool2d):
    """3x3 max pooling, padding 1."""

    def __init__(self, c_in: int, *, stride: int) -> None:
        super().__init__(3, stride=stride, padding=1)


@_edge("avg_pool_3x3", weightless=True)
class AvgPool3x3(nn.AvgPool2d):
    """3x3 average pooling, padding 1, padding not counted (as DARTS)."""

    def __init__(self, c_in: int, *, stride: int) -> None:
        super().__init__(3, stride=stride, padding=1, count_include_pad=False)


class FactorizedReduceModule(nn.Module):
    """ReLU + two stride-2 1x1 convs on offset grids, concatenated, + BN (halves H and W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise OpError(f"factorized reduce needs an even output channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, 2, 0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, 2, 0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


@_edge(
    "skip_connect",
    check=_check_skip,
    leading_relu=lambda p: p["stride"] == 2,
    trailing_conv=lambda s, p: p["stride"] == 2,
    weightless=lambda s, p: p["stride"] == 1,
)
class SkipConnect(nn.Module):
    """Identity at stride 1; factorized reduce at stride 2."""

    def __init__(self, c_in: int, *, stride: int) -> None:
        super().__init__()
        self.op = nn.Identity() if stride == 1 else FactorizedReduceModule(c_in, c_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class _SepConv(nn.Module):
    """Separable conv applied twice: (ReLU, depthwise k x k, pointwise, BN) x 2."""

    kernel = 3

    def __init__(self, c_in: int, *, stride: int) -> None:
        super().__init__()
        k, p = self.kernel, self.kernel // 2
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride, p, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, 1, p, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_in),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


@_edge("sep_conv_3x3", leading_relu=True, trailing_conv=True)
class SepConv3x3(_SepConv):
    """Separable 3x3 conv, applied twice."""

    kernel = 3


@_edge("sep_conv_5x5", leading_relu=True, trailing_conv=True)
class SepConv5x5(_SepConv):
    """Separable 5x5 conv, applied twice."""

    kernel = 5


class _DilConv(nn.Module):
    """ReLU + dilated (2) depthwise k x k + pointwise + BN."""

    kernel = 3

    def __init__(self, c_in: int, *, stride: int) -> None:
        super().__init__()
        k = self.kernel
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride, k - 1, dilation=2, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_in),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


@_edge("dil_conv_3x3", leading_relu=True, trailing_conv=True)
class DilConv3x3(_DilConv):
    """Dilated separable 3x3 conv (dilation 2, receptive field 5x5)."""

    kernel = 3


@_edge("dil_conv_5x5", leading_relu=True, trailing_conv=True)
class DilConv5x5(_DilConv):
    """Dilated separable 5x5 conv (dilation 2, receptive field 9x9)."""

    kernel = 5


def _pre_shape(shape: Shape, p: dict[str, Any]) -> Shape:
    s = int(p["stride"])
    return (int(p["out"]), conv_out(shape[1], s), conv_out(shape[2], s))


def _check_pre(shape: Shape, p: dict[str, Any]) -> None:
    _check_stride(shape, p)
    if int(p["k"]) < 1 or int(p["k"]) % 2 == 0:
        raise OpError(f"kernel size must be odd and positive, got {p['k']}")


@register_op(
    "relu_conv_bn",
    params=("k", "out", "stride"),
    out_shape=_pre_shape,
    check=_check_pre,
    leading_relu=True,
    trailing_conv=True,
)
class ReLUConvBN(nn.Module):
    """ReLU + conv k x k + BN: DARTS's cell preprocessing (k=1)."""

    def __init__(self, c_in: int, *, out: int, k: int, stride: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False), nn.Conv2d(c_in, out, k, stride, k // 2, bias=False), nn.BatchNorm2d(out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _fr_shape(shape: Shape, p: dict[str, Any]) -> Shape:
    return (int(p["out"]), shape[1] // 2, shape[2] // 2)


@register_op(
    "factorized_reduce", params=("out",), out_shape=_fr_shape, check=_check_even, leading_relu=True, trailing_conv=True
)
class FactorizedReduce(FactorizedReduceModule):
    """Factorized reduce as preprocessing of s0 when the previous cell reduced."""

    def __init__(self, c_in: int, *, out: int) -> None:
        super().__init__(c_in, out)


def _n_same(shape: Shape, p: dict[str, Any]) -> Shape:
    return shape


def _check_n(shape: Shape, p: dict[str, Any]) -> None:
    if int(p["n"]) < 2:
        raise OpError(f"n must be >= 2, got {p['n']}")


# The op of a DARTS node's sum, by name: the walker writes it, the pricing finds it (one place).
NODE_SUM = "add"


@register_op(NODE_SUM, params=("n",), out_shape=_n_same, check=_check_n, arity=0, weightless=True)
class AddN(nn.Module):
    """Sum of ``n`` tensors of the input shape (a DARTS node)."""

    def __init__(self, c_in: int, *, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


def _cat_shape(shape: Shape, p: dict[str, Any]) -> Shape:
    return (shape[0] * int(p["n"]), shape[1], shape[2])


@register_op("concat", params=("n",), out_shape=_cat_shape, check=_check_n, arity=0, weightless=True)
class ConcatN(nn.Module):
    """Channel concat of ``n`` tensors of the input shape (a DARTS cell's output)."""

    def __init__(self, c_in: int, *, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)
