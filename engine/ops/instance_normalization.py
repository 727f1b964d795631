"""InstanceNormalization: normalize each (item, channel) plane, then a per-channel affine map."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops import threads
from engine.ops.base import Array, Op

# Planes per tile: enough bytes that the second read of a tile hits cache.
TILE_BYTES = 1 << 21


class InstanceNormalization(Op):
    """``Y = (X - mean) / sqrt(var + epsilon) * scale + B``, statistics per (n, c) over the spatial axes.

    Works tile by tile over blocks of planes (in parallel): the mean is one
    read of the block from memory, the variance and the affine map re-read it
    from cache, and the output is written once.
    """

    op_type = "InstanceNormalization"
    min_inputs = 3
    max_inputs = 3

    def setup(self, node: Node) -> None:
        self.epsilon = float(self.attr("epsilon", 1e-5))

    def run(self, x: Array, scale: Array, bias: Array) -> Array:
        if x.ndim < 3:
            raise ValueError(f"X must be [N, C, *spatial], got shape {list(x.shape)}")
        n, c = x.shape[:2]
        if scale.size != c or bias.size != c:
            raise ValueError(f"scale and B need {c} values, got {scale.size} and {bias.size}")
        dtype = np.dtype(np.float32) if x.dtype.itemsize < 4 else x.dtype
        planes = np.ascontiguousarray(x, dtype=dtype).reshape(n * c, -1)  # [N*C, HW]
        count = planes.shape[1]
        y = np.empty_like(planes)
        gamma = np.tile(scale.astype(dtype).reshape(-1), n)
        beta = np.tile(bias.astype(dtype).reshape(-1), n)
        eps = dtype.type(self.epsilon)
        block = max(1, min(planes.shape[0], TILE_BYTES // max(count * planes.itemsize, 1)))
        if -(-planes.shape[0] // block) < threads.num_threads():
            block = max(1, -(-planes.shape[0] // threads.num_threads()))

        def tile(p0: int) -> None:
            p1 = min(p0 + block, planes.shape[0])
            src, out = planes[p0:p1], y[p0:p1]
            mean = src.mean(axis=1, keepdims=True)
            np.subtract(src, mean, out=out)
            var = np.einsum("ij,ij->i", out, out)[:, None] / dtype.type(count)
            a = gamma[p0:p1, None] / np.sqrt(var + eps)
            out *= a
            out += beta[p0:p1, None]

        threads.run_tiles(tile, range(0, planes.shape[0], block), work=planes.nbytes)
        return y.reshape(x.shape).astype(x.dtype, copy=False)
