"""Core ML quantized weights read bit-exactly: models built with coremltools' NeuralNetworkBuilder, quantized
with its own quantization_utils at every width and mode, compared with its own dequantization."""

from __future__ import annotations

import copy
import io
from contextlib import redirect_stdout

import numpy as np
import pytest

from engine.exceptions import ModelImportError
from engine.importers.coreml_weights import weight_from_coreml
from engine.tensors import QuantizedTensor, to_float_array

ct = pytest.importorskip("coremltools")
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder
from coremltools.models.neural_network import quantization_utils as qu

OUT, IN, K = 6, 4, 3


def _spec():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    b = NeuralNetworkBuilder([("x", datatypes.Array(IN, 8, 8))], [("y", None)])
    # builder takes conv weights as [kH, kW, C_in, C_out]
    w = (rng.normal(size=(K, K, IN, OUT)) * np.array([0.01, 0.1, 1, 3, 0.5, 2])).astype(np.float32)
    b.add_convolution("conv", kernel_channels=IN, output_channels=OUT, height=K, width=K, stride_height=1,
                      stride_width=1, border_mode="same", groups=1, W=w, b=rng.normal(size=OUT).astype(np.float32),
                      has_bias=True, input_name="x", output_name="c")
    b.add_flatten("flat", mode=0, input_name="c", output_name="f")
    b.add_inner_product("fc", W=rng.normal(size=(10, OUT * 64)).astype(np.float32), b=None, input_channels=OUT * 64,
                        output_channels=10, has_bias=False, input_name="f", output_name="y")
    return b.spec


def _layers(spec):  # type: ignore[no-untyped-def]
    conv, _, fc = spec.neuralNetwork.layers
    return [(conv.convolution.weights, (OUT, IN, K, K)), (fc.innerProduct.weights, (10, OUT * 64))]


def _coremltools_dequantized(wp, shape) -> np.ndarray:  # type: ignore[no-untyped-def]
    wp = copy.deepcopy(wp)
    if len(wp.float16Value):
        return np.frombuffer(wp.float16Value, "<f2").astype(np.float32).reshape(shape)
    qu._dequantize_wp(wp, shape)
    return np.asarray(wp.floatValue, np.float32).reshape(shape)


# the public mode names of coremltools' quantize_weights, to its internal constants
MODES = {"linear": ct.models._QUANTIZATION_MODE_LINEAR_QUANTIZATION,
         "linear_lut": ct.models._QUANTIZATION_MODE_LOOKUP_TABLE_LINEAR,
         "custom_lut": ct.models._QUANTIZATION_MODE_CUSTOM_LOOKUP_TABLE,
         "linear_symmetric": ct.models._QUANTIZATION_MODE_LINEAR_SYMMETRIC}


def _quantized(mode: str, bits: int, **kwargs):  # type: ignore[no-untyped-def]
    spec = _spec()
    with redirect_stdout(io.StringIO()):  # quantization_utils prints progress
        qu._quantize_spec_weights(spec, bits, MODES[mode], **kwargs)
    return spec


def _palette_by_quantiles(nbits: int, wp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A custom_lut function (k-means needs scikit-learn): palette from quantiles, nearest codes."""
    lut = np.quantile(wp, np.linspace(0, 1, 1 << nbits))
    codes = np.abs(wp.reshape(-1, 1) - lut[None]).argmin(1).astype(np.uint8)
    return lut, codes


CASES = ([("linear", b, {}) for b in range(1, 9)] + [("linear_lut", b, {}) for b in range(1, 9)]
         + [("custom_lut", b, {"lut_function": _palette_by_quantiles}) for b in range(1, 9)]
         + [("linear_symmetric", 8, {})])


@pytest.mark.parametrize("mode,bits,kwargs", CASES, ids=[f"{m}{b}" for m, b, _ in CASES])
def test_dequantized_bit_exactly(mode: str, bits: int, kwargs: dict) -> None:
    spec = _quantized(mode, bits, **kwargs)
    for wp, shape in _layers(spec):
        assert wp.quantization.numberOfBits == bits and len(wp.rawValue)
        ours = weight_from_coreml(wp, shape, "layer")
        # stored compactly, both schemes: the same MSB-first bytes, kept as they are
        assert isinstance(ours, QuantizedTensor) and ours.bits == bits
        assert ours.scheme == ("lut" if "lut" in mode else "linear")
        assert ours.packed == wp.rawValue
        np.testing.assert_array_equal(to_float_array(ours), _coremltools_dequantized(wp, shape))


def test_float16_and_float32() -> None:
    spec = _quantized("linear", 16)
    for wp, shape in _layers(spec):
        assert len(wp.float16Value)
        ours = weight_from_coreml(wp, shape, "layer")
        assert ours.dtype == np.float16
        np.testing.assert_array_equal(to_float_array(ours), _coremltools_dequantized(wp, shape))
    for wp, shape in _layers(_spec()):
        np.testing.assert_array_equal(weight_from_coreml(wp, shape, "layer"),
                                      np.asarray(wp.floatValue, np.float32).reshape(shape))


def test_damaged_weights_are_named() -> None:
    wp, shape = _layers(_quantized("linear_lut", 3))[0]
    wp.rawValue = wp.rawValue[:-1]
    with pytest.raises(ModelImportError, match=r"conv weights: 216 weights of 3 bits need 81 bytes"):
        weight_from_coreml(wp, shape, "conv weights")
    wp, shape = _layers(_spec())[1]
    with pytest.raises(ModelImportError, match="floatValue holds 3840 values, the layer's shape needs 100"):
        weight_from_coreml(wp, (10, 10), "fc")
