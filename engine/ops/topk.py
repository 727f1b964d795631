"""TopK: the ``k`` largest (or smallest) entries along ``axis`` and their int64 indices.

``k`` is the second input (a one-element int64 tensor, opset 10+) or the
``k`` attribute (opset 1). ``axis`` defaults to -1; ``largest`` (default 1)
and ``sorted`` (default 1) came in opset 11. Results are always sorted
(ONNX leaves the order free when ``sorted`` is 0). Equal values keep their
order along the axis, so the lower index comes first and wins a place at
the cut, as ONNX specifies. NaN sorts above every number.
"""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, as_int_list, normalize_axis


class TopK(Op):
    op_type = "TopK"
    min_inputs = 1
    max_inputs = 2

    def setup(self, node: Node) -> None:
        self.axis = node.int_attr("axis", -1)
        self.largest = bool(node.int_attr("largest", 1))
        self.attr_k = node.int_attr("k")

    def k(self, k: Array | None, dim: int) -> int:
        """The checked ``k`` for an axis of length ``dim``."""
        if k is not None:
            values = as_int_list(k)
            if len(values) != 1:
                raise ValueError(f"k must hold one value, got {len(values)}")
            count = values[0]
        elif self.attr_k is not None:
            count = self.attr_k
        else:
            raise ValueError("k is required (as the second input, or the attribute before opset 10)")
        if not 0 <= count <= dim:
            raise ValueError(f"k={count} is outside 0..{dim}, the length of the axis")
        return count

    def run(self, x: Array, k: Array | None = None) -> tuple[Array, Array]:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("TopK needs an input of rank 1 or more")
        axis = normalize_axis(self.axis, x.ndim)
        n = x.shape[axis]
        count = self.k(k, n)
        order = self.order(x, axis, n)
        indices = np.take(order, np.arange(count), axis=axis)  # [..., k, ...]
        return np.take_along_axis(x, indices, axis=axis), indices.astype(np.int64, copy=False)

    def order(self, x: Array, axis: int, n: int) -> Array:
        """Indices along ``axis`` that sort ``x`` best first, equal values in index order."""
        if not self.largest:
            return np.argsort(x, axis=axis, kind="stable")
        # Descending without negating (unsigned ints, NaN): a stable ascending sort of the reversed axis
        # puts equal values in descending index order; reversing that sort gives ascending index order.
        ascending = (n - 1) - np.argsort(np.flip(x, axis), axis=axis, kind="stable")
        return np.flip(ascending, axis)
