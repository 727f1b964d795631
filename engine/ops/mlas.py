"""onnxruntime's CPU activations (MLAS): sigmoid and tanh as the rational approximations its kernels evaluate.

Where a model's results depend on the last bit of an activation, as in
onnxruntime's dynamically quantized models (each DynamicQuantizeLinear
turns a one-ulp difference into a whole code step), corral evaluates these
instead of the exact functions, so it computes what the model was made for.
"""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array

F32 = np.float32
MLAS = "mlas"  # the value of a Sigmoid node's ``approximation`` attribute that asks for these

# MLAS's coefficients (numerator, then denominator; highest power first): logistic.cpp and tanh.cpp
LOGISTIC_P = (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03,
              2.48287947061529e-01)
LOGISTIC_Q = (6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03,
              1.16817656904453e-01, 9.93151921023180e-01)
TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
          1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def _horner(x2: Array, coefficients: tuple[float, ...]) -> Array:
    """The polynomial in ``x2`` (float32) with every step a fused multiply-add rounded once to float32."""
    wide = x2.astype(np.float64)
    acc = np.full(x2.shape, F32(coefficients[0]), F32)
    step = np.empty_like(wide)
    for c in coefficients[1:]:
        # float32 * float32 is exact in float64, so only the sum rounds (then once more, to float32)
        np.multiply(acc, wide, out=step)
        step += np.float64(F32(c))
        np.copyto(acc, step, casting="same_kind")
    return acc


def mlas_logistic(x: Array) -> Array:
    """MLAS's sigmoid: a rational approximation on [-18, 18], no lower than 0."""
    v = np.clip(x.astype(F32, copy=False), F32(-18), F32(18))
    v2 = v * v
    p = _horner(v2, LOGISTIC_P) * v
    q = _horner(v2, LOGISTIC_Q)
    # clamped below only: onnxruntime's kernel gives 1 + 2**-23 near x = 17.8, and corral gives what it gives
    return np.maximum(p / q + F32(0.5), F32(0))


def mlas_tanh(x: Array) -> Array:
    """MLAS's tanh: a rational approximation on [-9, 9]."""
    v = np.clip(x.astype(F32, copy=False), F32(-9), F32(9))
    v2 = v * v
    return (_horner(v2, TANH_P) * v) / _horner(v2, TANH_Q)
