"""The arch JSON: plain data that round-trips, and precise errors for every malformed field."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from hwnas.arch import Arch, ArchError
from hwnas.space import builtin_spaces, load_space


@pytest.mark.parametrize("name", builtin_spaces())
def test_round_trip_is_exact(name: str, tmp_path: Path) -> None:
    arch = load_space(name).sample(random.Random(3)).with_info(seed=3, note="x")
    p = tmp_path / "a.json"
    p.write_text(arch.to_json())
    back = Arch.load(p)
    assert back.to_dict() == arch.to_dict()
    assert back.plan == arch.plan
    assert json.loads(p.read_text())["schema"] == "hwnas.arch/1"


def test_zero_layers_are_absent() -> None:
    sp = load_space("proxyless")
    slots = sp.slots()
    picks = [next((c for c in s.choices if c.op == "zero"), s.choices[0]) for s in slots]
    arch = sp.blocks_arch(picks)
    assert len(arch.body["layers"]) == sum(1 for c in picks if c.op != "zero")
    assert all(layer["op"] != "zero" for layer in arch.body["layers"])


def _blocks() -> dict:
    return load_space("tiny").sample(random.Random(0)).to_dict()


def _cells() -> dict:
    return load_space("tiny_darts").sample(random.Random(0)).to_dict()


def _set(d: dict, path: list, value) -> dict:
    d = copy.deepcopy(d)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


BAD = [
    ("schema", lambda: _set(_blocks(), ["schema"], "hwnas.arch/0"), "schema"),
    ("kind", lambda: _set(_blocks(), ["kind"], "graph"), "'kind' must be"),
    ("missing head", lambda: _set(_blocks(), ["head"], KeyError), "missing field"),
    ("extra field", lambda: {**_blocks(), "extra": 1}, "unexpected field"),
    ("unknown op", lambda: _set(_blocks(), ["layers", 0, "op"], "mbconv9"), r"layers\[0\]: unknown op"),
    ("bad stride", lambda: _set(_blocks(), ["layers", 0, "stride"], 3), r"layers\[0\]: stride"),
    ("missing param", lambda: _set(_blocks(), ["layers", 0, "k"], KeyError), "missing k"),
    ("bad input", lambda: _set(_blocks(), ["input"], [3, 32]), "'input' must be"),
    ("head op", lambda: _set(_blocks(), ["head", "op"], "skip"), "head: op must be 'head'"),
    ("layers not list", lambda: _set(_blocks(), ["layers"], {"a": 1}), "'layers' must be a list"),
    ("none kept", lambda: _set(_cells(), ["genotype", "normal", 0, 0], "none"), "'none' is not kept"),
    ("input out of range", lambda: _set(_cells(), ["genotype", "reduce", 3], ["sep_conv_3x3", 5]), "must be in"),
    ("odd edges", lambda: _set(_cells(), ["genotype", "normal"], [["sep_conv_3x3", 0]]), "two per node"),
    ("block op in cell", lambda: _set(_cells(), ["genotype", "normal", 0, 0], "mbconv"), "not a cell edge op"),
    ("reduce_at range", lambda: _set(_cells(), ["reduce_at"], [7]), "reduce_at"),
    ("C not int", lambda: _set(_cells(), ["C"], "16"), "'C' must be a positive integer"),
    ("not an object", lambda: [1, 2], "expected a JSON object"),
]


@pytest.mark.parametrize(("case", "make", "match"), BAD, ids=[b[0] for b in BAD])
def test_malformed_arch_names_the_field(case: str, make, match: str) -> None:
    with pytest.raises(ArchError, match=match):
        Arch.from_dict(make(), "a.json")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ArchError, match="no such arch file"):
        Arch.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": ')
    with pytest.raises(ArchError, match="not valid JSON"):
        Arch.load(bad)
