"""The latency lookup table: load, validate, save and price.

A LUT is a CSV (one row per op call, keyed by :attr:`hwnas.ops.OpCall.key`) plus a
``.meta.json`` sidecar with its provenance and the whole-network model. Columns:

``key, op, params, input``
    the op call (the key is the only field read back; the others are for people and pandas)
``latency_ms``
    the block's price, what prediction sums: its time *inside a network* on the target (median
    over the probe networks that contain it and over rounds of each round's reading,
    ``meta["block_reading"]``: ``auto``, the median of the round's runs for a block under 50 µs
    and ``meta["reading"]`` above it, the 10th percentile or the median), less what the
    node profiler adds per kernel (``meta["model"]["kernel_ms"]``), blended with
    ``isolated_ms`` by ``meta["model"]["isolated_share"]`` where the profile's fit chose that
    (:func:`hwnas.profiling.profile.fit_whole`; 0 in LUTs written before it), and moved by
    ``meta["model"]["refit"]["delta_ms"]["main"]`` where the profile timed refit networks
    (:func:`hwnas.profiling.profile.refit_prices`; not below 0)
``isolated_ms, isolated_p10_ms, isolated_p90_ms``
    the block timed alone in a loop (its reading as above; the median over rounds of each
    round's 10th and 90th percentile)
``context_n``
    how many (network, position) samples ``latency_ms`` is the median of
``shared_ms, shared_profiled_ms, shared_kernels, shared_n``
    for a key priced by its role (:func:`hwnas.arch.role_priced`), its figures where ONNX Runtime
    runs part or all of its work inside another node's kernel (the "shared" role of
    :meth:`hwnas.arch.Plan.roles`, which lists the cases; ``shared_ms`` blended with
    ``isolated_ms`` and refitted as ``latency_ms`` is, from the ``"shared"`` corrections);
    ``latency_ms`` etc. are then the key's figures where it runs on its own. Empty for other keys
    and where the profile saw only one role.

Prediction of a network: ``scale * sum(latency_ms of its blocks) + overhead_ms`` (``shared_ms``
for a block whose role is shared, where the table has it), with ``scale``
and ``overhead_ms`` fitted by least squares on whole-network measurements of the probe and
calibration networks, and refitted with the prices where the profile timed refit networks
(``meta["model"]``). All latencies are milliseconds at the LUT's batch size.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from hwnas.arch import Arch, Node, Plan
from hwnas.checks import is_int, is_number
from hwnas.errors import HwnasError
from hwnas.ops import OpCall, OpError, parse_key
from hwnas.profiling.runner import TimingSettings, atomic_write

SCHEMA = "hwnas.lut/1"
COLUMNS = (
    "key",
    "op",
    "params",
    "input",
    "latency_ms",
    "profiled_ms",
    "kernels",
    "isolated_ms",
    "isolated_p10_ms",
    "isolated_p90_ms",
    "context_n",
    "shared_ms",
    "shared_profiled_ms",
    "shared_kernels",
    "shared_n",
)
NUMERIC = COLUMNS[4:]
META_REQUIRED = (
    "schema", "space", "input_size", "width_mult", "device", "device_kind", "backend", "threads", "batch", "model",
)  # fmt: skip
BACKENDS = ("onnxruntime", "torch")
DEVICE_KINDS = ("cpu", "cuda")


class LutError(HwnasError):
    """A LUT file that cannot be used as asked."""


def meta_path(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name[: -len(".csv")] + ".meta.json" if p.name.endswith(".csv") else p.name + ".meta.json")


@dataclass(frozen=True)
class Prediction:
    """A network's predicted latency and where it goes (all ms)."""

    total_ms: float
    sum_ms: float
    scale: float
    overhead_ms: float
    blocks: tuple[tuple[str, str, float], ...]  # (where, key, latency_ms) per priced block

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted_ms": self.total_ms, "sum_ms": self.sum_ms, "scale": self.scale,
            "overhead_ms": self.overhead_ms,
            "blocks": [{"where": w, "key": k, "latency_ms": ms} for w, k, ms in self.blocks],
        }  # fmt: skip


class LUT:
    """A loaded latency table. Build with :meth:`load` or :meth:`from_rows`."""

    def __init__(self, table: pd.DataFrame, meta: dict[str, Any], path: Path | None = None) -> None:
        self.table = table
        self.meta = meta
        self.path = path
        self._file_sha256: str | None = None  # of the file's bytes, when loaded from one
        self.latency: dict[str, float] = dict(zip(table["key"], table["latency_ms"].astype(float), strict=True))
        shared = pd.to_numeric(table["shared_ms"], errors="coerce") if "shared_ms" in table else None
        self.shared: dict[str, float] = (
            {k: float(v) for k, v in zip(table["key"], shared, strict=True) if math.isfinite(v)}
            if shared is not None
            else {}
        )  # the price of a key in the "shared" role (Plan.roles), where the profile saw it

    # -- identity ---------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        return float(self.meta["model"]["scale"])

    @property
    def overhead_ms(self) -> float:
        return float(self.meta["model"]["overhead_ms"])

    def to_csv_bytes(self) -> bytes:
        return self.table.to_csv(index=False, lineterminator="\n", float_format="%.6g").encode()

    @property
    def sha256(self) -> str:
        """Hash of the CSV content: recorded in the metadata and in arch files priced by it. For a
        loaded LUT, of the file as it is (a file written before a column was added keeps its hash)."""
        return self._file_sha256 or hashlib.sha256(self.to_csv_bytes()).hexdigest()

    def describe(self) -> str:
        m = self.meta
        return (
            f"{m['space']} @ {m['input_size']}px on {m['device']} ({m['backend']}, {m['threads']} thread"
            f"{'s' if m['threads'] != 1 else ''}, batch {m['batch']})"
        )

    # -- pricing ----------------------------------------------------------------------------
    def missing(self, calls: Iterable[OpCall]) -> list[str]:
        return sorted({c.key for c in calls if c.priced and c.key not in self.latency})

    def check_covers(
        self, calls: Iterable[OpCall], space: str, input_size: int, width_mult: float | None = None, **extra: Any
    ) -> None:
        """Raise a :class:`LutError` listing missing keys and the command that measures them.

        ``extra`` (``in_channels``, ``num_classes``) go into that command when given.
        """
        missing = self.missing(calls)
        if not missing:
            return
        shown = "; ".join(missing[:5]) + (f"; ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise LutError(
            f"{self.path or 'LUT'} lacks {len(missing)} key(s) this network needs: {shown}. "
            f"Measure them with: {self.profile_command(space, input_size, width_mult, **extra)}"
        )

    def profile_command(self, space: str, input_size: int, width_mult: float | None = None, **extra: Any) -> str:
        m = self.meta
        wm = f" --width-mult {width_mult:g}" if width_mult not in (None, 1, 1.0) else ""
        more = "".join(f" --{k.replace('_', '-')} {v}" for k, v in extra.items() if v is not None)
        return (
            f"hwnas profile --space {space} --input-size {input_size}{wm}{more} --device {m['device_kind']} "
            f"--backend {m['backend']} --threads {m['threads']} --batch {m['batch']}"
        )

    def space_note(self, arch: Arch) -> str | None:
        """A note when ``arch`` names another space than the one this LUT was profiled for: its ops
        may all be in the table, but the whole-net model was fitted on the other space's networks."""
        there = self.meta.get("space")
        if there and arch.space != there:
            return (
                f"note: the network is of space {arch.space!r}; {self.path or 'the LUT'} was profiled for "
                f"{there!r}, and its whole-net model was fitted on {there!r} networks (profile {arch.space!r} "
                "for a calibrated prediction)"
            )
        return None

    def predict(self, target: Arch | Plan) -> Prediction:
        """Predicted latency (ms) of an arch; a missing key is an error, never a default."""
        plan = target.plan if isinstance(target, Arch) else target
        if isinstance(target, Arch):
            size = target.input[1]
            if size != int(self.meta["input_size"]):
                raise LutError(
                    f"{self.path or 'LUT'} was measured at input size {self.meta['input_size']}, the network "
                    f"takes {size}; profile that size: {self.profile_command(target.space, size, target.info.get('width_mult'))}"
                )
            shape = {"in_channels": target.input[0], "num_classes": plan.nodes[-1].call.out_shape[0]}
            self.check_covers(plan.calls, target.space, size, target.info.get("width_mult"), **shape)
        else:
            missing = self.missing(plan.calls)
            if missing:
                raise LutError(f"LUT lacks {len(missing)} key(s): {', '.join(missing[:5])}")
        blocks = tuple((n.where, n.call.key, ms) for n, ms in block_prices(plan, self.latency, self.shared))
        s = math.fsum(b[2] for b in blocks)
        return Prediction(self.scale * s + self.overhead_ms, s, self.scale, self.overhead_ms, blocks)

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write CSV and metadata atomically (metadata records the CSV's hash). Afterwards this
        object holds what the files hold (the CSV keeps 6 significant digits), so it predicts
        exactly what a later :meth:`load` of them does."""
        p = Path(path)
        data = self.to_csv_bytes()
        meta = {**self.meta, "csv_sha256": hashlib.sha256(data).hexdigest()}
        atomic_write(meta_path(p), (json.dumps(meta, indent=2) + "\n").encode())
        atomic_write(p, data)
        self.__dict__.update(vars(LUT.load(p)))

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], meta: dict[str, Any]) -> LUT:
        table = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values("key", kind="stable").reset_index(drop=True)
        return cls(table, {"schema": SCHEMA, **meta})

    @classmethod
    def load(cls, path: str | Path, expect: dict[str, Any] | None = None) -> LUT:
        """Load and validate a LUT; ``expect`` (e.g. ``{"threads": 2}``) must match its metadata."""
        p = Path(path)
        if not p.exists():
            raise LutError(f"{p}: no such LUT; build one with `hwnas profile --space SPACE --out {p}`")
        if not p.is_file():
            raise LutError(f"{p}: not a file; pass the LUT's .csv (hwnas profile writes it)")
        mp = meta_path(p)
        try:
            meta = json.loads(mp.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise LutError(
                f"{p}: its metadata {mp.name} is missing; re-run `hwnas profile` to rebuild the pair"
            ) from None
        except json.JSONDecodeError as e:
            raise LutError(f"{mp}: not valid JSON (line {e.lineno}: {e.msg}); re-run `hwnas profile`") from None
        except UnicodeDecodeError:
            raise LutError(f"{mp}: not a UTF-8 JSON text file; re-run `hwnas profile` to rebuild it") from None
        except RecursionError:
            raise LutError(f"{mp}: not valid JSON (nested too deeply); re-run `hwnas profile`") from None
        except OSError as e:
            raise LutError(f"{mp}: cannot read the LUT's metadata ({e.strerror})") from None
        if not isinstance(meta, dict):
            raise LutError(f"{mp}: expected a JSON object")
        if meta.get("schema") != SCHEMA:
            raise LutError(f"{mp}: schema {meta.get('schema')!r} is not {SCHEMA!r}; rebuild the LUT with this hwnas")
        lacking = [f for f in META_REQUIRED if f not in meta]
        if lacking:
            raise LutError(f"{mp}: missing field(s) {', '.join(lacking)}; rebuild the LUT with `hwnas profile`")
        _check_meta(meta, mp)
        raw = p.read_bytes()
        table = _read_table(p, raw)
        digest = hashlib.sha256(raw).hexdigest()  # of the bytes that were parsed
        if meta.get("csv_sha256") not in (None, digest):
            raise LutError(
                f"{p}: the CSV does not match its metadata (edited by hand, or a profile was interrupted "
                "between the two renames); re-run the same `hwnas profile` command to rebuild it"
            )
        lut = cls(table, meta, p)
        lut._file_sha256 = digest
        for k, want in (expect or {}).items():
            if want is not None and meta.get(k) != want:
                raise LutError(
                    f"{p} was measured with {k}={meta.get(k)!r} but {want!r} was asked; "
                    f"use a LUT built with {k}={want!r} (hwnas profile ... --out NEW.csv) or ask for {meta.get(k)!r}"
                )
        return lut


def block_columns(plan: Plan, shared: Container[str]) -> list[tuple[Node, str]]:
    """Each priced node of ``plan`` with the price it takes: ``"shared"`` (the key's
    ``shared_ms``) where the node's role (:meth:`hwnas.arch.Plan.roles`) is shared and the keys
    ``shared`` have a price in that role, else ``"main"`` (its ``latency_ms``)."""
    return [
        (n, "shared" if r == "shared" and n.call.key in shared else "main")
        for n, r in zip(plan.nodes, plan.roles(), strict=True)
        if n.call.priced
    ]


def block_prices(plan: Plan, main: Mapping[str, float], shared: Mapping[str, float]) -> list[tuple[Node, float]]:
    """Each priced node of ``plan`` with its figure (:func:`block_columns`: ``shared[key]`` or
    ``main[key]``). How a LUT prices a network, and how a profile sums its networks' blocks."""
    return [(n, (shared if c == "shared" else main)[n.call.key]) for n, c in block_columns(plan, shared)]


def _check_meta(meta: dict[str, Any], mp: Path) -> None:
    """Refuse metadata fields of the wrong kind, which commands would otherwise trip over later."""

    def bad(field: str, want: str) -> LutError:
        return LutError(
            f"{mp}: field {field!r} must be {want}, got {meta.get(field)!r}; rebuild the LUT with `hwnas profile`"
        )

    for f in ("input_size", "threads", "batch", "rounds", "in_channels", "num_classes"):
        if f in meta and not (is_int(meta[f], 1) or (f in ("in_channels", "num_classes") and meta[f] is None)):
            raise bad(f, "a positive integer")
    if not (is_number(meta["width_mult"]) and meta["width_mult"] > 0):
        raise bad("width_mult", "a positive number")
    for f, allowed in (("backend", BACKENDS), ("device_kind", DEVICE_KINDS)):
        if meta[f] not in allowed:
            raise bad(f, f"one of {', '.join(allowed)}")
    if not isinstance(meta["space"], str) or not isinstance(meta.get("space_source", ""), str | None):
        raise bad("space", "a space name")
    model = meta["model"]
    if not (isinstance(model, dict) and is_number(model.get("scale")) and is_number(model.get("overhead_ms"))):
        raise LutError(f"{mp}: field 'model' needs finite 'scale' and 'overhead_ms'")
    if model["scale"] <= 0:
        raise LutError(f"{mp}: field 'model' needs a 'scale' above 0, got {model['scale']!r}; rebuild the LUT")
    nets = model.get("nets", [])
    if not (
        isinstance(nets, list)
        and all(isinstance(n, dict) and isinstance(n.get("name"), str) for n in nets)
        and all(is_number(n.get("measured_ms")) and n["measured_ms"] > 0 for n in nets)
    ):
        raise LutError(
            f"{mp}: 'model.nets' must be a list of networks with a name and a measured_ms above 0; rebuild the LUT"
        )
    timing = meta.get("timing", {})
    known = {f.name for f in fields(TimingSettings)}
    if not (isinstance(timing, dict) and set(timing) <= known and all(is_number(v) for v in timing.values())):
        raise bad("timing", f"an object of numbers with keys among {', '.join(sorted(known))}")
    settings = meta.get("settings", {})
    if not (isinstance(settings, dict) and all(isinstance(v, dict) for v in settings.values())):
        raise bad("settings", "an object of objects")


def _read_table(p: Path, raw: bytes) -> pd.DataFrame:
    try:
        text = raw.decode("utf-8-sig")  # a BOM (spreadsheet export) is not part of the header
    except UnicodeDecodeError as e:
        raise LutError(f"{p}: not a UTF-8 text CSV (byte {e.start}); re-run `hwnas profile` to rebuild it") from None
    if "\x00" in text:
        raise LutError(f"{p}: not a text CSV (it holds NUL bytes); re-run `hwnas profile` to rebuild it")
    if raw and not raw.endswith(b"\n"):
        raise LutError(f"{p}: the last line is cut off (truncated file); re-run `hwnas profile` to rebuild it")
    try:
        table = pd.read_csv(
            io.StringIO(text), dtype={"key": str, "op": str, "params": str, "input": str}, keep_default_na=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise LutError(f"{p}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in ("key", "latency_ms") if c not in table.columns]
    if missing:
        raise LutError(f"{p}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    if table.empty:
        raise LutError(f"{p}: the header has no rows under it; re-run `hwnas profile` to rebuild it")
    for c in ("key", "op", "params", "input", *NUMERIC):
        if c not in table.columns:
            table[c] = "" if c in ("op", "params", "input") else float("nan")
    for i, row in enumerate(table.itertuples(index=False), start=2):  # line 1 is the header
        try:
            parse_key(row.key)
        except OpError as e:
            raise LutError(f"{p}, line {i}: {e}") from None
        try:
            v = float(row.latency_ms)
        except (TypeError, ValueError):
            raise LutError(f"{p}, line {i}: latency_ms {row.latency_ms!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise LutError(f"{p}, line {i}: latency_ms {row.latency_ms!r} must be a finite number >= 0")
        shared = row.shared_ms
        if _given(shared) and not ((x := _float(shared)) is not None and math.isfinite(x) and x >= 0):
            raise LutError(f"{p}, line {i}: shared_ms {shared!r} must be empty or a finite number >= 0")
    dup = table[table["key"].duplicated(keep=False)]
    if len(dup):
        first = dup["key"].iloc[0]
        vals = sorted(set(dup[dup["key"] == first]["latency_ms"].astype(float)))
        if len(vals) > 1:
            raise LutError(f"{p}: key {first} appears more than once with different latencies {vals}; keep one row")
        table = table.drop_duplicates("key")
    for c in NUMERIC:  # empty cells (a key with no shared role, no kernel count) read as NaN
        table[c] = pd.to_numeric(table[c], errors="coerce")
    return table[list(COLUMNS)].reset_index(drop=True)


def _given(v: Any) -> bool:
    """A cell holds a value: not empty, and not the NaN a column added for an older file holds."""
    return not (v is None or v == "" or (isinstance(v, float) and math.isnan(v)))


def _float(v: Any) -> float | None:
    """``v`` as a float, or None if it is not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
