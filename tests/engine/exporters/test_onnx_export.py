"""ONNX export: a dequantized float graph that onnxruntime runs with corral's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from engine.builder import ModelBuilder
from engine.compiler import compile as compile_model
from engine.exporters.onnx import ExportError, export_onnx
from engine.graph import Model
from engine.quantize import QuantizeOptions, quantize_model


def _model() -> Model:
    rng = np.random.default_rng(0)
    b = ModelBuilder("exp", author="tests", version="3")
    x = b.image_input("image", size=(12, 12), sizes=[(12, 12), (16, 20)], scale=1 / 255)
    gain = b.array_input("gain", (1,), default=[1.5], batched=False)
    y = b.node("Conv", [x, b.weight("c1.w", rng.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.3),
                        b.weight("c1.b", rng.normal(size=8).astype(np.float32))], pads=[1, 1, 1, 1])
    y = b.node("Relu", [y])
    y = b.node("Clip", [y], min=0.0, max=2.0)  # opset-6 form: bounds as attributes
    y = b.node("Mul", [y, gain])
    y = b.node("Dropout", [y])
    pooled = b.node("ReduceMean", [y], axes=[2, 3], keepdims=1)  # [N, 8, 1, 1]
    flat = b.node("Squeeze", [pooled], axes=[2, 3])  # opset-11 form: axes attribute
    logits = b.node("Gemm", [flat, b.weight("fc.w", rng.normal(size=(5, 8)).astype(np.float32))], transB=1)
    b.node("Softmax", [logits], outputs=["probs"], name="soft", axis=1, opset=11)
    b.classifier_output("probs", list("abcde"))
    b.array_output(y, name="features")
    return b.build()


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


@pytest.mark.parametrize("variant", ["float", "linear4", "lut3", "fp16"])
def test_onnxruntime_matches_corral(tmp_path: Path, variant: str) -> None:
    model = _model()
    if variant != "float":
        mode, bits = (variant, 16) if variant == "fp16" else (variant[:-1], int(variant[-1]))
        model = quantize_model(model, QuantizeOptions(mode=mode, bits=bits, min_size=0))  # type: ignore[arg-type]
    path = export_onnx(model, tmp_path / "m.onnx")
    compiled = compile_model(model)
    rng = np.random.default_rng(1)
    for shape in [(2, 3, 12, 12), (1, 3, 16, 20)]:
        image = rng.uniform(0, 1, size=shape).astype(np.float32)
        ours = compiled.run({"image": image, "gain": np.array([0.7], np.float32)})
        theirs = _ort(path, {"image": image, "gain": np.array([0.7], np.float32)})
        for name in ("probs", "features"):
            np.testing.assert_allclose(theirs[name], ours[name], atol=1e-4, rtol=0)
    # the default input value travels as an initializer of the same name
    defaulted = _ort(path, {"image": image})
    np.testing.assert_allclose(defaulted["features"], compiled.run({"image": image, "gain": np.array([1.5], np.float32)})["features"],
                               atol=1e-4)


def test_description_goes_to_metadata(tmp_path: Path) -> None:
    proto = onnx.load(str(export_onnx(_model(), tmp_path / "m.onnx")))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["corral.author"] == "tests" and proto.model_version == 3
    assert '"scale": [0.003921' in props["corral.image.image"]
    assert props["corral.class_labels_output"] == "probs"
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, "image_d1", "image_d2"]
    assert proto.opset_import[0].version == 17
    # quantized weights are exported as float32
    q = quantize_model(_model(), QuantizeOptions(mode="lut", bits=2, min_size=0))
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in onnx.load(str(export_onnx(q, tmp_path / "q.onnx"))).graph.initializer
               if t.name.endswith(".w"))


def test_custom_layers_cannot_be_exported(tmp_path: Path) -> None:
    b = ModelBuilder("custom")
    x = b.array_input("x", (4,))
    b.array_output(b.custom_layer("MySwish", [x], beta=2.0))
    with pytest.raises(ExportError, match="custom layer 'MySwish'"):
        export_onnx(b.build(validate=False), tmp_path / "c.onnx")
