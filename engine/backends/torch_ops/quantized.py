"""Integer quantization ops on tensors (mirrors engine.ops.dynamic_quantize_linear, conv_integer, matmul_integer,
qlinear_conv and qlinear_matmul).

Torch has no integer convolution or GEMM for these types (none on the CPU, only constrained int8 kernels on
CUDA), so the integer sums run in floats where that is exact, with the bound the numpy ops use
(:mod:`engine.ops.matmul_integer`): float32 on the CPU when every partial sum stays within 2**24 (IEEE float32
GEMMs and oneDNN's direct convolutions), else float64, which holds every sum a real weight can produce. On CUDA
always float64: float32 there may go through TF32 or Winograd/FFT convolutions. Float64 results are rounded to
the nearest integer before the int32 conversion, which absorbs any rounding a convolution algorithm might add.

Codes and int32 sums stay on the device as integer tensors: the next integer kernel reads them there, and any
other op gets them through the host fallback. Integer weights arrive as host arrays (the backend keeps integer
values on the host); the centered weight is made once by the numpy op's own cache and uploaded once. A kernel
with no tensor among its inputs (nothing says which device) falls back to the numpy op.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import DEFAULT_OPTIONS, Fallback, KernelOptions, OpT, TorchKernel, floats, host_tensor
from engine.backends.torch_ops.linear import CONV, torch_pads
from engine.ops.conv_integer import ConvInteger as ConvIntegerOp
from engine.ops.conv_integer import IntegerConv, channel_param
from engine.ops.dynamic_quantize_linear import DynamicQuantizeLinear as DynamicQuantizeLinearOp
from engine.ops.matmul_integer import (
    CODE_DTYPES,
    INT32_MAX,
    Centered,
    accumulator,
    col_param,
    is_scalar,
    reach,
)
from engine.ops.matmul_integer import MatMulInteger as MatMulIntegerOp
from engine.ops.qlinear_conv import QLinearConv as QLinearConvOp
from engine.ops.qlinear_matmul import QLinearMatMul as QLinearMatMulOp

CODE_TYPES = {torch.uint8: np.dtype(np.uint8), torch.int8: np.dtype(np.int8)}
WIDEST_REACH = 255  # |q - zp| for any 8-bit code and zero point of one type


def device_of(*values: Any) -> torch.device | None:
    """The device of the first tensor among ``values`` (None when all are host arrays)."""
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    return None


def float32_sums_exact(device: torch.device) -> bool:
    """Whether float32 sums integers exactly (below 2**24) on ``device``: the CPU, with IEEE float32 GEMMs and
    oneDNN's direct convolutions (without oneDNN, batches of 16 may go to NNPACK's Winograd)."""
    if device.type != "cpu" or torch.get_float32_matmul_precision() != "highest":
        return False
    mkldnn = torch.backends.mkldnn
    if not (mkldnn.is_available() and mkldnn.enabled):
        return False
    settings = [getattr(mkldnn, "fp32_precision", "none")]
    settings += [getattr(getattr(mkldnn, part, None), "fp32_precision", "none") for part in ("conv", "matmul")]
    return all(s in ("none", "ieee") for s in settings)


def code_dtype(value: Any) -> np.dtype:
    """The numpy type of an 8-bit code tensor or array; other types fall back (the numpy op reports them)."""
    dtype = CODE_TYPES.get(value.dtype) if isinstance(value, torch.Tensor) else np.asarray(value).dtype
    if dtype not in CODE_DTYPES:
        raise Fallback
    assert dtype is not None
    return dtype


def on_device(value: Any, device: torch.device) -> torch.Tensor:
    return value.to(device) if isinstance(value, torch.Tensor) else host_tensor(value, device)


def host_weight(value: Any) -> np.ndarray:
    """A weight input as the host array the backend keeps it as; a computed (tensor) weight falls back."""
    if isinstance(value, torch.Tensor):
        raise Fallback
    return np.asarray(value)


def scalar_zero_point(zp: Any, codes: np.dtype, device: torch.device) -> tuple[torch.Tensor | None, int]:
    """A per-tensor zero point of ``codes``'s type as a 0-d tensor, and the reach of a code around it; read on
    the host only where that costs no synchronization (the CPU)."""
    if zp is None:
        return None, reach(codes, None)
    if code_dtype(zp) != codes or (zp.numel() if isinstance(zp, torch.Tensor) else np.size(zp)) != 1:
        raise Fallback
    tensor = on_device(zp, device).reshape(())
    if device.type == "cpu":
        return tensor, reach(codes, np.asarray(int(tensor.item())))
    return tensor, WIDEST_REACH


class DeviceWeight:
    """A centered weight (the numpy op's :class:`Centered` entry) as a tensor on the device, per dtype."""

    def __init__(self) -> None:
        self._made: tuple[np.ndarray, torch.dtype, torch.device, torch.Tensor] | None = None

    def get(self, centered: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        made = self._made
        if made is None or made[0] is not centered or made[1] != dtype or made[2] != device:
            tensor = torch.from_numpy(centered).to(device=device, dtype=dtype)
            made = self._made = (centered, dtype, device, tensor)
        return made[3]


def exact_sums(bound: int, device: torch.device) -> torch.dtype:
    if np.dtype(accumulator(bound)) == np.float32 and float32_sums_exact(device):
        return torch.float32
    return torch.float64


def to_int32(acc: torch.Tensor, bound: int) -> torch.Tensor:
    """Exact float sums as int32, wrapping modulo 2**32 past its range as int32 accumulation does."""
    if acc.dtype == torch.float64:
        acc = acc.round()
    if bound <= INT32_MAX:
        return acc.to(torch.int32)
    return acc.to(torch.int64).to(torch.int32)


def integer_conv(conv: IntegerConv, weight: DeviceWeight, x: Any, x_zp: Any, w: Any, w_zp: Any,
                 device: torch.device) -> torch.Tensor:
    """``conv(x - x_zp, w - w_zp)`` as an int32 tensor on ``device`` (the numpy op's geometry and weight cache)."""
    w = host_weight(w)
    codes, w_codes = code_dtype(x), code_dtype(w)
    rank = w.ndim - 2
    if rank not in CONV:
        raise Fallback
    window = conv.geometry(tuple(x.shape), w.shape)
    w_zp_host = None
    if w_zp is not None:
        w_zp_host = channel_param(host_weight(w_zp), w.shape[0], w.ndim, "w_zero_point")
        if w_zp_host.dtype != w_codes:
            raise Fallback
    zp, x_reach = scalar_zero_point(x_zp, codes, device)
    entry = conv.weights.get(w, w_zp_host, tuple(range(1, w.ndim)))
    bound = x_reach * entry.weight_sum
    dtype = exact_sums(bound, device)
    xc = on_device(x, device).to(dtype)
    if zp is not None:
        xc = xc - zp.to(dtype)
    pads, _ = window.resolve(tuple(x.shape[2:]))
    if all(b == e for b, e in pads):
        padding = [b for b, _ in pads]
    else:
        xc = F.pad(xc, torch_pads(pads))  # zeros: the input's zero point
        padding = [0] * rank
    y = CONV[rank](xc, weight.get(entry.centered, dtype, device), None, stride=window.strides, padding=padding,
                   dilation=window.dilations, groups=conv.group)
    return to_int32(y, bound)


def integer_matmul(cache: Centered, weight: DeviceWeight, a: Any, a_zp: Any, b: Any, b_zp: Any,
                   device: torch.device) -> torch.Tensor:
    """``(a - a_zp) @ (b - b_zp)`` as an int32 tensor on ``device``; a 2-D or wider, b a host weight, 2-D or
    wider; a's zero point per tensor (a per-row one falls back), b's per tensor or per column."""
    b = host_weight(b)
    codes, b_codes = code_dtype(a), code_dtype(b)
    if a.ndim < 2 or b.ndim < 2:
        raise Fallback
    b_zp_host = None
    if b_zp is not None:
        b_zp_host = col_param(host_weight(b_zp), b.shape, "b_zero_point")
        if b_zp_host.dtype != b_codes:
            raise Fallback
    zp, a_reach = scalar_zero_point(a_zp, codes, device)
    entry = cache.get(b, b_zp_host, (-2,))
    bound = a_reach * entry.weight_sum
    dtype = exact_sums(bound, device)
    ac = on_device(a, device).to(dtype)
    if zp is not None:
        ac = ac - zp.to(dtype)
    return to_int32(torch.matmul(ac, weight.get(entry.centered, dtype, device)), bound)


def float_param(value: Any, device: torch.device) -> torch.Tensor:
    """A scale as a float32 tensor on ``device``: float16 scales (QLinearMatMul-21) widen exactly; in an fp16 run
    the backend has already rounded float32 scales to half, so the codes are those of the rounded scales."""
    t = on_device(value, device)
    if not t.is_floating_point():
        raise Fallback
    return t.float()


def requantize(acc: torch.Tensor, mult: torch.Tensor, y_zp: Any, default: np.dtype) -> torch.Tensor:
    """The numpy op's requantization: ``saturate(rint(float32(acc) * mult) + y_zp)``, NaN saturating low."""
    dtype = default if y_zp is None else code_dtype(y_zp)
    if y_zp is not None and (y_zp.numel() if isinstance(y_zp, torch.Tensor) else np.size(y_zp)) != 1:
        raise Fallback
    info = np.iinfo(dtype)
    v = acc.to(torch.float32).mul_(mult).round_()  # halves to even
    if y_zp is not None:
        v = v.add_(on_device(y_zp, acc.device).reshape(()).to(torch.float32))
    v = v.clamp_(float(info.min), float(info.max)).nan_to_num_(nan=float(info.min))  # NaN saturates low
    return v.to(torch.uint8 if dtype == np.uint8 else torch.int8)


class _Integer(TorchKernel[OpT]):
    """A kernel with an integer weight, kept on the device once centered."""

    def __init__(self, op: OpT, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(op, options)
        self.weight = DeviceWeight()


class DynamicQuantizeLinear(TorchKernel[DynamicQuantizeLinearOp]):
    def run(self, x: Any) -> tuple[torch.Tensor, ...]:
        floats(x)
        if x.numel() == 0:
            raise Fallback
        x = x.float()
        zero = x.new_zeros(())
        lo, hi = torch.aminmax(x)
        hi, lo = torch.maximum(hi, zero), torch.minimum(lo, zero)
        # float32 throughout, as the numpy op. Every divisor is a device tensor: CUDA turns a division by a host
        # scalar into a multiplication by its reciprocal, which can differ in the last bit
        scale = torch.where(hi == lo, torch.ones_like(hi), (hi - lo) / x.new_tensor(255.0))
        zp = (zero - lo / scale).clamp_(0.0, 255.0).round_()
        y = (x / scale).round_().add_(zp).clamp_(0.0, 255.0).nan_to_num_(nan=0.0)  # NaN saturates low
        return y.to(torch.uint8), scale, zp.to(torch.uint8)


class ConvInteger(_Integer[ConvIntegerOp]):
    def run(self, x: Any, w: Any, x_zero_point: Any = None, w_zero_point: Any = None) -> torch.Tensor:
        device = device_of(x, x_zero_point)
        if device is None:
            raise Fallback
        return integer_conv(self.op.conv, self.weight, x, x_zero_point, w, w_zero_point, device)


class MatMulInteger(_Integer[MatMulIntegerOp]):
    def run(self, a: Any, b: Any, a_zero_point: Any = None, b_zero_point: Any = None) -> torch.Tensor:
        device = device_of(a, a_zero_point)
        if device is None:
            raise Fallback
        return integer_matmul(self.op.b_cache, self.weight, a, a_zero_point, b, b_zero_point, device)


class QLinearConv(_Integer[QLinearConvOp]):
    def run(self, x: Any, x_scale: Any, x_zero_point: Any, w: Any, w_scale: Any, w_zero_point: Any,
            y_scale: Any, y_zero_point: Any, b: Any = None) -> torch.Tensor:
        device = device_of(x, x_scale, w_scale, y_scale, x_zero_point, y_zero_point)
        if device is None:
            raise Fallback
        xs, ws, ys = (float_param(s, device) for s in (x_scale, w_scale, y_scale))
        m_out, rank = int(w.shape[0]), len(w.shape)
        if xs.numel() != 1 or ys.numel() != 1:
            raise Fallback
        w_layout = channel_param(np.empty(tuple(ws.shape), np.float32), m_out, rank - 1, "w_scale").shape
        mult = (xs.reshape(()) * ws.reshape(w_layout)) / ys.reshape(())  # [M, 1, ...] or []
        acc = integer_conv(self.op.conv, self.weight, x, x_zero_point, w, w_zero_point, device)
        if b is not None:
            bias = on_device(b, device)
            if bias.dtype != torch.int32 or bias.numel() != m_out:
                raise Fallback
            acc = acc.add_(bias.reshape((m_out,) + (1,) * (rank - 2)))  # int32, wrapping as the sums do
        return requantize(acc, mult, y_zero_point, code_dtype(x))


class QLinearMatMul(_Integer[QLinearMatMulOp]):
    def run(self, a: Any, a_scale: Any, a_zero_point: Any, b: Any, b_scale: Any, b_zero_point: Any,
            y_scale: Any, y_zero_point: Any) -> torch.Tensor:
        device = device_of(a, a_scale, b_scale, y_scale, a_zero_point, y_zero_point)
        if device is None or len(a.shape) < 2 or len(b.shape) < 2:
            raise Fallback
        a_s, b_s, y_s = (float_param(s, device) for s in (a_scale, b_scale, y_scale))
        if y_s.numel() != 1 or not is_scalar(np.empty(tuple(a_s.shape))):
            raise Fallback  # a per-row scale goes with a per-row zero point, which the numpy op takes
        b_layout = col_param(np.empty(tuple(b_s.shape), np.float32), tuple(b.shape), "b_scale").shape
        mult = (a_s.reshape(()) * b_s.reshape(b_layout)) / y_s.reshape(())
        acc = integer_matmul(self.op.b_cache, self.weight, a, a_zero_point, b, b_zero_point, device)
        return requantize(acc, mult, y_zero_point, code_dtype(a))
