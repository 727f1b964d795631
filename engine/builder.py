"""Build corral models in Python, without any importer.

    b = ModelBuilder("tiny", author="me")
    x = b.image_input("image", size=(64, 64), sizes=[(64, 64), (128, 128)], scale=1 / 255)
    w = b.weight("w", np.random.rand(8, 3, 3, 3).astype(np.float32))
    y = b.node("Conv", [x, w], pads=[1, 1, 1, 1])
    y = b.node("Relu", [y])
    b.array_output(y, name="features")
    model = b.build()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import numpy as np

from engine.description import ColorLayout, Feature, Metadata, ModelDescription, ShapeSpec
from engine.graph import CUSTOM_DOMAIN, AttrValue, Graph, Model, Node
from engine.tensors import Weight


class ModelBuilder:
    def __init__(self, name: str, *, version: str = "", author: str = "", license: str = "",
                 description: str = "") -> None:
        self.description = ModelDescription(metadata=Metadata(name=name, version=version, author=author,
                                                              license=license, description=description))
        self.graph = Graph()
        self._counter = 0

    def _fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    # ---------------------------------------------------------------- inputs
    def image_input(self, name: str, size: tuple[int, int], *, color_layout: ColorLayout = "RGB",
                    scale: float | Sequence[float] = 1 / 255, bias: float | Sequence[float] = 0.0,
                    sizes: Sequence[tuple[int, int]] = (), height_range: tuple[int, int | None] | None = None,
                    width_range: tuple[int, int | None] | None = None, description: str = "") -> str:
        """An image input, ``[N, C, H, W]`` in the graph; ``size`` is the default (height, width)."""
        channels = 1 if color_layout == "GRAY" else 3
        shape = ShapeSpec(default=(channels, *size), enumerated=[(channels, *s) for s in sizes])
        if height_range or width_range:
            shape.ranges = [(channels, channels), height_range or (size[0], size[0]),
                            width_range or (size[1], size[1])]
        self.description.inputs.append(Feature(
            name=name, kind="image", shape=shape, color_layout=color_layout,
            scale=tuple(np.atleast_1d(np.asarray(scale, np.float32)).tolist()),
            bias=tuple(np.atleast_1d(np.asarray(bias, np.float32)).tolist()), description=description))
        return name

    def array_input(self, name: str, shape: Sequence[int], *, dtype: str = "float32",
                    default: np.ndarray | Sequence[float] | None = None, batched: bool = True,
                    shapes: Sequence[Sequence[int]] = (), ranges: Sequence[tuple[int, int | None]] = (),
                    description: str = "") -> str:
        """An array input; ``batched`` prepends a batch dimension in the graph."""
        spec = ShapeSpec(default=tuple(shape), enumerated=[tuple(s) for s in shapes], ranges=list(ranges))
        self.description.inputs.append(Feature(
            name=name, kind="array", shape=spec, dtype=dtype, batched=batched, description=description,
            default=None if default is None else np.asarray(default, dtype=dtype)))
        return name

    # ---------------------------------------------------------------- graph
    def weight(self, name: str, value: Weight) -> str:
        self.graph.initializers[name] = value
        return name

    @overload
    def node(self, op_type: str, inputs: Sequence[str], *, outputs: Literal[1] = 1, name: str = "",
             domain: str = "", **attrs: AttrValue) -> str: ...
    @overload
    def node(self, op_type: str, inputs: Sequence[str], *, outputs: int | Sequence[str], name: str = "",
             domain: str = "", **attrs: AttrValue) -> str | list[str]: ...
    def node(self, op_type: str, inputs: Sequence[str], *, outputs: int | Sequence[str] = 1,
             name: str = "", domain: str = "", **attrs: AttrValue) -> str | list[str]:
        """Add a node; returns its output name (or names when ``outputs`` > 1)."""
        outs = self._add(op_type, inputs, outputs, name, domain, attrs)
        return outs[0] if len(outs) == 1 else outs

    def custom_layer(self, class_name: str, inputs: Sequence[str], *, name: str = "", **params: AttrValue) -> str:
        """A layer run by a worker-registered implementation class (see the custom-layer registry)."""
        return self._add(class_name, inputs, 1, name, CUSTOM_DOMAIN, params)[0]

    def _add(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str], name: str, domain: str,
             attrs: dict[str, AttrValue]) -> list[str]:
        name = name or self._fresh(op_type.lower())
        outs = [f"{name}_out{i}" for i in range(outputs)] if isinstance(outputs, int) else list(outputs)
        if isinstance(outputs, int) and outputs == 1:
            outs = [name]
        self.graph.nodes.append(Node(op_type=op_type, inputs=list(inputs), outputs=outs, name=name,
                                     attrs=dict(attrs), domain=domain))
        return outs

    # --------------------------------------------------------------- outputs
    def array_output(self, value: str, *, name: str | None = None, shape: Sequence[int] = (),
                     description: str = "") -> str:
        return self._output(value, name, Feature(name="", kind="array", shape=ShapeSpec(tuple(shape)),
                                                 description=description))

    def image_output(self, value: str, *, name: str | None = None, color_layout: ColorLayout = "RGB",
                     scale: float | Sequence[float] = 1 / 255, bias: float | Sequence[float] = 0.0,
                     description: str = "") -> str:
        """An image output: pixels = (tensor - bias) / scale, clipped to 0..255."""
        channels = 1 if color_layout == "GRAY" else 3
        return self._output(value, name, Feature(
            name="", kind="image", shape=ShapeSpec((channels, 0, 0)), color_layout=color_layout,
            scale=tuple(np.atleast_1d(np.asarray(scale, np.float32)).tolist()),
            bias=tuple(np.atleast_1d(np.asarray(bias, np.float32)).tolist()), description=description))

    def classifier_output(self, value: str, labels: Sequence[str], *, name: str | None = None) -> str:
        out = self.array_output(value, name=name, shape=(len(labels),))
        self.description.class_labels = list(labels)
        self.description.class_labels_output = out
        return out

    def _output(self, value: str, name: str | None, feature: Feature) -> str:
        if name and name != value:
            self.node("Identity", [value], outputs=[name], name=f"{name}_identity")
            value = name
        feature.name = value
        self.description.outputs.append(feature)
        return value

    def build(self, validate: bool = True) -> Model:
        model = Model(description=self.description, graph=self.graph)
        if validate:
            model.validate()
        return model
