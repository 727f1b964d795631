"""Elementwise ops over one or more broadcast inputs: Max, Min, Sum, Mean."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from engine.ops.base import Array, Op
from engine.ops.binary import align_operands


class _Variadic(Op):
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int] = 2**31 - 1
    ufunc: ClassVar[Callable[..., Array]]

    def run(self, *inputs: Array | None) -> Array:
        given = [x for x in inputs if x is not None]
        if len(given) != len(inputs):
            raise ValueError("every input must be given; an empty input name is not allowed here")
        ufunc = type(self).ufunc
        result = np.asarray(given[0])
        owned = False  # once result is our own buffer, later steps can write into it
        for x in given[1:]:
            result, other = align_operands(result, x)
            if owned and np.broadcast_shapes(result.shape, other.shape) == result.shape:
                ufunc(result, other, out=result)
            else:
                result = ufunc(result, other)
                owned = True
        return result


class Max(_Variadic):
    op_type = "Max"
    ufunc = np.maximum


class Min(_Variadic):
    op_type = "Min"
    ufunc = np.minimum


class Sum(_Variadic):
    op_type = "Sum"
    ufunc = np.add


class Mean(Sum):
    """The inputs' sum divided by their count, in the inputs' (floating-point) type."""

    op_type = "Mean"

    def run(self, *inputs: Array | None) -> Array:
        for x in inputs:
            if x is not None and np.asarray(x).dtype.kind != "f":
                raise TypeError(f"Mean needs floating-point inputs, got {np.asarray(x).dtype}")
        total = np.asarray(super().run(*inputs))  # a 0-d sum comes back as a numpy scalar
        count = total.dtype.type(len(inputs))
        if len(inputs) > 1:  # the sum is a buffer of our own: divide in place
            return np.divide(total, count, out=total)
        return np.divide(total, count)
