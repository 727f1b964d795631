"""Squeeze: drop size-1 axes, listed in ``axes`` (input from opset 13, attribute before) or all of them."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, as_int_list, normalize_axis


class Squeeze(Op):
    op_type = "Squeeze"
    min_inputs = 1
    max_inputs = 2

    def setup(self, node: Node) -> None:
        self.attr_axes = as_int_list(node.attrs.get("axes"))

    def run(self, x: Array, axes: Array | None = None) -> Array:
        axis_list = as_int_list(axes) if axes is not None else self.attr_axes
        if axis_list is None:
            return np.squeeze(x)
        picked = {normalize_axis(a, x.ndim) for a in axis_list}
        for a in picked:
            if x.shape[a] != 1:
                raise ValueError(f"cannot squeeze axis {a} of length {x.shape[a]}")
        return np.squeeze(x, axis=tuple(picked))
