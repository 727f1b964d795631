"""Recognise mean/variance normalization and rewrite it as one fused kernel.

The subgraph (as PyTorch exports instance norm and conditional instance norm)::

    m = ReduceMean(x, axes)            d = Sub(x, m)
    v = ReduceMean(Pow(d, 2) | Mul(d, d), axes)
    s = Sqrt(Add(v, eps))
    n = Div(d, s) | Mul(d, Div(1, s))
    y = Add(Mul(n, scale), bias)       (scale and shift each optional)

becomes ``FusedMeanVarianceNorm(x, scale, bias)`` with ``axes`` and
``epsilon`` attributes. Every intermediate must feed only the next step of the
pattern, so nothing else in the graph can observe a value that disappears.
"""

from __future__ import annotations

from typing import TypeGuard

from engine.graph import Node
from engine.passes.base import PassContext

FUSED_OP = "FusedMeanVarianceNorm"


def _is(node: Node | None, op_type: str) -> TypeGuard[Node]:
    return node is not None and node.op_type == op_type and not node.domain


def _other(node: Node, value: str) -> str | None:
    """The other operand of a two-input node that reads ``value`` once."""
    if len(node.inputs) != 2 or node.inputs.count(value) != 1:
        return None
    return node.inputs[1] if node.inputs[0] == value else node.inputs[0]


def _scalar(ctx: PassContext, name: str | None) -> float | None:
    value = ctx.constant(name) if name else None
    if value is None or value.size != 1 or value.dtype.kind != "f":
        return None
    return float(value.reshape(-1)[0])


def _reduce_axes(ctx: PassContext, node: Node) -> list[int] | None:
    if not _is(node, "ReduceMean") or node.int_attr("keepdims", 1) != 1:
        return None
    axes = node.attrs.get("axes")
    if len(node.inputs) > 1 and node.inputs[1]:
        given = ctx.constant(node.inputs[1])
        if given is None:
            return None
        axes = given.reshape(-1).tolist()
    if not isinstance(axes, list) or not axes:  # none, or not the list of ints ONNX spells axes as
        return None
    return sorted(int(a) for a in axes)


class _Matcher:
    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx
        self.users = ctx.consumers()

    def next(self, value: str) -> Node | None:
        return self.ctx.only_consumer(value, self.users)

    def match(self, mean: Node) -> tuple[Node, list[Node]] | None:
        """The fused node and the nodes it replaces, or None when ``mean`` starts no pattern."""
        ctx = self.ctx
        axes = _reduce_axes(ctx, mean)
        if axes is None:
            return None
        x = mean.inputs[0]
        sub = self.next(mean.outputs[0])
        if not _is(sub, "Sub") or sub.inputs != [x, mean.outputs[0]]:
            return None
        d = sub.outputs[0]
        readers = list({id(n): n for n in self.users.get(d, [])}.values())
        if len(readers) != 2 or d in ctx.outputs:
            return None
        square = next((n for n in readers if (_is(n, "Pow") and n.inputs[0] == d and _scalar(ctx, n.inputs[1]) == 2.0)
                       or (_is(n, "Mul") and n.inputs == [d, d])), None)
        if square is None:
            return None
        normed = readers[0] if readers[1] is square else readers[1]
        var = self.next(square.outputs[0])
        if var is None or _reduce_axes(ctx, var) != axes or var.inputs[0] != square.outputs[0]:
            return None
        add_eps = self.next(var.outputs[0])
        if not _is(add_eps, "Add"):
            return None
        epsilon = _scalar(ctx, _other(add_eps, var.outputs[0]))
        sqrt = self.next(add_eps.outputs[0])
        if epsilon is None or epsilon < 0 or not _is(sqrt, "Sqrt"):
            return None
        replaced = [mean, sub, square, var, add_eps, sqrt]
        s = sqrt.outputs[0]
        if _is(normed, "Div") and normed.inputs == [d, s] and self.next(s) is normed:
            replaced.append(normed)
        else:
            recip = self.next(s)
            if not (_is(recip, "Div") and recip.inputs[1] == s and _scalar(ctx, recip.inputs[0]) == 1.0):
                return None
            if not (_is(normed, "Mul") and _other(normed, d) == recip.outputs[0]
                    and self.next(recip.outputs[0]) is normed):
                return None
            replaced += [recip, normed]
        inner = {o for n in replaced for o in n.outputs}
        out, scale, bias = normed.outputs[0], "", ""
        step = self.next(out)
        if _is(step, "Mul") and (operand := _other(step, out)) and operand not in inner:
            scale, out = operand, step.outputs[0]
            replaced.append(step)
            step = self.next(out)
        if _is(step, "Add") and (operand := _other(step, out)) and operand not in inner:
            bias, out = operand, step.outputs[0]
            replaced.append(step)
        inputs = [x, scale, bias]
        while inputs and not inputs[-1]:
            inputs.pop()
        fused = Node(FUSED_OP, inputs, [out], name=f"{mean.label}_fused_norm",
                     attrs={"axes": axes, "epsilon": epsilon})
        return fused, replaced


def fuse_mean_variance_norm(ctx: PassContext) -> int:
    matched = 0
    while True:
        matcher = _Matcher(ctx)
        found = next((m for n in ctx.nodes if (m := matcher.match(n)) is not None), None)
        if found is None:
            return matched
        fused, replaced = found
        # The last replaced node is the latest in execution order: every input
        # of the fused node is available there.
        position = max(ctx.nodes.index(n) for n in replaced)
        ctx.nodes[position] = fused
        ctx.remove(replaced)
        matched += 1

