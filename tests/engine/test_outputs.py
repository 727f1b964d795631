"""Writing one item's outputs: names, formats, atomicity, idempotence."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from engine.description import Feature, ModelDescription, ShapeSpec
from engine.outputs import atomic_write, output_stems, write_item_outputs


def _image_out(name: str) -> Feature:
    return Feature(name=name, kind="image", shape=ShapeSpec((3, 0, 0)), scale=(1 / 255,))


def _array_out(name: str) -> Feature:
    return Feature(name=name, kind="array", shape=ShapeSpec((4,)))


def test_single_image_output_is_stem_png(tmp_path):
    desc = ModelDescription(outputs=[_image_out("stylized")])
    t = np.full((3, 2, 5), 0.2, np.float32)
    written = write_item_outputs(tmp_path, "cat", {"stylized": t}, desc)
    assert written == [tmp_path / "cat.png"]
    img = Image.open(written[0])
    assert img.size == (5, 2) and np.asarray(img)[0, 0].tolist() == [51, 51, 51]


def test_several_outputs_get_output_names_and_arrays_are_npy(tmp_path):
    desc = ModelDescription(outputs=[_image_out("picture"), _array_out("features")])
    feats = np.arange(4, dtype=np.float32)
    written = write_item_outputs(tmp_path, "dog", {"picture": np.zeros((3, 2, 2), np.float32),
                                                   "features": feats}, desc)
    assert [p.name for p in written] == ["dog_picture.png", "dog_features.npy"]
    assert np.array_equal(np.load(tmp_path / "dog_features.npy"), feats)


def test_arrays_as_json_when_asked(tmp_path):
    desc = ModelDescription(outputs=[_array_out("y")])
    write_item_outputs(tmp_path, "result", {"y": np.array([[1.5, 2.0]], np.float32)}, desc, array_format="json")
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc == {"output": "y", "shape": [1, 2], "values": [[1.5, 2.0]]}


def test_classifier_output_is_json_top_k(tmp_path):
    desc = ModelDescription(outputs=[_array_out("probs")], class_labels=["cat", "dog", "owl", "fox"],
                            class_labels_output="probs")
    write_item_outputs(tmp_path, "pet", {"probs": np.array([0.1, 0.6, 0.05, 0.25], np.float32)}, desc, top_k=2)
    doc = json.loads((tmp_path / "pet.json").read_text())
    assert doc["output"] == "probs"
    assert [t["label"] for t in doc["top"]] == ["dog", "fox"]
    assert doc["top"][0]["index"] == 1 and doc["top"][0]["score"] == pytest.approx(0.6)


def test_raw_writes_npz_with_every_output(tmp_path):
    desc = ModelDescription(outputs=[_image_out("a"), _array_out("b")])
    outs = {"a": np.ones((3, 2, 2), np.float32), "b": np.arange(4, dtype=np.float32)}
    written = write_item_outputs(tmp_path, "result", outs, desc, raw=True)
    assert written[-1] == tmp_path / "result.npz"
    with np.load(tmp_path / "result.npz") as z:
        assert sorted(z.files) == ["a", "b"]
        assert np.array_equal(z["a"], outs["a"]) and np.array_equal(z["b"], outs["b"])


def test_writing_twice_gives_the_same_files_and_leaves_no_temporaries(tmp_path):
    desc = ModelDescription(outputs=[_image_out("x"), _array_out("y")])
    outs = {"x": np.zeros((3, 2, 2), np.float32), "y": np.arange(4, dtype=np.float32)}
    first = write_item_outputs(tmp_path, "item", outs, desc, raw=True)
    contents = {p: p.read_bytes() for p in first}
    second = write_item_outputs(tmp_path, "item", outs, desc, raw=True)
    assert first == second
    assert {p: p.read_bytes() for p in second} == contents
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in first)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(target, object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"


def test_output_stems_are_unique_and_stable(tmp_path, monkeypatch):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "y.jpg", tmp_path / "we ird.png"]
    stems = output_stems(paths)
    assert stems[2] == "y" and stems[3] == "we_ird"
    assert stems[0] != stems[1] and stems[0].startswith("x-") and stems[1].startswith("x-")
    assert output_stems(paths) == stems
    monkeypatch.chdir(tmp_path)
    assert output_stems([os.path.relpath(p) for p in paths]) == stems  # the same files, named relatively
