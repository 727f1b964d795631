"""Activations and unary math on tensors (mirrors engine.ops.activations, clip, softmax, unary)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import Fallback, OpT, TorchKernel, floats, like
from engine.ops.activations import Elu as EluOp
from engine.ops.activations import Gelu as GeluOp
from engine.ops.activations import HardSigmoid as HardSigmoidOp
from engine.ops.activations import HardSwish as HardSwishOp
from engine.ops.activations import LeakyRelu as LeakyReluOp
from engine.ops.activations import PRelu as PReluOp
from engine.ops.activations import Relu as ReluOp
from engine.ops.activations import Sigmoid as SigmoidOp
from engine.ops.activations import Tanh as TanhOp
from engine.ops.clip import Clip as ClipOp
from engine.ops.softmax import Softmax as SoftmaxOp
from engine.ops.unary import Abs as AbsOp
from engine.ops.unary import Ceil as CeilOp
from engine.ops.unary import Erf as ErfOp
from engine.ops.unary import Exp as ExpOp
from engine.ops.unary import Floor as FloorOp
from engine.ops.unary import Log as LogOp
from engine.ops.unary import Neg as NegOp
from engine.ops.unary import Reciprocal as ReciprocalOp
from engine.ops.unary import Round as RoundOp
from engine.ops.unary import Sqrt as SqrtOp


class _Unary(TorchKernel[OpT]):
    fn: ClassVar[Callable[..., torch.Tensor]]

    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return type(self).fn(x)


class Relu(_Unary[ReluOp]):
    fn = staticmethod(torch.relu)


class Sigmoid(_Unary[SigmoidOp]):
    fn = staticmethod(torch.sigmoid)

    def run(self, x: Any) -> torch.Tensor:
        if self.op.approximation:  # onnxruntime's own values: the host op computes them
            raise Fallback
        return super().run(x)


class Tanh(_Unary[TanhOp]):
    fn = staticmethod(torch.tanh)


class Sqrt(_Unary[SqrtOp]):
    fn = staticmethod(torch.sqrt)


class Neg(_Unary[NegOp]):
    fn = staticmethod(torch.neg)


class Exp(_Unary[ExpOp]):
    fn = staticmethod(torch.exp)


class Log(_Unary[LogOp]):
    fn = staticmethod(torch.log)


class Abs(_Unary[AbsOp]):
    fn = staticmethod(torch.abs)


class Reciprocal(_Unary[ReciprocalOp]):
    fn = staticmethod(torch.reciprocal)


class Floor(_Unary[FloorOp]):
    fn = staticmethod(torch.floor)


class Ceil(_Unary[CeilOp]):
    fn = staticmethod(torch.ceil)


class Round(_Unary[RoundOp]):
    fn = staticmethod(torch.round)  # halves to even, as ONNX rounds


class Erf(_Unary[ErfOp]):
    fn = staticmethod(torch.erf)


class Gelu(TorchKernel[GeluOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return F.gelu(x, approximate=self.op.approximate)


class LeakyRelu(TorchKernel[LeakyReluOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return F.leaky_relu(x, self.op.alpha)


class PRelu(TorchKernel[PReluOp]):
    def run(self, x: Any, slope: Any) -> torch.Tensor:
        floats(x)
        slope = like(slope, x)
        if slope.ndim > x.ndim or any(s not in (1, d) for s, d in zip(slope.shape[::-1], x.shape[::-1])):
            raise Fallback  # the numpy op reports the shape error
        return torch.where(x < 0, x * slope, x)


class HardSigmoid(TorchKernel[HardSigmoidOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return torch.clamp(x * self.op.alpha + self.op.beta, 0.0, 1.0)


class HardSwish(TorchKernel[HardSwishOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return x * torch.clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0)


class Elu(TorchKernel[EluOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return F.elu(x, self.op.alpha)


class Clip(TorchKernel[ClipOp]):
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


class Softmax(TorchKernel[SoftmaxOp]):
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
