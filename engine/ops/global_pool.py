"""GlobalAveragePool and GlobalMaxPool: reduce every spatial axis, keeping them as size 1."""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array, Op


def _spatial_axes(x: Array) -> tuple[int, ...]:
    if x.ndim < 2:
        raise ValueError(f"X must be [N, C, *spatial], got shape {list(x.shape)}")
    return tuple(range(2, x.ndim))


class GlobalAveragePool(Op):
    op_type = "GlobalAveragePool"

    def run(self, x: Array) -> Array:
        axes = _spatial_axes(x)
        if not axes:
            return x.copy()
        dtype = np.float32 if x.dtype.itemsize < 4 else x.dtype
        # [N*C, prod(spatial)] rows reduce contiguously
        flat = x.reshape(x.shape[0] * x.shape[1], -1)
        mean = flat.mean(axis=1, dtype=dtype)
        return mean.astype(x.dtype).reshape(x.shape[:2] + (1,) * len(axes))


class GlobalMaxPool(Op):
    op_type = "GlobalMaxPool"

    def run(self, x: Array) -> Array:
        axes = _spatial_axes(x)
        if not axes:
            return x.copy()
        return np.max(x, axis=axes, keepdims=True)
