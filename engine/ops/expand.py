"""Expand: broadcast the input against ``shape`` (both ways, as numpy does)."""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array, Op, as_int_list


class Expand(Op):
    op_type = "Expand"
    min_inputs = 2
    max_inputs = 2

    def run(self, x: Array, shape: Array) -> Array:
        dims = as_int_list(shape) or []
        if any(d < 0 for d in dims):
            raise ValueError(f"shape {dims} has a negative dimension")
        out_shape = np.broadcast_shapes(x.shape, tuple(dims))
        # A real array, not a read-only broadcast view: this may be a model output.
        return np.broadcast_to(x, out_shape).copy()
