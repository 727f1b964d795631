"""Upsample (opsets 7 and 9, deprecated in 10): Resize with per-axis scales and asymmetric coordinates."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op
from engine.ops.interpolation import Sampling, resize


class Upsample(Op):
    """``mode`` nearest (floor of ``y / scale``) or linear; ``scales`` as an attribute (7) or second input (9)."""

    op_type = "Upsample"
    min_inputs = 1
    max_inputs = 2

    def setup(self, node: Node) -> None:
        mode = self.attr("mode", "nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode == "bilinear":
            mode = "linear"
        if mode not in ("nearest", "linear"):
            raise ValueError(f"mode must be nearest or linear, got {mode!r}")
        self.sampling = Sampling(mode=mode, coordinate_mode="asymmetric", nearest_mode="floor")
        scales = self.attr("scales")
        self.attr_scales = None if scales is None else [float(v) for v in np.asarray(scales).reshape(-1)]

    def run(self, x: Array, scales: Array | None = None) -> Array:
        values = [float(v) for v in np.asarray(scales).reshape(-1)] if scales is not None else self.attr_scales
        if values is None:
            raise ValueError("scales is required (the attribute in opset 7, the second input from opset 9)")
        if len(values) != x.ndim:
            raise ValueError(f"scales has {len(values)} values for a rank-{x.ndim} input")
        if any(v < 1 for v in values):
            raise ValueError(f"Upsample scales must be >= 1, got {values}")
        sizes = [int(v * n) for v, n in zip(values, x.shape)]
        return resize(x, self.sampling, sizes, values, [None] * x.ndim)
