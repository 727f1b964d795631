"""Tile: repeat the input ``repeats[i]`` times along each axis ``i`` (opset 6+: ``repeats`` is an input)."""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array, Op, as_int_list


class Tile(Op):
    op_type = "Tile"
    min_inputs = 2
    max_inputs = 2

    def run(self, x: Array, repeats: Array) -> Array:
        x = np.asarray(x)
        counts = as_int_list(repeats)
        # numpy pads a short list with leading 1s; ONNX asks for one count per axis.
        if len(counts) != x.ndim:
            raise ValueError(f"repeats has {len(counts)} values for an input of rank {x.ndim}")
        if any(c < 0 for c in counts):
            raise ValueError(f"repeats {counts} has a negative count")
        return np.tile(x, counts)  # [d0 * r0, d1 * r1, ...], always a new array
