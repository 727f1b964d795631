"""QuantizeLinear and DequantizeLinear against onnxruntime, QDQ models through import and compile, and the
dequantize_weights pass."""

from __future__ import annotations

from functools import partial

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import ModelBuilder
from engine import compile as engine_compile
from engine.exceptions import OpError
from engine.importers import OnnxImportOptions, import_onnx
from engine.ops import make_op, op_class
from engine.passes import PassContext, optimize
from engine.passes.dequantize_weights import dequantize_weights
from engine.runtime import Executor
from engine.tensors import to_float_array
from tests.engine.ops.ort_single_node import corral_run, ort_run

RNG = np.random.default_rng(11)

# corral's own pipeline: the numpy backend runs every pass.
compile = partial(engine_compile, backend="numpy")


def assert_same_as_ort(op_type: str, inputs: list[np.ndarray | None], attrs: dict, out_dtype: np.dtype,
                       opset: int = 21) -> np.ndarray:
    """Bit-exact agreement with onnxruntime (quantized codes and dequantized floats alike)."""
    expected = ort_run(op_type, inputs, attrs, opset=opset, out_dtypes=[out_dtype])[0]
    got = corral_run(op_type, inputs, attrs)[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected, err_msg=f"{op_type} {attrs}")
    return got


def f32(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


# ---------------------------------------------------------------- QuantizeLinear

@pytest.mark.parametrize("zp_dtype", [np.uint8, np.int8])
def test_quantize_per_tensor(zp_dtype: type) -> None:
    x = RNG.standard_normal((2, 3, 5, 4)).astype(np.float32) * 4
    zp = np.array(100 if zp_dtype is np.uint8 else -7, zp_dtype)
    got = assert_same_as_ort("QuantizeLinear", [x, np.array(0.037, np.float32), zp], {}, zp_dtype)
    assert got.dtype == zp_dtype


def test_quantize_without_zero_point_is_uint8() -> None:
    x = f32(-1.0, 0.0, 0.4, 1.0, 200.0)
    got = assert_same_as_ort("QuantizeLinear", [x, np.array(0.5, np.float32)], {}, np.uint8)
    np.testing.assert_array_equal(got, [0, 0, 1, 2, 255])


def test_quantize_output_dtype_without_zero_point() -> None:
    x = f32(-300.0, -1.0, 0.0, 1.0, 300.0)
    got = assert_same_as_ort("QuantizeLinear", [x, np.array(1.0, np.float32)], {"output_dtype": TensorProto.INT8},
                             np.int8)
    np.testing.assert_array_equal(got, [-128, -1, 0, 1, 127])


@pytest.mark.parametrize("axis", [0, 1, -1, -3])
@pytest.mark.parametrize("zp_dtype", [np.uint8, np.int8])
def test_quantize_per_axis(axis: int, zp_dtype: type) -> None:
    x = RNG.standard_normal((3, 4, 5)).astype(np.float32) * 3
    dim = x.shape[axis]
    scale = RNG.uniform(0.01, 0.1, dim).astype(np.float32)
    info = np.iinfo(zp_dtype)
    zp = RNG.integers(info.min + 20, info.max - 20, dim).astype(zp_dtype)
    assert_same_as_ort("QuantizeLinear", [x, scale, zp], {"axis": axis}, zp_dtype, opset=13)


@pytest.mark.parametrize("zp", [np.uint8(0), np.uint8(200), np.int8(-128), np.int8(0), np.int8(127)])
def test_quantize_saturates_at_both_ends(zp: np.generic) -> None:
    x = f32(-1e30, -1e4, -300.0, -129.0, -1.0, 0.0, 1.0, 128.0, 256.0, 300.0, 1e4, 1e30, np.inf, -np.inf, np.nan)
    got = assert_same_as_ort("QuantizeLinear", [x, np.array(1.0, np.float32), np.array(zp)], {}, zp.dtype)
    info = np.iinfo(zp.dtype)
    assert got[0] == info.min and got[11] == info.max
    assert got[12] == info.max and got[13] == info.min


@pytest.mark.parametrize("zp", [np.uint8(128), np.int8(0), np.int8(-3)])
def test_quantize_rounds_half_to_even(zp: np.generic) -> None:
    x = f32(-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999997, 1.5000001)
    got = assert_same_as_ort("QuantizeLinear", [x, np.array(1.0, np.float32), np.array(zp)], {}, zp.dtype)
    np.testing.assert_array_equal(got.astype(np.int64) - int(zp), [-4, -2, -2, 0, 0, 2, 2, 4, 0, 2])
    # ties after the division by the scale too: 0.75 / 0.5 = 1.5 -> 2, 1.25 / 0.5 = 2.5 -> 2
    halves = assert_same_as_ort("QuantizeLinear", [f32(0.75, 1.25, -0.25), np.array(0.5, np.float32), np.array(zp)],
                                {}, zp.dtype)
    np.testing.assert_array_equal(halves.astype(np.int64) - int(zp), [2, 2, 0])


@pytest.mark.parametrize("zp_dtype", [np.int16, np.uint16])
def test_quantize_16_bit(zp_dtype: type) -> None:
    x = f32(-1e6, -2.5, -1.0, 0.0, 0.5, 1.5, 123.4, 1e6)
    zp = np.array(7 if zp_dtype is np.int16 else 30000, zp_dtype)
    assert_same_as_ort("QuantizeLinear", [x, np.array(0.01, np.float32), zp], {}, zp_dtype)


@pytest.mark.parametrize("shape,axis,block", [((4, 6), 1, 3), ((4, 7), 1, 3), ((6, 5), 0, 2), ((2, 5, 4), -2, 2)])
def test_quantize_blocked(shape: tuple[int, ...], axis: int, block: int) -> None:
    x = RNG.standard_normal(shape).astype(np.float32) * 5
    pshape = list(shape)
    pshape[axis] = -(-shape[axis] // block)
    scale = RNG.uniform(0.02, 0.2, pshape).astype(np.float32)
    zp = RNG.integers(-10, 10, pshape).astype(np.int8)
    assert_same_as_ort("QuantizeLinear", [x, scale, zp], {"axis": axis, "block_size": block}, np.int8)


def test_quantize_of_a_scalar() -> None:
    got = assert_same_as_ort("QuantizeLinear", [np.array(2.5, np.float32), np.array(1.0, np.float32),
                                                np.array(3, np.int8)], {}, np.int8)
    assert got.shape == () and int(got) == 5


# ---------------------------------------------------------------- DequantizeLinear

@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_dequantize_per_tensor(x_dtype: type) -> None:
    info = np.iinfo(x_dtype)
    x = RNG.integers(info.min, info.max, (2, 3, 4), endpoint=True).astype(x_dtype)
    zp = np.array(info.max // 2, x_dtype)
    got = assert_same_as_ort("DequantizeLinear", [x, np.array(0.0173, np.float32), zp], {}, np.float32)
    assert got.dtype == np.float32
    # and without a zero point (0)
    assert_same_as_ort("DequantizeLinear", [x, np.array(0.0173, np.float32)], {}, np.float32)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("x_dtype", [np.uint8, np.int8])
def test_dequantize_per_axis(axis: int, x_dtype: type) -> None:
    info = np.iinfo(x_dtype)
    x = RNG.integers(info.min, info.max, (3, 4, 5), endpoint=True).astype(x_dtype)
    dim = x.shape[axis]
    scale = RNG.uniform(0.001, 0.1, dim).astype(np.float32)
    zp = RNG.integers(info.min, info.max, dim, endpoint=True).astype(x_dtype)
    assert_same_as_ort("DequantizeLinear", [x, scale, zp], {"axis": axis}, np.float32, opset=13)


def test_dequantize_int32_bias() -> None:
    # a bias quantized with scale_x * scale_w per output channel, as quantize_static writes it: large codes too
    bias = np.array([-2**30, -123456789, -1, 0, 1, 16777217, 2**31 - 1], np.int32)
    scale = RNG.uniform(1e-6, 1e-4, bias.size).astype(np.float32)
    assert_same_as_ort("DequantizeLinear", [bias, scale], {"axis": 0}, np.float32)
    assert_same_as_ort("DequantizeLinear", [bias, np.array(3e-5, np.float32)], {}, np.float32)


@pytest.mark.parametrize("x_dtype", [np.int16, np.uint16])
def test_dequantize_16_bit(x_dtype: type) -> None:
    info = np.iinfo(x_dtype)
    x = np.array([info.min, info.min + 1, 0, 1, 1000, info.max], x_dtype)
    assert_same_as_ort("DequantizeLinear", [x, np.array(0.001, np.float32), np.array(info.max // 3, x_dtype)], {},
                       np.float32)


@pytest.mark.parametrize("shape,axis,block", [((4, 6), 1, 3), ((4, 7), 1, 3), ((1, 4, 3, 2), 1, 2)])
def test_dequantize_blocked(shape: tuple[int, ...], axis: int, block: int) -> None:
    x = RNG.integers(-128, 127, shape, endpoint=True).astype(np.int8)
    pshape = list(shape)
    pshape[axis] = -(-shape[axis] // block)
    scale = RNG.uniform(0.01, 0.1, pshape).astype(np.float32)
    zp = RNG.integers(-5, 5, pshape).astype(np.int8)
    assert_same_as_ort("DequantizeLinear", [x, scale, zp], {"axis": axis, "block_size": block}, np.float32)


def test_dequantize_float16_scale_gives_float16() -> None:
    x = np.array([-128, -3, 0, 5, 127], np.int8)
    got = assert_same_as_ort("DequantizeLinear", [x, np.array(0.0123, np.float16), np.array(2, np.int8)], {},
                             np.float16)
    assert got.dtype == np.float16


def test_quantize_then_dequantize_round_trips_within_half_a_step() -> None:
    x = RNG.uniform(-1, 1, 1000).astype(np.float32)
    scale, zp = np.array(2 / 255, np.float32), np.array(128, np.uint8)
    q = corral_run("QuantizeLinear", [x, scale, zp], {})[0]
    y = corral_run("DequantizeLinear", [q, scale, zp], {})[0]
    assert np.abs(y - x).max() <= scale / 2 + 1e-7


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("op_type,inputs,attrs,message", [
    ("QuantizeLinear", [f32(1, 2, 3), f32(0.1, 0.2)], {"axis": 0}, "neither a scalar nor one value per index"),
    ("QuantizeLinear", [f32(1, 2), np.array(1, np.int32)], {}, "y_scale must be float"),
    ("QuantizeLinear", [f32(1, 2), np.array(1.0, np.float32), np.array(1, np.int32)], {}, "y_zero_point must be"),
    ("QuantizeLinear", [f32(1, 2), np.array(1.0, np.float32), np.array(1, np.uint8)], {"output_dtype": 3},
     "differs from y_zero_point"),
    ("QuantizeLinear", [np.ones((4, 6), np.float32), np.ones((4, 3), np.float32)], {"block_size": 3},
     "does not fit blocks of 3"),
    ("DequantizeLinear", [np.array([1, 2], np.int8), np.array(1.0, np.float32), np.array(0, np.uint8)], {},
     "must have the same type"),
    ("DequantizeLinear", [f32(1, 2), np.array(1.0, np.float32)], {}, "x must be uint8, int8"),
    ("DequantizeLinear", [np.zeros((2, 3), np.int8), f32(1, 2, 3), np.zeros(2, np.int8)], {},
     "differs from the scale's"),
    ("DequantizeLinear", [np.zeros((2, 3), np.int8), f32(1, 2)], {"axis": 2}, "axis 2 out of range"),
])
def test_errors_name_the_node(op_type: str, inputs: list, attrs: dict, message: str) -> None:
    with pytest.raises(OpError, match=message) as info:
        corral_run(op_type, inputs, attrs)
    assert op_type in str(info.value)


@pytest.mark.parametrize("op_type,attrs", [("QuantizeLinear", {"output_dtype": TensorProto.FLOAT8E4M3FN}),
                                           ("QuantizeLinear", {"output_dtype": TensorProto.INT4}),
                                           ("DequantizeLinear", {"output_dtype": TensorProto.BFLOAT16}),
                                           ("DequantizeLinear", {"block_size": -1})])
def test_unsupported_attributes_are_refused(op_type: str, attrs: dict) -> None:
    with pytest.raises(OpError, match="bad attributes"):
        corral_run(op_type, [f32(1.0), np.array(1.0, np.float32)], attrs)


def test_dequantize_is_not_foldable() -> None:
    assert op_class("DequantizeLinear").foldable is False


# ---------------------------------------------------------------- a QDQ model

W_SCALE = RNG.uniform(0.002, 0.02, 4).astype(np.float32)  # per output channel, axis 0
X_SCALE, X_ZP = np.float32(2 / 255), np.uint8(128)


def qdq_conv_onnx() -> tuple:
    """input -> Q -> DQ -> Conv(DQ(int8 weight), DQ(int32 bias)) -> output, as quantize_static lays it out."""
    weight = RNG.integers(-127, 127, (4, 3, 3, 3), endpoint=True).astype(np.int8)
    bias = RNG.integers(-5000, 5000, 4).astype(np.int32)
    inits = [numpy_helper.from_array(weight, "w_q"), numpy_helper.from_array(W_SCALE, "w_scale"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
             numpy_helper.from_array(bias, "b_q"), numpy_helper.from_array(W_SCALE * X_SCALE, "b_scale"),
             numpy_helper.from_array(np.zeros(4, np.int32), "b_zp"),
             numpy_helper.from_array(np.array(X_SCALE), "x_scale"), numpy_helper.from_array(np.array(X_ZP), "x_zp")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="x_quant"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="x_dequant"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dequant", axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="b_dequant", axis=0),
        helper.make_node("Conv", ["x_dq", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return proto, weight


def ort_session_run(proto, feeds: dict[str, np.ndarray], level: ort.GraphOptimizationLevel) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_qdq_model_keeps_its_int8_weight_and_dequantizes_it_at_compile() -> None:
    proto, weight = qdq_conv_onnx()
    model = import_onnx(proto, OnnxImportOptions(name="qdq", flexible_batch=False))

    # the package keeps the QDQ structure: int8 weight, int32 bias, every DequantizeLinear
    assert [n.op_type for n in model.graph.nodes].count("DequantizeLinear") == 3
    assert model.graph.initializers["w_q"].dtype == np.int8
    np.testing.assert_array_equal(model.graph.initializers["w_q"], weight)
    assert model.graph.initializers["b_q"].dtype == np.int32
    producers = {o: n for n in model.graph.nodes for o in n.outputs}
    assert producers["w"].op_type == "DequantizeLinear" and producers["w"].inputs[0] == "w_q"

    compiled = compile(model)
    nodes = compiled.executor.nodes
    # only the activation's pair is left; the Conv reads float weights
    assert [n.op_type for n in nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")] == \
        ["QuantizeLinear", "DequantizeLinear"]
    dq = next(n for n in nodes if n.op_type == "DequantizeLinear")
    assert dq.inputs[0] == "x_q"
    conv = next(n for n in nodes if n.op_type == "Conv")
    for name in conv.inputs[1:]:
        assert compiled.executor.constants[name].dtype == np.float32
    assert compiled.stats["dequantize_weights"] == 2

    x = RNG.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    got = compiled.run({"x": x})["y"]
    expected = ort_session_run(proto, {"x": x}, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # onnxruntime's own optimized session (QDQ fusions enabled) agrees too
    fused = ort_session_run(proto, {"x": x}, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)[0]
    np.testing.assert_allclose(got, fused, rtol=1e-5, atol=1e-5)


def test_import_folds_a_weights_quantize_but_keeps_its_dequantize() -> None:
    # float weight -> QuantizeLinear -> DequantizeLinear: the weight is stored quantized (int8), DQ stays
    w = RNG.standard_normal((2, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["w_q"]),
             helper.make_node("DequantizeLinear", ["w_q", "s", "zp"], ["w_dq"]),
             helper.make_node("MatMul", ["x", "w_dq"], ["y"])]
    graph = helper.make_graph(nodes, "q_fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    model = import_onnx(proto, OnnxImportOptions(name="q_fold", flexible_batch=False))
    assert [n.op_type for n in model.graph.nodes] == ["DequantizeLinear", "MatMul"]
    assert model.graph.initializers["w_q"].dtype == np.int8
    x = RNG.standard_normal((4, 2)).astype(np.float32)
    expected = ort_session_run(proto, {"x": x}, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
    np.testing.assert_allclose(compile(model).run({"x": x})["y"], expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the pass

def qdq_builder_model() -> tuple:
    """Two constant DequantizeLinear nodes (a weight and a bias) and one on an activation."""
    b = ModelBuilder("qdq_pass")
    x = b.array_input("x", (3, 6, 6))
    w = b.weight("w_q", RNG.integers(-127, 127, (2, 3, 1, 1), endpoint=True).astype(np.int8))
    w_scale = b.weight("w_scale", f32(0.01, 0.02))
    bias = b.weight("b_q", np.array([300, -200], np.int32))
    b_scale = b.weight("b_scale", f32(0.001, 0.002))
    x_scale = b.weight("x_scale", np.array(0.05, np.float32))
    x_zp = b.weight("x_zp", np.array(3, np.int8))
    xq = b.node("QuantizeLinear", [x, x_scale, x_zp])
    xdq = b.node("DequantizeLinear", [xq, x_scale, x_zp])
    wdq = b.node("DequantizeLinear", [w, w_scale], axis=0)
    bdq = b.node("DequantizeLinear", [bias, b_scale], axis=0)
    y = b.node("Conv", [xdq, wdq, bdq], kernel_shape=[1, 1])
    b.array_output(b.node("Relu", [y]), name="y")
    return b.build(), wdq, bdq


def run_unoptimized(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    nodes = model.graph.toposort([f.name for f in model.description.inputs])
    constants = {k: to_float_array(w) for k, w in model.graph.initializers.items()}
    return Executor(nodes, [make_op(n) for n in nodes], constants,
                    [f.name for f in model.description.outputs]).run(feeds)


def test_dequantize_weights_pass_counts_and_removes_exactly_the_constant_nodes() -> None:
    model, wdq, bdq = qdq_builder_model()
    before = [(n.op_type, list(n.inputs)) for n in model.graph.nodes]
    ctx = PassContext.from_model(model)
    assert dequantize_weights(ctx) == 2
    dqs = [n for n in ctx.nodes if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 1 and dqs[0].inputs[0] not in ctx.constants  # the activation's DQ stays
    assert ctx.constants[wdq].dtype == np.float32 and ctx.constants[bdq].dtype == np.float32
    np.testing.assert_array_equal(ctx.constants[wdq],
                                  model.graph.initializers["w_q"].astype(np.float32) * f32(0.01, 0.02)[:, None, None, None])
    np.testing.assert_array_equal(ctx.constants[bdq], f32(300 * 0.001, -200 * 0.002))
    assert dequantize_weights(ctx) == 0  # nothing left to do
    assert [(n.op_type, list(n.inputs)) for n in model.graph.nodes] == before  # the caller's model is untouched
    assert model.graph.initializers["w_q"].dtype == np.int8


def test_dequantize_weights_runs_first_in_the_pipeline_and_can_be_skipped() -> None:
    model, _, _ = qdq_builder_model()
    ctx = optimize(model)
    assert ctx.stats["dequantize_weights"] == 2
    assert [n.op_type for n in ctx.nodes].count("DequantizeLinear") == 1
    assert "w_q" not in ctx.constants and "b_q" not in ctx.constants  # dropped as dead once dequantized
    skipped = optimize(model, skip=["dequantize_weights"])
    assert [n.op_type for n in skipped.nodes].count("DequantizeLinear") == 3

    x = RNG.uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    reference = run_unoptimized(model, {"x": x})["y"]
    for skip in ((), ("dequantize_weights",)):
        got = engine_compile(model, backend="numpy", skip_passes=skip, plan_ahead=False).run({"x": x})["y"]
        np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-6)
