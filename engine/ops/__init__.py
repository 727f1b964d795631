"""The ops corral claims: one explicit list, one module per op, imported on first use.

``SUPPORTED_OPS`` maps each ONNX op type to the module under ``engine.ops``
that defines a class of the same name. This list is what the conformance
suite runs and what ``corral model inspect`` checks models against.
"""

from __future__ import annotations

import importlib
from functools import cache

from engine.exceptions import UnsupportedOpError
from engine.graph import Node
from engine.ops.base import Op

SUPPORTED_OPS: dict[str, str] = {
    # activations
    "Relu": "activations",
    "LeakyRelu": "activations",
    "PRelu": "activations",
    "Sigmoid": "activations",
    "Tanh": "activations",
    "HardSigmoid": "activations",
    "HardSwish": "activations",
    "Elu": "activations",
    "Clip": "clip",
    "Softmax": "softmax",
    # elementwise arithmetic (numpy broadcasting)
    "Add": "binary",
    "Sub": "binary",
    "Mul": "binary",
    "Div": "binary",
    "Pow": "binary",
    "Max": "variadic",
    "Min": "variadic",
    "Sum": "variadic",
    "Sqrt": "unary",
    "Neg": "unary",
    "Exp": "unary",
    "Log": "unary",
    "Abs": "unary",
    "Reciprocal": "unary",
    "Floor": "unary",
    "Ceil": "unary",
    # reductions
    "ReduceMean": "reduce",
    "ReduceSum": "reduce",
    "ReduceMax": "reduce",
    # linear algebra
    "Gemm": "gemm",
    "MatMul": "matmul",
    # convolution, normalization, pooling
    "Conv": "conv",
    "ConvTranspose": "conv_transpose",
    "BatchNormalization": "batch_normalization",
    "InstanceNormalization": "instance_normalization",
    "MaxPool": "pool",
    "AveragePool": "pool",
    "GlobalAveragePool": "global_pool",
    "GlobalMaxPool": "global_pool",
    # layout and shape
    "Flatten": "flatten",
    "Reshape": "reshape",
    "Transpose": "transpose",
    "Concat": "concat",
    "Split": "split",
    "Slice": "slice",
    "Squeeze": "squeeze",
    "Unsqueeze": "unsqueeze",
    "Expand": "expand",
    "Pad": "pad",
    "Resize": "resize",
    "Upsample": "upsample",
    "Identity": "identity",
    "Dropout": "dropout",
    # constants and shape arithmetic
    "Constant": "constant",
    "ConstantOfShape": "constant_of_shape",
    "Shape": "shape",
    "Gather": "gather",
    "Cast": "cast",
    "Range": "range",
    # quantization
    "QuantizeLinear": "quantize_linear",
    "DequantizeLinear": "quantize_linear",
}


# Ops the compiler creates when it fuses a pattern of supported ops. They are
# not ONNX ops, so they are not in SUPPORTED_OPS: a model file may not use them.
INTERNAL_OPS: dict[str, str] = {
    "FusedMeanVarianceNorm": "fused_norm",
}


def is_supported(op_type: str) -> bool:
    return op_type in SUPPORTED_OPS


@cache
def op_class(op_type: str) -> type[Op]:
    """The implementation class for ``op_type``; raises for ops not in the list."""
    module = SUPPORTED_OPS.get(op_type) or INTERNAL_OPS.get(op_type)
    if module is None:
        raise UnsupportedOpError({op_type: []})
    cls = getattr(importlib.import_module(f"engine.ops.{module}"), op_type)
    assert cls.op_type == op_type, f"engine.ops.{module}.{op_type} declares op_type {cls.op_type!r}"
    return cls


def make_op(node: Node) -> Op:
    return op_class(node.op_type)(node)
