"""ArgMax and ArgMin: the int64 index of the largest / smallest entry along ``axis``.

``axis`` (default 0) may be negative (opset 11+); ``keepdims`` (default 1)
keeps the reduced axis as size 1. Ties go to the first index, or the last
with ``select_last_index`` (opset 12+). NaN counts as the extreme, as in
numpy (the first NaN wins, or the last with ``select_last_index``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, normalize_axis


class _ArgReduce(Op):
    pick: ClassVar[str]  # "max" or "min"

    def setup(self, node: Node) -> None:
        self.axis = node.int_attr("axis", 0)
        self.keepdims = bool(node.int_attr("keepdims", 1))
        self.select_last = bool(node.int_attr("select_last_index", 0))

    def run(self, x: Array) -> Array:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"{self.op_type} needs an input of rank 1 or more")
        axis = normalize_axis(self.axis, x.ndim)
        n = x.shape[axis]
        if n == 0:
            raise ValueError(f"axis {self.axis} is empty: there is no {self.pick} to index")
        find = np.argmax if self.pick == "max" else np.argmin
        if self.select_last:
            # numpy picks the first of equal entries: search the reversed axis and map back.
            index = (n - 1) - find(np.flip(x, axis), axis=axis)
        else:
            index = find(x, axis=axis)
        index = np.asarray(index, dtype=np.int64)
        return np.expand_dims(index, axis) if self.keepdims else index


class ArgMax(_ArgReduce):
    op_type = "ArgMax"
    pick = "max"


class ArgMin(_ArgReduce):
    op_type = "ArgMin"
    pick = "min"
