"""Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL2.

Axes come from the ``axes`` attribute (older opsets) or the optional second
input (ReduceSum from opset 13, the others from opset 18). No axes means all
axes, unless ``noop_with_empty_axes`` is set, in which case the input passes
through. ``keepdims`` (default 1) keeps reduced axes as size 1. Reducing an
empty axis gives the reduction's identity (0 for sums and L2, 1 for products,
the dtype's extreme for max and min).
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


def _accumulate(ufunc: np.ufunc, x: Array, axes: tuple[int, ...]) -> Array:
    """``ufunc`` reduced over ``axes`` in ``x``'s type, except float16, which accumulates in float32: rounding
    every step drifts (and a product overflows early)."""
    acc = np.float32 if x.dtype == np.float16 else x.dtype
    return np.asarray(ufunc.reduce(x, axis=axes, dtype=acc)).astype(x.dtype, copy=False)


class ReduceSum(_Reduce):
    op_type = "ReduceSum"

    def reduce(self, x: Array, axes: tuple[int, ...]) -> Array:
        return _accumulate(np.add, x, axes)


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


class ReduceMin(_Reduce):
    op_type = "ReduceMin"

    def reduce(self, x: Array, axes: tuple[int, ...]) -> Array:
        # An empty reduction yields the identity of min: +inf (or the dtype's maximum).
        if x.dtype.kind == "f":
            initial: object = np.inf
        elif x.dtype.kind == "b":
            initial = True
        else:
            initial = np.iinfo(x.dtype).max
        return np.minimum.reduce(x, axis=axes, initial=initial)


class ReduceProd(_Reduce):
    op_type = "ReduceProd"

    def reduce(self, x: Array, axes: tuple[int, ...]) -> Array:
        # Integers multiply in their own type, wrapping as ONNX's reference does.
        return _accumulate(np.multiply, x, axes)


class ReduceL2(_Reduce):
    op_type = "ReduceL2"

    def reduce(self, x: Array, axes: tuple[int, ...]) -> Array:
        if x.dtype.kind == "f":
            # float16 squares overflow above 256: square and sum those in float32.
            acc = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
        else:
            # Integer norms are computed in float64 and truncated back, as for ReduceMean.
            acc = np.dtype(np.float64)
        squares = np.square(x, dtype=acc)
        return np.sqrt(np.add.reduce(squares, axis=axes)).astype(x.dtype, copy=False)
