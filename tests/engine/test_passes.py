"""Graph passes: each rewrite shrinks the graph and keeps the outputs, and the caller's model is untouched."""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytest

from engine import ModelBuilder
from engine import compile as engine_compile
from engine.format import digest
from engine.graph import Model
from engine.ops import make_op
from engine.passes import PASS_NAMES, optimize
from engine.runtime import Executor
from engine.tensors import to_float_array

RNG = np.random.default_rng(7)

# These tests look inside corral's own pipeline: the numpy backend, the reference, runs every pass.
compile = partial(engine_compile, backend="numpy")


def run_unoptimized(model: Model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's own graph, node by node, with no pass applied: the reference."""
    nodes = model.graph.toposort([f.name for f in model.description.inputs])
    constants = {k: to_float_array(w) for k, w in model.graph.initializers.items()}
    return Executor(nodes, [make_op(n) for n in nodes], constants, [f.name for f in model.description.outputs]).run(feeds)


def op_types(compiled) -> list[str]:  # type: ignore[no-untyped-def]
    return [n.op_type for n in compiled.executor.nodes]


def snapshot(model: Model) -> tuple:
    return (digest(model), copy.deepcopy([(n.op_type, n.inputs, n.outputs, sorted(n.attrs)) for n in model.graph.nodes]),
            dict(model.graph.initializers))


# ---------------------------------------------------------------- models

def constant_chain_model() -> Model:
    """y = relu(x + (w * 2 + w)): everything in the parentheses is constant."""
    b = ModelBuilder("constants")
    x = b.array_input("x", (3, 4, 5))
    w = b.weight("w", RNG.standard_normal((3, 1, 1)).astype(np.float32))
    two = b.node("Constant", [], value=np.array(2.0, np.float32))
    t = b.node("Add", [b.node("Mul", [w, two]), w])
    y = b.node("Relu", [b.node("Add", [x, t])])
    b.array_output(y, name="y")
    return b.build()


def conv_bn_model(extra_reader: bool = False, activation: str = "Relu") -> Model:
    b = ModelBuilder("conv_bn")
    x = b.array_input("x", (3, 9, 9))
    w = b.weight("w", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32))
    bias = b.weight("b", RNG.standard_normal(4).astype(np.float32))
    conv = b.node("Conv", [x, w, bias], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    params = [b.weight(name, value) for name, value in (
        ("gamma", RNG.uniform(0.5, 2, 4).astype(np.float32)), ("beta", RNG.standard_normal(4).astype(np.float32)),
        ("mean", RNG.standard_normal(4).astype(np.float32)), ("var", RNG.uniform(0.5, 3, 4).astype(np.float32)))]
    y = b.node("BatchNormalization", [conv, *params], epsilon=1e-3)
    y = b.node(activation, [y])
    b.array_output(y, name="y")
    if extra_reader:
        b.array_output(conv, name="raw")
    return b.build()


def instance_norm_model(div_form: bool = False, expose_mean: bool = False) -> Model:
    """Conditional instance norm as PyTorch exports it: per-item scale/shift from a style vector."""
    b = ModelBuilder("cin")
    x = b.array_input("x", (4, 6, 5), ranges=[(4, 4), (1, None), (1, None)])
    style = b.array_input("style", (3,), batched=False, default=np.array([0.2, 0.5, 0.3], np.float32))
    gamma = b.weight("gamma", RNG.standard_normal((3, 4)).astype(np.float32))
    beta = b.weight("beta", RNG.standard_normal((3, 4)).astype(np.float32))
    shape = b.weight("shape", np.array([1, 4, 1, 1], np.int64))
    scale = b.node("Reshape", [b.node("MatMul", [style, gamma]), shape])
    shift = b.node("Reshape", [b.node("MatMul", [style, beta]), shape])
    mean = b.node("ReduceMean", [x], axes=[2, 3], keepdims=1)
    d = b.node("Sub", [x, mean])
    var = b.node("ReduceMean", [b.node("Pow", [d, b.weight("two", np.array(2.0, np.float32))])], axes=[2, 3])
    s = b.node("Sqrt", [b.node("Add", [var, b.weight("eps", np.array(1e-5, np.float32))])])
    if div_form:
        n = b.node("Div", [d, s])
    else:
        n = b.node("Mul", [d, b.node("Div", [b.weight("one", np.array(1.0, np.float32)), s])])
    y = b.node("Relu", [b.node("Add", [b.node("Mul", [n, scale]), shift])])
    b.array_output(y, name="y")
    if expose_mean:
        b.array_output(mean, name="mean")
    return b.build()


# ---------------------------------------------------------------- tests

def test_constant_folding_leaves_fewer_nodes_and_the_same_outputs() -> None:
    model = constant_chain_model()
    compiled = compile(model)
    assert op_types(compiled) == ["Add", "Relu"]
    assert compiled.stats["fold_constants"] == 3
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], run_unoptimized(model, {"x": x})["y"])


def test_passes_never_change_the_callers_model() -> None:
    for model in (constant_chain_model(), conv_bn_model(), instance_norm_model()):
        before = snapshot(model)
        weights = {k: np.array(v) for k, v in model.graph.initializers.items()}
        compile(model)
        after = snapshot(model)
        assert after[0] == before[0] and after[1] == before[1]
        assert all(after[2][k] is before[2][k] for k in before[2])
        for k, v in weights.items():
            np.testing.assert_array_equal(model.graph.initializers[k], v)


def test_dead_nodes_and_their_weights_are_dropped() -> None:
    b = ModelBuilder("dead")
    x = b.array_input("x", (4,))
    unused = b.weight("unused", np.ones(4, np.float32))
    dead = b.node("Sub", [x, unused], name="dead_sub")
    b.node("Mul", [dead, dead], name="dead_mul")
    y = b.node("Relu", [x], name="live")
    b.array_output(y, name="y")
    model = b.build()
    compiled = compile(model)
    names = [n.name for n in compiled.executor.nodes]
    assert "dead_sub" not in names and "dead_mul" not in names and "live" in names
    assert "unused" not in compiled.executor.constants
    assert compiled.stats["drop_dead_nodes"] == 2


def test_batchnorm_folds_into_conv_within_1e5() -> None:
    model = conv_bn_model()
    compiled = compile(model)
    assert op_types(compiled) == ["Conv"]
    conv = compiled.executor.nodes[0]
    assert len(conv.inputs) == 3 and conv.attrs["activation"] == "Relu"
    x = RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(compiled.run({"x": x})["y"], run_unoptimized(model, {"x": x})["y"], atol=1e-5)


def test_batchnorm_stays_when_the_conv_output_has_another_reader() -> None:
    model = conv_bn_model(extra_reader=True)
    compiled = compile(model)
    assert "BatchNormalization" in op_types(compiled)
    x = RNG.standard_normal((1, 3, 9, 9)).astype(np.float32)
    got, want = compiled.run({"x": x}), run_unoptimized(model, {"x": x})
    for name in ("y", "raw"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_activation_fuses_into_conv(activation: str) -> None:
    b = ModelBuilder("conv_act")
    x = b.array_input("x", (2, 6, 6))
    conv = b.node("Conv", [x, b.weight("w", RNG.standard_normal((5, 2, 3, 3)).astype(np.float32))])
    b.array_output(b.node(activation, [conv]), name="y")
    model = b.build()
    compiled = compile(model)
    assert op_types(compiled) == ["Conv"]
    assert compiled.executor.nodes[0].attrs["activation"] == activation
    assert compiled.executor.nodes[0].outputs == ["y"]
    x_val = RNG.standard_normal((3, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(compiled.run({"x": x_val})["y"], run_unoptimized(model, {"x": x_val})["y"],
                               atol=1e-6)


@pytest.mark.parametrize("div_form", [False, True])
def test_instance_norm_pattern_becomes_one_fused_node(div_form: bool) -> None:
    model = instance_norm_model(div_form=div_form)
    compiled = compile(model)
    fused = [n for n in compiled.executor.nodes if n.op_type == "FusedMeanVarianceNorm"]
    assert len(fused) == 1 and fused[0].attrs["activation"] == "Relu"
    assert fused[0].attrs["epsilon"] == pytest.approx(1e-5)
    assert not {"ReduceMean", "Sub", "Pow", "Sqrt", "Relu"} & set(op_types(compiled))
    for shape in [(2, 4, 6, 5), (1, 4, 31, 17)]:
        x = (RNG.standard_normal(shape) * 3 + 1).astype(np.float32)
        style = np.array([0.1, 0.7, 0.2], np.float32)
        got = compiled.run({"x": x, "style": style})["y"]
        want = run_unoptimized(model, {"x": x, "style": style})["y"]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_norm_pattern_with_an_observed_intermediate_is_left_alone() -> None:
    model = instance_norm_model(expose_mean=True)
    compiled = compile(model)
    assert "FusedMeanVarianceNorm" not in op_types(compiled)
    x = RNG.standard_normal((1, 4, 6, 5)).astype(np.float32)
    style = np.array([0.3, 0.3, 0.4], np.float32)
    got, want = compiled.run({"x": x, "style": style}), run_unoptimized(model, {"x": x, "style": style})
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-5)
    np.testing.assert_array_equal(got["mean"], want["mean"])


def test_identity_before_a_named_output_is_dropped() -> None:
    b = ModelBuilder("named")
    x = b.array_input("x", (3,))
    b.array_output(b.node("Relu", [x]), name="result")  # the builder adds an Identity to rename
    compiled = compile(b.build())
    assert op_types(compiled) == ["Relu"]
    assert compiled.executor.nodes[0].outputs == ["result"]
    np.testing.assert_array_equal(compiled.run({"x": np.array([[-1, 0, 2]], np.float32)})["result"], [[0, 0, 2]])


def test_skipping_passes_keeps_their_nodes() -> None:
    model = instance_norm_model()
    compiled = compile(model, skip_passes=["fuse_norm", "fuse_activations"])
    assert "FusedMeanVarianceNorm" not in op_types(compiled) and "Relu" in op_types(compiled)
    with pytest.raises(ValueError, match="unknown passes"):
        optimize(model, skip=["no_such_pass"])
    assert "fuse_norm" in PASS_NAMES


def _reference_norm(x: np.ndarray, axes: tuple[int, ...], eps: float, scale: np.ndarray, bias: np.ndarray,
                    activation: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    d = x64 - x64.mean(axis=axes, keepdims=True)
    y = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + eps) * scale + bias
    if activation == "Relu":
        y = np.maximum(y, 0)
    elif activation == "Sigmoid":
        y = 1 / (1 + np.exp(-y))
    return y


@pytest.mark.parametrize("shape, axes, scale_shape, activation", [
    ((1, 2, 400, 400), [2, 3], (1, 2, 1, 1), "Relu"),      # rows longer than a tile: chunked in place
    ((3, 5, 7, 9), [-2, -1], (1, 5, 1, 1), "Sigmoid"),     # many short rows per tile
    ((2, 3, 6, 6), [1], (1, 3, 1, 1), ""),                 # non-trailing axis: general path
    ((2, 3, 6, 6), [2, 3], (1, 1, 6, 6), "Relu"),          # spatial scale: general path
])
def test_fused_norm_kernel_matches_a_float64_reference(shape: tuple, axes: list, scale_shape: tuple,
                                                       activation: str) -> None:
    from engine.graph import Node

    op = make_op(Node("FusedMeanVarianceNorm", ["x", "s", "b"], ["y"],
                      attrs={"axes": axes, "epsilon": 1e-5, "activation": activation}))
    x = (RNG.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    scale = RNG.uniform(0.5, 2, scale_shape).astype(np.float32)
    bias = RNG.standard_normal(scale_shape).astype(np.float32)
    got = op([x, scale, bias])[0]
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference_norm(x, tuple(axes), 1e-5, scale, bias, activation), atol=2e-5)
    np.testing.assert_array_equal(op([x, scale, bias])[0], got)  # the input was left as it was


def test_quantized_weights_are_dequantized_once_at_compile_time() -> None:
    from engine.tensors import QuantizedTensor, pack_bits

    codes = RNG.integers(0, 16, size=(3, 1, 1))
    weight = QuantizedTensor(shape=(3, 1, 1), bits=4, packed=pack_bits(codes, 4), scheme="linear",
                             scale=np.array([0.25], np.float32), bias=np.array([-1.0], np.float32))
    b = ModelBuilder("quantized")
    x = b.array_input("x", (3, 2, 2))
    b.array_output(b.node("Mul", [x, b.weight("w", weight)]), name="y")
    model = b.build()
    compiled = compile(model)
    stored = compiled.executor.constants["w"]
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, codes * np.float32(0.25) - 1)
    assert model.graph.initializers["w"] is weight  # the package keeps its compact form
    x_val = RNG.standard_normal((1, 3, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(compiled.run({"x": x_val})["y"], x_val * stored)


def test_the_sigmoids_of_a_dynamically_quantized_graph_give_onnxruntimes_values() -> None:
    """onnxruntime's sigmoid is an approximation; codes rounded from it depend on its last bit."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from engine.importers import import_onnx

    F = TensorProto.FLOAT
    x = np.linspace(-20, 20, 200_001, dtype=np.float32)[None]
    for quantized in (True, False):
        nodes = [helper.make_node("Sigmoid", ["x"], ["y"])]
        outputs = [helper.make_tensor_value_info("y", F, [1, x.shape[1]])]
        if quantized:
            nodes.append(helper.make_node("DynamicQuantizeLinear", ["y"], ["q", "scale", "zero"]))
            outputs.append(helper.make_tensor_value_info("q", TensorProto.UINT8, [1, x.shape[1]]))
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [1, x.shape[1]])], outputs)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        model = import_onnx(proto)
        for backend in ("numpy", "torch"):
            got = engine_compile(model, backend).run({"x": x})
            if quantized:
                np.testing.assert_array_equal(got["y"], want[0])  # bit for bit
                np.testing.assert_array_equal(got["q"], want[1])
            else:  # elsewhere corral's sigmoid is the exact one, a little way from onnxruntime's here and there
                assert not np.array_equal(got["y"], want[0])
                np.testing.assert_allclose(got["y"], want[0], rtol=1e-6, atol=2e-7)
        assert engine_compile(model, "numpy").stats.get("match_dynamic_quantization", 0) == (1 if quantized else 0)
