from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from scheduler.inputs import check_file, scan_inputs, sniff_format


def _img(path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3)).save(path, format=fmt)
    return path


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_signatures_of_every_decoded_format(tmp_path: Path, fmt: str) -> None:
    path = _img(tmp_path / f"x.{fmt.lower()}", fmt)
    assert sniff_format(path.read_bytes()[:16]) == ("WebP" if fmt == "WEBP" else fmt)
    assert check_file(path) is None


def test_plain_non_images_are_refused_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("just text")
    (tmp_path / "riff.webp").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert "empty file" in check_file(tmp_path / "zero.jpg")
    assert "not an image" in check_file(tmp_path / "text.jpg")
    assert "not an image" in check_file(tmp_path / "riff.webp")
    assert "no such file" in check_file(tmp_path / "missing.png")


def test_directories_globs_and_list_files(tmp_path: Path) -> None:
    a = _img(tmp_path / "set" / "a.png")
    _img(tmp_path / "set" / "sub" / "b.jpg", "JPEG")
    (tmp_path / "set" / ".hidden.png").write_bytes(b"")
    (tmp_path / "set" / "readme.md").write_text("hi")
    items, rejected = scan_inputs([tmp_path / "set"])
    assert [i.name for i in items] == ["a.png", "sub/b.jpg"]
    assert [Path(r.file).name for r in rejected] == ["readme.md"]

    items, _ = scan_inputs([str(tmp_path / "set" / "**" / "*.jpg")])
    assert [i.name for i in items] == ["sub/b.jpg"]

    lst = tmp_path / "list.txt"
    lst.write_text("# photos\nset/a.png\n\nset/missing.png\n")
    items, rejected = scan_inputs([f"@{lst}"])
    assert [i.path for i in items] == [a] and "no such file" in rejected[0].reason
    items, _ = scan_inputs([str(lst), a])  # a .txt path is a list too; the same file is taken once
    assert len(items) == 1


def test_output_names_are_unique_by_stem(tmp_path: Path) -> None:
    _img(tmp_path / "x" / "p.png")
    _img(tmp_path / "y" / "p.jpg", "JPEG")
    _img(tmp_path / "y" / "P.png")
    items, _ = scan_inputs([tmp_path / "x" / "p.png", tmp_path / "y" / "p.jpg", tmp_path / "y" / "P.png"])
    assert [i.name for i in items] == ["p.png", "p~2.jpg", "P~3.png"]
    assert scan_inputs([str(tmp_path / "nothing*.png")])[1][0].reason == "the pattern matches no files"
