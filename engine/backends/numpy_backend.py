"""The numpy backend: the reference, always available, runs every op in ``engine.ops``."""

from __future__ import annotations

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
