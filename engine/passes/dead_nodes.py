"""Dead-code elimination: drop nodes and weights that no graph output depends on."""

from __future__ import annotations

from engine.passes.base import PassContext


def drop_dead_nodes(ctx: PassContext) -> int:
    needed = set(ctx.outputs)
    live = []
    for node in reversed(ctx.nodes):  # nodes are in execution order
        if any(out in needed for out in node.outputs if out):
            live.append(node)
            needed.update(i for i in node.inputs if i)
    dropped = len(ctx.nodes) - len(live)
    ctx.nodes = live[::-1]
    for name in [n for n in ctx.constants if n not in needed]:
        del ctx.constants[name]
    return dropped
