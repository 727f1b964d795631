"""Boolean logic with numpy broadcasting: Not, And, Or (bool inputs and results)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from engine.ops.base import Array, Op


def check_bool(op: str, *values: Array) -> None:
    for v in values:
        if v.dtype != np.bool_:
            raise TypeError(f"{op} needs bool inputs, got {v.dtype}")


class Not(Op):
    op_type = "Not"

    def run(self, x: Array) -> Array:
        x = np.asarray(x)
        check_bool(self.op_type, x)
        return np.logical_not(x)


class _Logical(Op):
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int] = 2
    ufunc: ClassVar[Callable[..., Array]]

    def run(self, a: Array, b: Array) -> Array:
        a, b = np.asarray(a), np.asarray(b)
        check_bool(self.op_type, a, b)
        return np.asarray(type(self).ufunc(a, b))  # [broadcast(a, b)]; 0-d stays an array


class And(_Logical):
    op_type = "And"
    ufunc = np.logical_and


class Or(_Logical):
    op_type = "Or"
    ufunc = np.logical_or
