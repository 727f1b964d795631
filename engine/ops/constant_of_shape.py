"""ConstantOfShape: a tensor of the shape given by the input, filled with ``value`` (default float32 0)."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, as_int_list


class ConstantOfShape(Op):
    op_type = "ConstantOfShape"

    def setup(self, node: Node) -> None:
        value = node.attrs.get("value")
        fill = np.zeros(1, np.float32) if value is None else np.asarray(value)
        if fill.size != 1:
            raise ValueError(f"value must hold one element, got shape {list(fill.shape)}")
        if fill.dtype.kind not in "biuf":
            raise ValueError(f"value has dtype {fill.dtype}, which corral cannot hold")
        self.fill = fill.reshape(-1)[0]
        self.dtype = fill.dtype

    def run(self, shape: Array) -> Array:
        dims = as_int_list(shape) or []
        if any(d < 0 for d in dims):
            raise ValueError(f"shape {dims} has a negative dimension")
        return np.full(dims, self.fill, dtype=self.dtype)
