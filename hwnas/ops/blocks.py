"""Block ops of the mobile spaces (ProxylessNAS, FBNet): stem, MBConv, zero, skip, head.

Each op is one fused unit as it runs on a device (conv + BN + activation + residual), which is
the unit the profiler times.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hwnas.ops.registry import OpError, Shape, register_op

ACTS = ("relu", "relu6", "none")


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "relu6":
        return nn.ReLU6(inplace=False)
    if name == "none":
        return nn.Identity()
    raise OpError(f"unknown activation {name!r}; expected one of {', '.join(ACTS)}")


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv or pool with ``stride``."""
    return (size - 1) // stride + 1


def _strided(shape: Shape, p: dict[str, Any]) -> Shape:
    s = int(p["stride"])
    return (int(p["out"]), conv_out(shape[1], s), conv_out(shape[2], s))


def _check_conv(shape: Shape, p: dict[str, Any]) -> None:
    if int(p["stride"]) not in (1, 2):
        raise OpError(f"stride must be 1 or 2, got {p['stride']}")
    if int(p["out"]) < 1:
        raise OpError(f"out channels must be positive, got {p['out']}")
    if "k" in p and (int(p["k"]) < 1 or int(p["k"]) % 2 == 0):
        raise OpError(f"kernel size must be odd and positive, got {p['k']}")
    if "act" in p and p["act"] not in ACTS:
        raise OpError(f"act must be one of {', '.join(ACTS)}, got {p['act']!r}")


@register_op(
    "conv_bn_act",
    params=("act", "k", "out", "stride"),
    out_shape=_strided,
    check=_check_conv,
    text_params=("act",),
    trailing_conv=lambda s, p: p["act"] == "none",
)
class ConvBNAct(nn.Module):
    """Conv k x k (same padding) + BatchNorm + activation: the stem of every space."""

    def __init__(self, c_in: int, *, out: int, k: int, stride: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, out, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(out)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def mbconv_mid(c_in: int, e: float, groups: int) -> int:
    """Hidden width of an inverted residual: ``round(c_in * e)``, rounded up to a multiple of groups."""
    mid = max(1, round(c_in * float(e)))
    return -(-mid // groups) * groups


def _check_mbconv(shape: Shape, p: dict[str, Any]) -> None:
    _check_conv(shape, p)
    g = int(p["groups"])
    if g < 1:
        raise OpError(f"groups must be >= 1, got {g}")
    if float(p["e"]) <= 0:
        raise OpError(f"expand ratio must be positive, got {p['e']}")
    if shape[0] % g or int(p["out"]) % g:
        raise OpError(f"groups={g} must divide input ({shape[0]}) and output ({p['out']}) channels")


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle, used after a grouped 1x1 conv (FBNet's g2 blocks)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


@register_op(
    "mbconv",
    params=("act", "e", "groups", "k", "out", "stride"),
    out_shape=_strided,
    check=_check_mbconv,
    text_params=("act",),
    real_params=("e",),
    trailing_conv=lambda s, p: not (p["stride"] == 1 and s[0] == p["out"]),  # else the residual's Add
)
class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] + k x k depthwise + 1x1 project, residual when shapes match.

    ``e == 1`` skips the expand conv (MobileNetV2/ProxylessNAS). ``groups > 1`` makes both 1x1
    convs grouped and shuffles channels after the expand (FBNet's ``_g2`` candidates).
    """

    def __init__(self, c_in: int, *, out: int, k: int, e: float, stride: int, groups: int, act: str) -> None:
        super().__init__()
        mid = mbconv_mid(c_in, e, groups) if float(e) != 1 else c_in
        layers: list[nn.Module] = []
        if float(e) != 1:
            layers += [nn.Conv2d(c_in, mid, 1, 1, 0, groups=groups, bias=False), nn.BatchNorm2d(mid), make_act(act)]
            if groups > 1:
                layers.append(ChannelShuffle(groups))
        layers += [
            nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            make_act(act),
            nn.Conv2d(mid, out, 1, 1, 0, groups=groups, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == out
        self._expands = float(e) != 1

    @property
    def expand(self) -> nn.Conv2d | None:
        """The 1x1 expand conv, or None for ``e == 1`` (the depthwise conv reads the block input)."""
        return self.body[0] if self._expands else None  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def _same(shape: Shape, p: dict[str, Any]) -> Shape:
    return shape


def _check_zero(shape: Shape, p: dict[str, Any]) -> None:
    if int(p["stride"]) != 1 or int(p["out"]) != shape[0]:
        raise OpError(
            f"zero drops a block, so the block must keep its shape (stride 1, out == {shape[0]}); "
            f"got stride {p['stride']}, out {p['out']}"
        )


@register_op("zero", params=("out", "stride"), out_shape=_same, check=_check_zero, priced=False, weightless=True)
class ZeroBlock(nn.Identity):
    """The block is dropped: its output is its input (ProxylessNAS's zero op in a residual block)."""

    def __init__(self, c_in: int, *, out: int, stride: int) -> None:
        super().__init__()


@register_op(
    "skip",
    params=("out", "stride"),
    out_shape=_strided,
    check=_check_conv,
    trailing_conv=lambda s, p: not (p["stride"] == 1 and s[0] == p["out"]),  # the projection
    weightless=lambda s, p: p["stride"] == 1 and s[0] == p["out"],  # the identity
)
class Skip(nn.Module):
    """FBNet's skip: identity when the shape is kept, else a 1x1 conv + BN projection."""

    def __init__(self, c_in: int, *, out: int, stride: int) -> None:
        super().__init__()
        if stride == 1 and c_in == out:
            self.proj: nn.Module = nn.Identity()
        else:
            self.proj = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, 0, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _head_shape(shape: Shape, p: dict[str, Any]) -> Shape:
    return (int(p["classes"]), 1, 1)


def _check_head(shape: Shape, p: dict[str, Any]) -> None:
    if int(p["classes"]) < 1 or int(p["mix"]) < 0:
        raise OpError(f"head needs classes >= 1 and mix >= 0, got classes={p['classes']} mix={p['mix']}")
    if p["act"] not in ACTS:
        raise OpError(f"act must be one of {', '.join(ACTS)}, got {p['act']!r}")


@register_op("head", params=("act", "classes", "mix"), out_shape=_head_shape, check=_check_head, text_params=("act",))
class Head(nn.Module):
    """[1x1 conv to ``mix`` channels + BN + act] + global average pool + linear classifier.

    ``mix == 0`` omits the 1x1 feature-mix conv (the DARTS classifier). Output: ``(N, classes)``.
    """

    def __init__(self, c_in: int, *, mix: int, classes: int, act: str) -> None:
        super().__init__()
        if mix:
            self.mix: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, mix, 1, 1, 0, bias=False), nn.BatchNorm2d(mix), make_act(act)
            )
            c_in = mix
        else:
            self.mix = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.mix(x)), 1))
