"""Activation functions: Relu, LeakyRelu, PRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Elu, Gelu.

All keep the input dtype; attribute constants are cast to it once per call so
float32 stays float32.
"""

from __future__ import annotations

import math

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op
from engine.ops.mlas import MLAS, mlas_logistic
from engine.ops.unary import ERF_SMALL, erf64, erfc_outer, tiled_float64


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
    """``1 / (1 + exp(-x))``; with ``approximation="mlas"`` (set by the compiler, see
    engine.passes.quantized_activations) the value onnxruntime's CPU kernel gives, on float32."""

    op_type = "Sigmoid"

    def setup(self, node: Node) -> None:
        self.approximation = str(node.attr("approximation", ""))
        if self.approximation not in ("", MLAS):
            raise ValueError(f"approximation {self.approximation!r}: use 'mlas' or none")

    def run(self, x: Array) -> Array:
        if x.dtype.kind != "f":
            raise TypeError(f"Sigmoid needs a floating-point input, got {x.dtype}")
        if self.approximation == MLAS and x.dtype == np.float32:
            return mlas_logistic(x)
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


GELU_APPROXIMATIONS = ("none", "tanh")


class Gelu(Op):
    """``x * Phi(x)``: ``0.5 * x * (1 + erf(x / sqrt(2)))``, or with ``approximate="tanh"``
    ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`` (opset 20).

    Computed in float64 and rounded once to the input dtype, as erf is.
    """

    op_type = "Gelu"

    def setup(self, node: Node) -> None:
        raw = self.attr("approximate", "none")
        self.approximate = raw.decode() if isinstance(raw, bytes) else str(raw)
        if self.approximate not in GELU_APPROXIMATIONS:
            raise ValueError(f"approximate must be one of {list(GELU_APPROXIMATIONS)}, got {self.approximate!r}")

    def run(self, x: Array) -> Array:
        return tiled_float64(self._tanh_form if self.approximate == "tanh" else self._erf_form, x)

    @staticmethod
    def _erf_form(v: Array) -> Array:
        z = v * math.sqrt(0.5)
        left = np.flatnonzero(z < -ERF_SMALL)
        tail = erfc_outer(-z[left])  # 1 + erf(z) there, without the cancellation (x * Phi(x) to x ~ -38)
        phi = erf64(z)
        phi += 1.0
        phi[left] = tail
        phi *= v
        phi *= 0.5
        return phi

    @staticmethod
    def _tanh_form(v: Array) -> Array:
        phi = v * v
        phi *= 0.044715
        phi += 1.0
        phi *= v
        phi *= math.sqrt(2.0 / math.pi)  # sqrt(2/pi) * (x + 0.044715 x^3)
        np.tanh(phi, out=phi)
        phi += 1.0
        phi *= v
        phi *= 0.5
        return phi
