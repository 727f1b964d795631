"""The op implementations: one module per op, imported on first use.

Which ops exist, and where each lives, is the table in :mod:`engine.op_table`
(re-exported here); :func:`op_class` loads the module that implements one.
"""

from __future__ import annotations

import importlib
from functools import cache

from engine.exceptions import UnsupportedOpError
from engine.graph import Node
from engine.op_table import INTERNAL_OPS, SUPPORTED_OPS, is_supported
from engine.ops.base import Op

__all__ = ["INTERNAL_OPS", "SUPPORTED_OPS", "is_supported", "make_op", "op_class"]


@cache
def op_class(op_type: str) -> type[Op]:
    """The implementation class for ``op_type``; raises for ops not in the list."""
    module = SUPPORTED_OPS.get(op_type) or INTERNAL_OPS.get(op_type)
    if module is None:
        raise UnsupportedOpError({op_type: []})
    cls = getattr(importlib.import_module(f"engine.ops.{module}"), op_type)
    assert cls.op_type == op_type, f"engine.ops.{module}.{op_type} declares op_type {cls.op_type!r}"
    return cls


def make_op(node: Node) -> Op:
    return op_class(node.op_type)(node)
