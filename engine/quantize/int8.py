"""8-bit compute: a QDQ graph onnxruntime runs with its integer kernels, made from a calibration set.

The other quantized variants only store weights in fewer bits; every
backend dequantizes them at compile time and computes in float. An ``int8``
variant computes in 8 bits on the CPU: weights int8 per output channel
(symmetric), activations uint8 with ranges measured on calibration images
(static quantization), written as QuantizeLinear/DequantizeLinear pairs
around each op (ONNX's QDQ form). onnxruntime fuses those into
QLinearConv, QLinearMatMul and friends (VNNI on this AMD EPYC); corral's
numpy and torch backends run the same graph with the weights dequantized
at compile and the activation pairs as fake quantization, so every backend
computes the same function.

Why static and uint8 activations (measured here with onnxruntime 1.32 on
2 threads; the figures are in BENCHMARKS.md, ``bench/engine.py``): static
QDQ beat float on ddddocr's YOLOX detector and a ResNet-18 classifier,
while dynamic quantization (ConvInteger, activations quantized per run)
was slower than float, and int8 activations with int8 weights slower still
(x86 has no fast s8s8 path). Models whose layers run between quantized ops in float
(MobileNetV3's HardSwish: a DequantizeLinear and QuantizeLinear around each)
get slower, not faster: ``corral model compare`` measures and says so.

The quantization itself is onnxruntime's (``onnxruntime.quantization``):
corral exports its optimized graph (constants and BatchNormalization folded
first, so the quantizer sees the convolutions a backend runs), runs the
quantizer with the calibration set as its data reader and imports the QDQ
graph back under the model's own description.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from engine.exceptions import EngineError
from engine.graph import Model
from engine.quantize.calibration import CalibrationSet

log = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy")
# corral's own passes that the quantizer should see applied; the two fusions make ops only corral knows
SKIP_FOR_EXPORT = ("fuse_activations", "fuse_norm")


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a calibration set: one feed per item."""

    def __init__(self, model: Model, calibration: CalibrationSet) -> None:
        self.batched = {f.name: f.batched for f in model.description.inputs}
        self.calibration = calibration
        self._items: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        if item is None:
            return None
        return {k: (v[None] if self.batched.get(k, False) else v) for k, v in item.items()}

    def rewind(self) -> None:
        self._items = self.calibration.items()


def quantize_int8(model: Model, calibration: CalibrationSet, method: str = "minmax",
                  weight_errors: dict[str, float] | None = None) -> Model:
    """``model`` as an int8 QDQ graph calibrated on ``calibration``; ``model`` is left unchanged.

    ``weight_errors`` receives, per int8 weight, the mean squared error of its dequantized values against
    the float weight it replaces.
    """
    try:
        from onnx import helper
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as exc:
        raise EngineError(f"int8 quantization needs onnxruntime and onnx ({exc})") from exc
    if method not in METHODS:
        raise EngineError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if model.custom_layers() or model.description.custom_model:
        raise EngineError(f"model {model.name!r} has custom layers or is a custom model; int8 quantization "
                          "goes through ONNX and cannot carry them")
    calibration.check(model)
    from engine.exporters.onnx import graph_to_onnx, input_dims
    from engine.importers.onnx import import_graph
    from engine.passes import optimize

    ctx = optimize(model, skip=SKIP_FOR_EXPORT)
    desc = model.description
    infos = [helper.make_tensor_value_info(f.name, helper.np_dtype_to_tensor_dtype(
        np.dtype("float32" if f.kind == "image" else f.dtype)), input_dims(f)) for f in desc.inputs]
    proto = graph_to_onnx(ctx.nodes, ctx.constants, infos, [f.name for f in desc.outputs], model.name)

    class Reader(_Reader, CalibrationDataReader):
        pass

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    with tempfile.TemporaryDirectory(prefix="corral-int8-") as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(proto.SerializeToString())
        try:
            quantize_static(src, dst, Reader(model, calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method],
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        except Exception as exc:
            raise EngineError(f"model {model.name!r}: onnxruntime's quantizer failed ({type(exc).__name__}: "
                              f"{exc})") from exc
        graph = import_graph(dst, f"int8 graph of {model.name!r}")
    description = copy.deepcopy(desc)
    description.metadata.user = {**description.metadata.user, "corral.quantization": "int8",
                                 "corral.int8": json.dumps(recipe_info(method, len(calibration)))}
    quantized = Model(description=description, graph=graph)
    quantized.validate(f"int8 variant of {model.name!r}")
    if weight_errors is not None:
        weight_errors.update(_weight_errors(quantized, ctx.constants))
    return quantized


def _weight_errors(quantized: Model, floats: dict[str, np.ndarray]) -> dict[str, float]:
    """int8 weight -> MSE of DequantizeLinear(weight) against the float weight of the graph it came from."""
    from engine.ops import make_op

    errors: dict[str, float] = {}
    weights = quantized.graph.initializers
    for node in quantized.graph.nodes:
        if node.op_type != "DequantizeLinear" or node.inputs[0] not in weights:
            continue
        code = weights[node.inputs[0]]
        original = floats.get(node.inputs[0].removesuffix("_quantized"))
        if not isinstance(code, np.ndarray) or code.dtype != np.int8 or original is None:
            continue
        args = [np.asarray(weights[n]) if n in weights else None for n in node.inputs]
        restored = np.asarray(make_op(node)(args)[0], np.float32)
        errors[node.inputs[0]] = float(np.mean((restored - original) ** 2)) if original.size else 0.0
    return errors


def recipe_info(method: str, items: int) -> dict[str, Any]:
    return {"weights": "int8, per output channel, symmetric", "activations": "uint8, static",
            "calibration": {"method": method, "items": items}, "format": "ONNX QDQ"}
