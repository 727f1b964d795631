"""Drop Identity nodes and inference-mode Dropout: their output is their input.

Readers of the output are pointed at the input. When the output is a graph
output, the producer of the input is renamed to write it directly instead,
provided nothing else reads the input and it is not itself a graph input,
weight or output.
"""

from __future__ import annotations

from engine.graph import Node
from engine.passes.base import PassContext

PASSTHROUGH = ("Identity", "Dropout")


def _is_passthrough(node: Node) -> bool:
    if node.domain or node.op_type not in PASSTHROUGH or len(node.inputs) < 1 or not node.inputs[0]:
        return False
    # Dropout in training mode (a third input) or with its mask output used is not a copy.
    return node.op_type == "Identity" or (len(node.inputs) < 3 and not any(node.outputs[1:]))


def drop_identities(ctx: PassContext) -> int:
    dropped = []
    for node in list(ctx.nodes):
        if not _is_passthrough(node):
            continue
        source, target = node.inputs[0], node.outputs[0]
        users = ctx.consumers()
        if target in ctx.outputs:
            producer = ctx.producers().get(source)
            if producer is None or source in ctx.outputs or len(users.get(source, [])) != 1:
                continue
            producer.outputs = [target if o == source else o for o in producer.outputs]
        else:
            for reader in users.get(target, []):
                reader.inputs = [source if i == target else i for i in reader.inputs]
        dropped.append(node)
        ctx.remove([node])
    return len(dropped)
