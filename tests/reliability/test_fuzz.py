"""Fuzzing the model loader and the image decoder: only clear errors, no hang, no memory blow-up.

Bounded in CI by the ``ci`` hypothesis profile (tests/reliability/conftest.py);
for a long run by hand:

    pytest tests/reliability/test_fuzz.py --hypothesis-profile=long -p no:cacheprovider

Each example runs on a watchdog thread (a hang fails the example after
PER_EXAMPLE_S), and its Python/numpy allocations are measured with
tracemalloc; the decoder's (Pillow's C allocations) are bounded by the
process's peak RSS.
"""

from __future__ import annotations

import io
import resource
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import engine
from engine.exceptions import EngineError
from engine.format import dumps, loads
from engine.images import decode_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PER_EXAMPLE_S = 10.0
LOADER_PEAK_BYTES = 64 << 20  # packages here are a few KiB; parsing one must not allocate more than this
DECODER_MAX_PIXELS = 4_000_000  # a worker's limit for this run; Pillow allocates at most ~4 bytes per pixel


def _guarded(call: Callable[[], object]) -> tuple[BaseException | None, int]:
    """Run ``call`` on a watchdog thread; returns (its exception or None, tracemalloc peak bytes)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001  (classified by the caller)
            outcome.append(exc)

    tracemalloc.start()
    try:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(PER_EXAMPLE_S)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not thread.is_alive(), f"no result after {PER_EXAMPLE_S} s: a hang"
    return outcome[0], peak


def _assert_clear(exc: BaseException | None, kind: type[BaseException], label: str) -> None:
    if exc is None:
        return
    assert isinstance(exc, kind), f"{type(exc).__name__} instead of a {kind.__name__}: {exc!r}"
    assert label in str(exc), f"the error does not name its source: {exc}"
    assert "Traceback" not in str(exc)


# ---------------------------------------------------------------- model loader

def _seed_package() -> bytes:
    b = engine.ModelBuilder("seed")
    x = b.image_input("image", size=(8, 8), height_range=(1, 64), width_range=(1, 64))
    w = b.weight("w", np.linspace(-1, 1, 2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3))
    y = b.node("Conv", [x, w], pads=[1, 1, 1, 1])
    y = b.node("Relu", [y])
    b.array_output(y, name="features")
    return dumps(b.build())


SEED = _seed_package()


@st.composite
def mutated_packages(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "varint"]))
        if action == "flip":
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[where] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[where:where + draw(st.integers(1, 64))]
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        else:  # a huge length or dimension where a varint was: the allocation traps
            data[where:where] = bytes([0xFF] * draw(st.integers(1, 9)) + [0x0F])
        if not data:
            break
    return bytes(data)


def _load_and_compile(data: bytes) -> None:
    model = loads(data, source="fuzzed.corral")
    compiled = engine.compile(model, backend="numpy", device="cpu")
    compiled.predict({"image": np.zeros((3, 8, 8), np.float32)})


@given(st.one_of(st.binary(max_size=2048), mutated_packages()))
def test_the_model_loader_gives_only_clear_errors(data: bytes) -> None:
    exc, peak = _guarded(lambda: _load_and_compile(data))
    _assert_clear(exc, EngineError, "fuzzed.corral")
    assert peak < LOADER_PEAK_BYTES, f"loading {len(data)} bytes allocated {peak / 2**20:.0f} MiB"


def test_the_seed_package_itself_loads() -> None:
    """The mutations start from a package that works, so they probe the loader's inner checks too."""
    assert _guarded(lambda: _load_and_compile(SEED))[0] is None


# ---------------------------------------------------------------- image decoder

def _encoded(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    image = Image.new(mode, size)
    image.putdata([(i * 37) % 256 if mode in ("L", "P") else tuple((i * k) % 256 for k in (37, 91, 13, 201)[:len(mode)])
                   for i in range(size[0] * size[1])])
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


SEED_IMAGES = [_encoded("PNG", "RGB", (7, 5)), _encoded("PNG", "P", (9, 3)), _encoded("JPEG", "RGB", (16, 8)),
               _encoded("GIF", "L", (6, 6)), _encoded("BMP", "RGB", (4, 4)), _encoded("TIFF", "RGBA", (5, 3)),
               _encoded("WEBP", "RGB", (8, 8))]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def claimed_size_pngs(draw: st.DrawFn) -> bytes:
    """A valid PNG header claiming any size, with little or no pixel data: the decompression-bomb shape."""
    width, height = draw(st.integers(1, 2**31 - 1)), draw(st.integers(1, 2**31 - 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, draw(st.sampled_from([0, 2, 6])), 0, 0, 0)
    idat = zlib.compress(b"\0" * draw(st.integers(0, 4096)))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_IMAGES)))
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[where] = draw(st.integers(0, 255))
        else:
            del data[where:where + draw(st.integers(1, 32))]
        if not data:
            break
    return bytes(data)


@pytest.fixture(scope="module")
def rss_budget() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + DECODER_MAX_PIXELS * 4 * 2 + (256 << 20)


@given(st.one_of(st.binary(max_size=1024), mutated_images(), claimed_size_pngs()))
def test_the_image_decoder_gives_only_clear_errors(rss_budget: int, data: bytes) -> None:
    exc, _ = _guarded(lambda: decode_image(data, name="fuzzed.png", max_pixels=DECODER_MAX_PIXELS))
    _assert_clear(exc, EngineError, "fuzzed.png")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak_rss < rss_budget, f"the process grew to {peak_rss / 2**20:.0f} MiB decoding {len(data)} bytes"


def test_the_seed_images_decode() -> None:
    for data in SEED_IMAGES:
        image = decode_image(data, name="seed")
        assert image.mode in ("L", "RGB") and image.size[0] > 0


def test_a_header_claiming_a_huge_image_is_refused_before_decoding() -> None:
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")
    exc, peak = _guarded(lambda: decode_image(bomb, name="bomb.png"))
    assert isinstance(exc, EngineError) and "decompression bomb" in str(exc)
    assert peak < 1 << 20


def test_fuzz_profiles_are_bounded_in_ci_and_long_by_hand() -> None:
    from hypothesis import settings

    assert settings.get_profile("ci").max_examples <= 500
    assert settings.get_profile("long").max_examples >= 10_000
