"""Which weights get quantized: weight slots by default, names/op types/min size on request."""

from __future__ import annotations

import numpy as np
import pytest

from engine.builder import ModelBuilder
from engine.format import dumps, loads
from engine.graph import Model
from engine.quantize import QuantizeOptions, QuantizeReport, quantize_model
from engine.tensors import QuantizedTensor


def _model() -> Model:
    rng = np.random.default_rng(0)
    b = ModelBuilder("sel")
    x = b.image_input("image", size=(16, 16))
    y = b.node("Conv", [x, b.weight("first.w", rng.normal(size=(16, 3, 5, 5)).astype(np.float32)),
                        b.weight("first.b", rng.normal(size=16).astype(np.float32))], name="first", pads=[2] * 4)
    y = b.node("BatchNormalization", [y, b.weight("bn.scale", np.ones(16, np.float32)),
                                      b.weight("bn.bias", np.zeros(16, np.float32)),
                                      b.weight("bn.mean", np.zeros(16, np.float32)),
                                      b.weight("bn.var", np.ones(16, np.float32))], name="bn")
    y = b.node("Conv", [y, b.weight("mid.w", rng.normal(size=(16, 16, 3, 3)).astype(np.float32))],
               name="mid", pads=[1] * 4)
    y = b.node("Mul", [y, b.weight("gain", rng.normal(size=(1, 16, 1, 1)).astype(np.float32))], name="gain_mul")
    y = b.node("Resize", [y, "", b.weight("scales", np.array([1, 1, 2, 2], np.float32))], name="up")
    y = b.node("Conv", [y, b.weight("last.w", rng.normal(size=(3, 16, 3, 3)).astype(np.float32))],
               name="last", pads=[1] * 4)
    y = b.node("GlobalAveragePool", [y])
    y = b.node("Flatten", [y])
    y = b.node("Gemm", [y, b.weight("fc.w", rng.normal(size=(400, 3)).astype(np.float32)),
                        b.weight("fc.b", np.zeros(400, np.float32))], name="fc", transB=1)
    y = b.node("MatMul", [y, b.weight("proj.w", rng.normal(size=(400, 10)).astype(np.float32))], name="proj")
    b.array_output(y, name="scores")
    return b.build(validate=False)


def _quantized(options: QuantizeOptions) -> tuple[set[str], QuantizeReport]:
    report = QuantizeReport()
    q = quantize_model(_model(), options, report)
    names = {n for n, w in q.graph.initializers.items() if isinstance(w, QuantizedTensor) or w.dtype == np.float16}
    assert names == set(report.quantized)
    return names, report


def test_default_takes_weight_slots_of_conv_gemm_matmul_only() -> None:
    names, report = _quantized(QuantizeOptions(mode="linear", bits=8, min_size=0))
    assert names == {"first.w", "mid.w", "last.w", "fc.w", "proj.w"}
    assert "bias" in report.skipped["first.b"]
    assert "bias" in report.skipped["bn.var"]
    assert "control input of Resize" == report.skipped["scales"]


def test_min_size_default_keeps_small_tensors_float() -> None:
    names, report = _quantized(QuantizeOptions(mode="lut", bits=4))
    # last.w has 432 elements, under the default 1024
    assert names == {"first.w", "mid.w", "fc.w", "proj.w"}
    assert "below the minimum size" in report.skipped["last.w"]


def test_exclude_by_node_name_and_op_type() -> None:
    names, _ = _quantized(QuantizeOptions(mode="linear", min_size=0, exclude=["first", "la*"]))
    assert names == {"mid.w", "fc.w", "proj.w"}
    names, report = _quantized(QuantizeOptions(mode="linear", min_size=0, exclude_ops=["Gemm", "MatMul"]))
    assert names == {"first.w", "mid.w", "last.w"}
    assert "op type (Gemm)" in report.skipped["fc.w"]


def test_include_narrows_to_matches() -> None:
    names, report = _quantized(QuantizeOptions(mode="linear", min_size=0, include_ops=["Conv"]))
    assert names == {"first.w", "mid.w", "last.w"}  # Conv biases still stay float
    assert "not matched" in report.skipped["proj.w"]
    names, _ = _quantized(QuantizeOptions(mode="linear", min_size=0, include=["mid", "fc"]))
    assert names == {"mid.w", "fc.w"}


def test_params_only_when_asked() -> None:
    names, _ = _quantized(QuantizeOptions(mode="linear", min_size=0, include=["first.b"]))
    assert names == {"first.b"}
    names, _ = _quantized(QuantizeOptions(mode="linear", min_size=0, include_ops=["Mul"]))
    assert names == {"gain"}
    names, _ = _quantized(QuantizeOptions(mode="linear", min_size=0, quantize_params=True))
    assert {"first.b", "bn.scale", "gain", "fc.b"} <= names and "scales" not in names


def test_fp16_converts_parameters_too_but_never_control_inputs() -> None:
    names, _ = _quantized(QuantizeOptions(mode="fp16"))
    assert names == {"first.w", "first.b", "bn.scale", "bn.bias", "bn.mean", "bn.var", "mid.w", "gain",
                     "last.w", "fc.w", "fc.b", "proj.w"}


@pytest.mark.parametrize("mode,bits", [("linear", 8), ("linear", 3), ("lut", 4), ("lut", 1), ("fp16", 16)])
def test_quantized_model_survives_save_and_load(mode: str, bits: int) -> None:
    model = _model()
    q = quantize_model(model, QuantizeOptions(mode=mode, bits=bits, min_size=0))  # type: ignore[arg-type]
    back = loads(dumps(q), "q")
    for name, w in q.graph.initializers.items():
        got = back.graph.initializers[name]
        if isinstance(w, QuantizedTensor):
            np.testing.assert_array_equal(got.dequantize(), w.dequantize())
        else:
            np.testing.assert_array_equal(got, w)
    # the source model is untouched
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float32 for w in model.graph.initializers.values())
    assert back.description.metadata.user["corral.quantization"] == (mode if mode == "fp16" else f"{mode}{bits}")


def test_output_channel_axes() -> None:
    q = quantize_model(_model(), QuantizeOptions(mode="linear", bits=4, min_size=0))
    w = q.graph.initializers
    assert (w["first.w"].axis, w["first.w"].scale.size) == (0, 16)
    assert (w["fc.w"].axis, w["fc.w"].scale.size) == (0, 400)  # Gemm transB: [N, K]
    assert (w["proj.w"].axis, w["proj.w"].scale.size) == (1, 10)  # MatMul B: [K, N]
    grouped = quantize_model(_model(), QuantizeOptions(mode="lut", bits=2, min_size=0, group_size=4))
    assert grouped.graph.initializers["mid.w"].palette.size == 4 * 4
    per_tensor = quantize_model(_model(), QuantizeOptions(mode="linear", bits=4, min_size=0,
                                                          granularity="per-tensor"))
    assert per_tensor.graph.initializers["mid.w"].scale.size == 1
