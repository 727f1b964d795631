"""``corral model quantize`` and ``corral model compare`` end to end, through the root command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from engine.builder import ModelBuilder
from engine.format import load, save
from engine.tensors import QuantizedTensor
from scheduler.cli import main

SIDE = 16


def _write_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    b = ModelBuilder("mixer")
    x = b.image_input("image", size=(SIDE, SIDE))
    strength = b.array_input("strength", (1,), default=[1.0], batched=False)
    mix = (np.eye(SIDE) + rng.normal(size=(SIDE, SIDE)) * 0.05).astype(np.float32)
    y = b.node("MatMul", [x, b.weight("mix.w", mix)], name="mix")
    y = b.node("MatMul", [y, b.weight("tail.w", np.eye(SIDE, dtype=np.float32) * 0.9)], name="tail")
    b.image_output(b.node("Mul", [y, strength]), name="styled")
    save(b.build(), path)
    return path


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, ["model", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_quantize_modes_and_selection(tmp_path: Path) -> None:
    src = _write_model(tmp_path / "float.corral")
    out = _invoke("quantize", str(src), "-o", str(tmp_path / "lut3.corral"), "--mode", "lut", "--bits", "3",
                  "--min-size", "0", "--exclude", "tail", "--kmeans", "kmeans++", "-v")
    assert "lut3" in out and "kept tail.w: excluded by name" in out
    weights = load(tmp_path / "lut3.corral").graph.initializers
    assert isinstance(weights["mix.w"], QuantizedTensor) and weights["mix.w"].scheme == "lut"
    assert weights["mix.w"].bits == 3 and isinstance(weights["tail.w"], np.ndarray)

    _invoke("quantize", str(src), "-o", str(tmp_path / "lin.corral"), "--mode", "linear", "--bits", "4",
            "--granularity", "per-tensor", "--symmetric", "--min-size", "0", "--include-op", "MatMul")
    lin = load(tmp_path / "lin.corral").graph.initializers["tail.w"]
    assert lin.scheme == "linear" and lin.axis == -1 and lin.bias[0] == -lin.scale[0] * 15 / 2

    _invoke("quantize", str(src), "-o", str(tmp_path / "uni.corral"), "--mode", "lut", "--bits", "2",
            "--palette", "uniform", "--group-size", "4", "--min-size", "0")
    uni = load(tmp_path / "uni.corral").graph.initializers["mix.w"]
    assert uni.group_size == 4 and uni.palette.size == 4 * 4
    np.testing.assert_allclose(np.diff(uni.palette[:4], 2), 0, atol=1e-6)

    _invoke("quantize", str(src), "-o", str(tmp_path / "half.corral"), "--mode", "fp16")
    assert load(tmp_path / "half.corral").graph.initializers["mix.w"].dtype == np.float16


def test_quantize_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.corral"
    bad.write_bytes(b"not a model")
    result = CliRunner().invoke(main, ["model", "quantize", str(bad), "-o", str(tmp_path / "x.corral"),
                                       "--mode", "linear"])
    assert result.exit_code != 0 and "not a valid corral model package" in result.output
    result = CliRunner().invoke(main, ["model", "quantize", str(bad), "-o", "x", "--mode", "lut", "--bits", "9"])
    assert result.exit_code == 2 and "--bits" in result.output


def test_compare_table_json_and_sheet(tmp_path: Path, photo_paths: list[Path]) -> None:
    src = _write_model(tmp_path / "float.corral")
    images = tmp_path / "photos"
    images.mkdir()
    for p in photo_paths[:2]:
        shutil.copy(p, images / p.name)
    (images / "notes.txt").write_text("not an image")
    for bits in ("8", "2"):
        _invoke("quantize", str(src), "-o", str(tmp_path / f"linear{bits}.corral"), "--mode", "linear",
                "--bits", bits, "--min-size", "0")
    variants = [str(tmp_path / "linear8.corral"), str(tmp_path / "linear2.corral")]
    table = _invoke("compare", str(src), *variants, "--images", str(images), "--size", "16x16",
                    "--sheet", str(tmp_path / "sheet.png"), "--input", "strength=[0.5]")
    assert "linear8" in table and "linear2" in table and "PSNR" in table
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size[0] > 3 * SIDE and sheet.size[1] > 2 * SIDE

    report = json.loads(_invoke("compare", str(src), *variants, "--images", str(images), "--size", "16x16",
                                "--json", "--input", "strength=[0.5]"))
    assert report["images"] == sorted(p.name for p in photo_paths[:2])
    lin8, lin2 = report["variants"]
    assert lin8["size_bytes"] == (tmp_path / "linear8.corral").stat().st_size
    assert lin8["outputs"]["styled"]["psnr_db"] > lin2["outputs"]["styled"]["psnr_db"]
    # strength halves every pixel, so the halved output's errors are halved too
    full = json.loads(_invoke("compare", str(src), *variants, "--images", str(images), "--size", "16x16", "--json"))
    assert np.isclose(full["variants"][1]["outputs"]["styled"]["max_abs_error"],
                      2 * lin2["outputs"]["styled"]["max_abs_error"], rtol=1e-3)


def test_compare_rejects_bad_input_names(tmp_path: Path, photo_paths: list[Path]) -> None:
    src = _write_model(tmp_path / "float.corral")
    result = CliRunner().invoke(main, ["model", "compare", str(src), str(src), "--images",
                                       str(photo_paths[0].parent), "--input", "nope=1"])
    assert result.exit_code == 2 and "nope" in result.output
