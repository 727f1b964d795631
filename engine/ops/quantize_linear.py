"""QuantizeLinear and DequantizeLinear: linear (affine) integer quantization, as QDQ graphs use it.

    QuantizeLinear:   y = saturate(round_half_to_even(x / y_scale) + y_zero_point)
    DequantizeLinear: y = (x - x_zero_point) * x_scale

The scale and zero point apply per tensor (a scalar or a 1-element vector),
per axis (a vector as long as ``axis``, default 1, of ``x``; opset 13) or
per block (opset 21: the same rank as ``x``, ``ceil(d / block_size)`` along
``axis``, each entry covering ``block_size`` consecutive elements there).
The zero point is optional (0); it has the quantized type, and its shape is
the scale's.

Types are those corral stores: QuantizeLinear writes uint8 (the default),
int8, uint16 or int16, picked by the zero point or the opset-21
``output_dtype``; DequantizeLinear reads those and int32 (a quantized bias)
and returns the scale's float type, or the opset-23 ``output_dtype``. The
float8/int4/int2/float4 forms are not stored by corral, so not supported.

DequantizeLinear is not foldable: a QDQ package keeps its int8 weights and
their DequantizeLinear nodes (4x smaller, and onnxruntime fuses them into
QLinear ops); the compile pass :mod:`engine.passes.dequantize_weights`
dequantizes them once for the backends that compute in float.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, normalize_axis

# ONNX TensorProto codes of the quantized types corral stores, and their ranges.
QUANT_DTYPES: dict[int, np.dtype] = {
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int16),
}
# What DequantizeLinear reads: the quantized types plus int32 (biases quantized with scale_x * scale_w).
DEQUANT_INPUTS = (*QUANT_DTYPES.values(), np.dtype(np.int32))
# ONNX codes of the float types a result (DequantizeLinear) or the division (QuantizeLinear) may use.
FLOAT_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
}


def _dtype_attr(node: Node, name: str, allowed: dict[int, np.dtype]) -> np.dtype | None:
    """The dtype an ONNX type-code attribute names (0 or absent: None); refuses codes outside ``allowed``."""
    code = node.int_attr(name, 0)
    if not code:
        return None
    if code not in allowed:
        names = "/".join(str(d) for d in allowed.values())
        raise ValueError(f"{name}={code} is not a type corral supports here ({names})")
    return allowed[code]


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """float64 stays float64; float16 and float32 compute in float32 (exact for any stored integer code)."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


class _Linear(Op):
    """What both ops share: three inputs (the last optional), ``axis`` and ``block_size``."""

    min_inputs = 2
    max_inputs = 3

    def setup(self, node: Node) -> None:
        self.axis = node.int_attr("axis", 1)
        self.block_size = node.int_attr("block_size", 0)
        if self.block_size < 0:
            raise ValueError(f"block_size must be >= 0, got {self.block_size}")

    def layout(self, param: Array, shape: tuple[int, ...], what: str) -> Array:
        """``param`` (a scale or zero point) reshaped or repeated to broadcast against an ``x`` of ``shape``."""
        param = np.asarray(param)
        if param.ndim == 0 or (param.ndim == 1 and param.size == 1 and not self.block_size):
            return param.reshape(())  # per tensor
        axis = normalize_axis(self.axis, len(shape))
        dim = shape[axis]
        if not self.block_size:
            if param.ndim != 1 or param.size != dim:
                raise ValueError(f"{what} of shape {list(param.shape)} is neither a scalar nor one value per index "
                                 f"of axis {self.axis} (size {dim}) of x {list(shape)}; blocked quantization "
                                 "needs the block_size attribute")
            bshape = [1] * len(shape)
            bshape[axis] = dim
            return param.reshape(bshape)  # per axis, e.g. [1, C, 1, 1] for axis 1 of [N, C, H, W]
        blocks = -(-dim // self.block_size)
        want = (*shape[:axis], blocks, *shape[axis + 1:])
        if param.shape != want:
            raise ValueError(f"{what} of shape {list(param.shape)} does not fit blocks of {self.block_size} along "
                             f"axis {self.axis} of x {list(shape)}; expected {list(want)}")
        # [.., blocks, ..] -> [.., blocks * block_size, ..] -> [.., d, ..] (the last block may be short)
        full = np.repeat(param, self.block_size, axis=axis)
        return full[(slice(None),) * axis + (slice(0, dim),)]

    def zero_point(self, zero_point: Array | None, scale: Array, what: str) -> Array | None:
        if zero_point is None:
            return None
        zero_point = np.asarray(zero_point)
        if zero_point.shape != scale.shape and not (zero_point.size == scale.size == 1):
            raise ValueError(f"{what} shape {list(zero_point.shape)} differs from the scale's {list(scale.shape)}")
        return zero_point


class QuantizeLinear(_Linear):
    op_type = "QuantizeLinear"

    def setup(self, node: Node) -> None:
        super().setup(node)
        # ``saturate`` (opset 19) only concerns float8 outputs, which corral does not store: integer results
        # always saturate.
        self.output_dtype = _dtype_attr(node, "output_dtype", QUANT_DTYPES)
        self.precision = _dtype_attr(node, "precision", FLOAT_DTYPES)

    def run(self, x: Array, y_scale: Array, y_zero_point: Array | None = None) -> Array:
        x = np.asarray(x)
        y_scale = np.asarray(y_scale)
        if x.dtype.kind != "f" and x.dtype != np.int32:
            raise TypeError(f"x must be float or int32, got {x.dtype}")
        if y_scale.dtype.kind != "f":
            raise TypeError(f"y_scale must be float, got {y_scale.dtype}")
        zp = self.zero_point(y_zero_point, y_scale, "y_zero_point")
        out = self._out_dtype(zp)
        info = np.iinfo(out)

        # The division runs in ``precision`` (opset 23), else in the scale's type, as the spec states.
        div = self.precision or y_scale.dtype
        acc = _compute_dtype(div)  # where the zero point is added: exact for every stored code
        scale = self.layout(y_scale, x.shape, "y_scale").astype(div, copy=False)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = np.rint(x.astype(div, copy=False) / scale)  # same shape as x; halves round to even
        q = np.asarray(q, dtype=acc)  # an array even for a scalar x, so the steps below may work in place
        np.copyto(q, -np.inf, where=np.isnan(q))  # NaN saturates low, as onnxruntime and the ONNX reference do
        if zp is not None:
            q += self.layout(zp, x.shape, "y_zero_point").astype(acc)
        np.clip(q, info.min, info.max, out=q)  # saturate at both ends
        return q.astype(out)

    def _out_dtype(self, zero_point: Array | None) -> np.dtype:
        if zero_point is None:
            return self.output_dtype or np.dtype(np.uint8)
        if zero_point.dtype not in QUANT_DTYPES.values():
            raise TypeError(f"y_zero_point must be uint8, int8, uint16 or int16, got {zero_point.dtype}")
        if self.output_dtype is not None and self.output_dtype != zero_point.dtype:
            raise TypeError(f"output_dtype {self.output_dtype} differs from y_zero_point's {zero_point.dtype}")
        return zero_point.dtype


class DequantizeLinear(_Linear):
    op_type = "DequantizeLinear"
    # Never folded at import or by fold_constants: the quantized weight stays in the package, and the
    # dequantize_weights compile pass (which a backend running QDQ graphs itself skips) expands it.
    foldable: ClassVar[bool] = False

    def setup(self, node: Node) -> None:
        super().setup(node)
        self.output_dtype = _dtype_attr(node, "output_dtype", FLOAT_DTYPES)

    def run(self, x: Array, x_scale: Array, x_zero_point: Array | None = None) -> Array:
        x = np.asarray(x)
        x_scale = np.asarray(x_scale)
        if x.dtype not in DEQUANT_INPUTS:
            raise TypeError(f"x must be uint8, int8, uint16, int16 or int32, got {x.dtype}")
        if x_scale.dtype.kind != "f":
            raise TypeError(f"x_scale must be float, got {x_scale.dtype}")
        zp = self.zero_point(x_zero_point, x_scale, "x_zero_point")
        if zp is not None and zp.dtype != x.dtype:
            raise TypeError(f"x_zero_point is {zp.dtype}, x is {x.dtype}: they must have the same type")
        out = self.output_dtype or x_scale.dtype
        acc = _compute_dtype(out)
        scale = self.layout(x_scale, x.shape, "x_scale").astype(acc, copy=False)
        if zp is None:
            codes = x.astype(acc)
        elif x.dtype == np.int32:
            # integer subtraction first (an int32 code need not be exact in float32), then one conversion
            codes = (x.astype(np.int64) - self.layout(zp, x.shape, "x_zero_point").astype(np.int64)).astype(acc)
        else:
            codes = x.astype(acc) - self.layout(zp, x.shape, "x_zero_point").astype(acc)  # exact: |code| < 2**17
        y = codes * scale  # same shape as x, one rounding
        return np.asarray(y, dtype=out).reshape(x.shape)
