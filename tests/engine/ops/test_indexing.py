"""ReduceMin/Prod/L2, ArgMax/ArgMin, TopK, Tile, Einsum, DepthToSpace and SpaceToDepth against onnxruntime.

Each case is one ONNX node model: onnxruntime runs it as its own
InferenceSession (the reference), and corral imports it and runs it on every
backend. float32/float64 inputs must run as torch kernels (no host fallback),
and every model must run inside onnxruntime on the onnxruntime backend
(exported at opset 17). ONNX's own node cases run in test_onnx_conformance.py;
these cover what those miss: ties, k=0 and k=size, negative axes, older
opsets' attribute forms, batch dims and repeated indices, non-square blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper

from engine import compile
from engine.exceptions import OpError
from engine.importers import OnnxImportOptions, import_onnx
from tests.engine.backend_names import BACKENDS
from tests.engine.ops.ort_single_node import corral_run

RNG = np.random.default_rng(11)
f32 = np.float32
i64 = np.int64


@dataclass(frozen=True)
class Const:
    """An input given as an initializer (axes, k, repeats as real models store them)."""

    value: np.ndarray


Arg = np.ndarray | Const | None


def node_model(op_type: str, args: Sequence[Arg], attrs: dict[str, Any], n_outputs: int = 1,
               opset: int = 19) -> tuple[Any, dict[str, np.ndarray]]:
    """(a one-node ONNX model, its feeds): arrays become graph inputs, ``Const`` initializers, None empty."""
    names, feeds, inits, infos = [], {}, [], []
    for i, a in enumerate(args):
        if a is None:
            names.append("")
        elif isinstance(a, Const):
            names.append(f"c{i}")
            inits.append(numpy_helper.from_array(np.asarray(a.value), f"c{i}"))
        else:
            names.append(f"x{i}")
            feeds[f"x{i}"] = a
            infos.append(helper.make_tensor_value_info(f"x{i}", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
    while names and not names[-1]:
        names.pop()
    outs = [f"y{i}" for i in range(n_outputs)]
    graph = helper.make_graph([helper.make_node(op_type, names, outs, **attrs)], "node", infos,
                              [helper.make_empty_tensor_value_info(o) for o in outs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), feeds


def ort_reference(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def host_fallbacks(compiled: Any, backend: str) -> object:
    ctx = compiled.backend_context
    if backend == "torch":
        from engine.backends.torch_backend import fallback_counts

        return fallback_counts([step.kernel for step in compiled.executor.steps])
    return dict(ctx.fallbacks) if backend == "onnxruntime" else {}


def check(op_type: str, args: Sequence[Arg], attrs: dict[str, Any], n_outputs: int = 1, opset: int = 19,
          rtol: float = 1e-5, atol: float = 1e-6, backends: Sequence[str] = tuple(BACKENDS),
          device: str = "cpu") -> list[np.ndarray]:
    """corral on each backend matches onnxruntime's own session of the node; returns the reference outputs."""
    model, feeds = node_model(op_type, args, attrs, n_outputs, opset)
    expected = ort_reference(model, feeds)
    corral_model = import_onnx(model, OnnxImportOptions(name=op_type, flexible_batch=False))
    # float16 on the CPU runs on numpy by design (torch_ops.floats)
    torch_floats = all(x.dtype in (np.float32, np.float64) for x in feeds.values())
    for backend in backends:
        compiled = compile(corral_model, backend, device)
        got = compiled.run(dict(feeds))
        for i, want in enumerate(expected):
            y = np.asarray(got[f"y{i}"])
            where = f"{op_type} {attrs} output {i} on {backend}"
            assert y.shape == want.shape and y.dtype == want.dtype, f"{where}: {y.shape} {y.dtype}, not " \
                                                                    f"{want.shape} {want.dtype}"
            if want.dtype.kind == "f":
                np.testing.assert_allclose(y, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)
            else:
                np.testing.assert_array_equal(y, want, err_msg=where)
        # nothing may have run on the host instead: the onnxruntime reference ran these types at this opset,
        # so corral's opset-17 export of the node must run in onnxruntime too
        if (backend == "torch" and torch_floats) or backend == "onnxruntime":
            assert not host_fallbacks(compiled, backend), f"{op_type} {attrs} on {backend}"
    return expected


def ties(*shape: int, values: int = 3, dtype: Any = f32) -> np.ndarray:
    """Small integers (as ``dtype``): every axis full of equal values."""
    return RNG.integers(0, values, shape).astype(dtype)


# ------------------------------------------------------------------ reductions
REDUCTIONS = ["ReduceMin", "ReduceProd", "ReduceL2"]


@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize(("axes", "keepdims"), [([1], 1), ([-1, 0], 0), ([-2], 1), ([0, 1, 2], 0)])
def test_reductions_with_axes_attribute_and_input(op: str, axes: list[int], keepdims: int) -> None:
    x = (RNG.random((3, 4, 5)) + 0.5).astype(f32)
    check(op, [x], {"axes": axes, "keepdims": keepdims}, opset=13)
    check(op, [x, Const(np.array(axes, i64))], {"keepdims": keepdims}, opset=18)


@pytest.mark.parametrize("op", REDUCTIONS)
def test_reductions_without_axes(op: str) -> None:
    x = (RNG.random((2, 3, 4)) + 0.5).astype(f32)
    check(op, [x], {"keepdims": 0}, opset=13)
    check(op, [x], {"keepdims": 1, "noop_with_empty_axes": 0}, opset=18)
    check(op, [x, Const(np.zeros(0, i64))], {"keepdims": 1}, opset=18)  # empty axes: every axis
    check(op, [x], {"noop_with_empty_axes": 1}, opset=18)  # the input, unchanged
    check(op, [x, Const(np.array([1], i64))], {"noop_with_empty_axes": 1}, opset=18)


@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float16, np.float64])
def test_reductions_keep_the_input_type(op: str, dtype: Any) -> None:
    x = RNG.integers(-4, 9, (3, 4, 2)).astype(dtype)
    check(op, [x, Const(np.array([1, 2], i64))], {"keepdims": 0}, opset=18, rtol=1e-3, atol=1e-3)


def test_float16_l2_does_not_overflow_in_its_squares() -> None:
    x = np.full((2, 64), 300.0, np.float16)  # 300² is past float16's largest value
    y = corral_run("ReduceL2", [x, np.array([1], i64)], {"keepdims": 0})[0]
    np.testing.assert_allclose(y.astype(np.float64), 2400.0, rtol=1e-3)
    assert y.dtype == np.float16


def test_empty_reductions_give_their_identities() -> None:
    x = np.zeros((2, 0, 3), f32)
    axis = np.array([1], i64)
    np.testing.assert_array_equal(corral_run("ReduceMin", [x, axis], {})[0], np.full((2, 1, 3), np.inf, f32))
    np.testing.assert_array_equal(corral_run("ReduceProd", [x, axis], {})[0], np.ones((2, 1, 3), f32))
    np.testing.assert_array_equal(corral_run("ReduceL2", [x, axis], {})[0], np.zeros((2, 1, 3), f32))
    ints = corral_run("ReduceMin", [np.zeros((0, 2), np.int32), np.array([0], i64)], {"keepdims": 0})[0]
    np.testing.assert_array_equal(ints, np.full(2, np.iinfo(np.int32).max, np.int32))


def test_reduce_min_of_booleans_is_all() -> None:
    x = np.array([[True, False], [True, True]])
    np.testing.assert_array_equal(corral_run("ReduceMin", [x, np.array([1], i64)], {"keepdims": 0})[0],
                                  [False, True])


# ------------------------------------------------------------ ArgMax / ArgMin
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("select_last_index", [0, 1])
@pytest.mark.parametrize(("axis", "keepdims"), [(0, 1), (-1, 0), (-2, 1), (2, 0)])
def test_arg_reductions_break_ties_as_onnx(op: str, select_last_index: int, axis: int, keepdims: int) -> None:
    x = ties(3, 4, 5)
    check(op, [x], {"axis": axis, "keepdims": keepdims, "select_last_index": select_last_index}, opset=13)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float16, np.float64])
def test_arg_reductions_of_other_types(op: str, dtype: Any) -> None:
    check(op, [ties(4, 6, dtype=dtype)], {"axis": 1, "select_last_index": 1}, opset=13)
    check(op, [ties(4, 6, dtype=dtype)], {"axis": -1}, opset=11)  # before select_last_index


def test_arg_reductions_run_inside_onnxruntime_and_torch() -> None:
    # ArgMax's int64 result cast to float inside the same graph: nothing falls back on either backend
    x = ties(2, 5, 3, 3)
    nodes = [helper.make_node("ArgMax", ["x"], ["i"], axis=1, select_last_index=1),
             helper.make_node("Cast", ["i"], ["y"], to=onnx.TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "argmax_map", [helper.make_tensor_value_info("x", 1, x.shape)],
                              [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    expected = ort_reference(model, {"x": x})[0]
    corral_model = import_onnx(model, OnnxImportOptions(name="argmax_map", flexible_batch=False))
    for backend in BACKENDS:
        compiled = compile(corral_model, backend)
        np.testing.assert_array_equal(compiled.run({"x": x})["y"], expected, err_msg=backend)
        if backend == "onnxruntime":
            assert not host_fallbacks(compiled, backend)


def test_arg_reductions_pick_nan_as_numpy_does() -> None:
    x = np.array([[1.0, np.nan, 3.0, np.nan], [2.0, 2.0, -1.0, 0.0]], f32)
    first = corral_run("ArgMax", [x], {"axis": 1, "keepdims": 0})[0]
    last = corral_run("ArgMax", [x], {"axis": 1, "keepdims": 0, "select_last_index": 1})[0]
    np.testing.assert_array_equal(first, [1, 0])
    np.testing.assert_array_equal(last, [3, 1])
    torch_got = _torch_outputs("ArgMin", [x], {"axis": 1, "select_last_index": 1})[0]
    np.testing.assert_array_equal(torch_got, [[3], [2]])


def test_arg_reduction_of_an_empty_axis_fails() -> None:
    with pytest.raises(OpError, match="empty"):
        corral_run("ArgMax", [np.zeros((2, 0), f32)], {"axis": 1})


# ------------------------------------------------------------------------ TopK
@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize(("axis", "k"), [(-1, 3), (1, 0), (1, 6), (0, 2), (-3, 4)])
def test_topk_ties_put_the_lower_index_first(largest: int, axis: int, k: int) -> None:
    x = ties(4, 6, 5)
    check("TopK", [x, Const(np.array([k], i64))], {"axis": axis, "largest": largest}, n_outputs=2, opset=11)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float16, np.float64])
def test_topk_of_other_types(dtype: Any) -> None:
    check("TopK", [ties(3, 7, dtype=dtype), Const(np.array([4], i64))], {"largest": 1}, n_outputs=2, opset=11)
    check("TopK", [ties(3, 7, dtype=dtype), Const(np.array([7], i64))], {"largest": 0}, n_outputs=2, opset=11)


def test_topk_k_as_runtime_input_and_older_forms() -> None:
    x = ties(3, 8)
    check("TopK", [x, np.array([5], i64)], {"axis": 1, "sorted": 1}, n_outputs=2, opset=11)
    check("TopK", [x, Const(np.array([5], i64))], {}, n_outputs=2, opset=10)
    check("TopK", [x], {"k": 5, "axis": 1}, n_outputs=2, opset=9)  # TopK-1: k is an attribute


def test_topk_of_nan_sorts_it_first_when_largest() -> None:
    x = np.array([[1.0, np.nan, 3.0, np.nan, 3.0]], f32)
    values, indices = corral_run("TopK", [x, np.array([3], i64)], {}, n_outputs=2)
    np.testing.assert_array_equal(indices, [[1, 3, 2]])
    smallest = corral_run("TopK", [x, np.array([5], i64)], {"largest": 0}, n_outputs=2)[1]
    np.testing.assert_array_equal(smallest, [[0, 2, 4, 1, 3]])
    torch_values, torch_indices = _torch_outputs("TopK", [x, np.array([3], i64)], {}, n_outputs=2)
    np.testing.assert_array_equal(torch_indices, indices)
    np.testing.assert_array_equal(torch_values, values)


def test_topk_rejects_k_outside_the_axis() -> None:
    x = np.zeros((2, 3), f32)
    with pytest.raises(OpError, match="k=4"):
        corral_run("TopK", [x, np.array([4], i64)], {}, n_outputs=2)
    with pytest.raises(OpError, match="k=-1"):
        corral_run("TopK", [x, np.array([-1], i64)], {}, n_outputs=2)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 4), st.booleans(), st.booleans(), st.data())
def test_topk_and_argmax_kernels_match_onnxruntime(n: int, rows: int, largest: bool, last: bool,
                                                   data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.integers(0, data.draw(st.integers(1, 4)), (rows, n)).astype(f32)
    k = np.array([data.draw(st.integers(0, n))], i64)
    model, feeds = node_model("TopK", [x, Const(k)], {"largest": int(largest)}, n_outputs=2, opset=11)
    want = ort_reference(model, feeds)
    for got, ref in zip(_torch_outputs("TopK", [x, k], {"largest": int(largest)}, n_outputs=2), want):
        np.testing.assert_array_equal(got, ref)
    attrs = {"axis": 1, "select_last_index": int(last)}
    model, feeds = node_model("ArgMin" if largest else "ArgMax", [x], attrs, opset=13)
    np.testing.assert_array_equal(_torch_outputs("ArgMin" if largest else "ArgMax", [x], attrs)[0],
                                  ort_reference(model, feeds)[0])


# ------------------------------------------------------------------------ Tile
@pytest.mark.parametrize("repeats", [[1, 1, 1], [2, 3, 1], [0, 2, 2], [1, 1, 4]])
@pytest.mark.parametrize("dtype", [f32, np.int64, np.bool_])
def test_tile(repeats: list[int], dtype: Any) -> None:
    x = ties(2, 3, 2, values=2, dtype=dtype)
    check("Tile", [x, Const(np.array(repeats, i64))], {}, opset=13)
    check("Tile", [x, np.array(repeats, i64)], {}, opset=7)  # repeats computed at run time


def test_tile_wants_one_count_per_axis() -> None:
    x = np.zeros((2, 3), f32)
    with pytest.raises(OpError, match="rank 2"):
        corral_run("Tile", [x, np.array([2], i64)], {})
    with pytest.raises(OpError, match="negative"):
        corral_run("Tile", [x, np.array([2, -1], i64)], {})


# ---------------------------------------------------------------------- Einsum
EINSUMS = [
    ("bij,bjk->bik", [(3, 2, 4), (3, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 2, 4), (2, 3, 4, 5)]),  # batch dims under an ellipsis
    ("...ij,jk", [(2, 3, 4), (4, 5)]),  # implicit output: the ellipsis, then i and k
    ("bii->bi", [(3, 4, 4)]),  # a repeated index takes the diagonal
    ("...ii->...i", [(2, 3, 3)]),
    ("ii", [(4, 4)]),  # implicit: the trace
    ("ij,ij->", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("Ab,bC->CA", [(2, 3), (3, 4)]),  # upper and lower case are distinct letters
    ("bA,Ab", [(2, 3), (3, 2)]),  # implicit: every letter twice, so a scalar
    ("nchw,kc->nkhw", [(2, 3, 4, 5), (6, 3)]),
    ("bij,bkj,bk->bi", [(2, 3, 4), (2, 5, 4), (2, 5)]),
    ("ij -> ji", [(3, 5)]),  # spaces are ignored
]


@pytest.mark.parametrize(("equation", "shapes"), EINSUMS, ids=[e for e, _ in EINSUMS])
@pytest.mark.parametrize("dtype", [f32, np.int64])
def test_einsum(equation: str, shapes: list[tuple[int, ...]], dtype: Any) -> None:
    operands = [RNG.integers(-3, 4, s).astype(dtype) for s in shapes]
    check("Einsum", operands, {"equation": equation}, opset=12, rtol=1e-5, atol=1e-5)


def test_einsum_implicit_output_is_sorted_in_ascii_order() -> None:
    # onnxruntime's own session refuses this implicit form, so numpy is the reference; corral hands
    # onnxruntime the explicit equation
    a, b = RNG.standard_normal((2, 3)).astype(f32), RNG.standard_normal((3, 4)).astype(f32)
    model, feeds = node_model("Einsum", [a, b], {"equation": "bA,AC"}, opset=12)
    corral_model = import_onnx(model, OnnxImportOptions(name="einsum", flexible_batch=False))
    want = np.einsum("bA,AC->Cb", a, b)  # C (67) before b (98)
    for backend in BACKENDS:
        compiled = compile(corral_model, backend)
        np.testing.assert_allclose(compiled.run(feeds)["y0"], want, rtol=1e-5, atol=1e-6, err_msg=backend)
        assert not host_fallbacks(compiled, backend), backend


def test_einsum_rejects_malformed_equations() -> None:
    x = np.zeros((2, 2), f32)
    for equation, message in [("ij,jk->ik", "2 terms for 1 inputs"), ("i1->i", "letters"), ("ij->ii", "repeats"),
                              ("ij->k", "in no input"), ("ijk->i", "rank 2"), ("i..j->i", "'...'")]:
        with pytest.raises(OpError, match=message):
            corral_run("Einsum", [x], {"equation": equation})


# ---------------------------------------------------- DepthToSpace, SpaceToDepth
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize(("shape", "blocksize"), [((2, 18, 3, 5), 3), ((1, 8, 2, 7), 2), ((1, 12, 1, 4), 1)])
def test_depth_to_space(mode: str, shape: tuple[int, ...], blocksize: int) -> None:
    x = RNG.standard_normal(shape).astype(f32)
    check("DepthToSpace", [x], {"blocksize": blocksize, "mode": mode}, opset=13, rtol=0, atol=0)


def test_depth_to_space_of_opset_1_and_of_integers() -> None:
    check("DepthToSpace", [RNG.standard_normal((1, 8, 3, 2)).astype(f32)], {"blocksize": 2}, opset=9)
    check("DepthToSpace", [ties(1, 8, 3, 2, dtype=np.uint8)], {"blocksize": 2, "mode": "CRD"}, opset=13)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize(("shape", "blocksize"), [((2, 3, 6, 9), 3), ((1, 2, 4, 10), 2)])
def test_space_to_depth_inverts_depth_to_space(mode: str, shape: tuple[int, ...], blocksize: int) -> None:
    x = RNG.standard_normal(shape).astype(f32)
    # SpaceToDepth's mode is opset 28's; corral exports it to onnxruntime at opset 17
    y = check("SpaceToDepth", [x], {"blocksize": blocksize, "mode": mode}, opset=28, rtol=0, atol=0)[0]
    back = corral_run("DepthToSpace", [y], {"blocksize": blocksize, "mode": mode})[0]
    np.testing.assert_array_equal(back, x)


def test_space_to_depth_without_mode() -> None:
    check("SpaceToDepth", [RNG.standard_normal((2, 3, 4, 6)).astype(f32)], {"blocksize": 2}, opset=13)


def test_blocks_must_divide() -> None:
    with pytest.raises(OpError, match="channels"):
        corral_run("DepthToSpace", [np.zeros((1, 6, 2, 2), f32)], {"blocksize": 2})
    with pytest.raises(OpError, match="spatial"):
        corral_run("SpaceToDepth", [np.zeros((1, 1, 4, 5), f32)], {"blocksize": 2})
    with pytest.raises(OpError, match="mode"):
        corral_run("DepthToSpace", [np.zeros((1, 4, 2, 2), f32)], {"blocksize": 2, "mode": "RCD"})


# ------------------------------------------- large axes, on the CPU and CUDA
DEVICES = ["cpu", pytest.param("cuda:0", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
def test_torch_kernels_on_large_tied_axes(device: str) -> None:
    # long axes full of ties: where parallel reductions and sorts would pick any of the equal entries
    pytest.importorskip("torch")
    x = ties(3, 4099, values=10)
    for largest, k in ((1, 64), (0, 4099), (1, 0)):
        check("TopK", [x, Const(np.array([k], i64))], {"largest": largest}, n_outputs=2, opset=11,
              backends=["torch"], device=device)
    for op in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            check(op, [x], {"axis": -1, "select_last_index": last}, opset=13, backends=["torch"], device=device)
    y = (RNG.random((4, 64, 33)) + 0.5).astype(f32)
    for op in REDUCTIONS:
        check(op, [y, Const(np.array([1, -1], i64))], {"keepdims": 0}, opset=18, rtol=1e-4, atol=1e-5,
              backends=["torch"], device=device)
    check("Einsum", [RNG.standard_normal((2, 8, 16, 32)).astype(f32), RNG.standard_normal((2, 8, 32, 8)).astype(f32)],
          {"equation": "...ij,...jk->...ik"}, opset=12, rtol=1e-4, atol=1e-4, backends=["torch"], device=device)
    z = RNG.standard_normal((2, 36, 10, 7)).astype(f32)
    for mode in ("DCR", "CRD"):
        check("DepthToSpace", [z], {"blocksize": 3, "mode": mode}, opset=13, rtol=0, atol=0, backends=["torch"],
              device=device)
        check("SpaceToDepth", [z], {"blocksize": 1, "mode": mode}, opset=28, rtol=0, atol=0, backends=["torch"],
              device=device)
    check("Tile", [z, Const(np.array([1, 2, 1, 3], i64))], {}, opset=13, rtol=0, atol=0, backends=["torch"],
          device=device)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_after_a_convolution(mode: str) -> None:
    # a super-resolution head and a segmentation map: the torch backend's convolutions hand these ops
    # channels-last tensors on the CPU
    x = RNG.standard_normal((2, 3, 6, 5)).astype(f32)
    w = RNG.standard_normal((12, 3, 3, 3)).astype(f32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["features"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["features"], ["image"], blocksize=2, mode=mode),
             helper.make_node("ArgMax", ["features"], ["classes"], axis=1, keepdims=0),
             helper.make_node("TopK", ["features", "k"], ["scores", "ranks"], axis=1),
             helper.make_node("ReduceL2", ["features"], ["norms"], axes=[1], keepdims=1)]
    outputs = ["image", "classes", "scores", "ranks", "norms"]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", 1, x.shape)],
                              [helper.make_empty_tensor_value_info(o) for o in outputs],
                              initializer=[numpy_helper.from_array(w, "w"),
                                           numpy_helper.from_array(np.array([3], i64), "k")])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    model.ir_version = 8
    expected = dict(zip(outputs, ort_reference(model, {"x": x})))
    corral_model = import_onnx(model, OnnxImportOptions(name="heads", flexible_batch=False))
    for backend in BACKENDS:
        compiled = compile(corral_model, backend)
        got = compiled.run({"x": x})
        for name in outputs:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4, err_msg=f"{name} {backend}")
        assert not host_fallbacks(compiled, backend), backend


# ------------------------------------------------------- constant folding
def test_selection_of_weights_folds_into_int64_constants() -> None:
    # ArgMax and TopK of weights fold at compile time; their int64 results then feed Gather at run time
    from engine import ModelBuilder

    w = ties(4, 6)
    b = ModelBuilder("folded")
    x = b.array_input("x", (4, 6), batched=False)
    best = b.node("ArgMax", [b.weight("w", w)], axis=1, keepdims=0)
    top, order = "top", "order"
    b.node("TopK", ["w", b.weight("k", np.array([3], i64))], outputs=[top, order], axis=1)
    b.array_output(b.node("Gather", [x, best], axis=1), name="picked")
    b.array_output(b.node("Add", [b.node("Gather", [x, order], axis=1), top]), name="ranked")
    model = b.build()
    feed = RNG.standard_normal((4, 6)).astype(f32)
    wanted_order = np.argsort(-w, axis=1, kind="stable")[:, :3]
    picked = feed[:, np.argmax(w, axis=1)]
    ranked = feed[:, wanted_order] + np.take_along_axis(w, wanted_order, axis=1)
    for backend in BACKENDS:
        compiled = compile(model, backend)
        assert compiled.stats["fold_constants"] == 2, backend
        assert {n.op_type for n in compiled.executor.nodes} & {"ArgMax", "TopK"} == set()
        got = compiled.run({"x": feed})
        np.testing.assert_allclose(got["picked"], picked, rtol=1e-6, err_msg=backend)
        np.testing.assert_allclose(got["ranked"], ranked, rtol=1e-6, err_msg=backend)


# ----------------------------------------------------------------- helpers
def _torch_outputs(op_type: str, inputs: Sequence[np.ndarray], attrs: dict[str, Any],
                   n_outputs: int = 1) -> list[np.ndarray]:
    """The op's torch kernel on the CPU, float inputs as tensors; it must not fall back to numpy."""
    torch_backend = pytest.importorskip("engine.backends.torch_backend")
    from engine.graph import Node

    ctx = torch_backend.TorchBackend("cpu")
    names = [f"in{i}" for i in range(len(inputs))]
    kernel = ctx.build_kernel(Node(op_type, names, [f"out{i}" for i in range(n_outputs)], attrs=dict(attrs)))
    outputs = kernel([ctx.to_device(x) for x in inputs])
    assert not ctx.fallbacks, f"{op_type} fell back to numpy"
    return [ctx.to_host(y) for y in outputs]
