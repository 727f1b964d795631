"""Normalizations and pools on tensors (mirrors engine.ops.batch_normalization, instance_normalization,
fused_norm, pool, global_pool). Window geometry comes from the numpy op's own code."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import Fallback, TorchKernel, floats
from engine.backends.torch_ops.linear import activate, torch_pads

MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class BatchNormalization(TorchKernel):
    def run(self, x: Any, scale: Any, bias: Any, mean: Any, var: Any) -> torch.Tensor:
        floats(x, scale, bias, mean, var)
        if self.op.training or x.ndim < 2:
            raise Fallback
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        a = scale.to(x.dtype) / torch.sqrt(var.to(x.dtype) + self.op.epsilon)  # [C]
        shift = bias.to(x.dtype) - mean.to(x.dtype) * a
        return torch.addcmul(shift.reshape(shape), x, a.reshape(shape))


class InstanceNormalization(TorchKernel):
    def run(self, x: Any, scale: Any, bias: Any) -> torch.Tensor:
        floats(x, scale, bias)
        if x.ndim < 3 or scale.numel() != x.shape[1] or bias.numel() != x.shape[1]:
            raise Fallback
        return F.instance_norm(x, weight=scale.to(x.dtype).reshape(-1), bias=bias.to(x.dtype).reshape(-1),
                               eps=self.op.epsilon)


class FusedMeanVarianceNorm(TorchKernel):
    """``activation((x - mean) / sqrt(var + eps) * scale + bias)`` over ``axes`` (keepdims)."""

    def run(self, x: Any, scale: Any = None, bias: Any = None) -> torch.Tensor:
        floats(x, scale, bias)
        rank = x.ndim
        if not rank or any(not -rank <= a < rank for a in self.op.axes) or x.numel() == 0:
            raise Fallback
        axes = sorted({a % rank for a in self.op.axes})
        var, mean = torch.var_mean(x, dim=axes, correction=0, keepdim=True)  # [N, C, 1, 1] for NCHW
        factor = torch.rsqrt(var + self.op.epsilon)
        if scale is not None:
            factor = factor * scale.to(x.dtype)
        d = x - mean
        y = torch.addcmul(bias.to(x.dtype), d, factor) if bias is not None else d.mul_(factor)
        return activate(y, self.op.activation or None)


def _crop(y: torch.Tensor, out_sp: list[int]) -> torch.Tensor:
    for a, n in enumerate(out_sp):
        if y.shape[2 + a] != n:
            y = y.narrow(2 + a, 0, n)
    return y


class MaxPool(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        op = self.op
        rank = x.ndim - 2
        if rank not in MAX_POOL or op.want_indices:
            raise Fallback
        window, pads, out_sp = op._window(x)
        if any(pads):
            x = F.pad(x, torch_pads(pads), value=-math.inf)  # padding never wins
        y = MAX_POOL[rank](x, window.kernel, window.strides, 0, window.dilations)
        return _crop(y, out_sp)


class AveragePool(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        op = self.op
        rank = x.ndim - 2
        if rank not in AVG_POOL:
            raise Fallback
        window, pads, out_sp = op._window(x)
        if any(d != 1 for d in window.dilations):
            raise Fallback
        spatial = tuple(int(s) for s in x.shape[2:])
        if any(b or e for b, e in pads):
            x = F.pad(x, torch_pads(pads))
        # the window sums, then divided by each window's own count (count_include_pad, ceil overhang)
        sums = _crop(AVG_POOL[rank](x, window.kernel, window.strides, 0), out_sp) * math.prod(window.kernel)
        counts = op._counts(spatial, window, pads, out_sp)  # [*out_sp], host
        return sums / torch.as_tensor(counts.astype(np.float64), device=x.device).to(x.dtype)


class GlobalAveragePool(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        if x.ndim < 3:
            raise Fallback
        return torch.mean(x, dim=list(range(2, x.ndim)), keepdim=True)


class GlobalMaxPool(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        if x.ndim < 3 or x.numel() == 0:
            raise Fallback
        return torch.amax(x, dim=list(range(2, x.ndim)), keepdim=True)
