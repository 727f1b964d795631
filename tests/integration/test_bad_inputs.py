"""A corpus of damaged and unusual files: each is refused with a reason or gives a correct result; the worker lives."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from scheduler.client import Client
from scheduler.records import JobStatus
from tests.integration.conftest import make_images

pytestmark = pytest.mark.slow


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny file that declares a gigantic image (one compressed row of zeros)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _corpus(d: Path) -> dict[str, str]:
    """file name -> expected outcome: "rejected" (before queueing), "failed" (on the worker), "done", or "any"."""
    d.mkdir()
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    jpeg, png = _save(rgb, "JPEG"), _save(rgb, "PNG")
    files: dict[str, tuple[bytes, str]] = {
        "zero.jpg": (b"", "rejected"),
        "text.jpg": (b"hello, I am a text file\n" * 20, "rejected"),
        "truncated.png": (png[: len(png) // 2], "failed"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "any"),  # libjpeg may pad a cut stream with grey
        "header_only.jpg": (jpeg[:20], "failed"),
        "bad_crc.png": (png[:40] + bytes([png[40] ^ 0xFF]) + png[41:], "failed"),
        "bomb.png": (_bomb_png(30000, 30000), "failed"),
        "cmyk.jpg": (_save(rgb.convert("CMYK"), "JPEG"), "done"),
        "gray16.png": (_save(Image.fromarray((rng.integers(0, 65536, (20, 20))).astype(np.uint16)), "PNG"), "done"),
        "gray.png": (_save(rgb.convert("L"), "PNG"), "done"),
        "rgba.png": (_save(rgb.convert("RGBA"), "PNG"), "done"),
        "one_pixel.png": (_save(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"), "done"),
        "wide.png": (_save(Image.new("RGB", (4000, 2), (0, 128, 255)), "PNG"), "done"),
        "too_wide.png": (_save(Image.new("RGB", (5000, 3), (9, 9, 9)), "PNG"), "done"),  # resized (fit)
        "anim.gif": (_save(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P")]), "done"),
        "image.bmp": (_save(rgb, "BMP"), "done"),
        "image.tiff": (_save(rgb, "TIFF"), "done"),
        "image.webp": (_save(rgb, "WEBP"), "done"),
    }
    pal = Image.new("P", (16, 8))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 0
    files["palette_alpha.png"] = (_save(pal, "PNG", transparency=0), "done")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    files["rotated.jpg"] = (_save(rgb, "JPEG", exif=exif.tobytes()), "done")
    for name, (data, _) in files.items():
        (d / name).write_bytes(data)
    return {name: expected for name, (_, expected) in files.items()}


def test_bad_file_corpus(redis_url: str, r: redis.Redis, worker, tiny_model: Path, tmp_path: Path) -> None:
    expected = _corpus(tmp_path / "in")
    assert len(expected) >= 15
    proc = worker("--max-batch", "8")
    client = Client(redis_url)
    job = client.submit([tmp_path / "in"], model=str(tiny_model), out=tmp_path / "out", chunk_size=4)
    final = job.wait(timeout=120)
    assert final.status is JobStatus.DONE

    rejected = {Path(x.file).name: x.reason for x in job.rejected_inputs}
    failed = {Path(x["file"]).name: x["reason"] for x in job.failures()}
    done = {p.stem for p in (tmp_path / "out").glob("*.png")}
    for name, want in expected.items():
        stem = Path(name).stem
        got = "rejected" if name in rejected else "failed" if name in failed else "done" if stem in done else None
        assert got is not None, f"{name} was silently dropped"
        assert want in ("any", got), f"{name}: expected {want}, got {got} ({rejected.get(name) or failed.get(name)})"
    assert final.total + final.rejected == len(expected)
    assert final.done + final.failed == final.total
    for name, reason in failed.items():
        assert reason, name
    assert "decompression bomb" in failed["bomb.png"]
    assert "empty file" in rejected["zero.jpg"] and "not an image" in rejected["text.jpg"]

    # results are correct, not merely present
    assert Image.open(tmp_path / "out" / "rotated.png").size == (30, 40)  # EXIF rotation applied
    assert Image.open(tmp_path / "out" / "one_pixel.png").size == (1, 1)
    assert Image.open(tmp_path / "out" / "too_wide.png").size[0] <= 4096
    assert Image.open(tmp_path / "out" / "gray16.png").mode == "RGB"

    # the worker is alive and takes the next job
    make_images(tmp_path / "next", 2)
    assert client.submit([tmp_path / "next"], model=str(tiny_model), out=tmp_path / "o2").wait(timeout=30).done == 2
    assert proc.poll() is None
