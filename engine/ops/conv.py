"""Conv: N-D convolution (1-D, 2-D, 3-D, ...) with groups, strides, dilations, padding and an optional bias."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op
from engine.ops.conv_kernels import ACTIVATIONS, ConvPlan, conv, make_plan, pad_input
from engine.ops.spatial import WindowAttrs, parse_group


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a conv computes in: float16 goes through float32 (numpy has no fast half GEMM)."""
    if dtype.kind != "f":
        raise TypeError(f"needs a floating-point input, got {dtype}")
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


class Conv(Op):
    """ONNX Conv, computed by tiled im2col + BLAS GEMM (see :mod:`engine.ops.conv_kernels`).

    Inputs ``X [N, C, *S]``, ``W [M, C/group, *k]``, optional ``B [M]``.

    corral-internal fused attribute: ``activation`` (``"Relu"`` or
    ``"Sigmoid"``), set by the compiler when it fuses a following activation
    node; it is applied in place on each output band right after its GEMM.
    It is not an ONNX attribute and never appears in imported models.

    The packed weight layout is cached on the op and reused while the same
    weight array comes in again; the compiler may call :meth:`prepack` with the
    constant weight up front.
    """

    op_type = "Conv"
    min_inputs = 2
    max_inputs = 3

    def setup(self, node: Node) -> None:
        self.window = WindowAttrs.parse(node)
        self.group = parse_group(node)
        activation = self.attr("activation")
        if isinstance(activation, bytes):
            activation = activation.decode()
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"fused activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.activation: str | None = activation
        self._plan: ConvPlan | None = None

    def prepack(self, w: Array, dtype: np.dtype | type = np.float32) -> None:
        """Pack the constant weight ``w`` now so the first run does not have to."""
        self._get_plan(np.asarray(w), np.dtype(dtype))

    def _get_plan(self, w: Array, dtype: np.dtype) -> ConvPlan:
        plan = self._plan
        if plan is None or plan.packed_from is not w or plan.weights.dtype != dtype:
            rank = w.ndim - 2
            window = self.window.per_axis(rank, w.shape[2:])
            if tuple(w.shape[2:]) != window.kernel:
                raise ValueError(f"kernel_shape {list(window.kernel)} disagrees with the weight's "
                                 f"spatial shape {list(w.shape[2:])}")
            if w.shape[0] % self.group:
                raise ValueError(f"{w.shape[0]} output channels do not split into {self.group} groups")
            plan = make_plan(w, self.group, window.strides, window.dilations, dtype)
            self._plan = plan
        return plan

    def run(self, x: Array, w: Array, b: Array | None = None) -> Array:
        if x.ndim < 3 or w.ndim != x.ndim:
            raise ValueError(f"X [N, C, *spatial] and W [M, C/group, *kernel] must have the same rank >= 3, "
                             f"got X {list(x.shape)} and W {list(w.shape)}")
        if x.shape[1] != w.shape[1] * self.group:
            raise ValueError(f"X has {x.shape[1]} channels; W expects {w.shape[1]} per group x {self.group} groups")
        if b is not None and b.size != w.shape[0]:
            raise ValueError(f"B has {b.size} values for {w.shape[0]} output channels")
        dtype = compute_dtype(x.dtype)
        plan = self._get_plan(w, dtype)
        window = self.window.per_axis(x.ndim - 2, w.shape[2:])
        pads, _ = window.resolve(x.shape[2:])
        xp = pad_input(np.ascontiguousarray(x, dtype=dtype), pads)
        y = conv(xp, plan, b, self.activation)
        return y if y.dtype == x.dtype else y.astype(x.dtype)
