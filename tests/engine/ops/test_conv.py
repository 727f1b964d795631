"""Conv and ConvTranspose against onnxruntime: random configurations, tiling, depthwise, fused activations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.exceptions import OpError
from engine.graph import Node
from engine.ops import conv_kernels, make_op, threads
from tests.engine.ops.ort_single_node import assert_matches_ort, corral_run, ort_run


@st.composite
def conv_configs(draw: st.DrawFn, transpose: bool = False) -> tuple[list[np.ndarray | None], dict]:
    rank = draw(st.sampled_from([1, 2, 2, 2, 3]))
    depthwise = draw(st.booleans()) and not transpose
    group = draw(st.integers(2, 5)) if depthwise else draw(st.sampled_from([1, 1, 2, 3]))
    cg = 1 if depthwise else draw(st.integers(1, 4))
    mg = 1 if depthwise else draw(st.integers(1, 5))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 2)) for _ in range(rank)]
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    spatial = [draw(st.integers(r, r + (10 if rank < 3 else 4))) for r in reach]
    batch = draw(st.integers(1, 3))
    attrs: dict = {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "group": group}
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if transpose:
        auto_pad = "NOTSET" if auto_pad == "VALID" else auto_pad
        if auto_pad != "NOTSET":
            attrs["dilations"] = [1] * rank  # onnxruntime rejects dilations with SAME padding
            # With a kernel shorter than the stride the ONNX spec pads negatively
            # (output = input * stride); onnxruntime clamps that padding at 0.
            attrs["strides"] = strides = [min(s, k) for s, k in zip(strides, kernel)]
        attrs["output_padding"] = [draw(st.integers(0, s - 1)) for s in strides]
    elif auto_pad != "NOTSET":
        attrs["dilations"] = [1] * rank
    if auto_pad == "NOTSET":
        attrs["pads"] = [draw(st.integers(0, 2)) for _ in range(2 * rank)]
        if transpose:  # pads may not eat the whole output
            attrs["pads"] = [min(p, r - 1) for p, r in zip(attrs["pads"], reach * 2)]
    else:
        attrs["auto_pad"] = auto_pad
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    c_in = cg * group
    x = rng.standard_normal((batch, c_in, *spatial)).astype(np.float32)
    w_shape = (c_in, mg, *kernel) if transpose else (mg * group, cg, *kernel)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(mg * group).astype(np.float32) if draw(st.booleans()) else None
    return [x, w, b], attrs


@settings(max_examples=60, deadline=None)
@given(conv_configs())
def test_conv_matches_onnxruntime(config: tuple[list, dict]) -> None:
    inputs, attrs = config
    assert_matches_ort("Conv", inputs, attrs)


@settings(max_examples=40, deadline=None)
@given(conv_configs(transpose=True))
def test_conv_transpose_matches_onnxruntime(config: tuple[list, dict]) -> None:
    inputs, attrs = config
    assert_matches_ort("ConvTranspose", inputs, attrs)


@pytest.mark.parametrize("method", ["full", "rows"])
@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 3, 37, 29), 9, 1),   # wide kernel, few channels (the style net's first layer)
    ((1, 16, 23, 31), 3, 1),
    ((3, 4, 40, 17), 5, 1),
    ((1, 8, 33, 35), 3, 2),
])
def test_both_gemm_layouts_and_tiny_tiles(monkeypatch: pytest.MonkeyPatch, method: str, shape: tuple,
                                          kernel: int, stride: int) -> None:
    """Both GEMM layouts, with a tile budget so small that every output row is its own band."""
    if method == "rows" and stride != 1:
        method = "full"
    monkeypatch.setattr(conv_kernels, "choose_method", lambda *args: method)
    monkeypatch.setattr(conv_kernels, "TILE_BYTES", 1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((5, shape[1], kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [1, 2, 0, 1]}
    op = make_op(Node("Conv", ["x", "w", "b"], ["y"], attrs=attrs))
    got = op([x, w, b])[0]
    assert op._plan is not None and op._plan.method == method
    np.testing.assert_allclose(got, ort_run("Conv", [x, w, b], attrs)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tile_bytes", [1, 4096, 1 << 16, 1 << 30])
def test_tile_size_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch, tile_bytes: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 45, 38)).astype(np.float32)
    w = rng.standard_normal((7, 6, 3, 3)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    expected = corral_run("Conv", [x, w], attrs)[0]
    monkeypatch.setattr(conv_kernels, "TILE_BYTES", tile_bytes)
    np.testing.assert_allclose(corral_run("Conv", [x, w], attrs)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_thread_count_does_not_change_the_result(count: int) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8, 30, 30)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "strides": [1, 1]}
    expected = ort_run("Conv", [x, w], attrs)[0]
    threads.set_num_threads(count)
    try:
        got = corral_run("Conv", [x, w], attrs)[0]
    finally:
        threads.set_num_threads(None)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise(multiplier: int) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 12, 19, 21)).astype(np.float32)
    w = rng.standard_normal((12 * multiplier, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(12 * multiplier).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "group": 12, "strides": [2, 1], "pads": [1, 1, 1, 1], "dilations": [1, 2]}
    op = make_op(Node("Conv", ["x", "w", "b"], ["y"], attrs=attrs))
    got = op([x, w, b])[0]
    assert op._plan is not None and (op._plan.method == "depthwise") == (multiplier == 1)
    np.testing.assert_allclose(got, ort_run("Conv", [x, w, b], attrs)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
@pytest.mark.parametrize("group", [1, 4])
def test_fused_activation(activation: str, group: int) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((8, 8 // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "group": group, "pads": [1, 1, 1, 1]}
    plain = ort_run("Conv", [x, w, b], attrs)[0]
    expected = np.maximum(plain, 0) if activation == "Relu" else 1 / (1 + np.exp(-plain))
    got = corral_run("Conv", [x, w, b], {**attrs, "activation": activation})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_unknown_fused_activation_is_rejected() -> None:
    with pytest.raises(OpError, match="Tanh"):
        make_op(Node("Conv", ["x", "w"], ["y"], name="conv7", attrs={"activation": "Tanh"}))


def test_packed_weights_follow_a_new_weight_array() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 4, 10, 10)).astype(np.float32)
    w1 = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    op = make_op(Node("Conv", ["x", "w"], ["y"], attrs={"kernel_shape": [3, 3]}))
    op.prepack(w1)
    first = op([x, w1])[0]
    second = op([x, w2])[0]
    np.testing.assert_allclose(first, ort_run("Conv", [x, w1], {"kernel_shape": [3, 3]})[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(second, ort_run("Conv", [x, w2], {"kernel_shape": [3, 3]})[0], rtol=1e-4, atol=1e-4)


def test_float16_and_float64_inputs_keep_their_dtype() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 9, 9))
    w = rng.standard_normal((2, 3, 3, 3))
    expected = ort_run("Conv", [x.astype(np.float32), w.astype(np.float32)], {})[0]
    for dtype, tol in ((np.float16, 2e-2), (np.float64, 1e-5)):
        got = corral_run("Conv", [x.astype(dtype), w.astype(dtype)], {})[0]
        assert got.dtype == dtype
        np.testing.assert_allclose(got.astype(np.float64), expected, rtol=tol, atol=tol)


def test_channel_mismatch_names_the_node() -> None:
    op = make_op(Node("Conv", ["x", "w"], ["y"], name="stem", attrs={}))
    with pytest.raises(OpError, match="stem.*channels"):
        op([np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 2, 3, 3), np.float32)])


def test_style_net_layer_shapes() -> None:
    """The style network's layer kinds at a small size: 9x9 stem, stride-2 3x3, thin 9x9 head."""
    rng = np.random.default_rng(8)
    for c_in, c_out, k, s, size in [(3, 32, 9, 1, 72), (32, 32, 3, 2, 66), (32, 8, 3, 1, 34), (4, 3, 9, 1, 72)]:
        x = rng.random((2, c_in, size, size), dtype=np.float32)
        w = (rng.standard_normal((c_out, c_in, k, k)) * 0.1).astype(np.float32)
        assert_matches_ort("Conv", [x, w], {"kernel_shape": [k, k], "strides": [s, s]})
