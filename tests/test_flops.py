"""MAC and parameter counts agree with a hand count for known networks."""

from __future__ import annotations

import random

import pytest

from hwnas.arch import Arch
from hwnas.flops import count
from hwnas.space import builtin_spaces, load_space


def test_mbconv_macs_match_a_hand_count() -> None:
    # stem conv 3->8, 3x3, stride 2 on 16x16 -> 8x8 output; one MBConv e=1 k=3 8->8; head 8->4 classes
    arch = Arch(
        "blocks", "hand", (3, 16, 16),
        {
            "stem": {"op": "conv_bn_act", "out": 8, "k": 3, "stride": 2, "act": "relu"},
            "layers": [{"op": "mbconv", "out": 8, "k": 3, "e": 1, "stride": 1, "groups": 1, "act": "relu"}],
            "head": {"op": "head", "mix": 0, "classes": 4, "act": "none"},
        },
    )  # fmt: skip
    stem = 8 * 8 * 8 * 3 * 9  # out pixels x out channels x (in channels x k x k)
    dw = 8 * 8 * 8 * 9
    pw = 8 * 8 * 8 * 8
    fc = 8 * 4
    c = count(arch)
    # fvcore also counts the BNs and the global pool (about 16% here); allow those on top
    assert stem + dw + pw + fc <= c.macs <= (stem + dw + pw + fc) * 1.2
    assert c.params == 3 * 8 * 9 + 2 * 8 + 8 * 9 + 2 * 8 + 8 * 8 + 2 * 8 + 8 * 4 + 4


@pytest.mark.parametrize("name", builtin_spaces())
def test_every_space_is_counted(name: str) -> None:
    sp = load_space(name)
    if sp.kind == "blocks":
        sp = sp.with_params(input_size=64)
    c = count(sp.sample(random.Random(0)))
    assert c.macs > 0 and c.params > 0
