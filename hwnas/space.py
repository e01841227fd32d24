"""Search spaces: load a declarative space file, expand it, sample and enumerate its archs.

A space file is TOML (see ``search_spaces/``). Humans write candidate *grids*
(``{ op = "mbconv", k = [3, 5, 7], e = [3, 6] }``); :func:`expand_grid` is the one normaliser
that turns them into the canonical list of :class:`Choice`. Two kinds:

* ``blocks``: a stem, stages of layers (``out``, ``depth``, first-layer ``stride``,
  ``candidates``), a head. ``zero`` is offered only where a layer keeps its shape.
* ``cells``: the DARTS cell space (``C``, ``layers``, ``nodes``, ``stem_multiplier``, ``ops``);
  reduction cells sit at 1/3 and 2/3 of the depth.

Input size and width multiplier are parameters of a loaded space (:meth:`Space.with_params`), so
the same space is priced at 224 or at 32.
"""

from __future__ import annotations

import itertools
import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hwnas.arch import Arch, ArchError
from hwnas.checks import is_int, is_number
from hwnas.errors import HwnasError
from hwnas.ops import DARTS_OPS, OpCall, OpError, canonical_value, get_op

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


class SpaceError(HwnasError):
    """A space name or file that cannot be loaded."""


@dataclass(frozen=True)
class Choice:
    """One candidate of a layer: op and its params, without ``out``/``stride`` (the layer's)."""

    op: str
    params: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        """Short human name: ``mbconv_k3_e6``, ``mbconv_k5_e1_g2``, ``zero``, ``skip``."""
        p = dict(self.params)
        if self.op != "mbconv":
            return self.op
        g = f"_g{p['groups']}" if p.get("groups", 1) != 1 else ""
        return f"mbconv_k{p['k']}_e{p['e']}{g}"

    def layer(self, out: int, stride: int) -> dict[str, Any]:
        return {"op": self.op, **dict(self.params), "out": out, "stride": stride}


def expand_grid(cands: Any, defaults: Mapping[str, Any], where: str) -> list[Choice]:
    """Normalise candidate grids into the canonical, de-duplicated list of choices.

    Each list-valued field is a grid axis; ``defaults`` fill params the op takes but the entry
    omits (e.g. ``groups = 1``, the space's ``act``). Order: entries as written, each grid in
    row-major order of its fields as written (``k = [3, 5], e = [3, 6]``: k3e3, k3e6, k5e3, k5e6).
    """
    if not isinstance(cands, list) or not cands:
        raise SpaceError(f"{where}: 'candidates' must be a non-empty list")
    out: list[Choice] = []
    for i, c in enumerate(cands):
        if not isinstance(c, dict) or "op" not in c:
            raise SpaceError(f"{where}.candidates[{i}]: must be a table with an 'op' field")
        try:
            spec = get_op(str(c["op"]))
        except OpError as e:
            raise SpaceError(f"{where}.candidates[{i}]: {e}") from None
        fields = {k: v for k, v in c.items() if k != "op"}
        bad = [k for k in fields if k not in spec.params or k in ("out", "stride")]
        if bad:
            raise SpaceError(
                f"{where}.candidates[{i}]: op {spec.name!r} does not take {', '.join(bad)} here "
                f"(out and stride come from the stage)"
            )
        for k in spec.params:
            if k not in fields and k not in ("out", "stride") and k in defaults:
                fields[k] = defaults[k]
        axes = [(k, v if isinstance(v, list) else [v]) for k, v in fields.items()]  # as written
        if any(not vals for _, vals in axes):
            raise SpaceError(f"{where}.candidates[{i}]: an empty grid axis gives no candidates")
        for combo in itertools.product(*(vals for _, vals in axes)):
            try:
                params = tuple(sorted((k, canonical_value(v)) for (k, _), v in zip(axes, combo, strict=True)))
            except OpError as e:
                raise SpaceError(f"{where}.candidates[{i}]: {e}") from None
            ch = Choice(spec.name, params)
            if ch not in out:
                out.append(ch)
    named: dict[str, Choice] = {}
    for ch in out:
        other = named.setdefault(ch.label, ch)
        if other is not ch:
            theirs = dict(other.params)
            diff = ", ".join(f"{k}={theirs.get(k)!r} vs {v!r}" for k, v in ch.params if theirs.get(k) != v)
            raise SpaceError(
                f"{where}: two candidates are both named {ch.label!r} ({diff}); a choice's name (op, k, e, groups) "
                f"labels it in history.csv and arch.json, so give this stage only one of them"
            )
    return out


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (MobileNetV2)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@dataclass(frozen=True)
class Slot:
    """One layer position of a block space: fixed ``out``/``stride``, its candidate choices."""

    index: int
    stage: int
    out: int
    stride: int
    choices: tuple[Choice, ...]


@dataclass(frozen=True)
class Space:
    """A loaded space at a given input size and width multiplier (see module docstring)."""

    name: str
    kind: str
    source: str
    input_size: int
    in_channels: int
    num_classes: int
    width_mult: float
    raw: Mapping[str, Any]

    # -- parameters -------------------------------------------------------------------------
    def with_params(
        self,
        input_size: int | None = None,
        width_mult: float | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
    ) -> Space:
        """The same space at another input size (pixels), width multiplier, input channels or
        number of classes (None keeps the current value)."""
        sp = replace(
            self,
            input_size=self.input_size if input_size is None else int(input_size),
            width_mult=self.width_mult if width_mult is None else float(width_mult),
            in_channels=self.in_channels if in_channels is None else int(in_channels),
            num_classes=self.num_classes if num_classes is None else int(num_classes),
        )
        sp.validate()
        return sp

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)

    def describe(self) -> str:
        return f"{self.name} @ {self.input_size}px x{self.width_mult:g}"

    # -- block spaces -----------------------------------------------------------------------
    def _ch(self, c: int) -> int:
        return c if self.width_mult == 1 else make_divisible(c * self.width_mult)

    def stem(self) -> dict[str, Any]:
        st = self.raw["stem"]
        return {
            "op": "conv_bn_act", "out": self._ch(st["out"]), "k": st.get("k", 3),
            "stride": st.get("stride", 2), "act": st.get("act", self.raw.get("act", "relu6")),
        }  # fmt: skip

    def head(self) -> dict[str, Any]:
        hd = self.raw.get("head", {})
        mix = int(hd.get("mix", 0))
        # like MobileNetV2, the last feature-mix conv only grows with the width multiplier
        mix = make_divisible(mix * self.width_mult) if self.width_mult > 1 and mix else mix
        return {
            "op": "head",
            "mix": mix,
            "classes": self.num_classes,
            "act": hd.get("act", self.raw.get("act", "relu6")),
        }

    def slots(self) -> list[Slot]:
        """The layers of a block space, each with the choices it offers."""
        if self.kind != "blocks":
            raise SpaceError(f"space {self.name!r} is a cell space; it has no layer slots")
        defaults = {"groups": 1, "act": self.raw.get("act", "relu6")}
        slots: list[Slot] = []
        c_prev = self._ch(self.raw["stem"]["out"])
        for si, stage in enumerate(self.raw["stages"]):
            where = f"stages[{si}]"
            choices = expand_grid(stage.get("candidates"), defaults, where)
            out = self._ch(stage["out"])
            for d in range(int(stage["depth"])):
                stride = int(stage.get("stride", 1)) if d == 0 else 1
                keeps = stride == 1 and out == c_prev
                cs = tuple(c for c in choices if keeps or c.op != "zero")
                if not cs:
                    raise SpaceError(f"{where}: layer {d} changes shape, so 'zero' alone cannot fill it")
                slots.append(Slot(len(slots), si, out, stride, cs))
                c_prev = out
        return slots

    def blocks_arch(self, picks: list[Choice], info: Mapping[str, Any] | None = None) -> Arch:
        """The arch with ``picks[i]`` at slot ``i``; ``zero`` layers are left out. ``info`` gets
        ``choices``, the label of every slot's pick, so that :meth:`picks` can tell which of
        several identical slots a dropped layer was."""
        slots = self.slots()
        if len(picks) != len(slots):
            raise SpaceError(f"{self.name}: {len(picks)} choices given for {len(slots)} layers")
        layers = [c.layer(s.out, s.stride) for s, c in zip(slots, picks, strict=True) if c.op != "zero"]
        body = {"stem": self.stem(), "layers": layers, "head": self.head()}
        return Arch("blocks", self.name, self.input_shape, body, {**(info or {}), "choices": [c.label for c in picks]})

    def picks(self, arch: Arch) -> list[Choice]:
        """The choice of every slot in a block arch of this space (``zero`` where a layer is
        absent): the inverse of :meth:`blocks_arch`, the one place layers are aligned with slots.

        The layers alone do not say which of several identical slots (same width, stride and
        choices: the blocks of a stage) a ``zero`` dropped, so the labels :meth:`blocks_arch`
        records in ``info["choices"]`` decide when they rebuild the arch. Without them (an arch
        written by hand or by another tool) layers fill slots in order and the dropped ones are
        the last of their run of identical slots: the same network, but probabilities of the
        search's per-slot rows may then be read for a neighbouring slot.

        Raises SpaceError, naming the first layer that fits no slot, if ``arch`` is not a block
        arch of this space and width.
        """
        if arch.kind != "blocks":
            raise SpaceError(f"is a {arch.kind} arch, not one of the block space {self.name!r}")
        slots = self.slots()
        labels = arch.info.get("choices")
        if isinstance(labels, list) and len(labels) == len(slots):
            by_label = [{c.label: c for c in s.choices} for s in slots]
            if all(isinstance(lb, str) and lb in d for lb, d in zip(labels, by_label, strict=True)):
                picks = [d[lb] for lb, d in zip(labels, by_label, strict=True)]
                if self.blocks_arch(picks).body["layers"] == arch.body.get("layers"):
                    return picks
        layers = list(arch.body.get("layers", []))
        out: list[Choice] = []
        i = 0
        for slot in slots:
            cur = layers[i] if i < len(layers) else None
            pick = next((c for c in slot.choices if cur is not None and c.layer(slot.out, slot.stride) == cur), None)
            if pick is not None:
                i += 1
            else:
                pick = next((c for c in slot.choices if c.op == "zero"), None)
                if pick is None:
                    raise SpaceError(f"does not fit the space {self.name!r} (layers[{i}], slot {slot.index})")
            out.append(pick)
        if i != len(layers):
            raise SpaceError(f"does not fit the space {self.name!r} ({len(layers) - i} layer(s) left over)")
        return out

    # -- cell spaces ------------------------------------------------------------------------
    @property
    def cell_ops(self) -> list[str]:
        return list(self.raw["ops"])

    def cells_body(self) -> dict[str, Any]:
        """The cell settings of a DARTS arch (everything but the genotype)."""
        r = self.raw
        n = int(r["layers"])
        return {
            "C": max(1, round(int(r["C"]) * self.width_mult)),
            "layers": n,
            "stem_multiplier": int(r.get("stem_multiplier", 3)),
            "reduce_at": sorted({n // 3, 2 * n // 3}),
            "classes": self.num_classes,
        }

    def cells_arch(self, genotype: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> Arch:
        body = {**self.cells_body(), "genotype": {k: [list(e) for e in genotype[k]] for k in ("normal", "reduce")}}
        return Arch("cells", self.name, self.input_shape, body, dict(info or {}))

    # -- all kinds --------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random valid arch of the space."""
        if self.kind == "blocks":
            return self.blocks_arch([rng.choice(s.choices) for s in self.slots()])
        ops = [o for o in self.cell_ops if o != "none"]
        nodes = int(self.raw["nodes"])

        def cell() -> list[list[Any]]:
            edges: list[list[Any]] = []
            for j in range(nodes):
                for src in sorted(rng.sample(range(2 + j), 2)):
                    edges.append([rng.choice(ops), src])
            return edges

        return self.cells_arch({"normal": cell(), "reduce": cell()})

    def probe_archs(self) -> list[tuple[str, Arch]]:
        """Archs that together contain every op call the space can ask for.

        Blocks: one net per distinct choice, that choice in every layer offering it (layer shapes
        do not depend on choices, so this covers every (layer, choice) pair). Cells: one genotype
        per op, that op on edges from both cell inputs and from intermediate nodes (covering the
        stride-2 and stride-1 edges of reduction cells). They double as calibration probes.
        """
        probes: list[tuple[str, Arch]] = []
        if self.kind == "blocks":
            slots = self.slots()
            seen: list[Choice] = []
            for s in slots:
                seen += [c for c in s.choices if c not in seen]
            for c in seen:
                picks = [c if c in s.choices else s.choices[0] for s in slots]
                probes.append((f"all-{c.label}", self.blocks_arch(picks)))
            return probes
        nodes = int(self.raw["nodes"])
        srcs = [(0, 1)] + [(j - 1, j + 1) for j in range(1, nodes)]  # node j reads j-1 and j+1
        for op in self.cell_ops:
            if op == "none":
                continue
            cell = [[op, s] for pair in srcs for s in pair]
            probes.append((f"all-{op}", self.cells_arch({"normal": cell, "reduce": cell})))
        return probes

    def calls(self) -> list[OpCall]:
        """Every unique priced op call the space can ask for, in first-seen order."""
        seen: dict[str, OpCall] = {}
        for _, arch in self.probe_archs():
            for call in arch.plan.priced_calls():
                seen.setdefault(call.key, call)
        return list(seen.values())

    def validate(self) -> None:
        """Expand the space and walk its probe archs; raises :class:`SpaceError` on any problem."""
        try:
            if self.kind == "blocks":
                self.slots()
            self.probe_archs()
        except SpaceError as e:
            raise SpaceError(f"{self.source}: {e}") from None
        except (ArchError, OpError) as e:
            raise SpaceError(
                f"{self.source}: {e} (at input size {self.input_size}, width x{self.width_mult:g})"
            ) from None


_REQUIRED = {
    "blocks": ("stem", "stages"),
    "cells": ("C", "layers", "nodes", "ops"),
}
_COMMON = ("name", "description", "kind", "input_size", "in_channels", "num_classes", "width_mult")
_ALLOWED = {
    "blocks": (*_COMMON, "act", "stem", "head", "stages"),
    "cells": (*_COMMON, "C", "layers", "nodes", "stem_multiplier", "ops"),
}
_TABLES = {"stem": ("out", "k", "stride", "act"), "head": ("mix", "act")}
_STAGE_FIELDS = ("out", "depth", "stride", "candidates")


def _check_raw(raw: dict[str, Any], p: Path) -> None:
    """Refuse a parsed space file whose fields are missing, unknown or of the wrong kind."""
    kind = raw.get("kind")
    if kind not in _REQUIRED:
        raise SpaceError(f"{p}: field 'kind' must be 'blocks' or 'cells', got {kind!r}")
    missing = [f for f in _REQUIRED[kind] if f not in raw]
    if missing:
        raise SpaceError(f"{p}: missing field(s) {', '.join(missing)} for a {kind!r} space")
    unknown = sorted(set(raw) - set(_ALLOWED[kind]))
    if unknown:
        raise SpaceError(
            f"{p}: unknown field(s) {', '.join(unknown)} in a {kind!r} space; allowed: {', '.join(_ALLOWED[kind])}"
        )
    for f in ("name", "description", "act"):
        if f in raw and not isinstance(raw[f], str):
            raise SpaceError(f"{p}: field {f!r} must be a string, got {raw[f]!r}")
    for f in ("input_size", "in_channels", "num_classes", "C", "layers", "stem_multiplier", "nodes"):
        lo = 2 if f == "nodes" else 1
        if f in raw and not is_int(raw[f], lo):
            raise SpaceError(f"{p}: field {f!r} must be an integer >= {lo}, got {raw[f]!r}")
    wm = raw.get("width_mult", 1.0)
    if not (is_number(wm) and wm > 0):
        raise SpaceError(f"{p}: field 'width_mult' must be a positive number, got {wm!r}")
    if kind == "cells":
        ops = raw["ops"]
        if not (isinstance(ops, list) and ops and all(isinstance(o, str) for o in ops)):
            raise SpaceError(f"{p}: field 'ops' must be a non-empty list of cell op names, got {ops!r}")
        unknown = [o for o in ops if o not in DARTS_OPS]
        if unknown:
            raise SpaceError(f"{p}: field 'ops' has unknown cell op(s) {unknown}; known: {', '.join(DARTS_OPS)}")
        if len(set(ops)) != len(ops) or set(ops) == {"none"}:
            raise SpaceError(f"{p}: field 'ops' must list distinct ops, at least one besides 'none', got {ops!r}")
        return
    for table, allowed in _TABLES.items():
        t = raw.get(table, {})
        if not isinstance(t, dict):
            raise SpaceError(f"{p}: field {table!r} must be a table, got {t!r}")
        extra = sorted(set(t) - set(allowed))
        if extra:
            raise SpaceError(
                f"{p}: table {table!r} has unknown field(s) {', '.join(extra)}; allowed: {', '.join(allowed)}"
            )
    if not is_int(raw["stem"].get("out"), 1):
        raise SpaceError(f"{p}: stem.out must be a positive integer, got {raw['stem'].get('out')!r}")
    if not is_int(raw.get("head", {}).get("mix", 0), 0):
        raise SpaceError(f"{p}: head.mix must be an integer >= 0, got {raw['head']['mix']!r}")
    stages = raw["stages"]
    if not isinstance(stages, list) or not stages or not all(isinstance(st, dict) for st in stages):
        raise SpaceError(f"{p}: field 'stages' must be a non-empty list of stage tables")
    for i, st in enumerate(stages):
        extra = sorted(set(st) - set(_STAGE_FIELDS))
        if extra:
            raise SpaceError(
                f"{p}: stages[{i}] has unknown field(s) {', '.join(extra)}; allowed: {', '.join(_STAGE_FIELDS)}"
            )
        for f in ("out", "depth"):
            if not is_int(st.get(f), 1):
                raise SpaceError(f"{p}: stages[{i}].{f} must be a positive integer, got {st.get(f)!r}")
        if not (is_int(st.get("stride", 1), 1) and st.get("stride", 1) in (1, 2)):
            raise SpaceError(f"{p}: stages[{i}].stride must be 1 or 2, got {st.get('stride')!r}")


def builtin_spaces() -> list[str]:
    """Names of the space files shipped in ``search_spaces/``."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.toml"))


def load_space(name_or_path: str | Path, input_size: int | None = None, width_mult: float | None = None) -> Space:
    """Load a space by shipped name (``darts``, ``proxyless``, ``fbnet``, ``tiny``...) or file path."""
    p = Path(name_or_path)
    if p.suffix != ".toml" and not p.exists():
        p = SPACES_DIR / f"{name_or_path}.toml"
        if not p.exists():
            raise SpaceError(
                f"unknown space {str(name_or_path)!r}; shipped spaces: {', '.join(builtin_spaces())} "
                "(or pass a path to a .toml space file)"
            )
    try:
        raw = tomllib.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SpaceError(f"{p}: no such space file") from None
    except OSError as e:
        raise SpaceError(f"{p}: cannot read the space file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise SpaceError(f"{p}: not a UTF-8 text file (byte {e.start}); a space file is TOML text") from None
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{p}: not valid TOML ({e})") from None
    _check_raw(raw, p)
    kind = raw["kind"]
    try:
        space = Space(
            name=str(raw.get("name", p.stem)),
            kind=kind,
            source=str(p),
            input_size=int(raw.get("input_size", 224)),
            in_channels=int(raw.get("in_channels", 3)),
            num_classes=int(raw.get("num_classes", 1000)),
            width_mult=float(raw.get("width_mult", 1.0)),
            raw=raw,
        )
    except (TypeError, ValueError) as e:
        raise SpaceError(f"{p}: {e}") from None
    if input_size is not None and input_size < 1:
        raise SpaceError(f"input size must be a positive number of pixels, got {input_size}")
    if width_mult is not None and not (is_number(width_mult) and width_mult > 0):
        raise SpaceError(f"width multiplier must be positive, got {width_mult}")
    return space.with_params(input_size, width_mult)
