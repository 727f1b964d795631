"""DepthToSpace and SpaceToDepth: move ``blocksize`` x ``blocksize`` blocks between channels and space.

Both take 4-D ``[N, C, H, W]`` input. DepthToSpace gives
``[N, C / b², H * b, W * b]``; its ``mode`` (opset 11+, default DCR) says
how a channel index splits: DCR reads it as (block row, block column,
channel), CRD as (channel, block row, block column). SpaceToDepth is the
inverse, ``[N, C * b², H / b, W / b]``, of either mode (DCR when the node
has no ``mode``, which SpaceToDepth gained only in recent onnx releases).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op

MODES = ("DCR", "CRD")


def _text(value: object, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


class _Blocks(Op):
    # the 6-D view's axis order for the result, per mode
    PERMS: ClassVar[dict[str, tuple[int, ...]]]

    def setup(self, node: Node) -> None:
        blocksize = node.int_attr("blocksize")
        if blocksize is None:
            raise ValueError("the blocksize attribute is required")
        if blocksize < 1:
            raise ValueError(f"blocksize must be at least 1, got {blocksize}")
        self.blocksize = blocksize
        self.mode = _text(node.attrs.get("mode"), "DCR").upper()
        if self.mode not in MODES:
            raise ValueError(f"mode must be DCR or CRD, got {self.mode!r}")
        self.perm = type(self).PERMS[self.mode]

    def check_rank(self, x: Array) -> tuple[int, int, int, int]:
        if x.ndim != 4:
            raise ValueError(f"{self.op_type} takes a 4-D [N, C, H, W] input, got rank {x.ndim}")
        n, c, h, w = (int(d) for d in x.shape)
        return n, c, h, w

    def plan(self, x: Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(the 6-D view of the input, the result's shape)."""
        raise NotImplementedError

    def run(self, x: Array) -> Array:
        x = np.asarray(x)
        view, out_shape = self.plan(x)
        return np.transpose(x.reshape(view), self.perm).reshape(out_shape)


class DepthToSpace(_Blocks):
    op_type = "DepthToSpace"
    PERMS: ClassVar[dict[str, tuple[int, ...]]] = {"DCR": (0, 3, 4, 1, 5, 2), "CRD": (0, 1, 4, 2, 5, 3)}

    def plan(self, x: Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
        n, c, h, w = self.check_rank(x)
        b = self.blocksize
        if c % (b * b):
            raise ValueError(f"{c} channels do not divide into blocks of {b}x{b}")
        depth = c // (b * b)
        view = (n, b, b, depth, h, w) if self.mode == "DCR" else (n, depth, b, b, h, w)
        return view, (n, depth, h * b, w * b)


class SpaceToDepth(_Blocks):
    op_type = "SpaceToDepth"
    PERMS: ClassVar[dict[str, tuple[int, ...]]] = {"DCR": (0, 3, 5, 1, 2, 4), "CRD": (0, 1, 3, 5, 2, 4)}

    def plan(self, x: Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
        n, c, h, w = self.check_rank(x)
        b = self.blocksize
        if h % b or w % b:
            raise ValueError(f"spatial size {h}x{w} does not divide into blocks of {b}x{b}")
        return (n, c, h // b, b, w // b, b), (n, c * b * b, h // b, w // b)
