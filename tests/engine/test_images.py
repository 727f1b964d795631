"""Decoding awkward image files and mapping pixels to tensors and back."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.description import Feature, ShapeSpec
from engine.exceptions import ImageDecodeError, InputError
from engine.images import decode_image, image_to_tensor, target_size, tensor_to_image, tensor_to_pixels


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    img.save(path, format=fmt, **kw)
    return path


def _image_feature(size=(4, 6), layout="RGB", scale=(1.0,), bias=(0.0,), sizes=(), ranges=None) -> Feature:
    c = 1 if layout == "GRAY" else 3
    spec = ShapeSpec(default=(c, *size), enumerated=[(c, *s) for s in sizes], ranges=ranges or [])
    return Feature(name="image", kind="image", shape=spec, color_layout=layout, scale=scale, bias=bias)


# ----------------------------------------------------------------- decoding

def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    # A 40 wide × 20 high picture, left half red, stored with Orientation 6
    # ("rotate 90° clockwise to display"): upright it is 20 wide × 40 high.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(img, tmp_path / "rotated.jpg", "JPEG", exif=exif.tobytes(), quality=95)

    out = decode_image(path)
    assert out.mode == "RGB"
    assert out.size == (20, 40)
    px = np.asarray(out)
    assert px[5, 10, 0] > 200 and px[5, 10, 2] < 60     # top: the red half
    assert px[35, 10, 0] < 60                            # bottom: the black half


def test_cmyk_is_converted_to_rgb(tmp_path):
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_save(img, tmp_path / "cmyk.jpg", "JPEG", quality=100))
    assert out.mode == "RGB"
    r, g, b = np.asarray(out)[4, 4]
    assert r > 240 and g < 20 and b < 20


def test_sixteen_bit_png_is_scaled_by_the_type_range(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = decode_image(_save(img, tmp_path / "deep.png", "PNG"))
    assert out.mode == "L"
    assert np.asarray(out).tolist() == [[0, 1, 128, 255]]


def test_thirty_two_bit_and_float_modes():
    from engine.images import normalize_mode

    as_int = normalize_mode(Image.fromarray(np.array([[-5, 0, 65535, 10**6]], np.int32), "I"))
    assert np.asarray(as_int).tolist() == [[0, 0, 255, 255]]
    as_float = normalize_mode(Image.fromarray(np.array([[-1.0, 0.0, 0.5, 2.0]], np.float32), "F"))
    assert np.asarray(as_float).tolist() == [[0, 0, 128, 255]]


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 255] + [0, 0, 0] * 255)   # index 0 is blue …
    img.info["transparency"] = 0                       # … and fully transparent
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)
    out = decode_image(path)
    assert out.mode == "RGB"
    assert np.asarray(out)[0, 0].tolist() == [255, 255, 255]


def test_opaque_palette_keeps_its_colours(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    out = decode_image(_save(img, tmp_path / "opaque.png", "PNG"))
    assert out.mode == "RGB" and np.asarray(out)[1, 1].tolist() == [10, 200, 30]


def test_gray_with_alpha_is_composited_on_white_and_stays_gray(tmp_path):
    arr = np.zeros((2, 2, 2), np.uint8)
    arr[..., 0] = 100
    arr[0, 0, 1] = 255   # opaque
    arr[0, 1, 1] = 0     # transparent
    arr[1, :, 1] = 128   # half
    out = decode_image(_save(Image.fromarray(arr, "LA"), tmp_path / "la.png", "PNG"))
    assert out.mode == "L"
    px = np.asarray(out)
    assert px[0, 0] == 100 and px[0, 1] == 255
    assert abs(int(px[1, 0]) - round(100 * 128 / 255 + 255 * 127 / 255)) <= 1


def test_rgba_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    out = decode_image(_save(img, tmp_path / "rgba.png", "PNG"))
    assert out.mode == "RGB" and np.asarray(out)[0, 0].tolist() == [255, 255, 255]


def test_one_bit_becomes_gray(tmp_path):
    img = Image.new("1", (3, 1), 0)
    img.putpixel((2, 0), 1)
    out = decode_image(_save(img, tmp_path / "bits.png", "PNG"))
    assert out.mode == "L" and np.asarray(out).tolist() == [[0, 0, 255]]


def test_zero_byte_file_names_the_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty\.jpg: empty file .*copy the image again"):
        decode_image(path)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="nothere.png: no such file"):
        decode_image(tmp_path / "nothere.png")


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_files_are_reported(tmp_path, fmt, ext):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match=rf"cut\.{ext}: .*truncated or corrupt.*again"):
        decode_image(path)


def test_text_renamed_to_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are my notes, not a photo\n")
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg: not an image file .*convert it"):
        decode_image(path)


def _huge_header_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge 1-bit image, with a few bytes of data: tiny on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_huge_header_png(100_000, 100_000))
    assert path.stat().st_size < 200
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no Pillow warning may escape
        with pytest.raises(ImageDecodeError, match=r"bomb\.png: 100000×100000 = 10,000,000,000 pixels exceeds "
                                                   r"the limit of 50,000,000 pixels"):
            decode_image(path, max_pixels=50_000_000)
    assert Image.MAX_IMAGE_PIXELS == before


def test_pixel_limit_is_the_callers_not_pillows(tmp_path):
    # Above Pillow's own global limit (~179 M for an error) yet within ours:
    # the header passes our check, and the missing pixel data is then reported.
    path = tmp_path / "big.png"
    path.write_bytes(_huge_header_png(20_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
            decode_image(path, max_pixels=300_000_000)
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 1,000 pixels"):
        decode_image(path, max_pixels=1_000)


def test_decode_from_bytes_uses_the_given_name():
    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(buf, format="PNG")
    assert decode_image(buf.getvalue()).size == (3, 2)
    with pytest.raises(ImageDecodeError, match="upload.png: empty file"):
        decode_image(b"", name="upload.png")


# ---------------------------------------------------------------- to tensor

def test_scale_bias_and_layouts():
    img = Image.fromarray(np.array([[[10, 20, 30]]], np.uint8))
    rgb = image_to_tensor(img, _image_feature(size=(1, 1), scale=(0.5, 1.0, 2.0), bias=(1.0, 0.0, -1.0)))
    assert rgb.dtype == np.float32 and rgb.shape == (3, 1, 1)
    assert rgb.ravel().tolist() == [6.0, 20.0, 59.0]
    bgr = image_to_tensor(img, _image_feature(size=(1, 1), layout="BGR"))
    assert bgr.ravel().tolist() == [30.0, 20.0, 10.0]
    gray = image_to_tensor(img, _image_feature(size=(1, 1), layout="GRAY"))
    assert gray.shape == (1, 1, 1) and gray.ravel()[0] == round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)


def test_gray_image_is_replicated_for_rgb_features():
    img = Image.fromarray(np.full((2, 2), 77, np.uint8), "L")
    t = image_to_tensor(img, _image_feature(size=(2, 2)))
    assert t.shape == (3, 2, 2) and (t == 77).all()


def test_allowed_size_is_used_as_is_by_default():
    img = Image.new("RGB", (6, 4), (1, 1, 1))
    assert image_to_tensor(img, _image_feature(size=(4, 6))).shape == (3, 4, 6)


def test_default_policy_fits_a_disallowed_size():
    img = Image.new("RGB", (10, 10))
    assert image_to_tensor(img, _image_feature(size=(4, 6))).shape == (3, 4, 6)


def test_enumerated_sizes_pick_nearest_by_scale_and_aspect():
    spec = ShapeSpec(default=(3, 64, 64), enumerated=[(3, 64, 64), (3, 128, 128), (3, 64, 128)])
    assert target_size(spec, 120, 130) == (128, 128)
    assert target_size(spec, 60, 130) == (64, 128)
    assert target_size(spec, 10, 10) == (64, 64)
    assert target_size(spec, 128, 128) == (128, 128)   # allowed: unchanged
    # Far from every size, aspect still counts as much as scale: a 2:3 photo
    # goes to 96×128 (3:4), not to the slightly larger square.
    photo = ShapeSpec(default=(3, 96, 128), enumerated=[(3, 96, 128), (3, 128, 128)])
    assert target_size(photo, 400, 600) == (96, 128)


def test_ranges_clamp_preserving_aspect():
    spec = ShapeSpec(default=(3, 64, 64), ranges=[(3, 3), (32, 256), (32, 256)])
    assert target_size(spec, 512, 256) == (256, 128)
    assert target_size(spec, 16, 24) == (32, 48)
    assert target_size(spec, 100, 200) == (100, 200)
    # No single scale fits a 1:20 strip: each side is clamped.
    assert target_size(spec, 10, 200) == (32, 256)
    unbounded = ShapeSpec(default=(3, 64, 64), ranges=[(3, 3), (64, None), (64, None)])
    assert target_size(unbounded, 32, 48) == (64, 96)


def test_fixed_size_uses_the_default():
    assert target_size(ShapeSpec(default=(3, 8, 8)), 100, 300) == (8, 8)


def test_resize_policies():
    # A 20 wide × 10 high image: white left half, red right half.
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255
    arr[:, 10:] = (255, 0, 0)
    img = Image.fromarray(arr)
    feature = _image_feature(size=(10, 10))

    fit = image_to_tensor(img, feature, "fit")          # squeezed: both halves kept
    assert fit.shape == (3, 10, 10)
    assert fit[1, 5, 1] == 255 and fit[1, 5, 8] == 0

    fill = image_to_tensor(img, feature, "fill")        # centre-cropped: middle of the image
    assert fill.shape == (3, 10, 10)
    assert fill[1, 5, 0] == 255 and fill[1, 5, 9] == 0

    pad = image_to_tensor(img, feature, "pad")          # letterboxed: black bars top and bottom
    assert pad.shape == (3, 10, 10)
    assert (pad[:, 0] == 0).all() and (pad[:, -1] == 0).all()
    assert pad[0, 5, 1] == 255 and pad[1, 5, 8] == 0

    for policy in ("reject", "none"):
        with pytest.raises(InputError, match=r"20×10 .* not allowed; the model accepts C×H×W 3×10×10"):
            image_to_tensor(img, feature, policy)
    with pytest.raises(InputError, match="unknown resize policy"):
        image_to_tensor(img, feature, "squash")


def test_resize_onto_enumerated_and_ranged_features():
    img = Image.new("RGB", (130, 60))
    enumerated = _image_feature(size=(64, 64), sizes=[(64, 64), (64, 128)])
    assert image_to_tensor(img, enumerated, "pad").shape == (3, 64, 128)
    ranged = _image_feature(size=(64, 64), ranges=[(3, 3), (16, 32), (16, 64)])
    assert image_to_tensor(img, ranged, "fill").shape == (3, 30, 64)


def test_image_to_tensor_accepts_a_path(tmp_path):
    path = _save(Image.new("RGB", (6, 4), (9, 9, 9)), tmp_path / "p.png", "PNG")
    assert image_to_tensor(path, _image_feature()).max() == 9


# ---------------------------------------------------------------- to image

def test_tensor_to_image_inverts_scale_bias_and_rounds():
    feature = _image_feature(size=(2, 2), scale=(1 / 255,), bias=(0.0,))
    arr = np.random.default_rng(1).integers(0, 256, (2, 2, 3), dtype=np.uint8)
    t = image_to_tensor(Image.fromarray(arr), feature)
    back = tensor_to_image(t, feature)
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), arr)


def test_tensor_to_image_clips_and_handles_bgr_and_gray():
    bgr = _image_feature(layout="BGR", scale=(1.0,))
    img = tensor_to_image(np.array([[[300.0]], [[127.6]], [[-4.0]]], np.float32), bgr)
    assert np.asarray(img)[0, 0].tolist() == [0, 128, 255]
    gray = tensor_to_image(np.full((3, 5), 0.6, np.float32), _image_feature(layout="GRAY", scale=(1 / 255,)))
    assert gray.mode == "L" and gray.size == (5, 3) and np.asarray(gray)[0, 0] == 153


def test_tensor_to_pixels_maps_non_finite_values_and_rounds_half_to_even():
    feature = _image_feature(size=(1, 6), scale=(0.5,), bias=(1.0,))  # pixel = (t - 1) / 0.5
    row = np.array([np.nan, -np.inf, np.inf, 1.25, 1.75, 200.0], np.float32)  # 0.5 -> 0, 1.5 -> 2 (to even)
    pixels = tensor_to_pixels(np.stack([row, row, row])[:, None, :], feature)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 6, 3) and pixels.flags.c_contiguous
    assert pixels[0, :, 0].tolist() == [0, 0, 255, 0, 2, 255]


@pytest.mark.parametrize("layout", ["RGB", "BGR"])
def test_tensor_to_pixels_interleaves_channels_at_a_non_square_size(layout: str):
    feature = _image_feature(size=(5, 7), layout=layout, scale=(0.5,), bias=(2.0,))
    t = np.random.default_rng(3).uniform(-10, 140, (3, 5, 7)).astype(np.float32)
    expected = np.clip(np.rint((t - 2.0) / 0.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)  # [H, W, C]
    pixels = tensor_to_pixels(t, feature)
    assert pixels.shape == (5, 7, 3) and pixels.flags.c_contiguous
    assert np.array_equal(pixels, expected[..., ::-1] if layout == "BGR" else expected)


def test_tensor_to_image_rejects_wrong_channel_count():
    with pytest.raises(InputError, match="not a 3-channel"):
        tensor_to_image(np.zeros((2, 4, 4), np.float32), _image_feature())
