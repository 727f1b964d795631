"""The ops corral claims: one explicit list, one module per op under ``engine.ops``.

``SUPPORTED_OPS`` maps each ONNX op type to the module under ``engine.ops``
that defines a class of the same name. This list is what the conformance
suite runs and what ``corral model inspect`` checks models against.

It imports nothing from corral, so :mod:`engine.graph` can check a model's
ops without importing their implementations (which import the graph).
"""

from __future__ import annotations

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
    "Gelu": "activations",
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
    "Round": "unary",
    "Erf": "unary",
    "Mean": "variadic",
    # comparison and logic (bool tensors)
    "Equal": "compare",
    "Less": "compare",
    "Greater": "compare",
    "Not": "logical",
    "And": "logical",
    "Or": "logical",
    "Where": "where",
    # reductions
    "ReduceMean": "reduce",
    "ReduceSum": "reduce",
    "ReduceMax": "reduce",
    "ReduceMin": "reduce",
    "ReduceProd": "reduce",
    "ReduceL2": "reduce",
    # indices and selection
    "ArgMax": "argmax",
    "ArgMin": "argmax",
    "TopK": "topk",
    # linear algebra
    "Gemm": "gemm",
    "MatMul": "matmul",
    "Einsum": "einsum",
    # convolution, normalization, pooling
    "Conv": "conv",
    "ConvTranspose": "conv_transpose",
    "BatchNormalization": "batch_normalization",
    "InstanceNormalization": "instance_normalization",
    "LayerNormalization": "layer_normalization",
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
    "Tile": "tile",
    "DepthToSpace": "depth_to_space",
    "SpaceToDepth": "depth_to_space",
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
    "DynamicQuantizeLinear": "dynamic_quantize_linear",
    "QLinearConv": "qlinear_conv",
    "QLinearMatMul": "qlinear_matmul",
    "ConvInteger": "conv_integer",
    "MatMulInteger": "matmul_integer",
    # recurrent
    "LSTM": "lstm",
    "GRU": "gru",
    "RNN": "rnn",
    # onnxruntime's contrib domain (com.microsoft), imported under these names
    "DynamicQuantizeLSTM": "dynamic_quantize_lstm",
}


# Ops the compiler creates when it fuses a pattern of supported ops. They are
# not ONNX ops, so they are not in SUPPORTED_OPS: a model file may not use them.
INTERNAL_OPS: dict[str, str] = {
    "FusedMeanVarianceNorm": "fused_norm",
}


# onnxruntime's contrib domain, and the ops of it corral implements: they import into the default domain under
# the same names, and export back to this one.
MS_DOMAIN = "com.microsoft"
MS_OPS: tuple[str, ...] = ("DynamicQuantizeLSTM",)


def is_supported(op_type: str) -> bool:
    return op_type in SUPPORTED_OPS
