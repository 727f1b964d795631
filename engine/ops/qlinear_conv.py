"""QLinearConv: a convolution of quantized tensors, requantized to the output's scale and zero point.

    y = saturate(round_half_to_even((acc + B) * (x_scale * w_scale / y_scale)) + y_zero_point)

where ``acc = conv(x - x_zero_point, w - w_zero_point)`` is accumulated as
int32 (:class:`engine.ops.conv_integer.IntegerConv`, all Conv attributes),
the int32 bias ``B`` (quantized with scale ``x_scale * w_scale``, zero point
0) is added in int32, and the requantization runs in float32 as
onnxruntime's does (:func:`engine.ops.qlinear_matmul.requantize`).
"""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op
from engine.ops.conv_integer import IntegerConv, channel_param
from engine.ops.matmul_integer import codes, is_scalar, zero_point
from engine.ops.qlinear_matmul import float_param, multiplier, out_dtype, requantize


class QLinearConv(Op):
    """ONNX QLinearConv: x, w uint8 or int8 -> y of ``y_zero_point``'s type, ``[N, M, *So]``.

    Inputs ``x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
    y_zero_point`` and an optional int32 bias ``B [M]``. x's and y's scale
    and zero point are per tensor; w's per tensor or per output channel
    (``[M]``). Scales are float32.
    """

    op_type = "QLinearConv"
    min_inputs = 8
    max_inputs = 9

    def setup(self, node: Node) -> None:
        self.conv = IntegerConv(node)

    def run(self, x: Array, x_scale: Array, x_zero_point: Array | None, w: Array, w_scale: Array,
            w_zero_point: Array | None, y_scale: Array, y_zero_point: Array | None, b: Array | None = None) -> Array:
        x, w = codes(x, "x"), codes(w, "w")
        x_zp = zero_point(x_zero_point, x, "x_zero_point")
        w_zp = zero_point(w_zero_point, w, "w_zero_point")
        m_out, rank = w.shape[0], w.ndim
        if w_zp is not None:
            w_zp = channel_param(w_zp, m_out, rank, "w_zero_point")
        scales = [float_param(s, name) for s, name in ((x_scale, "x_scale"), (y_scale, "y_scale"))]
        if not all(is_scalar(s) for s in scales) or (y_zero_point is not None
                                                      and not is_scalar(np.asarray(y_zero_point))):
            raise ValueError("x_scale, y_scale and y_zero_point must be scalars")
        # [M, 1, ...] with one axis fewer than w, to broadcast against y [N, M, *So]
        w_mult = channel_param(float_param(w_scale, "w_scale"), m_out, rank - 1, "w_scale")
        mult = multiplier(scales[0].reshape(()), w_mult, scales[1].reshape(()))
        acc = self.conv(x, x_zp, w, w_zp)  # int32 [N, M, *So]
        if b is not None:
            b = np.asarray(b)
            if b.dtype != np.int32 or b.size != m_out:
                raise ValueError(f"B must be int32 with one value per output channel ({m_out}), "
                                 f"got {b.dtype} {list(b.shape)}")
            acc += b.reshape((m_out,) + (1,) * (rank - 2))  # int32, wrapping as the accumulation does
        return requantize(acc, mult, y_zero_point, out_dtype(y_zero_point, x.dtype))
