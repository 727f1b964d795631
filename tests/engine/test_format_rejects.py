"""The .corral loader's defences: every rejection is checked through a real file, for the error type and for a
message naming the file and the problem; fuzzed and truncated packages fail only with clear errors."""



from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import ModelBuilder
from engine.exceptions import ModelFormatError, UnsupportedOpError
from engine.format import MAX_NODES, dumps, from_proto, load, loads, to_proto
from engine.graph import Model
from engine.proto import corral_model_pb2 as pb
from engine.tensors import MAX_DIM, QuantizedTensor, pack_bits
from tests.engine.format_models import rich_model, tiny_model, write_package

BITS = range(1, 9)


# ------------------------------------------------------------------- rejects

def _rejects(tmp_path: Path, content: pb.ModelPackage | bytes, pattern: str,
             exc: type[ModelFormatError] = ModelFormatError) -> str:
    path = write_package(tmp_path, content)
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
    cuts = sorted({*range(64), *range(64, len(whole), max(1, len(whole) // 300)), len(whole) - 1})
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
    load(write_package(tmp_path, msg, "good.corral"))
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


