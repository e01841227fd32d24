"""Every shipped space loads, expands, samples valid nets, and its key set covers what it can ask for."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from hwnas.arch import Arch
from hwnas.space import SPACES_DIR, SpaceError, builtin_spaces, expand_grid, load_space

SPACES = builtin_spaces()


def test_the_four_named_spaces_ship() -> None:
    assert {"darts", "proxyless", "fbnet", "tiny"} <= set(SPACES)


@pytest.mark.parametrize("name", SPACES)
def test_space_keys_cover_every_sampled_arch(name: str) -> None:
    sp = load_space(name)
    keys = {c.key for c in sp.calls()}
    assert len(keys) == len(sp.calls()), "calls() must not repeat a key"
    rng = random.Random(0)
    for _ in range(30):
        arch = sp.sample(rng)
        assert {c.key for c in arch.plan.priced_calls()} <= keys


@pytest.mark.parametrize("name", SPACES)
def test_sampled_arch_builds_and_runs(name: str) -> None:
    sp = load_space(name)
    size = 32 if sp.kind == "blocks" else sp.input_size  # small input: a behaviour test, not a benchmark
    sp = sp.with_params(input_size=size)
    arch = sp.sample(random.Random(1))
    net = arch.build().eval()
    with torch.no_grad():
        y = net(torch.randn(2, *arch.input))
    assert tuple(y.shape) == (2, sp.num_classes)


@pytest.mark.parametrize("name", SPACES)
def test_input_size_and_width_change_the_keys(name: str) -> None:
    sp = load_space(name)
    small = sp.with_params(input_size=sp.input_size // 2 if sp.kind == "blocks" else sp.input_size * 2)
    assert {c.key for c in small.calls()}.isdisjoint({c.key for c in sp.calls()})
    wide = sp.with_params(width_mult=2.0)
    assert {c.key for c in wide.calls()} != {c.key for c in sp.calls()}


def test_proxyless_shape() -> None:
    sp = load_space("proxyless")
    slots = sp.slots()
    assert len(slots) == 22  # the fixed MBConv1 + 4+4+4+4+4+1 searchable layers
    assert [s.out for s in slots[1:]] == [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    first, rest = slots[1], slots[2]
    assert "zero" not in [c.op for c in first.choices]  # first layer of a stage changes shape
    assert sorted(c.label for c in rest.choices) == sorted(
        [f"mbconv_k{k}_e{e}" for k in (3, 5, 7) for e in (3, 6)] + ["zero"]
    )
    assert sp.stem()["out"] == 32 and sp.head()["mix"] == 1280


def test_fbnet_shape() -> None:
    sp = load_space("fbnet")
    slots = sp.slots()
    assert len(slots) == 22
    assert all(len(s.choices) == 9 for s in slots)
    assert {c.label for c in slots[0].choices} == {
        "mbconv_k3_e1", "mbconv_k3_e1_g2", "mbconv_k3_e3", "mbconv_k3_e6",
        "mbconv_k5_e1", "mbconv_k5_e1_g2", "mbconv_k5_e3", "mbconv_k5_e6", "skip",
    }  # fmt: skip


def test_darts_shape() -> None:
    sp = load_space("darts")
    arch = sp.sample(random.Random(0))
    assert arch.body["C"] == 16 and arch.body["layers"] == 8 and arch.body["reduce_at"] == [2, 5]
    assert len(arch.body["genotype"]["normal"]) == 8  # 4 nodes x 2 inputs
    ops = {n.call.op for n in arch.plan.nodes}
    assert {"relu_conv_bn", "factorized_reduce", "add", "concat", "head"} <= ops


def test_grid_normaliser_expands_and_dedups() -> None:
    ch = expand_grid(
        [{"op": "mbconv", "k": [3, 5], "e": [3, 6]}, {"op": "mbconv", "k": 3, "e": 3.0}],
        {"groups": 1, "act": "relu"},
        "t",
    )
    assert [c.label for c in ch] == ["mbconv_k3_e3", "mbconv_k3_e6", "mbconv_k5_e3", "mbconv_k5_e6"]


BAD_SPACES = {
    "unknown op": ('kind = "blocks"\n[stem]\nout = 8\n[[stages]]\nout = 8\ndepth = 1\ncandidates = [{ op = "convx" }]\n', "unknown op 'convx'"),
    "empty candidates": ('kind = "blocks"\n[stem]\nout = 8\n[[stages]]\nout = 8\ndepth = 1\ncandidates = []\n', "non-empty list"),
    "zero only on a shape change": ('kind = "blocks"\n[stem]\nout = 8\n[[stages]]\nout = 16\ndepth = 1\nstride = 2\ncandidates = [{ op = "zero" }]\n', "zero"),
    "bad stride": ('kind = "blocks"\n[stem]\nout = 8\n[[stages]]\nout = 8\ndepth = 1\nstride = 3\ncandidates = [{ op = "skip" }]\n', "stride must be 1 or 2"),
    "bad kind": ('kind = "graph"\n', "'kind' must be"),
    "missing stages": ('kind = "blocks"\n[stem]\nout = 8\n', "missing field"),
    "unknown cell op": ('kind = "cells"\nC = 4\nlayers = 3\nnodes = 2\nops = ["conv_9x9"]\n', "unknown cell op"),
    "odd size for a reduction": ('kind = "cells"\ninput_size = 30\nC = 4\nlayers = 3\nnodes = 2\nops = ["skip_connect"]\n', "even height"),
    "not toml": ("kind = = 1\n", "not valid TOML"),
    "param the stage owns": ('kind = "blocks"\n[stem]\nout = 8\n[[stages]]\nout = 8\ndepth = 1\ncandidates = [{ op = "skip", stride = 2 }]\n', "does not take stride"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_files_name_the_problem(case: str, tmp_path: Path) -> None:
    text, match = BAD_SPACES[case]
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(SpaceError, match=match) as e:
        load_space(p)
    assert str(p) in str(e.value)


def test_unknown_space_lists_shipped() -> None:
    with pytest.raises(SpaceError, match="shipped spaces: darts"):
        load_space("mobilenet")


def test_bad_overrides() -> None:
    with pytest.raises(SpaceError, match="input size"):
        load_space("tiny", input_size=0)
    with pytest.raises(SpaceError, match="width multiplier"):
        load_space("tiny", width_mult=-1.0)


@pytest.mark.parametrize("name", ["proxyless", "fbnet", "tiny"])
def test_picks_inverts_blocks_arch(name: str) -> None:
    """The choices an arch was built from come back, slot by slot (zero where a layer was
    dropped, also among identical slots); without the recorded labels the same network comes
    back; an arch of another space is refused naming the layer that does not fit."""
    sp = load_space(name)
    rng = random.Random(3)
    for _ in range(20):
        arch = sp.sample(rng)
        picks = sp.picks(arch)
        assert [c.label for c in picks] == arch.info["choices"]
        assert sp.blocks_arch(picks).to_dict() == arch.to_dict()
        bare = Arch(arch.kind, arch.space, arch.input, arch.body, {})  # written by hand: no labels
        assert sp.blocks_arch(sp.picks(bare)).body == arch.body
    other = load_space("fbnet" if name != "fbnet" else "proxyless")
    with pytest.raises(SpaceError, match="does not fit the space"):
        sp.picks(other.sample(rng))
    # the report loads the space file as shipped: another head (10 classes, 1 channel) still aligns
    shaped = sp.with_params(in_channels=1, num_classes=10)
    for _ in range(20):
        arch = shaped.sample(rng)
        assert [c.label for c in sp.picks(arch)] == arch.info["choices"]


def test_huge_integers_are_not_numbers(tmp_path: Path) -> None:
    from hwnas.checks import is_int, is_number

    assert not is_number(10**400) and is_int(10**400, 1)  # a count may be big; a float cannot hold it
    assert not is_number(True) and not is_number(float("nan")) and is_number(3) and is_number(2.5)
    text = (SPACES_DIR / "tiny.toml").read_text()
    bad = tmp_path / "huge.toml"
    bad.write_text(text.replace("width_mult = 1.0", f"width_mult = {10**400}"))
    with pytest.raises(SpaceError, match="'width_mult' must be a positive number"):
        load_space(bad)
    with pytest.raises(SpaceError, match="width multiplier must be positive"):
        load_space("tiny", width_mult=10**400)
