"""LayerNormalization (opset 17): normalize over the axes from ``axis`` on, then scale and shift.

As ONNX defines it (its function body): stage one — mean, variance and
``Normalized = (X - Mean) * InvStdDev`` — runs in the ``stash_type``
(float32, the only type ONNX and corral both have for it), whatever X's
type; ``Normalized`` is then cast back to X's type and stage two,
``Normalized * Scale + B``, runs in X's type. The optional outputs ``Mean``
and ``InvStdDev`` are float32, shaped ``X.shape[:axis] + [1] * (rank - axis)``.
"""

from __future__ import annotations

from math import prod

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, normalize_axis

STASH_FLOAT = 1  # TensorProto.FLOAT
STASH_DTYPE = np.dtype(np.float32)


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Unidirectional broadcasting: ``shape`` stretches to ``target`` without changing it."""
    return len(shape) <= len(target) and all(s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


class LayerNormalization(Op):
    op_type = "LayerNormalization"
    min_inputs = 2
    max_inputs = 3

    def setup(self, node: Node) -> None:
        self.axis = node.int_attr("axis", -1)
        self.epsilon = node.float_attr("epsilon", 1e-5)
        stash_type = node.int_attr("stash_type", STASH_FLOAT)
        if stash_type != STASH_FLOAT:
            # ONNX allows float and bfloat16 here, and corral holds no bfloat16
            raise ValueError(f"stash_type {stash_type} is not supported; corral computes stage one in float32 "
                             f"(stash_type {STASH_FLOAT})")
        self.outputs = max(1, len(node.outputs))

    def stats_shape(self, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """(the first normalized axis, the shape of Mean and InvStdDev) for an input of ``shape``."""
        axis = normalize_axis(self.axis, len(shape))
        return axis, shape[:axis] + (1,) * (len(shape) - axis)

    def run(self, x: Array, scale: Array, bias: Array | None = None) -> Array | tuple[Array, ...]:
        if x.dtype.kind != "f":
            raise TypeError(f"X must be floating-point, got {x.dtype}")
        axis, stats_shape = self.stats_shape(x.shape)
        for name, param in (("Scale", scale), ("B", bias)):
            if param is not None and not broadcasts_to(param.shape, x.shape):
                raise ValueError(f"{name} of shape {list(param.shape)} does not broadcast to X's shape {list(x.shape)}")
        rows, cols = prod(x.shape[:axis]), prod(x.shape[axis:])
        rows_x = np.asarray(x, dtype=STASH_DTYPE).reshape(rows, cols)  # [rows, cols] in the stash type
        if cols:
            # float64 sums, each statistic rounded once to float32; two passes: no E[x^2] - E[x]^2 cancellation
            mean = rows_x.mean(axis=1, keepdims=True, dtype=np.float64).astype(STASH_DTYPE)  # [rows, 1]
            centred = rows_x - mean
            var = np.square(centred).mean(axis=1, keepdims=True, dtype=np.float64).astype(STASH_DTYPE)
            inv_std = np.reciprocal(np.sqrt(var + STASH_DTYPE.type(self.epsilon)))
            centred *= inv_std
        else:  # nothing to normalize: the statistics of no values are nan
            mean = inv_std = np.full((rows, 1), np.nan, STASH_DTYPE)
            centred = rows_x.copy()
        # Normalized in X's type: a buffer of our own either way, and Scale and B broadcast to its shape
        y = centred.reshape(x.shape).astype(x.dtype, copy=False)
        y *= scale.astype(x.dtype, copy=False)
        if bias is not None:
            y += bias.astype(x.dtype, copy=False)
        stats = (mean.reshape(stats_shape), inv_std.reshape(stats_shape))
        return (y, *stats)[:self.outputs] if self.outputs > 1 else y
