"""Elementwise comparisons with numpy broadcasting: Equal, Less, Greater (bool results).

Operands of two types (a float16 input next to a weight corral keeps as
float32) are compared in the larger operand's type, as the arithmetic ops
align them; float comparisons are IEEE (nan equals nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from engine.ops.base import Array, Op
from engine.ops.binary import align_operands


class _Compare(Op):
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int] = 2
    ufunc: ClassVar[Callable[..., Array]]

    def run(self, a: Array, b: Array) -> Array:
        a, b = align_operands(a, b)
        return np.asarray(type(self).ufunc(a, b))  # [broadcast(a, b)], bool; 0-d stays an array


class Equal(_Compare):
    op_type = "Equal"
    ufunc = np.equal


class Less(_Compare):
    op_type = "Less"
    ufunc = np.less


class Greater(_Compare):
    op_type = "Greater"
    ufunc = np.greater
