"""The LUT: round trip, the prediction formula, missing keys, and every kind of bad file."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from pathlib import Path

import pytest
from conftest import LEGACY_LUT

from hwnas.lut import LUT, LutError, meta_path
from hwnas.space import load_space


def test_round_trip_keeps_every_key_once(tiny_lut: LUT, tiny_lut_path: Path) -> None:
    space = load_space("tiny")
    assert sorted(tiny_lut.table["key"]) == sorted(c.key for c in space.calls())
    assert tiny_lut.table["key"].is_unique
    assert (tiny_lut.table["latency_ms"] >= 0).all()
    assert tiny_lut.meta["csv_sha256"] == tiny_lut.sha256
    again = LUT.load(tiny_lut_path)
    assert again.latency == tiny_lut.latency


def test_a_saved_lut_predicts_exactly_what_its_files_do(tiny_lut: LUT, tmp_path: Path) -> None:
    """The CSV keeps 6 significant digits; the object that wrote it (e.g. what ``profile``
    returns) must not go on predicting with more, or an in-process budget and the CLI's differ."""
    rng = random.Random(0)
    rows = tiny_lut.table.to_dict("records")
    for r in rows:
        r["latency_ms"] = float(r["latency_ms"]) * (1 + rng.random() / 7)  # digits beyond the sixth
    lut = LUT.from_rows(rows, {k: v for k, v in tiny_lut.meta.items() if k not in ("schema", "csv_sha256")})
    assert any(len(repr(v)) > 12 for v in lut.latency.values())
    lut.save(tmp_path / "t.csv")
    again = LUT.load(tmp_path / "t.csv")
    assert lut.latency == again.latency and lut.sha256 == again.sha256
    sp, r2 = load_space("tiny"), random.Random(1)
    for _ in range(20):
        a = sp.sample(r2)
        assert lut.predict(a).total_ms == again.predict(a).total_ms


def test_a_lut_from_before_the_relu_roles_loads_as_it_was() -> None:
    """A LUT of 23 November 2026 (the one the quick-start run in tests/data searched with)
    predates the shared-ReLU columns: it loads, prices nothing by role, and keeps the hash the arch
    files and runs priced by it recorded."""
    path = LEGACY_LUT
    assert "shared_ms" not in path.read_text().splitlines()[0]
    lut = LUT.load(path)
    assert lut.shared == {} and lut.table["shared_ms"].isna().all()
    assert lut.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == lut.meta["csv_sha256"]


def test_metadata_records_provenance(tiny_lut: LUT) -> None:
    m = tiny_lut.meta
    for f in (
        "device",
        "backend",
        "provider",
        "versions",
        "threads",
        "batch",
        "rounds",
        "input_size",
        "date",
        "schema",
        "timing",
        "settings",
        "model",
        "profile_seconds",
    ):
        assert f in m, f
    assert m["versions"]["onnxruntime"] and m["versions"]["torch"]
    assert m["settings"]["onnxruntime"]["intra_op_spinning"] is False
    assert m["model"]["method"] == "context" and len(m["model"]["nets"]) >= 3
    assert m["settings"]["speed_correction"]["window"] >= 1
    assert m["machine_speed"] is None  # one round: nothing to judge the machine's speed by


def test_prediction_is_the_documented_formula(tiny_lut: LUT) -> None:
    arch = load_space("tiny").sample(random.Random(5))
    p = tiny_lut.predict(arch)
    s = math.fsum(tiny_lut.latency[c.key] for c in arch.plan.priced_calls())
    assert p.sum_ms == pytest.approx(s)
    assert p.total_ms == pytest.approx(tiny_lut.scale * s + tiny_lut.overhead_ms)
    assert len(p.blocks) == len(arch.plan.priced_calls())


def test_missing_keys_are_listed_with_the_command(tiny_lut: LUT) -> None:
    arch = load_space("tiny").with_params(width_mult=2.0).sample(random.Random(0))
    with pytest.raises(LutError, match=r"lacks \d+ key\(s\).*hwnas profile --space tiny --input-size 32") as e:
        tiny_lut.predict(arch)
    assert "mbconv|" in str(e.value) or "conv_bn_act|" in str(e.value)


def test_other_input_size_is_named(tiny_lut: LUT) -> None:
    arch = load_space("tiny", input_size=64).sample(random.Random(0))
    with pytest.raises(LutError, match="measured at input size 32, the network takes 64"):
        tiny_lut.predict(arch)


def test_expectations_are_checked(tiny_lut_path: Path) -> None:
    with pytest.raises(LutError, match="threads=1 but 2 was asked"):
        LUT.load(tiny_lut_path, expect={"threads": 2})


def _copy(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / "lut.csv"
    shutil.copy(src, dst)
    shutil.copy(meta_path(src), meta_path(dst))
    return dst


def _edit_csv(p: Path, fn) -> None:
    text = fn(p.read_text())
    p.write_text(text)
    meta = json.loads(meta_path(p).read_text())
    meta.pop("csv_sha256")  # a hand-edited table without a recorded hash is validated on its own
    meta_path(p).write_text(json.dumps(meta))


def _set_first_latency(value: str):
    def fn(text: str) -> str:
        lines = text.splitlines()
        head = lines[0].split(",")
        i = head.index("latency_ms")
        row = lines[1].split(",")
        # key has commas inside its params; count from the end
        j = i - len(head)
        row[j] = value
        lines[1] = ",".join(row)
        return "\n".join(lines) + "\n"

    return fn


BAD_CSV = {
    "missing column": (lambda t: t.replace("latency_ms", "lat_ms", 1), "missing column"),
    "non-numeric": (_set_first_latency("fast"), "not a number"),
    "negative": (_set_first_latency("-1"), ">= 0"),
    "nan": (_set_first_latency("nan"), "finite"),
    "infinite": (_set_first_latency("inf"), "finite"),
    "truncated": (lambda t: t[: t.rindex("\n", 0, len(t) // 2) + 5], "cut off"),  # mid-line
    "bad key": (lambda t: t.replace("mbconv|", "mbconv9|", 1), "unknown op"),
    "conflicting duplicate": (lambda t: t + _set_first_latency("9.9")(t).splitlines()[1] + "\n", "more than once"),
    "empty": (lambda t: "", "not a readable CSV"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_CSV))
def test_bad_csv_is_one_clear_error(case: str, tiny_lut_path: Path, tmp_path: Path) -> None:
    p = _copy(tiny_lut_path, tmp_path)
    fn, match = BAD_CSV[case]
    _edit_csv(p, fn)
    with pytest.raises(LutError, match=match) as e:
        LUT.load(p)
    assert str(p) in str(e.value)


def test_hand_edit_against_recorded_hash_is_caught(tiny_lut_path: Path, tmp_path: Path) -> None:
    p = _copy(tiny_lut_path, tmp_path)
    p.write_text(p.read_text().replace("\n", "\n", 1) + "")
    lines = p.read_text().splitlines()
    p.write_text("\n".join([*lines[:-1]]) + "\n")  # drop a row, keep the old metadata
    with pytest.raises(LutError, match="does not match its metadata"):
        LUT.load(p)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: None, "metadata .* is missing"),
        (lambda m: {**m, "schema": "hwnas.lut/0"}, "schema"),
        (lambda m: {k: v for k, v in m.items() if k != "threads"}, "missing field"),
        (lambda m: {**m, "model": {"scale": "x", "overhead_ms": 0}}, "finite"),
        (lambda m: "{not json", "not valid JSON"),
    ],
)
def test_bad_metadata(edit, match: str, tiny_lut_path: Path, tmp_path: Path) -> None:
    p = _copy(tiny_lut_path, tmp_path)
    meta = json.loads(meta_path(p).read_text())
    new = edit(meta)
    if new is None:
        meta_path(p).unlink()
    else:
        meta_path(p).write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(LutError, match=match):
        LUT.load(p)


def test_no_such_lut(tmp_path: Path) -> None:
    with pytest.raises(LutError, match=r"no such LUT.*hwnas profile"):
        LUT.load(tmp_path / "nope.csv")
