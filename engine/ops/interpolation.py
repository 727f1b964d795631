"""Per-axis sampling for Resize and Upsample: source coordinates, taps and weights, and their application.

Resizing is separable: each resized axis maps output index ``y`` to a source
coordinate (``coordinate_transformation_mode``), then to a few input indices
(taps) with weights (``nearest`` 1 tap, ``linear`` 2, ``cubic`` 4, more when
antialiasing a downscale). Indices past the edge are clamped, which is ONNX's
edge padding. The arithmetic follows the ONNX reference implementation
(float64 coordinates), vectorized over all output positions of an axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.ops import threads

Array = np.ndarray

COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_half_pixel_for_nn", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MODES = ("nearest", "linear", "cubic")


@dataclass(frozen=True)
class Sampling:
    mode: str = "nearest"
    coordinate_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"
    cubic_coeff_a: float = -0.75
    exclude_outside: bool = False
    extrapolation_value: float = 0.0
    antialias: bool = False

    def check(self) -> None:
        for name, value, allowed in (("mode", self.mode, MODES),
                                     ("coordinate_transformation_mode", self.coordinate_mode, COORDINATE_MODES),
                                     ("nearest_mode", self.nearest_mode, NEAREST_MODES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def source_coords(s: Sampling, out_len: int, in_len: int, scale: float,
                  roi: tuple[float, float] | None) -> tuple[Array, Array | None]:
    """Source coordinate of every output index, and (tf_crop_and_resize only) which fall outside the input."""
    y = np.arange(out_len, dtype=np.float64)
    # As the ONNX reference defines it: scale * input, which is not the integer
    # output size when that product is fractional (onnxruntime uses the size).
    out_width = scale * in_len
    mode = s.coordinate_mode
    outside = None
    if mode == "align_corners":
        x = np.zeros(out_len) if out_width == 1 else y * (in_len - 1) / (out_width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        if out_width == 1:
            x = np.full(out_len, (end - start) * (in_len - 1) / 2)
        else:
            x = y * (end - start) * (in_len - 1) / (out_width - 1)
        x = x + start * (in_len - 1)
        outside = (x < 0) | (x > in_len - 1)
    elif mode == "pytorch_half_pixel":
        # the spec's 0 for a single output (the ONNX reference's -0.5 gives the same linear result)
        x = np.zeros(out_len) if out_width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        adjustment = out_len / out_width
        offset = in_len / 2 * (1 - adjustment)
        x = offset + (y + 0.5) / scale - 0.5
    else:  # tf_half_pixel_for_nn
        x = (y + 0.5) / scale
    return x, outside


def _cubic(dist: Array, a: float) -> Array:
    d = np.abs(dist)
    d2, d3 = d * d, d * d * d
    near = (a + 2) * d3 - (a + 3) * d2 + 1
    far = a * d3 - 5 * a * d2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def taps(s: Sampling, x: Array, in_len: int, scale: float) -> tuple[Array, Array]:
    """Input indices ``[out, n]`` (clamped into the input) and weights ``[out, n]`` for source coordinates ``x``."""
    if s.mode == "nearest":
        if s.nearest_mode == "round_prefer_floor":
            idx = np.ceil(x - 0.5)
        elif s.nearest_mode == "round_prefer_ceil":
            idx = np.floor(x + 0.5)
        elif s.nearest_mode == "floor":
            idx = np.floor(x)
        else:
            idx = np.ceil(x)
        idx = np.clip(idx, 0, in_len - 1).astype(np.intp)[:, None]
        return idx, np.ones(idx.shape)
    # The pixel to the left of x, with x in (left, left + 1]: an exact integer coordinate takes the pixel on
    # its left at weight 0. Taps sit at left + offsets, the same offsets the weights are computed for, so that
    # no rounding can pair a weight with a neighbouring pixel.
    floor = np.floor(x)
    left = np.where(x == floor, floor - 1, floor)
    ratio = (x - left)[:, None]
    aa_scale = min(scale, 1.0) if s.antialias else 1.0
    if s.mode == "linear":
        start = int(np.floor(-1 / aa_scale) + 1)
        offsets = np.arange(start, start + 2 - 2 * start, dtype=np.float64)
        weights = np.clip(1 - np.abs((offsets[None, :] - ratio) * aa_scale), 0, 1)
    else:
        start = int(np.floor(-2 / aa_scale) + 1)
        offsets = np.arange(start, 2 - start, dtype=np.float64)
        weights = _cubic((offsets[None, :] - ratio) * aa_scale, s.cubic_coeff_a)
    if s.antialias:
        weights = weights / weights.sum(axis=1, keepdims=True)
    idx = (left[:, None] + offsets[None, :]).astype(np.int64)
    if s.exclude_outside:
        weights = np.where((idx < 0) | (idx >= in_len), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, in_len - 1).astype(np.intp), weights


def integer_repeat(idx: Array, in_len: int) -> int:
    """The factor f when the one-tap ``idx`` is ``arange(out) // f`` (a plain repeat), else 0."""
    out_len = idx.shape[0]
    if idx.shape[1] != 1 or out_len % in_len:
        return 0
    f = out_len // in_len
    return f if np.array_equal(idx[:, 0], np.arange(out_len) // f) else 0


def apply_axis(x: Array, axis: int, idx: Array, weights: Array) -> Array:
    """Resample ``x`` along ``axis`` with taps ``idx``/``weights`` ``[out, n]`` (float ``x``)."""
    if idx.shape[1] == 1:
        return np.take(x, idx[:, 0], axis=axis)
    shape = (-1,) + (1,) * (x.ndim - axis - 1)
    out: Array | None = None
    for t in range(idx.shape[1]):
        w = weights[:, t]
        if not w.any():
            continue
        g = np.take(x, idx[:, t], axis=axis)
        g *= w.astype(x.dtype).reshape(shape)
        if out is None:
            out = g
        else:
            out += g
    if out is None:
        out_shape = list(x.shape)
        out_shape[axis] = idx.shape[0]
        out = np.zeros(out_shape, dtype=x.dtype)
    return out


def repeat_axes(x: Array, factors: list[int]) -> Array:
    """Nearest integer upscale by ``factors`` per axis, as a few slice copies (no gathers).

    The last axis is filled with ``f`` stride-``f`` copies; every other
    repeated axis then copies whole contiguous rows. Blocks of the leading
    axis run on the kernel thread pool.
    """
    if x.ndim >= 3 and factors[0] == factors[1] == 1:
        # N and C are not resized: merge them so a single image still splits into channel blocks
        merged = repeat_axes(np.ascontiguousarray(x).reshape(-1, *x.shape[2:]), [1, *factors[2:]])
        return merged.reshape([size * f for size, f in zip(x.shape, factors)])
    out = np.empty([size * f for size, f in zip(x.shape, factors)], dtype=x.dtype)
    lead = x.shape[0] if x.ndim > 1 else 1
    block = max(1, -(-lead // threads.num_threads()))

    def fill(start: int) -> None:
        src = x[start:start + block] if x.ndim > 1 else x
        dst = out[start * factors[0]:(start + block) * factors[0]] if x.ndim > 1 else out
        _repeat_into(src, dst, factors)

    threads.run_tiles(fill, range(0, lead, block), work=out.nbytes)
    return out


def _repeat_into(x: Array, out: Array, factors: list[int]) -> None:
    last = factors[-1]
    # stage 1: the last axis, into the first slot of every repeated outer index
    inner = out[tuple(slice(0, None, f) for f in factors[:-1])]
    for k in range(last):
        inner[..., k::last] = x
    # stage 2: copy those rows across each other repeated axis, innermost first
    for axis in range(x.ndim - 2, -1, -1):
        f = factors[axis]
        if f == 1:
            continue
        lead = tuple(slice(0, None, fa) for fa in factors[:axis])
        shape = list(out[lead].shape)
        view = out[lead].reshape(shape[:axis] + [x.shape[axis], f] + shape[axis + 1:])
        for k in range(1, f):
            view[(slice(None),) * (axis + 1) + (k,)] = view[(slice(None),) * (axis + 1) + (0,)]


def resize(x: Array, s: Sampling, out_sizes: list[int], scales: list[float],
           rois: list[tuple[float, float] | None]) -> Array:
    """Resize every axis of ``x`` to ``out_sizes`` (one separable pass per axis that changes)."""
    work_dtype = x.dtype if x.dtype.kind == "f" and x.dtype.itemsize >= 4 else np.dtype(np.float64)
    plans: list[tuple[int, Array, Array, Array | None]] = []
    for axis, (in_len, out_len) in enumerate(zip(x.shape, out_sizes)):
        roi = rois[axis]
        trivial_roi = roi is None or s.coordinate_mode != "tf_crop_and_resize" or tuple(roi) == (0.0, 1.0)
        if out_len == in_len and scales[axis] == 1.0 and trivial_roi:
            continue
        coords, outside = source_coords(s, out_len, in_len, scales[axis], roi)
        idx, weights = taps(s, coords, in_len, scales[axis])
        plans.append((axis, idx, weights, outside))
    if not plans:
        return x.copy()
    if s.mode == "nearest" and all(o is None for *_, o in plans):
        factors = [1] * x.ndim
        for axis, idx, _, _ in plans:
            factors[axis] = integer_repeat(idx, x.shape[axis])
        if all(factors):
            return repeat_axes(x, factors)
    y = x if s.mode == "nearest" else x.astype(work_dtype, copy=False)
    for axis, idx, weights, _ in plans:
        y = apply_axis(y, axis, idx, weights)
    masks = [(axis, o) for axis, _, _, o in plans if o is not None and o.any()]
    if masks:
        outside = np.zeros(y.shape, dtype=bool)
        for axis, o in masks:
            outside |= o.reshape((-1,) + (1,) * (y.ndim - axis - 1))
        y[outside] = s.extrapolation_value
    if y.dtype != x.dtype:
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            y = np.clip(np.round(y), info.min, info.max)
        y = y.astype(x.dtype)
    return y
