"""Comparing quantized variants with the float model, and the contact sheet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.builder import ModelBuilder
from engine.compare import Variant, compare_models, image_files, write_contact_sheet
from engine.exceptions import InputError
from engine.format import save
from engine.graph import Model
from engine.quantize import QuantizeOptions, quantize_model

SIDE = 24


def _mixer() -> Model:
    """Image in, image out: each row of pixels mixed by a [W, W] matrix (a quantizable MatMul weight)."""
    rng = np.random.default_rng(0)
    b = ModelBuilder("mixer")
    x = b.image_input("image", size=(SIDE, SIDE))
    mix = (np.eye(SIDE) * 0.8 + rng.normal(size=(SIDE, SIDE)) * 0.05).astype(np.float32)
    y = b.node("MatMul", [x, b.weight("mix", mix)])
    y = b.node("Mul", [y, b.weight("gain", np.array([[[[1.1]], [[0.9]], [[1.0]]]], np.float32))])
    b.image_output(y, name="styled")
    b.array_output(b.node("ReduceMean", [x], axes=[1], keepdims=0), name="gray")
    return b.build()


def _classifier() -> Model:
    rng = np.random.default_rng(1)
    b = ModelBuilder("cls")
    x = b.image_input("image", size=(SIDE, SIDE))
    y = b.node("ReduceMean", [x], axes=[2, 3], keepdims=0)  # [N, 3]
    y = b.node("Gemm", [y, b.weight("fc", rng.normal(size=(40, 3)).astype(np.float32))], transB=1)
    b.classifier_output(y, [f"class{i}" for i in range(40)], name="scores")
    return b.build()


def test_quality_ranks_variants_and_identical_is_infinite(photo_paths: list[Path]) -> None:
    base = _mixer()
    variants = [Variant.from_model("same", base),
                Variant.from_model("linear8", quantize_model(base, QuantizeOptions(mode="linear", bits=8, min_size=0))),
                Variant.from_model("lut1", quantize_model(base, QuantizeOptions(mode="lut", bits=1, min_size=0)))]
    result = compare_models(Variant.from_model("float", base), variants, photo_paths[:3], size=(SIDE, SIDE))
    same, lin8, lut1 = result.variants
    assert same.outputs["styled"].psnr_db is None and same.outputs["styled"].max_abs_error == 0
    assert lin8.outputs["styled"].is_image and not lin8.outputs["gray"].is_image
    assert lin8.outputs["gray"].psnr_db is None and lin8.outputs["gray"].max_abs_error == 0  # no weight on path
    assert lin8.outputs["styled"].psnr_db > 40 > lut1.outputs["styled"].psnr_db
    assert lin8.outputs["styled"].snr_db > lut1.outputs["styled"].snr_db
    assert 0 < lin8.outputs["styled"].max_abs_error < lut1.outputs["styled"].max_abs_error
    assert len(lut1.image_psnr_db) == 3 and all(p is not None and p < 40 for p in lut1.image_psnr_db)
    assert lut1.bytes_by_storage["lut1"] < 4 * SIDE * SIDE / 16 and "float32" in result.base.bytes_by_storage
    json.dumps(result.to_json())  # serializable as is


def test_pixels_psnr_matches_a_direct_computation(photo_paths: list[Path]) -> None:
    base = _mixer()
    variant = quantize_model(base, QuantizeOptions(mode="linear", bits=3, min_size=0))
    result = compare_models(Variant.from_model("f", base), [Variant.from_model("v", variant)], photo_paths[:1],
                            size=(SIDE, SIDE))
    from engine.compiler import compile as compile_model
    from engine.images import decode_image, image_to_tensor
    from engine.images.tensor import resize

    feature = base.description.inputs[0]
    item = {"image": image_to_tensor(resize(decode_image(photo_paths[0]), (SIDE, SIDE), "fit"), feature)}
    a = np.clip(compile_model(base).predict(item)["styled"] * 255, 0, 255)
    b = np.clip(compile_model(variant).predict(item)["styled"] * 255, 0, 255)
    expected = 10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))
    assert result.variants[0].outputs["styled"].psnr_db == pytest.approx(expected, abs=1e-3)


def test_top1_agreement_for_classifiers(photo_paths: list[Path]) -> None:
    base = _classifier()
    lin8 = quantize_model(base, QuantizeOptions(mode="linear", bits=8, min_size=0))
    lut1 = quantize_model(base, QuantizeOptions(mode="lut", bits=1, min_size=0))
    result = compare_models(Variant.from_model("f", base), [Variant.from_model("8", lin8),
                                                             Variant.from_model("1", lut1)], photo_paths,
                            size=(SIDE, SIDE))
    assert result.variants[0].outputs["scores"].top1_agreement == 1.0
    # one bit per weight: two values for 120 weights; the argmax moves on at least one photo
    assert result.variants[1].outputs["scores"].top1_agreement < 1.0
    assert result.variants[1].outputs["scores"].psnr_db is None


def test_contact_sheet_layout(tmp_path: Path, photo_paths: list[Path]) -> None:
    base = _mixer()
    save(base, tmp_path / "float.corral")
    save(quantize_model(base, QuantizeOptions(mode="lut", bits=2, min_size=0)), tmp_path / "lut2.corral")
    base_v = Variant.from_path(tmp_path / "float.corral")
    assert base_v.name == "float" and base_v.size_bytes == (tmp_path / "float.corral").stat().st_size
    result = compare_models(base_v, [Variant.from_path(tmp_path / "lut2.corral")], photo_paths[:2],
                            size=(SIDE, SIDE))
    sheet = Image.open(write_contact_sheet(result, tmp_path / "sheet.png"))
    assert sheet.format == "PNG"
    from engine.compare import LABEL_HEIGHT, PAD

    assert sheet.size == (PAD + 2 * (SIDE + PAD), PAD + 2 * (SIDE + LABEL_HEIGHT + PAD))
    # the cell in row 1, column 0 is the base output for the second photo, unscaled
    cell = np.asarray(sheet)[PAD + SIDE + LABEL_HEIGHT + PAD:][:SIDE, PAD:PAD + SIDE]
    np.testing.assert_array_equal(cell, np.asarray(result.pictures[0][1]))
    # the label strip below it carries text (dark pixels on white)
    label = np.asarray(sheet)[PAD + SIDE: PAD + SIDE + LABEL_HEIGHT, PAD:PAD + 2 * SIDE + PAD]
    assert (label < 128).any()


def test_errors_name_the_problem(tmp_path: Path, photo_paths: list[Path]) -> None:
    with pytest.raises(InputError, match="no images"):
        image_files(tmp_path)
    b = ModelBuilder("arrays")
    x = b.array_input("x", (4,))
    b.array_output(b.node("Relu", [x]))
    arrays = b.build()
    with pytest.raises(InputError, match="'arrays' declares no image input"):
        compare_models(Variant.from_model("arrays", arrays), [], photo_paths[:1])
    result = compare_models(Variant.from_model("cls", _classifier()), [], photo_paths[:1], size=(SIDE, SIDE))
    with pytest.raises(InputError, match="contact sheet needs an image output"):
        write_contact_sheet(result, tmp_path / "x.png")
