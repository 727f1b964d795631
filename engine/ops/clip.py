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
        lo = node.attrs.get("min")
        hi = node.attrs.get("max")
        self.attr_min = None if lo is None else float(lo)
        self.attr_max = None if hi is None else float(hi)

    def run(self, x: Array, lo: Array | None = None, hi: Array | None = None) -> Array:
        t = x.dtype.type
        low = self._bound(lo, self.attr_min, t)
        high = self._bound(hi, self.attr_max, t)
        if low is None and high is None:
            return x
        if high is None:
            return np.maximum(x, low)
        if low is None:
            return np.minimum(x, high)
        # minimum(maximum(x, lo), hi): yields hi where lo > hi, as the spec asks.
        return np.minimum(np.maximum(x, low), high)

    @staticmethod
    def _bound(value: Array | None, attr: float | None, t: type) -> object:
        if value is not None:
            value = np.asarray(value)
            if value.size != 1:
                raise ValueError(f"min/max must be scalars, got shape {list(value.shape)}")
            return t(value.reshape(-1)[0])
        return None if attr is None else t(attr)
