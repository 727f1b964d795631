"""Core ML import beyond single layers: the model description (image preprocessing, flexible shapes, labels,
custom layers, metadata), quantized weights against coremltools' own dequantization, refusals and the command line."""

from __future__ import annotations

import io
import logging
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

logging.getLogger("coremltools").setLevel(logging.ERROR)
ct = pytest.importorskip("coremltools")
from coremltools.models.neural_network import flexible_shape_utils as flex
from coremltools.models.neural_network import quantization_utils as qu
from coremltools.proto import NeuralNetwork_pb2

from engine import compile
from engine.exceptions import InputError, ModelImportError
from engine.format import dumps, loads
from engine.importers.coreml import import_coreml
from engine.tensors import QuantizedTensor, to_float_array
from tests.engine.importers.coreml_helpers import RNG, batch, builder, close, rand

# ------------------------------------------------------------------ description

@pytest.mark.parametrize("is_bgr,gray", [(False, False), (True, False), (False, True)])
def test_image_preprocessing(is_bgr: bool, gray: bool) -> None:
    channels = 1 if gray else 3
    b = builder(shape=(channels, 4, 5))
    b.add_activation("id", "LINEAR", "x", "y", params=[1.0, 0.0])
    b.set_pre_processing_parameters(image_input_names=["x"], is_bgr=is_bgr, red_bias=-1.0, green_bias=-2.0,
                                    blue_bias=-3.0, gray_bias=-0.5, image_scale=1 / 255)
    if gray:
        b.spec.description.input[0].type.imageType.colorSpace = ct.proto.FeatureTypes_pb2.ImageFeatureType.GRAYSCALE
    model = import_coreml(b.spec)
    feature = model.description.inputs[0]
    assert feature.kind == "image" and feature.color_layout == ("GRAY" if gray else "BGR" if is_bgr else "RGB")
    assert feature.shape.default == (channels, 4, 5)
    assert feature.scale == pytest.approx((1 / 255,))
    assert feature.bias == ((-0.5,) if gray else (-3.0, -2.0, -1.0) if is_bgr else (-1.0, -2.0, -3.0))
    pixels = RNG.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0], "L") if gray else Image.fromarray(pixels, "RGB")
    got = compile(model).predict({"x": image})["y"]
    if gray:
        want = pixels[None, ..., 0] / 255 - 0.5
    else:
        order = [2, 1, 0] if is_bgr else [0, 1, 2]
        bias = np.array(feature.bias)[:, None, None]
        want = pixels.transpose(2, 0, 1)[order] / 255 + bias
    close(got, want.astype(np.float32), tol=1e-5)


def test_enumerated_and_ranged_image_sizes() -> None:
    b = builder(shape=(3, 8, 8))
    b.add_pooling("pool", 2, 2, 2, 2, "AVERAGE", "VALID", "x", "y")
    b.set_pre_processing_parameters(image_input_names=["x"], image_scale=1.0)
    spec = b.spec
    flex.add_enumerated_image_sizes(spec, "x", sizes=[flex.NeuralNetworkImageSize(8, 8),
                                                      flex.NeuralNetworkImageSize(16, 12)])
    model = import_coreml(spec)
    shape = model.description.inputs[0].shape
    assert shape.default == (3, 8, 8) and shape.enumerated == [(3, 8, 8), (3, 16, 12)]
    compiled = compile(model)
    x = rand(3, 16, 12)
    close(compiled.predict({"x": x})["y"], x.reshape(3, 8, 2, 6, 2).mean(axis=(2, 4)))
    with pytest.raises(InputError, match="not allowed"):
        compiled.predict({"x": rand(3, 10, 10)})

    b = builder(shape=(3, 8, 8))
    b.add_pooling("pool", 2, 2, 2, 2, "MAX", "VALID", "x", "y")
    b.set_pre_processing_parameters(image_input_names=["x"], image_scale=1.0)
    spec = b.spec
    size_range = flex.NeuralNetworkImageSizeRange()
    size_range.add_height_range((4, 32))
    size_range.add_width_range((6, -1))
    flex.update_image_size_range(spec, "x", size_range)
    shape = import_coreml(spec).description.inputs[0].shape
    assert shape.ranges == [(3, 3), (4, 32), (6, None)]
    assert shape.allows((3, 20, 500)) and not shape.allows((3, 40, 8))


def test_enumerated_and_ranged_array_shapes() -> None:
    b = builder(shape=(2, 4, 4))
    b.add_activation("relu", "RELU", "x", "y")
    spec = b.spec
    flex.add_enumerated_multiarray_shapes(spec, "x", shapes=[flex.NeuralNetworkMultiArrayShape(2, 6, 6)])
    shape = import_coreml(spec).description.inputs[0].shape
    assert shape.default == (2, 4, 4) and (2, 6, 6) in shape.enumerated

    b = builder(shape=(2, 4, 4))
    b.add_activation("relu", "RELU", "x", "y")
    spec = b.spec
    shape_range = flex.NeuralNetworkMultiArrayShapeRange()
    shape_range.add_channel_range((2, 2))
    shape_range.add_height_range((1, 10))
    shape_range.add_width_range((4, -1))
    flex.update_multiarray_shape_range(spec, "x", shape_range)
    model = import_coreml(spec)
    assert model.description.inputs[0].shape.ranges == [(2, 2), (1, 10), (4, None)]
    x = rand(2, 9, 30)
    close(compile(model).predict({"x": x})["y"], np.maximum(x, 0))


@pytest.mark.parametrize("labels", [["cat", "dog", "bird", "fish"], [10, 20, 30, 40]])
def test_classifier_labels_and_probabilities(labels: list) -> None:
    w = rand(4, 6)
    b = builder(shape=(6,), mode="classifier")
    b.add_inner_product("fc", w, None, 6, 4, False, input_name="x", output_name="logits")
    b.add_softmax("sm", "logits", "y")
    b.set_class_labels(labels, predicted_feature_name="label")
    model = import_coreml(b.spec)
    desc = model.description
    assert desc.class_labels == [str(v) for v in labels] and desc.class_labels_output == "y"
    assert [f.name for f in desc.outputs] == ["y"] and desc.outputs[0].shape.default == (4,)
    x = rand(6)
    probs = compile(model).predict({"x": x})["y"]
    e = np.exp(w @ x - (w @ x).max())
    close(probs, e / e.sum())


def test_custom_layer_kept_with_class_name_parameters_and_weights() -> None:
    b = builder()
    params = NeuralNetwork_pb2.CustomLayerParams(className="MyStyleShift", description="shifts")
    params.parameters["gain"].doubleValue = 1.5
    params.parameters["mode"].stringValue = "fast"
    params.parameters["steps"].intValue = 3
    params.parameters["flag"].boolValue = True
    params.weights.add().floatValue.extend([1.0, 2.0, 3.0])
    params.weights.add().rawValue = b"\x01\x02"
    b.add_custom("shift", ["x"], ["y"], custom_proto_spec=params)
    model = import_coreml(b.spec)
    assert model.custom_layers() == ["MyStyleShift"]
    (node,) = model.graph.nodes
    assert node.domain == "custom" and node.op_type == "MyStyleShift" and node.name == "shift"
    assert node.attrs == {"gain": 1.5, "mode": "fast", "steps": 3, "flag": 1}
    assert node.inputs[0] == "x" and node.outputs == ["y"]
    weights = [model.graph.initializers[n] for n in node.inputs[1:]]
    np.testing.assert_array_equal(weights[0], [1.0, 2.0, 3.0])
    assert weights[1].dtype == np.uint8 and weights[1].tobytes() == b"\x01\x02"
    back = loads(dumps(model))  # survives corral's own format
    assert back.graph.nodes[0].op_type == "MyStyleShift" and back.graph.nodes[0].attrs["mode"] == "fast"


def test_metadata_and_file_round_trip(tmp_path: Path) -> None:
    b = builder()
    b.add_activation("relu", "RELU", "x", "y")
    spec = b.spec
    spec.description.metadata.author = "Ada"
    spec.description.metadata.license = "MIT"
    spec.description.metadata.versionString = "2.1"
    spec.description.metadata.shortDescription = "a relu"
    path = tmp_path / "relu.mlmodel"
    path.write_bytes(spec.SerializeToString())
    meta = import_coreml(path).description.metadata
    assert (meta.name, meta.author, meta.license, meta.version, meta.description) == (
        "relu", "Ada", "MIT", "2.1", "a relu")


# ------------------------------------------------------------------ quantized weights

def _quantizable_spec():  # type: ignore[no-untyped-def]
    b = builder(shape=(4, 6, 6))
    b.add_convolution("conv", 4, 8, 3, 3, 1, 1, "same", 1, rand(3, 3, 4, 8), rand(8), True,
                      input_name="x", output_name="c")
    b.add_convolution("deconv", 8, 6, 3, 3, 2, 2, "valid", 1, rand(3, 3, 8, 6), None, False, is_deconv=True,
                      input_name="c", output_name="d")
    b.add_flatten("flat", 0, "d", "f")
    b.add_inner_product("fc", rand(5, 6 * 13 * 13), rand(5), 6 * 13 * 13, 5, True, input_name="f", output_name="y")
    return b.spec


WEIGHTED = {"conv": "conv/weights/", "deconv": "deconv/weights/", "fc": "fc/weights/"}


@pytest.mark.parametrize("mode", ["linear", "linear_lut"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_quantized_weights_equal_coremltools_dequantization(mode: str, bits: int) -> None:
    with redirect_stdout(io.StringIO()):  # quantization_utils prints progress
        quantized = qu.quantize_weights(ct.models.MLModel(_quantizable_spec()), bits, mode)
        dequantized = qu.quantize_weights(quantized, bits, "dequantization")
    qmodel = import_coreml(quantized.get_spec())
    fmodel = import_coreml(dequantized.get_spec())
    for layer, prefix in WEIGHTED.items():
        (qname,) = [n for n in qmodel.graph.initializers if n.startswith(prefix)]
        (fname,) = [n for n in fmodel.graph.initializers if n.startswith(prefix)]
        q, f = qmodel.graph.initializers[qname], fmodel.graph.initializers[fname]
        assert isinstance(q, QuantizedTensor) and q.bits == bits, layer
        assert q.scheme == ("lut" if "lut" in mode else "linear")
        assert f.dtype == np.float32
        np.testing.assert_array_equal(to_float_array(q), f)  # bit-exact, coremltools' own dequantization
    assert qmodel.bytes_by_storage().get(f"{'lut' if 'lut' in mode else 'linear'}{bits}", 0) > 0
    x = batch((4, 6, 6))
    np.testing.assert_array_equal(compile(qmodel).run({"x": x})["y"], compile(fmodel).run({"x": x})["y"])


def test_float16_weights() -> None:
    spec = _quantizable_spec()
    with redirect_stdout(io.StringIO()):
        half = qu.quantize_weights(ct.models.MLModel(spec), 16)
    model = import_coreml(half.get_spec())
    assert model.bytes_by_storage().get("float16", 0) > 0
    for prefix in WEIGHTED.values():
        (name,) = [n for n in model.graph.initializers if n.startswith(prefix)]
        (float_name,) = [n for n in import_coreml(spec).graph.initializers if n.startswith(prefix)]
        assert model.graph.initializers[name].dtype == np.float16
        np.testing.assert_array_equal(model.graph.initializers[name],
                                      import_coreml(spec).graph.initializers[float_name].astype(np.float16))
    x = batch((4, 6, 6))
    want = compile(import_coreml(spec)).run({"x": x})["y"]
    close(compile(model).run({"x": x})["y"], want, tol=2e-3 * float(np.abs(want).max()))


# ------------------------------------------------------------------ refusals

def test_unsupported_layer_names_layer_and_type() -> None:
    b = builder()
    b.add_l2_normalize("norm_me", "x", "y")
    with pytest.raises(ModelImportError, match=r"layer 'norm_me' is of type 'l2normalize'"):
        import_coreml(b.spec)


def test_unexpressible_activation_names_the_layer() -> None:
    b = builder()
    b.add_activation("thresh", "THRESHOLDEDRELU", "x", "y", params=0.5)
    with pytest.raises(ModelImportError, match=r"layer 'thresh' \(activation\).*thresholdedReLU"):
        import_coreml(b.spec)


def test_non_neural_network_and_newer_spec_are_refused() -> None:
    spec = ct.proto.Model_pb2.Model(specificationVersion=1)
    spec.identity.SetInParent()
    with pytest.raises(ModelImportError, match="holds a identity model"):
        import_coreml(spec)
    b = builder()
    b.add_activation("relu", "RELU", "x", "y")
    b.spec.specificationVersion = 7
    b.spec.neuralNetwork.arrayInputShapeMapping = NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
    with pytest.raises(ModelImportError, match="specification version 7 .*EXACT_ARRAY_MAPPING"):
        import_coreml(b.spec)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="no such Core ML file"):
        import_coreml(tmp_path / "absent.mlmodel")
    bad = tmp_path / "bad.mlmodel"
    bad.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(ModelImportError, match="bad.mlmodel"):
        import_coreml(bad)


def test_missing_coremltools_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "coremltools.proto", None)  # makes the import raise ImportError
    with pytest.raises(ModelImportError, match=r"pip install 'corral\[coreml\]'"):
        import_coreml("whatever.mlmodel")


# ------------------------------------------------------------------ command line

def test_cli_imports_mlmodel(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from engine.format import load
    from scheduler.cli import main

    b = builder()
    b.add_activation("relu", "RELU", "x", "y")
    src = tmp_path / "relu.mlmodel"
    src.write_bytes(b.spec.SerializeToString())
    out = tmp_path / "relu.corral"
    result = CliRunner().invoke(main, ["model", "import", str(src), "-o", str(out), "--author", "me"])
    assert result.exit_code == 0, result.output
    model = load(out)
    assert model.op_counts() == {"Relu": 1} and model.description.metadata.author == "me"
    refused = CliRunner().invoke(main, ["model", "import", str(src), "-o", str(out), "--size", "8x8"])
    assert refused.exit_code != 0 and "--size apply to ONNX models" in refused.output
