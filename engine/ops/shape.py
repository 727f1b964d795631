"""Shape: the input's dimensions as int64, optionally only ``shape[start:end]`` (opset 15)."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op


class Shape(Op):
    op_type = "Shape"

    def setup(self, node: Node) -> None:
        self.start = node.int_attr("start", 0)
        self.end = node.int_attr("end")

    def run(self, x: Array) -> Array:
        # Python slicing clamps out-of-range bounds just as the spec asks.
        return np.array(np.shape(x)[self.start:self.end], dtype=np.int64)
