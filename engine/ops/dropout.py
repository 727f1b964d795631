"""Dropout: identity at inference, with an optional all-true mask output.

When the optional ``training_mode`` input is true and the ratio is above
zero, elements are dropped with probability ``ratio`` and the rest scaled by
``1 / (1 - ratio)``; the mask is drawn from numpy's legacy generator seeded
with the ``seed`` attribute, so a seeded node is reproducible.
"""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op


class Dropout(Op):
    op_type = "Dropout"
    min_inputs = 1
    max_inputs = 3

    def setup(self, node: Node) -> None:
        self.seed = node.int_attr("seed")
        self.want_mask = len(node.outputs) > 1 and bool(node.outputs[1])
        # Dropout-7..10 carried the ratio as an attribute.
        self.attr_ratio = node.float_attr("ratio", 0.5)

    def run(self, x: Array, ratio: Array | None = None, training_mode: Array | None = None
            ) -> Array | tuple[Array, Array]:
        training = training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0])
        p = self.attr_ratio if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
        if not training or p == 0.0:
            if self.want_mask:
                return x, np.ones(x.shape, dtype=bool)
            return x
        if not 0.0 <= p < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {p}")
        mask = np.random.RandomState(self.seed).uniform(0.0, 1.0, x.shape) >= p
        y = (mask * x * x.dtype.type(1.0 / (1.0 - p))).astype(x.dtype, copy=False)
        return (y, mask) if self.want_mask else y
