"""FusedMeanVarianceNorm: the compiler's kernel for instance-norm-shaped subgraphs.

Computes, over ``axes`` (keepdims)::

    y = activation((x - mean(x)) / sqrt(mean((x - mean(x))**2) + epsilon) * scale + bias)

which exporters spell as ten elementwise/reduction nodes (ReduceMean, Sub,
Pow, ReduceMean, Add, Sqrt, Div, Mul, Mul, Add), each a full pass over the
tensor with its own allocation. Here it is one subtraction into a fresh
buffer, one BLAS dot product per row for the variance and in-place scale,
shift and activation on cache-sized chunks of that buffer, with blocks of
rows spread over the engine's thread pool. ``scale`` and ``bias`` broadcast against ``x``
as the Mul/Add they replace did (a conditional instance norm passes
per-item, per-channel ``[N, C, 1, 1]`` values).

Internal to corral (``engine.op_table.INTERNAL_OPS``): created by
``engine.passes.norm_fusion``, never read from a model file.
"""

from __future__ import annotations

import math

import numpy as np

from engine.graph import Node
from engine.ops import threads
from engine.ops.activations import Sigmoid
from engine.ops.base import Array, Op, normalize_axis

# Elements one tile works on at a time (512 KiB of float32): small enough that
# the scale/shift/activation passes over a chunk stay in the core's cache.
TILE_ELEMENTS = 1 << 17

ACTIVATIONS = ("", "Relu", "Sigmoid")


class FusedMeanVarianceNorm(Op):
    op_type = "FusedMeanVarianceNorm"
    min_inputs = 1
    max_inputs = 3
    foldable = False

    def setup(self, node: Node) -> None:
        axes = node.ints_attr("axes")
        if axes is None:
            raise ValueError("the axes attribute is required")
        self.axes = axes
        self.epsilon = node.float_attr("epsilon", 1e-5)
        self.activation = str(node.attrs.get("activation", ""))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {self.activation!r}")
        self.sigmoid: Sigmoid | None = None
        if self.activation == "Sigmoid":
            # the very kernel an unfused Sigmoid node would run, so results match it
            self.sigmoid = Sigmoid(Node("Sigmoid", ["x"], ["y"], name=f"{node.label}_sigmoid"))

    def run(self, x: Array, scale: Array | None = None, bias: Array | None = None) -> Array:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"needs a floating-point input, got {x.dtype}")
        rank = x.ndim
        axes = sorted({normalize_axis(a, rank) for a in self.axes})
        stat_shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
        scale = None if scale is None else np.asarray(scale).astype(x.dtype, copy=False)
        bias = None if bias is None else np.asarray(bias).astype(x.dtype, copy=False)
        per_row = all(v is None or np.broadcast_shapes(stat_shape, v.shape) == stat_shape for v in (scale, bias))
        if axes == list(range(rank - len(axes), rank)) and per_row and x.size:
            y = self._rows(x, stat_shape, scale, bias)
        else:
            y = self._general(x, tuple(axes), scale, bias)
        if self.sigmoid is not None:
            y = self.sigmoid.run(y)
        return y

    def _rows(self, x: Array, stat_shape: tuple[int, ...], scale: Array | None, bias: Array | None) -> Array:
        """Reduced axes trail and scale/bias are per row: rows of ``[R, L]`` (R = N*C, L = H*W in NCHW).

        Row blocks are independent tiles on the engine's thread pool; each
        makes one pass for the mean, one for ``x - mean`` into the output,
        one BLAS dot per row for the variance, then scales, shifts and
        activates cache-sized column chunks in place.
        """
        count = math.prod(stat_shape)                          # R
        length = x.size // count                                # L
        rows = np.ascontiguousarray(x).reshape(count, length)  # [R, L]
        out = np.empty_like(rows)                               # [R, L]
        dtype = x.dtype.type
        eps, inv_length, zero = dtype(self.epsilon), dtype(1.0 / length), dtype(0)
        scale_rows = None if scale is None else np.broadcast_to(scale, stat_shape).reshape(count)  # [R]
        bias_rows = None if bias is None else np.broadcast_to(bias, stat_shape).reshape(count)     # [R]
        relu = self.activation == "Relu"
        block = max(1, TILE_ELEMENTS // length)                # rows per tile
        chunk = max(1, TILE_ELEMENTS // block)                 # columns per in-place chunk

        def tile(first: int) -> None:
            last = min(first + block, count)
            xb, ob = rows[first:last], out[first:last]                         # [b, L]
            np.subtract(xb, xb.mean(axis=1, keepdims=True), out=ob)
            # Row dot products through BLAS: blocked accumulation keeps float32
            # sums accurate (einsum's running sums drift over 10^5 terms).
            var = np.matmul(ob[:, None, :], ob[:, :, None]).reshape(-1) * inv_length  # [b]
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.reciprocal(np.sqrt(var + eps))                   # [b]
            if scale_rows is not None:
                factor *= scale_rows[first:last]
            factor = factor[:, None]
            shift = None if bias_rows is None else bias_rows[first:last, None]
            for start in range(0, length, chunk):
                part = ob[:, start:start + chunk]
                part *= factor
                if shift is not None:
                    part += shift
                if relu:
                    np.maximum(part, zero, out=part)

        threads.run_tiles(tile, range(0, count, block))
        return out.reshape(x.shape)

    def _general(self, x: Array, axes: tuple[int, ...], scale: Array | None, bias: Array | None) -> Array:
        """Any axes and any broadcastable scale/bias, as whole-tensor numpy passes."""
        mean = x.mean(axis=axes, keepdims=True)
        d = x - mean
        var = np.square(d).mean(axis=axes, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.reciprocal(np.sqrt(var + x.dtype.type(self.epsilon)))
        if scale is not None:
            factor = factor * scale
        d = _apply(np.multiply, d, factor)
        if bias is not None:
            d = _apply(np.add, d, bias)
        if self.activation == "Relu":
            np.maximum(d, x.dtype.type(0), out=d)
        return d


def _apply(ufunc: np.ufunc, buffer: Array, operand: Array) -> Array:
    """``ufunc(buffer, operand)``, in place when the result keeps ``buffer``'s shape."""
    if np.broadcast_shapes(buffer.shape, operand.shape) == buffer.shape:
        return ufunc(buffer, operand, out=buffer)
    return ufunc(buffer, operand)
