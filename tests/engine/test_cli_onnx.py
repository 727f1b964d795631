"""What an ONNX user meets: `corral model inspect` on the .onnx file itself, hints for image-like arrays, models
that cannot batch, and `corral model run` fed exactly what onnxruntime is fed (a leading batch dimension)."""

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

from scheduler.cli import main

F = TensorProto.FLOAT


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def conv_classifier(path: Path, input_dims: list, extra_op: str | None = None) -> Path:
    """image [N, 3, H, W] -> Conv -> GlobalAveragePool -> Flatten -> logits [N, 4] (seeded), plus ``extra_op``."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.2).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["logits" if extra_op is None else "f"], name="flatten")]
    if extra_op is not None:
        nodes.append(helper.make_node(extra_op, ["f"], ["logits"], name="odd"))
    graph = helper.make_graph(nodes, "clf", [helper.make_tensor_value_info("image", F, input_dims)],
                              [helper.make_tensor_value_info("logits", F, ["N", 4])], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_inspect_reads_an_onnx_file_and_says_how_to_import_it(tmp_path: Path) -> None:
    src = conv_classifier(tmp_path / "clf.onnx", ["N", 3, "H", "W"])
    result = invoke("model", "inspect", src, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "onnx" and report["ops"] == {"Conv": 1, "Flatten": 1, "GlobalAveragePool": 1}
    assert report["unsupported_ops"] == {} and report["image_like"] == {"image": "NCHW"}
    assert report["import_command"] == "corral model import clf.onnx -o clf.corral --image-input image"
    text = invoke("model", "inspect", src)
    assert "import it with: corral model import clf.onnx -o clf.corral --image-input image" in text.output


def test_inspect_names_the_ops_corral_lacks_in_an_onnx_file(tmp_path: Path) -> None:
    src = conv_classifier(tmp_path / "odd.onnx", [1, 224, 224, 3], extra_op="Hardmax")
    report = json.loads(invoke("model", "inspect", src, "--json").stdout)
    assert report["unsupported_ops"] == {"Hardmax": ["odd"]}
    assert report["image_like"] == {"image": "NHWC"}
    assert "unsupported op Hardmax in nodes: odd" in invoke("model", "inspect", src).output


def test_an_array_that_is_plainly_an_image_gets_a_hint_at_inspect_and_at_run(tmp_path: Path) -> None:
    src = conv_classifier(tmp_path / "clf.onnx", ["N", 3, 32, 32])
    package = tmp_path / "clf.corral"
    assert invoke("model", "import", src, "-o", package).exit_code == 0  # no --image-input
    report = json.loads(invoke("model", "inspect", package, "--json").stdout)
    [hint] = report["hints"]
    assert "input 'image' (3×32×32 float32) looks like an image" in hint and "--image-input image" in hint
    assert report["batching"]["batchable"] is True
    Image.new("RGB", (32, 32)).save(tmp_path / "p.png")
    run = CliRunner().invoke(main, ["model", "run", str(package), str(tmp_path / "p.png"), "-o", str(tmp_path / "o")])
    assert run.exit_code != 0 and "it takes only arrays" in run.output and "--image-input image" in run.output


def test_run_takes_arrays_with_the_files_batch_dimension_and_raw_keeps_it(tmp_path: Path) -> None:
    src = conv_classifier(tmp_path / "clf.onnx", ["N", 3, 16, 16])
    package = tmp_path / "clf.corral"
    assert invoke("model", "import", src, "-o", package).exit_code == 0
    x = np.random.default_rng(1).random((5, 3, 16, 16), dtype=np.float32)  # what onnxruntime is fed
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    result = invoke("model", "run", package, "--input", f"image=@{tmp_path / 'x.npy'}", "--raw", "-o", out)
    assert result.exit_code == 0, result.output
    want = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(np.load(out / "result.npz")["logits"], want, rtol=1e-5, atol=1e-6)  # [5, 4]
    np.testing.assert_allclose(np.load(out / "result_3.npy"), want[3], rtol=1e-5, atol=1e-6)
    assert len(list(out.glob("result_*.npy"))) == 5


def test_inspect_says_when_a_model_cannot_batch(tmp_path: Path) -> None:
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2, 3]),
             helper.make_node("Reshape", ["t", "flat"], ["y"])]
    flat = numpy_helper.from_array(np.array([1, -1], np.int64), "flat")
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", F, [1, 192])], initializer=[flat])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "fixed.onnx")
    package = tmp_path / "fixed.corral"
    assert invoke("model", "import", tmp_path / "fixed.onnx", "-o", package, "--image-input", "x").exit_code == 0
    report = json.loads(invoke("model", "inspect", package, "--json").stdout)
    assert report["batching"]["batchable"] is False and "fixes its batch at 1" in report["batching"]["reason"]
    assert "cannot batch: the file fixes its batch at 1" in invoke("model", "inspect", package).output
