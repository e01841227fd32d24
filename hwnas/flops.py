"""Multiply-accumulate count and parameter count of an arch, with fvcore.

fvcore counts one fused multiply-add as one "flop", so :func:`count` returns MACs (the figure
mobile NAS papers report as "FLOPs" / "MAdds"). The network is built from the same plan that the
LUT prices, so the count and the latency describe the same network.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from hwnas.arch import Arch


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int
    unsupported: dict[str, int]  # op name -> occurrences fvcore could not count

    def describe(self) -> str:
        return f"{self.macs / 1e6:.1f} M MACs, {self.params / 1e6:.3f} M params"


def count(arch: Arch) -> Cost:
    """MACs at batch 1 and the parameter count of ``arch`` (random weights; values do not matter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import warns about torch.jit.script's deprecation
        from fvcore.nn import FlopCountAnalysis

    net = arch.build().eval()
    x = torch.zeros(1, *arch.input)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        fca = FlopCountAnalysis(net, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        macs = int(fca.total())
        unsupported = dict(fca.unsupported_ops())
    return Cost(macs, sum(p.numel() for p in net.parameters()), unsupported)
