"""Concat along ``axis`` (required, may be negative)."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, normalize_axis


class Concat(Op):
    op_type = "Concat"
    min_inputs = 1
    max_inputs = 2**31 - 1

    def setup(self, node: Node) -> None:
        axis = node.int_attr("axis")
        if axis is None:
            raise ValueError("the axis attribute is required")
        self.axis = axis

    def run(self, *inputs: Array | None) -> Array:
        if any(x is None for x in inputs):
            raise ValueError("every input must be given; an empty input name is not allowed here")
        arrays = [np.asarray(x) for x in inputs]
        rank = arrays[0].ndim
        if rank == 0:
            raise ValueError("cannot concatenate 0-d tensors")
        return np.concatenate(arrays, axis=normalize_axis(self.axis, rank))
