"""Constant folding: evaluate, once, every node whose inputs are all weights.

Constant nodes, the shape arithmetic that exporters emit for padding
(ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast on constants), weight
reshapes and the like become plain weights, so they cost nothing per run.
"""

from __future__ import annotations

import numpy as np

from engine.ops import INTERNAL_OPS, SUPPORTED_OPS, make_op, op_class
from engine.passes.base import PassContext

# A folded result this many elements larger than the node's inputs stays a
# node: expanding ops (ConstantOfShape, Expand) would otherwise bloat the
# compiled model and its on-disk cache for nothing.
MAX_GROWTH_ELEMENTS = 1 << 22


def _foldable(op_type: str, domain: str) -> bool:
    if domain or (op_type not in SUPPORTED_OPS and op_type not in INTERNAL_OPS):
        return False
    return bool(op_class(op_type).foldable)


def fold_constants(ctx: PassContext) -> int:
    folded = []
    for node in ctx.nodes:  # execution order: a folded result can feed the next fold
        if not _foldable(node.op_type, node.domain):
            continue
        args = [ctx.constants.get(name) if name else None for name in node.inputs]
        if any(name and value is None for name, value in zip(node.inputs, args)):
            continue
        results = make_op(node)(args)
        in_size = sum(int(np.size(a)) for a in args if a is not None)
        if sum(int(np.size(r)) for r in results) > in_size + MAX_GROWTH_ELEMENTS:
            continue
        for name, value in zip(node.outputs, results):
            if name:
                ctx.constants[name] = np.asarray(value)
        folded.append(node)
    ctx.remove(folded)
    return len(folded)
