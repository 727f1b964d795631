"""LayerNormalization on tensors (mirrors engine.ops.layer_normalization).

float32: one ``native_layer_norm`` call, Scale and B fused in when they
broadcast to the normalized shape. float16 (CUDA) and float64: stage one in
float32 — for half, torch's kernel already computes in float32 and rounds
``Normalized`` once to half, which is ONNX's cast back — then Scale and B in
X's own type, as ONNX's function body orders it. ``Mean`` and ``InvStdDev``
are torch's own statistics (float32).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.backends.torch_ops import Fallback, TorchKernel, floats
from engine.ops.layer_normalization import LayerNormalization as LayerNormalizationOp
from engine.ops.layer_normalization import broadcasts_to


def affine_param(p: torch.Tensor | None, normalized: tuple[int, ...]) -> torch.Tensor | None:
    """``p`` (Scale or B) as a tensor of the normalized shape, or None when it varies along earlier axes."""
    if p is None:
        return None
    while p.ndim > len(normalized) and p.shape[0] == 1:
        p = p.squeeze(0)
    if not broadcasts_to(tuple(p.shape), normalized):
        return None
    return p.expand(normalized)


class LayerNormalization(TorchKernel[LayerNormalizationOp]):
    def run(self, x: Any, scale: Any, bias: Any = None) -> torch.Tensor | tuple[torch.Tensor, ...]:
        floats(x, scale, bias)
        axis, stats_shape = self.op.stats_shape(tuple(x.shape))
        normalized = tuple(int(d) for d in x.shape[axis:])
        if 0 in normalized:
            raise Fallback  # empty rows: the numpy op's nan statistics
        scale = scale.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
        if not all(p is None or broadcasts_to(tuple(p.shape), tuple(x.shape)) for p in (scale, bias)):
            raise Fallback  # the numpy op reports the shape error
        eps = self.op.epsilon
        weight, shift = affine_param(scale, normalized), affine_param(bias, normalized)
        if x.dtype == torch.float32 and weight is not None and (bias is None or shift is not None):
            y, mean, inv_std = torch.native_layer_norm(x, normalized, weight, shift, eps)
        else:
            stage_one = x if x.dtype in (torch.float32, torch.float16) else x.float()
            y, mean, inv_std = torch.native_layer_norm(stage_one, normalized, None, None, eps)
            y = y.to(x.dtype) * scale
            if bias is not None:
                y = y + bias
        if self.op.outputs == 1:
            return y
        stats = (mean.float().reshape(stats_shape), inv_std.float().reshape(stats_shape))
        return (y, *stats)[:self.op.outputs]
