"""Core ML import: models built with coremltools' NeuralNetworkBuilder, run by corral, compared with references
computed independently (numpy formulas from the NeuralNetwork.proto documentation, or onnxruntime for the same
convolution written as ONNX). coremltools itself cannot run predictions on Linux."""

from __future__ import annotations

import io
import logging
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

logging.getLogger("coremltools").setLevel(logging.ERROR)
ct = pytest.importorskip("coremltools")
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder
from coremltools.models.neural_network import flexible_shape_utils as flex
from coremltools.models.neural_network import quantization_utils as qu
from coremltools.proto import NeuralNetwork_pb2

from engine import compile
from engine.exceptions import InputError, ModelImportError
from engine.format import dumps, loads
from engine.importers.coreml import import_coreml
from engine.tensors import QuantizedTensor, to_float_array
from tests.engine.ops.ort_single_node import ort_run

RNG = np.random.default_rng(7)
C, H, W = 3, 7, 9


def rand(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def builder(shape: tuple[int, ...] = (C, H, W), out_shape: tuple[int, ...] | None = None,
            names: tuple[str, ...] = ("x",), mode: str | None = None) -> NeuralNetworkBuilder:
    out = datatypes.Array(*out_shape) if out_shape else None
    return NeuralNetworkBuilder([(n, datatypes.Array(*shape)) for n in names], [("y", out)], mode=mode)


def run(spec, **feeds: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Import, compile and run on batched tensors; returns output ``y``."""
    return compile(import_coreml(spec)).run(feeds)["y"]


def batch(shape: tuple[int, ...] = (C, H, W), n: int = 2) -> np.ndarray:
    return rand(n, *shape)


def close(got: np.ndarray, want: np.ndarray, tol: float = 1e-4) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# ------------------------------------------------------------------ convolution

def same_pads(size: int, k: int, s: int, top_left_heavy: bool) -> tuple[int, int]:
    """Core ML SamePadding: out = ceil(in / stride), the odd pixel at the bottom/right unless TOP_LEFT_HEAVY."""
    out = -(-size // s)
    total = max(0, (out - 1) * s + k - size)
    small = total // 2
    return (total - small, small) if top_left_heavy else (small, total - small)


@pytest.mark.parametrize("groups,border,stride,dilation,heavy,has_bias", [
    (1, "same", 1, 1, "BOTTOM_RIGHT_HEAVY", True),
    (3, "valid", 2, 2, "BOTTOM_RIGHT_HEAVY", True),      # depthwise, padded valid, dilated
    (1, "same", 2, 1, "TOP_LEFT_HEAVY", False),
    (3, "same", 2, 2, "BOTTOM_RIGHT_HEAVY", True),
])
def test_convolution(groups: int, border: str, stride: int, dilation: int, heavy: str, has_bias: bool) -> None:
    cout, k = 6, 3
    w = rand(k, k, C // groups, cout)  # builder layout [kH, kW, C_in/groups, C_out]
    bias = rand(cout)
    pad = {"padding_top": 1, "padding_bottom": 2, "padding_left": 0, "padding_right": 1} if border == "valid" else {}
    b = builder()
    b.add_convolution("conv", kernel_channels=C // groups, output_channels=cout, height=k, width=k,
                      stride_height=stride, stride_width=stride, border_mode=border, groups=groups, W=w,
                      b=bias if has_bias else None, has_bias=has_bias, input_name="x", output_name="y",
                      dilation_factors=[dilation, dilation], same_padding_asymmetry_mode=heavy, **pad)
    x = batch()
    keff = (k - 1) * dilation + 1
    if border == "valid":
        pads = [1, 0, 2, 1]
    else:
        (t, bo), (le, r) = (same_pads(H, keff, stride, heavy == "TOP_LEFT_HEAVY"),
                            same_pads(W, keff, stride, heavy == "TOP_LEFT_HEAVY"))
        pads = [t, le, bo, r]
    inputs = [x, w.transpose(3, 2, 0, 1)] + ([bias] if has_bias else [])
    want = ort_run("Conv", inputs, {"pads": pads, "strides": [stride] * 2, "dilations": [dilation] * 2, "group": groups})[0]
    close(run(b.spec, x=x), want)


@pytest.mark.parametrize("case", ["valid", "same", "output_shape_larger", "output_shape_groups"])
def test_deconvolution(case: str) -> None:
    cout, k, s = 4, 3, 2
    groups = 2 if case == "output_shape_groups" else 1
    cin = 4
    w = rand(k, k, cin, cout // groups)  # builder layout for deconvolution [kH, kW, C_in, C_out/groups]
    bias = rand(cout)
    h, wd = 5, 6
    kwargs: dict = {}
    pads = [0, 0, 0, 0]
    out_pad = [0, 0]
    if case == "valid":
        kwargs = {"padding_top": 1, "padding_bottom": 0, "padding_left": 2, "padding_right": 1}
        pads = [1, 2, 0, 1]
    elif case == "same":
        t, bo = same_pads(h * s, k, s, False)  # crop k - s in total, the odd one at the end
        pads = [(k - s) // 2, (k - s) // 2, (k - s) - (k - s) // 2, (k - s) - (k - s) // 2]
        assert t >= 0 and bo >= 0
    else:
        # natural size (in-1)*s + k - top; one more row/column than that, at the end (output_padding)
        kwargs = {"output_shape": ((h - 1) * s + k - 1 + 1, (wd - 1) * s + k - 1 + 1), "padding_top": 1,
                      "padding_left": 1, "padding_bottom": 1, "padding_right": 1}
        pads = [1, 1, 0, 0]
        out_pad = [0, 0]
        full = ((h - 1) * s + k, (wd - 1) * s + k)
        out_pad = [kwargs["output_shape"][0] - (full[0] - 1), kwargs["output_shape"][1] - (full[1] - 1)]
    b = builder(shape=(cin, h, wd))
    b.add_convolution("deconv", kernel_channels=cin, output_channels=cout, height=k, width=k, stride_height=s,
                      stride_width=s, border_mode="same" if case == "same" else "valid", groups=groups, W=w,
                      b=bias, has_bias=True, is_deconv=True, input_name="x", output_name="y", **kwargs)
    x = batch((cin, h, wd))
    want = ort_run("ConvTranspose", [x, w.transpose(2, 3, 0, 1), bias],
                   {"pads": pads, "strides": [s, s], "group": groups, "output_padding": out_pad})[0]
    got = run(b.spec, x=x)
    if case == "same":
        assert got.shape[2:] == (h * s, wd * s)
    if "output_shape" in case:
        assert got.shape[2:] == tuple(kwargs["output_shape"])
    close(got, want)


# ------------------------------------------------------------------ normalization

def test_batchnorm_and_instance_normalization() -> None:
    gamma, beta, mean, var = rand(C), rand(C), rand(C), np.abs(rand(C)) + 0.5
    b = builder()
    b.add_batchnorm("bn", C, gamma, beta, mean, var, input_name="x", output_name="y", epsilon=1e-3)
    x = batch()
    cw = lambda v: v[None, :, None, None]
    close(run(b.spec, x=x), cw(gamma) * (x - cw(mean)) / np.sqrt(cw(var) + 1e-3) + cw(beta))

    b = builder()
    b.add_batchnorm("in", C, gamma, beta, input_name="x", output_name="y", compute_mean_var=True,
                    instance_normalization=True, epsilon=1e-5)
    model = import_coreml(b.spec)
    assert model.op_counts() == {"InstanceNormalization": 1}
    mu, sd = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    close(compile(model).run({"x": x})["y"], cw(gamma) * (x - mu) / np.sqrt(sd + 1e-5) + cw(beta))


# ------------------------------------------------------------------ activations

ALPHA_C = np.array([0.1, -0.5, 2.0], np.float32)
BETA_C = np.array([1.0, 0.5, 3.0], np.float32)
ACTIVATIONS = {
    "RELU": (None, lambda x: np.maximum(x, 0)),
    "LEAKYRELU": ([0.1], lambda x: np.where(x >= 0, x, 0.1 * x)),
    "TANH": (None, np.tanh),
    "SCALED_TANH": ([1.5, 0.7], lambda x: 1.5 * np.tanh(0.7 * x)),
    "SIGMOID": (None, lambda x: 1 / (1 + np.exp(-x))),
    "SIGMOID_HARD": ([0.2, 0.5], lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    "ELU": (1.5, lambda x: np.where(x >= 0, x, 1.5 * (np.exp(x) - 1))),
    "PRELU": (ALPHA_C, lambda x: np.where(x >= 0, x, ALPHA_C[None, :, None, None] * x)),
    "LINEAR": ([2.0, 0.5], lambda x: 2 * x + 0.5),
    "SOFTSIGN": (None, lambda x: x / (1 + np.abs(x))),
    "SOFTPLUS": (None, lambda x: np.log1p(np.exp(x.astype(np.float64)))),
    "PARAMETRICSOFTPLUS": ([ALPHA_C, BETA_C], lambda x: ALPHA_C[None, :, None, None] * np.log1p(
        np.exp(BETA_C[None, :, None, None] * x.astype(np.float64)))),
}


@pytest.mark.parametrize("kind", list(ACTIVATIONS))
def test_activation(kind: str) -> None:
    params, fn = ACTIVATIONS[kind]
    b = builder()
    b.add_activation("act", kind, "x", "y", params=params)
    x = batch() * 3
    close(run(b.spec, x=x), fn(x).astype(np.float32))


def test_softplus_does_not_overflow() -> None:
    b = builder(shape=(1, 1, 3))
    b.add_activation("act", "SOFTPLUS", "x", "y")
    x = np.array([[[[-200.0, 0.0, 200.0]]]], np.float32)
    close(run(b.spec, x=x), np.array([[[[0.0, np.log(2), 200.0]]]], np.float32))


@pytest.mark.parametrize("mode,alpha,fn", [
    ("SQRT", 1.0, np.sqrt), ("RSQRT", 1.0, lambda x: 1 / np.sqrt(x + 1e-6)), ("INVERSE", 1.0, lambda x: 1 / (x + 1e-6)),
    ("POWER", 3.0, lambda x: x ** 3), ("EXP", 1.0, np.exp), ("LOG", 1.0, np.log), ("ABS", 1.0, np.abs),
    ("THRESHOLD", 1.2, lambda x: np.maximum(x, 1.2))])
def test_unary(mode: str, alpha: float, fn) -> None:  # type: ignore[no-untyped-def]
    b = builder()
    b.add_unary("u", "x", "y", mode, alpha=alpha, shift=0.25, scale=2.0)
    x = np.abs(batch()) + 0.1
    close(run(b.spec, x=x), fn(2 * x + 0.25).astype(np.float32), tol=1e-3)


# ------------------------------------------------------------------ pooling and padding

def ref_pool(x: np.ndarray, k: int, s: int, pads: tuple[int, int, int, int], out: tuple[int, int], kind: str,
             exclude: bool) -> np.ndarray:
    """Windows at i*s - top; padding never wins a max; averages count the padded input (not any overhang)."""
    t, le, bo, r = pads
    n, c, h, w = x.shape
    y = np.empty((n, c, *out), np.float32)
    for i in range(out[0]):
        for j in range(out[1]):
            r0, c0 = i * s - t, j * s - le
            win = x[:, :, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
            if kind == "MAX":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                rows = min(r0 + k, h + bo) - max(r0, -t)
                cols = min(c0 + k, w + r) - max(c0, -le)
                count = win.shape[2] * win.shape[3] if exclude else rows * cols
                y[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return y


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
@pytest.mark.parametrize("padding,exclude", [("VALID", True), ("SAME", True), ("SAME", False),
                                              ("INCLUDE_LAST_PIXEL", True), ("INCLUDE_LAST_PIXEL", False)])
def test_pooling(kind: str, padding: str, exclude: bool) -> None:
    k, s = 3, 2
    b = builder()
    pad = {"padding_top": 1, "padding_left": 1, "padding_bottom": 1, "padding_right": 1} if padding != "SAME" else {}
    if padding == "VALID":
        pad = {"padding_top": 1, "padding_left": 0, "padding_bottom": 0, "padding_right": 1}
    b.add_pooling("pool", k, k, s, s, kind, padding, "x", "y", exclude_pad_area=exclude, **pad)
    x = batch()
    if padding == "VALID":
        pads = (1, 0, 0, 1)
        out = ((H + 1 - k) // s + 1, (W + 1 - k) // s + 1)
    elif padding == "SAME":
        (t, bo), (le, r) = same_pads(H, k, s, False), same_pads(W, k, s, False)
        pads, out = (t, le, bo, r), (-(-H // s), -(-W // s))
    else:  # the NeuralNetwork.proto formula for ValidCompletePadding
        pads = (1, 1, 1, 1)
        sizes = []
        for size in (H, W):
            o = -(-(size + 2 - k) // s) + 1
            if (o - 1) * s >= size + 1:
                o -= 1
            sizes.append(o)
        out = (sizes[0], sizes[1])
    close(run(b.spec, x=x), ref_pool(x, k, s, pads, out, kind, exclude))


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
def test_global_pooling(kind: str) -> None:
    b = builder()
    b.add_pooling("pool", 1, 1, 1, 1, kind, "VALID", "x", "y", is_global=True)
    x = batch()
    fn = np.max if kind == "MAX" else np.mean
    close(run(b.spec, x=x), fn(x, axis=(2, 3), keepdims=True))


@pytest.mark.parametrize("kind,np_mode", [("constant", "constant"), ("reflection", "reflect"),
                                          ("replication", "edge")])
def test_padding(kind: str, np_mode: str) -> None:
    b = builder()
    b.add_padding("pad", left=2, right=1, top=0, bottom=3, value=1.5, input_name="x", output_name="y",
                  padding_type=kind)
    x = batch()
    extra = {"constant_values": 1.5} if kind == "constant" else {}
    close(run(b.spec, x=x), np.pad(x, [(0, 0), (0, 0), (0, 3), (2, 1)], mode=np_mode, **extra))


def interp(x: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at (clamped) fractional ``coords``."""
    size = x.shape[axis]
    coords = np.clip(coords, 0, size - 1)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    frac = (coords - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return np.take(x, lo, axis) * (1 - frac) + np.take(x, hi, axis) * frac


@pytest.mark.parametrize("mode", ["NN", "DEFAULT", "ALIGN_CORNERS_TRUE", "ALIGN_CORNERS_FALSE"])
def test_upsample(mode: str) -> None:
    sh, sw = 2, 3
    b = builder()
    b.add_upsample("up", sh, sw, "x", "y", mode="NN" if mode == "NN" else "BILINEAR",
                   linear_upsample_mode="DEFAULT" if mode == "NN" else mode)
    x = batch()
    if mode == "NN":
        want = x.repeat(sh, axis=2).repeat(sw, axis=3)
    else:
        want = x
        for axis, (size, s) in ((2, (H, sh)), (3, (W, sw))):
            i = np.arange(size * s, dtype=np.float64)
            coords = {"DEFAULT": i / s, "ALIGN_CORNERS_TRUE": i * (size - 1) / (size * s - 1),
                      "ALIGN_CORNERS_FALSE": np.maximum((i + 0.5) / s - 0.5, 0)}[mode]
            want = interp(want, axis, coords)
    close(run(b.spec, x=x), want.astype(np.float32))


# ------------------------------------------------------------------ dense, elementwise, layout

def test_inner_product_after_convolution_flattens_the_rank5_blob() -> None:
    wfc, bfc = rand(10, 4 * H * W), rand(10)
    wc = rand(1, 1, C, 4)
    b = builder(out_shape=(10,))
    b.add_convolution("conv", C, 4, 1, 1, 1, 1, "valid", 1, wc, None, False, input_name="x", output_name="c")
    b.add_inner_product("fc", wfc, bfc, 4 * H * W, 10, True, input_name="c", output_name="y")
    x = batch()
    conv = np.einsum("nchw,co->nohw", x, wc[0, 0])
    got = run(b.spec, x=x)
    assert got.shape == (2, 10)  # the declared [10] output, batched
    close(got, conv.reshape(2, -1) @ wfc.T + bfc, tol=1e-3)


def test_inner_product_on_a_vector_input_keeps_vector_semantics() -> None:
    wfc = rand(5, 8)
    b = builder(shape=(8,), out_shape=(5,))
    b.add_inner_product("fc", wfc, None, 8, 5, False, input_name="x", output_name="h")
    b.add_activation("relu", "RELU", "h", "y")
    x = rand(3, 8)
    close(run(b.spec, x=x), np.maximum(x @ wfc.T, 0))


@pytest.mark.parametrize("mode,alpha,fn", [
    ("ADD", None, lambda a, b, c: a + b + c), ("MULTIPLY", None, lambda a, b, c: a * b * c),
    ("CONCAT", None, lambda a, b, c: np.concatenate([a, b, c], axis=1)), ("AVE", None, lambda a, b, c: (a + b + c) / 3),
    ("MAX", None, lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    ("MIN", None, lambda a, b, c: np.minimum(np.minimum(a, b), c))])
def test_elementwise_of_three_inputs(mode: str, alpha, fn) -> None:  # type: ignore[no-untyped-def]
    b = builder(names=("a", "b", "c"))
    b.add_elementwise("op", ["a", "b", "c"], "y", mode)
    a, bb, c = batch(), batch(), batch()
    close(run(b.spec, a=a, b=bb, c=c), fn(a, bb, c))


@pytest.mark.parametrize("mode,fn", [("ADD", lambda x: x + 0.75), ("MULTIPLY", lambda x: x * 0.75)])
def test_single_input_add_and_multiply_use_alpha(mode: str, fn) -> None:  # type: ignore[no-untyped-def]
    b = builder()
    b.add_elementwise("op", ["x"], "y", mode, alpha=0.75)
    x = batch()
    close(run(b.spec, x=x), fn(x))


def test_softmax_over_channels() -> None:
    b = builder()
    b.add_softmax("sm", "x", "y")
    x = batch()
    e = np.exp(x - x.max(axis=1, keepdims=True))
    close(run(b.spec, x=x), e / e.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("mode", [0, 1])
def test_flatten(mode: int) -> None:
    b = builder()
    b.add_flatten("flat", mode, "x", "y")
    x = batch()
    src = x if mode == 0 else x.transpose(0, 2, 3, 1)
    close(run(b.spec, x=x), src.reshape(2, -1, 1, 1))


@pytest.mark.parametrize("mode", [0, 1])
def test_reshape(mode: int) -> None:
    target = (W, C, H)
    b = builder()
    b.add_reshape("rs", "x", "y", (1, *target), mode)
    x = batch()
    if mode == 0:
        want = x.reshape(2, *target)
    else:  # flatten H, W, C; fill [H', W', C']; back to [C', H', W']
        want = x.transpose(0, 2, 3, 1).reshape(2, target[1], target[2], target[0]).transpose(0, 3, 1, 2)
    close(run(b.spec, x=x), want)


@pytest.mark.parametrize("axes", [(0, 3, 1, 2), (0, 2, 3, 1), (0, 1, 3, 2)])
def test_permute(axes: tuple[int, ...]) -> None:
    b = builder()
    b.add_permute("perm", axes, "x", "y")
    x = batch()
    close(run(b.spec, x=x), x.transpose(*axes))  # Core ML's (Seq, C, H, W) axes = corral's (N, C, H, W)


def test_scale_bias_and_load_constant() -> None:
    scale, sbias, bias = rand(C), rand(C), rand(C, H, W)
    const = rand(C, H, W)
    b = builder()
    b.add_scale("scale", scale, sbias, True, "x", "s", shape_scale=[C], shape_bias=[C])
    b.add_bias("bias", bias, "s", "t", shape_bias=[C, H, W])
    b.add_scale("scale1", np.array([2.5], np.float32), None, False, "t", "u", shape_scale=[1])
    b.add_load_constant("const", "k", const, [C, H, W])
    b.add_elementwise("sum", ["u", "k"], "y", "ADD")
    x = batch()
    cw = lambda v: v[None, :, None, None]
    close(run(b.spec, x=x), 2.5 * (x * cw(scale) + cw(sbias) + bias) + const)


# ------------------------------------------------------------------ description

@pytest.mark.parametrize("is_bgr,gray", [(False, False), (True, False), (False, True)])
def test_image_preprocessing(is_bgr: bool, gray: bool) -> None:
    channels = 1 if gray else 3
    b = builder(shape=(channels, 4, 5))
    b.add_activation("id", "LINEAR", "x", "y", params=[1.0, 0.0])
    b.set_pre_processing_parameters(image_input_names=["x"], is_bgr=is_bgr, red_bias=-1.0, green_bias=-2.0,
                                    blue_bias=-3.0, gray_bias=-0.5, image_scale=1 / 255)
    if gray:
        b.spec.description.input[0].type.imageType.colorSpace = ct.proto.FeatureTypes_pb2.ImageFeatureType.GRAYSCALE
    model = import_coreml(b.spec)
    feature = model.description.inputs[0]
    assert feature.kind == "image" and feature.color_layout == ("GRAY" if gray else "BGR" if is_bgr else "RGB")
    assert feature.shape.default == (channels, 4, 5)
    assert feature.scale == pytest.approx((1 / 255,))
    assert feature.bias == ((-0.5,) if gray else (-3.0, -2.0, -1.0) if is_bgr else (-1.0, -2.0, -3.0))
    pixels = RNG.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0], "L") if gray else Image.fromarray(pixels, "RGB")
    got = compile(model).predict({"x": image})["y"]
    if gray:
        want = pixels[None, ..., 0] / 255 - 0.5
    else:
        order = [2, 1, 0] if is_bgr else [0, 1, 2]
        bias = np.array(feature.bias)[:, None, None]
        want = pixels.transpose(2, 0, 1)[order] / 255 + bias
    close(got, want.astype(np.float32), tol=1e-5)


def test_enumerated_and_ranged_image_sizes() -> None:
    b = builder(shape=(3, 8, 8))
    b.add_pooling("pool", 2, 2, 2, 2, "AVERAGE", "VALID", "x", "y")
    b.set_pre_processing_parameters(image_input_names=["x"], image_scale=1.0)
    spec = b.spec
    flex.add_enumerated_image_sizes(spec, "x", sizes=[flex.NeuralNetworkImageSize(8, 8),
                                                      flex.NeuralNetworkImageSize(16, 12)])
    model = import_coreml(spec)
    shape = model.description.inputs[0].shape
    assert shape.default == (3, 8, 8) and shape.enumerated == [(3, 8, 8), (3, 16, 12)]
    compiled = compile(model)
    x = rand(3, 16, 12)
    close(compiled.predict({"x": x})["y"], x.reshape(3, 8, 2, 6, 2).mean(axis=(2, 4)))
    with pytest.raises(InputError, match="not allowed"):
        compiled.predict({"x": rand(3, 10, 10)})

    b = builder(shape=(3, 8, 8))
    b.add_pooling("pool", 2, 2, 2, 2, "MAX", "VALID", "x", "y")
    b.set_pre_processing_parameters(image_input_names=["x"], image_scale=1.0)
    spec = b.spec
    size_range = flex.NeuralNetworkImageSizeRange()
    size_range.add_height_range((4, 32))
    size_range.add_width_range((6, -1))
    flex.update_image_size_range(spec, "x", size_range)
    shape = import_coreml(spec).description.inputs[0].shape
    assert shape.ranges == [(3, 3), (4, 32), (6, None)]
    assert shape.allows((3, 20, 500)) and not shape.allows((3, 40, 8))


def test_enumerated_and_ranged_array_shapes() -> None:
    b = builder(shape=(2, 4, 4))
    b.add_activation("relu", "RELU", "x", "y")
    spec = b.spec
    flex.add_enumerated_multiarray_shapes(spec, "x", shapes=[flex.NeuralNetworkMultiArrayShape(2, 6, 6)])
    shape = import_coreml(spec).description.inputs[0].shape
    assert shape.default == (2, 4, 4) and (2, 6, 6) in shape.enumerated

    b = builder(shape=(2, 4, 4))
    b.add_activation("relu", "RELU", "x", "y")
    spec = b.spec
    shape_range = flex.NeuralNetworkMultiArrayShapeRange()
    shape_range.add_channel_range((2, 2))
    shape_range.add_height_range((1, 10))
    shape_range.add_width_range((4, -1))
    flex.update_multiarray_shape_range(spec, "x", shape_range)
    model = import_coreml(spec)
    assert model.description.inputs[0].shape.ranges == [(2, 2), (1, 10), (4, None)]
    x = rand(2, 9, 30)
    close(compile(model).predict({"x": x})["y"], np.maximum(x, 0))


@pytest.mark.parametrize("labels", [["cat", "dog", "bird", "fish"], [10, 20, 30, 40]])
def test_classifier_labels_and_probabilities(labels: list) -> None:
    w = rand(4, 6)
    b = builder(shape=(6,), mode="classifier")
    b.add_inner_product("fc", w, None, 6, 4, False, input_name="x", output_name="logits")
    b.add_softmax("sm", "logits", "y")
    b.set_class_labels(labels, predicted_feature_name="label")
    model = import_coreml(b.spec)
    desc = model.description
    assert desc.class_labels == [str(v) for v in labels] and desc.class_labels_output == "y"
    assert [f.name for f in desc.outputs] == ["y"] and desc.outputs[0].shape.default == (4,)
    x = rand(6)
    probs = compile(model).predict({"x": x})["y"]
    e = np.exp(w @ x - (w @ x).max())
    close(probs, e / e.sum())


def test_custom_layer_kept_with_class_name_parameters_and_weights() -> None:
    b = builder()
    params = NeuralNetwork_pb2.CustomLayerParams(className="MyStyleShift", description="shifts")
    params.parameters["gain"].doubleValue = 1.5
    params.parameters["mode"].stringValue = "fast"
    params.parameters["steps"].intValue = 3
    params.parameters["flag"].boolValue = True
    params.weights.add().floatValue.extend([1.0, 2.0, 3.0])
    params.weights.add().rawValue = b"\x01\x02"
    b.add_custom("shift", ["x"], ["y"], custom_proto_spec=params)
    model = import_coreml(b.spec)
    assert model.custom_layers() == ["MyStyleShift"]
    (node,) = model.graph.nodes
    assert node.domain == "custom" and node.op_type == "MyStyleShift" and node.name == "shift"
    assert node.attrs == {"gain": 1.5, "mode": "fast", "steps": 3, "flag": 1}
    assert node.inputs[0] == "x" and node.outputs == ["y"]
    weights = [model.graph.initializers[n] for n in node.inputs[1:]]
    np.testing.assert_array_equal(weights[0], [1.0, 2.0, 3.0])
    assert weights[1].dtype == np.uint8 and weights[1].tobytes() == b"\x01\x02"
    back = loads(dumps(model))  # survives corral's own format
    assert back.graph.nodes[0].op_type == "MyStyleShift" and back.graph.nodes[0].attrs["mode"] == "fast"


def test_metadata_and_file_round_trip(tmp_path: Path) -> None:
    b = builder()
    b.add_activation("relu", "RELU", "x", "y")
    spec = b.spec
    spec.description.metadata.author = "Ada"
    spec.description.metadata.license = "MIT"
    spec.description.metadata.versionString = "2.1"
    spec.description.metadata.shortDescription = "a relu"
    path = tmp_path / "relu.mlmodel"
    path.write_bytes(spec.SerializeToString())
    meta = import_coreml(path).description.metadata
    assert (meta.name, meta.author, meta.license, meta.version, meta.description) == (
        "relu", "Ada", "MIT", "2.1", "a relu")


# ------------------------------------------------------------------ quantized weights

def _quantizable_spec():  # type: ignore[no-untyped-def]
    b = builder(shape=(4, 6, 6))
    b.add_convolution("conv", 4, 8, 3, 3, 1, 1, "same", 1, rand(3, 3, 4, 8), rand(8), True,
                      input_name="x", output_name="c")
    b.add_convolution("deconv", 8, 6, 3, 3, 2, 2, "valid", 1, rand(3, 3, 8, 6), None, False, is_deconv=True,
                      input_name="c", output_name="d")
    b.add_flatten("flat", 0, "d", "f")
    b.add_inner_product("fc", rand(5, 6 * 13 * 13), rand(5), 6 * 13 * 13, 5, True, input_name="f", output_name="y")
    return b.spec


WEIGHTED = {"conv": "conv/weights/", "deconv": "deconv/weights/", "fc": "fc/weights/"}


@pytest.mark.parametrize("mode", ["linear", "linear_lut"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_quantized_weights_equal_coremltools_dequantization(mode: str, bits: int) -> None:
    with redirect_stdout(io.StringIO()):  # quantization_utils prints progress
        quantized = qu.quantize_weights(ct.models.MLModel(_quantizable_spec()), bits, mode)
        dequantized = qu.quantize_weights(quantized, bits, "dequantization")
    qmodel = import_coreml(quantized.get_spec())
    fmodel = import_coreml(dequantized.get_spec())
    for layer, prefix in WEIGHTED.items():
        (qname,) = [n for n in qmodel.graph.initializers if n.startswith(prefix)]
        (fname,) = [n for n in fmodel.graph.initializers if n.startswith(prefix)]
        q, f = qmodel.graph.initializers[qname], fmodel.graph.initializers[fname]
        assert isinstance(q, QuantizedTensor) and q.bits == bits, layer
        assert q.scheme == ("lut" if "lut" in mode else "linear")
        assert f.dtype == np.float32
        np.testing.assert_array_equal(to_float_array(q), f)  # bit-exact, coremltools' own dequantization
    assert qmodel.bytes_by_storage().get(f"{'lut' if 'lut' in mode else 'linear'}{bits}", 0) > 0
    x = batch((4, 6, 6))
    np.testing.assert_array_equal(compile(qmodel).run({"x": x})["y"], compile(fmodel).run({"x": x})["y"])


def test_float16_weights() -> None:
    spec = _quantizable_spec()
    with redirect_stdout(io.StringIO()):
        half = qu.quantize_weights(ct.models.MLModel(spec), 16)
    model = import_coreml(half.get_spec())
    assert model.bytes_by_storage().get("float16", 0) > 0
    for prefix in WEIGHTED.values():
        (name,) = [n for n in model.graph.initializers if n.startswith(prefix)]
        (float_name,) = [n for n in import_coreml(spec).graph.initializers if n.startswith(prefix)]
        assert model.graph.initializers[name].dtype == np.float16
        np.testing.assert_array_equal(model.graph.initializers[name],
                                      import_coreml(spec).graph.initializers[float_name].astype(np.float16))
    x = batch((4, 6, 6))
    want = compile(import_coreml(spec)).run({"x": x})["y"]
    close(compile(model).run({"x": x})["y"], want, tol=2e-3 * float(np.abs(want).max()))


# ------------------------------------------------------------------ refusals

def test_unsupported_layer_names_layer_and_type() -> None:
    b = builder()
    b.add_l2_normalize("norm_me", "x", "y")
    with pytest.raises(ModelImportError, match=r"layer 'norm_me' is of type 'l2normalize'"):
        import_coreml(b.spec)


def test_unexpressible_activation_names_the_layer() -> None:
    b = builder()
    b.add_activation("thresh", "THRESHOLDEDRELU", "x", "y", params=0.5)
    with pytest.raises(ModelImportError, match=r"layer 'thresh' \(activation\).*thresholdedReLU"):
        import_coreml(b.spec)


def test_non_neural_network_and_newer_spec_are_refused() -> None:
    spec = ct.proto.Model_pb2.Model(specificationVersion=1)
    spec.identity.SetInParent()
    with pytest.raises(ModelImportError, match="holds a identity model"):
        import_coreml(spec)
    b = builder()
    b.add_activation("relu", "RELU", "x", "y")
    b.spec.specificationVersion = 7
    b.spec.neuralNetwork.arrayInputShapeMapping = NeuralNetwork_pb2.EXACT_ARRAY_MAPPING
    with pytest.raises(ModelImportError, match="specification version 7 .*EXACT_ARRAY_MAPPING"):
        import_coreml(b.spec)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="no such Core ML file"):
        import_coreml(tmp_path / "absent.mlmodel")
    bad = tmp_path / "bad.mlmodel"
    bad.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(ModelImportError, match="bad.mlmodel"):
        import_coreml(bad)


def test_missing_coremltools_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "coremltools.proto", None)  # makes the import raise ImportError
    with pytest.raises(ModelImportError, match=r"pip install 'corral\[coreml\]'"):
        import_coreml("whatever.mlmodel")


# ------------------------------------------------------------------ command line

def test_cli_imports_mlmodel(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from engine.format import load
    from scheduler.cli import main

    b = builder()
    b.add_activation("relu", "RELU", "x", "y")
    src = tmp_path / "relu.mlmodel"
    src.write_bytes(b.spec.SerializeToString())
    out = tmp_path / "relu.corral"
    result = CliRunner().invoke(main, ["model", "import", str(src), "-o", str(out), "--author", "me"])
    assert result.exit_code == 0, result.output
    model = load(out)
    assert model.op_counts() == {"Relu": 1} and model.description.metadata.author == "me"
    refused = CliRunner().invoke(main, ["model", "import", str(src), "-o", str(out), "--size", "8x8"])
    assert refused.exit_code != 0 and "--size apply to ONNX models" in refused.output
