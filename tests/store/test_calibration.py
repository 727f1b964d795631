"""Calibration sets in the store and the int8 variant made from them, locally, over HTTP and from the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from engine import ModelBuilder, compile, load
from engine.exceptions import InputError
from engine.format import save
from engine.quantize import CalibrationSet
from scheduler.cli import main
from store.client import StoreClient
from store.exceptions import MissingCalibrationError, StoreError, VersionExistsError
from store.refs import parse_ref
from store.repository import Repository
from tests.store.conftest import StoreFactory, tiny_model

RNG = np.random.default_rng(31)


def calibration(items: int = 8) -> CalibrationSet:
    return CalibrationSet({"x": RNG.random((items, 3, 8, 8), dtype=np.float32)})


def int8_weights(path: Path) -> list[str]:
    return [k for k, v in load(path).graph.initializers.items() if isinstance(v, np.ndarray) and v.dtype == np.int8]


def test_a_version_takes_one_calibration_set_that_fits_its_inputs(model_file: Path, tmp_path: Path) -> None:
    repo = Repository(tmp_path / "root")
    repo.publish("tiny", model_file)
    with pytest.raises(InputError, match=r"input 'x' items are \[3, 9, 9\]"):
        repo.add_calibration("tiny", 1, CalibrationSet({"x": np.zeros((2, 3, 9, 9), np.float32)}).to_bytes())
    with pytest.raises(InputError, match="not a calibration set"):
        repo.add_calibration("tiny", 1, b"not an npz")
    manifest = repo.add_calibration("tiny", 1, calibration().to_bytes())
    assert manifest["calibration"]["size"] > 0
    with pytest.raises(VersionExistsError, match="has a calibration set already"):
        repo.add_calibration("tiny", 1, calibration().to_bytes())


def test_int8_needs_the_calibration_set_and_says_how_to_give_it(model_file: Path, tmp_path: Path) -> None:
    repo = Repository(tmp_path / "root")
    repo.publish("tiny", model_file)
    with pytest.raises(MissingCalibrationError, match="corral store calibrate tiny:1"):
        repo.variant(parse_ref("tiny:1@int8"))


def test_the_int8_variant_is_a_smaller_graph_that_computes_like_the_master(model_file: Path, tmp_path: Path) -> None:
    repo = Repository(tmp_path / "root")
    repo.publish("tiny", model_file)
    repo.add_calibration("tiny", 1, calibration(16).to_bytes())
    made = repo.variant(parse_ref("tiny:1@int8"))
    assert made.size < model_file.stat().st_size / 2
    assert int8_weights(made.path)  # weights stay 8-bit in the package
    variant, master = load(made.path), load(model_file)
    assert variant.description.metadata.user["corral.quantization"] == "int8"
    assert {n.op_type for n in variant.graph.nodes} >= {"QuantizeLinear", "DequantizeLinear", "Conv"}
    x = {"x": RNG.random((4, 3, 8, 8), dtype=np.float32)}
    want = compile(master, "numpy").run(x)["y"]
    scale = float(np.abs(want).max())
    for backend in ("onnxruntime", "numpy"):
        got = compile(variant, backend).run(x)["y"]
        assert np.abs(got - want).max() < 0.05 * scale, backend  # 8-bit activations: close, not equal
    assert repo.variant(parse_ref("tiny:1@int8")).sha256 == made.sha256  # made once


def test_calibration_over_http(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
        with pytest.raises(StoreError, match="calibration"):
            client.pull("tiny@int8", live.root / "x.corral")
        manifest = client.add_calibration("tiny", 1, calibration().to_bytes())
        assert "calibration" in manifest
        with pytest.raises(StoreError, match="409|already"):
            client.add_calibration("tiny", 1, calibration().to_bytes())
        pulled = client.pull("tiny@int8", live.root / "int8.corral")
    assert int8_weights(pulled.path)
    with StoreClient(live.url) as anonymous, pytest.raises(StoreError, match="401|token"):
        anonymous.add_calibration("tiny", 1, calibration().to_bytes())


def image_model() -> object:
    b = ModelBuilder("imaging", version="1")
    x = b.image_input("image", size=(16, 16), scale=1 / 255)
    rng = np.random.default_rng(1)
    y = b.node("Relu", [b.node("Conv", [x, b.weight("w", rng.standard_normal((8, 3, 3, 3)).astype(np.float32))],
                                pads=[1, 1, 1, 1])])
    b.array_output(b.node("Conv", [y, b.weight("w2", rng.standard_normal((2, 8, 1, 1)).astype(np.float32))]),
                   name="y")
    return b.build()


def test_push_and_calibrate_from_a_folder_of_images(tmp_path: Path) -> None:
    package = tmp_path / "imaging.corral"
    save(image_model(), package)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        Image.fromarray(RNG.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    root = tmp_path / "root"
    runner = CliRunner()
    result = runner.invoke(main, ["store", "push", str(package), "--name", "imaging", "--root", str(root),
                                  "--calibration", str(photos)])
    assert result.exit_code == 0, result.output
    assert "calibration" in result.output
    stored = CalibrationSet.load(root / "imaging" / "1" / "calibration.npz")
    assert stored.inputs["image"].shape == (5, 3, 16, 16)  # the model's own preprocessing, at its size
    result = runner.invoke(main, ["store", "push", str(package), "--name", "imaging", "--root", str(root)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["store", "calibrate", "imaging:2", str(photos), "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "@int8" in result.output
    result = runner.invoke(main, ["store", "pull", "imaging:2@int8", "-o", str(tmp_path / "i8.corral"), "--root",
                                  str(root)])
    assert result.exit_code == 0, result.output
    assert int8_weights(tmp_path / "i8.corral")


def test_the_model_cli_makes_and_compares_an_int8_variant(tmp_path: Path) -> None:
    package = tmp_path / "imaging.corral"
    save(image_model(), package)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.fromarray(RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    runner = CliRunner()
    out = tmp_path / "i8.corral"
    result = runner.invoke(main, ["model", "quantize", str(package), "-o", str(out), "--mode", "int8"])
    assert result.exit_code != 0 and "calibration" in result.output
    result = runner.invoke(main, ["model", "quantize", str(package), "-o", str(out), "--mode", "int8",
                                  "--calibration", str(photos), "-v"])
    assert result.exit_code == 0, result.output
    assert "weight MSE" in result.output and int8_weights(out)
    result = runner.invoke(main, ["model", "compare", str(package), str(out), "--images", str(photos), "--json"])
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.output)
    [variant] = data["variants"]
    assert variant["seconds_per_image"] > 0 and variant["speedup"] > 0 and variant["pays"] in (True, False)
    assert data["base"]["backend"] == "onnxruntime"


def test_tiny_model_has_no_image_input_so_calibration_comes_from_arrays(tmp_path: Path) -> None:
    model = tiny_model()
    with pytest.raises(InputError, match="no image input"):
        CalibrationSet.from_images(model, [tmp_path / "a.png"])
