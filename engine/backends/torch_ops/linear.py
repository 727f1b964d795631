"""Convolutions and matrix products on tensors (mirrors engine.ops.conv, conv_transpose, gemm, matmul).

Geometry (auto_pad, asymmetric pads, output_shape) is resolved by the numpy
op's own window code; torch then runs the convolution with cuDNN / oneDNN.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from engine.backends.torch_ops import DEFAULT_OPTIONS, Fallback, KernelOptions, TorchKernel, floats
from engine.backends.torch_ops.arithmetic import align
from engine.backends.torch_ops.buffers import FRESH_MAPPING_BYTES
from engine.ops.conv import Conv as ConvOp
from engine.ops.conv_transpose import ConvTranspose as ConvTransposeOp
from engine.ops.gemm import Gemm as GemmOp
from engine.ops.matmul import MatMul as MatMulOp

log = logging.getLogger(__name__)

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def torch_pads(pads: list[tuple[int, int]]) -> list[int]:
    """Per-axis (begin, end) pads in F.pad's order: last axis first."""
    out: list[int] = []
    for begin, end in reversed(pads):
        out += [begin, end]
    return out


def activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    """The compiler's fused activation (Relu / Sigmoid), in place on a fresh result."""
    if activation == "Relu":
        return y.relu_()
    if activation == "Sigmoid":
        return y.sigmoid_()
    return y


class Conv(TorchKernel[ConvOp]):
    def __init__(self, op: ConvOp, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(op, options)
        # (the weight tensor it was made from, its channels-last copy): made once per weight
        self._packed: tuple[torch.Tensor, torch.Tensor] | None = None
        # large 2-D results into pooled buffers (see _pooled); off after oneDNN refuses one
        self._into_pool = options.channels_last and options.pool is not None

    def _channels_last(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)  # no copy when x already is
        packed = self._packed
        if packed is None or packed[0] is not w:
            packed = self._packed = (w, w.contiguous(memory_format=torch.channels_last))
        return x, packed[1]

    def run(self, x: Any, w: Any, b: Any = None) -> torch.Tensor:
        floats(x, w, b)
        op = self.op
        rank = x.ndim - 2
        if rank not in CONV or w.ndim != x.ndim or x.shape[1] != w.shape[1] * op.group:
            raise Fallback
        window = op.window.per_axis(rank, tuple(w.shape[2:]))
        if tuple(w.shape[2:]) != window.kernel or w.shape[0] % op.group:
            raise Fallback
        if b is not None and b.numel() != w.shape[0]:
            raise Fallback
        pads, _ = window.resolve(tuple(x.shape[2:]))
        if all(p0 == p1 for p0, p1 in pads):
            padding = [p0 for p0, _ in pads]
        else:
            x = F.pad(x, torch_pads(pads))
            padding = [0] * rank
        if rank == 2 and self.options.channels_last:
            x, w = self._channels_last(x, w)
        bias = None if b is None else b.to(x.dtype).reshape(-1)
        if rank == 2 and self._into_pool:
            y = self._pooled(x, w, bias, window, padding)
            if y is not None:
                return y
        y = CONV[rank](x, w.to(x.dtype), bias, stride=window.strides, padding=padding,
                       dilation=window.dilations, groups=op.group)
        return activate(y, op.activation)

    def _pooled(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, window: Any,
                padding: list[int]) -> torch.Tensor | None:
        """A large channels-last CPU convolution written into a zeroed pooled buffer (oneDNN's in-place
        "add" post-op); None where that does not apply. A fresh result of 32 MiB or more is mapped anew on
        every run (see :data:`~engine.backends.torch_ops.buffers.FRESH_MAPPING_BYTES`), and its page faults
        cost more than the zeroing (a 32-channel 512x512 result: 49 ms instead of 58 ms, zeroing included)."""
        pool = self.options.pool
        if pool is None or x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32:
            return None
        n, _, h, wd = (int(d) for d in x.shape)
        out_sp = [(size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
                  zip((h, wd), padding, window.dilations, window.kernel, window.strides)]
        shape = (n, int(w.shape[0]), *out_sp)
        if min(out_sp) < 1 or math.prod(shape) * 4 < FRESH_MAPPING_BYTES:
            return None
        out = self.options.empty(shape, x, torch.channels_last)
        out.zero_()
        relu = self.op.activation == "Relu"
        try:
            y = torch.ops.mkldnn._convolution_pointwise_(
                out, x, w, bias, padding, list(window.strides), list(window.dilations), self.op.group,
                "add", 1.0, "relu" if relu else None, [], None)
        except RuntimeError as exc:  # a build or geometry oneDNN does not fuse: the ordinary path from now on
            log.debug("pooled convolution unavailable (%s); using conv2d", exc)
            self._into_pool = False
            return None
        return y if relu else activate(y, self.op.activation)


class ConvTranspose(TorchKernel[ConvTransposeOp]):
    def run(self, x: Any, w: Any, b: Any = None) -> torch.Tensor:
        floats(x, w, b)
        op = self.op
        rank = x.ndim - 2
        if rank not in CONV_T or w.ndim != x.ndim:
            raise Fallback
        c = x.shape[1]
        if c != w.shape[0] or c % op.group:
            raise Fallback
        strides, dils, geo = op._geometry(tuple(x.shape[2:]), tuple(w.shape[2:]))
        begins, sizes = geo[:rank], geo[rank:]
        if any(v < 1 for v in sizes):
            raise Fallback
        # The full canvas without padding, then crop (or zero-extend) to [begin, begin + size) per axis.
        y = CONV_T[rank](x, w.to(x.dtype), None, stride=strides, padding=0, dilation=dils, groups=op.group)
        spec: list[int] = []
        for a in reversed(range(rank)):
            spec += [-begins[a], begins[a] + sizes[a] - y.shape[2 + a]]
        if any(spec):
            y = F.pad(y, spec)
        if b is not None:
            y = y + b.to(y.dtype).reshape((1, -1) + (1,) * rank)
        return y


class Gemm(TorchKernel[GemmOp]):
    def run(self, a: Any, b: Any, c: Any = None) -> torch.Tensor:
        floats(a, b, c)
        op = self.op
        if a.ndim != 2 or b.ndim != 2:
            raise Fallback
        a = a.T if op.trans_a else a  # [M, K]
        b = b.T if op.trans_b else b  # [K, N]
        y = torch.matmul(a, b.to(a.dtype))  # [M, N]
        if op.alpha != 1.0:
            y = y * op.alpha
        if c is not None and op.beta != 0.0:
            if c.ndim > 2 or any(cd not in (1, yd) for cd, yd in zip(c.shape[::-1], y.shape[::-1])):
                raise Fallback
            c = c.to(y.dtype)
            y = y + (c if op.beta == 1.0 else c * op.beta)
        return y


class MatMul(TorchKernel[MatMulOp]):
    def run(self, a: Any, b: Any) -> torch.Tensor:
        a, b = align(a, b)
        if a.ndim == 0 or b.ndim == 0:
            raise Fallback
        return torch.matmul(a, b)
