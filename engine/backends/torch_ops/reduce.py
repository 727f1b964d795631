"""Reductions on tensors (mirrors engine.ops.reduce: axes from the attribute or the second input)."""

from __future__ import annotations

from typing import Any, TypeVar

import torch

from engine.backends.torch_ops import Fallback, TorchKernel, floats, host_ints
from engine.ops.reduce import ReduceL2 as ReduceL2Op
from engine.ops.reduce import ReduceMax as ReduceMaxOp
from engine.ops.reduce import ReduceMean as ReduceMeanOp
from engine.ops.reduce import ReduceMin as ReduceMinOp
from engine.ops.reduce import ReduceProd as ReduceProdOp
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


class ReduceMin(_Reduce[ReduceMinOp]):
    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        return torch.amin(x, dim=axes, keepdim=keepdims)


class ReduceProd(_Reduce[ReduceProdOp]):
    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        # half products round at every step: multiply in float32, as the numpy op does
        y = x.float() if x.dtype == torch.float16 else x
        for axis in reversed(axes):  # torch.prod takes one dim; the last first keeps the others' numbers
            y = torch.prod(y, dim=axis, keepdim=keepdims)
        return y.to(x.dtype)


class ReduceL2(_Reduce[ReduceL2Op]):
    def reduce(self, x: torch.Tensor, axes: list[int], keepdims: bool) -> torch.Tensor:
        # sqrt of the summed squares, as the numpy op (not vector_norm's rescaling); half squares in float32
        y = x.float() if x.dtype == torch.float16 else x
        return torch.sqrt(torch.sum(y * y, dim=axes, keepdim=keepdims)).to(x.dtype)
