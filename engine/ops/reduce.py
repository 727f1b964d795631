"""Reductions: ReduceMean, ReduceSum, ReduceMax.

Axes come from the ``axes`` attribute (older opsets) or the optional second
input (ReduceSum from opset 13, the others from opset 18). No axes means all
axes, unless ``noop_with_empty_axes`` is set, in which case the input passes
through. ``keepdims`` (default 1) keeps reduced axes as size 1.
"""

from __future__ import annotations

import math

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, AxesOp


class _Reduce(AxesOp):
    def setup(self, node: Node) -> None:
        super().setup(node)
        self.keepdims = bool(node.attrs.get("keepdims", 1))
        self.noop_empty = bool(node.attrs.get("noop_with_empty_axes", 0))

    def run(self, x: Array, axes: Array | None = None) -> Array:
        x = np.asarray(x)
        axis_list = self.axes(axes)
        if not axis_list:
            if self.noop_empty:
                return x
            axis_list = list(range(x.ndim))
        rank = x.ndim
        norm = set()
        for a in axis_list:
            if not -rank <= a < rank:
                raise ValueError(f"axis {a} out of range for rank {rank}")
            norm.add(a % rank)
        picked = sorted(norm)
        out_shape = tuple(1 if i in norm else d for i, d in enumerate(x.shape)) if self.keepdims \
            else tuple(d for i, d in enumerate(x.shape) if i not in norm)
        # A run of adjacent axes in a C-contiguous array is one contiguous axis:
        # reduce it as such (numpy then sums pairwise along memory, faster and
        # more accurate than nested strided loops). [N, C, H, W] over (2, 3)
        # becomes [N, C, H*W] over axis 2.
        if len(picked) > 1 and picked == list(range(picked[0], picked[-1] + 1)) and x.flags.c_contiguous:
            first, last = picked[0], picked[-1]
            x = x.reshape(x.shape[:first] + (math.prod(x.shape[first:last + 1]),) + x.shape[last + 1:])
            picked = [first]
        return np.asarray(self.reduce(x, tuple(picked))).reshape(out_shape)

    def reduce(self, x: Array, axes: tuple[int, ...]) -> Array:
        raise NotImplementedError


class ReduceSum(_Reduce):
    op_type = "ReduceSum"

    def reduce(self, x: Array, axes: tuple[int, ...]) -> Array:
        acc = np.float32 if x.dtype == np.float16 else x.dtype
        return np.asarray(np.add.reduce(x, axis=axes, dtype=acc)).astype(x.dtype, copy=False)


class ReduceMean(_Reduce):
    op_type = "ReduceMean"

    def reduce(self, x: Array, axes: tuple[int, ...]) -> Array:
        count = math.prod(x.shape[a] for a in axes)
        if x.dtype.kind == "f":
            # float16 sums drift badly over large images; accumulate those in float32.
            acc = np.float32 if x.dtype == np.float16 else x.dtype
            total = np.asarray(np.add.reduce(x, axis=axes, dtype=acc))
            with np.errstate(invalid="ignore", divide="ignore"):
                total /= total.dtype.type(count)  # count 0 gives nan, the mean of nothing
            return total.astype(x.dtype, copy=False)
        # Integer means are computed in float64 and truncated back, as ONNX runtimes do.
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.add.reduce(x, axis=axes, dtype=np.float64) / count).astype(x.dtype)


class ReduceMax(_Reduce):
    op_type = "ReduceMax"

    def reduce(self, x: Array, axes: tuple[int, ...]) -> Array:
        # An empty reduction yields the identity of max: -inf (or the dtype's minimum).
        if x.dtype.kind == "f":
            initial: object = -np.inf
        elif x.dtype.kind == "b":
            initial = False
        else:
            initial = np.iinfo(x.dtype).min
        return np.maximum.reduce(x, axis=axes, initial=initial)
