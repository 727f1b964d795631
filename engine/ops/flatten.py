"""Flatten: reshape to 2-D ``[prod(shape[:axis]), prod(shape[axis:])]`` (axis default 1, may be negative)."""

from __future__ import annotations

import math

from engine.graph import Node
from engine.ops.base import Array, Op


class Flatten(Op):
    op_type = "Flatten"

    def setup(self, node: Node) -> None:
        self.axis = node.int_attr("axis", 1)

    def run(self, x: Array) -> Array:
        rank = x.ndim
        if not -rank <= self.axis <= rank:
            raise ValueError(f"axis {self.axis} out of range for rank {rank}")
        axis = self.axis + rank if self.axis < 0 else self.axis
        return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
