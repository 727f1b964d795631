"""Unsqueeze: insert size-1 axes at ``axes`` (input from opset 13, attribute before), counted in the output's rank."""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array, AxesOp


class Unsqueeze(AxesOp):
    op_type = "Unsqueeze"

    def run(self, x: Array, axes: Array | None = None) -> Array:
        axis_list = self.axes(axes)
        if axis_list is None:
            raise ValueError("axes are required (as the second input, or the attribute before opset 13)")
        out_rank = x.ndim + len(axis_list)
        normalized = []
        for a in axis_list:
            if not -out_rank <= a < out_rank:
                raise ValueError(f"axis {a} out of range for output rank {out_rank}")
            normalized.append(a % out_rank)
        if len(set(normalized)) != len(normalized):
            raise ValueError(f"axes {axis_list} repeat an axis")
        return np.expand_dims(x, tuple(normalized))
