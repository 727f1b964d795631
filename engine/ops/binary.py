"""Two-input elementwise arithmetic with numpy broadcasting: Add, Sub, Mul, Div, Pow.

ONNX gives both operands one element type. When they differ anyway (a
float64 0-d constant next to float32 activations, say) the operand with more
elements decides the type, so activations stay float32 end to end instead of
numpy promoting the whole tensor to float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from engine.ops.base import Array, Op


def align_operands(a: Array, b: Array) -> tuple[Array, Array]:
    """Both operands in one dtype: the larger operand's, casting only the smaller one."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype == b.dtype:
        return a, b
    if a.size >= b.size:
        return a, b.astype(a.dtype)
    return a.astype(b.dtype), b


class _Binary(Op):
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int] = 2
    ufunc: ClassVar[Callable[..., Array]]

    def run(self, a: Array, b: Array) -> Array:
        a, b = align_operands(a, b)
        return type(self).ufunc(a, b)


class Add(_Binary):
    op_type = "Add"
    ufunc = np.add


class Sub(_Binary):
    op_type = "Sub"
    ufunc = np.subtract


class Mul(_Binary):
    op_type = "Mul"
    ufunc = np.multiply


class Div(Op):
    """Float division is IEEE (x/0 is ±inf); integer division truncates toward zero as in C."""

    op_type = "Div"
    min_inputs = 2
    max_inputs = 2

    def run(self, a: Array, b: Array) -> Array:
        a, b = align_operands(a, b)
        if a.dtype.kind in "iu":
            with np.errstate(divide="ignore", invalid="ignore"):
                if a.dtype.kind == "u":
                    return np.floor_divide(a, b)
                # a - fmod(a, b) is an exact multiple of b, so floor division of it is the truncated quotient.
                return np.floor_divide(a - np.fmod(a, b), b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.divide(a, b)


class Pow(Op):
    """``x ** y`` in the dtype of ``x`` (the exponent may have another type)."""

    op_type = "Pow"
    min_inputs = 2
    max_inputs = 2

    def run(self, x: Array, y: Array) -> Array:
        x = np.asarray(x)
        y = np.asarray(y)
        dtype = x.dtype
        if dtype.kind == "f":
            # The common case in normalization layers: a scalar exponent of 2.
            if y.size == 1 and y.ndim <= x.ndim:
                e = float(y.reshape(-1)[0])
                if e == 2.0:
                    return np.square(x)
                if e == 1.0:
                    return x
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    return np.power(x, dtype.type(e))
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                return np.power(x, y.astype(dtype, copy=False))
        if dtype.kind in "iu" and y.dtype.kind in "iub" and (y.size == 0 or y.min() >= 0):
            return np.power(x, y.astype(dtype, copy=False))
        # Integer base with a float or negative exponent: compute in float64, then back to the base type.
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return np.power(x.astype(np.float64), y.astype(np.float64)).astype(dtype)
