"""MatMulInteger: ``(A - a_zero_point) @ (B - b_zero_point)`` on 8-bit codes, accumulated as int32.

Also what the other integer ops share: the checks on 8-bit inputs and their
zero points, the cache of a centered weight, and the exact float
accumulation. BLAS has no integer GEMM, so the products are summed in
floats, where they are exact: a centered code is at most 255 in magnitude,
so every partial sum is an integer bounded by ``reach(x) * weight_sum(w)``,
and float32 holds such integers exactly up to 2**24, float64 up to 2**53
(which no weight that fits in memory reaches). The exact sum then becomes
int32, wrapping past its range as int32 accumulation does (the spec lets
only the accumulation overflow, and only in 32 bits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op

CODE_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8))
EXACT_FLOAT32 = 1 << 24
INT32_MAX = (1 << 31) - 1


def codes(value: Array, what: str) -> Array:
    """``value`` as an array of 8-bit codes (uint8 or int8); refuses other types."""
    value = np.asarray(value)
    if value.dtype not in CODE_DTYPES:
        raise TypeError(f"{what} must be uint8 or int8, got {value.dtype}")
    return value


def zero_point(zp: Array | None, of: Array, what: str) -> Array | None:
    """A zero point, checked to have its tensor's type (None: 0)."""
    if zp is None:
        return None
    zp = np.asarray(zp)
    if zp.dtype != of.dtype:
        raise TypeError(f"{what} is {zp.dtype} but its tensor is {of.dtype}: they must have the same type")
    return zp


def is_scalar(param: Array) -> bool:
    """A per-tensor parameter: a scalar or a 1-element vector."""
    return param.ndim == 0 or (param.ndim == 1 and param.size == 1)


def reach(dtype: np.dtype, zp: Array | None) -> int:
    """The largest ``|q - zp|`` over every code ``q`` of ``dtype``: what bounds a centered code, read off the
    zero point alone (no pass over the data)."""
    info = np.iinfo(dtype)
    lo, hi = (0, 0) if zp is None or zp.size == 0 else (int(zp.min()), int(zp.max()))
    return max(hi - int(info.min), int(info.max) - lo)


def accumulator(bound: int) -> np.dtype:
    """The float type that sums integer products exactly when every partial sum is at most ``bound``."""
    return np.dtype(np.float32) if bound <= EXACT_FLOAT32 else np.dtype(np.float64)


def wrap_int32(acc: Array, bound: int) -> Array:
    """Exact integer sums (in floats) as int32, wrapping modulo 2**32 past its range."""
    if bound <= INT32_MAX:
        return acc.astype(np.int32)
    return acc.astype(np.int64).astype(np.int32)


@dataclass
class _Entry:
    source: Array
    zp: Array | None
    centered: Array  # float64, the source's shape
    weight_sum: int  # max over output units of sum |centered| along the reduced axes
    by_dtype: dict[np.dtype, Array]


class Centered:
    """``q - zp`` of a constant operand (a weight), made once while the same array comes in again.

    Also keeps ``weight_sum``: the largest sum of ``|q - zp|`` that one output
    element reads (over ``axes``), which with :func:`reach` of the other
    operand bounds every partial sum.
    """

    def __init__(self) -> None:
        self._entry: _Entry | None = None

    def get(self, q: Array, zp: Array | None, axes: Sequence[int]) -> _Entry:
        entry = self._entry
        if entry is None or entry.source is not q or not _same(entry.zp, zp):
            centered = q.astype(np.float64)
            if zp is not None:
                centered -= zp
            sums = np.abs(centered).sum(axis=tuple(axes)) if q.size else np.zeros(1)
            weight_sum = int(sums.max()) if sums.size else 0
            entry = self._entry = _Entry(q, None if zp is None else np.array(zp), centered, weight_sum, {})
        return entry

    def as_dtype(self, entry: _Entry, dtype: np.dtype) -> Array:
        if dtype not in entry.by_dtype:
            entry.by_dtype[dtype] = entry.centered.astype(dtype)
        return entry.by_dtype[dtype]


def _same(a: Array | None, b: Array | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


def row_param(param: Array, a_shape: tuple[int, ...], what: str) -> Array:
    """A scale or zero point of A laid out to broadcast against A: per tensor, or per row (``[M]`` or
    ``[..., M, 1]``)."""
    param = np.asarray(param)
    if is_scalar(param):
        return param.reshape(())
    if len(a_shape) >= 2:
        if param.ndim == 1 and param.size == a_shape[-2]:
            return param.reshape(-1, 1)  # [M] -> [M, 1]
        if param.ndim >= 2 and param.shape[-1] == 1 and _fits(param.shape, a_shape):
            return param
    raise ValueError(f"{what} of shape {list(param.shape)} is neither a scalar nor per row of A {list(a_shape)}")


def col_param(param: Array, b_shape: tuple[int, ...], what: str) -> Array:
    """A scale or zero point of B laid out to broadcast against B: per tensor, or per column (``[N]`` or
    ``[..., 1, N]``)."""
    param = np.asarray(param)
    if is_scalar(param):
        return param.reshape(())
    if len(b_shape) >= 2:
        if param.ndim == 1 and param.size == b_shape[-1]:
            return param  # [N] broadcasts along the last axis
        if param.ndim >= 2 and param.shape[-2] == 1 and _fits(param.shape, b_shape):
            return param
    raise ValueError(f"{what} of shape {list(param.shape)} is neither a scalar nor per column of B {list(b_shape)}")


def _fits(param: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """``param`` broadcasts against ``shape`` without enlarging it."""
    try:
        return np.broadcast_shapes(param, shape) == tuple(shape)
    except ValueError:
        return False


def integer_matmul(a: Array, a_zp: Array | None, b: Array, b_zp: Array | None, cache: Centered) -> Array:
    """``(a - a_zp) @ (b - b_zp)`` as int32 (numpy ``matmul`` shapes); the zero points already laid out."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("MatMul operands must have at least one dimension")
    entry = cache.get(b, b_zp, (-2,) if b.ndim >= 2 else (0,))
    bound = reach(a.dtype, a_zp) * entry.weight_sum
    dtype = accumulator(bound)
    ac = a.astype(dtype)
    if a_zp is not None:
        ac -= a_zp.astype(dtype)
    acc = np.matmul(ac, cache.as_dtype(entry, dtype))
    return wrap_int32(np.asarray(acc), bound)


class MatMulInteger(Op):
    """ONNX MatMulInteger: A, B uint8 or int8 (numpy ``matmul`` shapes) -> int32.

    ``a_zero_point`` (A's type) is a scalar or per row of A (``[M]`` or
    ``[..., M, 1]``); ``b_zero_point`` a scalar or per column of B (``[N]``
    or ``[..., 1, N]``). Both default to 0.
    """

    op_type = "MatMulInteger"
    min_inputs = 2
    max_inputs = 4

    def setup(self, node: Node) -> None:
        self.b_cache = Centered()

    def run(self, a: Array, b: Array, a_zero_point: Array | None = None,
            b_zero_point: Array | None = None) -> Array:
        a, b = codes(a, "A"), codes(b, "B")
        a_zp = zero_point(a_zero_point, a, "a_zero_point")
        b_zp = zero_point(b_zero_point, b, "b_zero_point")
        a_zp = None if a_zp is None else row_param(a_zp, a.shape, "a_zero_point")
        b_zp = None if b_zp is None else col_param(b_zp, b.shape, "b_zero_point")
        return integer_matmul(a, a_zp, b, b_zp, self.b_cache)
