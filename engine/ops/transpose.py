"""Transpose by ``perm`` (default: reverse the axes). Returns a view; later ops copy if they need contiguity."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, as_int_list


class Transpose(Op):
    op_type = "Transpose"

    def setup(self, node: Node) -> None:
        self.perm = as_int_list(node.attrs.get("perm"))

    def run(self, x: Array) -> Array:
        if self.perm is None:
            return np.transpose(x)
        if sorted(self.perm) != list(range(x.ndim)):
            raise ValueError(f"perm {self.perm} is not a permutation of the input's {x.ndim} axes")
        return np.transpose(x, self.perm)
