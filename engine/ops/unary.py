"""One-input elementwise math: Sqrt, Neg, Exp, Log, Abs, Reciprocal, Floor, Ceil.

Results keep the input dtype; IEEE special values (sqrt(-1) = nan,
log(0) = -inf, 1/0 = inf) are returned without numpy warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from engine.ops.base import Array, Op


class _Unary(Op):
    ufunc: ClassVar[Callable[..., Array]]

    def run(self, x: Array) -> Array:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return type(self).ufunc(x)


class Sqrt(_Unary):
    op_type = "Sqrt"
    ufunc = np.sqrt


class Neg(_Unary):
    op_type = "Neg"
    ufunc = np.negative


class Exp(_Unary):
    op_type = "Exp"
    ufunc = np.exp


class Log(_Unary):
    op_type = "Log"
    ufunc = np.log


class Abs(_Unary):
    op_type = "Abs"
    ufunc = np.abs


class Reciprocal(_Unary):
    op_type = "Reciprocal"
    ufunc = np.reciprocal


class Floor(_Unary):
    op_type = "Floor"
    ufunc = np.floor


class Ceil(_Unary):
    op_type = "Ceil"
    ufunc = np.ceil
