"""Export a derived network to a verified ONNX file: what ``hwnas export`` runs.

Pipeline (:func:`export_model`): build the network from its arch JSON (trained weights from a
``hwnas train`` file, or a seeded random init), fold every batch norm that directly follows
convolutions into them (:func:`fold_batchnorm`), export with the project's one exporter
(:func:`hwnas.onnx_io.export_onnx`, dynamic batch axis), verify the file (``onnx.checker``, and
ONNX Runtime against torch eager on random inputs at several batch sizes, :func:`parity`), record
where it came from in the model's ``metadata_props`` (:data:`META_PREFIX` keys), write it
atomically, and time it end to end against torch eager (:func:`time_exported`).

The metadata makes an exported file self-describing: ``hwnas predict MODEL.onnx`` and ``hwnas
measure MODEL.onnx`` read the arch from it (:func:`arch_from_onnx`), and ``hwnas export
--check-only`` re-verifies a file (:func:`check_model`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hwnas import __version__
from hwnas.arch import Arch, ArchError
from hwnas.checks import is_number
from hwnas.errors import HwnasError, check_out_path
from hwnas.lut import LUT, LutError, atomic_write
from hwnas.onnx_io import OPSET, export_onnx
from hwnas.profiling.profile import ProfileSettings

FORMAT = "hwnas.onnx/1"
META_PREFIX = "hwnas."
PARITY_ATOL = 1e-4  # max |ONNX Runtime - torch| over all outputs (logits) for a file to be written
PARITY_BATCHES = (1, 2, 5)  # batch sizes compared at export (> 1: the batch axis is dynamic)
CHECK_BATCHES = (1, 3)  # batch sizes ONNX Runtime runs in --check-only

Progress = Callable[[int, int, str], None]


class ExportError(HwnasError):
    """An export that cannot be done as asked, or a file that fails verification."""


# -- the network ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The network to export: its arch (at the deployment input), the module, and its weights.

    ``weights`` is None for a random init (``seed``); ``notes`` are lines for the user (e.g. the
    weights file's own arch was exported instead of the one given).
    """

    arch: Arch
    net: nn.Module
    weights: Path | None = None
    weights_sha256: str | None = None
    epoch: int | None = None
    test_acc: float | None = None
    seed: int = 0
    notes: tuple[str, ...] = ()

    @property
    def trained(self) -> bool:
        return self.weights is not None


def build_source(arch: Arch, weights: Path | None = None, seed: int = 0) -> Source:
    """The network of ``arch`` in eval mode, with the weights of a ``hwnas train`` file if given.

    The weights file stores the arch it was trained as. If that is :func:`~hwnas.weights.same_network`
    as ``arch`` it is used as is; if it is only :func:`~hwnas.weights.same_genotype` (DARTS trained
    with more cells or channels) the stored arch is exported, at ``arch``'s input size, and a note
    says so; anything else is an :class:`ExportError`. A tensor that does not fit is named
    (:func:`hwnas.weights.load_into`). Without weights the init is random, seeded by ``seed``.
    """
    from hwnas.weights import load_into, load_weights, same_genotype, same_network

    if weights is None:
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
            torch.manual_seed(seed)
            net = arch.build()
        return Source(arch, net.eval(), seed=seed)
    w = load_weights(weights)
    notes: list[str] = []
    if same_network(w.arch, arch):
        target = arch
    elif same_genotype(w.arch, arch):
        target = Arch(
            w.arch.kind, w.arch.space, arch.input, w.arch.body, {**w.arch.info, "searched_as": arch.to_dict()}
        )
        notes.append(
            f"note: {weights} was trained with the same genotype at {_cells_desc(w.arch)} (the arch given has "
            f"{_cells_desc(arch)}): exporting the network as trained"
        )
    else:
        raise ExportError(
            f"{weights} holds weights of another network than the arch given (stored vs given, "
            f"{arch_difference(w.arch, arch)}); pass the arch it was trained from"
        )
    if tuple(w.arch.input[1:]) != tuple(target.input[1:]):
        notes.append(
            f"note: trained at {w.arch.input[1]} px, exported at the arch's deployment input {target.input[1]} px"
        )
    net = target.build()
    load_into(net, w.state_dict, str(weights))
    return Source(target, net.eval(), Path(weights), w.sha256, w.epoch, w.test_acc, seed, tuple(notes))


def _cells_desc(a: Arch) -> str:
    return f"C={a.body['C']}, {a.body['layers']} cells"


def _arch_desc(a: Arch) -> str:
    return f"{a.kind} arch of space {a.space!r}" + (f", {_cells_desc(a)}" if a.kind == "cells" else "")


def _short(v: Any) -> str:
    if isinstance(v, dict) and "op" in v:  # an op dict: mbconv(e=3,k=5,out=24,stride=2,...)
        t = f"{v['op']}({','.join(f'{k}={v[k]}' for k in sorted(v) if k != 'op')})"
    else:
        t = json.dumps(v, sort_keys=True)
    return t if len(t) <= 100 else t[:97] + "..."


def arch_difference(a: Arch, b: Arch) -> str:
    """The first field in which two archs' networks differ, e.g. ``layers[3]: {...} vs {...}``."""
    if a.kind != b.kind:
        return f"kind: {a.kind} vs {b.kind}"
    if a.input[0] != b.input[0]:
        return f"input channels: {a.input[0]} vs {b.input[0]}"
    for k in a.body:
        x, y = a.body[k], b.body.get(k)
        if x == y:
            continue
        if isinstance(x, list) and isinstance(y, list):
            i = next((i for i, (u, v) in enumerate(zip(x, y, strict=False)) if u != v), min(len(x), len(y)))
            u, v = (_short(z[i]) if i < len(z) else "(none)" for z in (x, y))
            return f"{k}[{i}]: {u} vs {v}" + (f" ({len(x)} vs {len(y)} entries)" if len(x) != len(y) else "")
        if isinstance(x, dict) and isinstance(y, dict):
            sub = next((j for j in x if x[j] != y.get(j)), None)
            if sub is not None:
                return f"{k}.{sub}: {_short(x[sub])} vs {_short(y.get(sub))}"
        return f"{k}: {_short(x)} vs {_short(y)}"
    return "no difference in the layers"


# -- batch-norm folding ---------------------------------------------------------------------


def _has_bn(m: nn.Module) -> bool:
    return any(isinstance(x, nn.BatchNorm2d) for x in m.modules())


class _FoldTracer(fx.Tracer):
    """Traces into modules that contain a batch norm; anything else stays one call (a leaf)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return super().is_leaf_module(m, qualname) or not _has_bn(m)


def _set_module(root: nn.Module, target: str, new: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def _bn_slice(bn: nn.BatchNorm2d, lo: int, hi: int) -> nn.BatchNorm2d:
    """Channels ``lo:hi`` of an eval-mode batch norm as a batch norm of their own."""
    part = nn.BatchNorm2d(hi - lo, eps=bn.eps, affine=bn.affine).eval()
    with torch.no_grad():
        part.running_mean.copy_(bn.running_mean[lo:hi])  # type: ignore[index]
        part.running_var.copy_(bn.running_var[lo:hi])  # type: ignore[index]
        if bn.affine:
            part.weight.copy_(bn.weight[lo:hi])
            part.bias.copy_(bn.bias[lo:hi])
    return part


def _fold_graph(gm: fx.GraphModule) -> int:
    """Fold ``conv -> bn`` and ``cat([conv, ...], dim=1) -> bn`` in a traced module; returns the count.

    A conv is folded only when the batch norm is its output's one user and the conv module is
    called once (a shared module cannot take one batch norm's statistics).
    """
    mods = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1

    def lone_conv(n: Any) -> nn.Conv2d | None:
        if not (isinstance(n, fx.Node) and n.op == "call_module" and len(n.users) == 1 and calls[n.target] == 1):
            return None
        m = mods[n.target]
        return m if isinstance(m, nn.Conv2d) else None

    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods[node.target], nn.BatchNorm2d):
            continue
        bn = mods[node.target]
        if bn.training or bn.running_mean is None or calls[node.target] != 1 or len(node.args) != 1:
            continue
        src = node.args[0]
        conv = lone_conv(src)
        if conv is not None:
            _set_module(gm, src.target, fuse_conv_bn_eval(conv, bn))
        elif isinstance(src, fx.Node) and src.op == "call_function" and src.target is torch.cat and len(src.users) == 1:
            parts = src.args[0]
            dim = src.args[1] if len(src.args) > 1 else src.kwargs.get("dim", 0)
            convs = [lone_conv(p) for p in parts] if isinstance(parts, list | tuple) else [None]
            if dim not in (1, -3) or any(c is None for c in convs):
                continue
            if sum(c.out_channels for c in convs) != bn.num_features:  # type: ignore[union-attr]
                continue
            lo = 0
            for p, c in zip(parts, convs, strict=True):
                hi = lo + c.out_channels  # type: ignore[union-attr]
                _set_module(gm, p.target, fuse_conv_bn_eval(c, _bn_slice(bn, lo, hi)))  # type: ignore[arg-type]
                lo = hi
        else:
            continue
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return folded


def _fold(m: nn.Module) -> tuple[nn.Module, int]:
    if not _has_bn(m):
        return m, 0
    try:
        tracer = _FoldTracer()
        graph = tracer.trace(m)
    except Exception:  # not traceable (no forward, data-dependent control flow): fold its children
        return m, _fold_children(m)
    gm = fx.GraphModule(tracer.root, graph, type(m).__name__)
    n = _fold_graph(gm)
    return (gm, n) if n else (m, _fold_children(m))


def _fold_children(m: nn.Module) -> int:
    total = 0
    for name, child in list(m.named_children()):
        new, n = _fold(child)
        if new is not child:
            setattr(m, name, new)
        total += n
    return total


def fold_batchnorm(net: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``net`` with batch norms folded into the convolutions before them.

    Generic over modules: each submodule containing a ``BatchNorm2d`` is traced with ``torch.fx``
    (modules without one stay single calls) and every batch norm fed directly by a convolution —
    or by a channel concat of convolutions, as in DARTS's factorized reduce — is folded into it
    (``fuse_conv_bn_eval``; the concat case per channel slice). The top module is never traced,
    so a :class:`~hwnas.arch.PlanNet` keeps its nodes (and the ``/nodes.<i>/`` ONNX scopes).
    Returns the copy and how many batch norms were folded; the rest stay as they were. ``net``
    itself is unchanged. Outputs agree with ``net.eval()`` to float rounding (tested).
    """
    folded = copy.deepcopy(net).eval()
    return folded, _fold_children(folded)


# -- ONNX bytes, metadata, parity -----------------------------------------------------------


def export_bytes(net: nn.Module, arch: Arch) -> bytes:
    """ONNX bytes of ``net`` (eval) for inputs ``(batch, *arch.input)``, batch axis dynamic, opset :data:`OPSET`."""
    return export_onnx(net, [tuple(arch.input)], batch=1, dynamic_batch=True)


def count_ops(model: onnx.ModelProto, op_type: str) -> int:
    """How many nodes of ``op_type`` the main graph holds."""
    return sum(1 for n in model.graph.node if n.op_type == op_type)


def check_onnx(model: onnx.ModelProto, where: str) -> None:
    """``onnx.checker.check_model``; a failure is one :class:`ExportError` line."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{where}: onnx.checker rejects the model ({first})") from None


def _session(model: bytes | str, threads: int) -> Any:
    import onnxruntime as ort

    from hwnas.profiling.runner import session_options

    return ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])


def _inputs(shape: tuple[int, ...], batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def run_onnx(
    model: bytes | str, shape: tuple[int, ...], batches: tuple[int, ...], threads: int = 1
) -> list[np.ndarray]:
    """Outputs of ONNX Runtime (CPU, all graph optimisations) on seeded random inputs, one per batch size."""
    sess = _session(model, threads)
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: _inputs(shape, b, 1000 + b)})[0] for b in batches]


def parity(
    model: bytes | str, net: nn.Module, shape: tuple[int, ...], batches: tuple[int, ...] = PARITY_BATCHES
) -> float:
    """Max |ONNX Runtime - torch eager| over the outputs for seeded random inputs of each batch size.

    ``net`` is the reference (eval mode, float32, unfolded). A wrong output shape (e.g. a batch
    axis that is not dynamic) is an :class:`ExportError`.
    """
    outs = run_onnx(model, shape, batches)
    worst = 0.0
    net = net.eval()
    for b, got in zip(batches, outs, strict=True):
        with torch.no_grad():
            want = net(torch.from_numpy(_inputs(shape, b, 1000 + b))).numpy()
        if got.shape != want.shape:
            raise ExportError(f"ONNX Runtime gives output shape {got.shape} at batch {b}, torch {want.shape}")
        d = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
        worst = max(worst, d if math.isfinite(d) else math.inf)
    return worst


def with_metadata(model: bytes, meta: dict[str, str]) -> bytes:
    """``model`` with ``meta`` added to its ``metadata_props`` under :data:`META_PREFIX` (replacing old hwnas keys)."""
    m = onnx.load_from_string(model)
    keep = [(p.key, p.value) for p in m.metadata_props if not p.key.startswith(META_PREFIX)]
    del m.metadata_props[:]
    for k, v in [*keep, *((META_PREFIX + k, str(v)) for k, v in meta.items())]:
        m.metadata_props.add(key=k, value=v)
    return m.SerializeToString()


def load_onnx(path: Path) -> onnx.ModelProto:
    """Read an ONNX file; a missing or unreadable file is one :class:`ExportError` line."""
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: no such ONNX file")
    try:
        return onnx.load(str(p))
    except Exception as e:  # protobuf's DecodeError and friends
        raise ExportError(f"{p}: not a readable ONNX file ({type(e).__name__}); export it again") from None


def read_metadata(model: onnx.ModelProto | Path) -> dict[str, str]:
    """The hwnas metadata of an ONNX model (keys without :data:`META_PREFIX`); empty if none."""
    m = load_onnx(model) if isinstance(model, Path | str) else model
    return {p.key[len(META_PREFIX) :]: p.value for p in m.metadata_props if p.key.startswith(META_PREFIX)}


def arch_from_metadata(meta: dict[str, str], where: str, fix: str = "pass the arch JSON instead") -> Arch:
    """The arch stored by :func:`export_model`; no hwnas metadata, or a broken arch, is an :class:`ExportError`.

    ``fix`` ends the message for a file without hwnas metadata.
    """
    if "arch" not in meta:
        raise ExportError(f"{where}: not exported by hwnas export (no hwnas metadata); {fix}")
    if meta.get("format") != FORMAT:
        raise ExportError(
            f"{where}: hwnas metadata format {meta.get('format')!r} is not {FORMAT!r}; export it again with this hwnas"
        )
    try:
        return Arch.from_dict(json.loads(meta["arch"]), f"{where} (metadata arch)")
    except json.JSONDecodeError as e:
        raise ExportError(f"{where}: the metadata arch is not valid JSON ({e.msg}); export it again") from None
    except ArchError as e:
        raise ExportError(str(e)) from None


def arch_from_onnx(path: Path) -> Arch:
    """The arch an ONNX file was exported from (its hwnas metadata); see :func:`arch_from_metadata`."""
    return arch_from_metadata(read_metadata(Path(path)), str(path))


def pin_batch(model: bytes, batch: int, where: str = "the model") -> bytes:
    """``model`` with a symbolic first input/output dimension fixed to ``batch``.

    ONNX Runtime's timer binds inputs once and runs a symbolic dimension at 1; pinning times the
    batch asked for. A fixed batch other than ``batch`` is an :class:`ExportError`.
    """
    m = onnx.load_from_string(model)
    changed = False
    for v in [*m.graph.input, *m.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if not dims:
            continue
        d = dims[0]
        if d.HasField("dim_value"):
            if d.dim_value != batch:
                raise ExportError(f"{where} has a fixed batch of {d.dim_value}; measure it with --batch {d.dim_value}")
        else:
            d.dim_value = batch  # clears dim_param (a oneof)
            changed = True
    return m.SerializeToString() if changed else model


@contextlib.contextmanager
def timing_copy(path: Path, batch: int) -> Iterator[Path]:
    """``path`` itself, or a temporary copy with its dynamic batch pinned to ``batch`` (see :func:`pin_batch`)."""
    data = Path(path).read_bytes()
    pinned = pin_batch(data, batch, str(path))
    if pinned is data:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / Path(path).name
        p.write_bytes(pinned)
        yield p


# -- timing ---------------------------------------------------------------------------------


def time_exported(
    model: bytes,
    net: nn.Module,
    shape: tuple[int, ...],
    s: ProfileSettings,
    progress: Progress | None = None,
    refs: Sequence[tuple[Arch, float]] = (),
) -> tuple[float, float, float | None]:
    """End-to-end latency (ms) of the ONNX ``model`` with ONNX Runtime and of ``net`` in torch
    eager, and the machine's drift since the profile (None without ``refs``).

    Both on ``s``'s device, threads and batch, with its timing discipline, in the same rounds as
    the LUT's reference networks ``refs`` (:func:`hwnas.measure.measure_beside`): the ONNX job
    is the one ``hwnas measure`` times (:func:`hwnas.measure.onnx_loader`), the torch job the
    one the torch backend times (``TorchTimed``, malloc tuned, threads set; the previous torch
    thread count is restored afterwards).
    """
    from hwnas.measure import measure_beside
    from hwnas.profiling import runner
    from hwnas.profiling.profile import check_target
    from hwnas.profiling.torch_backend import TorchTimed, tune_malloc

    check_target(s)
    check_target(replace(s, backend="torch"))
    pinned = pin_batch(model, s.batch)
    tune_malloc()
    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        (ort_ms, torch_ms), drift = measure_beside(
            [
                lambda: runner.OrtModel(pinned, s.threads, s.device, spinning=s.ort_spinning),
                lambda: TorchTimed(net, [shape], s.device, s.batch),
            ],
            list(refs),
            s,
            progress,
            timing=replace(s, backend="onnxruntime").effective_timing,  # ORT's cool-down, whichever the LUT's
        )
    finally:
        torch.set_num_threads(threads)
        net.cpu()
    return ort_ms, torch_ms, drift


# -- the export -----------------------------------------------------------------------------


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and :func:`time_result` measured. Latencies in ms; ``None``: not asked/known.

    ``net`` is the torch network exported (eval, unfolded; not part of :meth:`to_dict`).
    """

    path: Path
    arch: Arch
    trained: bool
    notes: list[str]
    bytes: int
    opset: int
    bn_folded: int
    bn_left: int
    max_abs_diff: float
    batches: tuple[int, ...]
    macs: int
    params: int
    meta: dict[str, str]
    predicted_ms: float | None = None
    budget_ms: float | None = None
    lut: str | None = None
    measured_ms: float | None = None  # the exported ONNX with ONNX Runtime
    torch_ms: float | None = None  # the same network in torch eager
    drift: float | None = None  # the machine now vs during the LUT's profile (its reference networks); > 1 slower
    settings: dict[str, Any] | None = None
    weights: dict[str, Any] = field(default_factory=dict)
    net: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "net"}
        return {**d, "path": str(self.path), "arch": self.arch.to_dict(), "batches": list(self.batches)}


def export_model(
    arch: Arch,
    out: Path,
    weights: Path | None = None,
    lut: LUT | None = None,
    force: bool = False,
    seed: int = 0,
) -> ExportResult:
    """Export ``arch`` (with ``weights`` if given, else a random init seeded by ``seed``) to a verified ONNX file.

    Checks ``out`` first (see :func:`check_out_path`); prices the network with ``lut`` (a missing
    key is an error) before exporting; writes the file, atomically, only after ``onnx.checker``
    and parity (max |ORT - torch| <= :data:`PARITY_ATOL` at batches :data:`PARITY_BATCHES`) pass.
    Time it afterwards with :func:`time_result`.
    """
    from hwnas.flops import count

    out = Path(out)
    check_out_path(out, force, "-o")
    src = build_source(arch, weights, seed)
    a = src.arch
    notes = list(src.notes)
    predicted = None
    if lut is not None:
        try:
            predicted = lut.predict(a).total_ms
        except LutError as e:
            raise LutError(f"{e}; or export without --lut") from None
        notes += [n for n in [lut.space_note(a)] if n]
        if a.info.get("lut_sha256") not in (None, lut.sha256):
            notes.append(f"note: the arch was searched with another LUT ({a.info.get('lut', 'sha256 differs')})")
    budget = a.info.get("budget_ms")
    budget = float(budget) if is_number(budget) else None
    folded, n_folded = fold_batchnorm(src.net)
    data = export_bytes(folded, a)
    model = onnx.load_from_string(data)
    check_onnx(model, str(out))
    diff = parity(data, src.net, tuple(a.input))
    if not diff <= PARITY_ATOL:
        raise ExportError(
            f"ONNX Runtime and torch disagree by {diff:.3g} (> {PARITY_ATOL:g}) on the exported network; "
            f"{out} was not written (report this with the arch file)"
        )
    cost = count(a)
    meta: dict[str, str] = {
        "format": FORMAT, "version": __version__, "arch": json.dumps(a.to_dict(), sort_keys=False),
        "trained": "true" if src.trained else "false", "macs": str(cost.macs), "params": str(cost.params),
        "parity_max_abs_diff": f"{diff:.3g}", "parity_batches": ",".join(map(str, PARITY_BATCHES)),
        "bn_folded": str(n_folded),
    }  # fmt: skip
    if not src.trained:
        meta["init_seed"] = str(seed)
    wdoc: dict[str, Any] = {}
    if src.trained:
        wdoc = {"file": str(src.weights), "sha256": src.weights_sha256, "epoch": src.epoch, "test_acc": src.test_acc}
        meta.update({"weights_file": Path(str(src.weights)).name, "weights_sha256": str(src.weights_sha256)})
        meta["weights_epoch"] = str(src.epoch)
        if src.test_acc is not None:
            meta["test_acc"] = repr(src.test_acc)
    if predicted is not None and lut is not None:
        meta.update({"predicted_ms": repr(predicted), "lut_sha256": lut.sha256, "lut_target": lut.describe()})
    if budget is not None:
        meta["budget_ms"] = repr(budget)
    final = with_metadata(data, meta)
    check_onnx(onnx.load_from_string(final), str(out))
    try:
        atomic_write(out, final)
    except OSError as e:
        raise ExportError(f"-o {out}: cannot write ({e.strerror}); choose another -o") from None
    res = ExportResult(
        path=out, arch=a, trained=src.trained, notes=notes, bytes=len(final), opset=OPSET, bn_folded=n_folded,
        bn_left=count_ops(model, "BatchNormalization"), max_abs_diff=diff, batches=PARITY_BATCHES,
        macs=cost.macs, params=cost.params, meta=meta, predicted_ms=predicted, budget_ms=budget,
        lut=lut.describe() if lut is not None else None, weights=wdoc, net=src.net,
    )  # fmt: skip
    return res


def time_result(
    res: ExportResult,
    s: ProfileSettings,
    progress: Progress | None = None,
    refs: Sequence[tuple[Arch, float]] = (),
) -> ExportResult:
    """Fill ``res``'s ``measured_ms`` (the written file, ONNX Runtime), ``torch_ms`` (torch eager)
    and, with the LUT's reference networks ``refs``, ``drift``; see :func:`time_exported`."""
    net = res.net if res.net is not None else res.arch.build()
    res.measured_ms, res.torch_ms, res.drift = time_exported(
        res.path.read_bytes(), net, tuple(res.arch.input), s, progress, refs
    )
    res.settings = asdict(s)
    return res


# -- re-verification ------------------------------------------------------------------------


@dataclass
class CheckResult:
    """What :func:`check_model` verified (``checked``) and could not (``unchecked``), one line each."""

    path: Path
    arch: Arch
    meta: dict[str, str]
    checked: list[str]
    unchecked: list[str]
    max_abs_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "arch": self.arch.to_dict(), "meta": self.meta, "checked": self.checked,
            "unchecked": self.unchecked, "max_abs_diff": self.max_abs_diff,
        }  # fmt: skip


def _io_shape(v: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]


def check_model(path: Path, arch: Arch | None = None, weights: Path | None = None) -> CheckResult:
    """Re-verify an exported file: what can honestly be checked, and a list of what cannot.

    Always: ``onnx.checker``; hwnas metadata present and its arch rebuilds; one input
    ``[batch, C, H, W]`` with a symbolic batch matching the arch and one output ``[batch, classes]``;
    ONNX Runtime runs at batches :data:`CHECK_BATCHES` with finite outputs of the right shape.
    With ``arch``: the metadata arch is the same network (or DARTS genotype). With ``weights``:
    the network rebuilt from the metadata arch with those weights matches ONNX Runtime to
    :data:`PARITY_ATOL` (and the weights' hash is compared with the recorded one). Without
    weights, output parity cannot be checked (the values live only in the file).
    """
    from hwnas.weights import same_genotype, same_network

    p = Path(path)
    model = load_onnx(p)
    check_onnx(model, str(p))
    checked = [f"onnx.checker accepts the model (opset {max((o.version for o in model.opset_import), default=0)})"]
    meta = read_metadata(model)
    a = arch_from_metadata(meta, str(p))
    a.build()
    checked.append(
        f"hwnas metadata ({meta['format']}, hwnas {meta.get('version', '?')}); its arch rebuilds: {_arch_desc(a)}"
    )
    if arch is not None:
        if not (same_network(a, arch) or same_genotype(a, arch)):
            raise ExportError(
                f"{p} was exported from another network than the arch given (exported vs given, "
                f"{arch_difference(a, arch)}); pass the arch it was exported from, or none"
            )
        checked.append("the metadata arch is the arch given" + ("" if same_network(a, arch) else " (same genotype)"))
    classes = a.plan.nodes[-1].call.out_shape[0]
    ins, outs = model.graph.input, model.graph.output
    init = {i.name for i in model.graph.initializer}
    ins = [i for i in ins if i.name not in init]
    if len(ins) != 1 or len(outs) != 1:
        raise ExportError(f"{p}: expected one input and one output, got {len(ins)} and {len(outs)}")
    si, so = _io_shape(ins[0]), _io_shape(outs[0])
    if len(si) != 4 or not isinstance(si[0], str) or si[1:] != list(a.input):
        raise ExportError(f"{p}: input shape {si} is not [batch, {', '.join(map(str, a.input))}] of its arch")
    if len(so) != 2 or not isinstance(so[0], str) or so[1] != classes:
        raise ExportError(f"{p}: output shape {so} is not [batch, {classes}] of its arch")
    checked.append(f"input {si}, output {so}: batch axis dynamic, shapes match the arch")
    got = run_onnx(str(p), tuple(a.input), CHECK_BATCHES)
    for b, y in zip(CHECK_BATCHES, got, strict=True):
        if y.shape != (b, classes) or not np.isfinite(y).all():
            raise ExportError(f"{p}: ONNX Runtime gives shape {y.shape} (finite: {np.isfinite(y).all()}) at batch {b}")
    checked.append(
        f"ONNX Runtime runs at batch {' and '.join(map(str, CHECK_BATCHES))}: finite outputs (batch, {classes})"
    )
    unchecked: list[str] = []
    diff = None
    if weights is not None:
        src = build_source(a, weights)
        recorded = meta.get("weights_sha256")
        if recorded and recorded != src.weights_sha256:
            raise ExportError(
                f"{p} was exported from other weights (sha256 {recorded[:12]}...) than {weights} ({str(src.weights_sha256)[:12]}...)"
            )
        diff = parity(str(p), src.net, tuple(a.input))
        if not diff <= PARITY_ATOL:
            raise ExportError(f"{p} and {weights} disagree by {diff:.3g} (> {PARITY_ATOL:g}); export it again")
        checked.append(
            f"parity with {weights}: max |ORT - torch| {diff:.2g} <= {PARITY_ATOL:g} at batch "
            f"{', '.join(map(str, PARITY_BATCHES))}"
            + ("" if recorded else " (the file records no weights hash: it was exported untrained)")
        )
    else:
        at_export = meta.get("parity_max_abs_diff")
        why = (
            "pass --weights FILE to compare outputs with torch"
            if meta.get("trained") == "true"
            else "it was exported with untrained (random) weights, which only the file holds"
        )
        unchecked.append(
            f"output parity with torch: {why}" + (f" (at export: max |diff| {at_export})" if at_export else "")
        )
    return CheckResult(p, a, meta, checked, unchecked, diff)
