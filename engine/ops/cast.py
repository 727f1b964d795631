"""Cast to the ONNX element type ``to`` (a TensorProto code), for the numeric types corral stores."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op

# ONNX TensorProto.DataType codes for the dtypes corral can hold.
ONNX_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int16),
    6: np.dtype(np.int32),
    7: np.dtype(np.int64),
    9: np.dtype(np.bool_),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
    12: np.dtype(np.uint32),
    13: np.dtype(np.uint64),
}


class Cast(Op):
    op_type = "Cast"

    def setup(self, node: Node) -> None:
        code = node.int_attr("to")
        if code is None:
            raise ValueError("the 'to' attribute is required")
        if code not in ONNX_DTYPES:
            raise ValueError(f"cannot cast to ONNX type code {code}: corral supports "
                             "float16/32/64, int8/16/32/64, uint8/16/32/64 and bool")
        self.dtype = ONNX_DTYPES[code]

    def run(self, x: Array) -> Array:
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"cannot cast from {x.dtype}")
        if x.dtype == self.dtype:
            return x
        with np.errstate(invalid="ignore", over="ignore"):
            return x.astype(self.dtype)
