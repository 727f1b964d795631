"""Gather: pick entries along ``axis`` by index; negative indices count from the end."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, normalize_axis


class Gather(Op):
    op_type = "Gather"
    min_inputs = 2
    max_inputs = 2

    def setup(self, node: Node) -> None:
        self.axis = node.int_attr("axis", 0)

    def run(self, data: Array, indices: Array) -> Array:
        axis = normalize_axis(self.axis, data.ndim)
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got {indices.dtype}")
        dim = data.shape[axis]
        if indices.size and (indices.min() < -dim or indices.max() >= dim):
            raise IndexError(f"indices must lie in [{-dim}, {dim - 1}] for axis {axis}")
        return np.take(data, indices, axis=axis)
