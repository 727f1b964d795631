"""QLinearMatMul: a matrix product of quantized tensors, requantized to the output's scale and zero point.

    y = saturate(round_half_to_even(acc * (a_scale * b_scale / y_scale)) + y_zero_point)

where ``acc = (a - a_zero_point) @ (b - b_zero_point)`` is accumulated as
int32 (:func:`engine.ops.matmul_integer.integer_matmul`). The requantization
runs in float32 as onnxruntime's does: the multiplier ``a_scale * b_scale``
then ``/ y_scale``, the int32 sum converted to float32, one product, then
rounding and saturation to the output type (NaN saturates low).
"""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op
from engine.ops.matmul_integer import (
    CODE_DTYPES,
    Centered,
    codes,
    col_param,
    integer_matmul,
    is_scalar,
    row_param,
    zero_point,
)


def float_param(value: Array, what: str) -> Array:
    value = np.asarray(value)
    if value.dtype.kind != "f":
        raise TypeError(f"{what} must be float, got {value.dtype}")
    return value


def multiplier(in_scale: Array, w_scale: Array, y_scale: Array) -> Array:
    """``in_scale * w_scale / y_scale`` in float32, in that order (the scales already laid out)."""
    return (in_scale.astype(np.float32) * w_scale.astype(np.float32)) / y_scale.astype(np.float32)


def out_dtype(y_zero_point: Array | None, default: np.dtype) -> np.dtype:
    """The output type: the output zero point's (uint8 or int8), else ``default``."""
    if y_zero_point is None:
        return default
    dtype = np.asarray(y_zero_point).dtype
    if dtype not in CODE_DTYPES:
        raise TypeError(f"y_zero_point must be uint8 or int8, got {dtype}")
    return dtype


def requantize(acc: Array, mult: Array, y_zero_point: Array | None, dtype: np.dtype) -> Array:
    """int32 sums ``acc`` to codes of ``dtype``: ``saturate(rint(float32(acc) * mult) + y_zero_point)``."""
    info = np.iinfo(dtype)
    v = acc.astype(np.float32)  # past 2**24 this rounds, as onnxruntime's conversion does
    v *= mult  # the multiplier broadcasts into acc's shape: per tensor, row, column or channel
    np.rint(v, out=v)  # halves to even
    if y_zero_point is not None:
        v += np.float32(np.asarray(y_zero_point).reshape(()))
    np.fmax(v, np.float32(info.min), out=v)  # fmax: NaN saturates low
    np.fmin(v, np.float32(info.max), out=v)
    return v.astype(dtype)


class QLinearMatMul(Op):
    """ONNX QLinearMatMul: a, b uint8 or int8 (numpy ``matmul`` shapes) -> y of ``y_zero_point``'s type.

    Inputs ``a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
    y_zero_point``. A's scale and zero point are per tensor or per row
    (``[M]`` or ``[..., M, 1]``), B's per tensor or per column (``[N]`` or
    ``[..., 1, N]``), the output's per tensor. Scales are float32 or (opset
    21) float16; the float8 types of opset 21 are not stored by corral.
    """

    op_type = "QLinearMatMul"
    min_inputs = 8
    max_inputs = 8

    def setup(self, node: Node) -> None:
        self.b_cache = Centered()

    def run(self, a: Array, a_scale: Array, a_zero_point: Array | None, b: Array, b_scale: Array,
            b_zero_point: Array | None, y_scale: Array, y_zero_point: Array | None) -> Array:
        a, b = codes(a, "a"), codes(b, "b")
        # 1-D operands as matmul promotes them ([K] -> [1, K] and [K, 1]), so scales lay out as for 2-D ones
        dropped = ([-2] if a.ndim == 1 else []) + ([-1] if b.ndim == 1 else [])
        a = a.reshape(1, -1) if a.ndim == 1 else a
        b = b.reshape(-1, 1) if b.ndim == 1 else b
        a_zp = zero_point(a_zero_point, a, "a_zero_point")
        b_zp = zero_point(b_zero_point, b, "b_zero_point")
        a_zp = None if a_zp is None else row_param(a_zp, a.shape, "a_zero_point")
        b_zp = None if b_zp is None else col_param(b_zp, b.shape, "b_zero_point")
        y_scale = float_param(y_scale, "y_scale")
        if not is_scalar(y_scale) or (y_zero_point is not None and not is_scalar(np.asarray(y_zero_point))):
            raise ValueError("y_scale and y_zero_point must be scalars")
        mult = multiplier(row_param(float_param(a_scale, "a_scale"), a.shape, "a_scale"),
                          col_param(float_param(b_scale, "b_scale"), b.shape, "b_scale"), y_scale.reshape(()))
        acc = integer_matmul(a, a_zp, b, b_zp, self.b_cache)  # int32 [..., M, N]
        y = requantize(acc, mult, y_zero_point, out_dtype(y_zero_point, a.dtype))
        return y.squeeze(axis=tuple(dropped)) if dropped else y
