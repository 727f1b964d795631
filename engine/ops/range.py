"""Range: ``start, start + delta, …`` up to but excluding ``limit``; scalar inputs of one type."""

from __future__ import annotations

import math

import numpy as np

from engine.ops.base import Array, Op


class Range(Op):
    op_type = "Range"
    min_inputs = 3
    max_inputs = 3

    def run(self, start: Array, limit: Array, delta: Array) -> Array:
        dtype = np.asarray(start).dtype
        s, lim, d = (np.asarray(v).reshape(-1) for v in (start, limit, delta))
        if s.size != 1 or lim.size != 1 or d.size != 1:
            raise ValueError("start, limit and delta must be scalars")
        if d[0] == 0:
            raise ValueError("delta must not be 0")
        if dtype.kind in "iu":
            first, stop, step = int(s[0]), int(lim[0]), int(d[0])
            count = max(-((first - stop) // step), 0)  # ceil((stop - first) / step)
            return (first + np.arange(count, dtype=np.int64) * step).astype(dtype)
        first_f, stop_f, step_f = float(s[0]), float(lim[0]), float(d[0])
        count = max(math.ceil((stop_f - first_f) / step_f), 0)
        return (first_f + np.arange(count, dtype=np.float64) * step_f).astype(dtype)
