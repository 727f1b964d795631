"""Graph rewrites the ONNX importer makes: constant subgraphs folded, and a literal batch of 1 in Reshape shapes
turned into "as in the input" when the batch probe shows that is what it was."""

from __future__ import annotations

import numpy as np

from engine.graph import Graph, Node
from engine.ops import make_op
from engine.passes.base import PassContext
from engine.passes.dead_nodes import drop_dead_nodes
from engine.tensors import Weight

# A folded result this many elements larger than its inputs stays a node.
MAX_FOLD_GROWTH = 1 << 20


def unfix_batch(graph: Graph) -> Graph | None:
    """A copy of ``graph`` whose constant Reshape shapes that start with a literal 1 copy that dim instead
    (``0``, ONNX's "as in the input"); None when there is no such Reshape.

    Only a guess that the 1 is the batch: the caller keeps the copy only if
    the batch probe then finds a batch of 2 equal to two runs of 1.
    """
    nodes = []
    initializers = dict(graph.initializers)
    changed = 0
    for node in graph.nodes:
        shape = initializers.get(node.inputs[1]) if node.op_type == "Reshape" and len(node.inputs) > 1 else None
        if (shape is None or not isinstance(shape, np.ndarray) or shape.ndim != 1 or not shape.size
                or int(shape[0]) != 1 or node.int_attr("allowzero", 0)):
            nodes.append(node)
            continue
        fixed = shape.copy()
        fixed[0] = 0
        name = f"{node.inputs[1]}__batch"
        while name in initializers and not _equal(initializers[name], fixed):
            name += "_"
        initializers[name] = fixed
        nodes.append(Node(op_type=node.op_type, inputs=[node.inputs[0], name, *node.inputs[2:]],
                          outputs=list(node.outputs), name=node.name, attrs=dict(node.attrs), domain=node.domain))
        changed += 1
    if not changed:
        return None
    used = {i for n in nodes for i in n.inputs}
    return Graph(nodes=nodes, initializers={k: v for k, v in initializers.items() if k in used})


def _equal(weight: Weight, array: np.ndarray) -> bool:
    return isinstance(weight, np.ndarray) and np.array_equal(weight, array)


def fold_constants(graph: Graph, inputs: list[str], outputs: list[str]) -> Graph:
    """Fold constant subgraphs with corral's own ops, keeping exact dtypes; drop what no output needs.

    Only nodes whose inputs are all constant are evaluated, so the ops on the
    input-dependent path are not even loaded here.
    """
    constants: dict[str, np.ndarray] = {}
    for name, value in graph.initializers.items():
        assert isinstance(value, np.ndarray), f"ONNX weight {name!r} is not an array"
        constants[name] = value
    kept = []
    for node in graph.toposort(inputs):  # execution order: a folded result can feed the next fold
        args = [constants.get(name) if name else None for name in node.inputs]
        if node.domain or any(name and value is None for name, value in zip(node.inputs, args)):
            kept.append(node)
            continue
        op = make_op(node)
        if not op.foldable:
            kept.append(node)
            continue
        results = op(args)
        in_size = sum(int(np.size(a)) for a in args if a is not None)
        if sum(int(np.size(r)) for r in results) > in_size + MAX_FOLD_GROWTH:
            kept.append(node)  # an expanding op (ConstantOfShape, Expand): cheaper to run than to store
            continue
        for name, value in zip(node.outputs, results):
            if name:
                constants[name] = np.asarray(value)
    ctx = PassContext(nodes=kept, constants=constants, inputs=inputs, outputs=outputs)
    drop_dead_nodes(ctx)
    return Graph(nodes=list(ctx.nodes), initializers=dict(ctx.constants))
