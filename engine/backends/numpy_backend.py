"""The numpy backend: the reference, always available, runs every op in ``engine.ops``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.backends.base import Backend, Kernel, RunLayout, cpu_run_items
from engine.exceptions import BackendError
from engine.graph import Node
from engine.ops import make_op

NAME = "numpy"


class NumpyBackend(Backend):
    """corral's own ops on numpy arrays, on the CPU, in float32; values never leave the host."""

    NAME = NAME

    @classmethod
    def check_device(cls, device: str) -> str:
        if (device or "cpu").strip().lower() not in ("cpu", "auto"):
            raise BackendError(f"the numpy backend runs on the CPU only, not on {device!r}; "
                               "use --backend torch or onnxruntime for GPU devices")
        return "cpu"

    def build_kernel(self, node: Node) -> Kernel:
        return make_op(node)

    def prepack(self, node: Node, kernel: Kernel, weights: Mapping[str, Any]) -> bool:
        """Conv offers ``prepack(w)`` (its im2col GEMM weight layout); other ops keep their weights as they are."""
        pack = getattr(kernel, "prepack", None)
        if pack is None or node.op_type != "Conv" or len(node.inputs) < 2:
            return False
        weight = weights.get(node.inputs[1])
        if not isinstance(weight, np.ndarray) or weight.dtype.kind != "f":
            return False
        pack(weight)
        return True

    def run_layouts(self, items: int, item_elements: int) -> list[RunLayout]:
        return [RunLayout(1, cpu_run_items(item_elements))]
