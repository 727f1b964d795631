"""Reshape to the shape given as the second input.

A 0 copies the input's dimension at that position (unless ``allowzero`` is
set, when 0 means an empty dimension); one -1 is inferred from the rest.
"""

from __future__ import annotations

from engine.graph import Node
from engine.ops.base import Array, Op, as_int_list


class Reshape(Op):
    op_type = "Reshape"
    min_inputs = 2
    max_inputs = 2

    def setup(self, node: Node) -> None:
        self.allowzero = bool(node.attrs.get("allowzero", 0))

    def run(self, x: Array, shape: Array) -> Array:
        dims = as_int_list(shape) or []
        if dims.count(-1) > 1:
            raise ValueError(f"shape {dims} has more than one -1")
        if any(d < -1 for d in dims):
            raise ValueError(f"shape {dims} has a negative dimension")
        if self.allowzero:
            if 0 in dims and -1 in dims:
                raise ValueError(f"shape {dims} mixes 0 and -1 while allowzero is set")
        else:
            for i, d in enumerate(dims):
                if d == 0:
                    if i >= x.ndim:
                        raise ValueError(f"shape {dims} copies dimension {i}, but the input has rank {x.ndim}")
                    dims[i] = x.shape[i]
        return x.reshape(dims)
