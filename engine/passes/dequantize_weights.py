"""Dequantize weights once: every DequantizeLinear whose inputs are all constants becomes a float weight.

A QDQ model (as ``onnxruntime.quantization.quantize_static`` writes it)
stores int8 weights, each followed by a DequantizeLinear node, and corral's
package keeps that form (DequantizeLinear is not foldable). Backends that
compute in float run this pass first, so the weight is expanded with the
op's own kernel at compile time instead of on every run, and the passes
after it (constant folding, batch-norm folding) see a plain float weight. A
backend that runs QDQ graphs itself (onnxruntime fuses them into QLinear
ops) lists this pass in its ``SKIP_PASSES``.
"""

from __future__ import annotations

import numpy as np

from engine.ops import make_op
from engine.passes.base import PassContext
from engine.tensors import to_float_array


def dequantize_weights(ctx: PassContext) -> int:
    done = []
    for node in ctx.nodes:
        if node.op_type != "DequantizeLinear" or node.domain:
            continue
        args = [ctx.constant(name) for name in node.inputs]
        if any(name and value is None for name, value in zip(node.inputs, args)):
            continue  # an activation's QuantizeLinear -> DequantizeLinear pair: it runs
        (result,) = make_op(node)(args)
        if node.outputs[0]:
            # float16 scales give a float16 result: kept as float32, as every float16 weight is here
            ctx.constants[node.outputs[0]] = to_float_array(np.asarray(result))
        done.append(node)
    ctx.remove(done)
    return len(done)
