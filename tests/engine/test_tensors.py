"""Tensor storage: dtypes, the documented MSB-first bit order, quantized tensors.

Dequantized values are checked against a deliberately naive reference: a
pure-Python bit reader/writer and per-element loops, sharing no code with
``engine.tensors``.
"""

from __future__ import annotations

import itertools
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.exceptions import ModelFormatError
from engine.proto import corral_model_pb2 as pb
from engine.tensors import (
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_RANK,
    QuantizedTensor,
    check_dims,
    dtype_from_proto,
    dtype_to_proto,
    pack_bits,
    packed_size,
    storage_kind,
    stored_nbytes,
    tensor_from_proto,
    tensor_to_proto,
    to_float_array,
    unpack_bits,
)

BITS = range(1, 9)


# ------------------------------------------------------ reference bit stream

def ref_pack(codes: list[int], bits: int) -> bytes:
    """MSB-first writer, one bit at a time."""
    stream = [(c >> (bits - 1 - k)) & 1 for c in codes for k in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return bytes(sum(b << (7 - i) for i, b in enumerate(stream[j:j + 8])) for j in range(0, len(stream), 8))


def ref_unpack(data: bytes, bits: int, count: int) -> list[int]:
    """MSB-first reader, one bit at a time."""
    out, pos = [], 0
    for _ in range(count):
        value = 0
        for _ in range(bits):
            value = (value << 1) | ((data[pos // 8] >> (7 - pos % 8)) & 1)
            pos += 1
        out.append(value)
    return out


def ref_dequantize(q: QuantizedTensor, codes: list[int]) -> np.ndarray:
    """value = float32(code * scale + bias) in float64, or palette[group][code], element by element."""
    out = np.empty(q.size, np.float32)
    entries = 1 << q.bits
    for flat, idx in enumerate(itertools.product(*[range(d) for d in q.shape])):
        along = idx[q.axis] if q.axis >= 0 else 0
        code = codes[flat]
        if q.scheme == "linear":
            scale = q.scale[along] if q.scale.size > 1 else q.scale[0]
            bias = q.bias[along] if q.bias.size > 1 else q.bias[0]
            # float64 arithmetic, one rounding to float32 (coremltools' dequantization)
            out[flat] = np.float32(float(code) * float(np.float32(scale)) + float(np.float32(bias)))
        else:
            group = along // q.group_size if q.axis >= 0 else 0
            out[flat] = q.palette[group * entries + code]
    return out.reshape(q.shape)


# ----------------------------------------------------------------- bit order

def test_one_bit_codes_fill_from_the_most_significant_bit() -> None:
    assert pack_bits(np.array([1, 0, 1, 1]), 1) == b"\xb0"


def test_three_bit_codes_straddle_byte_boundaries() -> None:
    # 5=101 3=011 7=111 -> stream 101 011 11|1 + 7 zero pad bits
    assert pack_bits(np.array([5, 3, 7]), 3) == bytes([0b10101111, 0b10000000])
    assert unpack_bits(bytes([0b10101111, 0b10000000]), 3, 3).tolist() == [5, 3, 7]


def test_eight_bit_codes_are_plain_bytes() -> None:
    assert pack_bits(np.array([0, 1, 254, 255]), 8) == b"\x00\x01\xfe\xff"


@settings(max_examples=150, deadline=None)
@given(bits=st.integers(1, 8), data=st.data())
def test_unpack_inverts_pack_for_every_width(bits: int, data: st.DataObject) -> None:
    codes = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=70))
    packed = pack_bits(np.array(codes, np.int64), bits)
    assert len(packed) == math.ceil(len(codes) * bits / 8)
    assert packed == ref_pack(codes, bits)
    assert unpack_bits(packed, bits, len(codes)).tolist() == codes
    assert ref_unpack(packed, bits, len(codes)) == codes


@pytest.mark.parametrize("bits", BITS)
def test_packed_size_is_ceiling_of_bit_count(bits: int) -> None:
    for count in (0, 1, 7, 8, 9, 1000):
        assert packed_size(count, bits) == math.ceil(count * bits / 8)


@pytest.mark.parametrize("codes, bits", [([2], 1), ([8], 3), ([256], 8), ([-1], 4)])
def test_pack_rejects_codes_that_do_not_fit(codes: list[int], bits: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        pack_bits(np.array(codes), bits)


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_bit_width_outside_1_to_8_is_rejected(bits: int) -> None:
    with pytest.raises(ValueError, match="1..8"):
        pack_bits(np.array([0]), bits)
    with pytest.raises(ValueError, match="1..8"):
        unpack_bits(b"\x00", bits, 1)


def test_unpack_rejects_wrong_byte_count() -> None:
    with pytest.raises(ValueError, match="need 2 bytes, found 1"):
        unpack_bits(b"\x00", 3, 4)


# --------------------------------------------------------- quantized tensors

def _codes(shape: tuple[int, ...], bits: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << bits, size=int(np.prod(shape))).tolist()


def _linear(shape: tuple[int, ...], bits: int, axis: int, seed: int = 0) -> tuple[QuantizedTensor, list[int]]:
    rng = np.random.default_rng(seed + 100)
    codes = _codes(shape, bits, seed)
    n = shape[axis] if axis >= 0 else 1
    q = QuantizedTensor(shape=shape, bits=bits, packed=ref_pack(codes, bits), scheme="linear", axis=axis,
                        scale=rng.uniform(0.01, 0.5, n).astype(np.float32),
                        bias=rng.uniform(-1, 1, n).astype(np.float32))
    return q, codes


def _lut(shape: tuple[int, ...], bits: int, axis: int, group_size: int = 0,
         seed: int = 0) -> tuple[QuantizedTensor, list[int]]:
    rng = np.random.default_rng(seed + 200)
    codes = _codes(shape, bits, seed)
    groups = 1 if axis < 0 else -(-shape[axis] // group_size)
    q = QuantizedTensor(shape=shape, bits=bits, packed=ref_pack(codes, bits), scheme="lut", axis=axis,
                        group_size=group_size, palette=rng.normal(size=groups << bits).astype(np.float32))
    return q, codes


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_linear_dequantize_matches_reference(bits: int, axis: int) -> None:
    q, codes = _linear((5, 3, 2), bits, axis, seed=bits)
    q.validate("test")
    assert len(q.packed) == math.ceil(30 * bits / 8)
    assert q.codes().reshape(-1).tolist() == codes
    out = q.dequantize()
    assert out.dtype == np.float32 and out.shape == (5, 3, 2)
    np.testing.assert_array_equal(out, ref_dequantize(q, codes))


def test_linear_per_axis_with_shared_bias_broadcasts() -> None:
    q, codes = _linear((4, 3), 4, 0)
    q.bias = np.array([0.25], np.float32)
    q.validate("test")
    np.testing.assert_array_equal(q.dequantize(), ref_dequantize(q, codes))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("axis, group_size", [(-1, 0), (0, 1), (0, 2), (0, 5), (1, 2)])
def test_lookup_table_dequantize_matches_reference(bits: int, axis: int, group_size: int) -> None:
    q, codes = _lut((5, 3, 2), bits, axis, group_size, seed=bits)
    q.validate("test")
    out = q.dequantize()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref_dequantize(q, codes))


def test_nbytes_counts_packed_codes_and_parameters() -> None:
    q, _ = _lut((16, 4), 3, 0, group_size=8)
    assert q.nbytes == packed_size(64, 3) + 4 * (2 * 8) + 4 * 2  # palettes + default scale/bias
    assert stored_nbytes(q) == q.nbytes
    assert storage_kind(q) == "lut3"
    assert storage_kind(_linear((2,), 5, -1)[0]) == "linear5"


@pytest.mark.parametrize("change, message", [
    ({"packed": b"\x00"}, "need 4 bytes, package holds 1"),
    ({"bits": 0}, "bits must be 1..8"),
    ({"bits": 9}, "bits must be 1..8"),
    ({"scale": np.ones(3, np.float32)}, "1 or 5 scales/biases, found 3/5"),
    ({"axis": 3}, "axis 3 out of range"),
    ({"axis": -2}, "axis -2 out of range"),
    ({"scheme": "cubic"}, "unknown quantization scheme"),
])
def test_linear_validation_names_the_problem(change: dict, message: str) -> None:
    q, _ = _linear((5, 3), 2, 0)
    for k, v in change.items():
        setattr(q, k, v)
    with pytest.raises(ModelFormatError, match=message) as err:
        q.validate("weight 'w'")
    assert str(err.value).startswith("weight 'w': ")


@pytest.mark.parametrize("change, message", [
    ({"palette": np.zeros(7, np.float32)}, "needs 3 palettes of 4 entries, found 7"),
    ({"group_size": 0}, "needs group_size > 0"),
    ({"group_size": MAX_DIM + 1}, "group size .* exceeds"),
    ({"axis": -5}, "axis -5 out of range"),
])
def test_lookup_table_validation_names_the_problem(change: dict, message: str) -> None:
    q, _ = _lut((5, 3), 2, 0, group_size=2)
    for k, v in change.items():
        setattr(q, k, v)
    with pytest.raises(ModelFormatError, match=message):
        q.validate("weight 'w'")


def test_group_size_larger_than_the_axis_means_one_palette() -> None:
    q, codes = _lut((3, 2), 2, 0, group_size=64)
    q.validate("test")
    np.testing.assert_array_equal(q.dequantize(), ref_dequantize(q, codes))


# ------------------------------------------------------------- proto storage

@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int64", "int32", "int16", "int8",
                                   "uint8", "uint16", "uint32", "uint64", "bool"])
def test_plain_tensor_round_trips_every_dtype(dtype: str) -> None:
    value = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    msg = tensor_to_proto("w", value)
    assert len(msg.raw) == value.nbytes
    back = tensor_from_proto(msg)
    assert isinstance(back, np.ndarray) and back.dtype == value.dtype and back.flags.writeable
    np.testing.assert_array_equal(back, value)


def test_raw_bytes_are_little_endian_whatever_the_input_byte_order() -> None:
    big = np.array([1.5, -2.0], dtype=">f4")
    msg = tensor_to_proto("w", big)
    assert msg.raw == np.array([1.5, -2.0], "<f4").tobytes()
    np.testing.assert_array_equal(tensor_from_proto(msg), [1.5, -2.0])


@pytest.mark.parametrize("bits", BITS)
def test_quantized_tensor_round_trips_through_proto(bits: int) -> None:
    for q, codes in (_linear((4, 3), bits, 0, seed=bits), _lut((4, 3), bits, 0, 3, seed=bits)):
        back = tensor_from_proto(tensor_to_proto("w", q))
        assert isinstance(back, QuantizedTensor)
        assert (back.shape, back.bits, back.packed, back.scheme, back.axis) == (q.shape, bits, q.packed,
                                                                                q.scheme, 0)
        np.testing.assert_array_equal(back.dequantize(), ref_dequantize(q, codes))


def test_raw_length_disagreeing_with_dims_is_rejected() -> None:
    msg = tensor_to_proto("w", np.zeros((2, 3), np.float32))
    msg.dims[1] = 4
    with pytest.raises(ModelFormatError, match=r"tensor 'w': declared shape \[2, 4\] of float32 needs 32 bytes, "
                                               r"found 24"):
        tensor_from_proto(msg)


def test_unknown_data_type_is_rejected() -> None:
    msg = tensor_to_proto("w", np.zeros(2, np.float32))
    msg.data_type = 99
    with pytest.raises(ModelFormatError, match="unknown data type code 99"):
        tensor_from_proto(msg)
    with pytest.raises(ModelFormatError, match="cannot be stored"):
        tensor_to_proto("w", np.array(["a"]))
    assert dtype_from_proto(dtype_to_proto(np.dtype("float16"), "x"), "x") == np.float16


def test_quantized_tensor_without_scheme_is_rejected() -> None:
    msg = pb.Tensor(name="w", dims=[4], data_type=pb.FLOAT32)
    msg.quantized.bits = 8
    msg.quantized.packed = b"\x00" * 4
    with pytest.raises(ModelFormatError, match="names no scheme"):
        tensor_from_proto(msg)


@pytest.mark.parametrize("dims, message", [
    ([1] * (MAX_RANK + 1), "rank 9 exceeds"),
    ([MAX_DIM + 1], "dimension 16777217 outside"),
    ([-1, 4], "dimension -1 outside"),
    ([MAX_DIM, MAX_DIM], "elements exceeds"),
    ([1 << 16, 1 << 16], "elements exceeds"),
])
def test_absurd_dims_are_rejected_before_allocating(dims: list[int], message: str) -> None:
    for quantized in (False, True):
        msg = pb.Tensor(name="w", dims=dims, data_type=pb.FLOAT32)
        if quantized:
            msg.quantized.bits = 1
            msg.quantized.linear.scale.append(1.0)
        tracemalloc.start()
        try:
            with pytest.raises(ModelFormatError, match=message):
                tensor_from_proto(msg)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20


def test_check_dims_accepts_the_limits_themselves() -> None:
    assert check_dims([MAX_DIM], "x") == (MAX_DIM,)
    assert check_dims([1 << 16, 1 << 15], "x") == (1 << 16, 1 << 15)
    assert (1 << 31) == MAX_ELEMENTS
    assert check_dims([], "x") == ()


def test_to_float_array() -> None:
    half = np.array([1.5, 2.0], np.float16)
    assert to_float_array(half).dtype == np.float32
    ints = np.array([1, 2], np.int64)
    assert to_float_array(ints) is ints
    q, codes = _linear((3,), 4, -1)
    np.testing.assert_array_equal(to_float_array(q), ref_dequantize(q, codes))


def test_linear_dequantize_rounds_once_like_coremltools() -> None:
    """code * scale + bias in float64, one rounding: differs from float32 arithmetic for some codes."""
    rng = np.random.default_rng(3)
    scale = rng.uniform(1e-3, 1.0, 64).astype(np.float32)
    bias = rng.uniform(-1, 1, 64).astype(np.float32)
    codes = rng.integers(0, 256, size=(64, 32))
    q = QuantizedTensor(shape=(64, 32), bits=8, packed=codes.astype(np.uint8).tobytes(), scheme="linear", axis=0,
                        scale=scale, bias=bias)
    once = (codes * scale[:, None].astype(np.float64) + bias[:, None].astype(np.float64)).astype(np.float32)
    twice = codes.astype(np.float32) * scale[:, None] + bias[:, None]
    assert not np.array_equal(once, twice)  # the case this test is about occurs
    np.testing.assert_array_equal(q.dequantize(), once)
