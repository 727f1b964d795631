"""ONNX import: options, weights, folding, refusals, batch flexibility, and the real style network."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

from engine import compile
from engine.exceptions import ModelImportError, UnsupportedOpError
from engine.format import dumps, loads
from engine.importers import OnnxImportOptions, import_onnx
from engine.importers.onnx import MAX_BATCH_KEY
from tests.engine.backend_names import BACKENDS

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def make_model(nodes, inputs, outputs, initializers=(), opset=17, **kwargs):
    graph = helper.make_graph(nodes, "test_graph", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs)


def tensor(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def image_identity(shape=(1, 3, 4, 5)):
    """image [N,3,H,W] -> Identity -> out."""
    return make_model([helper.make_node("Identity", ["image"], ["out"])],
                      [helper.make_tensor_value_info("image", F, list(shape))],
                      [helper.make_tensor_value_info("out", F, list(shape))])


# ------------------------------------------------------------------ loading

def test_missing_onnx_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(ModelImportError, match=r"pip install 'corral\[onnx\]'"):
        import_onnx("whatever.onnx")


def test_missing_file_and_garbage_file(tmp_path):
    with pytest.raises(ModelImportError, match="no such ONNX file"):
        import_onnx(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00 definitely not protobuf" * 3)
    with pytest.raises(ModelImportError, match="bad.onnx"):
        import_onnx(bad)


def test_old_opset_is_refused_naming_it():
    # Add changed at opset 7 (numpy broadcasting): at opset 6 it means something else
    model = make_model([helper.make_node("Add", ["x", "x"], ["y"])], [helper.make_tensor_value_info("x", F, [2])],
                       [helper.make_tensor_value_info("y", F, [2])], opset=6)
    with pytest.raises(ModelImportError, match="opset 6"):
        import_onnx(model)


def test_an_old_opset_whose_ops_mean_what_they_mean_at_opset_7_imports():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, [2])],
                       [helper.make_tensor_value_info("y", F, [2])], opset=6)
    assert compile(import_onnx(model), "numpy").run({"x": np.array([-1.0, 2.0], np.float32)})["y"].tolist() == [0, 2]


# ------------------------------------------------------------------ image options

def test_imagenet_scale_and_bias_per_channel_in_bgr():
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    opts = OnnxImportOptions(image_inputs=["image"], color_layout="BGR", image_scale=list(1 / (255 * std)),
                             image_bias=list(-mean / std))
    model = import_onnx(image_identity(), opts)
    feature = model.description.input("image")
    assert feature.kind == "image" and feature.color_layout == "BGR"
    np.testing.assert_allclose(feature.scale, 1 / (255 * std), rtol=1e-6)
    np.testing.assert_allclose(feature.bias, -mean / std, rtol=1e-6)
    assert feature.shape.default == (3, 4, 5) and not feature.shape.is_flexible

    # End to end: a pixel of (R, G, B) = (10, 20, 30) reaches the graph as BGR, scaled and shifted per channel.
    pixels = np.zeros((4, 5, 3), np.uint8)
    pixels[...] = (10, 20, 30)
    out = compile(model).predict({"image": Image.fromarray(pixels, "RGB")})["out"]
    expected = np.array([30, 20, 10]) * feature.scale + np.array(feature.bias)
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_per_channel_values_must_match_channels():
    with pytest.raises(ModelImportError, match="2 scale values for 3 channels"):
        import_onnx(image_identity(), OnnxImportOptions(image_inputs=["image"], image_scale=[1, 2]))


def test_gray_image_and_wrong_rank():
    model = import_onnx(image_identity((1, 1, 8, 8)), OnnxImportOptions(image_inputs=["image"]))
    assert model.description.input("image").color_layout == "GRAY"
    with pytest.raises(ModelImportError, match="1 channel, so its colour layout is GRAY, not BGR"):
        import_onnx(image_identity((1, 1, 8, 8)), OnnxImportOptions(image_inputs=["image"], color_layout="BGR"))
    with pytest.raises(ModelImportError, match=r"must be \[N, C, H, W\]"):
        import_onnx(image_identity((3, 8, 8)), OnnxImportOptions(image_inputs=["image"]))


def test_image_names_must_exist():
    with pytest.raises(ModelImportError, match="'picture'"):
        import_onnx(image_identity(), OnnxImportOptions(image_inputs=["picture"]))


def test_image_output_maps_back_with_the_input_scale_by_default():
    opts = OnnxImportOptions(image_inputs=["image"], image_outputs=["out"], image_scale=1 / 255,
                             color_layout={"image": "RGB", "out": "BGR"})
    out = import_onnx(image_identity(), opts).description.output("out")
    assert out.kind == "image" and out.color_layout == "BGR" and out.batched
    assert out.scale == pytest.approx((1 / 255,)) and out.shape.default == (3, 4, 5)
    out = import_onnx(image_identity(), OnnxImportOptions(image_inputs=["image"], image_outputs=["out"],
                                                          image_scale=1 / 255, output_scale=2.0)).description
    assert out.output("out").scale == (2.0,)


# ------------------------------------------------------------------ sizes

def test_symbolic_spatial_dims_get_ranges_and_default_256():
    feature = import_onnx(image_identity((1, 3, "h", "w")),
                          OnnxImportOptions(image_inputs=["image"])).description.input("image")
    assert feature.shape.default == (3, 256, 256)
    assert feature.shape.ranges == [(3, 3), (1, None), (1, None)]
    assert feature.shape.allows((3, 17, 999)) and not feature.shape.allows((1, 17, 999))


def test_enumerated_sizes_and_ranges():
    opts = OnnxImportOptions(image_inputs=["image"], image_sizes=[(128, 128), (256, 192)])
    spec = import_onnx(image_identity((1, 3, "h", "w")), opts).description.input("image").shape
    assert spec.default == (3, 128, 128) and spec.enumerated == [(3, 128, 128), (3, 256, 192)]
    assert not spec.allows((3, 64, 64))

    opts = OnnxImportOptions(image_inputs=["image"], height_range=(64, 512), width_range=(64, None),
                             default_size=(300, 200))
    spec = import_onnx(image_identity((1, 3, "h", "w")), opts).description.input("image").shape
    assert spec.default == (3, 300, 200) and spec.ranges == [(3, 3), (64, 512), (64, None)]

    with pytest.raises(ModelImportError, match="not both"):
        import_onnx(image_identity(), OnnxImportOptions(image_inputs=["image"], image_sizes=[(4, 5)],
                                                        height_range=(1, 8)))
    with pytest.raises(ModelImportError, match="outside the allowed sizes"):
        import_onnx(image_identity((1, 3, "h", "w")),
                    OnnxImportOptions(image_inputs=["image"], height_range=(64, 128), default_size=(32, 64)))


def test_array_input_with_symbolic_dims_gets_ranges():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, ["n"])],
                       [helper.make_tensor_value_info("y", F, ["n"])])
    feature = import_onnx(model).description.input("x")
    assert feature.batched is False  # a rank-1 tensor has no batch axis
    assert feature.shape.default == (1,) and feature.shape.ranges == [(1, None)]


# ------------------------------------------------------------------ class labels and metadata

def classifier():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    return make_model([helper.make_node("MatMul", ["x", "w"], ["logits"]),
                       helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
                      [helper.make_tensor_value_info("x", F, ["N", 4])],
                      [helper.make_tensor_value_info("logits", F, ["N", 3]),
                       helper.make_tensor_value_info("probs", F, ["N", 3])], [tensor("w", w)])


def test_class_labels_from_a_list_or_a_file(tmp_path):
    desc = import_onnx(classifier(), OnnxImportOptions(class_labels=["cat", "dog", "owl"],
                                                       class_labels_output="probs")).description
    assert desc.class_labels == ["cat", "dog", "owl"] and desc.class_labels_output == "probs"
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nowl\n")
    desc = import_onnx(classifier(), OnnxImportOptions(class_labels=labels, class_labels_output="probs")).description
    assert desc.class_labels == ["cat", "dog", "owl"]


def test_class_labels_are_checked():
    with pytest.raises(ModelImportError, match="2 outputs"):
        import_onnx(classifier(), OnnxImportOptions(class_labels=["a", "b", "c"]))
    with pytest.raises(ModelImportError, match="2 class labels for output 'probs', which has 3 classes"):
        import_onnx(classifier(), OnnxImportOptions(class_labels=["a", "b"], class_labels_output="probs"))


def test_metadata_from_options_and_file(tmp_path):
    proto = classifier()
    proto.producer_name, proto.doc_string = "unit-test", "a tiny classifier"
    helper.set_model_props(proto, {"origin": "tests"})
    path = tmp_path / "tiny_classifier.onnx"
    onnx.save(proto, path)
    meta = import_onnx(path, OnnxImportOptions(author="me", license="MIT", version="1.2")).description.metadata
    assert (meta.name, meta.author, meta.license, meta.version) == ("tiny_classifier", "me", "MIT", "1.2")
    assert meta.description == "a tiny classifier"
    assert meta.user["origin"] == "tests" and meta.user["onnx_opset"] == "17"
    assert import_onnx(path, OnnxImportOptions(name="other")).description.metadata.name == "other"


# ------------------------------------------------------------------ weights

def test_constant_nodes_become_weights_and_compute_right():
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    nodes = [helper.make_node("Constant", [], ["w"], value=tensor("w", w)),
             helper.make_node("Constant", [], ["b"], value_floats=[0.5, -1.0]),
             helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["y"])]
    model = import_onnx(make_model(nodes, [helper.make_tensor_value_info("x", F, [2, 3])],
                                   [helper.make_tensor_value_info("y", F, [2, 2])]))
    assert [n.op_type for n in model.graph.nodes] == ["MatMul", "Add"]
    np.testing.assert_array_equal(model.graph.initializers["w"], w)
    assert model.graph.initializers["b"].dtype == np.float32
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(compile(model).run({"x": x})["y"], x @ w + [0.5, -1.0])


def test_initializers_listed_as_inputs_are_weights():
    w = np.full((2,), 3.0, np.float32)
    model = make_model([helper.make_node("Mul", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("w", F, [2])],
                       [helper.make_tensor_value_info("y", F, [2])], [tensor("w", w)])
    imported = import_onnx(model)
    assert [f.name for f in imported.description.inputs] == ["x"]
    np.testing.assert_array_equal(compile(imported).run({"x": np.ones(2, np.float32)})["y"], w)


def test_external_data_is_read_beside_the_model(tmp_path):
    w = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    proto = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", F, [1, 64])],
                       [helper.make_tensor_value_info("y", F, [1, 64])], [tensor("w", w)])
    path = tmp_path / "ext.onnx"
    onnx.save(proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.weights",
              size_threshold=0)
    assert (tmp_path / "ext.weights").stat().st_size == w.nbytes
    np.testing.assert_array_equal(import_onnx(path).graph.initializers["w"], w)


@pytest.mark.parametrize("dtype", [TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN, TensorProto.COMPLEX64])
def test_unstored_dtypes_are_refused_naming_the_tensor(dtype):
    bad = helper.make_tensor("odd_weight", dtype, [2], [1, 2] if dtype != TensorProto.COMPLEX64 else [1j, 2])
    model = make_model([helper.make_node("Add", ["x", "odd_weight"], ["y"])],
                       [helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])],
                       [bad])
    with pytest.raises(ModelImportError, match=f"'odd_weight'.*{TensorProto.DataType.Name(dtype)}"):
        import_onnx(model)


def test_cast_to_an_unstored_dtype_is_refused_naming_the_node():
    model = make_model([helper.make_node("Cast", ["x"], ["y"], name="to_bf16", to=TensorProto.BFLOAT16)],
                       [helper.make_tensor_value_info("x", F, [2])],
                       [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2])])
    with pytest.raises(ModelImportError, match="BFLOAT16"):
        import_onnx(model)
    model = make_model([helper.make_node("Cast", ["x"], ["y"], name="to_bf16", to=TensorProto.BFLOAT16)],
                       [helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])])
    with pytest.raises(ModelImportError, match="'to_bf16'.*BFLOAT16"):
        import_onnx(model)


# ------------------------------------------------------------------ unsupported ops

def test_unsupported_ops_are_listed_with_node_names():
    nodes = [helper.make_node("Hardmax", ["x"], ["a"], name="hardmax_1"),
             helper.make_node("Hardmax", ["a"], ["b"], name="hardmax_2"),
             helper.make_node("LabelEncoder", ["b"], ["c"], name="encoder", domain="ai.onnx.ml"),
             helper.make_node("Relu", ["c"], ["y"], name="fine")]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])])
    proto.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(proto)
    message = str(info.value)
    for text in ("Hardmax", "hardmax_1", "hardmax_2", "ai.onnx.ml:LabelEncoder", "encoder"):
        assert text in message
    assert "Relu" not in message
    assert set(info.value.unsupported) == {"Hardmax", "ai.onnx.ml:LabelEncoder"}


def test_custom_domain_nodes_become_custom_layers():
    nodes = [helper.make_node("Swirl", ["x"], ["y"], name="swirl", domain="custom", strength=2.0)]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
                       [helper.make_tensor_value_info("y", F, [1, 3, 8, 8])])
    proto.opset_import.append(helper.make_opsetid("custom", 1))
    model = import_onnx(proto, OnnxImportOptions(flexible_batch=True))
    assert model.custom_layers() == ["Swirl"]
    assert model.graph.nodes[0].attrs == {"strength": 2.0}


# ------------------------------------------------------------------ folding

def pytorch_style_pad():
    """The pad-amount arithmetic PyTorch emits for F.pad(x, (1, 1, 1, 1), mode="reflect")."""
    const = lambda name, value: helper.make_node("Constant", [], [name], value=tensor(name, value))
    nodes = [
        const("k4", np.array([4], np.int64)),
        const("pads_hw", np.array([1, 1, 1, 1], np.int64)),
        helper.make_node("ConstantOfShape", ["k4"], ["zeros"], value=tensor("v", np.array([0], np.int64))),
        helper.make_node("Concat", ["pads_hw", "zeros"], ["cat"], axis=0),
        const("shape_m1_2", np.array([-1, 2], np.int64)),
        helper.make_node("Reshape", ["cat", "shape_m1_2"], ["pairs"]),
        const("starts", np.array([-1], np.int64)), const("ends", np.array([-(2**63) + 1], np.int64)),
        const("axes", np.array([0], np.int64)), const("steps", np.array([-1], np.int64)),
        helper.make_node("Slice", ["pairs", "starts", "ends", "axes", "steps"], ["rev"]),
        helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
        const("flat", np.array([-1], np.int64)),
        helper.make_node("Reshape", ["tr", "flat"], ["pads64"]),
        helper.make_node("Cast", ["pads64"], ["pads"], to=I64),
        helper.make_node("Pad", ["image", "pads"], ["padded"], mode="reflect"),
        # Input-dependent shape arithmetic: must stay in the graph.
        helper.make_node("Shape", ["image"], ["shape"]),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("image", F, ["N", 3, "h", "w"])],
                      [helper.make_tensor_value_info("padded", F, ["N", 3, "h2", "w2"]),
                       helper.make_tensor_value_info("shape", I64, [4])])


def test_constant_shape_arithmetic_is_folded_and_input_shapes_are_not():
    model = import_onnx(pytorch_style_pad(), OnnxImportOptions(image_inputs=["image"]))
    assert [n.op_type for n in model.graph.nodes] == ["Pad", "Shape"]
    pad = model.graph.nodes[0]
    np.testing.assert_array_equal(model.graph.initializers[pad.inputs[1]], [0, 0, 1, 1, 0, 0, 1, 1])
    assert model.graph.initializers[pad.inputs[1]].dtype == np.int64
    # Only what the remaining nodes read is kept.
    assert set(model.graph.initializers) == {pad.inputs[1]}
    x = np.random.default_rng(1).random((2, 3, 5, 6), dtype=np.float32)
    out = compile(model).run({"image": x})
    np.testing.assert_array_equal(out["padded"], np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)], mode="reflect"))
    np.testing.assert_array_equal(out["shape"], [2, 3, 5, 6])


# ------------------------------------------------------------------ opset rewrites

def test_softmax_carries_its_opset():
    for opset in (11, 13):
        proto = make_model([helper.make_node("Softmax", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, [2, 3, 4])],
                           [helper.make_tensor_value_info("y", F, [2, 3, 4])], opset=opset)
        model = import_onnx(proto)
        assert model.graph.nodes[0].attrs["opset"] == opset
        x = np.random.default_rng(2).random((2, 3, 4), dtype=np.float32)
        y = compile(model).run({"x": x})["y"]
        rows = x.reshape(2, 12) if opset < 13 else x  # opset 11: 2-D coercion at axis 1
        want = np.exp(rows) / np.exp(rows).sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(y, want.reshape(2, 3, 4), rtol=1e-5)


def test_resize_10_gets_opset_11_inputs():
    scales = tensor("scales", np.array([1, 1, 2, 2], np.float32))
    proto = make_model([helper.make_node("Resize", ["x", "scales"], ["y"], mode="nearest")],
                       [helper.make_tensor_value_info("x", F, [1, 1, 2, 2])],
                       [helper.make_tensor_value_info("y", F, [1, 1, 4, 4])], [scales], opset=10)
    node = import_onnx(proto).graph.nodes[0]
    assert node.inputs == ["x", "", "scales"]
    assert node.attrs["coordinate_transformation_mode"] == "asymmetric"


# ------------------------------------------------------------------ batch dimension

def conv_net(batch_dim, flatten_shape=None):
    """x [batch_dim, 3, 8, 8] -> Conv 3x3 -> Relu (-> Reshape to flatten_shape)."""
    w = np.random.default_rng(3).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    inits = [tensor("w", w)]
    out_shape = [batch_dim, 4, 8, 8]
    if flatten_shape is not None:
        nodes[-1].output[0] = "r"
        nodes.append(helper.make_node("Reshape", ["r", "flat"], ["y"]))
        inits.append(tensor("flat", np.array(flatten_shape, np.int64)))
        out_shape = [1, 256]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, [batch_dim, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", F, out_shape)], inits)


def test_a_fixed_batch_of_one_becomes_flexible_when_the_graph_allows():
    model = import_onnx(conv_net(1), OnnxImportOptions(image_inputs=["x"]))
    assert model.description.input("x").batched and model.description.output("y").batched
    assert MAX_BATCH_KEY not in model.description.metadata.user
    compiled = compile(model)
    x = np.random.default_rng(4).random((2, 3, 8, 8), dtype=np.float32)
    both = compiled.run({"x": x})["y"]
    for i in range(2):
        np.testing.assert_allclose(both[i:i + 1], compiled.run({"x": x[i:i + 1]})["y"], rtol=1e-5, atol=1e-6)
    items = compiled.predict_batch([{"x": x[0]}, {"x": x[1]}])
    np.testing.assert_allclose(items[1]["y"], both[1], rtol=1e-5, atol=1e-6)


def test_a_batch_baked_into_a_reshape_is_unfixed_when_the_one_is_the_batch():
    # Reshape to [1, 256] breaks at batch 2; [0, 256] (the batch copied from the input) does not.
    model = import_onnx(conv_net(1, flatten_shape=[1, 256]))
    x, y = model.description.input("x"), model.description.output("y")
    assert x.batched and x.shape.default == (3, 8, 8) and y.batched and y.shape.default == (256,)
    [reshape] = [n for n in model.graph.nodes if n.op_type == "Reshape"]
    assert model.graph.initializers[reshape.inputs[1]].tolist() == [0, 256]
    compiled = compile(model, "numpy")
    rng = np.random.default_rng(5)
    items = [{"x": rng.random((3, 8, 8), dtype=np.float32)} for _ in range(3)]
    for item, got in zip(items, compiled.predict_batch(items)):
        np.testing.assert_allclose(got["y"], compiled.predict(item)["y"], rtol=1e-5, atol=1e-6)


def transposed_net():
    """x [1, 3, 8, 8] -> Transpose (batch to axis 1) -> Reshape [1, -1]: the 1 is not the batch."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2, 3]),
             helper.make_node("Reshape", ["t", "flat"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", F, [1, 192])], [tensor("flat", np.array([1, -1], np.int64))])


def test_a_batch_baked_into_a_reshape_stays_fixed_when_the_one_is_not_the_batch():
    model = import_onnx(transposed_net())
    x, y = model.description.input("x"), model.description.output("y")
    assert not x.batched and x.shape.default == (1, 3, 8, 8)
    assert not y.batched
    [reshape] = [n for n in model.graph.nodes if n.op_type == "Reshape"]
    assert model.graph.initializers[reshape.inputs[1]].tolist() == [1, -1]
    # As an image input the batch axis stays, limited to one item per run.
    model = import_onnx(transposed_net(), OnnxImportOptions(image_inputs=["x"]))
    assert model.description.input("x").batched
    assert model.description.metadata.user[MAX_BATCH_KEY] == "1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_limited_to_one_item_per_run_runs_a_batch_one_item_at_a_time(backend: str) -> None:
    model = import_onnx(transposed_net(), OnnxImportOptions(image_inputs=["x"]))
    compiled = compile(model, backend)
    runs: list[int] = []
    compiled.run_observer = lambda items, seconds: runs.append(items)
    rng = np.random.default_rng(4)
    items = [{"x": rng.random((3, 8, 8), dtype=np.float32)} for _ in range(3)]
    for item, got in zip(items, compiled.predict_batch(items, max_batch=16)):
        assert got["y"].shape == (192,)
        np.testing.assert_allclose(got["y"], compiled.predict(item)["y"], rtol=1e-6)
    assert runs[:3] == [1, 1, 1]


def sequence_net():
    """x [N, 4] -> Unsqueeze 0 -> y [1, N, 4]: the batch sits on the output's axis 1 ([T, N, C] logits)."""
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["u"]), helper.make_node("Relu", ["u"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                      [helper.make_tensor_value_info("y", F, [1, "N", 4])], [tensor("axes", np.array([0], np.int64))])


def test_an_output_may_carry_the_batch_on_a_later_axis():
    model = import_onnx(sequence_net())
    y = model.description.output("y")
    assert y.batched and y.batch_axis == 1 and y.shape.default == (1, 4)
    rng = np.random.default_rng(6)
    items = [{"x": rng.standard_normal(4).astype(np.float32)} for _ in range(3)]
    for backend in ("numpy", "onnxruntime"):
        results = compile(model, backend).predict_batch(items)
        for item, got in zip(items, results):
            np.testing.assert_array_equal(got["y"], np.maximum(item["x"], 0)[None])


def test_symbolic_batch_and_unbatched_vector_inputs():
    vec = make_model([helper.make_node("Unsqueeze", ["v", "axes"], ["u"]), helper.make_node("Mul", ["x", "u"], ["y"])],
                     [helper.make_tensor_value_info("x", F, ["N", 26]), helper.make_tensor_value_info("v", F, [26])],
                     [helper.make_tensor_value_info("y", F, ["N", 26])], [tensor("axes", np.array([0], np.int64))])
    desc = import_onnx(vec).description
    assert desc.input("x").batched and desc.input("x").shape.default == (26,)
    assert not desc.input("v").batched and desc.input("v").shape.default == (26,)
    assert desc.output("y").batched


def test_input_defaults():
    vec = make_model([helper.make_node("Add", ["x", "v"], ["y"])],
                     [helper.make_tensor_value_info("x", F, ["N", 3]), helper.make_tensor_value_info("v", F, [3])],
                     [helper.make_tensor_value_info("y", F, ["N", 3])])
    model = import_onnx(vec, OnnxImportOptions(input_defaults={"v": [1, 2, 3]}))
    assert model.description.input("v").default.dtype == np.float32
    out = compile(model).predict({"x": np.zeros(3, np.float32)})["y"]
    np.testing.assert_array_equal(out, [1, 2, 3])
    with pytest.raises(ModelImportError, match="default value of shape"):
        import_onnx(vec, OnnxImportOptions(input_defaults={"v": [1, 2]}))


def test_imported_model_survives_the_package_format():
    model = import_onnx(pytorch_style_pad(), OnnxImportOptions(image_inputs=["image"], image_scale=1 / 255))
    again = loads(dumps(model))
    assert again.description == model.description
    assert [n.op_type for n in again.graph.nodes] == ["Pad", "Shape"]


# ------------------------------------------------------------------ the real model

STYLES = (0, 7, 19)


@pytest.fixture(scope="module")
def multistyle(multistyle26_onnx):
    return import_onnx(multistyle26_onnx, OnnxImportOptions(image_inputs=["image"], image_scale=1 / 255,
                                                            image_outputs=["stylized"]))


def test_real_model_folds_to_compute_ops(multistyle):
    ops = multistyle.op_counts()
    for folded in ("Shape", "ConstantOfShape", "Cast", "Constant", "Concat", "Slice", "Transpose"):
        assert folded not in ops
    assert ops["Conv"] == 18 and ops["Pad"] == 18 and ops["Resize"] == 2
    pads = [multistyle.graph.initializers[n.inputs[1]] for n in multistyle.graph.nodes if n.op_type == "Pad"]
    assert len(pads) == 18 and all(p.dtype == np.int64 and p.shape == (8,) for p in pads)
    desc = multistyle.description
    assert desc.input("image").batched and desc.input("image").shape.ranges[1:] == [(1, None), (1, None)]
    assert not desc.input("style_weights").batched and desc.input("style_weights").shape.default == (26,)
    assert desc.output("stylized").kind == "image" and desc.output("stylized").batched
    assert MAX_BATCH_KEY not in desc.metadata.user  # the batch check ran and passed


@pytest.mark.slow
def test_real_model_matches_onnxruntime_on_photos(multistyle, multistyle26_onnx, photo_paths):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(multistyle26_onnx), providers=["CPUExecutionProvider"])
    compiled = compile(multistyle)
    photos = [np.asarray(Image.open(p).convert("RGB").resize((256, 256), Image.Resampling.BILINEAR),
                         np.float32).transpose(2, 0, 1)[None] / 255 for p in photo_paths[:3]]  # [1, 3, 256, 256]
    worst = 0.0
    for style in STYLES:
        weights = np.eye(26, dtype=np.float32)[style]
        expected = [session.run(["stylized"], {"image": x, "style_weights": weights})[0] for x in photos]
        for x, want in zip(photos, expected):
            got = compiled.run({"image": x, "style_weights": weights})["stylized"]
            assert got.shape == want.shape
            worst = max(worst, float(np.abs(got - want).max()))
        # The file fixes the batch at 1; corral runs all three photos as one batch.
        batch = compiled.run({"image": np.concatenate(photos), "style_weights": weights})["stylized"]
        worst = max(worst, float(np.abs(batch - np.concatenate(expected)).max()))
    assert worst <= 1e-4, f"max abs error {worst}"



@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_d_index_stays_zero_d_from_the_file_to_every_backend_and_back(backend: str) -> None:
    """A ViT's class token, x[:, 0] @ W: a 0-d Gather index gives [N, C], not [N, 1, C]."""
    import onnxruntime as ort

    from engine.exporters.onnx import to_onnx

    w = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["x", "zero"], ["token"], axis=1),
             helper.make_node("MatMul", ["token", "w"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 5, 3])],
                       [helper.make_tensor_value_info("y", F, ["N", 4])],
                       [tensor("zero", np.array(0, np.int64)), tensor("w", w)])
    model = import_onnx(proto)
    assert model.graph.initializers["zero"].shape == ()
    x = np.random.default_rng(6).standard_normal((2, 5, 3)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = compile(model, backend).run({"x": x})["y"]
    assert got.shape == want.shape == (2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    exported = to_onnx(model)
    [zero] = [t for t in exported.graph.initializer if t.name == "zero"]
    assert list(zero.dims) == []
