"""One self-contained HTML report of a run directory: what ``hwnas report`` writes.

The report reads what the other commands wrote into a run directory and draws it with
matplotlib (Agg, no display needed) and, for DARTS cells, graphviz's ``dot``. Every piece but
``arch.json`` is optional: a missing piece is one "not in this run: ..., produced by ``hwnas ...``"
line in the page, an unreadable one a "could not be read" line; neither stops the report.

Files read from ``RUN_DIR`` (paths relative to it):

* ``arch.json`` (required; ``hwnas search``): the derived network, and in its ``info`` the budget,
  predicted latency, strategy and the LUT (``lut`` path, ``lut_sha256``);
* ``history.csv`` and ``config.json`` (``hwnas search``): per epoch loss, train accuracy,
  ``e_lat_ms``, ``budget_ms``, ``lam`` and every choice's probability in columns
  ``p[<row label>][<choice>]`` (row labels ``layer 3`` for block spaces, ``normal node 1 input 2``
  for DARTS); the search's space name and settings;
* ``train/history.csv`` and ``train/result.json`` (``hwnas train``): training curves (loss,
  ``train_acc``, ``val_acc``) and the test accuracy of the best weights;
* ``model.onnx`` (``hwnas export``): its hwnas metadata (MACs, parameters, test accuracy);
* ``measure.json`` or ``export.json``: the measured latency of the derived net, i.e. the output of
  ``hwnas measure RUN_DIR/arch.json --lut LUT --json`` (or ``hwnas export ... --json``) saved
  there; the keys read are ``measured_ms`` and, when there, ``drift`` (the machine then vs during the
  profile, from the LUT's reference networks timed alongside): the net at the profile's speed is
  ``measured_ms / drift``, the figure its prediction compares with;
* ``fidelity.json`` (``hwnas validate-lut --json``): the LUT's fidelity report with the per-net
  lists ``predicted_ms`` and ``measured_ms`` (equal length, ms), read at the profile's machine
  speed (``measured_ms / drift``) when it has a ``drift``; it counts as a report of this
  run's LUT if its ``lut_sha256`` is the one ``arch.json`` records (files without that key, from
  older versions, are matched by the LUT's file name);
* ``random_nets.json`` (``bench/search_budget.py --quality --json``): accuracy of random networks
  of the same space. Format (a JSON object)::

      {"budget_ms": 7.28,                  # optional: the budget the random nets were drawn under
       "train_epochs": 3, "train_limit": 10000,   # optional: how every net was trained
       "lut_sha256": "...",                # optional: the LUT that priced them
       "nets": [{"name": "random 0",       # optional label
                 "searched": false,        # optional: true for a searched net (drawn apart)
                 "predicted_ms": 6.9,      # required: predicted latency (ms)
                 "test_acc": 0.78,         # required: test accuracy in [0, 1]
                 ...}]}                    # other keys (params, arch) are ignored

The LUT named in ``arch.json`` is looked up as recorded (relative paths from the current
directory, then from the run directory's parents); it is used for the per-layer latency shares
only if its content hash matches ``lut_sha256``.

Output: ``report.html`` (default ``RUN_DIR/report/report.html``, or ``out``) with every picture
embedded as a base64 ``data:`` URI and linked to its PNG, and the PNGs in the same directory.
All files are written atomically; an existing report is replaced.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from hwnas.arch import Arch
from hwnas.checks import is_number, signed_pct
from hwnas.errors import HwnasError, check_out_path
from hwnas.lut import LUT, Prediction, atomic_write

LutStatus = Literal["found", "other", "unusable", "missing"]
PROB_COLUMN = re.compile(r"^p\[(?P<row>[^\]]+)\]\[(?P<choice>[^\]]+)\]$")
DPI = 110


# -- what a run directory holds -------------------------------------------------------------


@dataclass
class Run:
    """Everything read from a run directory; ``None`` where a piece is absent or unreadable.

    ``problems`` lists files that are present but could not be used (one line each);
    ``lut_note`` says why the per-layer latency shares cannot be drawn (None: they can), and
    ``lut_status`` what :func:`load_run` found of the recorded LUT: ``"found"`` (the file the
    search used), ``"other"`` (a file at that path with other content than ``lut_sha256``),
    ``"unusable"`` (there but unreadable, or it cannot price this network), ``"missing"`` (not
    recorded or not on this machine).
    """

    dir: Path
    arch: Arch
    config: dict[str, Any] | None = None
    history: pd.DataFrame | None = None
    train_history: pd.DataFrame | None = None
    train_result: dict[str, Any] | None = None
    onnx_meta: dict[str, str] | None = None
    measured: tuple[float, str] | None = None  # (ms, file it came from)
    fidelity: dict[str, Any] | None = None
    random_nets: dict[str, Any] | None = None
    lut: LUT | None = None
    lut_file: Path | None = None
    lut_note: str | None = None
    lut_status: LutStatus = "missing"
    prediction: Prediction | None = None
    problems: list[str] = field(default_factory=list)
    _aligned: tuple[list[LayerSlot] | None, str | None] | None = field(default=None, init=False, repr=False)

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.arch.info)

    def path(self, name: str) -> str:
        """``RUN_DIR/name`` quoted for a shell command line."""
        return shlex.quote(str(self.dir / name))

    @property
    def lut_arg(self) -> str:
        return shlex.quote(str(self.info.get("lut", "LUT.csv")))


def load_run(run_dir: Path) -> Run:
    """Read a run directory (see the module docstring).

    Raises :class:`~hwnas.errors.HwnasError` (one line) if ``run_dir`` does not exist, is not a
    directory, or has no readable ``arch.json``; every other piece is optional.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise HwnasError(f"{run_dir}: no such run directory; pass the directory hwnas search wrote (--out)")
    if not run_dir.is_dir():
        raise HwnasError(f"{run_dir}: not a directory; pass the run directory hwnas search wrote, not a file in it")
    if not (run_dir / "arch.json").is_file():
        raise HwnasError(
            f"{run_dir}: no arch.json here; hwnas report reads a run directory of hwnas search "
            f"(hwnas search ... --out {run_dir})"
        )
    run = Run(run_dir, Arch.load(run_dir / "arch.json"))  # a broken arch.json is one ArchError line
    run.config = _read_json(run, "config.json")
    run.history = _read_csv(run, "history.csv", ("epoch",))
    run.train_history = _read_csv(run, "train/history.csv", ("epoch",))
    run.train_result = _read_json(run, "train/result.json")
    if (run_dir / "model.onnx").is_file():
        try:
            from hwnas.export import read_metadata

            run.onnx_meta = read_metadata(run_dir / "model.onnx")
        except HwnasError as e:
            run.problems.append(f"model.onnx could not be read ({e})")
    for name in ("measure.json", "export.json"):
        doc = _read_json(run, name)
        if doc is not None and is_number(doc.get("measured_ms")):
            drift = doc.get("drift")
            if is_number(drift) and drift > 0:
                run.measured = (float(doc["measured_ms"]) / float(drift), f"{name}, at the profile's machine speed")
            else:
                run.measured = (float(doc["measured_ms"]), name)
            break
        if doc is not None:
            run.problems.append(f"{name} has no number 'measured_ms' (expected the output of hwnas measure --json)")
    run.fidelity = _check_fidelity(run, _read_json(run, "fidelity.json"))
    run.random_nets = _check_random_nets(run, _read_json(run, "random_nets.json"))
    _load_lut(run)
    return run


def _parses(v: str | None) -> bool:
    """Whether ``v`` is the text of a finite number."""
    try:
        return v is not None and math.isfinite(float(v))
    except ValueError:
        return False


def _errors_pct(fidelity: dict[str, Any]) -> np.ndarray:
    """|predicted / measured - 1| in % per network of a fidelity report."""
    return np.abs(np.array(fidelity["predicted_ms"], float) / np.array(fidelity["measured_ms"], float) - 1) * 100


def _read_json(run: Run, name: str) -> dict[str, Any] | None:
    p = run.dir / name
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        run.problems.append(f"{name} could not be read ({type(e).__name__}: {str(e)[:120]})")
        return None
    if not isinstance(doc, dict):
        run.problems.append(f"{name} is not a JSON object")
        return None
    return doc


def _read_csv(run: Run, name: str, required: tuple[str, ...]) -> pd.DataFrame | None:
    p = run.dir / name
    if not p.is_file():
        return None
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as e:  # pandas' ParserError, EmptyDataError and UnicodeDecodeError are ValueErrors
        run.problems.append(f"{name} could not be read ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        return None
    lacking = [c for c in required if c not in df.columns]
    if lacking or df.empty:
        run.problems.append(f"{name} has no rows or lacks column(s) {', '.join(lacking) or '-'}")
        return None
    return df.apply(pd.to_numeric, errors="coerce")  # every history column is a number; junk becomes NaN


def _check_fidelity(run: Run, doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    p, m = doc.get("predicted_ms"), doc.get("measured_ms")
    ok = isinstance(p, list) and isinstance(m, list) and len(p) == len(m) > 0
    if not (ok and all(is_number(v) and v > 0 for v in [*p, *m])):  # type: ignore[misc]
        run.problems.append(
            "fidelity.json has no per-net lists 'predicted_ms' and 'measured_ms' of equal length "
            "(write it with hwnas validate-lut --json)"
        )
        return None
    drift = doc.get("drift")
    if is_number(drift) and drift > 0:  # the networks at the profile's speed, as the run's own net is read
        return {**doc, "measured_ms": [v / drift for v in m], "drift_removed": float(drift)}
    return doc


def _drift_note(fidelity: dict[str, Any]) -> str:
    """How the fidelity figures were read: at the profile's machine speed when the report had a drift."""
    d = fidelity.get("drift_removed")
    return f" (at the profile's machine speed: drift {signed_pct(d - 1)} % removed)" if d else ""


def _check_random_nets(run: Run, doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    nets = doc.get("nets")
    good = (
        isinstance(nets, list)
        and nets
        and all(isinstance(n, dict) and is_number(n.get("predicted_ms")) and is_number(n.get("test_acc")) for n in nets)
    )
    if not good:
        run.problems.append("random_nets.json needs a list 'nets' of objects with 'predicted_ms' and 'test_acc'")
        return None
    return doc


def find_lut(run_dir: Path, recorded: str) -> Path | None:
    """The LUT file ``arch.json`` names: as recorded if absolute, else from the current directory
    or one of the run directory's parents; None if it is nowhere."""
    p = Path(recorded)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (Path.cwd(), *Path(run_dir).resolve().parents):
        if (base / p).is_file():
            return base / p
    return None


def _load_lut(run: Run) -> None:
    """Set ``run.lut`` and ``run.prediction`` if the recorded LUT is there and unchanged, else
    ``lut_note``; ``lut_status`` either way."""
    from hwnas.lut import LutError

    info = run.info
    recorded, digest = info.get("lut"), info.get("lut_sha256")
    if not isinstance(recorded, str):
        run.lut_note = "arch.json records no LUT (info.lut), so the latency shares are not drawn"
        return
    found = find_lut(run.dir, recorded)
    if found is None:
        run.lut_note = f"the LUT {recorded} is not on this machine (looked from here and the run's parents)"
        return
    try:
        lut = LUT.load(found)
    except LutError as e:
        run.lut_note = f"the LUT {found} cannot be used: {e}"
        run.lut_status = "unusable"
        return
    run.lut_file = found
    if digest != lut.sha256:
        run.lut_status = "other"
        run.lut_note = (
            f"the LUT {found} is not the one the search used (its sha256 is {lut.sha256[:12]}…, "
            f"arch.json records {str(digest)[:12]}…), so the latency shares are not drawn"
        )
        return
    try:
        run.prediction = lut.predict(run.arch)
    except LutError as e:
        run.lut_note = f"the LUT {found} cannot price this network: {e}"
        run.lut_status = "unusable"
        return
    run.lut = lut
    run.lut_status = "found"


# -- reading the history --------------------------------------------------------------------


@dataclass(frozen=True)
class ProbRow:
    """One decision's probabilities over epochs: ``probs[c, t]`` of choice ``c`` after epoch ``t``."""

    label: str
    choices: tuple[str, ...]
    probs: np.ndarray


def prob_rows(history: pd.DataFrame) -> list[ProbRow]:
    """The ``p[<row>][<choice>]`` columns of a search history, grouped by row in column order."""
    cols: dict[str, list[tuple[str, str]]] = {}
    for c in history.columns:
        m = PROB_COLUMN.match(str(c))
        if m:
            cols.setdefault(m["row"], []).append((m["choice"], c))
    out = []
    for label, pairs in cols.items():
        mat = np.array([pd.to_numeric(history[c], errors="coerce").to_numpy(float) for _, c in pairs])
        out.append(ProbRow(label, tuple(ch for ch, _ in pairs), mat))
    return out


def search_epochs(history: pd.DataFrame) -> np.ndarray:
    """1-based epoch numbers of a search history (its ``epoch`` column counts from 0)."""
    return pd.to_numeric(history["epoch"], errors="coerce").to_numpy(float) + 1


@dataclass(frozen=True)
class LayerSlot:
    """One layer slot of a block space as the derived network filled it."""

    index: int  # the slot's index in the space (the probability rows' ``layer N``)
    choice: str  # the choice's label (``mbconv_k5_e6``, ``zero``...)
    layer: int | None  # index into the arch's ``layers``; None where ``zero`` dropped the layer
    searchable: bool  # more than one choice: a probability row exists for it


def align_layers(run: Run) -> tuple[list[LayerSlot] | None, str | None]:
    """The block arch's layers aligned with its space's slots, or None and the reason (the space
    file is needed to tell which slots ``zero`` dropped). Cell archs: None, None.

    Computed once per run (it loads the space) and kept on ``run``."""
    if run._aligned is None:
        run._aligned = _align_layers(run)
    return run._aligned


def _align_layers(run: Run) -> tuple[list[LayerSlot] | None, str | None]:
    arch = run.arch
    if arch.kind != "blocks":
        return None, None
    from hwnas.space import load_space

    name = (run.config or {}).get("space") or arch.space
    try:
        space = load_space(name, arch.input[1], arch.info.get("width_mult"))
    except HwnasError as e:
        return None, f"the space {name!r} could not be loaded ({e})"
    try:
        picks = space.picks(arch)
    except HwnasError as e:
        return None, f"arch.json {e}"
    out: list[LayerSlot] = []
    i = 0
    for slot, pick in zip(space.slots(), picks, strict=True):
        searchable = len(slot.choices) > 1
        if pick.op == "zero":
            out.append(LayerSlot(slot.index, "zero", None, searchable))
        else:
            out.append(LayerSlot(slot.index, pick.label, i, searchable))
            i += 1
    return out, None


def derived_choices(run: Run) -> tuple[dict[str, str], str | None]:
    """The choice the derived network made for each probability row (row label -> choice), and a
    note when they cannot be told (block spaces need the space file to align layers with rows)."""
    arch = run.arch
    if arch.kind == "cells":
        from hwnas.supernet import edge_label  # lazily: it imports torch

        out = {}
        for cell in ("normal", "reduce"):
            for i, (op, src) in enumerate(arch.body["genotype"][cell]):  # two inputs per node
                out[edge_label(cell, i // 2, src)] = op
        return out, None
    aligned, why = align_layers(run)
    if aligned is None:
        return {}, f"the derived choices are not marked: {why}"
    return {f"layer {a.index}": a.choice for a in aligned if a.searchable}, None


# -- drawing --------------------------------------------------------------------------------


def _figure(w: float, h: float, layout: str | None = "constrained") -> Any:
    """A matplotlib figure on the Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes (white background, no timestamp-like metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _epoch_ticks(ax: Any) -> None:
    """Whole epochs on the x axis, at most about six of them labelled."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))


def draw_probabilities(rows: list[ProbRow], epochs: np.ndarray, derived: dict[str, str], title: str) -> bytes:
    """Small multiples: one heatmap per row (choices x epochs; colour scale 0 to the largest
    probability, rounded up to 0.05, so that early near-uniform searches still show contrast;
    the values are written in when there are at most 8 epochs); the derived choice is outlined in
    red and its label is red and bold; rows the derived net does not use (DARTS edges not kept)
    are titled in grey."""
    from matplotlib.patches import Rectangle

    n = len(rows)
    ncols = min(n, max(3, math.ceil(math.sqrt(1.5 * n))))
    nrows = math.ceil(n / ncols)
    tallest = max(len(r.choices) for r in rows)
    top = float(np.nanmax([np.nanmax(r.probs) for r in rows]))
    vmax = 1.0 if not math.isfinite(top) else min(1.0, math.ceil(top * 20) / 20)  # uniform-ish early: widen
    # laid out by hand (inches): constrained layout costs more than the drawing with many panels
    label_w = 0.064 * max(len(c) for r in rows for c in r.choices) + 0.25  # y tick labels at 6.5 pt
    cell_w, cell_h, gap_h, bar_w = 1.9, 0.2 * tallest, 0.62, 1.1
    width, height = ncols * (label_w + cell_w) + bar_w, nrows * (cell_h + gap_h) + 0.4
    fig = _figure(width, height, layout=None)
    fig.subplots_adjust(
        left=label_w / width,
        right=1 - bar_w / width,
        bottom=0.45 / height,
        top=1 - 0.65 / height,
        wspace=label_w / cell_w,
        hspace=gap_h / cell_h,
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    t = len(epochs)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_axis_off()
            continue
        r = rows[k]
        im = ax.imshow(
            r.probs,
            aspect="auto",
            vmin=0,
            vmax=vmax,
            cmap="viridis",
            interpolation="nearest",
            extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(r.choices) - 0.5, -0.5),
        )
        if t <= 8:  # few epochs: the values themselves
            for (c, e), v in np.ndenumerate(r.probs):
                tc = "white" if v < 0.6 * vmax else "black"
                ax.text(epochs[e], c, f"{v:.2f}", ha="center", va="center", fontsize=5.5, color=tc)
        ax.set_yticks(range(len(r.choices)), r.choices, fontsize=6.5)
        ax.tick_params(axis="x", labelsize=7)
        _epoch_ticks(ax)
        pick = derived.get(r.label)
        if pick in r.choices:
            i = r.choices.index(pick)
            ax.add_patch(Rectangle((epochs[0] - 0.5, i - 0.5), t, 1, fill=False, ec="red", lw=1.8, clip_on=False))
            lab = ax.get_yticklabels()[i]
            lab.set_color("red")
            lab.set_fontweight("bold")
            ax.set_title(f"{r.label} → {pick}", fontsize=8)
        else:
            ax.set_title(f"{r.label} (not kept)" if derived else r.label, fontsize=8, color="0.5" if derived else "k")
        if k // ncols == nrows - 1 or k + ncols >= n:
            ax.set_xlabel("epoch", fontsize=7)
    if im is not None:
        cax = fig.add_axes((1 - 0.8 * bar_w / width, 0.2, 0.12 / width, 0.6))
        fig.colorbar(im, cax=cax, label="probability")
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def draw_latency(history: pd.DataFrame, budget: float | None, predicted: float | None) -> bytes:
    """E[latency] per epoch against the budget, with the derived net's predicted latency (after
    budget fitting) at the last epoch (top); the latency multiplier λ per epoch (bottom)."""
    ep = search_epochs(history)
    has_lam = "lam" in history.columns
    fig = _figure(7.5, 5.0 if has_lam else 3.4)
    axes = fig.subplots(2 if has_lam else 1, 1, sharex=True, squeeze=False, height_ratios=[2, 1] if has_lam else None)
    ax = axes[0, 0]
    ax.plot(ep, history["e_lat_ms"], "o-", color="C0", label="E[latency] of the supernet")
    if budget is not None:
        ax.axhline(budget, color="C3", ls="--", label=f"budget {budget:.3f} ms")
    if predicted is not None:
        ax.plot([ep[-1]], [predicted], "*", ms=14, color="C2", label=f"derived net, predicted {predicted:.3f} ms")
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("expected latency against the budget, and the latency multiplier λ", fontsize=10)
    if has_lam:
        axes[1, 0].plot(ep, history["lam"], "s-", color="C1", label="λ")
        axes[1, 0].set_ylabel("λ")
    axes[-1, 0].set_xlabel("epoch")
    _epoch_ticks(axes[-1, 0])
    return _png(fig)


def draw_curves(history: pd.DataFrame | None, train: pd.DataFrame | None, test_acc: float | None) -> bytes:
    """Loss (top) and accuracy (bottom) per epoch: the search's supernet (left) and the training
    of the derived net (right), whichever are given."""
    panels = [
        p
        for p in (("search (supernet, weight half)", history), ("training of the derived net", train))
        if p[1] is not None
    ]
    fig = _figure(4.6 * len(panels) + 0.6, 6.0)
    axes = fig.subplots(2, len(panels), squeeze=False)
    for j, (name, df) in enumerate(panels):
        ep = search_epochs(df) if df is history else pd.to_numeric(df["epoch"], errors="coerce").to_numpy(float)
        top, bottom = axes[0, j], axes[1, j]
        if "loss" in df.columns:
            top.plot(ep, df["loss"], "o-", label="training loss")
        top.set_title(name, fontsize=10)
        top.set_ylabel("cross-entropy")
        for col, lab in (("train_acc", "train accuracy"), ("val_acc", "validation accuracy")):
            if col in df.columns:
                bottom.plot(ep, 100 * df[col], "o-", label=lab)
        if df is train and test_acc is not None:
            bottom.axhline(100 * test_acc, color="C3", ls="--", label=f"test accuracy {100 * test_acc:.2f} %")
        bottom.set_ylabel("accuracy (%)")
        bottom.set_xlabel("epoch")
        for ax in (top, bottom):
            _epoch_ticks(ax)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    return _png(fig)


def _block_text(op: str, p: dict[str, Any], out_c: int) -> tuple[str, str]:
    """(short name, detail lines) of a block in the strip."""
    stride = f"/{p['stride']}" if p.get("stride", 1) != 1 else ""
    if op == "mbconv":
        g = f"\ng{p['groups']}" if p.get("groups", 1) != 1 else ""
        return f"MB{p['e']}", f"k{p['k']}\ne{p['e']}{g}\n{out_c}{stride}"
    if op == "conv_bn_act":
        return "conv", f"k{p.get('k', '?')}\n{out_c}{stride}"
    if op == "head":
        return "head", f"{p.get('mix') or ''}\n{p.get('classes', '')} cls"
    return op, f"{out_c}{stride}"


def draw_strip(arch: Arch, pred: Prediction | None, aligned: list[LayerSlot] | None = None) -> bytes:
    """A block network as a strip of its layers (op, kernel k, expand ratio e, channels/stride),
    coloured by expand ratio, with each block's share of the predicted latency above it.

    With ``aligned`` (see :func:`align_layers`) layers are numbered as the space's slots (the
    probability rows' ``layer N``) and layers dropped by ``zero`` are drawn as dashed gaps.
    """
    from matplotlib import colormaps
    from matplotlib.patches import Patch, Rectangle

    nodes = list(arch.plan.nodes)  # stem, layers[0..], head: one node each
    items: list[tuple[str, Any]] = [("stem", nodes[0])]
    if aligned is None:
        items += [(str(i), nd) for i, nd in enumerate(nodes[1:-1])]
    else:
        items += [(str(a.index), None if a.layer is None else nodes[1 + a.layer]) for a in aligned]
    items.append(("head", nodes[-1]))
    n = len(items)
    ratios = sorted({int(nd.call.param_dict["e"]) for _, nd in items if nd is not None and nd.call.op == "mbconv"})
    cmap = colormaps["Blues"]
    color_of = {e: cmap(0.3 + 0.6 * i / max(1, len(ratios) - 1)) for i, e in enumerate(ratios)}
    share: dict[str, float] = {}
    if pred is not None:
        share = {w: 100 * pred.scale * ms / pred.total_ms for w, _, ms in pred.blocks}
    fig = _figure(max(7.0, 0.5 * n + 1.4), 5.4 if pred is not None else 3.0)
    if pred is not None:
        top, ax = fig.subplots(2, 1, height_ratios=[2.2, 1.6], sharex=True)
    else:
        ax = fig.subplots()
    for i, (_, nd) in enumerate(items):
        if nd is None:
            ax.add_patch(Rectangle((i - 0.3, 0.1), 0.6, 0.8, fill=False, ec="0.6", ls="--", lw=0.8))
            ax.text(i, 0.5, "zero", ha="center", va="center", fontsize=6.5, color="0.5", rotation=90)
            continue
        p = nd.call.param_dict
        name, detail = _block_text(nd.call.op, p, nd.call.out_shape[0])
        dark = False
        if nd.call.op == "mbconv":
            fc = color_of[int(p["e"])]
            dark = len(ratios) > 1 and ratios.index(int(p["e"])) >= len(ratios) / 2
        else:
            fc = "0.85" if nd.call.op in ("conv_bn_act", "head") else "0.95"
        tc = "white" if dark else "black"
        ax.add_patch(Rectangle((i - 0.44, 0), 0.88, 1, fc=fc, ec="0.3", lw=0.8))
        ax.text(i, 0.86, name, ha="center", va="center", fontsize=7, fontweight="bold", color=tc)
        ax.text(i, 0.42, detail, ha="center", va="center", fontsize=6.5, color=tc, linespacing=1.15)
        if pred is not None:
            s = share.get(nd.where, 0.0)
            top.bar(i, s, width=0.8, color=fc, ec="0.3", lw=0.6)
            top.text(i, s, f"{s:.1f}", ha="center", va="bottom", fontsize=6.5)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    ax.set_xticks(range(n), [label for label, _ in items], fontsize=7)
    ax.set_xlabel("layer (as numbered in the probabilities)" if aligned is not None else "layer (arch.json layers[i])")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    legend = [Patch(fc=color_of[e], ec="0.3", label=f"expand ratio {e}") for e in ratios]
    if pred is not None:
        ov = pred.overhead_ms
        top.set_ylabel("% of predicted latency")
        top.set_title(
            f"predicted {pred.total_ms:.3f} ms = {pred.scale:.3f} × Σ blocks ({pred.sum_ms:.3f} ms) "
            f"{'+' if ov >= 0 else '−'} {abs(ov):.3f} ms overhead ({signed_pct(ov / pred.total_ms)} %)",
            fontsize=9,
        )
        top.spines[["top", "right"]].set_visible(False)
        if legend:
            top.legend(handles=legend, fontsize=7, loc="upper right")
    else:
        if legend:
            ax.legend(handles=legend, fontsize=7, ncols=len(legend), loc="lower right", bbox_to_anchor=(1, 1))
        ax.set_title("the derived network (latency shares not drawn: see the note above)", fontsize=9, loc="left")
    return _png(fig)


def _cell_nodes(genotype: list[list[Any]]) -> list[list[tuple[str, str]]]:
    """Per intermediate node, its incoming ``(op, source name)`` edges, DARTS's node names."""
    names = lambda src: "c_{k-2}" if src == 0 else "c_{k-1}" if src == 1 else str(src - 2)  # noqa: E731
    return [[(str(op), names(int(src))) for op, src in genotype[2 * j : 2 * j + 2]] for j in range(len(genotype) // 2)]


def cell_dot(genotype: list[list[Any]], title: str) -> Any:
    """A DARTS cell as a graphviz graph laid out left to right, as DARTS's visualize.py draws it:
    inputs ``c_{k-2}``, ``c_{k-1}``, intermediate nodes ``0..n-1``, output ``c_{k}``; edges
    labelled with their op; every intermediate node feeds the output (concatenation)."""
    import graphviz

    g = graphviz.Digraph(
        graph_attr={
            "rankdir": "LR",
            "label": title,
            "labelloc": "t",
            "fontsize": "22",
            "fontname": "helvetica",
            "dpi": "96",
        },
        node_attr={
            "style": "filled",
            "shape": "rect",
            "fontsize": "20",
            "height": "0.5",
            "width": "0.5",
            "penwidth": "2",
            "fontname": "helvetica",
        },
        edge_attr={"fontsize": "16", "fontname": "helvetica"},
    )
    nodes = _cell_nodes(genotype)
    for name in ("c_{k-2}", "c_{k-1}"):
        g.node(name, fillcolor="darkseagreen2")
    for j in range(len(nodes)):
        g.node(str(j), fillcolor="lightblue")
    for j, edges in enumerate(nodes):
        for op, src in edges:
            g.edge(src, str(j), label=op, color="gray30")
    g.node("c_{k}", fillcolor="palegoldenrod")
    for j in range(len(nodes)):
        g.edge(str(j), "c_{k}", color="gray60")
    return g


def draw_cell(genotype: list[list[Any]], title: str) -> tuple[bytes, str | None]:
    """The cell as a PNG: with graphviz's ``dot`` if it runs here, else drawn with matplotlib.
    Returns the PNG and a note when the fallback was used."""
    try:
        return cell_dot(genotype, title).pipe(format="png"), None
    except ImportError:
        why = "the graphviz Python package is not installed"
    except Exception as e:  # graphviz.ExecutableNotFound, a failing dot: draw it ourselves
        why = f"graphviz's dot did not run ({type(e).__name__})"
    return draw_cell_mpl(
        genotype, title
    ), f"{why}; the cells are drawn with matplotlib instead (apt-get install graphviz)"


def draw_cell_mpl(genotype: list[list[Any]], title: str) -> bytes:
    """The same cell graph as :func:`cell_dot`, drawn with matplotlib (no ``dot`` needed)."""
    nodes = _cell_nodes(genotype)
    n = len(nodes)
    pos = {"c_{k-2}": (0.0, 1.0), "c_{k-1}": (0.0, -1.0), "c_{k}": (n + 1.0, 0.0)}
    for j in range(n):
        pos[str(j)] = (1.0 + j, 0.8 if j % 2 == 0 else -0.8)
    fig = _figure(2.2 * n + 3, 3.8)
    ax = fig.subplots()

    def arrow(a: str, b: str, label: str | None, rad: float) -> None:
        ax.annotate(
            "",
            xy=pos[b],
            xytext=pos[a],
            arrowprops={
                "arrowstyle": "-|>",
                "color": "0.3" if label else "0.6",
                "shrinkA": 16,
                "shrinkB": 16,
                "connectionstyle": f"arc3,rad={rad}",
            },
        )
        if label:
            (x0, y0), (x1, y1) = pos[a], pos[b]
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            ax.text(
                mx + rad * (y1 - y0) / 2,
                my - rad * (x1 - x0) / 2,
                label,
                fontsize=7,
                ha="center",
                va="center",
                bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 0.5},
            )

    for j, edges in enumerate(nodes):
        for e, (op, src) in enumerate(edges):
            arrow(src, str(j), op, 0.15 if e == 0 else -0.15)
    for j in range(n):
        arrow(str(j), "c_{k}", None, 0.0)
    colors = {"c_{k-2}": "#b4eeb4", "c_{k-1}": "#b4eeb4", "c_{k}": "#eee8aa"}
    for name, (x, y) in pos.items():
        ax.text(
            x,
            y,
            name,
            ha="center",
            va="center",
            fontsize=10,
            bbox={"boxstyle": "square,pad=0.4", "fc": colors.get(name, "#add8e6"), "ec": "black", "lw": 1.5},
        )
    ax.set_xlim(-0.6, n + 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return _png(fig)


def draw_fidelity(doc: dict[str, Any], own: tuple[float, float] | None) -> bytes:
    """Predicted against measured latency of the fidelity report's networks, with the ±5 % and
    ±10 % bands around equality; ``own`` = (measured, predicted) of the run's net, if known."""
    m, p = np.array(doc["measured_ms"], float), np.array(doc["predicted_ms"], float)
    pts = [*m, *p, *(own or ())]
    lo, hi = min(pts) * 0.9, max(pts) * 1.1
    x = np.linspace(lo, hi, 50)
    fig = _figure(5.8, 5.2)
    ax = fig.subplots()
    ax.fill_between(x, 0.9 * x, 1.1 * x, color="C1", alpha=0.15, lw=0, label="±10 %")
    ax.fill_between(x, 0.95 * x, 1.05 * x, color="C2", alpha=0.25, lw=0, label="±5 %")
    ax.plot(x, x, color="0.3", lw=1, label="predicted = measured")
    err = _errors_pct(doc)
    for ok, color, what in ((err <= 5, "C0", "within ±5 %"), (err > 5, "C3", "off by more than 5 %")):
        if ok.any():
            ax.scatter(m[ok], p[ok], s=22, c=color, zorder=3, label=f"{int(ok.sum())} random nets {what}")
    if own is not None:
        ax.plot([own[0]], [own[1]], "*", ms=15, color="C4", zorder=4, label="this run's net")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    note = _drift_note(doc).strip(" ()")
    title = f"LUT fidelity: MAPE {err.mean():.2f} %, max {err.max():.2f} %, within ±5 % {100 * (err <= 5).mean():.0f} %"
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def draw_random_nets(doc: dict[str, Any], own: tuple[float, float] | None, budget: float | None) -> bytes:
    """Test accuracy against predicted latency: random nets of the space (grey), searched nets
    listed in the file (orange), and this run's net (star) if its test accuracy is known."""
    nets = doc["nets"]
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    for searched, style in (
        (False, {"c": "0.55", "label": "random nets"}),
        (True, {"c": "C1", "label": "searched (in the file)"}),
    ):
        pts = [(n["predicted_ms"], 100 * n["test_acc"]) for n in nets if bool(n.get("searched")) is searched]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=36, zorder=3, **style)
    if own is not None:
        ax.plot([own[0]], [100 * own[1]], "*", ms=16, color="C3", zorder=4, label="this run's net")
    b = doc.get("budget_ms") if is_number(doc.get("budget_ms")) else budget
    if b is not None:
        ax.axvline(b, color="C3", ls="--", lw=1, label=f"budget {b:.3f} ms")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("test accuracy (%)")
    how = ", ".join(f"{k} {doc[k]}" for k in ("train_epochs", "train_limit") if k in doc)
    ax.set_title("latency against accuracy" + (f" (each trained with {how})" if how else ""), fontsize=9)
    ax.legend(fontsize=8)
    return _png(fig)


# -- the page -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote: the page, the PNGs beside it, and the pieces not in the run."""

    html: Path
    images: tuple[Path, ...]
    missing: tuple[str, ...]  # "what, produced by `command`", one per missing piece
    problems: tuple[str, ...]  # files present but unusable, one line each
    notes: tuple[str, ...]  # other things the page says (LUT not used, fallbacks)


class _Page:
    """Accumulates sections, images and missing pieces; renders the HTML."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.images: dict[str, bytes] = {}
        self.missing: list[str] = []
        self.notes: list[str] = []

    def h2(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def p(self, text: str, cls: str | None = None) -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{c}>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.p(text, "note")

    def absent(self, what: str, command: str) -> None:
        """The "not in this run" line for a missing piece."""
        self.missing.append(f"{what}, produced by `{command}`")
        self.parts.append(
            f'<p class="missing">not in this run: {html.escape(what)}, produced by <code>{html.escape(command)}</code></p>'
        )

    def image(self, name: str, png: bytes, caption: str) -> None:
        self.images[name] = png
        data = base64.b64encode(png).decode("ascii")
        cap = html.escape(caption)
        self.parts.append(
            f'<figure><a href="{html.escape(name)}"><img src="data:image/png;base64,{data}" alt="{cap}" '
            f'data-file="{html.escape(name)}"></a><figcaption>{cap} <a href="{html.escape(name)}">{html.escape(name)}</a>'
            "</figcaption></figure>"
        )

    def raw(self, fragment: str) -> None:
        self.parts.append(fragment)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
img{max-width:100%;height:auto;border:1px solid #eee} figure{margin:1em 0} figcaption{font-size:.85em;color:#555}
table.summary{border-collapse:collapse;font-size:.9em} table.summary td,table.summary th{border:1px solid #ddd;padding:.3em .6em;text-align:left}
table.summary th{background:#f4f4f4} .missing{color:#8a4b00;background:#fff6e5;padding:.3em .6em;border-left:3px solid #e0a040}
.note{color:#444;background:#f2f6fb;padding:.3em .6em;border-left:3px solid #7aa0d0} code{background:#f4f4f4;padding:0 .2em}
.problem{color:#a00;background:#fdeeee;padding:.3em .6em;border-left:3px solid #d04040}
"""


def _fmt_ms(v: Any) -> str:
    return f"{float(v):.3f} ms" if is_number(v) else "n/a"


def _file_times(run: Run) -> float | None:
    """Seconds from config.json (written when the search starts) to arch.json (when it ends)."""
    try:
        t = (run.dir / "arch.json").stat().st_mtime - (run.dir / "config.json").stat().st_mtime
    except OSError:
        return None
    return t if t >= 0 else None


def summary_table(run: Run, page: _Page) -> pd.DataFrame:
    """The summary rows (figure, value, where it comes from); absent pieces say so."""
    info = run.info
    rows: list[tuple[str, str, str]] = []
    add = lambda k, v, src: rows.append((k, v, src))  # noqa: E731
    add(
        "network",
        f"{run.arch.kind} arch of space {run.arch.space}, input {'x'.join(map(str, run.arch.input))}",
        "arch.json",
    )
    strat = info.get("strategy")
    if strat:
        extra = [f"loss {info['loss']}"] if info.get("loss") else []
        extra += [k for k in ("hard", "unrolled") if info.get(k)]
        add(
            "search",
            f"{strat}{' (' + ', '.join(extra) + ')' if extra else ''}, {info.get('epochs', '?')} epoch(s), seed {info.get('seed', '?')}",
            "arch.json info",
        )
    budget = info.get("budget_ms")
    pct = info.get("budget_pct")
    add("latency budget", _fmt_ms(budget) + (f" (p{pct:g} of random nets)" if is_number(pct) else ""), "arch.json info")
    pred = info.get("predicted_ms")
    share = f" ({100 * pred / budget:.1f} % of the budget)" if is_number(pred) and is_number(budget) and budget else ""
    add("predicted latency", _fmt_ms(pred) + share, "arch.json info (the search's LUT)")
    if run.measured is not None:
        ms, src = run.measured
        rel = f" (predicted {signed_pct(pred / ms - 1)} %)" if is_number(pred) else ""
        add("measured latency", f"{ms:.3f} ms{rel}", src)
    else:
        add("measured latency", "not in this run", "hwnas measure … --json > measure.json")
    macs, params, src = None, None, ""
    if run.onnx_meta and run.onnx_meta.get("macs", "").isdigit() and run.onnx_meta.get("params", "").isdigit():
        macs, params, src = int(run.onnx_meta["macs"]), int(run.onnx_meta["params"]), "model.onnx metadata"
    else:
        try:
            from hwnas.flops import count

            cost = count(run.arch)
            macs, params, src = cost.macs, cost.params, "counted from arch.json (fvcore)"
        except Exception as e:  # a network fvcore cannot trace: say so, keep the report
            page.note(f"MACs and parameters could not be counted ({type(e).__name__})")
    if macs is not None:
        add('MACs ("FLOPs")', f"{macs / 1e6:.2f} M", src)
        add("parameters", f"{params / 1e6:.4f} M", src)
    tr = run.train_result or {}
    if is_number(tr.get("test_acc")):
        n = tr.get("test_examples")
        add(
            "test accuracy",
            f"{100 * tr['test_acc']:.2f} %" + (f" on {n} {tr.get('dataset', '')} test images" if n else ""),
            "train/result.json",
        )
    elif run.onnx_meta and _parses(run.onnx_meta.get("test_acc")):
        add("test accuracy", f"{100 * float(run.onnx_meta['test_acc']):.2f} %", "model.onnx metadata")
    else:
        add("test accuracy", "not in this run", "hwnas train")
    if run.history is not None and "train_acc" in run.history.columns:
        add(
            "search accuracy (supernet, last epoch)",
            f"{100 * float(run.history['train_acc'].iloc[-1]):.2f} % (training batches)",
            "history.csv",
        )
    secs = _file_times(run)
    if secs is not None:
        add("search time", f"≈ {secs:.0f} s", "config.json → arch.json file times (includes any pause before --resume)")
    else:
        add("search time", "n/a", "needs config.json and arch.json")
    if is_number(tr.get("seconds")):
        add("training time", f"{tr['seconds']:.0f} s", "train/result.json")
    add("LUT", str(info.get("lut", "not recorded")), "arch.json info")
    if info.get("lut_target"):
        add("LUT target", str(info["lut_target"]), "arch.json info")
    digest = str(info.get("lut_sha256", ""))
    status = {
        "found": "matches the LUT file",
        "other": "DIFFERS from the LUT file now on disk",
        "unusable": "LUT file unusable",
        "missing": "LUT file not found",
    }[run.lut_status]
    add("LUT sha256", f"{digest[:16]}… ({status})" if digest else "not recorded", "arch.json info")
    if run.lut is not None:
        m = run.lut.meta
        v = m.get("versions", {})
        ver = ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "torch") if k in v)
        add(
            "LUT measured",
            f"{m.get('date', '?')} on {m.get('host', '?')}: {m.get('keys', len(run.lut.table))} keys, {m.get('rounds', '?')} rounds; {ver}",
            str(run.lut_file),
        )
    if run.fidelity is not None:
        err = _errors_pct(run.fidelity)
        figures = f"MAPE {err.mean():.2f} %, max {err.max():.2f} %, within ±5 % {100 * (err <= 5).mean():.0f} %"
        add("LUT fidelity", f"{len(err)} random nets: {figures}{_drift_note(run.fidelity)}", "fidelity.json")
    return pd.DataFrame(rows, columns=["", "value", "from"])


def _fidelity_of_other_lut(fidelity: dict[str, Any], info: dict[str, Any]) -> str | None:
    """The note that ``fidelity`` (fidelity.json) reports on another LUT than the run's (``info``
    of arch.json), or None if it is the run's: the same ``lut_sha256`` if both record one, else
    (fidelity.json of older versions) the same file name."""
    theirs, ours = fidelity.get("lut_sha256"), info.get("lut_sha256")
    if isinstance(theirs, str) and isinstance(ours, str):
        if theirs == ours:
            return None
        return (
            f"fidelity.json is the report of LUT {fidelity.get('lut')} (sha256 {theirs[:12]}…); this run was "
            f"searched with {info.get('lut')} (sha256 {ours[:12]}…)."
        )
    if Path(str(fidelity.get("lut", ""))).name == Path(str(info.get("lut", ""))).name:
        return None
    return f"fidelity.json is the report of LUT {fidelity.get('lut')}; this run was searched with {info.get('lut')}."


def _sections(run: Run, page: _Page) -> None:
    """Fill ``page`` with the sections of the report (see the module docstring)."""
    info = run.info
    budget = info.get("budget_ms") if is_number(info.get("budget_ms")) else None
    predicted = float(info["predicted_ms"]) if is_number(info.get("predicted_ms")) else None
    test_acc = (run.train_result or {}).get("test_acc")
    test_acc = float(test_acc) if is_number(test_acc) else None
    quoted_dir = shlex.quote(str(run.dir))
    search_cmd = f"hwnas search --space {run.arch.space} --lut {run.lut_arg} --latency-budget … --out {quoted_dir}"

    page.h2("Summary")
    page.raw(summary_table(run, page).to_html(index=False, escape=True, border=0, classes="summary"))
    for prob in run.problems:
        page.raw(f'<p class="problem">{html.escape(prob)}</p>')

    page.h2("The derived network")
    if run.lut_note:
        page.note(f"Latency shares: {run.lut_note}.")
    if run.arch.kind == "blocks":
        aligned, _ = align_layers(run)
        caption = (
            "The derived network, block by block: op, kernel k, expand ratio e, output channels / stride; above, "
            "each block's share of the predicted latency (scale × its LUT time / predicted total)."
        )
        page.image("network.png", draw_strip(run.arch, run.prediction, aligned), caption)
    else:
        fallback = None
        for cell in ("normal", "reduce"):
            png, why = draw_cell(run.arch.body["genotype"][cell], f"{cell} cell")
            fallback = fallback or why
            caption = (
                f"The derived {cell} cell: c_{{k-2}} and c_{{k-1}} are the outputs of the two previous cells, "
                "c_{k} the concatenation of the intermediate nodes."
            )
            page.image(f"cell_{cell}.png", png, caption)
        if fallback:
            page.note(fallback)

    page.h2("Architecture probabilities over the search")
    rows = prob_rows(run.history) if run.history is not None else []
    if run.history is None or not rows:
        page.absent("the search history (history.csv with p[...] columns)", search_cmd)
    else:
        derived, why = derived_choices(run)
        if why:
            page.note(why)
        ep = search_epochs(run.history)
        what = "layer" if run.arch.kind == "blocks" else "edge"
        groups = [("probabilities.png", "", rows)]
        if run.arch.kind == "cells":
            groups = [
                (f"probabilities_{c}.png", f"{c} cell: ", [r for r in rows if r.label.startswith(c + " ")])
                for c in ("normal", "reduce")
            ]
        for name, prefix, rs in groups:
            if not rs:
                continue
            title = f"{prefix}probability of each choice per {what}, after each epoch"
            caption = (
                f"{prefix}Architecture probabilities per {what} over the epochs; the derived choice is outlined in "
                "red (it can differ from the most probable one: budget fitting swaps choices)."
            )
            page.image(name, draw_probabilities(rs, ep, derived, title), caption)

    page.h2("Expected latency, budget and λ")
    if run.history is not None and "e_lat_ms" in run.history.columns:
        caption = (
            "E[latency] of the supernet after each epoch (the LUT's whole-net model over the architecture "
            "distribution) against the budget, and the derived net's prediction; λ, the latency term's multiplier."
        )
        page.image("latency.png", draw_latency(run.history, budget, predicted), caption)
    else:
        page.absent("E[latency] and λ per epoch (history.csv)", search_cmd)

    page.h2("Loss and accuracy")
    if run.history is not None or run.train_history is not None:
        caption = (
            "Loss and accuracy per epoch: the search (supernet, on the weight half of its data) and the training "
            "of the derived network from scratch (validation: a held-out part of the training split)."
        )
        page.image("curves.png", draw_curves(run.history, run.train_history, test_acc), caption)
    if run.train_history is None:
        page.absent(
            "the training curves of the derived net (train/history.csv)", f"hwnas train {run.path('arch.json')}"
        )

    page.h2("Predicted against measured latency")
    if run.fidelity is not None:
        f = run.fidelity
        other = _fidelity_of_other_lut(f, info)
        if other:
            page.note(other)
        own = (run.measured[0], predicted) if run.measured is not None and predicted is not None else None
        caption = (
            "Predicted against measured end-to-end latency of the fidelity report's random networks, with the ±5 % "
            "and ±10 % bands; red points are off by more than 5 %."
        )
        page.image("fidelity.png", draw_fidelity(f, own), caption)
    else:
        cmd = f"hwnas validate-lut --lut {run.lut_arg} --nets 20 --json {run.path('fidelity.json')}"
        page.absent("the LUT fidelity report (fidelity.json)", cmd)
    if run.measured is None:
        cmd = f"hwnas measure {run.path('arch.json')} --lut {run.lut_arg} --json > {run.path('measure.json')}"
        page.absent("the measured latency of this net (measure.json)", cmd)

    page.h2("Latency and accuracy against random networks")
    if run.random_nets is not None:
        rn = run.random_nets
        if rn.get("lut_sha256") not in (None, info.get("lut_sha256")):
            page.note("random_nets.json was priced with another LUT than this run's search.")
        own = (predicted, test_acc) if predicted is not None and test_acc is not None else None
        caption = (
            "Test accuracy against predicted latency of random networks of the same space; accuracies compare only "
            "between networks trained the same way (this run's net: its own hwnas train settings)."
        )
        page.image("random_nets.png", draw_random_nets(rn, own, budget), caption)
    else:
        cmd = (
            f"python bench/search_budget.py --space {shlex.quote(run.arch.space)} --lut {run.lut_arg} "
            f"--quality --quality-only --json {run.path('random_nets.json')}"
        )
        page.absent("accuracy of random nets of the space (random_nets.json)", cmd)

    if page.missing:
        page.h2("Not in this run")
        page.raw("<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in page.missing) + "</ul>")


def build_report(run_dir: Path, out: Path | None = None) -> ReportResult:
    """Write the HTML report of ``run_dir`` and its PNGs; see the module docstring.

    ``out`` is the HTML file (default ``run_dir/report/report.html``); the PNGs go in its
    directory, the page embeds each (base64 ``data:`` URI) and links it by file name. A run
    directory that does not exist or has no ``arch.json`` is a one-line
    :class:`~hwnas.errors.HwnasError`, as is an ``out`` that is a directory or whose directory
    cannot be written (checked by :func:`~hwnas.errors.check_out_path` before anything is drawn);
    every other missing or unreadable piece is reported in the page (and in the result), never raised.
    """
    run = load_run(Path(run_dir))
    html_path = Path(out) if out is not None else run.dir / "report" / "report.html"
    check_out_path(html_path, True, "-o")  # an existing report is replaced; its directory is created
    page = _Page()
    _sections(run, page)
    title = f"hwnas report: {run.dir}"
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        f"<p>{html.escape(run.arch.kind)} network of space <b>{html.escape(run.arch.space)}</b>; "
        f"generated {now} by hwnas report from the files in <code>{html.escape(str(run.dir))}</code>.</p>\n"
        + "\n".join(page.parts)
        + "\n</body></html>\n"
    )
    written = []
    for name, png in page.images.items():
        atomic_write(html_path.parent / name, png)
        written.append(html_path.parent / name)
    atomic_write(html_path, doc.encode("utf-8"))
    return ReportResult(html_path, tuple(written), tuple(page.missing), tuple(run.problems), tuple(page.notes))
