"""Pools and normalizations against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ops import threads
from tests.engine.ops.ort_single_node import assert_matches_ort, corral_run


@st.composite
def pool_configs(draw: st.DrawFn, op: str) -> tuple[np.ndarray, dict]:
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    attrs: dict = {"kernel_shape": kernel, "strides": strides}
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad == "NOTSET":
        attrs["pads"] = [draw(st.integers(0, k - 1)) for k in kernel * 2]
        attrs["ceil_mode"] = draw(st.integers(0, 1))
        if op == "MaxPool":
            attrs["dilations"] = [draw(st.integers(1, 2)) for _ in range(rank)]
    else:
        attrs["auto_pad"] = auto_pad
        # onnxruntime rejects the negative SAME padding of a kernel shorter than its stride
        attrs["strides"] = [min(s, k) for s, k in zip(strides, kernel)]
    if op == "AveragePool":
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    reach = [(k - 1) * attrs.get("dilations", [1] * rank)[a] + 1 for a, k in enumerate(kernel)]
    spatial = [draw(st.integers(r, r + 9)) for r in reach]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.standard_normal((draw(st.integers(1, 2)), draw(st.integers(1, 3)), *spatial)).astype(np.float32)
    return x, attrs


@settings(max_examples=50, deadline=None)
@given(pool_configs("MaxPool"), st.booleans())
def test_max_pool_matches_onnxruntime(config: tuple[np.ndarray, dict], indices: bool) -> None:
    x, attrs = config
    assert_matches_ort("MaxPool", [x], attrs, n_outputs=2 if indices else 1, rtol=0, atol=0)


@settings(max_examples=50, deadline=None)
@given(pool_configs("AveragePool"))
def test_average_pool_matches_onnxruntime(config: tuple[np.ndarray, dict]) -> None:
    x, attrs = config
    assert_matches_ort("AveragePool", [x], attrs, rtol=1e-5, atol=1e-6)


def test_max_pool_uint8_and_column_major_indices() -> None:
    x = np.random.default_rng(0).integers(0, 255, (1, 2, 7, 6), dtype=np.uint8)
    assert_matches_ort("MaxPool", [x], {"kernel_shape": [3, 2], "pads": [1, 1, 1, 1]}, rtol=0, atol=0)
    xf = np.random.default_rng(1).standard_normal((2, 3, 5, 4)).astype(np.float32)
    assert_matches_ort("MaxPool", [xf], {"kernel_shape": [2, 2], "storage_order": 1}, n_outputs=2, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 4, 5, 6), (2, 2, 3, 4, 5)])
def test_global_pools(op: str, shape: tuple) -> None:
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    assert_matches_ort(op, [x], {}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 4, 10), (2, 2, 3, 4, 5)])
def test_batch_normalization_inference(shape: tuple) -> None:
    rng = np.random.default_rng(3)
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    scale, bias, mean = (rng.standard_normal(c).astype(np.float32) for _ in range(3))
    var = rng.random(c).astype(np.float32) + 0.1
    assert_matches_ort("BatchNormalization", [x, scale, bias, mean, var], {"epsilon": 1e-3}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 4, 300), (2, 5, 64, 64), (1, 3, 2, 3, 4)])
@pytest.mark.parametrize("count", [1, 2])
def test_instance_normalization(shape: tuple, count: int) -> None:
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    scale, bias = rng.standard_normal(shape[1]).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
    threads.set_num_threads(count)
    try:
        assert_matches_ort("InstanceNormalization", [x, scale, bias], {"epsilon": 1e-5}, rtol=1e-4, atol=1e-4)
    finally:
        threads.set_num_threads(None)


def test_instance_normalization_of_a_constant_plane_is_the_bias() -> None:
    x = np.full((1, 2, 8, 8), 7.0, dtype=np.float32)
    y = corral_run("InstanceNormalization", [x, np.ones(2, np.float32), np.array([0.5, -1], np.float32)], {})[0]
    np.testing.assert_allclose(y[0, 0], 0.5)
    np.testing.assert_allclose(y[0, 1], -1.0)
