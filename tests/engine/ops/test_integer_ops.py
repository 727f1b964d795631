"""The integer ops against onnxruntime, beyond ONNX's own node cases: uint8 and int8 codes, per-channel weights,
groups, strides, pads and dilations, saturation and int32 wrap-around; their torch kernels against the numpy
ops; and small quantized graphs through import and compile on every backend, integer weights kept integer.

Integer results must equal onnxruntime's exactly. Where onnxruntime lacks a type combination (QLinearConv and
QLinearMatMul take int8 inputs only with int8 weights and outputs) or a per-channel / per-row zero point
(ConvInteger, MatMulInteger), the same computation is put in a form it takes: int8 codes as the uint8 codes 128
higher (with the zero point moved alike, ``q - zp`` is unchanged), or one output channel / row at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import compile
from engine.graph import Node
from engine.importers import OnnxImportOptions, import_onnx
from engine.ops import make_op
from tests.engine.backend_names import BACKENDS
from tests.engine.ops.ort_single_node import corral_run, ort_run

RNG = np.random.default_rng(23)
U8, S8, I32, F32 = np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.float32)
COMBOS = [(U8, U8), (U8, S8), (S8, U8), (S8, S8)]


def codes(dtype: np.dtype, shape: Any, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.asarray(RNG.integers(info.min if lo is None else lo, (info.max if hi is None else hi) + 1, shape), dtype)


def f32(value: Any) -> np.ndarray:
    return np.asarray(value, F32)


def as_uint8(q: np.ndarray) -> np.ndarray:
    return q if q.dtype == U8 else np.asarray(q.astype(np.int16) + 128, U8)


def from_uint8(q: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return q if dtype == U8 else np.asarray(q.astype(np.int16) - 128, S8)


def assert_same(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    assert (got.dtype, got.shape) == (want.dtype, want.shape), what
    np.testing.assert_array_equal(got, want, err_msg=what)


def ort_one(op_type: str, inputs: list[np.ndarray | None], attrs: dict, out_dtype: np.dtype) -> np.ndarray:
    return ort_run(op_type, inputs, attrs, out_dtypes=[out_dtype])[0]


# ---------------------------------------------------------------- DynamicQuantizeLinear

@pytest.mark.parametrize("x", [
    RNG.standard_normal((3, 4, 5)) * 3,
    RNG.uniform(0.5, 7.0, (2, 9)),      # all positive: the range is stretched down to 0
    RNG.uniform(-9.0, -0.1, (17,)),     # all negative: up to 0
    np.zeros((4, 4)),                   # one value: scale 1
    [0.0, 0.5, 1.5, 2.5, 253.5, 255.0],  # scale 1: codes at halves round to even
    [-127.5, 0.0, 127.5],               # zero point 127.5 rounds to 128
    RNG.standard_normal((5, 6)) * 1e6,
    [[3.25]],
], ids=["normal", "positive", "negative", "zeros", "ties", "zero_point_tie", "large", "single"])
def test_dynamic_quantize_linear(x: Any) -> None:
    x = f32(x)
    want = ort_run("DynamicQuantizeLinear", [x], {}, n_outputs=3, out_dtypes=[U8, F32, U8])
    got = corral_run("DynamicQuantizeLinear", [x], {}, n_outputs=3)
    for name, g, w in zip(("y", "y_scale", "y_zero_point"), got, want):
        assert_same(g, w, name)


# ---------------------------------------------------------------- ConvInteger

CONV_CASES = [  # (x shape, w shape, attributes)
    ((1, 3, 9, 11), (4, 3, 3, 3), {}),
    ((2, 4, 10, 9), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((1, 6, 12, 12), (6, 1, 3, 3), {"group": 6, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),  # depthwise
    ((1, 3, 8, 7), (5, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 8, 7), (5, 3, 2, 2), {"auto_pad": "SAME_LOWER"}),
    ((1, 3, 8, 7), (5, 3, 3, 1), {"auto_pad": "VALID", "strides": [1, 3], "kernel_shape": [3, 1]}),
    ((2, 4, 15), (3, 4, 4), {"strides": [3], "pads": [2, 1]}),  # 1-D
    ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1], "dilations": [1, 2, 1]}),  # 3-D
]


def weights(dtype: np.dtype, shape: Any) -> np.ndarray:
    # int8 weights in [-64, 63]: onnxruntime's uint8 x int8 kernels on AVX2 add pairs of products in
    # saturating int16, which larger weights against uint8 inputs of 255 would overflow
    return codes(dtype, shape, -64, 63) if dtype == S8 else codes(dtype, shape)


@pytest.mark.parametrize(("x_dtype", "w_dtype"), COMBOS, ids=lambda d: str(d))
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: str(c[2]) if isinstance(c, tuple) else None)
def test_conv_integer(case: tuple, x_dtype: np.dtype, w_dtype: np.dtype) -> None:
    x_shape, w_shape, attrs = case
    inputs = [codes(x_dtype, x_shape), weights(w_dtype, w_shape), codes(x_dtype, ()), codes(w_dtype, (), -20, 20)]
    assert_same(corral_run("ConvInteger", inputs, attrs)[0], ort_one("ConvInteger", inputs, attrs, I32))


@pytest.mark.parametrize("w_dtype", [U8, S8])
def test_conv_integer_per_channel_zero_point(w_dtype: np.dtype) -> None:
    x, w = codes(U8, (2, 3, 7, 8)), weights(w_dtype, (5, 3, 3, 3))
    x_zp, w_zp = codes(U8, ()), codes(w_dtype, (5,), -20, 20)
    attrs = {"pads": [1, 0, 0, 1], "strides": [2, 1]}
    got = corral_run("ConvInteger", [x, w, x_zp, w_zp], attrs)[0]
    want = np.concatenate([ort_one("ConvInteger", [x, w[m:m + 1], x_zp, np.asarray(w_zp[m])], attrs, I32)
                           for m in range(5)], axis=1)
    assert_same(got, want)


def test_conv_integer_without_zero_points_and_past_float32() -> None:
    # 600 channels x 3 x 3 of codes up to 255: partial sums past 2**24 make the sums run in float64
    x, w = codes(U8, (1, 600, 5, 5)), codes(U8, (2, 600, 3, 3))
    assert_same(corral_run("ConvInteger", [x, w], {})[0], ort_one("ConvInteger", [x, w], {}, I32))


def test_int32_accumulation_wraps() -> None:
    """70000 products of 255 * 255 sum past 2**31: the spec lets only the int32 accumulation overflow."""
    a, b = np.full((1, 70000), 255, U8), np.full((70000, 2), 255, U8)
    got = corral_run("MatMulInteger", [a, b], {})[0]
    exact = 70000 * 255 * 255
    np.testing.assert_array_equal(got, np.full((1, 2), (exact + 2**31) % 2**32 - 2**31, I32))
    assert_same(got, ort_one("MatMulInteger", [a, b], {}, I32))
    x, w = a.reshape(1, 70000, 1, 1), b[:, :1].reshape(1, 70000, 1, 1)
    assert_same(corral_run("ConvInteger", [x, w], {})[0], got[:, :1].reshape(1, 1, 1, 1))


# ---------------------------------------------------------------- MatMulInteger

MATMUL_SHAPES = [((3, 5), (5, 4)), ((2, 3, 5), (5, 4)), ((2, 1, 3, 5), (3, 5, 4)), ((5,), (5, 4)), ((3, 5), (5,))]


@pytest.mark.parametrize(("a_dtype", "b_dtype"), COMBOS, ids=lambda d: str(d))
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_integer(shapes: tuple, a_dtype: np.dtype, b_dtype: np.dtype) -> None:
    a, b = codes(a_dtype, shapes[0]), weights(b_dtype, shapes[1])
    inputs = [a, b, codes(a_dtype, ()), codes(b_dtype, (), -20, 20)]
    assert_same(corral_run("MatMulInteger", inputs, {})[0], ort_one("MatMulInteger", inputs, {}, I32))


@pytest.mark.parametrize(("b_shape", "b_zp_shape"), [((5, 4), (4,)), ((3, 5, 4), (3, 1, 4))])
def test_matmul_integer_per_column_and_per_row(b_shape: tuple, b_zp_shape: tuple) -> None:
    a, b = codes(U8, (3, 2, 5)), weights(S8, b_shape)
    a_zp, b_zp = codes(U8, (2,)), codes(S8, b_zp_shape, -20, 20)
    got = corral_run("MatMulInteger", [a, b, a_zp, b_zp], {})[0]
    want = np.concatenate([ort_one("MatMulInteger", [a[:, m:m + 1], b, np.asarray(a_zp[m]), b_zp], {}, I32)
                           for m in range(2)], axis=1)  # onnxruntime takes a per-row zero point one row at a time
    assert_same(got, want)


# ---------------------------------------------------------------- QLinearConv and QLinearMatMul

ORT_QLINEAR = {(U8, U8, U8), (U8, S8, U8), (S8, S8, S8)}  # (input, weight, output) types onnxruntime runs


def ort_qlinear(op_type: str, inputs: list[np.ndarray | None], attrs: dict) -> np.ndarray:
    """onnxruntime's result; for the type combinations it lacks, input and output as uint8 codes."""
    x, x_zp, y_zp = inputs[0], inputs[2], inputs[7]
    assert x is not None and x_zp is not None and y_zp is not None and inputs[3] is not None
    if (x.dtype, inputs[3].dtype, y_zp.dtype) in ORT_QLINEAR:
        return ort_one(op_type, inputs, attrs, y_zp.dtype)
    shifted = [as_uint8(x), inputs[1], as_uint8(x_zp), *inputs[3:7], as_uint8(y_zp), *inputs[8:]]
    return from_uint8(ort_one(op_type, shifted, attrs, U8), y_zp.dtype)


QCONV_CASES = [
    ((1, 3, 9, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 4, 10, 9), (6, 2, 3, 3), {"group": 2, "strides": [2, 2], "pads": [0, 1, 2, 0]}),
    ((1, 5, 11, 10), (5, 1, 3, 3), {"group": 5, "dilations": [2, 1], "auto_pad": "VALID"}),
    ((1, 3, 7, 7), (8, 3, 1, 1), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
]


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("types", [(U8, S8, U8), (U8, U8, U8), (S8, S8, S8), (S8, S8, U8), (U8, S8, S8)],
                         ids=lambda t: "-".join(map(str, t)))
@pytest.mark.parametrize("case", QCONV_CASES, ids=lambda c: str(c[2]) if isinstance(c, tuple) else None)
def test_qlinear_conv(case: tuple, types: tuple, per_channel: bool) -> None:
    x_shape, w_shape, attrs = case
    x_dtype, w_dtype, y_dtype = types
    m = w_shape[0]
    w_scale = f32(RNG.uniform(0.002, 0.02, m) if per_channel else 0.01)
    # int8 weights quantize symmetrically (zero point 0), as onnxruntime's quantizer writes them
    w_zp = np.zeros(m if per_channel else (), w_dtype) if w_dtype == S8 else codes(U8, m if per_channel else (),
                                                                                  100, 150)
    inputs = [codes(x_dtype, x_shape), f32(0.05), codes(x_dtype, ()), weights(w_dtype, w_shape), w_scale, w_zp,
              f32(0.3), codes(y_dtype, (), -10 if y_dtype == S8 else 100, 10 if y_dtype == S8 else 150),
              RNG.integers(-3000, 3000, m).astype(I32)]
    assert_same(corral_run("QLinearConv", inputs, attrs)[0], ort_qlinear("QLinearConv", inputs, attrs))


@pytest.mark.parametrize("y_scale", [1e-4, 10.0], ids=["saturating", "coarse"])
def test_qlinear_conv_saturates(y_scale: float) -> None:
    x, w = codes(U8, (1, 4, 6, 6)), weights(S8, (3, 4, 3, 3))
    inputs = [x, f32(0.05), np.array(128, U8), w, f32([0.01, 0.02, 0.03]), np.zeros(3, S8), f32(y_scale),
              np.array(128, U8)]
    got = corral_run("QLinearConv", inputs, {})[0]
    assert_same(got, ort_qlinear("QLinearConv", inputs, {}))
    if y_scale < 1:
        assert {0, 255} <= set(np.unique(got).tolist())


@pytest.mark.parametrize("per_column", [False, True], ids=["per_tensor", "per_column"])
@pytest.mark.parametrize("types", [(U8, S8, U8), (U8, U8, U8), (S8, S8, S8), (S8, U8, U8), (U8, S8, S8)],
                         ids=lambda t: "-".join(map(str, t)))
@pytest.mark.parametrize("shapes", [((4, 6), (6, 5)), ((2, 3, 6), (6, 5)), ((2, 3, 6), (2, 6, 5))], ids=str)
def test_qlinear_matmul(shapes: tuple, types: tuple, per_column: bool) -> None:
    a_dtype, b_dtype, y_dtype = types
    n = shapes[1][-1]
    column = (n,) if len(shapes[1]) == 2 else (*shapes[1][:-2], 1, n)  # [N], or [..., 1, N] for a batched b
    b_scale = f32(RNG.uniform(0.002, 0.02, column) if per_column else 0.01)
    b_zp = codes(b_dtype, column if per_column else (), -5, 5)
    inputs = [codes(a_dtype, shapes[0]), f32(0.05), codes(a_dtype, ()), weights(b_dtype, shapes[1]), b_scale, b_zp,
              f32(0.2), codes(y_dtype, (), -10 if y_dtype == S8 else 100, 10 if y_dtype == S8 else 150)]
    assert_same(corral_run("QLinearMatMul", inputs, {})[0], ort_qlinear("QLinearMatMul", inputs, {}))


# ---------------------------------------------------------------- torch kernels

def torch_cases() -> list[tuple[str, dict, list[Any]]]:
    """(op, attributes, inputs); ``("t", array)`` marks an input the kernel gets as a tensor."""
    x, big = codes(U8, (2, 6, 9, 8)), codes(U8, (1, 600, 5, 5))
    w, w_big = weights(S8, (6, 3, 3, 3)), codes(U8, (4, 600, 3, 3))
    a, b = codes(S8, (2, 3, 40)), weights(S8, (40, 7))
    scales = [("t", f32(0.05)), ("t", f32(RNG.uniform(0.002, 0.02, 6))), ("t", f32(0.3))]
    return [
        ("DynamicQuantizeLinear", {}, [("t", f32(RNG.standard_normal((3, 50)) * 4))]),
        ("ConvInteger", {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1]},
         [("t", x), w, ("t", np.array(7, U8)), codes(S8, (6,), -9, 9)]),
        ("ConvInteger", {"pads": [1, 1, 1, 1]}, [("t", big), w_big, ("t", np.array(200, U8))]),  # float64 sums
        ("MatMulInteger", {}, [("t", a), b, ("t", np.array(-3, S8)), codes(S8, (7,), -9, 9)]),
        ("MatMulInteger", {}, [("t", codes(U8, (3, 2000))), codes(U8, (2000, 4))]),  # float64 sums
        ("QLinearConv", {"group": 2, "auto_pad": "SAME_LOWER"},
         [("t", x), scales[0], np.array(9, U8), w, scales[1], np.zeros(6, S8), scales[2], np.array(120, U8),
          RNG.integers(-3000, 3000, 6).astype(I32)]),
        ("QLinearMatMul", {}, [("t", a), ("t", f32(0.05)), np.array(2, S8), b, ("t", f32(RNG.uniform(0.01, 0.02, 7))),
                               np.zeros(7, S8), ("t", f32(0.1)), np.array(-5, S8)]),
    ]


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch is not installed")
@pytest.mark.parametrize("case", torch_cases(), ids=lambda c: f"{c[0]}{sorted(c[1])}")
def test_torch_kernel_matches_the_numpy_op(case: tuple) -> None:
    import torch

    from engine.backends.torch_ops import Fallback, make_kernel

    op_type, attrs, inputs = case
    host = [v[1] if isinstance(v, tuple) else v for v in inputs]
    outputs = ["y", "y_scale", "y_zero_point"] if op_type == "DynamicQuantizeLinear" else ["y"]
    op = make_op(Node(op_type, [f"in{i}" for i in range(len(inputs))], outputs, attrs=dict(attrs)))
    kernel = make_kernel(op)
    assert kernel is not None
    fed = [torch.from_numpy(np.array(v[1])) if isinstance(v, tuple) else v for v in inputs]
    got = kernel.run(*fed)
    outs = list(got) if isinstance(got, tuple) else [got]
    for g, want in zip(outs, op(host)):
        assert isinstance(g, torch.Tensor)
        assert_same(g.numpy(), want, op_type)
    with pytest.raises(Fallback):
        kernel.run(*host)  # no tensor among the inputs: nothing says which device


# ---------------------------------------------------------------- quantized graphs on every backend

def tensor(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def quantized_graph(kind: str) -> tuple[onnx.ModelProto, str]:
    """A float-in, float-out graph around one integer op, and the name of its integer weight."""
    mk = helper.make_node
    if kind in ("ConvInteger", "MatMulInteger"):  # onnxruntime's dynamic quantization: x quantized per run
        conv = kind == "ConvInteger"
        w = weights(S8, (8, 3, 3, 3)) if conv else weights(S8, (12, 5))
        nodes = [mk("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
                 mk(kind, ["xq", "w", "xz", "wz"], ["acc"], **({"pads": [1, 1, 1, 1], "strides": [2, 1]} if conv
                                                             else {})),
                 mk("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
                 mk("Mul", ["xs", "ws"], ["scale"]), mk("Mul", ["accf", "scale"], ["y"])]
        inits = [tensor("w", w), tensor("wz", np.array(0, S8)), tensor("ws", f32(0.02))]
    else:  # QOperator form: quantized between QuantizeLinear and DequantizeLinear
        conv = kind == "QLinearConv"
        w = weights(S8, (8, 3, 3, 3)) if conv else weights(S8, (12, 5))
        m = w.shape[0] if conv else w.shape[1]
        op_inputs = ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"] + (["b"] if conv else [])
        nodes = [mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                 mk(kind, op_inputs, ["yq"], **({"group": 1, "pads": [0, 1, 1, 0]} if conv else {})),
                 mk("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
        inits = [tensor("w", w), tensor("xs", f32(0.03)), tensor("xz", np.array(128, U8)),
                 tensor("ws", f32(RNG.uniform(0.002, 0.02, m))), tensor("wz", np.zeros(m, S8)),
                 tensor("ys", f32(0.05)), tensor("yz", np.array(120, U8)),
                 tensor("b", RNG.integers(-2000, 2000, m).astype(I32))]
    x_shape = [1, 3, 10, 9] if conv else [4, 12]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[t for t in inits if t.name in {i for n in nodes for i in n.input}])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, "w"


def integer_weight_dtypes(compiled: Any, name: str) -> set[np.dtype]:
    """The types the compiled model holds weight ``name`` in: its constant, or inside onnxruntime's segments."""
    found = {np.asarray(v).dtype for k, v in compiled.executor.constants.items() if k == name}
    for step in compiled.executor.steps:
        model = getattr(step.kernel, "model", None)
        if isinstance(model, bytes):
            found |= {numpy_helper.to_array(t).dtype for t in onnx.load_from_string(model).graph.initializer
                      if t.name == name}
    return found


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"])
def test_quantized_graph_on_every_backend(kind: str, backend: str) -> None:
    proto, weight = quantized_graph(kind)
    x_shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    x = f32(RNG.standard_normal(x_shape) * 2)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    compiled = compile(import_onnx(proto, OnnxImportOptions(name=kind, flexible_batch=False)), backend)
    for _ in range(2):  # the second run reuses the centered weight
        got = compiled.run({"x": x})["y"]
        # integer sums are exact; every float step around them rounds once, as onnxruntime's does
        assert_same(got, want, f"{kind} on {backend}")
    assert integer_weight_dtypes(compiled, weight) == {S8}
    if backend == "torch":
        from engine.backends.torch_backend import fallback_counts

        assert kind not in fallback_counts([s.kernel for s in compiled.executor.steps])
    if backend == "onnxruntime":
        assert not compiled.backend_context.fallbacks
