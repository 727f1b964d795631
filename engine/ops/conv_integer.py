"""ConvInteger: convolution of 8-bit codes less their zero points, accumulated as int32.

Also the integer convolution QLinearConv shares. It runs on corral's float
Conv kernels (:mod:`engine.ops.conv_kernels`): the centered codes are small
integers, so the GEMM's sums are exact (see :mod:`engine.ops.matmul_integer`
for the bound that picks float32 or float64). Padding pads the centered
input with 0, i.e. the input with its zero point, as the spec and
onnxruntime do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op
from engine.ops.conv_kernels import ConvPlan, conv, make_plan, pad_input
from engine.ops.matmul_integer import Centered, accumulator, codes, is_scalar, reach, wrap_int32, zero_point
from engine.ops.spatial import Window, WindowAttrs, parse_group


def channel_param(param: Array, m_out: int, rank: int, what: str) -> Array:
    """A per-tensor or per-output-channel parameter (``[M]``) laid out to broadcast against ``[M, ...]`` of
    the given ``rank``."""
    param = np.asarray(param)
    if is_scalar(param):
        return param.reshape(())
    if param.ndim == 1 and param.size == m_out:
        return param.reshape((m_out,) + (1,) * (rank - 1))
    raise ValueError(f"{what} of shape {list(param.shape)} is neither a scalar nor one value per output channel "
                     f"({m_out})")


class IntegerConv:
    """``conv(x - x_zp, w - w_zp)`` as int32, with the geometry of one Conv-type node.

    The centered weight and its packed GEMM layout are kept while the same
    weight array (and zero point) comes in again.
    """

    def __init__(self, node: Node) -> None:
        self.window = WindowAttrs.parse(node)
        self.group = parse_group(node)
        self.weights = Centered()
        self._plans: dict[np.dtype, tuple[Array, ConvPlan]] = {}

    def geometry(self, x_shape: Sequence[int], w_shape: Sequence[int]) -> Window:
        """The resolved window for x and w of these shapes; raises on shapes that do not fit together."""
        x_shape, w_shape = tuple(x_shape), tuple(w_shape)
        if len(x_shape) < 3 or len(w_shape) != len(x_shape):
            raise ValueError(f"x [N, C, *spatial] and w [M, C/group, *kernel] must have the same rank >= 3, "
                             f"got x {list(x_shape)} and w {list(w_shape)}")
        if x_shape[1] != w_shape[1] * self.group:
            raise ValueError(f"x has {x_shape[1]} channels; w expects {w_shape[1]} per group x {self.group} groups")
        if w_shape[0] % self.group:
            raise ValueError(f"{w_shape[0]} output channels do not split into {self.group} groups")
        window = self.window.per_axis(len(x_shape) - 2, w_shape[2:])
        if w_shape[2:] != window.kernel:
            raise ValueError(f"kernel_shape {list(window.kernel)} disagrees with the weight's spatial shape "
                             f"{list(w_shape[2:])}")
        return window

    def __call__(self, x: Array, x_zp: Array | None, w: Array, w_zp: Array | None) -> Array:
        """x ``[N, C, *S]``, w ``[M, C/group, *k]`` (codes); zero points: x's a scalar, w's a scalar or ``[M]``
        (laid out with :func:`channel_param`). Returns int32 ``[N, M, *So]``."""
        window = self.geometry(x.shape, w.shape)
        if x_zp is not None and not is_scalar(x_zp):
            raise ValueError(f"x_zero_point must be a scalar, got shape {list(x_zp.shape)}")
        entry = self.weights.get(w, w_zp, tuple(range(1, w.ndim)))
        bound = reach(x.dtype, x_zp) * entry.weight_sum
        dtype = accumulator(bound)
        xc = x.astype(dtype)
        if x_zp is not None:
            xc -= x_zp.reshape(()).astype(dtype)
        pads, _ = window.resolve(x.shape[2:])
        y = conv(pad_input(xc, pads), self._plan(entry.centered, window, dtype), None, None)
        return wrap_int32(y, bound)

    def _plan(self, centered: Array, window: Window, dtype: np.dtype) -> ConvPlan:
        cached = self._plans.get(dtype)
        if cached is None or cached[0] is not centered:
            plan = make_plan(centered, self.group, window.strides, window.dilations, dtype)
            cached = self._plans[dtype] = (centered, plan)
        return cached[1]


class ConvInteger(Op):
    """ONNX ConvInteger: x, w uint8 or int8 -> int32 ``[N, M, *So]``; all Conv attributes.

    Inputs ``x [N, C, *S]``, ``w [M, C/group, *k]``, optional ``x_zero_point``
    (a scalar) and ``w_zero_point`` (a scalar or one per output channel,
    ``[M]``), each of its tensor's type.
    """

    op_type = "ConvInteger"
    min_inputs = 2
    max_inputs = 4

    def setup(self, node: Node) -> None:
        self.conv = IntegerConv(node)

    def run(self, x: Array, w: Array, x_zero_point: Array | None = None,
            w_zero_point: Array | None = None) -> Array:
        x, w = codes(x, "x"), codes(w, "w")
        x_zp = zero_point(x_zero_point, x, "x_zero_point")
        w_zp = zero_point(w_zero_point, w, "w_zero_point")
        if w_zp is not None:
            w_zp = channel_param(w_zp, w.shape[0], w.ndim, "w_zero_point")
        return self.conv(x, x_zp, w, w_zp)
