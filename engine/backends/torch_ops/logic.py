"""Comparisons, boolean logic and Where on tensors (mirrors engine.ops.compare, logical and where).

They run on the device when an operand is already a tensor there (a float
activation, or a mask an earlier comparison left on the device) and return a
tensor there: comparing and selecting are exact in every dtype, so nothing
is gained by a round trip to the host. When every operand is a host array
(integer shape arithmetic, a bool graph input), the numpy op runs on the
host, where such values live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from engine.backends.torch_ops import Fallback, OpT, TorchKernel, host_tensor
from engine.ops.compare import Equal as EqualOp
from engine.ops.compare import Greater as GreaterOp
from engine.ops.compare import Less as LessOp
from engine.ops.logical import And as AndOp
from engine.ops.logical import Not as NotOp
from engine.ops.logical import Or as OrOp
from engine.ops.where import Where as WhereOp


def device_of(*values: Any) -> torch.device:
    """The device of the first tensor among ``values``; :class:`Fallback` when none is a tensor."""
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    raise Fallback


def on(value: Any, device: torch.device) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else host_tensor(value, device)


def aligned(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One dtype for both: the larger operand's, as engine.ops.binary.align_operands decides."""
    if a.dtype == b.dtype:
        return a, b
    if a.numel() >= b.numel():
        return a, b.to(a.dtype)
    return a.to(b.dtype), b


class _Compare(TorchKernel[OpT]):
    fn: ClassVar[Callable[..., torch.Tensor]]

    def run(self, a: Any, b: Any) -> torch.Tensor:
        device = device_of(a, b)
        a, b = aligned(on(a, device), on(b, device))
        return type(self).fn(a, b)  # bool, [broadcast(a, b)]


class Equal(_Compare[EqualOp]):
    fn = staticmethod(torch.eq)


class Less(_Compare[LessOp]):
    fn = staticmethod(torch.lt)


class Greater(_Compare[GreaterOp]):
    fn = staticmethod(torch.gt)


def bools(*values: torch.Tensor) -> None:
    """:class:`Fallback` for a non-bool operand: the numpy op reports the type error."""
    if any(v.dtype != torch.bool for v in values):
        raise Fallback


class Not(TorchKernel[NotOp]):
    def run(self, x: Any) -> torch.Tensor:
        x = on(x, device_of(x))
        bools(x)
        return torch.logical_not(x)


class _Logical(TorchKernel[OpT]):
    fn: ClassVar[Callable[..., torch.Tensor]]

    def run(self, a: Any, b: Any) -> torch.Tensor:
        device = device_of(a, b)
        a, b = on(a, device), on(b, device)
        bools(a, b)
        return type(self).fn(a, b)


class And(_Logical[AndOp]):
    fn = staticmethod(torch.logical_and)


class Or(_Logical[OrOp]):
    fn = staticmethod(torch.logical_or)


class Where(TorchKernel[WhereOp]):
    """On the device of ``X`` or ``Y``; with both on the host (integer selects) the numpy op runs there too,
    downloading a device condition."""

    def run(self, condition: Any, x: Any, y: Any) -> torch.Tensor:
        device = device_of(x, y)
        condition = on(condition, device)
        bools(condition)
        x, y = aligned(on(x, device), on(y, device))
        return torch.where(condition, x, y)  # [broadcast(condition, X, Y)]
