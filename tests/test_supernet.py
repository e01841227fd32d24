"""Supernets on every kind of space with every strategy: forward, gradients, latency, derivation."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
from conftest import fast_settings

from hwnas.lut import LUT
from hwnas.profiling.profile import profile
from hwnas.space import Space, load_space
from hwnas.strategies import STRATEGIES, Binary, make_strategy
from hwnas.supernet import MixedOp, Supernet, _convs

SPACES = ["tiny", "tiny_darts"]


@pytest.fixture(scope="module")
def luts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LUT]:
    out = {}
    for name in SPACES:
        path = tmp_path_factory.mktemp("lut") / f"{name}.csv"
        out[name] = profile(load_space(name), fast_settings(), path)
    return out


def _variants() -> list[tuple[str, str, bool]]:
    return [
        (sp, st, hard) for sp in SPACES for st in STRATEGIES for hard in ([False, True] if st == "gumbel" else [False])
    ]


@pytest.mark.parametrize(("space", "strategy", "hard"), _variants())
@pytest.mark.parametrize("phase", ["weights", "arch"])
def test_forward_and_latency_gradient_reach_every_arch_parameter(
    space: str, strategy: str, hard: bool, phase: str, luts: dict[str, LUT]
) -> None:
    sp = load_space(space)
    st = make_strategy(strategy, hard=hard)
    st.phase = phase
    # Distinct latencies: the tiny blocks of a fast profile can measure alike on a busy machine,
    # and a candidate priced exactly at its row's expectation rightly has a zero gradient.
    lut = copy.deepcopy(luts[space])
    for i, k in enumerate(sorted(lut.latency)):
        lut.latency[k] += 1e-3 * (i + 1)
    net = Supernet(sp, st, lut)
    y = net(torch.randn(2, *sp.input_shape))
    assert tuple(y.shape) == (2, sp.num_classes)
    e = net.expected_latency_ms()
    e.backward()
    for a in net.arch_parameters():
        assert a.grad is not None and torch.isfinite(a.grad).all()
        assert (a.grad.abs() > 0).any(), "the latency term must reach every architecture parameter"
    if space == "tiny":  # every row of a block space has a gradient (DARTS rows: none has no latency)
        for a in net.arch_parameters():
            assert (a.grad.abs() > 0).sum() >= a.numel() - 1


@pytest.mark.parametrize("space", SPACES)
def test_arch_and_weight_parameters_are_disjoint_real_parameters(space: str, luts: dict[str, LUT]) -> None:
    net = Supernet(load_space(space), make_strategy("softmax"), luts[space])
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert arch and weights and not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert any(k.startswith("alphas.") for k in net.state_dict())  # saved with the model


def test_expected_latency_equals_prediction_of_a_peaked_block_arch(luts: dict[str, LUT]) -> None:
    sp = load_space("tiny")
    net = Supernet(sp, make_strategy("softmax"), luts["tiny"])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in net.alphas:
            a.copy_(torch.zeros_like(a).index_fill_(0, torch.randint(len(a), (1,), generator=g), 60.0))
    assert float(net.expected_latency_ms().detach()) == pytest.approx(
        luts["tiny"].predict(net.derive()).total_ms, rel=1e-5
    )


def _one_hot_cells(lut: LUT, ops: tuple[str, str, str, str] = ("sep_conv_3x3",) * 4) -> Supernet:
    """A tiny_darts supernet whose alphas clearly pick ``ops`` on edges (0, 1) of node 0 and
    (1, 2) of node 1, in both cell types, every other edge clearly absent. With the default,
    node 1's edge from state 1 reads a state node 0's sep_conv already read with its leading
    ReLU (a shared role)."""
    sp = load_space("tiny_darts")
    net = Supernet(sp, make_strategy("softmax"), lut)
    none = sp.cell_ops.index("none")
    picks = iter(ops)
    with torch.no_grad():
        for a in net.alphas:
            a.fill_(0.0)
            a[:, none] = 60.0  # every edge absent ...
        edges = [(j, src) for j, pair in enumerate([(0, 1), (1, 2)]) for src in pair]
        ops_of = dict(zip(edges, picks, strict=True))
        for c in range(2):
            for (j, src), op in ops_of.items():  # ... but two per node, each with a clear op
                row = net.alphas[c][sum(2 + i for i in range(j)) + src]
                row[none] = -60.0
                row[sp.cell_ops.index(op)] = 60.0
    return net


def test_darts_expectation_estimates_the_derived_cell(luts: dict[str, LUT]) -> None:
    net = _one_hot_cells(luts["tiny_darts"])
    derived = net.derive()
    assert all(op == "sep_conv_3x3" for op, _ in derived.body["genotype"]["normal"])
    assert float(net.expected_latency_ms().detach()) == pytest.approx(
        luts["tiny_darts"].predict(derived).total_ms, rel=1e-4
    )


def test_an_edge_whose_relu_an_earlier_edge_runs_is_priced_apart(luts: dict[str, LUT]) -> None:
    lut = luts["tiny_darts"]
    assert lut.table["shared_ms"].notna().any(), "the probe networks price some key in both roles"
    table = lut.table.copy()
    edge = table["op"].str.startswith(("sep_conv", "dil_conv")) & (table["params"] == "stride=1")
    table.loc[edge, "shared_ms"] = table.loc[edge, "latency_ms"] / 2  # a price the role visibly changes
    halved = LUT(table, lut.meta)
    net = _one_hot_cells(halved)
    derived = net.derive()
    roles = dict(zip([n.where for n in derived.plan.nodes], derived.plan.roles(), strict=True))
    assert sorted(set(roles.values())) == ["", "own", "shared"], roles
    edges = {w: r for w, r in roles.items() if "edge" in w}
    shared = [w for w, r in edges.items() if r == "shared"]
    assert "own" in edges.values() and shared, edges
    assert all("node 1" in w for w in shared), "only node 1's edge from state 1 reads a state twice"
    assert halved.predict(derived).total_ms < lut.predict(derived).total_ms
    assert float(net.expected_latency_ms().detach()) == pytest.approx(halved.predict(derived).total_ms, rel=1e-4)


def test_a_sum_fused_into_a_conv_is_priced_apart_from_one_that_runs_alone(luts: dict[str, LUT]) -> None:
    lut = luts["tiny_darts"]
    table = lut.table.copy()
    add = table["op"] == "add"
    assert table.loc[add, "shared_ms"].notna().all(), "the probe networks see every sum in both roles"
    table.loc[add, "latency_ms"] = 0.05  # prices the roles visibly apart: alone 50 µs, fused free
    table.loc[add, "shared_ms"] = 0.0
    priced = LUT(table, lut.meta)
    # node 0 sums a pool and a skip (alone where the skip is the identity), node 1 a conv and a pool
    net = _one_hot_cells(priced, ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "avg_pool_3x3"))
    derived = net.derive()
    roles = {n.where: r for n, r in zip(derived.plan.nodes, derived.plan.roles(), strict=True) if n.call.op == "add"}
    assert {r for w, r in roles.items() if "node 1" in w} == {"shared"}, roles
    assert "own" in {r for w, r in roles.items() if "node 0" in w}, roles
    assert float(net.expected_latency_ms().detach()) == pytest.approx(priced.predict(derived).total_ms, rel=1e-4)
    alone = sum(r == "own" for r in roles.values())
    assert priced.predict(derived).total_ms == pytest.approx(
        lut.scale * alone * 0.05
        + LUT(table.assign(latency_ms=table["latency_ms"].where(~add, 0.0)), lut.meta).predict(derived).total_ms
    )


def _random_prices(sp: Space, seed: int) -> LUT:
    """A LUT of random prices for every call of ``sp``, most keys with a random shared price."""
    rng = random.Random(seed)
    rows = []
    for c in sp.calls():
        ms = rng.uniform(0.005, 0.2)
        shared = rng.uniform(0.0, ms) if rng.random() < 0.7 else float("nan")
        rows.append({"key": c.key, "op": c.op, "params": c.param_str, "input": c.shape_str, "latency_ms": ms,
                     "shared_ms": shared})  # fmt: skip
    meta = {"space": sp.name, "input_size": sp.input_size, "width_mult": sp.width_mult, "device_kind": "cpu",
            "backend": "onnxruntime", "threads": 1, "batch": 1, "model": {"scale": 1.3, "overhead_ms": 0.07}}  # fmt: skip
    return LUT.from_rows(rows, meta)


@pytest.mark.parametrize("space", ["tiny_darts", "darts"])
def test_darts_expectation_is_the_prediction_at_random_one_hot_choices(space: str) -> None:
    """Random genotypes (a third of the nodes pools and skips only, so sums run alone) under
    random role prices: at a one-hot choice the expectation is the derived network's prediction."""
    sp = load_space(space, 16)
    lut = _random_prices(sp, 0)
    net = Supernet(sp, make_strategy("softmax"), lut)
    ops, nodes, rng = sp.cell_ops, int(sp.raw["nodes"]), random.Random(1)
    cheap = ["max_pool_3x3", "avg_pool_3x3", "skip_connect"]
    for _ in range(12):
        with torch.no_grad():
            for a in net.alphas:
                a.fill_(0.0)
                a[:, ops.index("none")] = 60.0
                for j in range(nodes):
                    pool = rng.random() < 1 / 3
                    for src in rng.sample(range(2 + j), 2):
                        row = a[sum(2 + i for i in range(j)) + src]
                        row[ops.index("none")] = -60.0
                        row[ops.index(rng.choice(cheap if pool else ops[1:]))] = 60.0
        derived = net.derive()
        assert float(net.expected_latency_ms().detach()) == pytest.approx(lut.predict(derived).total_ms, rel=1e-5)


def test_a_checkpoint_does_not_carry_latency_prices(luts: dict[str, LUT]) -> None:
    """A checkpoint of an older hwnas may hold the latency buffers priced another way (its
    ``fixed_ms`` held the node sums): loading one keeps the LUT's prices."""
    net = _one_hot_cells(luts["tiny_darts"])
    want = float(net.expected_latency_ms().detach())
    state = net.state_dict()
    state["fixed_ms"] = state["fixed_ms"] + 1.0
    net.load_state_dict(state)
    assert float(net.expected_latency_ms().detach()) == pytest.approx(want)


def test_binary_runs_one_path_in_the_weight_step_and_two_in_the_arch_step(luts: dict[str, LUT]) -> None:
    sp = load_space("tiny")
    st = make_strategy("binary")
    net = Supernet(sp, st, luts["tiny"])
    calls: list[int] = []
    for m in net.nodes:
        if isinstance(m, MixedOp):
            for op in m.ops:
                op.register_forward_hook(lambda *a: calls.append(1))
    n_mixed = sum(isinstance(m, MixedOp) for m in net.nodes)
    st.phase = "weights"
    net(torch.randn(1, *sp.input_shape))
    assert len(calls) == n_mixed
    calls.clear()
    st.phase = "arch"
    net(torch.randn(1, *sp.input_shape))
    assert len(calls) == 2 * n_mixed


def test_binary_rescale_keeps_other_probabilities() -> None:
    alpha = torch.tensor([0.3, -1.0, 2.0, 0.5])
    old = alpha.clone()
    alpha[[0, 2]] += torch.tensor([0.7, -0.4])  # an optimiser step on the two sampled paths
    Binary.rescale(alpha, old, (0, 2))
    p_old, p_new = torch.softmax(old, 0), torch.softmax(alpha, 0)
    assert torch.allclose(p_old[[1, 3]], p_new[[1, 3]], atol=1e-6)
    assert not torch.allclose(p_old[[0, 2]], p_new[[0, 2]])


def test_unknown_strategy() -> None:
    from hwnas.errors import UsageError

    with pytest.raises(UsageError, match="expected one of softmax, binary, gumbel"):
        make_strategy("random")


def test_lut_without_the_supernets_keys(luts: dict[str, LUT], tmp_path: Path) -> None:
    from hwnas.lut import LutError

    sp = load_space("tiny").with_params(in_channels=1, num_classes=10)
    with pytest.raises(LutError, match="--in-channels 1 --num-classes 10"):
        Supernet(sp, make_strategy("softmax"), luts["tiny"])


@pytest.mark.parametrize("space", [*SPACES, "proxyless", "fbnet", "darts"])
def test_shared_candidates_compute_as_standalone_ops_with_sliced_weights(space: str) -> None:
    """A candidate of a sharing supernet is the registered op with its weights cut from the shared
    tensor: the leading channels and the kernel centre; and it has no conv weight of its own."""
    sp = load_space(space).with_params(input_size=16) if space in ("proxyless", "fbnet") else load_space(space)
    torch.manual_seed(0)
    net = Supernet(sp, make_strategy("binary"), share=True)
    assert net.share and sum(len(m.shared) for m in net.modules() if isinstance(m, MixedOp)) > 0
    names = set(net.state_dict())
    checked = shared_checked = 0
    for node in net.nodes:
        if not isinstance(node, MixedOp) or not len(node.shared):
            continue
        shared_ids = {id(p) for p in node.shared}
        own = {id(p) for op in node.ops for p in op.parameters()}
        assert not shared_ids & own
        for op, call in zip(node.ops, node.calls, strict=True):
            if all("weight" in c._parameters for c in _convs(op)):
                continue
            # each conv's weight is the leading channels and kernel centre of one shared tensor
            for c in _convs(op):
                if "weight" in c._parameters:
                    continue
                (big,) = [
                    p for p in node.shared if p.untyped_storage().data_ptr() == c.weight.untyped_storage().data_ptr()
                ]
                o, i, kh, kw = c.weight.shape
                dh, dw = (big.shape[2] - kh) // 2, (big.shape[3] - kw) // 2
                torch.testing.assert_close(c.weight, big.detach()[:o, :i, dh : dh + kh, dw : dw + kw])
                shared_checked += 1
            # and the forward computes the registered op with those weights, also after the shared
            # tensors change in place (an optimiser step)
            x = torch.randn(2, *call.in_shape)
            op.eval()
            for bump in (0.0, 0.5):
                with torch.no_grad():
                    for p in node.shared:
                        p.add_(bump)
                want = op(x)
                alone = call.build().eval()
                alone.load_state_dict(
                    {k: v for k, v in op.state_dict().items() if k in alone.state_dict()}, strict=False
                )
                for c, theirs in zip(_convs(op), _convs(alone), strict=True):
                    if "weight" not in c._parameters:
                        (big,) = [
                            p
                            for p in node.shared
                            if p.untyped_storage().data_ptr() == c.weight.untyped_storage().data_ptr()
                        ]
                        o, i, kh, kw = theirs.weight.shape
                        dh, dw = (big.shape[2] - kh) // 2, (big.shape[3] - kw) // 2
                        with torch.no_grad():
                            theirs.weight.copy_(big[:o, :i, dh : dh + kh, dw : dw + kw])
                    else:
                        with torch.no_grad():
                            theirs.weight.copy_(c.weight)
                torch.testing.assert_close(alone(x), want)
            checked += 1
    assert checked >= 2 and shared_checked >= 1
    assert any(".shared." in n for n in names)


@pytest.mark.parametrize(("space", "strategy", "hard"), _variants())
def test_sharing_default_follows_the_strategy_and_a_path_trains_the_shared_tensor(
    space: str, strategy: str, hard: bool, luts: dict[str, LUT]
) -> None:
    sp = load_space(space)
    st = make_strategy(strategy, hard=hard)
    net = Supernet(sp, st, luts[space])
    assert net.share == st.single_path == (strategy == "binary" or hard)
    net = Supernet(sp, st, luts[space], share=True)
    shared = [p for m in net.modules() if isinstance(m, MixedOp) for p in m.shared]
    assert shared
    before = [p.detach().clone() for p in shared]
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    st.phase = "weights"
    for _ in range(3):  # a few sampled paths: some shared tensor is used and moves
        opt.zero_grad()
        net(torch.randn(4, *sp.input_shape)).logsumexp(1).mean().backward()
        opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, shared, strict=True))
    # the candidates read the moved tensor: their weights are slices of it, not stale copies
    for m in net.modules():
        if isinstance(m, MixedOp):
            for op in m.ops:
                for c in _convs(op):
                    if "weight" not in c._parameters:
                        c(torch.randn(1, c.in_channels, 8, 8))
                        assert any(
                            c.weight.untyped_storage().data_ptr() == p.untyped_storage().data_ptr() for p in m.shared
                        )


@pytest.mark.parametrize(
    "name, example",
    [
        ("proxyless", None),  # MBConv k3/k5/k7 x e3/e6 + zero: every candidate with convs has the same roles
        ("fbnet", "layer 1: mbconv_k3_e1 vs skip"),  # a 1x1 skip projection where the layer changes shape
        ("darts", "normal node 0 input 0: sep_conv_3x3 vs dil_conv_3x3"),
        ("tiny", "layer 1: mbconv_k3_e1 vs skip"),
    ],
)
def test_unaligned_names_the_decisions_whose_candidates_differ_in_structure(name: str, example: str | None) -> None:
    net = Supernet(load_space(name, input_size=32), make_strategy("binary"))
    lines = net.unaligned()
    if example is None:
        assert lines == []
    else:
        assert example in lines
        assert len(lines) == len({line.split(":")[0] for line in lines})  # one line per decision
    if name == "fbnet":  # e1 beside e3/e6 aligns (its siblings' expansions start as the identity); an identity skip too
        assert not any(line.startswith("layer 0:") for line in lines)
        assert len(lines) == 6  # the layers that change shape: their skip is a 1x1 projection
        separate = Supernet(load_space(name, input_size=32), make_strategy("binary"), share=False).unaligned()
        assert any(line.startswith("layer 0: mbconv_k3_e1 vs mbconv_k3_e3") for line in separate)


@pytest.mark.parametrize("space", ["tiny", "fbnet", "proxyless"])
@pytest.mark.parametrize("share", [True, False])
def test_expansions_start_as_the_identity_where_a_sharing_candidate_has_none(space: str, share: bool) -> None:
    """With shared weights, MBConv e1 reads the block input with the depthwise and project convs
    that e3/e6 apply to their expansion; those expansions start by passing the input through on
    the leading channels, so e1 and e3/e6 begin on the same features. Nothing else changes."""
    from hwnas.ops.blocks import MBConv

    sp = load_space(space, input_size=16)
    torch.manual_seed(0)
    net = Supernet(sp, make_strategy("binary"), share=share)
    aligned = others = 0
    for m in net.modules():
        if not isinstance(m, MixedOp):
            continue
        has_e1 = any(isinstance(op, MBConv) and op.expand is None for op in m.ops)
        for op in m.ops:
            conv = op.expand if isinstance(op, MBConv) else None
            if conv is None or conv.groups != 1:
                continue
            x = torch.randn(2, conv.in_channels, 4, 4)
            with torch.no_grad():
                lead = conv(x)[:, : conv.in_channels]
            if share and has_e1:
                torch.testing.assert_close(lead, x)
                aligned += 1
            else:
                assert not torch.allclose(lead, x, atol=1e-2)
                others += 1
    if share and space != "proxyless":  # proxyless has no e1 candidate
        assert aligned > 0
    else:
        assert aligned == 0 and others > 0
