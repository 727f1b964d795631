"""One-input elementwise math: Sqrt, Neg, Exp, Log, Abs, Reciprocal, Floor, Ceil, Round, Erf.

Results keep the input dtype; IEEE special values (sqrt(-1) = nan,
log(0) = -inf, 1/0 = inf) are returned without numpy warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from engine.ops import threads
from engine.ops.base import Array, Op

# W. J. Cody's rational Chebyshev approximations of erf and erfc ("Rational Chebyshev approximations for
# the error function", Math. Comp. 23, 1969, pp. 631-638; the coefficients of netlib's specfun CALERF).
# In float64 they are good to ~1e-16 relative, so float32 and float16 results are rounded once.
ERF_SMALL = 0.46875  # |x| up to here: erf(x) = x * P(x^2) / Q(x^2)
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
          1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
# up to |x| = 4: erfc(|x|) = exp(-x^2) * P(|x|) / Q(|x|)
_ERFC_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
           8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
           2.15311535474403846e-8)
_ERFC_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
           3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
# beyond: erfc(|x|) = exp(-x^2) / |x| * (1/sqrt(pi) + P(1/x^2) / (x^2 Q(1/x^2)))
_ERFC_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
           6.58749161529837803e-4, 1.63153871373020978e-2)
_ERFC_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
           2.33520497626869185e-3)
_INV_SQRT_PI = 0.56418958354775628695


def _ratio(t: Array, num: tuple[float, ...], den: tuple[float, ...]) -> Array:
    """Cody's P(t) / Q(t): ``num[-1]`` is the leading numerator term, Q is monic of degree len(den)."""
    n = len(den)
    p = num[-1] * t
    q = t.copy()
    for i in range(n - 1):
        p += num[i]
        p *= t
        q += den[i]
        q *= t
    p += num[n - 1]
    q += den[n - 1]
    return p / q


def erfc_outer(a: Array) -> Array:
    """erfc of a float64 array whose values all exceed 0.46875 (or are inf): no cancellation in 1 - erf."""
    erfc = np.empty_like(a)
    mid = a <= 4.0
    erfc[mid] = _ratio(a[mid], _ERFC_C, _ERFC_D)
    t = a[~mid]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv_sq = 1.0 / (t * t)  # 0 for huge and infinite |x|
        erfc[~mid] = (_INV_SQRT_PI - inv_sq * _ratio(inv_sq, _ERFC_P, _ERFC_Q)) / t
        erfc *= np.exp(-(a * a))  # underflows to 0 past |x| ~ 27, as erfc does
    return erfc


def erf64(v: Array) -> Array:
    """The error function of a 1-D float64 array, written into that array; nan stays nan."""
    y = np.abs(v)
    small = np.flatnonzero(y <= ERF_SMALL)
    large = np.flatnonzero(y > ERF_SMALL)  # nan is in neither: v keeps it
    if small.size:
        s = v[small]
        v[small] = s * _ratio(s * s, _ERF_A, _ERF_B)
    if large.size:
        v[large] = np.copysign(1.0 - erfc_outer(y[large]), v[large])
    return v


# Elements per tile of the float64 kernels: their dozen temporaries stay in the caches.
FLOAT64_TILE = 1 << 15


def tiled_float64(fn: Callable[[Array], Array], x: Array) -> Array:
    """``fn`` (float64 in, float64 out, 1-D, may write into its argument) over ``x`` tile by tile, in
    parallel, each result rounded once to ``x``'s floating-point dtype."""
    if x.dtype.kind != "f":
        raise TypeError(f"needs a floating-point input, got {x.dtype}")
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape, x.dtype)

    def tile(start: int) -> None:
        stop = start + FLOAT64_TILE
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # IEEE results (inf, nan), no warnings
            out[start:stop] = fn(flat[start:stop].astype(np.float64))

    # work: a couple of dozen float64 passes per element, like that many bytes moved per byte
    threads.run_tiles(tile, range(0, flat.size, FLOAT64_TILE), work=flat.size * 8 * 16)
    return out.reshape(x.shape)


def erf(x: Array) -> Array:
    """The error function of a floating-point array, in its dtype."""
    return tiled_float64(erf64, x)


class _Unary(Op):
    ufunc: ClassVar[Callable[..., Array]]

    def run(self, x: Array) -> Array:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return type(self).ufunc(x)


class Sqrt(_Unary):
    op_type = "Sqrt"
    ufunc = np.sqrt


class Neg(_Unary):
    op_type = "Neg"
    ufunc = np.negative


class Exp(_Unary):
    op_type = "Exp"
    ufunc = np.exp


class Log(_Unary):
    op_type = "Log"
    ufunc = np.log


class Abs(_Unary):
    op_type = "Abs"
    ufunc = np.abs


class Reciprocal(_Unary):
    op_type = "Reciprocal"
    ufunc = np.reciprocal


class Floor(_Unary):
    op_type = "Floor"
    ufunc = np.floor


class Ceil(_Unary):
    op_type = "Ceil"
    ufunc = np.ceil


class Round(Op):
    """Nearest integer, halves to the even one (``rint``); +-0, nan and inf are returned as they are."""

    op_type = "Round"

    def run(self, x: Array) -> Array:
        if x.dtype.kind != "f":
            raise TypeError(f"Round needs a floating-point input, got {x.dtype}")
        return np.rint(x)


class Erf(Op):
    """Computed in float64 (Cody's approximations) and rounded once: float32 results are correctly rounded."""

    op_type = "Erf"

    def run(self, x: Array) -> Array:
        return erf(x)
