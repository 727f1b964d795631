"""Which weights a quantizer touches, decided by how each weight is consumed.

A float initializer is a *weight* when every node that reads it reads it in a
weight slot: input 1 of Conv / ConvTranspose, inputs 0–1 of Gemm / MatMul.
Everything else (Conv and Gemm biases, normalization parameters, constants
fed to elementwise ops) is a *parameter*: kept float unless asked for, either
with ``quantize_params`` or by naming it (its name in ``include``, or the op
that reads it in ``include_ops`` when that op has no weight slot of its own).
Inputs that steer an op rather than feed it numbers (Resize scales, Pad
values, …) are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np

from engine.graph import Model, Node
from engine.tensors import QuantizedTensor

# op type -> input slots that hold a weight matrix / kernel
WEIGHT_SLOTS: dict[str, frozenset[int]] = {
    "Conv": frozenset({1}),
    "ConvTranspose": frozenset({1}),
    "Gemm": frozenset({0, 1}),
    "MatMul": frozenset({0, 1}),
}

# op type -> input slots that carry control values, never quantized
CONTROL_SLOTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "Pad": frozenset({1, 2, 3}),
    "Clip": frozenset({1, 2}),
    "Reshape": frozenset({1}),
    "Expand": frozenset({1}),
    "Slice": frozenset({1, 2, 3, 4}),
    "Split": frozenset({1}),
    "Squeeze": frozenset({1}),
    "Unsqueeze": frozenset({1}),
    "ConstantOfShape": frozenset({0}),
    "Range": frozenset({0, 1, 2}),
    "Gather": frozenset({1}),
    "ReduceMean": frozenset({1}),
    "ReduceSum": frozenset({1}),
    "ReduceMax": frozenset({1}),
}


@dataclass(frozen=True)
class Use:
    node: Node
    slot: int

    @property
    def is_weight(self) -> bool:
        return self.slot in WEIGHT_SLOTS.get(self.node.op_type, ())

    @property
    def is_control(self) -> bool:
        return self.slot in CONTROL_SLOTS.get(self.node.op_type, ())


@dataclass
class Selector:
    """The selection rules; patterns are shell-style (``res.*``, ``*conv1*``)."""

    min_size: int = 1024
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    include_ops: Sequence[str] = ()
    exclude_ops: Sequence[str] = ()
    quantize_params: bool = False

    def uses(self, model: Model) -> dict[str, list[Use]]:
        found: dict[str, list[Use]] = {}
        for node in model.graph.nodes:
            for slot, name in enumerate(node.inputs):
                if name in model.graph.initializers:
                    found.setdefault(name, []).append(Use(node, slot))
        return found

    @staticmethod
    def _matches(patterns: Sequence[str], *names: str) -> bool:
        return any(fnmatchcase(n, p) for p in patterns for n in names if n)

    def decide(self, name: str, value: object, uses: list[Use]) -> str | None:
        """``None`` when ``name`` is selected, else the reason it is skipped."""
        if isinstance(value, QuantizedTensor):
            return "already quantized"
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            return "not a float tensor"
        if not uses:
            return "read by no node"
        if any(u.is_control for u in uses):
            ops = sorted({u.node.op_type for u in uses if u.is_control})
            return f"control input of {', '.join(ops)}"
        node_names = [u.node.label for u in uses]
        op_types = {u.node.op_type for u in uses}
        if self._matches(self.exclude, name, *node_names):
            return "excluded by name"
        if op_types & set(self.exclude_ops):
            return f"excluded by op type ({', '.join(sorted(op_types & set(self.exclude_ops)))})"
        asked_by_name = self._matches(self.include, name)
        # ops without a weight slot of their own, named by --include-op, ask for their constants
        asked_by_op = bool(op_types & set(self.include_ops)) and not any(
            u.node.op_type in WEIGHT_SLOTS for u in uses)
        is_weight = all(u.is_weight for u in uses)
        if not (is_weight or self.quantize_params or asked_by_name or asked_by_op):
            return "bias or normalization parameter (not a weight input)"
        if self.include or self.include_ops:
            included = (asked_by_name or self._matches(self.include, *node_names)
                        or bool(op_types & set(self.include_ops)))
            if not included:
                return "not matched by any include"
        if value.size < self.min_size and not asked_by_name:
            return f"{value.size} elements, below the minimum size {self.min_size}"
        return None


def output_channel_axis(value: np.ndarray, uses: list[Use]) -> int:
    """The axis that indexes output channels for the first consumer, or 0.

    Conv [M, C/g, kH, kW] → 0; ConvTranspose [C, M/g, kH, kW] → 1;
    Gemm B [K, N] → 1 ([N, K] with transB → 0); MatMul B [..., K, N] → last.
    """
    if value.ndim < 2 or not uses:
        return 0
    use = uses[0]
    op = use.node.op_type
    if op == "ConvTranspose" and use.slot == 1:
        return 1
    if op == "Gemm":
        transposed = bool(use.node.attr("transB" if use.slot == 1 else "transA", 0))
        if use.slot == 1:
            return 0 if transposed else 1
        return 1 if transposed else 0
    if op == "MatMul":
        return value.ndim - 1 if use.slot == 1 else value.ndim - 2
    return 0
