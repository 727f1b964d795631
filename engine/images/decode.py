"""Decoding image files with Pillow into upright 8-bit ``L`` or ``RGB`` images (table in ``engine.images``)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from engine.exceptions import ImageDecodeError

# 100 megapixels: above any camera photo corral is meant for, far below what
# would exhaust a worker's memory (an RGB float32 tensor of it is 1.2 GB).
DEFAULT_MAX_PIXELS = 100_000_000

# Errors Pillow raises for damaged data while parsing headers or decoding.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, zlib.error,
                  Image.DecompressionBombError)

_ALPHA_MODES = {"LA": "L", "La": "L", "RGBA": "RGB", "RGBa": "RGB", "PA": "RGB"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def decode_image(source: str | os.PathLike[str] | bytes | IO[bytes], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 name: str | None = None) -> Image.Image:
    """Decode a file, bytes or binary stream into an upright ``L`` or ``RGB`` image.

    ``max_pixels`` bounds width × height, checked from the header before any
    pixel data is decoded. ``name`` labels the source in errors (the path by
    default). Raises :class:`ImageDecodeError` naming the source and saying
    what to do for missing, empty, truncated, non-image and oversized input.
    """
    label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "image data")
    fp = _open_bytes(source, label)
    if not fp.getbuffer().nbytes:
        raise ImageDecodeError(f"{label}: empty file (0 bytes); the copy or download was probably interrupted — "
                               "copy the image again")
    image: Image.Image = _open_header(fp, label)
    width, height = image.size
    pixels = width * height
    if pixels > max_pixels:
        raise ImageDecodeError(f"{label}: {width}×{height} = {pixels:,} pixels exceeds the limit of "
                               f"{max_pixels:,} pixels (a possible decompression bomb); downscale the image, "
                               "or raise the limit if you trust it")
    if pixels == 0:
        raise ImageDecodeError(f"{label}: the image has no pixels ({width}×{height}); check the file")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return normalize_mode(image, label)
    except ImageDecodeError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(f"{label}: the {image.format or 'image'} data is truncated or corrupt ({exc}); "
                               "copy or export the file again") from None


def _open_bytes(source: str | os.PathLike[str] | bytes | IO[bytes], label: str) -> io.BytesIO:
    """The whole source in memory, so that decoding never holds a file open and zero bytes are seen at once."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return io.BytesIO(path.read_bytes())
        except FileNotFoundError:
            raise ImageDecodeError(f"{label}: no such file; check the path") from None
        except IsADirectoryError:
            raise ImageDecodeError(f"{label}: is a directory, not an image file") from None
        except OSError as exc:
            raise ImageDecodeError(f"{label}: cannot read the file ({exc.strerror}); check its permissions") from None
    return io.BytesIO(source.read())


def _open_header(fp: io.BytesIO, label: str) -> ImageFile.ImageFile:
    """Identify the format and parse the header, without decoding pixels.

    This walks Pillow's plugin registry as ``Image.open`` does, but without
    ``Image.open``'s check against the process-wide ``Image.MAX_IMAGE_PIXELS``
    (which warns or raises on its own terms): the caller's ``max_pixels`` is
    the limit, checked right after this returns.
    """
    prefix = fp.read(16)
    Image.preinit()
    tried: set[str] = set()
    for loader in (None, Image.init):
        if loader is not None:
            loader()
        for fmt in [f for f in Image.ID if f not in tried]:
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            try:
                if accept is not None and not _accepts(accept(prefix)):
                    continue
            except (struct.error, IndexError, TypeError, ValueError):
                continue  # a prefix too short for this format's signature check (e.g. a 1-byte file)
            fp.seek(0)
            try:
                return factory(fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all; Image.open moves on the same way
            except _DECODE_ERRORS as exc:
                raise ImageDecodeError(f"{label}: the {fmt} header is truncated or corrupt ({exc}); "
                                       "copy or export the file again") from None
    raise ImageDecodeError(f"{label}: not an image file Pillow can read (it starts with {prefix[:8]!r}); "
                           "check that it is a PNG, JPEG, TIFF, WebP, BMP or GIF, or convert it to one")


def _accepts(result: object) -> bool:
    # An ``accept`` function returns a truthy value to claim the file, or a
    # string explaining why it would have (a missing codec): not a claim.
    return bool(result) and not isinstance(result, str)


def normalize_mode(image: Image.Image, label: str = "image") -> Image.Image:
    """Convert any Pillow mode to 8-bit ``L`` or ``RGB`` as documented in ``engine.images``."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        if "transparency" in image.info:
            return _on_white(image.convert("RGBA"), "RGB")
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        return _on_white(image, _ALPHA_MODES[mode])
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(image).astype(np.float64)
        values = np.clip(values, 0, 65535) * (255.0 / 65535.0)
        return Image.fromarray(np.rint(values).astype(np.uint8), "L")
    if mode == "F":
        values = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0) * 255.0
        return Image.fromarray(np.rint(values).astype(np.uint8), "L")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError(f"{label}: cannot convert pixel mode {mode!r} to RGB ({exc}); "
                               "convert the image to 8-bit RGB first") from None


def _on_white(image: Image.Image, target: str) -> Image.Image:
    """Composite over a white background: out = alpha·colour + (1 − alpha)·255."""
    if image.mode == "La":  # premultiplied gray: unpremultiply first
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert(target)
