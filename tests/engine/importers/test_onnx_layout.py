"""Channel-last (NHWC) image tensors: read from the shape or as declared, never guessed, and computed exactly
as onnxruntime computes the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from engine import compile
from engine.exceptions import ModelImportError
from engine.images import image_to_tensor
from engine.importers import OnnxImportOptions, import_onnx
from scheduler.cli import main
from tests.engine.backend_names import BACKENDS

F = TensorProto.FLOAT


def nhwc_conv(dims: list[int | str | None], out_nhwc: bool = False,
              out_dims: list[int] | None = None) -> onnx.ModelProto:
    """x [N, H, W, 3] -> Transpose -> Conv 3->4 (seeded) [-> Transpose back to NHWC] -> y."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.2).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["xc", "w"], ["yc" if out_nhwc else "y"], pads=[1, 1, 1, 1])]
    if out_nhwc:
        nodes.append(helper.make_node("Transpose", ["yc"], ["y"], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", F, dims)],
                              [helper.make_tensor_value_info("y", F, out_dims)], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _session(proto: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [[1, 12, 10, 3], ["N", "H", "W", 3]])
def test_an_nhwc_image_input_is_read_from_its_shape_and_matches_onnxruntime(backend: str, dims: list) -> None:
    proto = nhwc_conv(dims)
    model = import_onnx(proto, OnnxImportOptions(image_inputs=["x"], image_scale=1 / 255))
    [feature] = model.description.image_inputs
    assert feature.shape.default[0] == 3  # an item is [C, H, W], as for every image input
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (12, 10, 3), np.uint8))
    got = compile(model, backend).predict({"x": image})["y"]
    chw = image_to_tensor(image, feature)  # [3, 12, 10]
    want = _session(proto).run(None, {"x": chw.transpose(1, 2, 0)[None]})[0][0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_an_nhwc_image_output_maps_back_to_pixels(tmp_path: Path) -> None:
    proto = nhwc_conv([1, 8, 8, 3], out_nhwc=True, out_dims=[1, 8, 8, 3])
    proto.graph.node[1].input[1] = "w3"  # 3 output channels, so the output is an RGB image
    w3 = np.random.default_rng(2).standard_normal((3, 3, 3, 3)).astype(np.float32) * 0.2
    proto.graph.initializer.append(numpy_helper.from_array(w3, "w3"))
    model = import_onnx(proto, OnnxImportOptions(image_inputs=["x"], image_outputs=["y"], image_scale=1 / 255))
    [out] = [f for f in model.description.outputs if f.kind == "image"]
    assert out.shape.default == (3, 8, 8)
    image = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
    got = compile(model, "numpy").predict({"x": image})["y"]  # [3, 8, 8]
    x = image_to_tensor(image, model.description.image_inputs[0]).transpose(1, 2, 0)[None]
    want = _session(proto).run(None, {"x": x})[0][0].transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [["N", "A", "B", "C"], [1, 3, 5, 3], [1, 1, 8, 1]])
def test_a_shape_that_could_be_either_layout_is_refused_with_the_choice(dims: list) -> None:
    with pytest.raises(ModelImportError, match="could be NCHW or NHWC; say which with --image-layout"):
        import_onnx(nhwc_conv(dims), OnnxImportOptions(image_inputs=["x"]))


def test_the_declared_layout_decides_and_is_checked() -> None:
    model = import_onnx(nhwc_conv(["N", "A", "B", "C"]), OnnxImportOptions(image_inputs=["x"], image_layout="NHWC"))
    assert model.description.image_inputs[0].shape.default[0] == 3
    with pytest.raises(ModelImportError, match="axis 1 of .* holds the channels, and 12 channels are not an image"):
        import_onnx(nhwc_conv([1, 12, 10, 3]), OnnxImportOptions(image_inputs=["x"], image_layout="NCHW"))
    with pytest.raises(ModelImportError, match="no axis for an image's channels"):
        import_onnx(nhwc_conv([1, 224, 224, 224]), OnnxImportOptions(image_inputs=["x"]))


def test_the_import_command_takes_a_layout_and_a_decimal_fraction_scale(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(nhwc_conv(["N", "A", "B", "C"]), src)
    out = tmp_path / "m.corral"
    result = CliRunner().invoke(main, ["model", "import", str(src), "-o", str(out), "--image-input", "x",
                                       "--image-layout", "NHWC", "--image-scale", "1/127.5", "--image-bias", "-1"])
    assert result.exit_code == 0, result.output
    inspected = CliRunner().invoke(main, ["model", "inspect", str(out), "--json"])
    [image] = [f for f in json.loads(inspected.stdout)["inputs"] if f["kind"] == "image"]
    assert image["scale"] == [pytest.approx(1 / 127.5)] and image["bias"] == [-1.0]
