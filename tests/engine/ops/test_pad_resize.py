"""Pad, Resize and Upsample against onnxruntime and numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.exceptions import OpError
from engine.ops import interpolation
from tests.engine.ops.ort_single_node import assert_matches_ort, corral_run


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["constant", "reflect", "edge", "wrap"]), st.integers(1, 4), st.data())
def test_pad_matches_onnxruntime(mode: str, rank: int, data: st.DataObject) -> None:
    shape = [data.draw(st.integers(3, 6)) for _ in range(rank)]
    crops = [[data.draw(st.sampled_from([0, 0, -1])) for _ in range(rank)] for _ in range(2)]
    kept = [n + b + e for n, b, e in zip(shape, *crops)]
    limit = [k - 1 if mode == "reflect" else k for k in kept]  # onnxruntime reflects at most once
    grow = [[data.draw(st.integers(0, lim)) for lim in limit] for _ in range(2)]
    pads = [c if c else g for c, g in zip(crops[0] + crops[1], grow[0] + grow[1])]
    x = np.random.default_rng(data.draw(st.integers(0, 2**31))).standard_normal(shape).astype(np.float32)
    inputs: list = [x, np.array(pads, dtype=np.int64)]
    if mode == "constant":
        inputs.append(np.array(1.5, dtype=np.float32))
    assert_matches_ort("Pad", inputs, {"mode": mode}, rtol=0, atol=0)


def test_pad_axes_input_and_legacy_attribute() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    axes_result = corral_run("Pad", [x, np.array([1, 2, 0, 1]), None, np.array([-1, 0])], {"mode": "edge"})[0]
    np.testing.assert_array_equal(axes_result, np.pad(x, [(2, 1), (0, 0), (1, 0)], mode="edge"))
    legacy = corral_run("Pad", [x], {"pads": [0, 1, 0, 0, 1, 0], "value": 9.0})[0]
    np.testing.assert_array_equal(legacy, np.pad(x, [(0, 0), (1, 1), (0, 0)], constant_values=9.0))


def test_reflect_pad_of_the_style_net() -> None:
    x = np.random.default_rng(0).random((2, 32, 40, 36), dtype=np.float32)
    assert_matches_ort("Pad", [x, np.array([0, 0, 4, 4, 0, 0, 4, 4])], {"mode": "reflect"}, rtol=0, atol=0)


def test_crop_only_and_bad_mode() -> None:
    x = np.arange(30, dtype=np.float32).reshape(5, 6)
    np.testing.assert_array_equal(corral_run("Pad", [x, np.array([-1, 0, -2, -3])], {})[0], x[1:3, :3])
    with pytest.raises(OpError, match="mode"):
        corral_run("Pad", [x, np.array([1, 1, 1, 1])], {"mode": "mirror"})


COORD_MODES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
               "half_pixel_symmetric"]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["nearest", "linear", "cubic"]), st.sampled_from(COORD_MODES),
       st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]), st.booleans(), st.data())
def test_resize_matches_onnxruntime(mode: str, coord: str, nearest: str, by_sizes: bool, data: st.DataObject) -> None:
    if mode != "nearest" and coord == "tf_half_pixel_for_nn":
        coord = "half_pixel"
    h, w = data.draw(st.integers(2, 9)), data.draw(st.integers(2, 9))
    x = np.random.default_rng(data.draw(st.integers(0, 2**31))).standard_normal((1, 2, h, w)).astype(np.float32)
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "nearest_mode": nearest}
    if mode == "cubic":
        attrs["exclude_outside"] = data.draw(st.integers(0, 1))
    if by_sizes:
        sizes = np.array([1, 2, data.draw(st.integers(1, 17)), data.draw(st.integers(1, 17))], dtype=np.int64)
        inputs: list = [x, None, None, sizes]
    else:
        factors = st.sampled_from([0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 2.5])
        scales = np.array([1, 1, data.draw(factors), data.draw(factors)], dtype=np.float32)
        inputs = [x, None, scales]
        if coord in ("align_corners", "half_pixel_symmetric", "pytorch_half_pixel"):
            # The ONNX spec uses scale * input as the output length here; onnxruntime uses
            # the integer size. They agree when the product is whole.
            assume(all(float(f) * n == int(float(f) * n) for f, n in zip(scales[2:], (h, w))))
    if mode == "nearest":
        # corral maps coordinates in float64 like the ONNX reference; onnxruntime
        # uses float32, so a coordinate on a rounding tie may round either way.
        sizes_out = [int(v) for v in inputs[3][2:]] if by_sizes else [int(f * n) for f, n in zip(scales[2:], (h, w))]
        for n_in, n_out in zip((h, w), sizes_out):
            coords, _ = interpolation.source_coords(interpolation.Sampling(coordinate_mode=coord), n_out, n_in,
                                                    n_out / n_in if by_sizes else float(scales[2 + (n_in is w)]),
                                                    None)
            frac = np.abs(coords * 2 - np.round(coords * 2))
            assume(not np.any((frac < 1e-4) & (frac > 0)) and not np.any(np.round(coords * 2) % 2 == 1))
            if nearest in ("floor", "ceil"):
                assume(not np.any(np.abs(coords - np.round(coords)) < 1e-4) or coord == "asymmetric")
    assert_matches_ort("Resize", inputs, attrs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_on_a_source_coordinate_that_rounds_to_a_whole_pixel(mode: str) -> None:
    # 7 -> 17 rows, half_pixel: output row 8 maps to 8.5 * 7/17 - 0.5, which is 3 up to float64 rounding;
    # the taps and their weights must agree on which pixel that is.
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 2)).astype(np.float32)
    sizes = np.array([1, 2, 17, 1], dtype=np.int64)
    assert_matches_ort("Resize", [x, None, None, sizes], {"mode": mode, "coordinate_transformation_mode": "half_pixel"},
                       rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias_downscale(mode: str) -> None:
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 12)).astype(np.float32)
    sizes = np.array([1, 3, 5, 7], dtype=np.int64)
    assert_matches_ort("Resize", [x, None, None, sizes], {"mode": mode, "antialias": 1}, rtol=1e-4, atol=1e-4)


def test_resize_tf_crop_and_resize_with_extrapolation() -> None:
    x = np.random.default_rng(2).standard_normal((1, 1, 6, 5)).astype(np.float32)
    roi = np.array([0, 0, -0.2, 0.3, 1, 1, 0.7, 1.4], dtype=np.float32)
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 7.0}
    assert_matches_ort("Resize", [x, roi, None, np.array([1, 1, 4, 6], dtype=np.int64)], attrs)


def test_resize_axes_and_keep_aspect_ratio() -> None:
    x = np.random.default_rng(3).standard_normal((1, 2, 6, 9)).astype(np.float32)
    for policy in ("not_larger", "not_smaller"):
        attrs = {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": policy}
        assert_matches_ort("Resize", [x, None, None, np.array([4, 4], dtype=np.int64)], attrs)


def test_nearest_integer_upscale_is_one_broadcast_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The style net's 2x nearest upscale: equals onnxruntime and never gathers."""
    def no_gather(*args: object) -> None:
        raise AssertionError("integer upscale should not gather")

    monkeypatch.setattr(interpolation, "apply_axis", no_gather)
    x = np.random.default_rng(4).random((2, 32, 17, 13), dtype=np.float32)
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    assert_matches_ort("Resize", [x, None, np.array([1, 1, 2, 2], dtype=np.float32)], attrs, rtol=0, atol=0)


def test_resize_uint8_rounds_and_saturates() -> None:
    x = np.random.default_rng(5).integers(0, 256, (1, 1, 5, 5), dtype=np.uint8)
    assert_matches_ort("Resize", [x, None, np.array([1, 1, 1.6, 1.6], dtype=np.float32)],
                       {"mode": "linear"}, rtol=0, atol=1)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample(mode: str) -> None:
    x = np.random.default_rng(6).standard_normal((1, 2, 3, 4)).astype(np.float32)
    scales = np.array([1, 1, 2, 3], dtype=np.float32)
    expected = corral_run("Resize", [x, None, scales],
                          {"mode": mode, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"})[0]
    np.testing.assert_allclose(corral_run("Upsample", [x, scales], {"mode": mode})[0], expected)
    np.testing.assert_allclose(corral_run("Upsample", [x], {"mode": mode, "scales": [1.0, 1.0, 2.0, 3.0]})[0],
                               expected)
    if mode == "nearest":
        np.testing.assert_array_equal(expected, x.repeat(2, axis=2).repeat(3, axis=3))
