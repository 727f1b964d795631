"""Activation functions: Relu, LeakyRelu, PRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Elu.

All keep the input dtype; attribute constants are cast to it once per call so
float32 stays float32.
"""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op


class Relu(Op):
    op_type = "Relu"

    def run(self, x: Array) -> Array:
        return np.maximum(x, x.dtype.type(0))


class LeakyRelu(Op):
    op_type = "LeakyRelu"

    def setup(self, node: Node) -> None:
        self.alpha = float(self.attr("alpha", 0.01))

    def run(self, x: Array) -> Array:
        return np.where(x < 0, x * x.dtype.type(self.alpha), x)


class PRelu(Op):
    """``x`` where positive, ``slope * x`` elsewhere; ``slope`` broadcasts to ``x``'s shape."""

    op_type = "PRelu"
    min_inputs = 2
    max_inputs = 2

    def run(self, x: Array, slope: Array) -> Array:
        slope = np.asarray(slope).astype(x.dtype, copy=False)
        if slope.ndim > x.ndim or any(s not in (1, d) for s, d in zip(slope.shape[::-1], x.shape[::-1])):
            raise ValueError(f"slope of shape {list(slope.shape)} does not broadcast to the input's shape")
        return np.where(x < 0, x * slope, x)


class Sigmoid(Op):
    op_type = "Sigmoid"

    def run(self, x: Array) -> Array:
        if x.dtype.kind != "f":
            raise TypeError(f"Sigmoid needs a floating-point input, got {x.dtype}")
        # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5: no overflow for large |x| and
        # faster in numpy than 1 / (1 + exp(-x)) (one transcendental, in-place passes).
        half = x.dtype.type(0.5)
        y = np.multiply(x, half)
        np.tanh(y, out=y)
        y *= half
        y += half
        return y


class Tanh(Op):
    op_type = "Tanh"

    def run(self, x: Array) -> Array:
        return np.tanh(x)


class HardSigmoid(Op):
    """``clip(alpha * x + beta, 0, 1)``."""

    op_type = "HardSigmoid"

    def setup(self, node: Node) -> None:
        self.alpha = float(self.attr("alpha", 0.2))
        self.beta = float(self.attr("beta", 0.5))

    def run(self, x: Array) -> Array:
        t = x.dtype.type
        y = np.multiply(x, t(self.alpha))
        y += t(self.beta)
        return np.clip(y, t(0), t(1), out=y)


class HardSwish(Op):
    """``x * clip(x / 6 + 1/2, 0, 1)``."""

    op_type = "HardSwish"

    def run(self, x: Array) -> Array:
        t = x.dtype.type
        y = np.multiply(x, t(1.0 / 6.0))
        y += t(0.5)
        np.clip(y, t(0), t(1), out=y)
        y *= x
        return y


class Elu(Op):
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere."""

    op_type = "Elu"

    def setup(self, node: Node) -> None:
        self.alpha = float(self.attr("alpha", 1.0))

    def run(self, x: Array) -> Array:
        with np.errstate(over="ignore"):
            neg = np.expm1(np.minimum(x, x.dtype.type(0)))
        neg *= x.dtype.type(self.alpha)
        return np.where(x > 0, x, neg)
