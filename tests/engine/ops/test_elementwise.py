"""Elementwise, activation, reduction and linear-algebra ops of the numpy engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine.exceptions import OpError
from engine.graph import Node
from engine.ops import make_op


def run(op_type: str, *inputs: Any, outputs: int = 1, name: str = "n1", **attrs: Any) -> list[np.ndarray]:
    node = Node(op_type, [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)],
                [f"out{i}" for i in range(outputs)], name=name, attrs=attrs)
    return make_op(node)(list(inputs))


def one(op_type: str, *inputs: Any, **attrs: Any) -> np.ndarray:
    return run(op_type, *inputs, **attrs)[0]


rng = np.random.default_rng(0)
f32 = np.float32

finite_f32 = st.floats(-1e3, 1e3, allow_nan=False, width=32)


# --------------------------------------------------------------- error wrapping
def test_runtime_failure_names_op_node_and_input_shapes() -> None:
    with pytest.raises(OpError) as info:
        run("Add", np.ones((2, 3), f32), np.ones((4,), f32), name="block1/add")
    message = str(info.value)
    assert "Add node 'block1/add'" in message
    assert "[[2, 3], [4]]" in message
    assert info.value.op_type == "Add" and info.value.node == "block1/add"


def test_bad_attribute_is_reported_at_build_time() -> None:
    with pytest.raises(OpError, match="Cast node 'c'.*bad attributes.*type code 8"):
        make_op(Node("Cast", ["x"], ["y"], name="c", attrs={"to": 8}))


def test_wrong_input_count_is_an_op_error() -> None:
    with pytest.raises(OpError, match=r"Mul node 'n1': takes 2\.\.2 inputs, got 1"):
        run("Mul", np.ones(3, f32))


def test_unnamed_node_is_labelled_by_its_output() -> None:
    node = Node("Div", ["a", "b"], ["quotient"])
    with pytest.raises(OpError, match="Div node 'quotient'"):
        make_op(node)([np.ones((2, 2), f32), np.ones((3,), f32)])


# ----------------------------------------------------------- dtype preservation
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_float32_with_float64_scalar_stays_float32(op: str) -> None:
    x = rng.standard_normal((2, 3, 4, 4)).astype(f32)
    for scalar in (np.asarray(2.5), np.float64(2.5), 2.5):
        assert one(op, x, scalar).dtype == f32
        assert one(op, scalar, x).dtype == f32


def test_pow_two_is_an_exact_square_in_float32() -> None:
    x = rng.standard_normal((1, 8, 5, 5)).astype(f32)
    y = one("Pow", x, np.asarray(2.0, dtype=np.float64))
    assert y.dtype == f32
    np.testing.assert_array_equal(y, x * x)


def test_pow_keeps_the_base_dtype() -> None:
    assert one("Pow", np.array([1, 2, 3], np.int32), np.array([2.0, 0.5, 1.0], f32)).dtype == np.int32
    np.testing.assert_array_equal(one("Pow", np.array([2, 3], np.int64), np.array([3, 2], np.int64)), [8, 9])
    assert one("Pow", np.ones(3, np.float16), np.array([2, 3, 4], np.int64)).dtype == np.float16


def test_integer_div_truncates_toward_zero() -> None:
    a = np.array([-7, 7, -7, 7, 6], np.int32)
    b = np.array([2, -2, -2, 2, 3], np.int32)
    out = one("Div", a, b)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [-3, -3, 3, 3, 2])


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "LeakyRelu",
                                "Sqrt", "Exp", "Abs", "Neg", "Floor", "Ceil", "Reciprocal", "Log", "Softmax"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_unary_float_ops_keep_dtype(op: str, dtype: type) -> None:
    x = (rng.random((2, 3, 4)) + 0.5).astype(dtype)
    assert one(op, x).dtype == dtype


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax"])
def test_reductions_keep_float32(op: str) -> None:
    x = rng.standard_normal((2, 3, 16, 16)).astype(f32)
    y = one(op, x, axes=[2, 3])
    assert y.dtype == f32 and y.shape == (2, 3, 1, 1)


# ---------------------------------------------------------------- broadcasting
def test_per_channel_broadcast() -> None:
    x = rng.standard_normal((2, 4, 3, 3)).astype(f32)
    scale = rng.standard_normal((1, 4, 1, 1)).astype(f32)
    np.testing.assert_array_equal(one("Mul", x, scale), x * scale)
    np.testing.assert_array_equal(one("Sub", scale, x), scale - x)


def test_variadic_ops_broadcast_all_inputs() -> None:
    a = rng.standard_normal((3, 1)).astype(f32)
    b = rng.standard_normal((1, 4)).astype(f32)
    c = rng.standard_normal((4,)).astype(f32)
    np.testing.assert_allclose(one("Sum", a, b, c), a + b + c, rtol=1e-6)
    np.testing.assert_array_equal(one("Max", a, b, c), np.maximum(np.maximum(a, b), c))
    np.testing.assert_array_equal(one("Min", a, b, c), np.minimum(np.minimum(a, b), c))
    np.testing.assert_array_equal(one("Sum", a), a)


def test_variadic_sum_does_not_write_into_its_inputs() -> None:
    a = np.ones((2, 2), f32)
    b = np.ones((2, 2), f32)
    one("Sum", a, b, b)
    np.testing.assert_array_equal(a, np.ones((2, 2)))


def test_prelu_slope_broadcasts_per_channel() -> None:
    x = rng.standard_normal((2, 3, 4, 4)).astype(f32)
    slope = np.array([0.1, 0.2, 0.3], f32).reshape(3, 1, 1)
    np.testing.assert_allclose(one("PRelu", x, slope), np.where(x < 0, x * slope, x))


def test_prelu_rejects_a_slope_that_would_grow_the_output() -> None:
    with pytest.raises(OpError, match="does not broadcast"):
        run("PRelu", np.ones((3,), f32), np.ones((2, 3), f32))


# ----------------------------------------------------------------- activations
def test_activation_formulas() -> None:
    x = np.linspace(-8, 8, 41).astype(f32)
    np.testing.assert_allclose(one("Sigmoid", x), 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(one("HardSigmoid", x, alpha=0.5, beta=0.6), np.clip(0.5 * x + 0.6, 0, 1))
    np.testing.assert_allclose(one("HardSwish", x), x * np.clip(x / 6 + 0.5, 0, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(one("Elu", x, alpha=2.0), np.where(x > 0, x, 2.0 * (np.exp(x) - 1)), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(one("LeakyRelu", x, alpha=0.1), np.where(x < 0, 0.1 * x, x), rtol=1e-6)
    np.testing.assert_array_equal(one("Relu", x), np.maximum(x, 0))


def test_sigmoid_saturates_without_overflow() -> None:
    with np.errstate(all="raise"):
        y = one("Sigmoid", np.array([-1e4, 0, 1e4], f32))
    np.testing.assert_array_equal(y, [0.0, 0.5, 1.0])


def test_relu_on_integers() -> None:
    np.testing.assert_array_equal(one("Relu", np.array([-3, 0, 5], np.int8)), np.array([0, 0, 5], np.int8))


def test_clip_bounds_from_inputs_and_old_attributes() -> None:
    x = np.arange(-5, 6, dtype=f32)
    np.testing.assert_array_equal(one("Clip", x, f32(-1), f32(2)), np.clip(x, -1, 2))
    np.testing.assert_array_equal(one("Clip", x, None, f32(2)), np.minimum(x, 2))
    np.testing.assert_array_equal(one("Clip", x, min=-1.0, max=2.0), np.clip(x, -1, 2))
    np.testing.assert_array_equal(one("Clip", x), x)
    # min > max: every value becomes max.
    np.testing.assert_array_equal(one("Clip", x, f32(3), f32(1)), np.ones_like(x))


def test_softmax_axis_semantics_by_opset() -> None:
    x = rng.standard_normal((2, 3, 4)).astype(f32)
    new = one("Softmax", x, axis=1)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(new, e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    # Before opset 13, axis 1 means rows of the [2, 12] flattening.
    old = one("Softmax", x, axis=1, opset=11)
    flat = x.reshape(2, 12)
    e2 = np.exp(flat - flat.max(axis=1, keepdims=True))
    np.testing.assert_allclose(old, (e2 / e2.sum(axis=1, keepdims=True)).reshape(2, 3, 4), rtol=1e-6)
    np.testing.assert_allclose(old.reshape(2, -1).sum(axis=1), 1.0, rtol=1e-6)
    # Default axis: -1 from opset 13, 1 before.
    np.testing.assert_allclose(one("Softmax", x).sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(one("Softmax", x, opset=12), old, rtol=1e-6)


# ------------------------------------------------------------------ reductions
def test_reduce_axes_from_attribute_or_input() -> None:
    x = rng.standard_normal((2, 3, 4)).astype(f32)
    by_attr = one("ReduceSum", x, axes=[0, -1], keepdims=0)
    by_input = one("ReduceSum", x, np.array([0, -1], np.int64), keepdims=0)
    np.testing.assert_allclose(by_attr, x.sum(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_array_equal(by_attr, by_input)


def test_reduce_without_axes() -> None:
    x = rng.standard_normal((2, 3)).astype(f32)
    everything = one("ReduceMean", x)
    assert everything.shape == (1, 1)
    np.testing.assert_allclose(everything.reshape(()), x.mean(), rtol=1e-5)
    assert one("ReduceMax", x, keepdims=0).shape == ()
    assert one("ReduceSum", x, np.array([], np.int64), noop_with_empty_axes=1) is x


def test_reduce_max_of_an_empty_axis_is_minus_infinity() -> None:
    y = one("ReduceMax", np.zeros((2, 0, 4), f32), np.array([1], np.int64))
    assert y.shape == (2, 1, 4) and np.all(y == -np.inf)


def test_reduce_mean_of_a_transposed_view_matches_numpy() -> None:
    x = rng.standard_normal((4, 3, 8, 8)).astype(f32).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(one("ReduceMean", x, axes=[2, 3]), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5)


def test_reduce_rejects_bad_axis() -> None:
    with pytest.raises(OpError, match="axis 3 out of range"):
        run("ReduceMean", np.ones((2, 2), f32), axes=[3])


# ---------------------------------------------------------------- linear algebra
def test_gemm_attributes() -> None:
    a = rng.standard_normal((4, 3)).astype(f32)  # A' = a.T : [3, 4]
    b = rng.standard_normal((5, 4)).astype(f32)  # B' = b.T : [4, 5]
    c = rng.standard_normal((5,)).astype(f32)
    y = one("Gemm", a, b, c, alpha=0.5, beta=2.0, transA=1, transB=1)
    assert y.dtype == f32 and y.shape == (3, 5)
    np.testing.assert_allclose(y, 0.5 * a.T @ b.T + 2.0 * c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one("Gemm", a.T, b.T), a.T @ b.T, rtol=1e-5, atol=1e-6)


def test_gemm_rejects_c_of_the_wrong_shape() -> None:
    with pytest.raises(OpError, match="does not broadcast"):
        run("Gemm", np.ones((2, 3), f32), np.ones((3, 4), f32), np.ones((3, 4), f32))


def test_matmul_batches_and_vectors() -> None:
    a = rng.standard_normal((2, 1, 3, 4)).astype(f32)
    b = rng.standard_normal((5, 4, 2)).astype(f32)
    np.testing.assert_allclose(one("MatMul", a, b), np.matmul(a, b), rtol=1e-5)
    v = rng.standard_normal(4).astype(f32)
    assert one("MatMul", a, v).shape == (2, 1, 3)


# ---------------------------------------------------------- property-based tests
@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                                    ("Div", np.divide), ("Max", np.maximum), ("Min", np.minimum)]))
def test_binary_ops_match_numpy_with_broadcasting(data: st.DataObject, case: tuple) -> None:
    op, ufunc = case
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4))
    a = data.draw(hnp.arrays(f32, shapes.input_shapes[0], elements=finite_f32))
    b = data.draw(hnp.arrays(f32, shapes.input_shapes[1], elements=st.floats(0.5, 100, width=32)))
    out = one(op, a, b)
    assert out.shape == shapes.result_shape and out.dtype == f32
    np.testing.assert_array_equal(out, ufunc(a, b))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int64, st.integers(1, 20), elements=st.integers(-1000, 1000)),
       st.integers(-50, 50).filter(bool))
def test_integer_div_matches_truncated_division(a: np.ndarray, b: int) -> None:
    expected = np.trunc(a.astype(np.float64) / b).astype(np.int64)
    np.testing.assert_array_equal(one("Div", a, np.int64(b)), expected)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(f32, hnp.array_shapes(max_dims=4, max_side=5), elements=st.floats(-80, 80, width=32)))
def test_sigmoid_matches_logistic_formula(x: np.ndarray) -> None:
    expected = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(one("Sigmoid", x), expected, rtol=2e-6, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_reductions_match_numpy(data: st.DataObject) -> None:
    x = data.draw(hnp.arrays(f32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=5), elements=finite_f32))
    axes = data.draw(st.lists(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim, unique=True))
    keep = data.draw(st.booleans())
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(one("ReduceSum", x, np.array(axes, np.int64), keepdims=int(keep)),
                               x64.sum(axis=tuple(axes), keepdims=keep), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(one("ReduceMean", x, axes=axes, keepdims=int(keep)),
                               x64.mean(axis=tuple(axes), keepdims=keep), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(one("ReduceMax", x, axes=axes, keepdims=int(keep)),
                                  x.max(axis=tuple(axes), keepdims=keep))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(f32, hnp.array_shapes(max_dims=3, max_side=5), elements=finite_f32),
       st.floats(-10, 10, width=32), st.floats(-10, 10, width=32))
def test_clip_matches_min_of_max(x: np.ndarray, lo: float, hi: float) -> None:
    np.testing.assert_array_equal(one("Clip", x, f32(lo), f32(hi)), np.minimum(np.maximum(x, f32(lo)), f32(hi)))
