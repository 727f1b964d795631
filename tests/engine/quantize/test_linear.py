"""Linear quantization: error bounds, per-channel scales, symmetric grids, packing round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.format import tensor_from_proto, tensor_to_proto
from engine.quantize.linear import linear_quantize


@pytest.mark.parametrize("bits", range(1, 9))
def test_per_channel_error_is_at_most_half_a_step(bits: int) -> None:
    rng = np.random.default_rng(bits)
    w = (rng.normal(size=(6, 4, 3, 3)) * np.array([0.01, 0.1, 1, 10, 100, 0.5])[:, None, None, None]).astype(np.float32)
    q = linear_quantize(w, bits, axis=0)
    assert q.scale.shape == (6,) and q.bias.shape == (6,)
    step = (w.reshape(6, -1).max(1) - w.reshape(6, -1).min(1)) / ((1 << bits) - 1)
    err = np.abs(q.dequantize() - w).reshape(6, -1).max(1)
    assert np.all(err <= step / 2 * (1 + 1e-4) + 1e-6)
    # the endpoints of every channel are represented exactly (up to float32 rounding)
    np.testing.assert_allclose(q.dequantize().reshape(6, -1).min(1), w.reshape(6, -1).min(1), rtol=1e-5, atol=1e-6)


def test_per_tensor_uses_one_scale_and_channel_scales_beat_it() -> None:
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(8, 16)) * np.logspace(-3, 0, 8)[:, None]).astype(np.float32)
    per_tensor = linear_quantize(w, 4, axis=-1)
    per_channel = linear_quantize(w, 4, axis=0)
    assert per_tensor.axis == -1 and per_tensor.scale.size == 1
    assert np.mean((per_channel.dequantize() - w) ** 2) < np.mean((per_tensor.dequantize() - w) ** 2) / 10


def test_axis_other_than_zero() -> None:
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) * np.array([1, 10, 100], np.float32)[None, :, None]
    q = linear_quantize(w, 8, axis=1)
    assert q.scale.shape == (3,)
    np.testing.assert_allclose(q.dequantize(), w, rtol=0, atol=np.max(q.scale) / 2 + 1e-4)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_symmetric_grid_is_symmetric_about_zero(bits: int) -> None:
    w = np.array([[-0.2, 0.1, 0.9, 0.4], [-3.0, 1.0, 0.0, 2.0]], np.float32)
    q = linear_quantize(w, bits, axis=0, symmetric=True)
    levels = (1 << bits) - 1
    np.testing.assert_allclose(q.bias, -np.abs(w).max(1), rtol=1e-6)
    np.testing.assert_allclose(q.scale * levels, 2 * np.abs(w).max(1), rtol=1e-6)
    grid = np.arange(levels + 1) * q.scale[0] + q.bias[0]
    np.testing.assert_allclose(grid, -grid[::-1], atol=1e-6)


def test_constant_channel_and_empty_tensor() -> None:
    w = np.array([[0.5, 0.5, 0.5], [1.0, 2.0, 3.0]], np.float32)
    q = linear_quantize(w, 3, axis=0)
    np.testing.assert_allclose(q.dequantize()[0], 0.5)
    assert linear_quantize(np.zeros((0, 4), np.float32), 4, axis=0).dequantize().shape == (0, 4)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 7)),
              elements=st.floats(-1e3, 1e3, width=32)), st.integers(1, 8), st.booleans())
def test_round_trip_through_the_format(w: np.ndarray, bits: int, symmetric: bool) -> None:
    q = linear_quantize(w, bits, axis=0, symmetric=symmetric)
    back = tensor_from_proto(tensor_to_proto("w", q))
    np.testing.assert_array_equal(back.dequantize(), q.dequantize())
    lo, hi = w.min(1, keepdims=True), w.max(1, keepdims=True)
    if symmetric:
        hi = np.maximum(np.abs(lo), np.abs(hi))
        lo = -hi
    step = (hi - lo) / ((1 << bits) - 1)
    assert np.all(np.abs(q.dequantize() - w) <= step / 2 + 1e-3 * np.maximum(1, np.abs(w)))
