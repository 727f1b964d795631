"""ModelBuilder: every method, checked on the model it builds."""

from __future__ import annotations

import numpy as np
import pytest

from engine import ModelBuilder
from engine.exceptions import ModelFormatError, UnsupportedOpError


def test_metadata_goes_into_the_description() -> None:
    b = ModelBuilder("net", version="1.2", author="Ada", license="MIT", description="a test net")
    x = b.array_input("x", (2,))
    b.array_output(b.node("Relu", [x]))
    meta = b.build().description.metadata
    assert (meta.name, meta.version, meta.author, meta.license, meta.description) == \
        ("net", "1.2", "Ada", "MIT", "a test net")


@pytest.mark.parametrize("layout, channels", [("RGB", 3), ("BGR", 3), ("GRAY", 1)])
def test_image_input_shapes_and_pixel_mapping(layout: str, channels: int) -> None:
    b = ModelBuilder("img")
    scale = [0.5, 0.25, 0.125][:channels]
    x = b.image_input("image", (32, 48), color_layout=layout, scale=scale, bias=-1.0, sizes=[(64, 64)],
                      description="a photo")
    assert x == "image"
    f = b.description.inputs[0]
    assert (f.kind, f.color_layout, f.description, f.batched) == ("image", layout, "a photo", True)
    assert f.shape.default == (channels, 32, 48)
    assert f.shape.enumerated == [(channels, 64, 64)]
    assert f.scale == tuple(scale) and f.bias == (-1.0,)
    np.testing.assert_array_equal(f.per_channel(f.bias), [-1.0] * channels)


def test_image_input_ranges_fix_channels_and_default_unranged_sides() -> None:
    b = ModelBuilder("img")
    b.image_input("image", (64, 32), width_range=(16, None))
    spec = b.description.inputs[0].shape
    assert spec.ranges == [(3, 3), (64, 64), (16, None)]
    assert spec.allows((3, 64, 5000)) and not spec.allows((3, 65, 32)) and not spec.allows((3, 64, 8))


def test_array_input_default_batched_and_flexible_shapes() -> None:
    b = ModelBuilder("a")
    b.array_input("style", (4,), default=[0.0, 1.0, 0.0, 0.0], batched=False, description="style mix")
    b.array_input("ids", (3,), dtype="int64", shapes=[(5,), (7,)])
    b.array_input("seq", (8,), ranges=[(1, None)])
    style, ids, seq = b.description.inputs
    assert style.default.dtype == np.float32 and style.default.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert not style.batched and style.description == "style mix"
    assert ids.dtype == "int64" and ids.shape.enumerated == [(5,), (7,)] and ids.default is None
    assert seq.shape.ranges == [(1, None)] and seq.shape.allows((1000,))


def test_weight_and_node_naming() -> None:
    b = ModelBuilder("n")
    x = b.array_input("x", (3,))
    w = b.weight("w", np.ones(3, np.float32))
    assert w == "w" and b.graph.initializers["w"].shape == (3,)
    a = b.node("Add", [x, w])
    r = b.node("Relu", [a], name="act", alpha=0.5)
    parts = b.node("Split", [r], outputs=3, axis=0)
    named = b.node("Split", [r], outputs=["p", "q"])
    single = b.node("Identity", [r], outputs=["only"])
    assert a == "add_1" and r == "act"
    assert parts == ["split_2_out0", "split_2_out1", "split_2_out2"]
    assert named == ["p", "q"] and single == "only"
    nodes = {n.name: n for n in b.graph.nodes}
    assert nodes["act"].attrs == {"alpha": 0.5} and nodes["act"].inputs == ["add_1"]
    assert nodes["split_2"].attrs == {"axis": 0} and nodes["split_2"].domain == ""


def test_custom_layer_node_is_in_the_custom_domain() -> None:
    b = ModelBuilder("c")
    x = b.array_input("x", (3,))
    y = b.custom_layer("Swishy", [x], beta=1.5)
    b.array_output(y)
    model = b.build()
    node = model.graph.nodes[0]
    assert (node.op_type, node.domain, node.attrs) == ("Swishy", "custom", {"beta": 1.5})
    assert model.custom_layers() == ["Swishy"]


def test_array_output_renames_through_identity() -> None:
    b = ModelBuilder("o")
    x = b.array_input("x", (3,))
    y = b.node("Relu", [x])
    assert b.array_output(y, name="features", shape=(3,), description="relu'd") == "features"
    ident = b.graph.nodes[-1]
    assert (ident.op_type, ident.inputs, ident.outputs) == ("Identity", [y], ["features"])
    out = b.description.outputs[0]
    assert (out.name, out.kind, out.shape.default, out.description) == ("features", "array", (3,), "relu'd")
    b.build()


def test_array_output_with_its_own_name_adds_no_node() -> None:
    b = ModelBuilder("o")
    x = b.array_input("x", (3,))
    y = b.node("Relu", [x], name="y")
    b.array_output(y, name="y")
    assert len(b.graph.nodes) == 1


@pytest.mark.parametrize("layout, channels", [("RGB", 3), ("GRAY", 1)])
def test_image_output(layout: str, channels: int) -> None:
    b = ModelBuilder("o")
    x = b.image_input("image", (8, 8), color_layout=layout)
    y = b.image_output(b.node("Relu", [x]), name="stylized", color_layout=layout, scale=2.0, bias=0.5)
    f = b.description.outputs[0]
    assert y == "stylized"
    assert (f.kind, f.color_layout, f.scale, f.bias, f.shape.default) == \
        ("image", layout, (2.0,), (0.5,), (channels, 0, 0))
    b.build()


def test_classifier_output_sets_class_labels() -> None:
    b = ModelBuilder("cls")
    x = b.array_input("x", (3,))
    out = b.classifier_output(b.node("Softmax", [x]), ["cat", "dog", "eel"], name="probs")
    model = b.build()
    d = model.description
    assert out == "probs"
    assert d.class_labels == ["cat", "dog", "eel"] and d.class_labels_output == "probs"
    assert d.output("probs").shape.default == (3,)


def test_build_validates_unless_told_not_to() -> None:
    b = ModelBuilder("bad")
    x = b.array_input("x", (3,))
    b.array_output(b.node("Frobnicate", [x], name="frob"))
    with pytest.raises(UnsupportedOpError, match=r"Frobnicate \(nodes: frob\)"):
        b.build()
    assert b.build(validate=False).graph.nodes[0].op_type == "Frobnicate"


def test_build_rejects_dangling_names() -> None:
    b = ModelBuilder("bad")
    x = b.array_input("x", (3,))
    b.array_output(b.node("Add", [x, "nowhere"]))
    with pytest.raises(ModelFormatError, match="reads 'nowhere'"):
        b.build()


def test_build_rejects_a_default_outside_the_input_shape() -> None:
    b = ModelBuilder("bad")
    x = b.array_input("style", (4,), default=[1.0, 0.0])
    b.array_output(b.node("Relu", [x]))
    with pytest.raises(ModelFormatError, match=r"default value of shape \[2\] is not an allowed item shape"):
        b.build()
