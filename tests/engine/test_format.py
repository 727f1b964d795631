"""The .corral package: full round trips and the loader's defences.

Every rejection is checked through a real file, for the error type and for a
message naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import math
import re
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import ModelBuilder
from engine.exceptions import ModelFormatError, UnsupportedOpError
from engine.format import MAX_NODES, digest, dumps, from_proto, load, loads, save, to_proto
from engine.graph import Model
from engine.proto import corral_model_pb2 as pb
from engine.tensors import MAX_DIM, QuantizedTensor, pack_bits
from tests.engine.test_tensors import ref_dequantize, ref_unpack

BITS = range(1, 9)


# -------------------------------------------------------------------- models

def _quantized_weights() -> dict[str, QuantizedTensor]:
    """Linear per-tensor / per-axis and LUT per-tensor / grouped, at every width."""
    rng = np.random.default_rng(7)
    out: dict[str, QuantizedTensor] = {}
    shape = (6, 5, 3)  # 90 codes: a byte boundary falls mid-code for most widths
    for bits in BITS:
        codes = rng.integers(0, 1 << bits, size=90)
        packed = pack_bits(codes, bits)
        out[f"lin{bits}_t"] = QuantizedTensor(shape, bits, packed, "linear", -1,
                                              scale=np.float32([0.03 * bits]), bias=np.float32([-0.5]))
        out[f"lin{bits}_a"] = QuantizedTensor(shape, bits, packed, "linear", 0,
                                              scale=rng.uniform(0.01, 1, 6).astype(np.float32),
                                              bias=rng.uniform(-1, 1, 6).astype(np.float32))
        out[f"lut{bits}_t"] = QuantizedTensor(shape, bits, packed, "lut", -1,
                                              palette=rng.normal(size=1 << bits).astype(np.float32))
        out[f"lut{bits}_g"] = QuantizedTensor(shape, bits, packed, "lut", 0, group_size=4,
                                              palette=rng.normal(size=2 << bits).astype(np.float32))
    return out


def rich_model() -> Model:
    """Every kind of feature, shape spec, attribute and weight storage."""
    b = ModelBuilder("rich", version="2.1", author="Ada", license="BSD-3-Clause", description="all features")
    b.description.metadata.user.update({"source": "tests", "ünicode": "välue ✓"})
    rgb = b.image_input("rgb", (16, 16), scale=[1 / 58.4, 1 / 57.1, 1 / 57.4], bias=[-2.1, -2.0, -1.8],
                        sizes=[(32, 32), (16, 24)], description="ImageNet-normalised photo")
    bgr = b.image_input("bgr", (8, 8), color_layout="BGR", height_range=(4, None), width_range=(4, 64))
    gray = b.image_input("gray", (8, 8), color_layout="GRAY", scale=2 / 255, bias=-1.0)
    style = b.array_input("style", (26,), default=np.eye(26, dtype=np.float32)[3], batched=False)
    ids = b.array_input("ids", (4,), dtype="int64", shapes=[(8,), (16,)])
    b.weight("w32", np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4))
    b.weight("w16", np.array([0.5, -1.25, 3.0], np.float16))
    b.weight("shape", np.array([1, -1], np.int64))
    for name, q in _quantized_weights().items():
        b.weight(name, q)
    r = b.node("Relu", [rgb], name="relu", alpha=0.5, count=3, mode="reflect", pads=[0, 1, 2, 3],
               coeffs=[0.5, -0.25], labels=["a", "bc"], value=np.arange(6, dtype=np.float32).reshape(2, 3),
               empty=[], qt=QuantizedTensor((3,), 2, pack_bits(np.array([0, 1, 3]), 2), "linear"))
    c = b.custom_layer("Swirl", [bgr, style], strength=0.75)
    g = b.node("Identity", [gray])
    parts = b.node("Split", [ids], outputs=["lo", "hi"], axis=0)
    b.image_output(r, name="out_rgb", scale=1 / 255)
    b.array_output(c, name="swirled", shape=(3, 8, 8))
    b.array_output(g)
    b.array_output(parts[0])
    b.classifier_output(b.node("Softmax", [style], name="probs"), [f"style {i}" for i in range(26)])
    return b.build()


def tiny_model() -> Model:
    b = ModelBuilder("tiny")
    x = b.array_input("x", (2, 3))
    w = b.weight("w", np.ones((2, 3), np.float32))
    b.array_output(b.node("Relu", [b.node("Add", [x, w], name="add")], name="y"))
    return b.build()


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, QuantizedTensor):
        return (isinstance(b, QuantizedTensor) and (a.shape, a.bits, a.packed, a.scheme, a.axis, a.group_size)
                == (b.shape, b.bits, b.packed, b.scheme, b.axis, b.group_size)
                and all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("scale", "bias", "palette")))
    if isinstance(a, float):
        return isinstance(b, float) and np.float32(a) == np.float32(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


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
        assert _same_value(ours.default, theirs.default) if ours.default is not None else theirs.default is None
    assert back.description.class_labels == [f"style {i}" for i in range(26)]
    assert back.description.class_labels_output == "probs"

    for ours, theirs in zip(model.graph.nodes, back.graph.nodes, strict=True):
        assert (ours.name, ours.op_type, ours.domain, ours.inputs, ours.outputs) == \
            (theirs.name, theirs.op_type, theirs.domain, theirs.inputs, theirs.outputs)
        assert ours.attrs.keys() == theirs.attrs.keys()
        for k in ours.attrs:
            assert _same_value(ours.attrs[k], theirs.attrs[k]), (ours.name, k)
    assert back.graph.nodes[1].domain == "custom"
    assert back.graph.nodes[0].attrs["empty"] == []

    assert back.graph.initializers.keys() == model.graph.initializers.keys()
    for k, w in model.graph.initializers.items():
        assert _same_value(w, back.graph.initializers[k]), k


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
    path = _write(tmp_path, msg)
    with pytest.raises(UnsupportedOpError):
        load(path)
    assert load(path, validate=False).graph.nodes[0].op_type == "Frobnicate"
    assert loads(path.read_bytes(), validate=False).op_counts() == {"Frobnicate": 1, "Relu": 1}
    assert from_proto(msg, validate=False).name == "tiny"
    msg.graph.initializers[0].dims.extend([1] * 8)
    with pytest.raises(ModelFormatError, match="rank 10 exceeds"):
        load(_write(tmp_path, msg), validate=False)


# ------------------------------------------------------------------- rejects

def _write(tmp_path: Path, content: pb.ModelPackage | bytes, name: str = "bad.corral") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
    return path


def _rejects(tmp_path: Path, content: pb.ModelPackage | bytes, pattern: str,
             exc: type[ModelFormatError] = ModelFormatError) -> str:
    path = _write(tmp_path, content)
    with pytest.raises(exc) as err:
        load(path)
    message = str(err.value)
    assert type(err.value) is exc, message
    assert message.startswith(str(path)), message
    assert re.search(pattern, message), message
    return message


def test_rejects_empty_file(tmp_path: Path) -> None:
    _rejects(tmp_path, b"", "empty file; it is not a corral model package")


def test_rejects_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="nothing.corral: cannot read model"):
        load(tmp_path / "nothing.corral")
    (tmp_path / "dir.corral").mkdir()
    with pytest.raises(ModelFormatError, match="dir.corral: cannot read model"):
        load(tmp_path / "dir.corral")


@pytest.mark.timeout(120)
def test_every_truncation_is_a_format_error(tmp_path: Path) -> None:
    whole = dumps(rich_model())
    cuts = sorted({*range(0, 64), *range(64, len(whole), max(1, len(whole) // 300)), len(whole) - 1})
    for cut in cuts:
        with pytest.raises(ModelFormatError) as err:
            loads(whole[:cut], source="cut.corral")
        assert str(err.value).startswith("cut.corral")
    # through a file too, which names it
    _rejects(tmp_path, whole[: len(whole) // 2], "truncated or corrupt")


@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=1, max_size=2048))
def test_random_bytes_are_a_format_error(data: bytes) -> None:
    with pytest.raises(ModelFormatError, match="^noise.bin: "):
        loads(data, source="noise.bin")


_VALID = dumps(tiny_model())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_bytes_load_or_fail_cleanly(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_VALID)
    for pos, value in edits:
        data[pos] = value
    try:
        model = loads(bytes(data), source="flipped.corral")
    except ModelFormatError as exc:
        assert str(exc).startswith("flipped.corral")
    else:
        assert isinstance(model, Model)


def test_deeply_nested_unknown_groups_are_rejected(tmp_path: Path) -> None:
    # field 99, wire type 3/4 (start/end group), nested 100 000 deep
    data = dumps(tiny_model()) + b"\x9b\x06" * 100_000 + b"\x9c\x06" * 100_000
    _rejects(tmp_path, data, "not a valid corral model package")


def test_unknown_fields_from_a_newer_writer_are_ignored() -> None:
    data = dumps(tiny_model()) + b"\xfa\x06\x03abc"  # field 111, length-delimited
    assert loads(data).name == "tiny"


def test_rejects_unknown_format_version(tmp_path: Path) -> None:
    msg = to_proto(tiny_model())
    msg.format_version = 7
    _rejects(tmp_path, msg, "package format version 7 is not supported .*re-export")


def test_rejects_unknown_op_listing_types_and_nodes(tmp_path: Path) -> None:
    msg = to_proto(tiny_model())
    msg.graph.nodes[0].op_type = "Frobnicate"
    msg.graph.nodes[1].op_type = "Wibble"
    text = _rejects(tmp_path, msg, r"unsupported op types: Frobnicate \(nodes: add\); Wibble \(nodes: y\)",
                    UnsupportedOpError)
    assert "model 'tiny'" in text


def _weight(msg: pb.ModelPackage, name: str) -> pb.Tensor:
    return next(t for t in msg.graph.initializers if t.name == name)


def test_rejects_tensor_whose_dims_disagree_with_its_bytes(tmp_path: Path) -> None:
    msg = to_proto(tiny_model())
    msg.graph.initializers[0].dims[:] = [2, 4]
    _rejects(tmp_path, msg, r"weight 'w': declared shape \[2, 4\] of float32 needs 32 bytes, found 24")


def _quantized_package() -> pb.ModelPackage:
    b = ModelBuilder("q")
    x = b.array_input("x", (4, 3))
    rng = np.random.default_rng(0)
    b.weight("lin", QuantizedTensor((4, 3), 3, pack_bits(rng.integers(0, 8, 12), 3), "linear", 0,
                                    scale=np.ones(4, np.float32), bias=np.zeros(4, np.float32)))
    b.weight("lut", QuantizedTensor((4, 3), 2, pack_bits(rng.integers(0, 4, 12), 2), "lut", 0, group_size=2,
                                    palette=np.arange(8, dtype=np.float32)))
    b.array_output(b.node("Add", [b.node("Add", [x, "lin"]), "lut"]))
    return to_proto(b.build())


@pytest.mark.parametrize("mutate, pattern", [
    (lambda m: setattr(_weight(m, "lin").quantized, "packed", b"\x00" * 4),
     r"weight 'lin': 12 codes of 3 bits need 5 bytes, package holds 4"),
    (lambda m: _weight(m, "lut").quantized.lookup_table.palette.append(1.0),
     r"weight 'lut': lookup table needs 2 palettes of 4 entries, found 9"),
    (lambda m: _weight(m, "lin").quantized.linear.scale.append(1.0),
     r"weight 'lin': linear quantization needs 1 or 4 scales/biases, found 5/4"),
    (lambda m: setattr(_weight(m, "lin").quantized, "bits", 9), "quantized bits must be 1..8, got 9"),
    (lambda m: setattr(_weight(m, "lin").quantized, "bits", 0), "quantized bits must be 1..8, got 0"),
    (lambda m: setattr(_weight(m, "lin").quantized.linear, "axis", -2), "quantization axis -2 out of range"),
    (lambda m: setattr(_weight(m, "lin").quantized.linear, "axis", 2), "quantization axis 2 out of range"),
    (lambda m: setattr(_weight(m, "lut").quantized.lookup_table, "group_size", 0), "needs group_size > 0"),
    (lambda m: setattr(_weight(m, "lut").quantized.lookup_table, "group_size", 2**32 - 1),
     "group size 4294967295 exceeds"),
    (lambda m: _weight(m, "lut").quantized.ClearField("lookup_table"), "names no scheme"),
])
def test_rejects_inconsistent_quantized_tensors(tmp_path: Path, mutate: Callable, pattern: str) -> None:
    msg = _quantized_package()
    load(_write(tmp_path, msg, "good.corral"))
    mutate(msg)
    _rejects(tmp_path, msg, pattern)


@pytest.mark.parametrize("dims, pattern", [
    ([1] * 9, "rank 9 exceeds the limit of 8"),
    ([2**24 + 1], "dimension 16777217 outside 0..16777216"),
    ([2**16, 2**15 + 1], "2147549184 elements exceeds the limit of 2147483648"),
    ([-3], "dimension -3 outside"),
])
def test_rejects_absurd_dims_without_allocating(tmp_path: Path, dims: list[int], pattern: str) -> None:
    for place in ("weight", "attribute", "default", "shape"):
        msg = to_proto(tiny_model())
        if place == "weight":
            msg.graph.initializers[0].dims[:] = dims
        elif place == "attribute":
            msg.graph.nodes[0].attributes.add(name="t").t.dims.extend(dims)
        elif place == "default":
            msg.description.inputs[0].default_value.dims.extend(dims)
        else:
            msg.description.inputs[0].shape.default_shape[:] = dims
        tracemalloc.start()
        try:
            text = _rejects(tmp_path, msg, pattern)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, (place, peak)
        assert {"weight": "weight 'w'", "attribute": "attribute 't'", "default": "input feature 'x' default",
                "shape": "input feature 'x' default shape"}[place] in text


def _edit(mutate: Callable[[pb.ModelPackage], object]) -> pb.ModelPackage:
    msg = to_proto(tiny_model())
    mutate(msg)
    return msg


def _node(m: pb.ModelPackage, i: int) -> pb.Node:
    return m.graph.nodes[i]


def _add_range(m: pb.ModelPackage, lower: int, upper: int) -> None:
    m.description.inputs[0].shape.ranges.add(lower=2, upper=2)
    m.description.inputs[0].shape.ranges.add(lower=lower, upper=upper)


@pytest.mark.parametrize("mutate, pattern", [
    # graph structure
    (lambda m: _node(m, 0).inputs.__setitem__(1, "y"), r"graph has a cycle through nodes \['add', 'y'\]"),
    (lambda m: _node(m, 0).inputs.__setitem__(1, "ghost"), "node 'add' \\(Add\\) reads 'ghost', which no input"),
    (lambda m: _node(m, 1).outputs.__setitem__(0, "add"), "value 'add' is produced more than once"),
    (lambda m: _node(m, 0).outputs.__setitem__(0, "w"), "value 'w' is produced more than once"),
    (lambda m: m.description.outputs.add(name="z", array=pb.ArrayType(data_type=pb.FLOAT32)),
     "output 'z' is not produced by any node"),
    (lambda m: setattr(m.description, "class_labels_output", "nope"), "class labels refer to unknown output"),
    (lambda m: m.graph.nodes.add(name="e"), "node 'e': op type must be 1..4096 characters"),
    (lambda m: setattr(_node(m, 0), "op_type", "A" * 5000), "op type must be 1..4096"),
    (lambda m: setattr(_node(m, 0), "name", "n" * 5000), "node name of 5000 characters exceeds"),
    (lambda m: _node(m, 0).outputs.append("v" * 5000), "value name of 5000 characters exceeds"),
    (lambda m: setattr(_node(m, 0), "domain", "ai.other"), r"unsupported op types: ai.other:Add \(nodes: add\)"),
    # attributes
    (lambda m: _node(m, 0).attributes.add(name="a", i=1) and _node(m, 0).attributes.add(name="a", f=2.0),
     "node 'add': attribute 'a' is given twice"),
    (lambda m: _node(m, 0).attributes.add(i=1), "attribute names must be 1..4096"),
    (lambda m: _node(m, 0).attributes.add(name="nothing"), "attribute 'nothing' has no value"),
    (lambda m: _node(m, 0).attributes.add(name="t").t.CopyFrom(pb.Tensor(dims=[3], data_type=pb.FLOAT32,
                                                                          raw=b"\x00" * 4)),
     r"node 'add' attribute 't': declared shape \[3\] of float32 needs 12 bytes, found 4"),
    # weights
    (lambda m: m.graph.initializers.append(m.graph.initializers[0]), "weight 'w' is stored twice"),
    (lambda m: m.graph.initializers.add(dims=[1], data_type=pb.FLOAT32, raw=b"\0" * 4), "weight names must be"),
    (lambda m: setattr(m.graph.initializers[0], "data_type", 0), "weight 'w': unknown data type code 0"),
    # description
    (lambda m: m.description.inputs[0].ClearField("array"), "input feature 'x': declares neither an image nor"),
    (lambda m: _add_range(m, 5, 4), r"input feature 'x': invalid range 5..4"),
    (lambda m: _add_range(m, -1, 4), r"invalid range -1..4"),
    (lambda m: _add_range(m, 1, 2), r"default shape \[2, 3\] is outside the ranges 2×1..2"),
    (lambda m: m.description.inputs[0].shape.ranges.add(lower=1, upper=-1), "1 ranges for a rank-2 shape"),
    (lambda m: m.description.inputs[0].shape.enumerated.add(dims=[4]), r"enumerated shape \[4\] has rank 1"),
    (lambda m: [m.description.inputs[0].shape.enumerated.add(dims=[i, 3]) for i in range(1025)],
     "1025 enumerated shapes exceeds the limit"),
    (lambda m: (m.description.inputs[0].shape.enumerated.add(dims=[4, 3]), _add_range(m, 3, 3)),
     "both enumerated shapes and ranges"),
    (lambda m: setattr(m.description.inputs[0], "name", ""), "feature names must be 1..4096"),
    (lambda m: setattr(m.description.outputs[0], "name", "o" * 5000), "feature names must be 1..4096"),
    (lambda m: m.description.inputs.append(m.description.inputs[0]), r"input names \['x'\] are declared more"),
    (lambda m: setattr(m.description.inputs[0].array, "data_type", 77), "input feature 'x': unknown data type"),
    (lambda m: m.description.inputs[0].default_value.CopyFrom(pb.Tensor(dims=[3], data_type=pb.FLOAT32,
                                                                         raw=b"\0" * 12)),
     r"default value of shape \[3\] is not an allowed item shape \(2×3\)"),
    (lambda m: m.description.inputs[0].default_value.quantized.linear.scale.append(1.0),
     "quantized bits must be 1..8"),
])
def test_rejects_structural_problems(tmp_path: Path, mutate: Callable, pattern: str) -> None:
    _rejects(tmp_path, _edit(mutate), pattern, UnsupportedOpError if "unsupported" in pattern else ModelFormatError)


def test_rejects_quantized_default_value(tmp_path: Path) -> None:
    msg = to_proto(tiny_model())
    d = msg.description.inputs[0].default_value
    d.dims.extend([2, 3])
    d.quantized.bits = 8
    d.quantized.packed = b"\0" * 6
    d.quantized.linear.scale.append(1.0)
    d.quantized.linear.bias.append(0.0)
    _rejects(tmp_path, msg, "input feature 'x': default value cannot be quantized")


def _image_package() -> pb.ModelPackage:
    b = ModelBuilder("img")
    b.array_output(b.node("Relu", [b.image_input("image", (8, 8))]))
    return to_proto(b.build())


@pytest.mark.parametrize("mutate, pattern", [
    (lambda f: setattr(f.image, "color_layout", 9), "input feature 'image': unknown colour layout code 9"),
    (lambda f: f.image.scale.extend([1.0]), "2 scale values for a RGB image; give 1 or 3"),
    (lambda f: f.image.bias.extend([1.0, 2.0, 3.0]), "4 bias values for a RGB image; give 1 or 3"),
    (lambda f: (setattr(f.image, "color_layout", pb.GRAY), f.image.scale.extend([1.0, 1.0])),
     "3 scale values for a GRAY image; give 1 or 1"),
])
def test_rejects_bad_image_features(tmp_path: Path, mutate: Callable, pattern: str) -> None:
    msg = _image_package()
    mutate(msg.description.inputs[0])
    _rejects(tmp_path, msg, pattern)


def test_unspecified_colour_layout_reads_as_rgb() -> None:
    msg = _image_package()
    msg.description.inputs[0].image.color_layout = pb.COLOR_LAYOUT_UNSPECIFIED
    assert from_proto(msg).description.inputs[0].color_layout == "RGB"


def test_rejects_too_many_nodes(tmp_path: Path) -> None:
    msg = to_proto(tiny_model())
    template = msg.graph.nodes[1]
    for _ in range(MAX_NODES):
        msg.graph.nodes.append(template)
    _rejects(tmp_path, msg, f"{MAX_NODES + 2} nodes exceeds the limit of {MAX_NODES}")


def test_range_lower_bound_is_capped() -> None:
    msg = to_proto(tiny_model())
    shape = msg.description.inputs[0].shape
    shape.ranges.add(lower=2, upper=2)
    shape.ranges.add(lower=MAX_DIM + 1, upper=-1)
    with pytest.raises(ModelFormatError, match="invalid range 16777217..unbounded"):
        from_proto(msg, "m.corral")


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
