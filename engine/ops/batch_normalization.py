"""BatchNormalization: per-channel affine normalization with given (inference) or batch (training) statistics."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op


class BatchNormalization(Op):
    """``Y = (X - mean) / sqrt(var + epsilon) * scale + B`` over channel axis 1.

    Inference mode folds everything into one per-channel multiply-add. With
    ``training_mode=1`` the statistics come from the batch and the op also
    returns the updated running mean and variance (ONNX opset 14+).
    """

    op_type = "BatchNormalization"
    min_inputs = 5
    max_inputs = 5
    foldable = True

    def setup(self, node: Node) -> None:
        self.epsilon = float(self.attr("epsilon", 1e-5))
        self.momentum = float(self.attr("momentum", 0.9))
        self.training = bool(int(self.attr("training_mode", 0)))

    def run(self, x: Array, scale: Array, bias: Array, mean: Array, var: Array) -> Array | tuple[Array, ...]:
        if x.ndim < 2:
            raise ValueError(f"X must be [N, C, ...], got shape {list(x.shape)}")
        dtype = np.dtype(np.float32) if x.dtype.itemsize < 4 else x.dtype
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        xf = x.astype(dtype, copy=False)
        if self.training:
            axes = (0, *range(2, x.ndim))
            batch_mean = xf.mean(axis=axes)
            batch_var = xf.var(axis=axes)
            use_mean, use_var = batch_mean, batch_var
        else:
            use_mean, use_var = mean.astype(dtype, copy=False), var.astype(dtype, copy=False)
        a = scale.astype(dtype, copy=False) / np.sqrt(use_var + dtype.type(self.epsilon))
        shift = bias.astype(dtype, copy=False) - use_mean * a
        y = np.multiply(xf, a.reshape(shape).astype(dtype, copy=False))
        y += shift.reshape(shape).astype(dtype, copy=False)
        y = y.astype(x.dtype, copy=False)
        if not self.training:
            return y
        running_mean = (mean * self.momentum + batch_mean * (1 - self.momentum)).astype(mean.dtype)
        running_var = (var * self.momentum + batch_var * (1 - self.momentum)).astype(var.dtype)
        return y, running_mean, running_var
