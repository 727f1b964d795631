"""Fold an inference-mode BatchNormalization into the Conv that feeds it.

    BN(conv(x, W) + b) = conv(x, W * f) + (b - mean) * f + beta,  f = gamma / sqrt(var + eps)

with ``f`` per output channel. The Conv must feed only the BatchNormalization
(nothing else may see the unnormalized value) and all parameters must be
weights. The products are formed in float64 and stored as float32.
"""

from __future__ import annotations

import numpy as np

from engine.passes.base import PassContext


def fold_batchnorm(ctx: PassContext) -> int:
    users = ctx.consumers()
    producers = ctx.producers()
    doomed = []
    for bn in ctx.nodes:
        if bn.op_type != "BatchNormalization" or bn.domain:
            continue
        if len(bn.inputs) < 5 or any(bn.outputs[1:]):  # training mode: running stats are outputs too
            continue
        conv = producers.get(bn.inputs[0])
        if conv is None or conv.op_type != "Conv" or conv.domain or conv.attrs.get("activation") \
                or len(conv.inputs) < 2:
            continue
        if ctx.only_consumer(bn.inputs[0], users) is not bn:
            continue
        weight = ctx.constant(conv.inputs[1])
        params = [p for p in (ctx.constant(name) for name in bn.inputs[1:5]) if p is not None]
        if weight is None or len(params) != 4 or weight.dtype.kind != "f":
            continue
        out_channels = weight.shape[0]
        if any(p.size not in (1, out_channels) for p in params):
            continue
        gamma, beta, mean, var = (np.broadcast_to(np.asarray(p, np.float64).reshape(-1), (out_channels,))
                                  for p in params)
        has_bias = len(conv.inputs) > 2 and bool(conv.inputs[2])
        bias = ctx.constant(conv.inputs[2]) if has_bias else np.zeros(out_channels)
        if bias is None:
            continue
        factor = gamma / np.sqrt(var + bn.float_attr("epsilon", 1e-5))  # [C_out]
        new_weight = (weight.astype(np.float64) * factor.reshape(-1, *([1] * (weight.ndim - 1)))).astype(weight.dtype)
        new_bias = ((np.asarray(bias, np.float64).reshape(-1) - mean) * factor + beta).astype(weight.dtype)
        conv.inputs = [conv.inputs[0], ctx.add_constant(f"{conv.label}_w", new_weight),
                       ctx.add_constant(f"{conv.label}_b", new_bias)]
        conv.outputs = [bn.outputs[0]]
        doomed.append(bn)
    ctx.remove(doomed)
    return len(doomed)
