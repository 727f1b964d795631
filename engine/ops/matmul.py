"""MatMul with numpy ``matmul`` semantics (1-D operands promoted and squeezed, batch dims broadcast)."""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array, Op
from engine.ops.binary import align_operands


class MatMul(Op):
    op_type = "MatMul"
    min_inputs = 2
    max_inputs = 2

    def run(self, a: Array, b: Array) -> Array:
        a, b = align_operands(a, b)
        return np.matmul(a, b)
