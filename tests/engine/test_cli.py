"""``corral model import / inspect / run`` through click's runner, and once through the real console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from engine import ModelBuilder, save
from scheduler.cli import main

CORRAL = Path(sys.executable).with_name("corral")


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture
def brighten(tmp_path) -> Path:
    """Image in (8..64 square-ish range, default 16×16), image out: pixel * 0.5 + 64."""
    b = ModelBuilder("brighten", author="tests", version="2.1", license="MIT", description="halves and lifts")
    x = b.image_input("image", size=(16, 16), height_range=(8, 64), width_range=(8, 64), scale=1 / 255)
    y = b.node("Mul", [x, b.weight("half", np.array(0.5, np.float32))])
    y = b.node("Add", [y, b.weight("lift", np.array(0.25, np.float32))])
    b.image_output(y, name="bright", scale=1 / 255)
    path = tmp_path / "brighten.corral"
    save(b.build(), path)
    return path


@pytest.fixture
def adder(tmp_path) -> Path:
    """Arrays only: y = relu(a + c), c defaults to ones."""
    b = ModelBuilder("adder")
    a = b.array_input("a", (3,))
    c = b.array_input("c", (3,), default=[1, 1, 1])
    b.array_output(b.node("Relu", [b.node("Add", [a, c])]), name="y")
    path = tmp_path / "adder.corral"
    save(b.build(), path)
    return path


@pytest.fixture
def classifier(tmp_path) -> Path:
    """Mean colour of an 8×8 image through a softmax: labels red, green, blue."""
    b = ModelBuilder("colours")
    x = b.image_input("image", size=(8, 8), scale=1 / 255)
    m = b.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
    p = b.node("Softmax", [b.node("Mul", [m, b.weight("sharpen", np.array(10.0, np.float32))])], axis=1)
    b.classifier_output(p, ["red", "green", "blue"], name="probs")
    path = tmp_path / "colours.corral"
    save(b.build(), path)
    return path


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    d = tmp_path / "in"
    d.mkdir()
    files = {"small": d / "small.png", "big": d / "big.jpg", "text": d / "notes.jpg", "empty": d / "empty.png"}
    Image.new("RGB", (20, 10), (100, 0, 200)).save(files["small"])
    Image.new("RGB", (200, 100), (0, 50, 0)).save(files["big"])
    files["text"].write_text("not a picture")
    files["empty"].write_bytes(b"")
    return files


# ------------------------------------------------------------------- inspect

def test_inspect_json_reports_everything(brighten):
    result = invoke("model", "inspect", brighten, "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["name"] == "brighten"
    assert r["metadata"] | {"user": {}} == {"name": "brighten", "version": "2.1", "author": "tests",
                                           "license": "MIT", "description": "halves and lifts", "user": {}}
    (inp,) = r["inputs"]
    assert inp["name"] == "image" and inp["kind"] == "image" and inp["shape"] == [3, 16, 16]
    assert inp["flexibility"] == "range" and inp["ranges"] == [[3, 3], [8, 64], [8, 64]]
    assert inp["color_layout"] == "RGB" and inp["scale"] == [pytest.approx(1 / 255)]
    assert r["outputs"][0]["name"] == "bright" and r["outputs"][0]["kind"] == "image"
    assert r["ops"] == {"Add": 1, "Identity": 1, "Mul": 1}
    assert r["parameters"] == 2 and r["bytes_by_storage"] == {"float32": 8}
    assert r["unsupported_ops"] == {} and r["valid"] is True
    assert len(r["sha256"]) == 64 and r["size_bytes"] == brighten.stat().st_size


def test_inspect_shows_unsupported_ops_without_failing(tmp_path):
    b = ModelBuilder("future")
    x = b.array_input("x", (4,))
    y = b.node("Hardmax", [x], name="act1")
    y = b.node("Hardmax", [y], name="act2")
    b.array_output(b.node("Relu", [y]), name="y")
    path = tmp_path / "future.corral"
    save(b.build(validate=False), path)

    result = invoke("model", "inspect", path, "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["unsupported_ops"] == {"Hardmax": ["act1", "act2"]}
    assert r["valid"] is False and "Hardmax" in r["problems"][0]
    assert r["ops"]["Hardmax"] == 2

    text = invoke("model", "inspect", path)
    assert text.exit_code == 0
    assert "unsupported op Hardmax in nodes: act1, act2" in text.output

    refused = invoke("model", "run", path, "--input", "x=[1,2,3,4]", "--out", tmp_path / "o")
    assert refused.exit_code == 1 and "unsupported op types: Hardmax" in refused.output


def test_inspect_reports_a_corrupt_package(tmp_path):
    path = tmp_path / "broken.corral"
    path.write_bytes(b"\x0a\xff\xff\xff")
    result = invoke("model", "inspect", path)
    assert result.exit_code == 1 and "broken.corral: not a valid corral model package" in result.output


def test_inspect_classifier_counts_labels(classifier):
    r = json.loads(invoke("model", "inspect", classifier, "--json").stdout)
    assert r["class_labels"] == 3 and r["class_labels_output"] == "probs"


# ----------------------------------------------------------------------- run

def test_run_array_model_from_inputs(adder, tmp_path):
    out = tmp_path / "out"
    result = invoke("model", "run", adder, "--input", "a=[1,-5,3]", "--out", out, "--raw")
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(out / "result.npy"), [2.0, 0.0, 4.0])
    with np.load(out / "result.npz") as z:
        assert z.files == ["y"] and np.array_equal(z["y"], [2.0, 0.0, 4.0])


def test_run_array_inputs_from_npy_and_json_output(adder, tmp_path):
    np.save(tmp_path / "c.npy", np.array([[10, 10, 10]], np.float32))   # leading batch of 1 is dropped
    out = tmp_path / "out"
    result = invoke("model", "run", adder, "--input", "a=[1,2,3]", "--input", f"c=@{tmp_path / 'c.npy'}",
                    "--out", out, "--array-format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "result.json").read_text())["values"] == [11.0, 12.0, 13.0]


def test_run_reports_missing_and_unknown_inputs(adder, tmp_path):
    missing = invoke("model", "run", adder, "--out", tmp_path / "o")
    assert missing.exit_code == 1 and "missing inputs: a (array 3)" in missing.output
    unknown = invoke("model", "run", adder, "--input", "b=1", "--out", tmp_path / "o")
    assert unknown.exit_code == 2 and "model has no input 'b'" in unknown.output
    bad = invoke("model", "run", adder, "--input", "a=[1,2", "--out", tmp_path / "o")
    assert bad.exit_code == 2 and "neither a JSON number or list nor @file.npy" in bad.output
    wrong_shape = invoke("model", "run", adder, "--input", "a=[1,2]", "--out", tmp_path / "o")
    assert wrong_shape.exit_code == 1 and "shape [2] is not allowed" in wrong_shape.output


def test_run_images_bad_files_fail_alone(brighten, photos, tmp_path):
    out = tmp_path / "out"
    result = invoke("model", "run", brighten, photos["small"], photos["text"], photos["big"], photos["empty"],
                    tmp_path / "absent.png", "--out", out, "--batch-size", "2")
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["big.png", "small.png"]
    err = result.stderr
    assert f"{photos['text']}: not an image file" in err
    assert f"{photos['empty']}: empty file" in err
    assert f"{tmp_path / 'absent.png'}: no such file" in err
    assert "5 images: 2 done, 3 failed" in err
    small = np.asarray(Image.open(out / "small.png"))
    assert small.shape == (10, 20, 3) and small[0, 0].tolist() == [114, 64, 164]   # size allowed: kept
    assert Image.open(out / "big.png").size == (64, 32)   # 200×100 scaled into the 8..64 range


def test_run_a_failing_item_fails_alone_within_its_batch(tmp_path):
    # The input range admits any size, but the graph only works on 16×16: a
    # 20×10 image fails inside the model, in the same batch as a good one.
    b = ModelBuilder("picky")
    x = b.image_input("image", size=(16, 16), height_range=(8, 64), width_range=(8, 64), scale=1 / 255)
    flat = b.node("Reshape", [x, b.weight("flat", np.array([-1, 768], np.int64))])
    back = b.node("Reshape", [flat, b.weight("back", np.array([-1, 3, 16, 16], np.int64))])
    b.image_output(back, name="same", scale=1 / 255)
    pkg = tmp_path / "picky.corral"
    save(b.build(), pkg)
    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "good.png")
    Image.new("RGB", (20, 10)).save(tmp_path / "odd.png")
    out = tmp_path / "out"
    result = invoke("model", "run", pkg, tmp_path / "odd.png", tmp_path / "good.png", "--out", out,
                    "--batch-size", "2")
    assert result.exit_code == 1
    assert [p.name for p in out.iterdir()] == ["good.png"]
    assert f"{tmp_path / 'odd.png'}: Reshape node" in result.stderr
    assert "2 images: 1 done, 1 failed" in result.stderr


def test_run_resize_reject_names_the_allowed_sizes(brighten, photos, tmp_path):
    result = invoke("model", "run", brighten, photos["big"], photos["small"], "--out", tmp_path / "o",
                    "--resize", "reject")
    assert result.exit_code == 1
    assert f"{photos['big']}: input 'image': a 200×100" in result.stderr
    assert "accepts C×H×W 3×8..64×8..64" in result.stderr
    assert (tmp_path / "o" / "small.png").exists()


def test_run_directory_and_raw(brighten, photos, tmp_path):
    for key in ("text", "empty"):
        photos[key].unlink()
    out = tmp_path / "out"
    result = invoke("model", "run", brighten, photos["small"].parent, "--out", out, "--raw")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["big.npz", "big.png", "small.npz", "small.png"]
    with np.load(out / "small.npz") as z:
        assert z["bright"].shape == (3, 10, 20)


def test_run_image_input_given_as_array(brighten, tmp_path):
    np.save(tmp_path / "x.npy", np.full((3, 8, 12), 0.6, np.float32))
    out = tmp_path / "out"
    result = invoke("model", "run", brighten, "--input", f"image=@{tmp_path / 'x.npy'}", "--out", out)
    assert result.exit_code == 0, result.output
    img = np.asarray(Image.open(out / "result.png"))
    assert img.shape == (8, 12, 3) and img[0, 0, 0] == 140   # (0.6 * 0.5 + 0.25) * 255 = 140.25


def test_run_classifier_writes_top_labels(classifier, tmp_path):
    Image.new("RGB", (8, 8), (10, 240, 20)).save(tmp_path / "leaf.png")
    out = tmp_path / "out"
    result = invoke("model", "run", classifier, tmp_path / "leaf.png", "--out", out)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "leaf.json").read_text())
    assert [t["label"] for t in doc["top"]] == ["green", "blue", "red"]


def test_run_options_come_from_the_environment(brighten, photos, tmp_path):
    bad = invoke("model", "run", brighten, photos["small"], "--out", tmp_path / "o",
                 env={"CORRAL_MODEL_RUN_BACKEND": "quantum"})
    assert bad.exit_code == 1 and "unknown backend 'quantum'" in bad.output
    raw = invoke("model", "run", brighten, photos["small"], "--out", tmp_path / "o",
                 env={"CORRAL_MODEL_RUN_RAW": "1"})
    assert raw.exit_code == 0 and (tmp_path / "o" / "small.npz").exists()


def test_run_refuses_images_for_an_array_model(adder, photos, tmp_path):
    result = invoke("model", "run", adder, photos["small"], "--input", "a=[1,2,3]", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "it takes only arrays" in result.output


# -------------------------------------------------------------------- import

def test_import_refuses_other_formats(tmp_path):
    src = tmp_path / "model.pt"
    src.write_bytes(b"torch")
    result = invoke("model", "import", src, "-o", tmp_path / "m.corral")
    assert result.exit_code == 1 and "corral imports ONNX models (.onnx)" in result.output


@pytest.mark.parametrize("args,message", [
    (["--size", "12"], "give height x width"),
    (["--image-scale", "a,b"], "give one number or three"),
    (["--height-range", "9:3"], "give LO:HI"),
])
def test_import_option_errors(tmp_path, args, message):
    src = tmp_path / "m.onnx"
    src.write_bytes(b"")
    result = invoke("model", "import", src, "-o", tmp_path / "m.corral", *args)
    assert result.exit_code == 2 and message in result.output


# ------------------------------------------------------- real console script

def test_console_script_runs_a_model_end_to_end(brighten, photos, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([str(CORRAL), "model", "run", str(brighten), str(photos["small"]), str(photos["text"]),
                           "--out", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert (out / "small.png").exists() and not (out / "notes.png").exists()
    assert "notes.jpg: not an image file" in proc.stderr and "2 images: 1 done, 1 failed" in proc.stderr
    inspected = subprocess.run([str(CORRAL), "model", "inspect", str(brighten), "--json"], capture_output=True,
                               text=True, timeout=120, check=True)
    assert json.loads(inspected.stdout)["ops"]["Mul"] == 1


def _tiny_onnx(path: Path) -> Path:
    """y = x * 0.5 over an image [1, 3, h, w]; probs = softmax(mean over h, w) over the same image."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    nodes = [helper.make_node("Mul", ["x", "half"], ["y"], name="halve"),
             helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0, name="mean"),
             helper.make_node("Softmax", ["m"], ["probs"], axis=1, name="soft")]
    graph = helper.make_graph(nodes, "tiny", [x], [y, probs], initializer=[half])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_import_onnx_then_inspect_and_run(tmp_path):
    src = _tiny_onnx(tmp_path / "tiny.onnx")
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    pkg = tmp_path / "tiny.corral"
    result = invoke("model", "import", src, "-o", pkg, "--name", "tiny", "--image-input", "x", "--image-output", "y",
                    "--image-scale", "1/255", "--size", "8x8", "--size", "16x16", "--class-labels", labels,
                    "--class-labels-output", "probs", "--author", "tests", "--version", "3")
    assert result.exit_code == 0, result.output
    assert f"wrote {pkg}" in result.stderr

    r = json.loads(invoke("model", "inspect", pkg, "--json").stdout)
    assert r["name"] == "tiny" and r["metadata"]["author"] == "tests" and r["metadata"]["version"] == "3"
    (x,) = r["inputs"]
    assert x["kind"] == "image" and x["flexibility"] == "enumerated"
    assert x["enumerated"] == [[3, 8, 8], [3, 16, 16]]
    assert {o["name"]: o["kind"] for o in r["outputs"]} == {"y": "image", "probs": "array"}
    assert r["class_labels"] == 3 and r["class_labels_output"] == "probs"

    Image.new("RGB", (10, 10), (200, 20, 20)).save(tmp_path / "red.png")
    out = tmp_path / "out"
    ran = invoke("model", "run", pkg, tmp_path / "red.png", "--out", out, "--resize", "pad")
    assert ran.exit_code == 0, ran.output
    assert sorted(p.name for p in out.iterdir()) == ["red_probs.json", "red_y.png"]
    y = np.asarray(Image.open(out / "red_y.png"))
    assert y.shape == (8, 8, 3) and y[4, 4].tolist() == [100, 10, 10]   # halved; output maps back by 1/255
    top = json.loads((out / "red_probs.json").read_text())["top"]
    assert top[0]["label"] == "red"


def test_import_and_run_the_real_style_network(multistyle26_onnx, photo_paths, tmp_path):
    pkg = tmp_path / "style.corral"
    result = invoke("model", "import", multistyle26_onnx, "-o", pkg, "--image-input", "image",
                    "--image-output", "stylized", "--image-scale", "1/255", "--size", "96x128", "--size", "128x128")
    assert result.exit_code == 0, result.output
    weights = [0.0] * 26
    weights[3] = 1.0
    out = tmp_path / "out"
    ran = invoke("model", "run", pkg, photo_paths[1], "--input", f"style_weights={json.dumps(weights)}",
                 "--out", out)
    assert ran.exit_code == 0, ran.output
    stylized = Image.open(out / "coffee.png")
    assert stylized.size == (128, 96) and np.asarray(stylized).std() > 5   # 600×400 → nearest size 96×128
