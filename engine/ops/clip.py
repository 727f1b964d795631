"""Clip: bound values to [min, max].

Opset 11+ passes the bounds as optional inputs; opset 6 as ``min``/``max``
attributes. Either bound may be absent. Where min > max every value becomes
max, as the ONNX spec states.
"""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op


class Clip(Op):
    op_type = "Clip"
    min_inputs = 1
    max_inputs = 3

    def setup(self, node: Node) -> None:
        self.attr_min = node.float_attr("min")
        self.attr_max = node.float_attr("max")

    def run(self, x: Array, lo: Array | None = None, hi: Array | None = None) -> Array:
        t = x.dtype.type
        low = self._bound(lo, self.attr_min, t)
        high = self._bound(hi, self.attr_max, t)
        if high is None:
            return x if low is None else np.maximum(x, low)
        if low is None:
            return np.minimum(x, high)
        # minimum(maximum(x, lo), hi): yields hi where lo > hi, as the spec asks.
        return np.minimum(np.maximum(x, low), high)

    @staticmethod
    def _bound(value: Array | None, attr: float | None, t: type[np.generic]) -> np.generic | None:
        if value is not None:
            value = np.asarray(value)
            if value.size != 1:
                raise ValueError(f"min/max must be scalars, got shape {list(value.shape)}")
            return t(value.reshape(-1)[0])
        return None if attr is None else t(attr)
