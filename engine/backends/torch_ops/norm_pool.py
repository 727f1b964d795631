"""Normalizations and pools on tensors (mirrors engine.ops.batch_normalization, instance_normalization,
fused_norm, pool, global_pool). Window geometry comes from the numpy op's own code."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import Fallback, KernelOptions, TorchKernel, floats, is_channels_last
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
        weight, shift = scale.to(x.dtype).reshape(-1), bias.to(x.dtype).reshape(-1)
        if is_channels_last(x):
            c = x.shape[1]
            return instance_norm_nhwc(x, weight.reshape(1, c, 1, 1), shift.reshape(1, c, 1, 1), self.op.epsilon,
                                      None, self.options)
        return F.instance_norm(x, weight=weight, bias=shift, eps=self.op.epsilon)


def instance_norm_nhwc(x: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None, eps: float,
                       activation: str | None, options: KernelOptions) -> torch.Tensor:
    """``activation((x - mean) / sqrt(var + eps) * scale + shift)`` per item and channel of a
    channels-last [N, C, H, W] tensor, keeping its layout; ``scale``/``shift`` broadcast to [N, C, 1, 1].

    ``F.instance_norm`` would return NCHW memory (and runs slower on NHWC),
    and batch norm's own NHWC statistics sum each channel in one running
    float32 total, which moved the style network's output by 1.3e-4. Here
    the mean is a cascaded sum, the variance is that of the centred values
    (exact to ~1e-7 relative), and the centred buffer is normalized in place.
    """
    n, c, h, w = (int(d) for d in x.shape)
    mean = x.mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
    d = options.empty(x.shape, x, torch.channels_last)
    torch.sub(x, mean, out=d)  # centred, [N, C, H, W] in NHWC memory
    if c <= 64:
        # per-channel sums of squares as the diagonal of a [C, C] product: one read of d, in BLAS
        rows = d.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: [N, H*W, C]
        sq = torch.bmm(rows.transpose(1, 2), rows).diagonal(dim1=1, dim2=2)  # [N, C]
        var = (sq / (h * w)).reshape(n, c, 1, 1)
    else:
        var = d.square().mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
    factor = torch.rsqrt(var + eps)
    if scale is not None:
        factor = factor * scale
    y = torch.addcmul(shift, d, factor, out=d) if shift is not None else d.mul_(factor)
    return activate(y, activation)


class FusedMeanVarianceNorm(TorchKernel):
    """``activation((x - mean) / sqrt(var + eps) * scale + bias)`` over ``axes`` (keepdims)."""

    def run(self, x: Any, scale: Any = None, bias: Any = None) -> torch.Tensor:
        floats(x, scale, bias)
        rank = x.ndim
        if not rank or any(not -rank <= a < rank for a in self.op.axes) or x.numel() == 0:
            raise Fallback
        axes = sorted({a % rank for a in self.op.axes})
        activation = self.op.activation or None
        if is_channels_last(x) and axes == [2, 3]:
            stat = (int(x.shape[0]), int(x.shape[1]), 1, 1)
            if all(v is None or (v.ndim <= 4 and torch.broadcast_shapes(tuple(v.shape), stat) == stat)
                   for v in (scale, bias)):
                per = [None if v is None else v.to(x.dtype) for v in (scale, bias)]
                return instance_norm_nhwc(x, per[0], per[1], self.op.epsilon, activation, self.options)
        fast = self._per_instance(x, axes, scale, bias)
        if fast is not None:
            return activate(fast, activation)
        var, mean = torch.var_mean(x, dim=axes, correction=0, keepdim=True)  # [N, C, 1, 1] for NCHW
        factor = torch.rsqrt(var + self.op.epsilon)
        if scale is not None:
            factor = factor * scale.to(x.dtype)
        d = x - mean
        y = torch.addcmul(bias.to(x.dtype), d, factor) if bias is not None else d.mul_(factor)
        return activate(y, activation)

    def _per_instance(self, x: torch.Tensor, axes: list[int], scale: Any, bias: Any) -> torch.Tensor | None:
        """The instance-norm shape (spatial axes, scale/bias per item and channel) as one fused
        ``F.instance_norm`` over ``[1, N*C, *spatial]`` — a third of the time of separate passes."""
        rank = x.ndim
        if rank < 3 or axes != list(range(2, rank)):
            return None
        n, c = x.shape[:2]
        stat = (n, c) + (1,) * (rank - 2)
        per_row = []
        for v in (scale, bias):
            if v is None:
                per_row.append(None)
                continue
            if v.ndim > rank or torch.broadcast_shapes(tuple(v.shape), stat) != stat:
                return None
            per_row.append(v.to(x.dtype).expand(stat).reshape(n * c))  # [N*C]
        y = F.instance_norm(x.reshape((1, n * c) + tuple(x.shape[2:])), weight=per_row[0], bias=per_row[1],
                            eps=self.op.epsilon)
        return y.reshape(x.shape)


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
