"""Comparisons, boolean logic and Where, and the elementwise math that came with them (Gelu, Round, Erf,
Mean), against onnxruntime running the same one-node ONNX model in its own InferenceSession.

Each model goes through corral's import and compile on every backend. The
cases are what ONNX's node tests (tests/engine/test_onnx_conformance.py)
leave out: broadcasting across bool/float mixes, weights beside inputs
(folded at compile time), float16, special values, and whether the torch
kernels and the onnxruntime export ran at all rather than falling back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from engine import compile
from engine.exceptions import EngineError, OpError
from engine.graph import Node
from engine.importers import OnnxImportOptions, import_onnx
from engine.ops import make_op
from tests.engine.backend_names import BACKENDS

RNG = np.random.default_rng(11)


def node_model(op: str, inputs: Sequence[str], outputs: Mapping[str, Any], feeds: Mapping[str, np.ndarray],
               weights: Mapping[str, np.ndarray] | None = None, opset: int = 17, **attrs: Any) -> onnx.ModelProto:
    """A one-node model: ``feeds`` are graph inputs, ``weights`` initializers; ``outputs`` maps each
    output name ("" skips one) to its numpy dtype."""
    node = helper.make_node(op, list(inputs), list(outputs), **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
                    for n, a in feeds.items()]
    graph_outputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(d)), None)
                     for n, d in outputs.items() if n]
    inits = [numpy_helper.from_array(a, n) for n, a in (weights or {}).items()]
    graph = helper.make_graph([node], op.lower(), graph_inputs, graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def ort_outputs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def corral_outputs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], backend: str,
                   host_fallbacks: bool = False) -> dict[str, np.ndarray]:
    """The model through corral on ``backend``. Unless ``host_fallbacks``, the torch kernels (and the
    onnxruntime export) must have computed it, not the numpy ops they fall back to."""
    compiled = compile(import_onnx(model, OnnxImportOptions(name=model.graph.name, flexible_batch=False)), backend)
    got = compiled.run(dict(feeds))
    if not host_fallbacks:
        fallbacks = getattr(compiled.backend_context, "fallbacks", None)
        assert not fallbacks, fallbacks
    return got


def check(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], backend: str, rtol: float = 0.0,
          atol: float = 0.0, host_fallbacks: bool = False) -> dict[str, np.ndarray]:
    want = ort_outputs(model, feeds)
    got = corral_outputs(model, feeds, backend, host_fallbacks)
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype, name
        assert got[name].shape == expected.shape, name
        np.testing.assert_allclose(got[name], expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    return got


def run_op(op: str, *inputs: Any, **attrs: Any) -> np.ndarray:
    node = Node(op, [f"in{i}" for i in range(len(inputs))], ["out"], name="n", attrs=attrs)
    return make_op(node)(list(inputs))[0]


SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 0.5, 3.0], np.float32)


# ----------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["Equal", "Less", "Greater"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int64, np.int32, np.uint8, np.int8])
def test_comparisons_broadcast_and_match_onnxruntime(backend: str, op: str, dtype: type) -> None:
    a: np.ndarray
    b: np.ndarray
    if np.dtype(dtype).kind == "f":
        a = np.concatenate([SPECIAL, RNG.integers(-3, 4, 7).astype(np.float32)]).astype(dtype).reshape(2, 1, 8)
        b = np.array([SPECIAL[:8], SPECIAL[1:]]).astype(dtype).reshape(1, 2, 8)
    else:
        a = RNG.integers(0, 5, (2, 1, 8)).astype(dtype)
        b = RNG.integers(0, 5, (1, 2, 8)).astype(dtype)
    model = node_model(op, ["a", "b"], {"y": np.bool_}, {"a": a, "b": b})
    # integers are host values on torch: the numpy op runs there
    got = check(model, {"a": a, "b": b}, backend, host_fallbacks=np.dtype(dtype).kind != "f")
    assert got["y"].shape == (2, 2, 8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_on_bools_and_against_a_scalar_weight(backend: str) -> None:
    a = RNG.random((3, 4)) > 0.5
    b = np.array([True, False, True, False])
    check(node_model("Equal", ["a", "b"], {"y": np.bool_}, {"a": a, "b": b}), {"a": a, "b": b}, backend,
          host_fallbacks=True)
    x = RNG.integers(-2, 3, (2, 5)).astype(np.float32)
    model = node_model("Less", ["x", "zero"], {"y": np.bool_}, {"x": x}, {"zero": np.zeros((), np.float32)})
    check(model, {"x": x}, backend)


def test_mixed_operand_types_compare_in_the_larger_operands_type() -> None:
    # a float16 activation beside a weight corral keeps as float32: 0.1 is compared as float16's 0.1
    x = np.array([0.1, 0.2], np.float16)
    assert run_op("Equal", x, np.array(0.1, np.float32)).tolist() == [True, False]
    assert run_op("Greater", np.array(3, np.int64), np.array([2, 3, 4], np.int64)).tolist() == [True, False, False]
    y = run_op("Less", np.array(1.0, np.float32), np.array(2.0, np.float32))
    assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == np.bool_


# ----------------------------------------------------------------------------- logic
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["And", "Or"])
def test_and_or_broadcast(backend: str, op: str) -> None:
    a = RNG.random((2, 3, 1)) > 0.5
    b = RNG.random((4,)) > 0.5
    got = check(node_model(op, ["a", "b"], {"y": np.bool_}, {"a": a, "b": b}), {"a": a, "b": b}, backend,
                host_fallbacks=True)
    assert got["y"].shape == (2, 3, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logic_on_comparisons_of_float_activations_stays_on_the_device(backend: str) -> None:
    """Not(Greater(x, 0) And Less(x, 1)): every mask comes from a float comparison, so torch keeps it."""
    x = RNG.uniform(-1, 2, (3, 5)).astype(np.float32)
    nodes = [helper.make_node("Greater", ["x", "zero"], ["pos"]), helper.make_node("Less", ["x", "one"], ["lt1"]),
             helper.make_node("And", ["pos", "lt1"], ["inside"]), helper.make_node("Not", ["inside"], ["y"])]
    graph = helper.make_graph(nodes, "mask", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 5])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.BOOL, None)],
                              initializer=[numpy_helper.from_array(np.zeros((), np.float32), "zero"),
                                           numpy_helper.from_array(np.ones((), np.float32), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    got = check(model, {"x": x}, backend)
    np.testing.assert_array_equal(got["y"], ~((x > 0) & (x < 1)))


def test_logic_refuses_non_bool_inputs() -> None:
    with pytest.raises(OpError, match="bool"):
        run_op("Not", np.ones(3, np.float32))
    with pytest.raises(OpError, match="bool"):
        run_op("And", np.ones(3, np.bool_), np.ones(3, np.int64))


# ----------------------------------------------------------------------------- Where
@pytest.mark.parametrize("backend", BACKENDS)
def test_where_broadcasts_a_bool_condition_over_float_operands(backend: str) -> None:
    cond = RNG.random((2, 1, 4)) > 0.5
    x = RNG.standard_normal((3, 1)).astype(np.float32)
    feeds = {"c": cond, "x": x}
    model = node_model("Where", ["c", "x", "y"], {"out": np.float32}, feeds, {"y": np.full((), -7.5, np.float32)})
    got = check(model, feeds, backend)
    assert got["out"].shape == (2, 3, 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int64, np.int32, np.uint8])
def test_where_selects_in_every_type(backend: str, dtype: type) -> None:
    cond = RNG.random((4, 1)) > 0.5
    x: np.ndarray = RNG.integers(-50, 50, (4, 3)).astype(dtype)
    y: np.ndarray = RNG.integers(-50, 50, (3,)).astype(dtype)
    feeds = {"c": cond, "x": x, "y": y}
    model = node_model("Where", ["c", "x", "y"], {"out": dtype}, feeds)
    check(model, feeds, backend, host_fallbacks=np.dtype(dtype).kind != "f" or dtype == np.float16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_where_on_bools(backend: str) -> None:
    # onnxruntime 1.32 has no bool Where kernel: its backend runs this segment on corral's numpy op
    cond, x, y = (RNG.random(s) > 0.5 for s in [(2, 3), (3,), (2, 1)])
    model = node_model("Where", ["c", "x", "y"], {"out": np.bool_}, {"c": cond, "x": x, "y": y})
    got = corral_outputs(model, {"c": cond, "x": x, "y": y}, backend, host_fallbacks=True)
    np.testing.assert_array_equal(got["out"], np.where(cond, x, y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_where_on_a_mask_computed_on_the_device(backend: str) -> None:
    """Where(Greater(x, t), x, 0): the ReLU-with-threshold pattern; on torch the mask never leaves the device."""
    x = RNG.standard_normal((2, 3, 8)).astype(np.float32)
    nodes = [helper.make_node("Greater", ["x", "t"], ["m"]), helper.make_node("Where", ["m", "x", "zero"], ["y"])]
    graph = helper.make_graph(nodes, "thresh", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.full((8,), 0.25, np.float32), "t"),
                                           numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    check(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"x": x}, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_comparisons_of_weights_fold_at_compile_time(backend: str) -> None:
    """Where(Less(a, b), x, Neg(x)) with a and b weights: the comparison becomes a bool weight."""
    a = np.array([[0.0], [2.0]], np.float32)
    b = np.array([1.0, 1.0, 3.0], np.float32)
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    nodes = [helper.make_node("Less", ["a", "b"], ["m"]), helper.make_node("Neg", ["x"], ["nx"]),
             helper.make_node("Where", ["m", "x", "nx"], ["y"])]
    graph = helper.make_graph(nodes, "folded", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(a, "a"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = compile(import_onnx(model, OnnxImportOptions(name="folded", flexible_batch=False)), backend)
    assert compiled.executor.constants.get("m") is None or compiled.executor.constants["m"].dtype == np.bool_
    assert "Less" not in {n.op_type for n in compiled.executor.nodes}
    np.testing.assert_array_equal(compiled.run({"x": x})["y"], np.where(a < b, x, -x))
    check(model, {"x": x}, backend)


def test_where_refuses_a_non_bool_condition() -> None:
    with pytest.raises(OpError, match="condition must be bool"):
        run_op("Where", np.ones(2, np.float32), np.ones(2, np.float32), np.zeros(2, np.float32))


# ----------------------------------------------------------------------------- Gelu, Erf, Round, Mean
def spread(count: int, dtype: type = np.float32) -> np.ndarray:
    """Values over every interval of the erf approximation, the tails and the special values."""
    values = np.concatenate([RNG.standard_normal(count) * 3, np.linspace(-6, 6, 97), [0.46875, -0.46875, 4, -4],
                             [1e-30, -1e-30, 30, -30], SPECIAL.astype(np.float64)])
    return values.astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_erf_float32_is_within_1e6_of_onnxruntime(backend: str) -> None:
    x = spread(20000)
    model = node_model("Erf", ["x"], {"y": np.float32}, {"x": x})
    got = corral_outputs(model, {"x": x}, backend)["y"]
    want = ort_outputs(model, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True)


def test_erf_is_correctly_rounded_in_float32_and_good_to_a_few_ulps_in_float64() -> None:
    x = spread(20000, np.float64)
    finite = x[np.isfinite(x)]
    exact = np.array([math.erf(v) for v in finite])
    got64 = run_op("Erf", finite)
    np.testing.assert_allclose(got64, exact, rtol=5e-16, atol=0)
    got32 = run_op("Erf", finite.astype(np.float32))
    exact32 = np.array([math.erf(float(v)) for v in finite.astype(np.float32)]).astype(np.float32)
    np.testing.assert_array_equal(got32, exact32)
    assert np.isnan(run_op("Erf", np.array([np.nan], np.float32))[0])
    assert run_op("Erf", np.array([np.inf, -np.inf], np.float32)).tolist() == [1.0, -1.0]
    assert math.copysign(1.0, float(run_op("Erf", np.array([-0.0], np.float32))[0])) == -1.0
    assert run_op("Erf", np.ones((2, 0, 3), np.float16)).shape == (2, 0, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_erf_float16_matches_onnxruntime(backend: str) -> None:
    x = spread(5000, np.float16)
    model = node_model("Erf", ["x"], {"y": np.float16}, {"x": x})
    check(model, {"x": x}, backend, atol=0, rtol=0, host_fallbacks=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gelu_matches_onnxruntimes_opset20_gelu(backend: str, approximate: str, dtype: type) -> None:
    x = spread(5000, dtype).reshape(-1, 1)
    x = x[np.isfinite(x)].reshape(-1, 1)
    model = node_model("Gelu", ["x"], {"y": dtype}, {"x": x}, opset=20, approximate=approximate)
    half = dtype == np.float16
    # float32 (ulps apart; in the far left tail onnxruntime's float32 1 + erf(x) loses digits corral keeps)
    check(model, {"x": x}, backend, rtol=2e-3 if half else 2e-6, atol=1e-3 if half else 1e-6,
          host_fallbacks=half)  # torch: float16 on the CPU runs the numpy op; onnxruntime: float32 constants


def test_gelu_values() -> None:
    x = np.array([-30.0, -10.0, -3.0, -1.0, 0.0, 0.5, 2.0], np.float64)
    exact = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x])  # x * Phi(x)
    # the left tail too, not 0 (x^2/2 of ~450 carries its rounding into exp: ~1e-13)
    np.testing.assert_allclose(run_op("Gelu", x), exact, rtol=1e-12, atol=0)
    tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(run_op("Gelu", x, approximate="tanh"), tanh, rtol=1e-14)
    # as ONNX's function body and onnxruntime compute them: -inf * (1 + erf(-inf)) is nan
    special = np.array([-np.inf, np.inf, np.nan], np.float32)
    for approximate in ("none", "tanh"):
        np.testing.assert_array_equal(run_op("Gelu", special, approximate=approximate), [np.nan, np.inf, np.nan])
    with pytest.raises(OpError, match="approximate"):
        run_op("Gelu", x, approximate="sigmoid")


def test_gelu_exports_as_the_pattern_onnxruntime_fuses(tmp_path: Any) -> None:
    from engine.exporters.onnx import graph_to_onnx

    nodes = [Node("Gelu", ["x"], ["y"], name="g")]
    info = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8])]
    proto = graph_to_onnx(nodes, {}, info, ["y"], "gelu")
    assert [n.op_type for n in proto.graph.node] == ["Div", "Erf", "Add", "Mul", "Mul"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fused = onnx.load(str(tmp_path / "optimized.onnx"))
    assert [(n.domain, n.op_type) for n in fused.graph.node] == [("com.microsoft", "Gelu")]
    tanh = graph_to_onnx([Node("Gelu", ["x"], ["y"], name="g", attrs={"approximate": "tanh"})], {}, info, ["y"], "t")
    assert [n.op_type for n in tanh.graph.node] == ["Pow", "Mul", "Add", "Mul", "Tanh", "Add", "Mul", "Mul"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_round_halves_to_even(backend: str, dtype: type) -> None:
    halves = np.arange(-6, 6, dtype=np.float64) + 0.5
    big = np.array([2.0**23 + 1, -(2.0**23) - 1, 1e30, 0.49999997, -0.49999997])
    with np.errstate(over="ignore"):  # 1e30 is inf in float16
        x: np.ndarray = np.concatenate([halves, big, spread(200, np.float64)]).astype(dtype)
    model = node_model("Round", ["x"], {"y": dtype}, {"x": x}, opset=11)
    got = check(model, {"x": x}, backend, host_fallbacks=dtype == np.float16)
    assert got["y"][:12].tolist() == [-6, -4, -4, -2, -2, -0.0, 0, 2, 2, 4, 4, 6]
    with pytest.raises(OpError, match="floating-point"):
        run_op("Round", np.array([1, 2], np.int64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_mean_broadcasts_its_inputs(backend: str, dtype: type) -> None:
    feeds: dict[str, np.ndarray] = {"a": RNG.standard_normal((2, 1, 4)).astype(dtype), "b": RNG.standard_normal((3, 1)).astype(dtype),
             "c": RNG.standard_normal((4,)).astype(dtype)}
    model = node_model("Mean", ["a", "b", "c"], {"y": dtype}, feeds, opset=13)
    half = dtype == np.float16
    got = check(model, feeds, backend, rtol=1e-3 if half else 1e-6, atol=1e-3 if half else 1e-7,
                host_fallbacks=half)
    assert got["y"].shape == (2, 3, 4)


def test_mean_leaves_its_inputs_alone_and_refuses_integers() -> None:
    a = np.array([1.0, 2.0], np.float32)
    y = run_op("Mean", a)
    assert y is not a and a.tolist() == [1.0, 2.0] and y.tolist() == [1.0, 2.0]
    assert run_op("Mean", np.float32(1.0) * np.ones((), np.float32), np.ones((), np.float32) * 3).tolist() == 2.0
    with pytest.raises(OpError, match="floating-point"):
        run_op("Mean", np.array([1, 2], np.int64), np.array([3, 4], np.int64))


def test_unsupported_gelu_attribute_fails_at_compile() -> None:
    model = node_model("Gelu", ["x"], {"y": np.float32}, {"x": np.ones(2, np.float32)}, opset=20,
                       approximate="fast")
    with pytest.raises(EngineError, match="approximate"):
        compile(import_onnx(model, OnnxImportOptions(name="bad", flexible_batch=False)), "numpy")
