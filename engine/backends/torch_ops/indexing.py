"""Selection and rearrangement on tensors (mirrors engine.ops.argmax, topk, tile, einsum, depth_to_space).

Indices (ArgMax, ArgMin, TopK's second output) come back as int64 arrays on
the host, where the backend keeps every integer value. torch's own argmax
and topk leave the order of equal values open; ONNX picks the lower index
(the higher with ``select_last_index``), so ties are settled here with
exact comparisons and stable sorts.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import Fallback, TorchKernel, floats, host_ints
from engine.backends.torch_ops.layout import stand_in
from engine.ops.argmax import ArgMax as ArgMaxOp
from engine.ops.argmax import ArgMin as ArgMinOp
from engine.ops.argmax import _ArgReduce as ArgReduceOp
from engine.ops.depth_to_space import DepthToSpace as DepthToSpaceOp
from engine.ops.depth_to_space import SpaceToDepth as SpaceToDepthOp
from engine.ops.depth_to_space import _Blocks as BlocksOp
from engine.ops.einsum import ELLIPSIS
from engine.ops.einsum import Einsum as EinsumOp
from engine.ops.tile import Tile as TileOp
from engine.ops.topk import TopK as TopKOp

ArgOpT = TypeVar("ArgOpT", bound=ArgReduceOp)
BlocksOpT = TypeVar("BlocksOpT", bound=BlocksOp)


def _axis(axis: int, x: torch.Tensor) -> int:
    """``axis`` of a rank-1+ tensor, normalized; out-of-range axes go to the numpy op, which reports them."""
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise Fallback
    return axis % x.ndim


def host_indices(index: torch.Tensor) -> np.ndarray:
    return index.to(torch.int64).cpu().numpy()


class _ArgReduce(TorchKernel[ArgOpT]):
    def run(self, x: Any) -> np.ndarray:
        floats(x)
        op = self.op
        axis = _axis(op.axis, x)
        n = int(x.shape[axis])
        if n == 0:
            raise Fallback
        best = (torch.amax if op.pick == "max" else torch.amin)(x, dim=axis, keepdim=True)
        # amax/amin return NaN where the axis holds one; numpy's argmax/argmin then pick a NaN
        hit = (x == best) | (torch.isnan(x) & torch.isnan(best))
        shape = [1] * x.ndim
        shape[axis] = n
        line = torch.arange(n, device=x.device, dtype=torch.int32 if n < 2**31 else torch.int64).view(shape)
        if op.select_last:
            index = torch.where(hit, line, -1).amax(dim=axis, keepdim=op.keepdims)
        else:
            index = torch.where(hit, line, n).amin(dim=axis, keepdim=op.keepdims)
        return host_indices(index)


class ArgMax(_ArgReduce[ArgMaxOp]):
    pass


class ArgMin(_ArgReduce[ArgMinOp]):
    pass


class TopK(TorchKernel[TopKOp]):
    def run(self, x: Any, k: Any = None) -> tuple[Any, ...]:
        """(the values, a tensor; their indices, a host array)."""
        floats(x)
        axis = _axis(self.op.axis, x)
        n = int(x.shape[axis])
        try:
            count = self.op.k(None if k is None else np.asarray(host_ints(k), np.int64), n)
        except ValueError:
            raise Fallback from None
        # stable: equal values keep their index order in either direction; NaN sorts above every number,
        # first when descending and last when ascending, as in the numpy op
        values, order = torch.sort(x, dim=axis, descending=self.op.largest, stable=True)
        if count < n:  # copies, so the full sort's memory goes
            values, order = values.narrow(axis, 0, count).clone(), order.narrow(axis, 0, count)
        return values, host_indices(order)


class Tile(TorchKernel[TileOp]):
    def run(self, x: Any, repeats: Any) -> torch.Tensor:
        floats(x)
        counts = host_ints(repeats)
        if x.ndim == 0 or len(counts) != x.ndim or any(c < 0 for c in counts):
            raise Fallback
        return x.repeat(*counts)


class Einsum(TorchKernel[EinsumOp]):
    def run(self, *inputs: Any) -> torch.Tensor:
        if any(v is None for v in inputs):
            raise Fallback
        floats(*inputs)
        op = self.op
        shapes = [tuple(int(d) for d in v.shape) for v in inputs]
        try:
            op.check(shapes)
        except ValueError:
            raise Fallback from None
        if ELLIPSIS not in op.output and any(
                ELLIPSIS in term and len(shape) > len(term) - len(ELLIPSIS) for term, shape in zip(op.terms, shapes)):
            raise Fallback  # numpy refuses to drop broadcast dims the output leaves out; torch would sum them
        dtype = max(inputs, key=lambda v: v.numel()).dtype  # the first of the largest, as the numpy op
        return torch.einsum(op.equation, *[v.to(dtype) for v in inputs])


class _Blocks(TorchKernel[BlocksOpT]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        try:
            view, out_shape = self.op.plan(stand_in(x))
        except ValueError:
            raise Fallback from None
        if self.op.mode == "CRD":
            return self.crd(x)
        return x.reshape(view).permute(self.op.perm).reshape(out_shape)

    def crd(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DepthToSpace(_Blocks[DepthToSpaceOp]):
    def crd(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(x, self.op.blocksize)  # CRD is pixel_shuffle's channel order


class SpaceToDepth(_Blocks[SpaceToDepthOp]):
    def crd(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.op.blocksize)
