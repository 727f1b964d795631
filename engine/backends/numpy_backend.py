"""The numpy backend: the reference, always available, runs every op in ``engine.ops``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from engine.exceptions import BackendError
from engine.graph import Node
from engine.ops import make_op
from engine.ops.base import Op

NAME = "numpy"


def check_device(device: str) -> str:
    if device not in ("cpu", ""):
        raise BackendError(f"the numpy backend runs on the CPU only, not on {device!r}; "
                           "use --backend torch for GPU devices")
    return "cpu"


def build_kernel(node: Node) -> Op:
    return make_op(node)


def to_host(value: np.ndarray) -> np.ndarray:
    return value


def prepack(node: Node, kernel: Op, weights: Mapping[str, np.ndarray]) -> bool:
    """Pack a node's constant weight into the layout its kernel computes with; True if it did.

    Called by the compiler once per kernel. Conv offers ``prepack(w)`` (its
    im2col GEMM weight layout); other ops keep their weights as they are.
    """
    pack = getattr(kernel, "prepack", None)
    if pack is None or node.op_type != "Conv" or len(node.inputs) < 2:
        return False
    weight = weights.get(node.inputs[1])
    if weight is None or weight.dtype.kind != "f":
        return False
    pack(weight)
    return True
