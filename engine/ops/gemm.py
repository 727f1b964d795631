"""Gemm: ``Y = alpha * A' @ B' + beta * C`` with optional transposes and optional C."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op


class Gemm(Op):
    op_type = "Gemm"
    min_inputs = 2
    max_inputs = 3

    def setup(self, node: Node) -> None:
        self.alpha = node.float_attr("alpha", 1.0)
        self.beta = node.float_attr("beta", 1.0)
        self.trans_a = bool(node.attrs.get("transA", 0))
        self.trans_b = bool(node.attrs.get("transB", 0))

    def run(self, a: Array, b: Array, c: Array | None = None) -> Array:
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError("A and B must be 2-D")
        a = a.T if self.trans_a else a  # [M, K]
        b = b.T if self.trans_b else b  # [K, N]
        if b.dtype != a.dtype:
            b = b.astype(a.dtype)
        y = np.matmul(a, b)  # [M, N], a fresh buffer we may update in place
        dtype = y.dtype
        floating = dtype.kind == "f"
        if self.alpha != 1.0:
            if floating:
                y *= dtype.type(self.alpha)
            else:
                y = (y * self.alpha).astype(dtype)
        if c is not None and self.beta != 0.0:
            c = np.asarray(c)
            if c.ndim > 2 or any(cd not in (1, yd) for cd, yd in zip(c.shape[::-1], y.shape[::-1])):
                raise ValueError(f"C of shape {list(c.shape)} does not broadcast to [M, N] = {list(y.shape)}")
            if self.beta == 1.0:
                y += c.astype(dtype, copy=False)
            elif floating:
                y += dtype.type(self.beta) * c.astype(dtype, copy=False)
            else:
                y = (y + self.beta * c).astype(dtype)
        return y
