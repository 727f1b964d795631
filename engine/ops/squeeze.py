"""Squeeze: drop size-1 axes, listed in ``axes`` (input from opset 13, attribute before) or all of them."""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array, AxesOp, normalize_axis


class Squeeze(AxesOp):
    op_type = "Squeeze"

    def run(self, x: Array, axes: Array | None = None) -> Array:
        axis_list = self.axes(axes)
        if axis_list is None:
            return np.squeeze(x)
        picked = {normalize_axis(a, x.ndim) for a in axis_list}
        for a in picked:
            if x.shape[a] != 1:
                raise ValueError(f"cannot squeeze axis {a} of length {x.shape[a]}")
        return np.squeeze(x, axis=tuple(picked))
