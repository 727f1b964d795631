"""Give the Sigmoids of a dynamically quantized graph onnxruntime's values (engine.ops.mlas).

onnxruntime's quantizer writes graphs (DynamicQuantizeLinear before each
integer Conv or MatMul) whose every code is rounded from a float computed by
onnxruntime's own kernels; an exact sigmoid one float32 step away flips
codes, and the model's outputs drift by whole quantization steps. In such a
graph the float32 Sigmoids are marked to compute as onnxruntime does. The
onnxruntime backend skips this pass: its kernels are those values already.
"""

from __future__ import annotations

from engine.ops.mlas import MLAS
from engine.passes.base import PassContext

# Ops that round floats to codes computed from the data itself: their results depend on the last bit.
DYNAMIC_QUANTIZERS = ("DynamicQuantizeLinear", "DynamicQuantizeLSTM")


def match_dynamic_quantization(ctx: PassContext) -> int:
    if not any(node.op_type in DYNAMIC_QUANTIZERS and not node.domain for node in ctx.nodes):
        return 0
    marked = 0
    for node in ctx.nodes:
        if node.op_type == "Sigmoid" and not node.domain and not node.attrs.get("approximation"):
            node.attrs["approximation"] = MLAS
            marked += 1
    return marked
