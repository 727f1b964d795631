"""Models the .corral format tests round-trip and break: one with every kind of content, and a tiny one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import ModelBuilder
from engine.graph import Model
from engine.proto import corral_model_pb2 as pb
from engine.tensors import QuantizedTensor, pack_bits

BITS = range(1, 9)


def _quantized_weights() -> dict[str, QuantizedTensor]:
    """Linear per-tensor / per-axis and LUT per-tensor / grouped, at every width."""
    rng = np.random.default_rng(7)
    out: dict[str, QuantizedTensor] = {}
    shape = (6, 5, 3)  # 90 codes: a byte boundary falls mid-code for most widths
    for bits in BITS:
        codes = rng.integers(0, 1 << bits, size=90)
        packed = pack_bits(codes, bits)
        out[f"lin{bits}_t"] = QuantizedTensor(shape, bits, packed, "linear", -1,
                                              scale=np.float32([0.03 * bits]), bias=np.float32([-0.5]))
        out[f"lin{bits}_a"] = QuantizedTensor(shape, bits, packed, "linear", 0,
                                              scale=rng.uniform(0.01, 1, 6).astype(np.float32),
                                              bias=rng.uniform(-1, 1, 6).astype(np.float32))
        out[f"lut{bits}_t"] = QuantizedTensor(shape, bits, packed, "lut", -1,
                                              palette=rng.normal(size=1 << bits).astype(np.float32))
        out[f"lut{bits}_g"] = QuantizedTensor(shape, bits, packed, "lut", 0, group_size=4,
                                              palette=rng.normal(size=2 << bits).astype(np.float32))
    return out


def rich_model() -> Model:
    """Every kind of feature, shape spec, attribute and weight storage."""
    b = ModelBuilder("rich", version="2.1", author="Ada", license="BSD-3-Clause", description="all features")
    b.description.metadata.user.update({"source": "tests", "ünicode": "välue ✓"})
    rgb = b.image_input("rgb", (16, 16), scale=[1 / 58.4, 1 / 57.1, 1 / 57.4], bias=[-2.1, -2.0, -1.8],
                        sizes=[(32, 32), (16, 24)], description="ImageNet-normalised photo")
    bgr = b.image_input("bgr", (8, 8), color_layout="BGR", height_range=(4, None), width_range=(4, 64))
    gray = b.image_input("gray", (8, 8), color_layout="GRAY", scale=2 / 255, bias=-1.0)
    style = b.array_input("style", (26,), default=np.eye(26, dtype=np.float32)[3], batched=False)
    ids = b.array_input("ids", (4,), dtype="int64", shapes=[(8,), (16,)])
    b.weight("w32", np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4))
    b.weight("w16", np.array([0.5, -1.25, 3.0], np.float16))
    b.weight("shape", np.array([1, -1], np.int64))
    for name, q in _quantized_weights().items():
        b.weight(name, q)
    r = b.node("Relu", [rgb], name="relu", alpha=0.5, count=3, mode="reflect", pads=[0, 1, 2, 3],
               coeffs=[0.5, -0.25], labels=["a", "bc"], value=np.arange(6, dtype=np.float32).reshape(2, 3),
               empty=[], qt=QuantizedTensor((3,), 2, pack_bits(np.array([0, 1, 3]), 2), "linear"))
    c = b.custom_layer("Swirl", [bgr, style], strength=0.75)
    g = b.node("Identity", [gray])
    parts = b.node("Split", [ids], outputs=["lo", "hi"], axis=0)
    b.image_output(r, name="out_rgb", scale=1 / 255)
    b.array_output(c, name="swirled", shape=(3, 8, 8))
    b.array_output(g)
    b.array_output(parts[0])
    b.classifier_output(b.node("Softmax", [style], name="probs"), [f"style {i}" for i in range(26)])
    return b.build()


def tiny_model() -> Model:
    b = ModelBuilder("tiny")
    x = b.array_input("x", (2, 3))
    w = b.weight("w", np.ones((2, 3), np.float32))
    b.array_output(b.node("Relu", [b.node("Add", [x, w], name="add")], name="y"))
    return b.build()


def same_value(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, QuantizedTensor):
        return (isinstance(b, QuantizedTensor) and (a.shape, a.bits, a.packed, a.scheme, a.axis, a.group_size)
                == (b.shape, b.bits, b.packed, b.scheme, b.axis, b.group_size)
                and all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("scale", "bias", "palette")))
    if isinstance(a, float):
        return isinstance(b, float) and np.float32(a) == np.float32(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b




def write_package(tmp_path: Path, content: pb.ModelPackage | bytes, name: str = "bad.corral") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
    return path
