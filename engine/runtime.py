"""Running a compiled model: the graph executor, ``predict`` and ``predict_batch``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from engine.description import Feature, ModelDescription
from engine.exceptions import InputError
from engine.graph import Node
from engine.ops.base import Op

Item = Mapping[str, Any]


@dataclass
class Step:
    """One kernel call: reads ``inputs`` slots, writes ``outputs`` slots, then frees ``release``."""

    kernel: Op
    inputs: list[str]
    outputs: list[str]
    release: list[str] = field(default_factory=list)


class Executor:
    """Runs an ordered node list over numpy values, dropping each value after its last use."""

    def __init__(self, nodes: Sequence[Node], kernels: Sequence[Op], constants: Mapping[str, np.ndarray],
                 outputs: Sequence[str]) -> None:
        self.constants = dict(constants)
        self.outputs = list(outputs)
        last_use: dict[str, int] = {}
        for idx, node in enumerate(nodes):
            for name in node.inputs:
                if name:
                    last_use[name] = idx
        keep = set(self.outputs) | set(self.constants)
        self.steps = []
        for idx, (node, kernel) in enumerate(zip(nodes, kernels)):
            release = [n for n in dict.fromkeys(node.inputs) if n and last_use.get(n) == idx and n not in keep]
            self.steps.append(Step(kernel, list(node.inputs), list(node.outputs), release))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = dict(self.constants)
        values.update(feeds)
        for step in self.steps:
            args = [values[name] if name else None for name in step.inputs]
            results = step.kernel(args)
            for name, value in zip(step.outputs, results):
                if name:
                    values[name] = value
            for name in step.release:
                values.pop(name, None)
        return {name: values[name] for name in self.outputs}


class CompiledModel:
    """A model ready to run on one backend and device.

    ``run`` takes and returns graph tensors (with the batch dimension);
    ``predict`` takes one item (a dict of input name to value, no batch
    dimension) and ``predict_batch`` a list of them, stacking items of the same
    shape into one tensor.
    """

    def __init__(self, description: ModelDescription, executor: Executor, backend: str, device: str,
                 digest: str = "") -> None:
        self.description = description
        self.executor = executor
        self.backend = backend
        self.device = device
        self.digest = digest

    @property
    def name(self) -> str:
        return self.description.metadata.name or "model"

    # ------------------------------------------------------------------ graph
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.executor.run(feeds)

    # ------------------------------------------------------------------ items
    def prepare_item(self, item: Item) -> dict[str, np.ndarray]:
        """Resolve one item's inputs to arrays of the item shape: defaults filled, images converted."""
        from engine.images import image_to_tensor

        known = {f.name for f in self.description.inputs}
        unknown = set(item) - known
        if unknown:
            raise InputError(f"{self.name}: unknown inputs {sorted(unknown)}; the model takes {sorted(known)}")
        out: dict[str, np.ndarray] = {}
        for f in self.description.inputs:
            value = item.get(f.name)
            if value is None:
                if f.default is None:
                    raise InputError(f"{self.name}: input {f.name!r} is required ({f.shape.describe()})")
                value = f.default
            if f.kind == "image" and not isinstance(value, np.ndarray):
                value = image_to_tensor(value, f)
            arr = np.asarray(value, dtype=np.dtype(f.dtype))
            f.check_item(arr)
            out[f.name] = arr
        return out

    def predict(self, item: Item) -> dict[str, np.ndarray]:
        return self.predict_batch([item])[0]

    def predict_batch(self, items: Sequence[Item]) -> list[dict[str, np.ndarray]]:
        """One result per item, equal to ``predict`` on each; same-shape items share one run."""
        prepared = [self.prepare_item(item) for item in items]
        results: list[dict[str, np.ndarray] | None] = [None] * len(prepared)
        for indices in self._groups(prepared):
            feeds = {}
            for f in self.description.inputs:
                if f.batched:
                    feeds[f.name] = np.stack([prepared[i][f.name] for i in indices])
                else:
                    feeds[f.name] = prepared[indices[0]][f.name]
            outputs = self.run(feeds)
            for pos, i in enumerate(indices):
                results[i] = {name: self._item_output(self.description.output(name), value, pos, len(indices))
                              for name, value in outputs.items()}
        return results  # type: ignore[return-value]

    def _groups(self, prepared: list[dict[str, np.ndarray]]) -> list[list[int]]:
        """Items that can share one run: same shapes, same values for unbatched inputs."""
        groups: dict[tuple, list[int]] = {}
        for i, arrays in enumerate(prepared):
            key = []
            for f in self.description.inputs:
                arr = arrays[f.name]
                key.append(arr.shape)
                if not f.batched:
                    key.append(arr.tobytes())
            groups.setdefault(tuple(key), []).append(i)
        return list(groups.values())

    @staticmethod
    def _item_output(feature: Feature, value: np.ndarray, pos: int, count: int) -> np.ndarray:
        if feature.batched and value.ndim and value.shape[0] == count:
            return np.array(value[pos])
        return np.array(value)
