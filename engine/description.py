"""What a model takes and gives: typed features, flexible shapes, metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.exceptions import InputError, ModelFormatError
from engine.tensors import MAX_DIM, check_dims

# More enumerated shapes than this is not a real model: each one is planned
# ahead of time by the compiler.
MAX_ENUMERATED = 1024

ColorLayout = Literal["RGB", "BGR", "GRAY"]

# Longest feature, node, value or weight name a package may hold.
MAX_NAME = 4096


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

    def check(self, where: str) -> None:
        """Raise :class:`ModelFormatError` unless the spec is self-consistent.

        Enumerated shapes share the default's rank; ranges give one
        ``lower <= upper`` pair per dimension and contain the default.
        """
        check_dims(self.default, f"{where} default shape")
        rank = len(self.default)
        if self.enumerated and self.ranges:
            raise ModelFormatError(f"{where}: declares both enumerated shapes and ranges; use one of them")
        if len(self.enumerated) > MAX_ENUMERATED:
            raise ModelFormatError(f"{where}: {len(self.enumerated)} enumerated shapes exceeds the limit "
                                   f"of {MAX_ENUMERATED}")
        for s in self.enumerated:
            check_dims(s, f"{where} enumerated shape")
            if len(s) != rank:
                raise ModelFormatError(f"{where}: enumerated shape {list(s)} has rank {len(s)}, "
                                       f"the default shape {list(self.default)} has rank {rank}")
        if self.ranges:
            if len(self.ranges) != rank:
                raise ModelFormatError(f"{where}: {len(self.ranges)} ranges for a rank-{rank} shape")
            for lo, hi in self.ranges:
                if not 0 <= lo <= MAX_DIM or (hi is not None and hi < lo):
                    raise ModelFormatError(f"{where}: invalid range {lo}..{'unbounded' if hi is None else hi} "
                                           f"(need 0 <= lower <= {MAX_DIM} and upper >= lower)")
            if not self.allows(self.default):
                raise ModelFormatError(f"{where}: default shape {list(self.default)} is outside the ranges "
                                       f"{self.describe()}")

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
    # where a batched feature's batch dimension sits in the graph tensor (outputs may have it further in)
    batch_axis: int = 0

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

    def check(self, where: str) -> None:
        """Raise :class:`ModelFormatError` unless the feature is self-consistent."""
        where = f"{where} feature {self.name!r}"
        if not self.name or len(self.name) > MAX_NAME:
            raise ModelFormatError(f"{where}: feature names must be 1..{MAX_NAME} characters")
        if self.kind not in ("image", "array"):
            raise ModelFormatError(f"{where}: kind must be 'image' or 'array', not {self.kind!r}")
        if self.kind == "image":
            if self.color_layout not in ("RGB", "BGR", "GRAY"):
                raise ModelFormatError(f"{where}: unknown colour layout {self.color_layout!r}")
            for label, values in (("scale", self.scale), ("bias", self.bias)):
                if len(values) not in (1, self.channels):
                    raise ModelFormatError(f"{where}: {len(values)} {label} values for a {self.color_layout} "
                                           f"image; give 1 or {self.channels}")
        self.shape.check(where)
        if not 0 <= self.batch_axis <= len(self.shape.default) or (self.batch_axis and not self.batched):
            raise ModelFormatError(f"{where}: batch axis {self.batch_axis} is outside its "
                                   f"{len(self.shape.default) + 1}-dimensional batched tensor")
        if self.default is not None and not self.shape.allows(self.default.shape):
            raise ModelFormatError(f"{where}: default value of shape {list(self.default.shape)} is not an "
                                   f"allowed item shape ({self.shape.describe()})")

    def check_item(self, value: np.ndarray) -> None:
        if not self.shape.allows(value.shape):
            raise InputError(f"input {self.name!r}: shape {list(value.shape)} is not allowed; "
                             f"the model accepts {self.shape.describe()}")


# metadata.user key: the most items one run may stack ("1": the file fixes its batch at 1 and the graph breaks
# with more, so items run one at a time)
MAX_BATCH_KEY = "max_batch"


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
