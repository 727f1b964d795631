"""DynamicQuantizeLinear: uint8 quantization with the scale and zero point computed from the data.

    x_min = min(0, min(x)), x_max = max(0, max(x))
    y_scale = (x_max - x_min) / 255                      (1 when x_max == x_min)
    y_zero_point = round_half_to_even(saturate(0 - x_min / y_scale))
    y = saturate(round_half_to_even(x / y_scale) + y_zero_point)

everything in float32, as the spec's function body and onnxruntime compute
it (the range includes 0, so 0 quantizes exactly; an all-zero or empty x
gets scale 1). Saturation is to [0, 255]; NaN saturates low.

Deterministic given x, so constant folding may evaluate it.
"""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array, Op

QMIN, QMAX = np.float32(0), np.float32(255)


class DynamicQuantizeLinear(Op):
    """x float ``[*]`` -> (y uint8 ``[*]``, y_scale float32 ``[]``, y_zero_point uint8 ``[]``)."""

    op_type = "DynamicQuantizeLinear"

    def run(self, x: Array) -> tuple[Array, Array, Array]:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"x must be float, got {x.dtype}")
        x = x.astype(np.float32, copy=False)  # the spec's type; float16 converts exactly
        hi = np.float32(max(np.float32(0), np.max(x))) if x.size else np.float32(0)
        lo = np.float32(min(np.float32(0), np.min(x))) if x.size else np.float32(0)
        scale = np.float32(1) if hi == lo else np.float32((hi - lo) / (QMAX - QMIN))
        zp = np.rint(np.clip(QMIN - lo / scale, QMIN, QMAX))  # float32, an integer in [0, 255]
        with np.errstate(invalid="ignore"):
            y = np.rint(x.reshape(-1) / scale)  # halves to even; 1-D so that the steps below work in place
        y += zp
        np.fmax(y, QMIN, out=y)  # fmax: NaN saturates low
        np.fmin(y, QMAX, out=y)
        return y.astype(np.uint8).reshape(x.shape), np.array(scale, np.float32), np.array(zp, np.uint8)
