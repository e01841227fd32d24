"""Supernets built from a space: one mixed op per decision, a differentiable expected latency.

The supernet is walked by the same walker as a derived network (:mod:`hwnas.arch`): a block
space is walked with its layers in place, a DARTS space through :func:`hwnas.arch.walk_cells`
with every input of every node present. The walked nodes that are decisions become
:class:`MixedOp` containers of their candidates (each candidate is the op call a derived network
would contain at that place), so shapes, strides and LUT keys agree with what is derived.

Architecture parameters are real ``nn.Parameter`` s, kept apart from the weights
(:meth:`Supernet.arch_parameters` / :meth:`Supernet.weight_parameters`):

* block spaces: one logits vector per layer that offers more than one choice;
* DARTS: ``alpha_normal`` and ``alpha_reduce``, one row per edge, shared by all cells of a type.

Expected latency (ms), the same formula for every strategy, from latency buffers filled once
from the LUT when the supernet is built::

    E[lat] = scale * (fixed + sum over mixed ops m of  w_m * softmax(alpha_m) . lat_m
                      + sum over DARTS nodes of their sum's expected price) + overhead

``fixed`` sums the blocks every derived network has (stem, head, single-choice layers; for DARTS
the preprocessing and concats). For block spaces ``w_m = 1``. A derived
DARTS cell keeps, per node, the two incoming edges with the strongest non-``none`` op, and that
op; so an edge's latency is ``q . lat`` with ``q`` the softmax over its non-``none`` logits, and
it is weighted by ``w = min(1, 2 * s / sum of s over the node's edges)`` with ``s`` the edge's
strongest non-``none`` probability: the expectation estimates the derived cell, not the dense one.
DARTS edges and node sums priced by their role (:meth:`hwnas.arch.Plan.roles`) are priced at
each role's figure weighted by its chance (:meth:`Supernet._cells_expected`); at a one-hot choice
the expectation is the LUT's prediction of the derived network (tested over random genotypes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.arch import Arch, Plan, role_priced, walk_cells
from hwnas.lut import LUT
from hwnas.ops import NODE_SUM, OpCall, make_call
from hwnas.ops.blocks import MBConv
from hwnas.space import Choice, Space
from hwnas.strategies import Strategy


class MixedOp(nn.Module):
    """The candidates of one decision at one place; the supernet's strategy combines them.

    With ``share``, the candidates' convs that play the same role (:func:`conv_roles`; e.g. the
    depthwise conv of MBConv k3/k5 × e1/e3/e6, grouped or not) take their weights from one shared
    tensor per role (:func:`share_convs`); their batch norms stay their own.
    """

    def __init__(self, calls: list[OpCall], key: int, share: bool = False) -> None:
        super().__init__()
        self.ops = nn.ModuleList([c.build() for c in calls])
        self.calls = calls
        self.key = key  # index of the logits row in Supernet.rows
        self.share = share
        self.shared = nn.ParameterList()
        self._views: list[tuple[nn.Module, _SliceWeight]] = []
        if share:
            roles: dict[tuple[object, ...], list[nn.Conv2d]] = {}
            for op in self.ops:
                for role, conv in conv_roles(op):
                    roles.setdefault(role, []).append(conv)
            for convs in roles.values():
                if len(convs) > 1:
                    share_convs(convs, self.shared)
            self._views = [
                (c, h)
                for op in self.ops
                for c in _convs(op)
                for h in c._forward_pre_hooks.values()
                if isinstance(h, _SliceWeight)
            ]
            self._align_expansions()

    def _align_expansions(self) -> None:
        """Start each MBConv expansion's leading ``c_in`` output channels as a copy of the block
        input when a candidate of this op has no expansion (MBConv e1). Only the initial value
        changes; the expansion trains as before, and the other channels keep their initialisation.

        Sharing by role gives MBConv e1 and e3/e6 the same depthwise and project convs, but e1's
        depthwise conv reads the block input while e3's reads the expansion: from a random
        expansion the shared convs serve unrelated features, and a one-path supernet mixing e1 and
        e3 hardly learnt (``bench/one_path.py --variants e1+e3``, fbnet at 28 px, 400 steps, two
        seeds: 15 % / 25 % train accuracy; with this start 61 % / 53 %; a fixed path 71 % / 68 %).
        """
        if not any(isinstance(op, MBConv) and op.expand is None for op in self.ops):
            return
        done: set[int] = set()
        for op in self.ops:
            conv = op.expand if isinstance(op, MBConv) else None
            if conv is None or conv.groups != 1:
                continue
            hook = next((h for h in conv._forward_pre_hooks.values() if isinstance(h, _SliceWeight)), None)
            weight = conv.weight if hook is None else self.shared[hook.index]
            if id(weight) in done:
                continue
            done.add(id(weight))
            n = min(conv.in_channels, conv.out_channels)
            with torch.no_grad():
                weight[:n].zero_()
                weight[:n, :n, 0, 0] += torch.eye(n, dtype=weight.dtype)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """``.to()``, ``.double()``, ``.cuda()``: move the shared tensors, then the convs' views."""
        out = super()._apply(fn, recurse)
        for conv, hook in self._views:
            hook.rest(conv)
        return out


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def conv_roles(op: nn.Module) -> list[tuple[tuple[object, ...], nn.Conv2d]]:
    """The shareable convs of ``op`` in forward order, each with its role: (kind, how many convs
    of that kind follow it in the op, stride, dilation), kind being depthwise or dense (grouped
    counts as dense). Counting from the end aligns ops of different depth: an MBConv with expand 1
    (depthwise, project) and one with expand 6 (expand, depthwise, project) share the depthwise and
    the project conv. Convs with a bias or an even kernel are left alone."""
    convs = [c for c in _convs(op) if c.bias is None and all(k % 2 for k in c.kernel_size)]
    kinds = ["dw" if c.groups == c.in_channels == c.out_channels and c.groups > 1 else "dense" for c in convs]
    return [
        ((kind, kinds[i + 1 :].count(kind), c.stride, c.dilation), c)
        for i, (c, kind) in enumerate(zip(convs, kinds, strict=True))
    ]


def share_convs(convs: list[nn.Conv2d], holder: nn.ParameterList) -> None:
    """Make ``convs`` (one role of several candidates, :func:`conv_roles`) views of one tensor.

    The tensor, appended to ``holder``, has the elementwise largest weight shape; each conv uses
    its leading output and input channels and the centre of its kernel (Single-Path NAS's
    superkernel, OFA's elastic kernel and width). It starts from the convs' own initial weights,
    smallest first, so the largest keeps its initialisation. Each conv's ``weight`` stops being a
    parameter of its own: a forward pre-hook cuts it from ``holder`` on every call, so optimisers,
    ``.to()``, ``state_dict`` and :func:`torch.func.functional_call` see only the shared tensor.

    Why: sampled single paths (``binary``, hard ``gumbel``) give each candidate a fraction of
    the steps, and with private weights the next layer sees unrelated features from every
    candidate; on a 21-layer MBConv space the weights then do not learn at all in a short
    search. With shared weights the candidates of a layer compute related features.
    """
    shape = [max(c.weight.shape[d] for c in convs) for d in range(4)]
    big = torch.empty(shape)
    nn.init.kaiming_uniform_(big, a=5**0.5)  # nn.Conv2d's own initialisation, where no conv covers
    slices = []
    for c in convs:
        o, i, kh, kw = c.weight.shape
        dh, dw = (shape[2] - kh) // 2, (shape[3] - kw) // 2
        slices.append((slice(0, o), slice(0, i), slice(dh, dh + kh), slice(dw, dw + kw)))
    with torch.no_grad():
        for c, sl in sorted(zip(convs, slices, strict=True), key=lambda t: t[0].weight.numel()):
            big[sl] = c.weight
    index = len(holder)
    holder.append(nn.Parameter(big))
    for c, sl in zip(convs, slices, strict=True):
        del c.weight
        hook = _SliceWeight(holder, index, sl)
        c.register_forward_pre_hook(hook)
        c.register_forward_hook(hook.rest)
        hook.rest(c)


class _SliceWeight:
    """A conv's view of its shared tensor (read from the holder on every call, so a swapped or
    moved parameter is what the conv uses). As a forward pre-hook it sets ``conv.weight`` to the
    slice, in the autograd graph; between calls (:meth:`rest`, also a forward hook) ``conv.weight``
    is a detached view of the current tensor, so the module deep-copies and reads like any conv."""

    def __init__(self, holder: nn.ParameterList, index: int, sl: tuple[slice, ...]) -> None:
        self.holder, self.index, self.sl = holder, index, sl

    def __call__(self, conv: nn.Module, args: tuple[object, ...]) -> None:
        conv.weight = self.holder[self.index][self.sl]

    def rest(self, conv: nn.Module, *_: object) -> None:
        conv.weight = self.holder[self.index].detach()[self.sl]


@dataclass(frozen=True)
class Row:
    """One logits row: which parameter (and row of it), and the names of its choices."""

    label: str
    param: int
    row: int | None
    choices: tuple[str, ...]


def edge_label(cell: str, node: int, src: int) -> str:
    """The row label of a DARTS edge (``normal node 1 input 2``): input ``src`` of intermediate
    node ``node`` of the ``cell`` (``normal`` or ``reduce``) cell; as in ``history.csv``."""
    return f"{cell} node {node} input {src}"


@dataclass(frozen=True)
class Structure:
    """A space walked as a supernet: its plan, the candidates of each decision node, the rows."""

    plan: Plan
    mixed: dict[int, tuple[list[OpCall], int]]  # plan node -> (candidate calls, logits row)
    rows: list[Row]
    choices: dict[int, list[Choice]]  # block spaces: logits row -> the slot's choices
    fixed: list[OpCall]  # blocks every derived network has, whatever the choices


def structure(space: Space) -> Structure:
    """Walk ``space`` as a supernet (see the module docstring); builds no modules."""
    if space.kind == "blocks":
        slots = space.slots()
        rep = space.blocks_arch([next(c for c in s.choices if c.op != "zero") for s in slots])
        mixed: dict[int, tuple[list[OpCall], int]] = {}
        rows: list[Row] = []
        choices: dict[int, list[Choice]] = {}
        for i, node in enumerate(rep.plan.nodes):
            if node.tag[:1] != ("layer",) or len(slots[node.tag[1]].choices) == 1:
                continue
            slot = slots[node.tag[1]]
            calls = [
                make_call(
                    c.op, {k: v for k, v in c.layer(slot.out, slot.stride).items() if k != "op"}, node.call.in_shape
                )
                for c in slot.choices
            ]
            choices[len(rows)] = list(slot.choices)
            mixed[i] = (calls, len(rows))
            rows.append(Row(f"layer {slot.index}", len(rows), None, tuple(c.label for c in slot.choices)))
        fixed = [n.call for i, n in enumerate(rep.plan.nodes) if i not in mixed]
        return Structure(rep.plan, mixed, rows, choices, fixed)
    ops = space.cell_ops
    nodes = int(space.raw["nodes"])
    dense = [[(ops[-1], src) for src in range(2 + j)] for j in range(nodes)]
    plan = walk_cells(space.input_shape, space.cells_body(), {"normal": dense, "reduce": dense})
    n_edges = sum(len(d) for d in dense)
    rows = []
    for c, cell in enumerate(("normal", "reduce")):
        for k in range(n_edges):
            j, src = _edge_of(k, nodes)
            rows.append(Row(edge_label(cell, j, src), c, k, tuple(ops)))
    mixed = {}
    for i, node in enumerate(plan.nodes):
        if node.tag[:1] == ("edge",):
            _, cell, k, _ = node.tag
            stride = node.call.param_dict["stride"]
            calls = [make_call(o, {"stride": stride}, node.call.in_shape) for o in ops]
            mixed[i] = (calls, (0 if cell == "normal" else n_edges) + k)
    any_arch = space.probe_archs()[0][1]
    fixed = [n.call for n in any_arch.plan.nodes if n.tag[:1] != ("edge",)]
    return Structure(plan, mixed, rows, {}, fixed)


class Supernet(nn.Module):
    """A space's supernet; ``forward`` routes every mixed op through ``strategy``.

    ``price_space`` (default: ``space``) is the same space at the deployment input shape: the
    network trains at the data's resolution while its latency is priced where it will run.
    ``share`` (default: the strategy's ``single_path``) makes the candidates of each mixed op
    share conv weights where their structure allows (:class:`MixedOp`).
    """

    def __init__(
        self,
        space: Space,
        strategy: Strategy,
        lut: LUT | None = None,
        price_space: Space | None = None,
        share: bool | None = None,
    ) -> None:
        super().__init__()
        self.space, self.strategy = space, strategy
        self.price_space = price_space or space
        st = structure(space)
        self.plan, self.rows, self._choices = st.plan, st.rows, st.choices
        self.alphas = nn.ParameterList()
        if space.kind == "blocks":
            for r in st.rows:
                self.alphas.append(nn.Parameter(torch.zeros(len(r.choices))))
        else:
            n_edges = len(st.rows) // 2
            for _ in ("normal", "reduce"):
                self.alphas.append(nn.Parameter(torch.zeros(n_edges, len(space.cell_ops))))
        self.share = strategy.single_path if share is None else share
        self.nodes = nn.ModuleList(
            [
                MixedOp(*st.mixed[i], share=self.share) if i in st.mixed else n.call.build()
                for i, n in enumerate(st.plan.nodes)
            ]
        )
        self._inputs = [n.inputs for n in st.plan.nodes]
        self._mixed_idx = sorted(st.mixed)
        self.lut = lut
        if lut is not None:
            self._fill_latency(lut)

    def _fill_latency(self, lut: LUT) -> None:
        """Latency buffers (ms) per mixed op and the fixed part, read from the LUT at the
        deployment shape (on the architecture parameters' device); mixed ops correspond one to
        one, in plan order."""
        dev = self.alphas[0].device if len(self.alphas) else torch.device("cpu")
        price = structure(self.price_space)
        priced = [price.mixed[i][0] for i in sorted(price.mixed)]
        if len(priced) != len(self._mixed_idx):
            raise ValueError("the pricing space does not have the supernet's decisions")
        sp = self.price_space
        shape = {"in_channels": sp.in_channels, "num_classes": sp.num_classes}
        lut.check_covers(
            [c for calls in priced for c in calls] + price.fixed, sp.name, sp.input_size, sp.width_mult, **shape
        )
        for i, j in zip(self._mixed_idx, sorted(price.mixed), strict=True):
            calls, node = price.mixed[j][0], price.plan.nodes[j]
            lat = [lut.latency[c.key] if c.priced else 0.0 for c in calls]
            self.nodes[i].register_buffer("lat_ms", torch.tensor(lat, device=dev))
            # a DARTS edge's price in the shared role (Plan.roles)
            shared = [
                lut.shared.get(c.key, ms) if c.priced and role_priced(c, node.tag) else ms
                for c, ms in zip(calls, lat, strict=True)
            ]
            self.nodes[i].register_buffer("shared_ms", torch.tensor(shared, device=dev), persistent=False)
            self.nodes[i].register_buffer(
                "relu", torch.tensor([float(c.leading_relu) for c in calls], device=dev), persistent=False
            )
            self.nodes[i].register_buffer(
                "conv", torch.tensor([float(c.trailing_conv) for c in calls], device=dev), persistent=False
            )
            self.nodes[i].register_buffer(
                "pure", torch.tensor([float(c.weightless) for c in calls], device=dev), persistent=False
            )
        cells = sp.kind == "cells"  # a cell node's sum is priced by its role in _cells_expected
        fixed = sum(lut.latency[c.key] for c in price.fixed if c.priced and not (cells and c.op == NODE_SUM))
        self.register_buffer("fixed_ms", torch.tensor(fixed, device=dev))
        sums: dict[tuple[int, int], list[float]] = {}  # (cell, node): the derived sum's (own, shared) ms
        if cells:
            for n in price.plan.nodes:
                if n.call.op == NODE_SUM:
                    _, _, k, cell = price.plan.nodes[n.inputs[0]].tag
                    key = make_call(NODE_SUM, {"n": 2}, n.call.in_shape).key
                    sums[cell, _edge_of(k, int(sp.raw["nodes"]))[0]] = [
                        lut.latency[key],
                        lut.shared.get(key, lut.latency[key]),
                    ]
        self._sums = sorted(sums)
        self.register_buffer(
            "sum_ms", torch.tensor([sums[g] for g in self._sums], device=dev).reshape(-1, 2), persistent=False
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """As :meth:`nn.Module.load_state_dict`, then the latency buffers are read from the LUT
        again: a checkpoint of an older hwnas may hold them priced another way (before node sums
        were priced by role, ``fixed_ms`` held them), and the LUT is the source of prices."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.lut is not None:
            self._fill_latency(self.lut)
        return result

    def unaligned(self) -> list[str]:
        """Decisions whose candidates differ in structure, one line each (``row: a vs b``).

        Candidates align when they have the same conv roles (:func:`conv_roles`): then sharing
        makes them compute related features (MBConv e3 vs e6, k3 vs k7). Candidates without
        shareable convs (zero, identity skip, pools) align with anything, and so does an MBConv
        without an expansion (e1) beside ones with it, whose expansions start as the identity on
        its channels (:meth:`MixedOp._align_expansions`). Where roles differ (a 1x1 skip projection
        vs MBConv, DARTS's sep_conv vs dil_conv) a one-path strategy trains each candidate in a
        fraction of the steps on features unrelated to the others'.
        """
        lines: dict[str, str] = {}
        for i in self._mixed_idx:
            m = self.nodes[i]
            expand_roles = {
                r for op in m.ops if isinstance(op, MBConv) and op.expand is not None and op.expand.groups == 1
                for r, c in conv_roles(op) if c is op.expand
            }  # fmt: skip
            seen: dict[frozenset[tuple[object, ...]], int] = {}
            for j, op in enumerate(m.ops):
                roles = {r for r, _ in conv_roles(op)}
                if isinstance(op, MBConv) and op.expand is None and m.share:
                    roles |= expand_roles
                if roles:
                    seen.setdefault(frozenset(roles), j)
            if len(seen) > 1:
                row = self.rows[m.key]
                a, b = list(seen.values())[:2]
                lines.setdefault(row.label, f"{row.label}: {row.choices[a]} vs {row.choices[b]}")
        return list(lines.values())

    # -- parameters -------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.alphas}
        return (p for p in self.parameters() if id(p) not in arch)

    def row(self, key: int) -> torch.Tensor:
        r = self.rows[key]
        a = self.alphas[r.param]
        return a if r.row is None else a[r.row]

    def probs(self, key: int) -> torch.Tensor:
        return F.softmax(self.row(key), dim=-1)

    # -- forward and latency ----------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.strategy.begin_step()
        outs: dict[int, torch.Tensor] = {-1: x}
        for i, (mod, ins) in enumerate(zip(self.nodes, self._inputs, strict=True)):
            xs = tuple(outs[j] for j in ins)
            if isinstance(mod, MixedOp):
                outs[i] = self.strategy.mix(mod.ops, xs, self.row(mod.key), mod.key)
            else:
                outs[i] = mod(*xs)
        return outs[len(self.nodes) - 1]

    def expected_latency_ms(self) -> torch.Tensor:
        """Differentiable expected latency (ms) of the derived network (formula in the module doc)."""
        if self.lut is None:
            raise RuntimeError("build the supernet with a LUT to price it")
        total = self.fixed_ms.clone()
        if self.space.kind == "blocks":
            for i in self._mixed_idx:
                m = self.nodes[i]
                total = total + self.probs(m.key) @ m.lat_ms
        else:
            total = total + self._cells_expected()
        return self.lut.scale * total + self.lut.overhead_ms

    def _cells_expected(self) -> torch.Tensor:
        """The edges' expected price: each edge's op price under its kept ops' softmax ``q``, times
        ``w``, how surely the edge is one of its node's two kept (``2 s / sum s`` capped at 1, ``s``
        its strongest kept op's probability). An edge whose input an earlier kept edge's op
        already reads with a leading ReLU is priced at ``shared_ms`` (:meth:`Plan.roles`):
        the chance of that is ``1 - prod(1 - w' q'(ReLU-led op))`` over the earlier edges; so is
        a weightless op (a pool) that an earlier edge makes on the same input, with the chance
        ``1 - prod(1 - w' q'(that op))``. A node's sum runs on its own with the chance
        ``prod(1 - w q(op ending in a conv))`` over its edges, else it is fused into a conv
        (``sum_ms``: its two prices)."""
        ops = self.space.cell_ops
        keep = torch.tensor([o != "none" for o in ops])
        nodes = int(self.space.raw["nodes"])
        edges: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # plan index: (strength, q)
        by_node: dict[tuple[int, int], list[int]] = {}
        for i in self._mixed_idx:
            m = self.nodes[i]
            edges[i] = (self.probs(m.key)[keep].max(), F.softmax(self.row(m.key)[keep], dim=-1))
            _, _, k, cell = self.plan.nodes[i].tag
            by_node.setdefault((cell, _edge_of(k, nodes)[0]), []).append(i)
        w: dict[int, torch.Tensor] = {}
        for group in by_node.values():
            s = torch.stack([edges[i][0] for i in group])
            w.update(zip(group, torch.clamp(2 * s / s.sum(), max=1.0), strict=True))
        total = torch.zeros(())
        free: dict[int, torch.Tensor] = {}  # per input: the chance no earlier kept op's ReLU reads it
        unmade: dict[int, torch.Tensor] = {}  # per input and weightless op: the chance no earlier kept edge makes it
        for i, (node, ins) in enumerate(zip(self.nodes, self._inputs, strict=True)):
            src = ins[0] if ins else -1
            if i not in edges:
                if self.plan.nodes[i].call.leading_relu:
                    free[src] = torch.zeros(())
                continue
            q = edges[i][1]
            relu, pure = node.relu[keep], node.pure[keep]
            first = unmade.get(src, torch.ones_like(q))
            shared = relu * (1 - free.get(src, torch.ones(()))) + pure * (1 - first)  # per op, by its role
            price = node.lat_ms[keep] + shared * (node.shared_ms - node.lat_ms)[keep]
            total = total + w[i] * (q @ price)
            free[src] = free.get(src, torch.ones(())) * (1 - w[i] * (q @ relu))
            unmade[src] = first * (1 - w[i] * q * pure)
        for g, (own, fused) in zip(self._sums, self.sum_ms, strict=True):
            alone = torch.stack([1 - w[i] * (edges[i][1] @ self.nodes[i].conv[keep]) for i in by_node[g]]).prod()
            total = total + fused + alone * (own - fused)
        return total

    # -- derivation -------------------------------------------------------------------------
    def derive(self) -> Arch:
        """The derived architecture at the deployment shape (plain data): argmax per layer (zero
        drops the block); for DARTS the two strongest non-``none`` edges per node and their op."""
        with torch.no_grad():
            if self.space.kind == "blocks":
                picks = []
                keys = iter(range(len(self.rows)))
                for slot in self.price_space.slots():
                    if len(slot.choices) == 1:
                        picks.append(slot.choices[0])
                    else:
                        k = next(keys)
                        picks.append(self._choices[k][int(self.probs(k).argmax())])
                return self.price_space.blocks_arch(picks)
            return self.price_space.cells_arch(self.genotype())

    def genotype(self) -> dict[str, list[list[object]]]:
        ops = self.space.cell_ops
        nodes = int(self.space.raw["nodes"])
        keep = [i for i, o in enumerate(ops) if o != "none"]
        n_edges = len(self.rows) // 2
        geno: dict[str, list[list[object]]] = {}
        for c, cell in enumerate(("normal", "reduce")):
            edges: list[list[object]] = []
            for j in range(nodes):
                cands = []
                for src in range(2 + j):
                    k = c * n_edges + _edge_index(j, src)
                    p = self.probs(k)[keep]
                    best = int(p.argmax())
                    cands.append((float(p[best]), src, ops[keep[best]]))
                top = sorted(sorted(cands, reverse=True)[:2], key=lambda t: t[1])
                edges += [[op, src] for _, src, op in top]
            geno[cell] = edges
        return geno


def _edge_index(node: int, src: int) -> int:
    """Index of edge ``src -> node`` in node-major order (node j has inputs 0 .. j + 1)."""
    return sum(2 + i for i in range(node)) + src


def _edge_of(k: int, nodes: int) -> tuple[int, int]:
    for j in range(nodes):
        if k < 2 + j:
            return j, k
        k -= 2 + j
    raise IndexError(k)


def row_costs(st: Structure, latency: dict[str, float]) -> list[list[float]]:
    """Latency (ms, before a LUT's scale) of each choice of each logits row, summed over every
    place the row is used (DARTS rows are shared by all cells of a type)."""
    out = [[0.0] * len(r.choices) for r in st.rows]
    for calls, key in st.mixed.values():
        for i, c in enumerate(calls):
            out[key][i] += latency[c.key] if c.priced else 0.0
    return out


def fastest_choices(space: Space, st: Structure, costs: list[list[float]]) -> list[tuple[int, int]]:
    """The (logits row, choice) decisions of the fastest derived network of the space.

    Blocks: the cheapest choice of every row. DARTS: per node the two inputs whose cheapest
    non-``none`` op is cheapest, each with that op.
    """
    if space.kind == "blocks":
        return [(k, min(range(len(c)), key=c.__getitem__)) for k, c in enumerate(costs)]
    ops = space.cell_ops
    keep = [i for i, o in enumerate(ops) if o != "none"]
    n_edges = len(st.rows) // 2
    out = []
    for c in range(2):
        for j in range(int(space.raw["nodes"])):
            rows = [c * n_edges + _edge_index(j, src) for src in range(2 + j)]
            cheapest = sorted(rows, key=lambda r: min(costs[r][i] for i in keep))[:2]
            out += [(r, min(keep, key=lambda i, r=r: costs[r][i])) for r in sorted(cheapest)]
    return out


def fastest_sum(space: Space, latency: dict[str, float]) -> float:
    """Sum of block latencies (ms, before a LUT's scale) of the space's fastest derived network."""
    st = structure(space)
    costs = row_costs(st, latency)
    return sum(latency[c.key] for c in st.fixed if c.priced) + sum(
        costs[r][i] for r, i in fastest_choices(space, st, costs)
    )
