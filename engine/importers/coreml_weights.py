"""Core ML ``WeightParams`` to corral weights, keeping quantized storage as it is.

Core ML NeuralNetwork weights come as ``floatValue`` (float32),
``float16Value`` (little-endian half floats) or ``rawValue`` with
``quantization``: 1–8-bit codes packed MSB-first (corral's own bit order, so
the bytes are kept unchanged) and either linear parameters (one scale and
bias, or one per output channel) or a lookup table of 2**bits floats.
Dequantizing the result gives exactly what coremltools' own dequantization
gives: both compute ``code * scale + bias`` in float64 and round once to
float32, and lookup tables and float16 are plain table reads.

Reading the protobuf needs the classes that ``coremltools`` ships
(``coremltools.proto``); this module only touches the message's fields.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.exceptions import ModelFormatError, ModelImportError
from engine.tensors import QuantizedTensor, Weight, packed_size


def weight_from_coreml(wp: Any, shape: tuple[int, ...], where: str, axis: int = 0) -> Weight:
    """The weight a ``WeightParams`` message holds, as an array of ``shape`` or a :class:`QuantizedTensor`.

    ``axis`` is the output-channel axis that per-channel linear parameters
    index (0 for convolution and inner product, 1 for deconvolution).
    """
    count = int(np.prod(shape, dtype=np.int64))
    if len(wp.floatValue):
        values = np.asarray(wp.floatValue, np.float32)
        _check_count(values.size, count, where, "floatValue")
        return values.reshape(shape)
    if len(wp.float16Value):
        if len(wp.float16Value) != 2 * count:
            raise ModelImportError(f"{where}: float16Value holds {len(wp.float16Value)} bytes, "
                                   f"{count} half floats need {2 * count}")
        return np.frombuffer(wp.float16Value, dtype="<f2").astype(np.float16).reshape(shape)
    if not len(wp.rawValue):
        if count == 0:
            return np.zeros(shape, np.float32)
        raise ModelImportError(f"{where}: holds no weights (no floatValue, float16Value or rawValue)")
    if not wp.HasField("quantization"):
        raise ModelImportError(f"{where}: rawValue without quantization parameters is not a float weight "
                               "corral can read")
    q = wp.quantization
    bits = int(q.numberOfBits)
    if not 1 <= bits <= 8:
        raise ModelImportError(f"{where}: quantized weights of {bits} bits; Core ML and corral use 1..8")
    if len(wp.rawValue) != packed_size(count, bits):
        raise ModelImportError(f"{where}: {count} weights of {bits} bits need {packed_size(count, bits)} bytes, "
                               f"rawValue holds {len(wp.rawValue)}")
    kind = q.WhichOneof("QuantizationType")
    if kind == "linearQuantization":
        scale = np.asarray(q.linearQuantization.scale, np.float32)
        bias = np.asarray(q.linearQuantization.bias, np.float32)
        per_channel = max(scale.size, bias.size) > 1
        tensor = QuantizedTensor(shape=tuple(shape), bits=bits, packed=bytes(wp.rawValue), scheme="linear",
                                 axis=axis if per_channel else -1, scale=scale, bias=bias)
    elif kind == "lookupTableQuantization":
        tensor = QuantizedTensor(shape=tuple(shape), bits=bits, packed=bytes(wp.rawValue), scheme="lut", axis=-1,
                                 palette=np.asarray(q.lookupTableQuantization.floatValue, np.float32))
    else:
        raise ModelImportError(f"{where}: quantization names no scheme (linear or lookup table)")
    try:
        tensor.validate(where)
    except ModelFormatError as exc:
        raise ModelImportError(str(exc)) from None
    return tensor


def _check_count(found: int, count: int, where: str, field: str) -> None:
    if found != count:
        raise ModelImportError(f"{where}: {field} holds {found} values, the layer's shape needs {count}")
