"""The OCR models that wheels ship read the text of a rendered line on every backend: ddddocr's CNN+LSTM
recognizer and its onnxruntime-quantized form (ConvInteger, DynamicQuantizeLinear, DynamicQuantizeLSTM,
MatMulInteger), rapidocr's PP-OCRv4 recognizer and captcha-whisperer's CRNN. Each model's own preprocessing
and decoding (as its package documents it) around corral's compiled model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from bench._models import MODELS
from engine import compile
from tests.engine.backend_names import BACKENDS


def line(text: str, size: tuple[int, int], font_size: int, ink: str = "black", paper: str = "white") -> Image.Image:
    """``text`` drawn on one line with Pillow's own scalable font (no system fonts needed)."""
    image = Image.new("RGB", size, paper)
    ImageDraw.Draw(image).text((8, (size[1] - font_size) // 2 - 2), text, fill=ink,
                               font=ImageFont.load_default(size=font_size))
    return image


def ctc(indices: np.ndarray, blank: int) -> list[int]:
    """Greedy CTC: repeats collapsed, blanks dropped."""
    kept, previous = [], blank
    for i in indices.tolist():
        if i != blank and i != previous:
            kept.append(i)
        previous = i
    return kept


@pytest.fixture(scope="module")
def ddddocr_charsets() -> dict[str, list[str]]:
    """Each ddddocr model's characters, by model (common.onnx is its "beta" model, common_old.onnx its default)."""
    ddddocr = pytest.importorskip("ddddocr")
    return {"ddddocr-ocr": list(ddddocr.DdddOcr(show_ad=False, beta=True).get_charset()),
            "ddddocr-ocr-old": list(ddddocr.DdddOcr(show_ad=False).get_charset())}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", ["ddddocr-ocr", "ddddocr-ocr-old"])
def test_ddddocr_reads_a_rendered_line(key: str, backend: str, ddddocr_charsets: dict[str, list[str]]) -> None:
    charset = ddddocr_charsets[key]
    compiled = compile(MODELS[key].load(), backend)
    texts = ["x7k9p", "word42", "3b8n2", "queen5"]
    items = []
    for text in texts:
        gray = line(text, (200, 64), 40).convert("L")  # ddddocr: grayscale, height 64, /255
        items.append({"input1": (np.asarray(gray, np.float32) / 255)[None]})  # [1, 64, 200]
    out = compiled.description.outputs[0].name
    for text, result in zip(texts, compiled.predict_batch(items)):
        logits = result[out]  # [T, 8210]
        read = "".join(charset[i] for i in ctc(np.argmax(logits, axis=-1), blank=0))
        assert read == text


@pytest.mark.parametrize("backend", BACKENDS)
def test_pp_ocr_v4_reads_a_rendered_line(backend: str) -> None:
    model = MODELS["ppocr-rec"].load()
    # the model file carries its character list; index 0 is CTC's blank and the last is a space
    characters = ["", *model.description.metadata.user["character"].splitlines(), " "]
    compiled = compile(model, backend)
    texts = ["corral 2026", "HELLO world"]
    items = []
    for text in texts:
        rgb = np.asarray(line(text, (320, 48), 30), np.float32)
        bgr = rgb[:, :, ::-1].transpose(2, 0, 1)  # [3, 48, 320], OpenCV's channel order
        items.append({"x": (bgr / 255 - 0.5) / 0.5})
    for text, result in zip(texts, compiled.predict_batch(items)):
        probabilities = result[compiled.description.outputs[0].name]  # [T, 6625]
        read = "".join(characters[i] for i in ctc(np.argmax(probabilities, axis=-1), blank=0))
        assert read.strip() == text


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_captcha_crnn_reads_a_rendered_line(backend: str) -> None:
    recognizer = pytest.importorskip("captcha_whisperer.recognizer")
    compiled = compile(MODELS["captcha-crnn"].load(), backend)
    texts = ["AB12", "7XK9Q"]
    items = []
    for text in texts:
        rgb = np.asarray(line(text, (160, 60), 36), np.float32)  # 0..255, as the package feeds it
        items.append({"image": np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))})  # BGR [3, 60, 160]
    for text, result in zip(texts, compiled.predict_batch(items)):
        logits = result[compiled.description.outputs[0].name]  # [T, 37]
        [read], _, _ = recognizer.decode(logits[:, None])  # the package's own decoder takes [T, N, C]
        assert read == text
