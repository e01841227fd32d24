"""Every candidate op, defined once: its module, its parameters, its registration.

Importing this package registers all ops (block ops and DARTS ops).
"""

from hwnas.ops import blocks, darts  # noqa: F401  (registration side effects)
from hwnas.ops.darts import DARTS_OPS, NODE_SUM
from hwnas.ops.registry import (
    OpCall,
    OpError,
    OpSpec,
    Shape,
    canonical_value,
    get_op,
    make_call,
    parse_key,
    register_op,
    registered_ops,
)

__all__ = [
    "DARTS_OPS",
    "NODE_SUM",
    "OpCall",
    "OpError",
    "OpSpec",
    "Shape",
    "canonical_value",
    "get_op",
    "make_call",
    "parse_key",
    "register_op",
    "registered_ops",
]
