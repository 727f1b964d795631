"""Broadcasting arithmetic on tensors (mirrors engine.ops.binary and engine.ops.variadic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from engine.backends.torch_ops import DEFAULT_OPTIONS, Fallback, KernelOptions, OpT, TorchKernel, floats, host_tensor
from engine.backends.torch_ops.padded import PadTarget
from engine.ops.binary import Add as AddOp
from engine.ops.binary import Div as DivOp
from engine.ops.binary import Mul as MulOp
from engine.ops.binary import Pow as PowOp
from engine.ops.binary import Sub as SubOp
from engine.ops.variadic import Max as MaxOp
from engine.ops.variadic import Mean as MeanOp
from engine.ops.variadic import Min as MinOp
from engine.ops.variadic import Sum as SumOp


def numel(x: Any) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else int(x.size)


def align(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Both operands as float tensors of one dtype: the larger operand's, as the numpy ops decide."""
    floats(a, b)
    if a.dtype == b.dtype:
        return a, b
    if numel(a) >= numel(b):
        return a, b.to(a.dtype)
    return a.to(b.dtype), b


class _Binary(TorchKernel[OpT]):
    fn: ClassVar[Callable[..., torch.Tensor]]

    def run(self, a: Any, b: Any) -> torch.Tensor:
        a, b = align(a, b)
        return type(self).fn(a, b)


class Add(_Binary[AddOp]):
    fn = staticmethod(torch.add)

    def __init__(self, op: AddOp, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(op, options)
        self.pad_target = PadTarget()  # a following reflect Pad's buffer (the style network's residual sums)

    def run(self, a: Any, b: Any) -> torch.Tensor:
        a, b = align(a, b)
        if self.options.channels_last and a.ndim == 4 and a.shape == b.shape and a.shape[1] > 1 \
                and a.stride(1) == 1 and b.stride(1) == 1:
            # two channels-last [N, C, H, W] operands: the sum keeps that layout, placed for a following Pad
            n, c, h, w = (int(d) for d in a.shape)
            return torch.add(a, b, out=self.pad_target.empty((n, c, h, w), a, self.options))
        return torch.add(a, b)


class Sub(_Binary[SubOp]):
    fn = staticmethod(torch.sub)


class Mul(_Binary[MulOp]):
    fn = staticmethod(torch.mul)


class Div(_Binary[DivOp]):
    fn = staticmethod(torch.div)


class Pow(TorchKernel[PowOp]):
    """``x ** y`` in the dtype of ``x``; the exponent (tensor or host array) is cast to it."""

    def run(self, x: Any, y: Any) -> torch.Tensor:
        floats(x)
        if numel(y) == 1 and y.ndim <= x.ndim:
            e = float(y.reshape(-1)[0])
            if e == 2.0:
                return torch.square(x)
            if e == 1.0:
                return x
            return torch.pow(x, e)
        if not isinstance(y, torch.Tensor):
            y = host_tensor(y, x.device)
        return torch.pow(x, y.to(x.dtype))


class _Variadic(TorchKernel[OpT]):
    fn: ClassVar[Callable[..., torch.Tensor]]

    def run(self, *inputs: Any) -> torch.Tensor:
        floats(*inputs)
        if any(x is None for x in inputs):
            raise Fallback
        result = inputs[0]
        for x in inputs[1:]:
            result, other = align(result, x)
            result = type(self).fn(result, other)
        return result


class Max(_Variadic[MaxOp]):
    fn = staticmethod(torch.maximum)


class Min(_Variadic[MinOp]):
    fn = staticmethod(torch.minimum)


class Sum(_Variadic[SumOp]):
    fn = staticmethod(torch.add)


class Mean(_Variadic[MeanOp]):
    """The sum, as Sum's kernel adds it, divided by the input count."""

    fn = staticmethod(torch.add)

    def run(self, *inputs: Any) -> torch.Tensor:
        return torch.div(super().run(*inputs), len(inputs))
