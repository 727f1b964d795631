"""Where: elementwise ``X`` where ``condition`` holds, else ``Y``, all three broadcast together."""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array, Op
from engine.ops.binary import align_operands


class Where(Op):
    """``condition`` is bool; ``X`` and ``Y`` share one type (when they differ, as a float16 input next to a
    weight corral keeps as float32, the larger operand's type, as the arithmetic ops decide)."""

    op_type = "Where"
    min_inputs = 3
    max_inputs = 3

    def run(self, condition: Array, x: Array, y: Array) -> Array:
        condition = np.asarray(condition)
        if condition.dtype != np.bool_:
            raise TypeError(f"condition must be bool, got {condition.dtype}")
        x, y = align_operands(x, y)
        return np.asarray(np.where(condition, x, y))  # [broadcast(condition, X, Y)]
