"""Fuse a Relu or Sigmoid into the node that produces its input.

The producer (a Conv, or the compiler's fused normalization) takes the
activation as its ``activation`` attribute and applies it to its own output
buffer, saving one full pass over the tensor and one allocation.
"""

from __future__ import annotations

from engine.passes.base import PassContext

ACTIVATIONS = ("Relu", "Sigmoid")
# Op types whose kernels honour the ``activation`` attribute.
ACCEPTS_ACTIVATION = ("Conv", "FusedMeanVarianceNorm")


def fuse_activations(ctx: PassContext) -> int:
    users = ctx.consumers()
    doomed = []
    for node in ctx.nodes:
        if node.op_type not in ACCEPTS_ACTIVATION or node.domain or node.attrs.get("activation"):
            continue
        if len(node.outputs) != 1:
            continue
        act = ctx.only_consumer(node.outputs[0], users)
        if (act is None or act.op_type not in ACTIVATIONS or act.domain or len(act.inputs) != 1
                or act.attrs.get("approximation")):
            continue
        node.attrs["activation"] = act.op_type
        node.outputs = [act.outputs[0]]
        doomed.append(act)
    ctx.remove(doomed)
    return len(doomed)
