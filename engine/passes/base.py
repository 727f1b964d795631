"""What every pass works on: :class:`PassContext`, and the :data:`Pass` signature.

A leaf of :mod:`engine.passes`: the pass modules import it, and the package
imports the pass modules to build its pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.graph import Model, Node, value_consumers, value_producers
from engine.tensors import to_float_array


@dataclass
class PassContext:
    """The graph being optimized plus what the passes need to know about it.

    ``constants`` holds every weight as a float (dequantized) array; ``inputs``
    and ``outputs`` are the graph's fed and returned value names, which passes
    must keep.
    """

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    where: str = "model"
    stats: dict[str, int] = field(default_factory=dict)
    _fresh: int = 0

    @classmethod
    def from_model(cls, model: Model) -> PassContext:
        """A deep enough copy of ``model``'s graph that rewriting it cannot change ``model``.

        Nodes, their input/output lists and attribute dicts are copied; weight
        arrays are shared read-only (passes make new arrays, never write into
        these).
        """
        desc = model.description
        inputs = [f.name for f in desc.inputs]
        ordered = model.graph.toposort(inputs, f"model {model.name!r}")
        nodes = [Node(op_type=n.op_type, inputs=list(n.inputs), outputs=list(n.outputs), name=n.name,
                      attrs=dict(n.attrs), domain=n.domain) for n in ordered]
        constants = {name: to_float_array(w) for name, w in model.graph.initializers.items()}
        return cls(nodes=nodes, constants=constants, inputs=inputs, outputs=[f.name for f in desc.outputs],
                   where=f"model {model.name!r}")

    # ------------------------------------------------------------ queries
    def consumers(self) -> dict[str, list[Node]]:
        return value_consumers(self.nodes)

    def producers(self) -> dict[str, Node]:
        return value_producers(self.nodes)

    def constant(self, name: str) -> np.ndarray | None:
        return self.constants.get(name) if name else None

    def only_consumer(self, value: str, users: dict[str, list[Node]]) -> Node | None:
        """The single node reading ``value``, when nothing else (not even a graph output) does."""
        readers = users.get(value, [])
        if len(readers) != 1 or value in self.outputs:
            return None
        node = readers[0]
        return node if node.inputs.count(value) == 1 else None

    # ------------------------------------------------------------ edits
    def fresh_name(self, hint: str) -> str:
        """A value name no node, input or weight uses yet."""
        taken = set(self.constants) | set(self.inputs) | {o for n in self.nodes for o in n.outputs}
        while True:
            self._fresh += 1
            name = f"{hint}__c{self._fresh}"
            if name not in taken:
                return name

    def add_constant(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh_name(hint)
        self.constants[name] = value
        return name

    def remove(self, doomed: list[Node]) -> None:
        ids = {id(n) for n in doomed}
        self.nodes = [n for n in self.nodes if id(n) not in ids]

    def count(self, key: str, amount: int) -> int:
        self.stats[key] = self.stats.get(key, 0) + amount
        return amount


Pass = Callable[[PassContext], int]
