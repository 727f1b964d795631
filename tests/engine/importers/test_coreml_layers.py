"""Core ML layers imported and run by corral, against references computed independently (numpy formulas from
the NeuralNetwork.proto documentation, or onnxruntime for the same convolution written as ONNX). coremltools itself
cannot run predictions on Linux."""

from __future__ import annotations

import logging

import numpy as np
import pytest

logging.getLogger("coremltools").setLevel(logging.ERROR)
ct = pytest.importorskip("coremltools")

from engine import compile
from engine.importers.coreml import import_coreml
from tests.engine.importers.coreml_helpers import C, H, W, batch, builder, close, rand, run
from tests.engine.ops.ort_single_node import ort_run

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


