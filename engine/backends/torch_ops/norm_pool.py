"""Normalizations and pools on tensors (mirrors engine.ops.batch_normalization, instance_normalization,
fused_norm, pool, global_pool). Window geometry comes from the numpy op's own code."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import DEFAULT_OPTIONS, Fallback, KernelOptions, TorchKernel, floats, is_channels_last
from engine.backends.torch_ops.linear import activate, torch_pads
from engine.backends.torch_ops.padded import TAG, PadTarget
from engine.ops.batch_normalization import BatchNormalization as BatchNormalizationOp
from engine.ops.fused_norm import FusedMeanVarianceNorm as FusedMeanVarianceNormOp
from engine.ops.global_pool import GlobalAveragePool as GlobalAveragePoolOp
from engine.ops.global_pool import GlobalMaxPool as GlobalMaxPoolOp
from engine.ops.instance_normalization import InstanceNormalization as InstanceNormalizationOp
from engine.ops.pool import AveragePool as AveragePoolOp
from engine.ops.pool import MaxPool as MaxPoolOp

MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class BatchNormalization(TorchKernel[BatchNormalizationOp]):
    def run(self, x: Any, scale: Any, bias: Any, mean: Any, var: Any) -> torch.Tensor:
        floats(x, scale, bias, mean, var)
        if self.op.training or x.ndim < 2:
            raise Fallback
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        a = scale.to(x.dtype) / torch.sqrt(var.to(x.dtype) + self.op.epsilon)  # [C]
        shift = bias.to(x.dtype) - mean.to(x.dtype) * a
        return torch.addcmul(shift.reshape(shape), x, a.reshape(shape))


class InstanceNormalization(TorchKernel[InstanceNormalizationOp]):
    def __init__(self, op: InstanceNormalizationOp, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(op, options)
        self.pad_target = PadTarget()  # a following reflect Pad's buffer, written into directly

    def run(self, x: Any, scale: Any, bias: Any) -> torch.Tensor:
        floats(x, scale, bias)
        if x.ndim < 3 or scale.numel() != x.shape[1] or bias.numel() != x.shape[1]:
            raise Fallback
        weight, shift = scale.to(x.dtype).reshape(-1), bias.to(x.dtype).reshape(-1)
        if is_channels_last(x):
            c = x.shape[1]
            return instance_norm_nhwc(x, weight.reshape(1, c, 1, 1), shift.reshape(1, c, 1, 1), self.op.epsilon,
                                      None, self.options, self.pad_target)
        return F.instance_norm(x, weight=weight, bias=shift, eps=self.op.epsilon)


# Channels per block of the sums-of-squares products (see _sum_squares).
SQUARES_BLOCK = 16
# On the CPU the variance is taken in one pass, E[x^2] - mean^2, while every channel's mean^2 is at most this
# many times its variance; the float32 sums of squares are good to ~1e-6 relative, so the variance stays
# within ~2e-5 (the style network's norms measured mean^2/var <= 8). Beyond it: the centred two-pass form.
ONE_PASS_MAX_RATIO = 16.0


def _sum_squares(x: torch.Tensor) -> torch.Tensor:
    """Per item and channel sums of squares of a dense channels-last [N, C, H, W] tensor: [N, C].

    The diagonals of [g, H*W] x [H*W, g] products over blocks of g channels,
    one read of ``x`` in BLAS with no temporary: at C=32 and 512x512, blocks
    of 16 ran in 2.5 ms, the full [C, C] product in 4.6 ms and per-channel
    dot products (g=1, strided) in 77 ms.
    """
    n, c, h, w = (int(d) for d in x.shape)
    g = math.gcd(c, SQUARES_BLOCK)
    if g < 4:
        g = c
    rows = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: [N, H*W, C]
    out = []
    for item in rows:
        blocks = item.reshape(h * w, c // g, g).permute(1, 2, 0)  # a view: [C/g, g, H*W]
        out.append(torch.bmm(blocks, blocks.transpose(1, 2)).diagonal(dim1=1, dim2=2).reshape(c))  # [C]
    return torch.stack(out)  # [N, C]


def _one_pass_variance(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor | None:
    """``E[x^2] - mean^2`` per item and channel ([N, C, 1, 1]), or None where some channel's mean is too
    large against its spread for it (:data:`ONE_PASS_MAX_RATIO`); a subsample of rows decides first, so
    such inputs (a smooth filter of a noise image) do not pay for the full sums of squares."""
    n, c, h, w = (int(d) for d in x.shape)
    step = h // 16
    if step > 1:
        sample = x[:, :, ::step]  # [N, C, ~16, W], a view
        rough = (sample - sample.mean(dim=(2, 3), keepdim=True)).square().mean(dim=(2, 3), keepdim=True)
        if bool((mean * mean > 0.5 * ONE_PASS_MAX_RATIO * rough).any()):
            return None
    var = _sum_squares(x).reshape(n, c, 1, 1) / (h * w) - mean * mean
    return None if bool((mean * mean > ONE_PASS_MAX_RATIO * var).any()) else var


def _dense(out: torch.Tensor) -> torch.Tensor:
    """``out`` if it is dense channels-last memory, else the padded buffer it is the interior of, its border
    zeroed so that sums over the buffer are sums over ``out``."""
    if out.is_contiguous(memory_format=torch.channels_last):
        return out
    tag = getattr(out, TAG)
    full, (t, _, left, _) = tag.full, tag.margins
    h, w = int(out.shape[2]), int(out.shape[3])
    full[:, :, :t].zero_()
    full[:, :, t + h:].zero_()
    full[:, :, t:t + h, :left].zero_()
    full[:, :, t:t + h, left + w:].zero_()
    return full


def _factor(var: torch.Tensor, eps: float, scale: torch.Tensor | None) -> torch.Tensor:
    """What multiplies the centred values: ``scale / sqrt(var + eps)``, [N, C, 1, 1]."""
    factor = torch.rsqrt(var + eps)
    return factor if scale is None else factor * scale


def instance_norm_nhwc(x: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None, eps: float,
                       activation: str | None, options: KernelOptions,
                       target: PadTarget | None = None) -> torch.Tensor:
    """``activation((x - mean) / sqrt(var + eps) * scale + shift)`` per item and channel of a
    channels-last [N, C, H, W] tensor, keeping its layout; ``scale``/``shift`` broadcast to [N, C, 1, 1].

    ``F.instance_norm`` would return NCHW memory (and runs slower on NHWC),
    and batch norm's own NHWC statistics sum each channel in one running
    float32 total, which moved the style network's output by 1.3e-4. Here
    the mean is a cascaded sum and the sums of squares come from BLAS
    (:func:`_sum_squares`); on the CPU, while no channel's mean is large
    against its spread (:data:`ONE_PASS_MAX_RATIO`), the variance is
    ``E[x^2] - mean^2`` and the result is written in one pass from ``x``;
    otherwise the centred values are formed first and their variance taken
    (exact to ~1e-7 relative). With a ``target`` the result is written into
    the buffer of the Pad that reads it (:mod:`engine.backends.torch_ops.padded`).
    """
    n, c, h, w = (int(d) for d in x.shape)
    mean = x.mean(dim=(2, 3), keepdim=True)  # [N, C, 1, 1]
    var = _one_pass_variance(x, mean) if x.device.type == "cpu" else None
    out = target.empty((n, c, h, w), x, options) if target is not None else \
        options.empty(x.shape, x, torch.channels_last)
    if var is not None:
        factor = _factor(var, eps, scale)
        # (x - mean) * factor + shift as x * factor + (shift - mean * factor): one pass over x
        offset = -mean * factor if shift is None else shift - mean * factor
        return activate(torch.addcmul(offset, x, factor, out=out), activation)
    # the centred values, formed in the result's own memory (no second buffer of the input's size)
    torch.sub(x, mean, out=out)  # [N, C, H, W] in NHWC memory
    var = (_sum_squares(_dense(out)) / (h * w)).reshape(n, c, 1, 1)
    factor = _factor(var, eps, scale)
    y = out.mul_(factor) if shift is None else torch.addcmul(shift, out, factor, out=out)
    return activate(y, activation)


class FusedMeanVarianceNorm(TorchKernel[FusedMeanVarianceNormOp]):
    """``activation((x - mean) / sqrt(var + eps) * scale + bias)`` over ``axes`` (keepdims)."""

    def __init__(self, op: FusedMeanVarianceNormOp, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(op, options)
        self.pad_target = PadTarget()  # a following reflect Pad's buffer, written into directly

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
                return instance_norm_nhwc(x, per[0], per[1], self.op.epsilon, activation, self.options,
                                          self.pad_target)
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
        per_row: list[torch.Tensor | None] = []
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


class MaxPool(TorchKernel[MaxPoolOp]):
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


class AveragePool(TorchKernel[AveragePoolOp]):
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


class GlobalAveragePool(TorchKernel[GlobalAveragePoolOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        if x.ndim < 3:
            raise Fallback
        return torch.mean(x, dim=list(range(2, x.ndim)), keepdim=True)


class GlobalMaxPool(TorchKernel[GlobalMaxPoolOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        if x.ndim < 3 or x.numel() == 0:
            raise Fallback
        return torch.amax(x, dim=list(range(2, x.ndim)), keepdim=True)
