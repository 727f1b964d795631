"""encode_png: files any decoder reads back pixel for pixel, compressed, and clear errors for what it cannot write."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.images import encode_png


def _decode(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (9, 1, 3), (17, 33, 3), (64, 48, 3),
                                   (1, 1), (5, 13), (40, 31)])
def test_random_pixels_read_back_exactly(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(len(shape) * 100 + shape[0]).integers(0, 256, shape, dtype=np.uint8)
    im = _decode(encode_png(pixels))
    assert im.format == "PNG"
    assert im.mode == ("RGB" if len(shape) == 3 else "L")
    assert im.size == (shape[1], shape[0])
    np.testing.assert_array_equal(np.asarray(im), pixels)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_every_level_reads_back_exactly(level: int) -> None:
    pixels = np.random.default_rng(level).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(_decode(encode_png(pixels, level))), pixels)


def test_smooth_images_compress() -> None:
    y, x = np.mgrid[0:256, 0:256]
    pixels = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)  # gradients: rows differ by a constant
    data = encode_png(pixels)
    np.testing.assert_array_equal(np.asarray(_decode(data)), pixels)
    assert len(data) < pixels.nbytes / 20


def test_strided_views_are_encoded_as_seen() -> None:
    base = np.random.default_rng(3).integers(0, 256, (3, 24, 16), dtype=np.uint8)
    view = base.transpose(1, 2, 0)[::2, ::-1]  # [12, 16, 3], neither C-contiguous nor positive-strided
    np.testing.assert_array_equal(np.asarray(_decode(encode_png(view))), view)


@pytest.mark.parametrize("pixels, message", [
    (np.zeros((4, 4, 3), np.float32), "must be uint8"),
    (np.zeros((4, 4, 4), np.uint8), r"\[H, W\] or \[H, W, 3\]"),
    (np.zeros((4,), np.uint8), r"\[H, W\] or \[H, W, 3\]"),
    (np.zeros((0, 4, 3), np.uint8), "not empty"),
])
def test_unwritable_pixels_are_refused(pixels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_png(pixels)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="0..3"):
        encode_png(np.zeros((2, 2), np.uint8), level=6)
