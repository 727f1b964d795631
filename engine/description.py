"""What a model takes and gives: typed features, flexible shapes, metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from engine.exceptions import InputError

ColorLayout = Literal["RGB", "BGR", "GRAY"]


@dataclass
class ShapeSpec:
    """Allowed shapes of one item (no batch dimension).

    ``default`` is the shape used when nothing else is known. ``enumerated``
    lists every allowed shape; ``ranges`` gives inclusive ``(lower, upper)``
    bounds per dimension, ``upper`` None for unbounded. With neither, only
    ``default`` is allowed.
    """

    default: tuple[int, ...]
    enumerated: list[tuple[int, ...]] = field(default_factory=list)
    ranges: list[tuple[int, int | None]] = field(default_factory=list)

    @property
    def is_flexible(self) -> bool:
        return bool(self.enumerated or self.ranges)

    def allows(self, shape: Sequence[int]) -> bool:
        shape = tuple(int(s) for s in shape)
        if self.enumerated:
            return shape in self.enumerated or shape == self.default
        if self.ranges:
            return len(shape) == len(self.ranges) and all(
                lo <= s and (hi is None or s <= hi) for s, (lo, hi) in zip(shape, self.ranges))
        return shape == self.default

    def describe(self) -> str:
        if self.enumerated:
            return "one of " + ", ".join("×".join(map(str, s)) for s in self.enumerated)
        if self.ranges:
            return "×".join(f"{lo}..{'∞' if hi is None else hi}" if lo != hi else str(lo) for lo, hi in self.ranges)
        return "×".join(map(str, self.default))

    def planned_shapes(self) -> list[tuple[int, ...]]:
        """Shapes worth planning ahead of time: the default and every enumerated one."""
        shapes = [self.default, *self.enumerated]
        return list(dict.fromkeys(shapes))


@dataclass
class Feature:
    """One input or output.

    An image feature maps 8-bit pixels to the tensor as
    ``tensor[c] = pixel[c] * scale[c] + bias[c]`` in ``color_layout`` channel
    order, laid out ``[C, H, W]``; an image output applies the inverse.
    """

    name: str
    kind: Literal["image", "array"] = "array"
    shape: ShapeSpec = field(default_factory=lambda: ShapeSpec(()))
    dtype: str = "float32"
    color_layout: ColorLayout = "RGB"
    scale: tuple[float, ...] = (1.0,)
    bias: tuple[float, ...] = (0.0,)
    default: np.ndarray | None = None
    batched: bool = True
    description: str = ""

    @property
    def channels(self) -> int:
        return 1 if self.color_layout == "GRAY" else 3

    def per_channel(self, values: tuple[float, ...]) -> np.ndarray:
        arr = np.asarray(values, np.float32)
        if arr.size == 1:
            arr = np.repeat(arr, self.channels)
        if arr.size != self.channels:
            raise InputError(f"feature {self.name!r}: {arr.size} per-channel values for {self.channels} channels")
        return arr

    def check_item(self, value: np.ndarray) -> None:
        if not self.shape.allows(value.shape):
            raise InputError(f"input {self.name!r}: shape {list(value.shape)} is not allowed; "
                             f"the model accepts {self.shape.describe()}")


@dataclass
class Metadata:
    name: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    description: str = ""
    user: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelDescription:
    inputs: list[Feature] = field(default_factory=list)
    outputs: list[Feature] = field(default_factory=list)
    metadata: Metadata = field(default_factory=Metadata)
    class_labels: list[str] = field(default_factory=list)
    class_labels_output: str = ""
    custom_model: str = ""

    def input(self, name: str) -> Feature:
        for f in self.inputs:
            if f.name == name:
                return f
        raise InputError(f"model has no input {name!r}; inputs are {[f.name for f in self.inputs]}")

    def output(self, name: str) -> Feature:
        for f in self.outputs:
            if f.name == name:
                return f
        raise InputError(f"model has no output {name!r}; outputs are {[f.name for f in self.outputs]}")

    @property
    def image_inputs(self) -> list[Feature]:
        return [f for f in self.inputs if f.kind == "image"]
