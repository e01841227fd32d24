"""The derived architecture as plain JSON, and the one walker over it.

An arch file rebuilds its network without the space file. Two kinds:

* ``blocks`` (ProxylessNAS, FBNet): ``stem``, ``layers`` and ``head`` are op dicts
  (``{"op": "mbconv", "out": 40, "stride": 2, "k": 5, "e": 3, "groups": 1, "act": "relu6"}``);
  a block dropped by ``zero`` is simply absent.
* ``cells`` (DARTS): ``C``, ``layers``, ``stem_multiplier``, ``reduce_at``, ``classes`` and the
  ``genotype``: for each of ``normal`` and ``reduce``, two ``[op, input]`` pairs per node, where
  input 0 and 1 are the cell's inputs and ``2 + j`` is intermediate node ``j``.

:func:`walk` turns an arch into a :class:`Plan`: the op calls in execution order with the indices
of their inputs. Building (:class:`PlanNet`), pricing (LUT), FLOP counting and profiling all read
the plan, so they cannot disagree about what a network contains.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas.checks import is_int
from hwnas.errors import HwnasError
from hwnas.ops import NODE_SUM, OpCall, OpError, Shape, get_op, make_call

SCHEMA = "hwnas.arch/1"
KINDS = ("blocks", "cells")


class ArchError(HwnasError):
    """An arch file or dict that does not describe a buildable network."""


@dataclass(frozen=True)
class Node:
    """One op call in a plan; ``inputs`` index earlier nodes, ``-1`` is the network input."""

    call: OpCall
    inputs: tuple[int, ...]
    where: str  # human-readable location, e.g. "layers[3]" or "cell 2 node 1 edge 0"
    tag: tuple[Any, ...] = ()  # ("layer", i), ("edge", "normal"|"reduce", k, cell) or ("cell_out", cell)


@dataclass(frozen=True)
class Plan:
    """A network as a DAG of op calls in topological order; the last node is the output."""

    in_shape: Shape
    nodes: tuple[Node, ...]

    @property
    def calls(self) -> list[OpCall]:
        return [n.call for n in self.nodes]

    def priced_calls(self) -> list[OpCall]:
        """Calls that the LUT prices (everything but ``zero``/``none``)."""
        return [n.call for n in self.nodes if n.call.priced]

    def roles(self) -> tuple[str, ...]:
        """Per node, the role the LUT prices it in (:func:`role_priced`): ``"shared"`` where ONNX
        Runtime runs the node's work inside another node's kernel, ``"own"`` where it runs its own,
        ``""`` for nodes priced one way.

        * A stride-1 cell edge whose op leads with a ReLU shares it when an earlier node's leading
          ReLU already reads its input (the runtime merges identical ReLUs of one tensor, so the
          later op runs one kernel fewer).
        * A cell node's two-input sum (``add``) shares when one of its inputs is written by a
          conv (:attr:`OpCall.trailing_conv`) that only the sum reads: the runtime fuses the Add
          into that conv. Otherwise the Add runs as a kernel of its own.
        * A cell edge whose op has no weights (:attr:`OpCall.weightless`: a pool, an identity
          skip) shares when an earlier node makes the same call on the same input: the runtime
          merges the two (common-subexpression elimination) and runs it once.

        A role says what the runtime may do; the profile prices each key in each role from what
        it measured, so where the runtime does not do it for a shape (ONNX Runtime fuses the Add
        only where its blocked NCHWc layout applies, e.g. channel counts that fit the CPU's block)
        the key's two prices come out alike. Not modelled: an identity skip whose state nothing
        else reads passes that state's conv to the sum, which the runtime then fuses too (rare:
        0.05 per random DARTS @ 32 network).
        """
        readers = Counter(j for n in self.nodes for j in n.inputs)
        seen: set[int] = set()  # inputs a leading ReLU reads
        made: set[tuple[str, tuple[int, ...]]] = set()  # weightless calls made, with their inputs
        roles = []
        for n in self.nodes:
            if n.call.op == NODE_SUM:
                shared = any(j >= 0 and readers[j] == 1 and self.nodes[j].call.trailing_conv for j in n.inputs)
            elif n.call.weightless:
                shared = (n.call.key, n.inputs) in made
                made.add((n.call.key, n.inputs))
            else:
                shared = n.call.leading_relu and n.inputs[0] in seen
            if n.call.leading_relu:
                seen.add(n.inputs[0])
            roles.append(("shared" if shared else "own") if role_priced(n.call, n.tag) else "")
        return tuple(roles)


def role_priced(call: OpCall, tag: tuple[Any, ...]) -> bool:
    """Whether the LUT prices ``call`` at a plan node tagged ``tag`` by its role
    (:meth:`Plan.roles`): a stride-1 cell edge whose op leads with a ReLU, a cell edge whose op
    has no weights, or a cell node's sum.

    Chosen on DARTS @ 32 timings (bench/RESULTS.md). Edges: with roles, Spearman rose for 8 of 8
    LUTs; stride-2 edges, whose first reader also gets the layout reorders of its input, did
    worse. Sums: in eight profiles (3 December) an Add with a conv input measured 0 in all 2,848
    network contexts, one without 5-16 µs in all 992, which a single price cannot be. Pools: a
    pool an earlier edge made on the same input measured 0 in all 400, the others 5.6-17 µs in
    all 1,664; priced by role, MAPE fell for 8 of 8 LUTs."""
    edge = tag[:1] == ("edge",)
    return (
        call.op == NODE_SUM
        or (edge and call.weightless)
        or (edge and call.leading_relu and call.param_dict.get("stride") == 1)
    )


@dataclass(frozen=True)
class Arch:
    """A derived architecture: plain data, validated on construction by walking it once.

    ``body`` holds the kind-specific fields (see the module docstring); ``info`` holds free-form
    provenance (predicted latency, budget, strategy, seed, LUT hash) that does not affect the net.
    """

    kind: str
    space: str
    input: Shape
    body: Mapping[str, Any]
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # walking validates (raises ArchError naming the field at fault); keep the plan
        object.__setattr__(self, "_plan", walk(self))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "space": self.space,
            "input": list(self.input),
            **_plain(dict(self.body)),
            "info": _plain(dict(self.info)),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def with_info(self, **info: Any) -> Arch:
        return Arch(self.kind, self.space, self.input, self.body, {**self.info, **info})

    @classmethod
    def from_dict(cls, data: Any, source: str = "arch") -> Arch:
        """Validate a parsed arch JSON; errors name ``source`` and the field."""
        if not isinstance(data, dict):
            raise ArchError(f"{source}: expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ArchError(
                f"{source}: schema {schema!r} is not {SCHEMA!r}; re-derive it with this hwnas "
                "version (hwnas sample/search write the current schema)"
            )
        kind = data.get("kind")
        if kind not in KINDS:
            raise ArchError(f"{source}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
        body_fields = _BLOCK_FIELDS if kind == "blocks" else _CELL_FIELDS
        allowed = {"schema", "kind", "space", "input", "info", *body_fields}
        extra = sorted(set(data) - allowed)
        missing = sorted({"space", "input", *body_fields} - set(data))
        if missing:
            raise ArchError(f"{source}: missing field(s) {', '.join(missing)} for a {kind!r} arch")
        if extra:
            raise ArchError(f"{source}: unexpected field(s) {', '.join(extra)}; remove them")
        inp = data["input"]
        if not (isinstance(inp, list) and len(inp) == 3 and all(is_int(v, 1) for v in inp)):
            raise ArchError(f"{source}: field 'input' must be [C, H, W] positive ints, got {inp!r}")
        info = data.get("info", {})
        if not isinstance(info, dict):
            raise ArchError(f"{source}: field 'info' must be an object")
        body = {k: data[k] for k in body_fields}
        try:
            return cls(kind, str(data["space"]), tuple(inp), body, info)  # type: ignore[arg-type]
        except ArchError as e:
            raise ArchError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        """Read and validate an arch JSON file."""
        p = Path(path)
        try:
            text = p.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ArchError(f"{p}: no such arch file") from None
        except OSError as e:
            raise ArchError(f"{p}: cannot read ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise ArchError(
                f"{p}: not a UTF-8 text file (byte {e.start}); pass the arch JSON that hwnas sample/search wrote"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        except RecursionError:
            raise ArchError(f"{p}: not valid JSON (nested too deeply to be an arch)") from None
        return cls.from_dict(data, str(p))

    @property
    def plan(self) -> Plan:
        return self._plan  # type: ignore[attr-defined]

    def build(self) -> PlanNet:
        """A fresh (randomly initialised) network for this arch."""
        return PlanNet(self.plan)


_BLOCK_FIELDS = ("stem", "layers", "head")
_CELL_FIELDS = ("C", "layers", "stem_multiplier", "reduce_at", "classes", "genotype")


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively, so the dict is plain JSON data."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _op_dict(d: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(d, dict) or "op" not in d:
        raise ArchError(f"{where} must be an object with an 'op' field, got {d!r}")
    params = {k: v for k, v in d.items() if k != "op"}
    return str(d["op"]), params


def walk(arch: Arch) -> Plan:
    """The one walker: the arch's op calls in order, with shapes propagated and checked."""
    nodes = list(_walk_blocks(arch) if arch.kind == "blocks" else _walk_cells(arch))
    return Plan(tuple(arch.input), tuple(nodes))


class _Builder:
    def __init__(self, in_shape: Shape) -> None:
        self.nodes: list[Node] = []
        self.shapes: dict[int, Shape] = {-1: in_shape}

    def add(
        self, op: str, params: Mapping[str, Any], inputs: tuple[int, ...], where: str, tag: tuple[Any, ...] = ()
    ) -> int:
        shape = self.shapes[inputs[0]]
        for i in inputs[1:]:
            if self.shapes[i] != shape:
                raise ArchError(f"{where}: inputs have shapes {self.shapes[inputs[0]]} and {self.shapes[i]}")
        try:
            call = make_call(op, params, shape)
            out = call.out_shape
        except OpError as e:
            raise ArchError(f"{where}: {e}") from None
        self.nodes.append(Node(call, inputs, where, tag))
        idx = len(self.nodes) - 1
        self.shapes[idx] = out
        return idx


def _walk_blocks(arch: Arch) -> Iterator[Node]:
    b = _Builder(arch.input)
    layers = arch.body["layers"]
    if not isinstance(layers, list):
        raise ArchError("field 'layers' must be a list of op objects")
    prev = -1
    for i, (where, d) in enumerate([("stem", arch.body["stem"]), *((f"layers[{i}]", d) for i, d in enumerate(layers))]):
        op, params = _op_dict(d, where)
        if op == "head":
            raise ArchError(f"{where}: 'head' belongs in the 'head' field")
        prev = b.add(op, params, (prev,), where, ("layer", i - 1) if i else ("stem",))
    op, params = _op_dict(arch.body["head"], "head")
    if op != "head":
        raise ArchError(f"head: op must be 'head', got {op!r}")
    b.add(op, params, (prev,), "head")
    yield from b.nodes


def _walk_cells(arch: Arch) -> Iterator[Node]:
    body = arch.body
    for f in ("C", "layers", "stem_multiplier", "classes"):
        if not is_int(body[f], 1):
            raise ArchError(f"field {f!r} must be a positive integer, got {body[f]!r}")
    n_layers = body["layers"]
    reduce_at = body["reduce_at"]
    if not (isinstance(reduce_at, list) and all(is_int(r, 0) and r < n_layers for r in reduce_at)):
        raise ArchError(f"field 'reduce_at' must list cell indices in [0, {n_layers}), got {reduce_at!r}")
    geno = body["genotype"]
    if not isinstance(geno, dict) or set(geno) != {"normal", "reduce"}:
        raise ArchError("field 'genotype' must be an object with exactly 'normal' and 'reduce'")
    cells = {k: _check_cell(geno[k], f"genotype.{k}") for k in ("normal", "reduce")}
    if len(cells["normal"]) != len(cells["reduce"]):
        raise ArchError("genotype.normal and genotype.reduce must have the same number of nodes")
    yield from walk_cells(arch.input, body, cells).nodes


def walk_cells(in_shape: Shape, body: Mapping[str, Any], cells: Mapping[str, list[list[tuple[str, int]]]]) -> Plan:
    """The plan of a DARTS network whose nodes each sum any number of ``(op, input)`` edges.

    A derived cell has two edges per node; the supernet walks the dense cell (every input of
    every node) through this same function, so both agree on shapes and strides. Edge nodes are
    tagged ``("edge", cell_type, k, cell_index)`` with ``k`` the edge's index in node-major order.
    """
    C = body["C"]
    n_layers, reduce_at = body["layers"], body["reduce_at"]
    n_nodes = len(cells["normal"])
    b = _Builder(in_shape)
    stem = b.add("conv_bn_act", {"out": body["stem_multiplier"] * C, "k": 3, "stride": 1, "act": "none"}, (-1,), "stem")
    s0 = s1 = stem
    c_cur, red_prev = C, False
    for i in range(n_layers):
        red = i in reduce_at
        if red:
            c_cur *= 2
        cell = "reduce" if red else "normal"
        where = f"cell {i}"
        if red_prev:
            p0 = b.add("factorized_reduce", {"out": c_cur}, (s0,), f"{where} preprocess0")
        else:
            p0 = b.add("relu_conv_bn", {"out": c_cur, "k": 1, "stride": 1}, (s0,), f"{where} preprocess0")
        p1 = b.add("relu_conv_bn", {"out": c_cur, "k": 1, "stride": 1}, (s1,), f"{where} preprocess1")
        states = [p0, p1]
        k = 0
        for j, edges in enumerate(cells[cell]):
            outs = []
            for e, (op, src) in enumerate(edges):
                stride = 2 if red and src < 2 else 1
                w = f"{where} ({cell}) node {j} edge {e}"
                outs.append(b.add(op, {"stride": stride}, (states[src],), w, ("edge", cell, k, i)))
                k += 1
            total = (
                b.add(NODE_SUM, {"n": len(outs)}, tuple(outs), f"{where} node {j} sum") if len(outs) > 1 else outs[0]
            )
            states.append(total)
        out = b.add("concat", {"n": n_nodes}, tuple(states[2:]), f"{where} concat", ("cell_out", i))
        s0, s1, red_prev = s1, out, red
    b.add("head", {"mix": 0, "classes": body["classes"], "act": "none"}, (s1,), "head")
    return Plan(tuple(in_shape), tuple(b.nodes))


def _check_cell(edges: Any, where: str) -> list[list[tuple[str, int]]]:
    """Validate a derived cell (two ``[op, input]`` pairs per node) and group it by node."""
    if not isinstance(edges, list) or not edges or len(edges) % 2:
        raise ArchError(f"{where} must be a non-empty list of [OP, INPUT] pairs, two per node")
    for i, edge in enumerate(edges):
        if not (isinstance(edge, list) and len(edge) == 2 and isinstance(edge[0], str) and is_int(edge[1])):
            raise ArchError(f"{where}[{i}] must be [OP, INPUT] (an op name and an input index), got {edge!r}")
        op, src = edge
        node = i // 2
        if not 0 <= src < 2 + node:
            raise ArchError(f"{where}[{i}]: input {src} must be in [0, {2 + node}) for node {node}")
        if op == "none":
            raise ArchError(f"{where}[{i}]: 'none' is not kept in a derived cell; pick another op")
        try:
            spec = get_op(op)
        except OpError as e:
            raise ArchError(f"{where}[{i}]: {e}") from None
        if spec.params != ("stride",):
            raise ArchError(f"{where}[{i}]: {op!r} is not a cell edge op")
    return [[(op, src) for op, src in edges[2 * j : 2 * j + 2]] for j in range(len(edges) // 2)]


class PlanNet(nn.Module):
    """Executes a :class:`Plan`: one module per node, each fed the outputs of its inputs."""

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        self.nodes = nn.ModuleList([n.call.build() for n in plan.nodes])
        self._inputs = [n.inputs for n in plan.nodes]
        # free an output as soon as its last consumer ran (keeps peak memory low)
        last_use: dict[int, int] = {}
        for i, ins in enumerate(self._inputs):
            for j in ins:
                last_use[j] = i
        self._release = [[j for j, last in last_use.items() if last == i and j >= 0] for i in range(len(self._inputs))]

    def forward(
        self,
        x: torch.Tensor,
        mark: Callable[[int], None] | None = None,
        after: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the plan; ``mark(i)`` (if given) is called before node ``i`` and once at the end;
        ``after(i, y)`` (if given) sees node ``i``'s output and returns what its consumers get.

        The profiler uses ``mark`` to time each block inside the network; training uses ``after``
        for drop-path and to tap an auxiliary head.
        """
        outs: dict[int, torch.Tensor] = {-1: x}
        for i, (mod, ins) in enumerate(zip(self.nodes, self._inputs, strict=True)):
            if mark is not None:
                mark(i)
            outs[i] = mod(*(outs[j] for j in ins))
            if after is not None:
                outs[i] = after(i, outs[i])
            for j in self._release[i]:
                del outs[j]
        if mark is not None:
            mark(len(self.nodes))
        return outs[len(self.nodes) - 1]
