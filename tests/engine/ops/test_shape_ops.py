"""Layout, shape-arithmetic and constant ops of the numpy engine."""

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

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
f32 = np.float32
i64 = np.int64


def run(op_type: str, *inputs: Any, outputs: int = 1, name: str = "n1", **attrs: Any) -> list[np.ndarray]:
    node = Node(op_type, [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)],
                [f"out{i}" for i in range(outputs)], name=name, attrs=attrs)
    return make_op(node)(list(inputs))


def one(op_type: str, *inputs: Any, **attrs: Any) -> np.ndarray:
    return run(op_type, *inputs, **attrs)[0]


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=i64)


x234 = np.arange(24, dtype=f32).reshape(2, 3, 4)


# --------------------------------------------------------------- error wrapping
def test_failed_reshape_names_op_node_and_shapes() -> None:
    with pytest.raises(OpError) as info:
        run("Reshape", x234, ints(5, 5), name="head/reshape")
    assert "Reshape node 'head/reshape'" in str(info.value)
    assert "[[2, 3, 4], [2]]" in str(info.value)


def test_missing_required_attribute_is_reported_at_build_time() -> None:
    with pytest.raises(OpError, match="Concat node 'cat': bad attributes: the axis attribute is required"):
        make_op(Node("Concat", ["a", "b"], ["y"], name="cat"))


# ------------------------------------------------------------------ reshaping
def test_reshape_zero_copies_and_minus_one_infers() -> None:
    assert one("Reshape", x234, ints(0, -1)).shape == (2, 12)
    assert one("Reshape", x234, ints(-1, 0, 2)).shape == (4, 3, 2)
    assert one("Reshape", np.zeros((0, 3), f32), ints(0, 3), allowzero=1).shape == (0, 3)
    with pytest.raises(OpError, match="mixes 0 and -1"):
        run("Reshape", x234, ints(0, -1), allowzero=1)
    with pytest.raises(OpError, match="more than one -1"):
        run("Reshape", x234, ints(-1, -1))


def test_flatten_axes() -> None:
    assert one("Flatten", x234).shape == (2, 12)
    assert one("Flatten", x234, axis=0).shape == (1, 24)
    assert one("Flatten", x234, axis=3).shape == (24, 1)
    assert one("Flatten", x234, axis=-1).shape == (6, 4)


def test_transpose_default_and_perm() -> None:
    np.testing.assert_array_equal(one("Transpose", x234), x234.T)
    np.testing.assert_array_equal(one("Transpose", x234, perm=[1, 0, 2]), x234.transpose(1, 0, 2))
    with pytest.raises(OpError, match="not a permutation"):
        run("Transpose", x234, perm=[0, 0, 1])


def test_squeeze_and_unsqueeze_axes_as_attribute_or_input() -> None:
    x = np.zeros((1, 3, 1, 2), f32)
    assert one("Squeeze", x).shape == (3, 2)
    assert one("Squeeze", x, ints(-2)).shape == (1, 3, 2)
    assert one("Squeeze", x, axes=[0]).shape == (3, 1, 2)
    with pytest.raises(OpError, match="cannot squeeze axis 1 of length 3"):
        run("Squeeze", x, ints(1))
    y = np.zeros((3, 4), f32)
    assert one("Unsqueeze", y, ints(0, -1)).shape == (1, 3, 4, 1)
    assert one("Unsqueeze", y, axes=[1, 3]).shape == (3, 1, 4, 1)
    with pytest.raises(OpError, match="repeat an axis"):
        run("Unsqueeze", y, ints(0, -4))
    with pytest.raises(OpError, match="axes are required"):
        run("Unsqueeze", y)


def test_expand_broadcasts_both_ways_into_a_writable_array() -> None:
    x = np.arange(3, dtype=f32).reshape(3, 1)
    y = one("Expand", x, ints(2, 1, 4))
    assert y.shape == (2, 3, 4) and y.flags.writeable
    np.testing.assert_array_equal(y[1, :, 2], [0, 1, 2])


def test_concat_negative_axis_and_gather_negative_indices() -> None:
    a, b = np.ones((2, 2), f32), np.zeros((2, 3), f32)
    assert one("Concat", a, b, axis=-1).shape == (2, 5)
    np.testing.assert_array_equal(one("Gather", x234, ints(-1, 0), axis=1), x234[:, [2, 0]])
    assert one("Gather", x234, np.int64(1), axis=2).shape == (2, 3)
    with pytest.raises(OpError, match=r"indices must lie in \[-3, 2\]"):
        run("Gather", x234, ints(3), axis=1)


# ---------------------------------------------------------------------- Slice
def test_slice_with_inputs_negative_steps_and_extremes() -> None:
    x = np.arange(20, dtype=f32).reshape(4, 5)
    np.testing.assert_array_equal(one("Slice", x, ints(1), ints(INT64_MAX), ints(1)), x[:, 1:])
    np.testing.assert_array_equal(one("Slice", x, ints(INT64_MAX), ints(INT64_MIN), ints(0), ints(-1)), x[::-1])
    np.testing.assert_array_equal(one("Slice", x, ints(-1, 4), ints(-1000, 0), ints(-1, 0), ints(-2, -1)),
                                  x[3:0:-1, ::-2])
    np.testing.assert_array_equal(one("Slice", x, ints(0, 1), ints(2, 3)), x[0:2, 1:3])


def test_slice_with_old_attributes() -> None:
    x = np.arange(20, dtype=f32).reshape(4, 5)
    np.testing.assert_array_equal(one("Slice", x, starts=[1], ends=[-1], axes=[1]), x[:, 1:-1])


def test_slice_rejects_zero_step() -> None:
    with pytest.raises(OpError, match="step must not be 0"):
        run("Slice", x234, ints(0), ints(1), ints(0), ints(0))


def test_slice_clamping_matches_onnxruntime() -> None:
    """Every start/end/step combination on short axes, against the reference peer.

    (Python slicing differs from ONNX here: ONNX clamps a too-negative start up
    to 0 for negative steps, where Python yields nothing.)
    """
    import onnxruntime
    from onnx import TensorProto, helper

    names = ["x", "starts", "ends", "axes", "steps"]
    graph = helper.make_graph(
        [helper.make_node("Slice", names, ["y"])], "slice",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT if n == "x" else TensorProto.INT64, None)
         for n in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    bounds = [INT64_MIN, -7, -4, -2, -1, 0, 1, 2, 4, 7, INT64_MAX]
    for dim in (0, 1, 3):
        x = np.arange(dim, dtype=f32)
        for start in bounds:
            for end in bounds:
                for step in (-3, -1, 1, 2):
                    feeds = {"x": x, "starts": ints(start), "ends": ints(end), "axes": ints(0), "steps": ints(step)}
                    expected = session.run(None, feeds)[0]
                    got = one("Slice", *feeds.values())
                    np.testing.assert_array_equal(got, expected, err_msg=f"{dim=} {start=} {end=} {step=}")


# ---------------------------------------------------------------------- Split
def test_split_sizes_from_input_attribute_or_equal() -> None:
    x = np.arange(12, dtype=f32).reshape(2, 6)
    parts = run("Split", x, ints(1, 2, 3), outputs=3, axis=1)
    assert [p.shape[1] for p in parts] == [1, 2, 3]
    parts = run("Split", x, outputs=2, axis=-1, split=[4, 2])
    assert [p.shape[1] for p in parts] == [4, 2]
    parts = run("Split", x, outputs=3, axis=1)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), x)
    with pytest.raises(OpError, match="do not add up"):
        run("Split", x, ints(1, 2), outputs=2, axis=1)


def test_split_num_outputs_leaves_a_smaller_last_chunk() -> None:
    parts = run("Split", np.arange(7, dtype=f32), outputs=3, num_outputs=3)
    assert [p.size for p in parts] == [3, 3, 1]


# ----------------------------------------------------------- shapes and constants
def test_shape_with_start_and_end() -> None:
    np.testing.assert_array_equal(one("Shape", x234), ints(2, 3, 4))
    np.testing.assert_array_equal(one("Shape", x234, start=-2), ints(3, 4))
    np.testing.assert_array_equal(one("Shape", x234, start=1, end=10), ints(3, 4))
    assert one("Shape", x234).dtype == i64


def test_constant_variants() -> None:
    assert one("Constant", value_float=1.5).dtype == f32
    np.testing.assert_array_equal(one("Constant", value_ints=[1, 2]), ints(1, 2))
    tensor = np.arange(4, dtype=np.float16)
    np.testing.assert_array_equal(one("Constant", value=tensor), tensor)
    with pytest.raises(OpError, match="value_strings is not supported"):
        make_op(Node("Constant", [], ["y"], attrs={"value_strings": ["a"]}))


def test_constant_of_shape() -> None:
    y = one("ConstantOfShape", ints(2, 3), value=np.array([7], np.int32))
    assert y.dtype == np.int32 and y.shape == (2, 3) and np.all(y == 7)
    default = one("ConstantOfShape", ints(4))
    assert default.dtype == f32 and not default.any()
    assert one("ConstantOfShape", ints()).shape == ()


@pytest.mark.parametrize("code,dtype", [(1, np.float32), (10, np.float16), (11, np.float64), (3, np.int8),
                                        (7, np.int64), (9, np.bool_), (2, np.uint8), (13, np.uint64)])
def test_cast_codes(code: int, dtype: type) -> None:
    x = np.array([0.0, 1.7, 3.0], f32)
    y = one("Cast", x, to=code)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, x.astype(dtype))


def test_range_integer_and_float() -> None:
    np.testing.assert_array_equal(one("Range", i64(10), i64(1), i64(-3)), ints(10, 7, 4))
    y = one("Range", f32(0), f32(1), f32(0.25))
    assert y.dtype == f32
    np.testing.assert_allclose(y, [0, 0.25, 0.5, 0.75])
    assert one("Range", i64(5), i64(1), i64(2)).size == 0


def test_identity_and_dropout_at_inference() -> None:
    assert one("Identity", x234) is x234
    y, mask = run("Dropout", x234, f32(0.5), outputs=2)
    assert y is x234 and mask.dtype == np.bool_ and mask.all()


def test_seeded_training_dropout_is_reproducible() -> None:
    x = np.ones((50, 50), f32)
    y1, m1 = run("Dropout", x, f32(0.5), np.array(True), outputs=2, seed=3)
    y2, _ = run("Dropout", x, f32(0.5), np.array(True), outputs=2, seed=3)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(y1, np.where(m1, 2.0, 0.0))
    assert 0.3 < m1.mean() < 0.7


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(f32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=4)), st.data())
def test_reshape_roundtrip_and_transpose_inverse(x: np.ndarray, data: st.DataObject) -> None:
    perm = data.draw(st.permutations(range(x.ndim)))
    inverse = list(np.argsort(perm))
    back = one("Transpose", one("Transpose", x, perm=list(perm)), perm=inverse)
    np.testing.assert_array_equal(back, x)
    flat = one("Reshape", x, ints(-1))
    np.testing.assert_array_equal(one("Reshape", flat, np.array(x.shape, i64)), x)
