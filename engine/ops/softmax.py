"""Softmax.

Opset 13+ normalizes along ``axis`` (default -1). Before opset 13 the input
was coerced to 2-D ``[prod(shape[:axis]), prod(shape[axis:])]`` (default axis
1) and each row normalized; the importer marks such nodes with an ``opset``
attribute so the old meaning is kept.
"""

from __future__ import annotations

import math

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op


class Softmax(Op):
    op_type = "Softmax"

    def setup(self, node: Node) -> None:
        self.coerce_2d = node.int_attr("opset", 13) < 13
        self.axis = node.int_attr("axis", 1 if self.coerce_2d else -1)

    def run(self, x: Array) -> Array:
        rank = x.ndim
        if not -rank <= self.axis < max(rank, 1):
            raise ValueError(f"axis {self.axis} out of range for rank {rank}")
        axis = self.axis % rank if rank else 0
        if self.coerce_2d:
            rows = math.prod(x.shape[:axis])
            flat = x.reshape(rows, math.prod(x.shape[axis:]))  # [rows, cols]
            return _softmax(flat, 1).reshape(x.shape)
        return _softmax(x, axis)


def _softmax(x: Array, axis: int) -> Array:
    if x.size == 0:
        return x.copy()
    y = x - x.max(axis=axis, keepdims=True)  # shift by the max so exp cannot overflow
    np.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return y
