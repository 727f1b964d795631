"""Reductions on tensors (mirrors engine.ops.reduce: axes from the attribute or the second input)."""

from __future__ import annotations

from typing import Any, TypeVar

import torch

from engine.backends.torch_ops import Fallback, TorchKernel, floats, host_ints
from engine.ops.reduce import ReduceMax as ReduceMaxOp
from engine.ops.reduce import ReduceMean as ReduceMeanOp
from engine.ops.reduce import ReduceSum as ReduceSumOp
from engine.ops.reduce import _Reduce as ReduceOp

# The numpy reduction a kernel mirrors (its axes, keepdims and noop_with_empty_axes attributes).
ReduceOpT = TypeVar("ReduceOpT", bound=ReduceOp)


class _Reduce(TorchKernel[ReduceOpT]):
    def axes(self, x: torch.Tensor, axes: Any) -> list[int] | None:
        """Normalized axes, or None when the input passes through (noop_with_empty_axes)."""
        axis_list = host_ints(axes) if axes is not None else self.op.attr_axes
        if not axis_list:
            if self.op.noop_empty:
                return None
            axis_list = list(range(x.ndim))
        rank = x.ndim
        if any(not -rank <= a < rank for a in axis_list) or not rank:
            raise Fallback  # the numpy op reports it
        return sorted({a % rank for a in axis_list})

    def run(self, x: Any, axes: Any = None) -> torch.Tensor:
        floats(x)
        picked = self.axes(x, axes)
        if picked is None:
            return x
        if any(x.shape[a] == 0 for a in picked):
            raise Fallback  # empty reductions: numpy's identities (nan, -inf)
        return self.reduce(x, picked, self.op.keepdims)

    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        raise NotImplementedError


class ReduceSum(_Reduce[ReduceSumOp]):
    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return torch.sum(x, dim=axes, keepdim=keepdims)


class ReduceMean(_Reduce[ReduceMeanOp]):
    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        if x.dtype == torch.float16:  # half sums drift over large images: accumulate in float32
            return torch.mean(x.float(), dim=axes, keepdim=keepdims).half()
        return torch.mean(x, dim=axes, keepdim=keepdims)


class ReduceMax(_Reduce[ReduceMaxOp]):
    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return torch.amax(x, dim=axes, keepdim=keepdims)
