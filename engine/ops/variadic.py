"""Elementwise ops over one or more broadcast inputs: Max, Min, Sum."""

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
