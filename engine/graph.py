"""The in-memory model: a graph of ONNX-style nodes plus its description."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from engine.description import ModelDescription
from engine.exceptions import ModelFormatError, UnsupportedOpError
from engine.op_table import is_supported
from engine.tensors import Weight, storage_kind, stored_nbytes

AttrValue = int | float | str | np.ndarray | list[int] | list[float] | list[str]

CUSTOM_DOMAIN = "custom"


@dataclass
class Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    name: str = ""
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    domain: str = ""

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    @overload
    def int_attr(self, name: str, default: int) -> int: ...
    @overload
    def int_attr(self, name: str, default: None = None) -> int | None: ...
    def int_attr(self, name: str, default: int | None = None) -> int | None:
        """Attribute ``name`` as an int, ``default`` when the node has none."""
        return int(self._single(name)) if name in self.attrs else default

    @overload
    def float_attr(self, name: str, default: float) -> float: ...
    @overload
    def float_attr(self, name: str, default: None = None) -> float | None: ...
    def float_attr(self, name: str, default: float | None = None) -> float | None:
        """Attribute ``name`` as a float, ``default`` when the node has none."""
        if name in self.attrs:
            return float(self._single(name))
        return None if default is None else float(default)

    def ints_attr(self, name: str) -> list[int] | None:
        """Attribute ``name`` (a list or a 1-D tensor) as a list of ints, None when the node has none."""
        if name not in self.attrs:
            return None
        value = self.attrs[name]
        if isinstance(value, int | float | str):
            raise TypeError(f"attribute {name!r} must be a list, got {value!r}")
        return [int(v) for v in value]

    def _single(self, name: str) -> int | float | str | np.ndarray:
        value = self.attrs[name]
        if isinstance(value, list):
            raise TypeError(f"attribute {name!r} must be a single value, got a list")
        return value

    @property
    def label(self) -> str:
        return self.name or (self.outputs[0] if self.outputs else self.op_type)


def value_producers(nodes: Iterable[Node]) -> dict[str, Node]:
    """Value name -> the node that writes it."""
    return {out: n for n in nodes for out in n.outputs if out}


def value_consumers(nodes: Iterable[Node]) -> dict[str, list[Node]]:
    """Value name -> the nodes that read it, in node order."""
    users: dict[str, list[Node]] = defaultdict(list)
    for n in nodes:
        for i in n.inputs:
            if i:
                users[i].append(n)
    return users


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    initializers: dict[str, Weight] = field(default_factory=dict)

    def producers(self) -> dict[str, Node]:
        return value_producers(self.nodes)

    def consumers(self) -> dict[str, list[Node]]:
        return value_consumers(self.nodes)

    def toposort(self, inputs: Iterable[str], where: str = "model") -> list[Node]:
        """Nodes in an order where each runs after what it reads.

        Rejects cycles, names produced twice and names nothing produces.
        """
        available = set(inputs) | set(self.initializers)
        producer: dict[str, int] = {}
        for idx, n in enumerate(self.nodes):
            for out in n.outputs:
                if not out:
                    continue
                if out in producer or out in available:
                    raise ModelFormatError(f"{where}: value {out!r} is produced more than once "
                                           f"(node {n.label!r})")
                producer[out] = idx
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in available and i not in producer:
                    raise ModelFormatError(f"{where}: node {n.label!r} ({n.op_type}) reads {i!r}, "
                                           "which no input, weight or node provides")
        # Kahn's algorithm, stable in the stored order: of the nodes ready to run,
        # the one stored first goes next (a heap keeps this O(n log n)).
        indegree = [0] * len(self.nodes)
        dependents: dict[int, list[int]] = defaultdict(list)
        for idx, n in enumerate(self.nodes):
            deps = {producer[i] for i in n.inputs if i in producer}
            indegree[idx] = len(deps)
            for d in deps:
                dependents[d].append(idx)
        ready = [i for i, d in enumerate(indegree) if d == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            idx = heapq.heappop(ready)
            order.append(idx)
            for nxt in dependents[idx]:
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    heapq.heappush(ready, nxt)
        if len(order) != len(self.nodes):
            stuck = [self.nodes[i].label for i in range(len(self.nodes)) if indegree[i] > 0]
            raise ModelFormatError(f"{where}: graph has a cycle through nodes {stuck[:10]}")
        return [self.nodes[i] for i in order]


@dataclass
class Model:
    """A corral model: description plus graph. Serialize with :mod:`engine.format`."""

    description: ModelDescription
    graph: Graph

    @property
    def name(self) -> str:
        return self.description.metadata.name or "model"

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for n in self.graph.nodes:
            counts[n.op_type if not n.domain else f"{n.domain}:{n.op_type}"] += 1
        return dict(sorted(counts.items()))

    def parameter_count(self) -> int:
        return int(sum(np.prod(getattr(w, "shape", ()), dtype=np.int64) for w in self.graph.initializers.values()))

    def bytes_by_storage(self) -> dict[str, int]:
        sizes: dict[str, int] = defaultdict(int)
        for w in self.graph.initializers.values():
            sizes[storage_kind(w)] += stored_nbytes(w)
        return dict(sorted(sizes.items()))

    def custom_layers(self) -> list[str]:
        return sorted({n.op_type for n in self.graph.nodes if n.domain == "custom"})

    def unsupported_ops(self) -> dict[str, list[str]]:
        missing: dict[str, list[str]] = defaultdict(list)
        for n in self.graph.nodes:
            if n.domain == "custom":
                continue
            if n.domain:
                missing[f"{n.domain}:{n.op_type}"].append(n.label)
            elif not is_supported(n.op_type):
                missing[n.op_type].append(n.label)
        return dict(missing)

    def validate(self, where: str | None = None) -> None:
        """Check structure: supported ops, names, order. Raises ModelFormatError.

        ``where`` starts every message (the loader passes the file name).
        """
        where = where or f"model {self.name!r}"
        desc = self.description
        if not desc.outputs:
            raise ModelFormatError(f"{where}: declares no outputs")
        for role, features in (("input", desc.inputs), ("output", desc.outputs)):
            dupes = sorted(n for n, c in Counter(f.name for f in features).items() if c > 1)
            if dupes:
                raise ModelFormatError(f"{where}: {role} names {dupes} are declared more than once")
            for f in features:
                f.check(f"{where} {role}")
        if desc.custom_model:
            return
        unsupported = self.unsupported_ops()
        if unsupported:
            raise UnsupportedOpError(unsupported, where)
        self.graph.toposort([f.name for f in desc.inputs], where)
        produced = set(self.graph.producers()) | set(self.graph.initializers) | {f.name for f in desc.inputs}
        for f in desc.outputs:
            if f.name not in produced:
                raise ModelFormatError(f"{where}: output {f.name!r} is not produced by any node")
        if desc.class_labels_output and desc.class_labels_output not in {f.name for f in desc.outputs}:
            raise ModelFormatError(f"{where}: class labels refer to unknown output {desc.class_labels_output!r}")
