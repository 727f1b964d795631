"""Activations and unary math on tensors (mirrors engine.ops.activations, clip, softmax, unary)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import Fallback, TorchKernel, floats, like


class _Unary(TorchKernel):
    fn: ClassVar[Callable[..., torch.Tensor]]

    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return type(self).fn(x)


class Relu(_Unary):
    fn = staticmethod(torch.relu)


class Sigmoid(_Unary):
    fn = staticmethod(torch.sigmoid)


class Tanh(_Unary):
    fn = staticmethod(torch.tanh)


class Sqrt(_Unary):
    fn = staticmethod(torch.sqrt)


class Neg(_Unary):
    fn = staticmethod(torch.neg)


class Exp(_Unary):
    fn = staticmethod(torch.exp)


class Log(_Unary):
    fn = staticmethod(torch.log)


class Abs(_Unary):
    fn = staticmethod(torch.abs)


class Reciprocal(_Unary):
    fn = staticmethod(torch.reciprocal)


class Floor(_Unary):
    fn = staticmethod(torch.floor)


class Ceil(_Unary):
    fn = staticmethod(torch.ceil)


class LeakyRelu(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return F.leaky_relu(x, self.op.alpha)


class PRelu(TorchKernel):
    def run(self, x: Any, slope: Any) -> torch.Tensor:
        floats(x)
        slope = like(slope, x)
        if slope.ndim > x.ndim or any(s not in (1, d) for s, d in zip(slope.shape[::-1], x.shape[::-1])):
            raise Fallback  # the numpy op reports the shape error
        return torch.where(x < 0, x * slope, x)


class HardSigmoid(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return torch.clamp(x * self.op.alpha + self.op.beta, 0.0, 1.0)


class HardSwish(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return x * torch.clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


class Elu(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return F.elu(x, self.op.alpha)


class Clip(TorchKernel):
    def run(self, x: Any, lo: Any = None, hi: Any = None) -> torch.Tensor:
        floats(x)
        low = self._bound(lo, self.op.attr_min)
        high = self._bound(hi, self.op.attr_max)
        if low is None and high is None:
            return x
        # minimum(maximum(x, lo), hi), as the numpy op: hi wins where lo > hi
        y = x if low is None else torch.clamp_min(x, low)
        return y if high is None else torch.clamp_max(y, high)

    @staticmethod
    def _bound(value: Any, attr: float | None) -> float | None:
        if value is None:
            return attr
        count = value.numel() if isinstance(value, torch.Tensor) else int(np.size(value))
        if count != 1:
            raise Fallback
        return float(value.reshape(-1)[0])


class Softmax(TorchKernel):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        rank = x.ndim
        axis = self.op.axis
        if not rank or not -rank <= axis < rank or x.numel() == 0:
            raise Fallback
        axis %= rank
        if self.op.coerce_2d:
            flat = x.reshape(math.prod(x.shape[:axis]), -1)  # [rows, cols]
            return torch.softmax(flat, dim=1).reshape(x.shape)
        return torch.softmax(x, dim=axis)
