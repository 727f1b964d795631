"""Split along ``axis`` into the node's outputs.

Sizes come from the ``split`` input (opset 13+) or attribute (older); else
``num_outputs`` (opset 18) gives ceil(dim / n)-sized chunks with a smaller
last one; else the axis is divided equally among the outputs. Outputs are
views of the input.
"""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, as_int_list, normalize_axis


class Split(Op):
    op_type = "Split"
    min_inputs = 1
    max_inputs = 2

    def setup(self, node: Node) -> None:
        self.axis = node.int_attr("axis", 0)
        self.attr_split = as_int_list(node.attrs.get("split"))
        self.num_outputs = node.int_attr("num_outputs")
        self.outputs = len(node.outputs)
        if self.num_outputs is not None and self.num_outputs != self.outputs:
            raise ValueError(f"num_outputs is {self.num_outputs} but the node has {self.outputs} outputs")

    def run(self, x: Array, split: Array | None = None) -> tuple[Array, ...]:
        axis = normalize_axis(self.axis, x.ndim)
        dim = x.shape[axis]
        sizes = as_int_list(split) if split is not None else self.attr_split
        if sizes is None:
            n = self.outputs
            if self.num_outputs is not None:
                chunk = -(-dim // n)
                sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
                if sizes[-1] < 0:
                    raise ValueError(f"cannot split {dim} into {n} chunks of at most {chunk}")
            else:
                if dim % n:
                    raise ValueError(f"axis of length {dim} does not divide into {n} equal outputs")
                sizes = [dim // n] * n
        if len(sizes) != self.outputs:
            raise ValueError(f"{len(sizes)} split sizes for {self.outputs} outputs")
        if any(s < 0 for s in sizes) or sum(sizes) != dim:
            raise ValueError(f"split sizes {sizes} do not add up to the axis length {dim}")
        return tuple(np.split(x, np.cumsum(sizes[:-1]), axis=axis))
