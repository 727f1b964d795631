"""Lookup-table palettes: exact dp optimality, k-means++, uniform, grouped palettes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.quantize.lut import dp_palette, kmeanspp_palette, lut_quantize, make_palette, nearest_codes, uniform_palette


def _sse(x: np.ndarray, palette: np.ndarray) -> float:
    palette = np.sort(palette)
    return float(((x - palette[nearest_codes(x, palette)]) ** 2).sum())


def _brute_force_sse(x: np.ndarray, k: int) -> float:
    xs = np.sort(x)
    best = np.inf
    for cuts in itertools.combinations(range(1, xs.size), k - 1):
        bounds = [0, *cuts, xs.size]
        best = min(best, sum(((xs[a:b] - xs[a:b].mean()) ** 2).sum() for a, b in itertools.pairwise(bounds)))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_dp_is_optimal_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=int(rng.integers(6, 12)))
    k = int(rng.integers(2, 5))
    assert _sse(x, dp_palette(x, k)) <= _brute_force_sse(x, k) + 1e-9


def test_dp_never_worse_than_kmeanspp_or_uniform() -> None:
    x = np.random.default_rng(1).normal(size=3000).astype(np.float32)
    for k in (2, 4, 16, 64):
        dp = _sse(x, dp_palette(x, k))
        assert dp <= _sse(x, kmeanspp_palette(x, k)) + 1e-9
        assert dp <= _sse(x, uniform_palette(x, k))


def test_few_distinct_values_are_kept_exactly() -> None:
    x = np.array([0.25, -1.0, 0.25, 3.0], np.float32)
    for method in ("dp", "kmeans++"):
        palette = make_palette(x, 3, method)
        assert palette.size == 8
        np.testing.assert_array_equal(palette[nearest_codes(x, palette)], x)


def test_uniform_palette_is_evenly_spaced() -> None:
    x = np.linspace(-2, 6, 101)
    palette = make_palette(x, 2, "uniform")
    np.testing.assert_allclose(palette, [-2, 2 / 3, 10 / 3, 6], rtol=1e-6)


@pytest.mark.parametrize("bits", range(1, 9))
def test_per_tensor_lut_round_trips_and_uses_every_entry_it_can(bits: int) -> None:
    w = np.random.default_rng(bits).normal(size=(16, 8, 3, 3)).astype(np.float32)
    q = lut_quantize(w, bits, method="dp")
    assert q.axis == -1 and q.palette.size == 1 << bits
    assert len(np.unique(q.codes())) == 1 << bits
    restored = q.dequantize()
    assert set(np.unique(restored)) <= set(q.palette)
    # more bits, less error
    if bits > 1:
        coarser = lut_quantize(w, bits - 1, method="dp").dequantize()
        assert np.mean((restored - w) ** 2) < np.mean((coarser - w) ** 2)


def test_grouped_palettes_follow_the_axis() -> None:
    rng = np.random.default_rng(3)
    # [in=4, out=6] (a Gemm B without transB): output channels on axis 1, wildly different scales
    w = (rng.normal(size=(40, 6)) * np.array([1e-3, 1e-3, 1, 1, 1e3, 1e3])).astype(np.float32)
    q = lut_quantize(w, 2, method="dp", axis=1, group_size=2)
    assert q.palette.size == 3 * 4 and q.group_size == 2
    restored = q.dequantize()
    for g in range(3):
        assert set(np.unique(restored[:, 2 * g:2 * g + 2])) <= set(q.palette[4 * g:4 * g + 4])
    single = lut_quantize(w, 2, method="dp").dequantize()
    assert np.abs(restored - w)[:, :2].max() < np.abs(single - w)[:, :2].max()


def test_uneven_last_group() -> None:
    w = np.random.default_rng(4).normal(size=(5, 7)).astype(np.float32)
    q = lut_quantize(w, 3, method="kmeans++", axis=0, group_size=2)
    assert q.palette.size == 3 * 8
    q.validate("w")
    assert np.mean((q.dequantize() - w) ** 2) < np.var(w) / 10


def test_bad_method_and_bits() -> None:
    with pytest.raises(ValueError, match="palette method"):
        make_palette(np.ones(3), 2, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1..8"):
        lut_quantize(np.ones(3), 9)
