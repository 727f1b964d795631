"""The .corral package: full round trips, storage kinds, determinism and attribute values (the loader's defences
are in test_format_rejects.py)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from engine import ModelBuilder
from engine.exceptions import ModelFormatError, UnsupportedOpError
from engine.format import digest, dumps, from_proto, load, loads, save, to_proto
from engine.tensors import QuantizedTensor
from tests.engine.format_models import BITS, rich_model, same_value, tiny_model, write_package
from tests.engine.test_tensors import ref_dequantize, ref_unpack

# ---------------------------------------------------------------- round trip

def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    model = rich_model()
    path = tmp_path / "rich.corral"
    sha = save(model, path)
    data = path.read_bytes()
    assert sha == hashlib.sha256(data).hexdigest() == digest(model)
    back = load(path)
    # Re-serializing what was loaded gives the same bytes: nothing was lost or altered.
    assert dumps(back) == data

    assert back.description.metadata == model.description.metadata
    assert back.description.metadata.user["ünicode"] == "välue ✓"
    for ours, theirs in zip(model.description.inputs + model.description.outputs,
                            back.description.inputs + back.description.outputs, strict=True):
        for field in ("name", "kind", "dtype", "color_layout", "batched", "description", "shape"):
            assert getattr(ours, field) == getattr(theirs, field), (ours.name, field)
        assert np.allclose(ours.scale, theirs.scale, rtol=1e-7) and np.allclose(ours.bias, theirs.bias, rtol=1e-7)
        assert same_value(ours.default, theirs.default) if ours.default is not None else theirs.default is None
    assert back.description.class_labels == [f"style {i}" for i in range(26)]
    assert back.description.class_labels_output == "probs"

    for ours, theirs in zip(model.graph.nodes, back.graph.nodes, strict=True):
        assert (ours.name, ours.op_type, ours.domain, ours.inputs, ours.outputs) == \
            (theirs.name, theirs.op_type, theirs.domain, theirs.inputs, theirs.outputs)
        assert ours.attrs.keys() == theirs.attrs.keys()
        for k in ours.attrs:
            assert same_value(ours.attrs[k], theirs.attrs[k]), (ours.name, k)
    assert back.graph.nodes[1].domain == "custom"
    assert back.graph.nodes[0].attrs["empty"] == []

    assert back.graph.initializers.keys() == model.graph.initializers.keys()
    for k, w in model.graph.initializers.items():
        assert same_value(w, back.graph.initializers[k]), k


def test_round_trip_flexible_shapes() -> None:
    back = loads(dumps(rich_model()))
    rgb, bgr, gray, style, ids = back.description.inputs
    assert rgb.shape.default == (3, 16, 16) and rgb.shape.enumerated == [(3, 32, 32), (3, 16, 24)]
    assert bgr.shape.ranges == [(3, 3), (4, None), (4, 64)] and bgr.color_layout == "BGR"
    assert bgr.shape.allows((3, 100_000, 64)) and not bgr.shape.allows((3, 8, 65))
    assert gray.shape.default == (1, 8, 8) and gray.color_layout == "GRAY"
    assert np.float32(gray.scale[0]) == np.float32(2 / 255) and gray.bias == (-1.0,)
    assert not style.batched and style.default.argmax() == 3 and style.default.dtype == np.float32
    assert ids.dtype == "int64" and ids.shape.enumerated == [(8,), (16,)]


@pytest.mark.parametrize("bits", BITS)
def test_quantized_weights_dequantize_like_the_reference_after_loading(bits: int) -> None:
    back = loads(dumps(rich_model())).graph.initializers
    for kind in ("lin", "lut"):
        for layout in ("t", "a") if kind == "lin" else ("t", "g"):
            q = back[f"{kind}{bits}_{layout}"]
            assert isinstance(q, QuantizedTensor)
            assert len(q.packed) == math.ceil(90 * bits / 8)
            codes = ref_unpack(q.packed, bits, 90)
            np.testing.assert_array_equal(q.dequantize(), ref_dequantize(q, codes))


def test_weights_keep_their_storage_type() -> None:
    model = loads(dumps(rich_model()))
    sizes = model.bytes_by_storage()
    assert model.graph.initializers["w16"].dtype == np.float16
    assert model.graph.initializers["shape"].dtype == np.int64
    assert sizes["float16"] == 6 and sizes["int64"] == 16 and sizes["float32"] == 96
    assert sizes["lut3"] == 2 * math.ceil(90 * 3 / 8) + 4 * (8 + 16) + 4 * 4


def test_dumps_is_deterministic() -> None:
    assert dumps(rich_model()) == dumps(rich_model())
    assert digest(rich_model()) == digest(rich_model())
    assert digest(rich_model()) != digest(tiny_model())


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "m.corral"
    path.write_bytes(b"old")
    save(tiny_model(), path)
    assert load(path).name == "tiny"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.corral"]


def test_validate_false_skips_graph_checks_only(tmp_path: Path) -> None:
    msg = to_proto(tiny_model())
    msg.graph.nodes[0].op_type = "Frobnicate"
    path = write_package(tmp_path, msg)
    with pytest.raises(UnsupportedOpError):
        load(path)
    assert load(path, validate=False).graph.nodes[0].op_type == "Frobnicate"
    assert loads(path.read_bytes(), validate=False).op_counts() == {"Frobnicate": 1, "Relu": 1}
    assert from_proto(msg, validate=False).name == "tiny"
    msg.graph.initializers[0].dims.extend([1] * 8)
    with pytest.raises(ModelFormatError, match="rank 10 exceeds"):
        load(write_package(tmp_path, msg), validate=False)


# ---------------------------------------------------------------- attributes

def _attr_round_trip(value: object) -> object:
    b = ModelBuilder("attrs")
    b.array_output(b.node("Relu", [b.array_input("x", (1,))], name="r", v=value))
    return loads(dumps(b.build())).graph.nodes[0].attrs["v"]


@pytest.mark.parametrize("value, expected", [
    (True, 1), (np.int32(-4), -4), (np.float32(0.5), 0.5), (b"raw", "raw"), ((1, 2), [1, 2]),
    ([1, 2.5], [1.0, 2.5]), ([np.int64(3), np.bool_(True)], [3, 1]), ([b"a", "b"], ["a", "b"]), ((), []),
])
def test_attribute_values_are_normalised(value: object, expected: object) -> None:
    back = _attr_round_trip(value)
    assert back == expected and type(back) is type(expected)


@pytest.mark.parametrize("value, pattern", [
    ([1, "a"], r"attribute 'v': a list must hold only numbers or only strings, found \['int', 'str'\]"),
    ([[1], [2]], "only numbers or only strings"),
    ({"a": 1}, "attribute 'v': cannot store a dict"),
    (np.array(["x"]), "cannot be stored"),
])
def test_unstorable_attributes_are_refused_on_save(value: object, pattern: str) -> None:
    with pytest.raises(ModelFormatError, match=pattern):
        _attr_round_trip(value)
