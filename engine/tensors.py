"""Tensor storage: dtypes, MSB-first bit packing, quantized tensors.

Weights live in a model either as plain arrays (float32, float16, integer)
or as a :class:`QuantizedTensor` holding packed integer codes and the
linear or lookup-table parameters that map codes back to floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.exceptions import ModelFormatError
from engine.proto import corral_model_pb2 as pb

DTYPE_TO_PROTO: dict[np.dtype, pb.DataType] = {
    np.dtype(np.float32): pb.FLOAT32,
    np.dtype(np.float16): pb.FLOAT16,
    np.dtype(np.float64): pb.FLOAT64,
    np.dtype(np.int64): pb.INT64,
    np.dtype(np.int32): pb.INT32,
    np.dtype(np.int16): pb.INT16,
    np.dtype(np.int8): pb.INT8,
    np.dtype(np.uint8): pb.UINT8,
    np.dtype(np.uint16): pb.UINT16,
    np.dtype(np.uint32): pb.UINT32,
    np.dtype(np.uint64): pb.UINT64,
    np.dtype(np.bool_): pb.BOOL,
}
PROTO_TO_DTYPE: dict[int, np.dtype] = {v: k for k, v in DTYPE_TO_PROTO.items()}


def dtype_from_proto(code: int, where: str) -> np.dtype:
    try:
        return PROTO_TO_DTYPE[code]
    except KeyError:
        raise ModelFormatError(f"{where}: unknown data type code {code}") from None


def dtype_to_proto(dtype: np.dtype, where: str) -> pb.DataType:
    try:
        # byte order does not matter here: tensors are always stored little-endian
        return DTYPE_TO_PROTO[np.dtype(dtype).newbyteorder("=")]
    except KeyError:
        raise ModelFormatError(f"{where}: data type {dtype} cannot be stored") from None


# Limits applied when reading a package, so that a hostile file cannot make
# the loader allocate without bound.
MAX_RANK = 8
MAX_DIM = 1 << 24
MAX_ELEMENTS = 1 << 31


def check_dims(dims: list[int] | tuple[int, ...], where: str) -> tuple[int, ...]:
    """``dims`` as a tuple, or ModelFormatError when rank, a dimension or the element count is absurd."""
    if len(dims) > MAX_RANK:
        raise ModelFormatError(f"{where}: rank {len(dims)} exceeds the limit of {MAX_RANK}")
    total = 1
    for d in dims:
        if d < 0 or d > MAX_DIM:
            raise ModelFormatError(f"{where}: dimension {d} outside 0..{MAX_DIM}")
        total *= d
    if total > MAX_ELEMENTS:
        raise ModelFormatError(f"{where}: {total} elements exceeds the limit of {MAX_ELEMENTS}")
    return tuple(int(d) for d in dims)


def packed_size(count: int, bits: int) -> int:
    """Bytes needed for ``count`` codes of ``bits`` bits."""
    return (count * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integer codes (< 2**bits) MSB-first into bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    codes = np.asarray(codes).reshape(-1)
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= (1 << bits)):
        bad = int(codes.min()) if int(codes.min()) < 0 else int(codes.max())
        raise ValueError(f"code {bad} does not fit in {bits} unsigned bits")
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    # [count, bits] matrix of bits, most significant first, then one packbits
    # over the flattened stream gives exactly the MSB-first layout.
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    bit_matrix = (codes.astype(np.uint8)[:, None] >> shifts) & 1
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` codes as uint8."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    need = packed_size(count, bits)
    if len(data) != need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, found {len(data)}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw.copy()
    stream = np.unpackbits(raw)[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint8)
    return (stream * weights).sum(axis=1, dtype=np.uint8)


@dataclass
class QuantizedTensor:
    """Packed 1–8-bit codes plus the parameters that dequantize them.

    ``scheme`` is ``"linear"`` (value = code * scale + bias, computed in
    float64 and rounded once to float32 as coremltools does; per tensor when
    ``axis`` < 0 else per index along ``axis``) or ``"lut"`` (value =
    palette[group][code]; slices along ``axis`` grouped ``group_size`` at a
    time; one palette when ``axis`` < 0).
    """

    shape: tuple[int, ...]
    bits: int
    packed: bytes
    scheme: Literal["linear", "lut"]
    axis: int = -1
    scale: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))
    palette: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    group_size: int = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Stored bytes: packed codes plus parameters."""
        return len(self.packed) + 4 * (self.scale.size + self.bias.size + self.palette.size)

    def validate(self, where: str) -> None:
        if not 1 <= self.bits <= 8:
            raise ModelFormatError(f"{where}: quantized bits must be 1..8, got {self.bits}")
        if len(self.packed) != packed_size(self.size, self.bits):
            raise ModelFormatError(
                f"{where}: {self.size} codes of {self.bits} bits need {packed_size(self.size, self.bits)} "
                f"bytes, package holds {len(self.packed)}")
        if not -1 <= self.axis < len(self.shape):
            raise ModelFormatError(f"{where}: quantization axis {self.axis} out of range for shape {self.shape} "
                                   "(use -1 for one set of parameters for the whole tensor)")
        slices = self.shape[self.axis] if self.axis >= 0 else 1
        if self.scheme == "linear":
            if self.scale.size not in (1, slices) or self.bias.size not in (1, slices):
                raise ModelFormatError(
                    f"{where}: linear quantization needs 1 or {slices} scales/biases, "
                    f"found {self.scale.size}/{self.bias.size}")
        elif self.scheme == "lut":
            if self.group_size > MAX_DIM:
                raise ModelFormatError(f"{where}: lookup-table group size {self.group_size} exceeds {MAX_DIM}")
            groups = 1 if self.axis < 0 else -(-slices // max(self.group_size, 1))
            if self.axis >= 0 and self.group_size <= 0:
                raise ModelFormatError(f"{where}: grouped lookup table needs group_size > 0")
            if self.palette.size != groups * (1 << self.bits):
                raise ModelFormatError(
                    f"{where}: lookup table needs {groups} palettes of {1 << self.bits} entries, "
                    f"found {self.palette.size} entries")
        else:
            raise ModelFormatError(f"{where}: unknown quantization scheme {self.scheme!r}")

    def codes(self) -> np.ndarray:
        return unpack_bits(self.packed, self.bits, self.size).reshape(self.shape)

    def dequantize(self) -> np.ndarray:
        """The float32 array these codes stand for."""
        codes = self.codes()
        if self.scheme == "linear":
            # float64 then one rounding to float32, as coremltools dequantizes:
            # a code (< 256) times a float32 scale is exact in float64, so only
            # the sum rounds before the final cast.
            scale = self.scale.astype(np.float32).astype(np.float64)
            bias = self.bias.astype(np.float32).astype(np.float64)
            if self.axis < 0:
                return (codes * scale[0] + bias[0]).astype(np.float32)
            bshape = [1] * len(self.shape)
            bshape[self.axis] = -1
            scale = np.broadcast_to(scale, (self.shape[self.axis],)).reshape(bshape)
            bias = np.broadcast_to(bias, (self.shape[self.axis],)).reshape(bshape)
            return (codes * scale + bias).astype(np.float32)
        entries = 1 << self.bits
        palettes = self.palette.astype(np.float32).reshape(-1, entries)
        if self.axis < 0:
            return palettes[0][codes]
        # group index of every element, broadcast from its position along axis
        gshape = [1] * len(self.shape)
        gshape[self.axis] = -1
        group = (np.arange(self.shape[self.axis]) // self.group_size).reshape(gshape)
        return palettes[np.broadcast_to(group, self.shape), codes]


Weight = np.ndarray | QuantizedTensor


def to_float_array(value: Weight) -> np.ndarray:
    """Dequantize a stored weight into the array the backends compute with."""
    if isinstance(value, QuantizedTensor):
        return value.dequantize()
    if value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def storage_kind(value: Weight) -> str:
    """A short label for reports: ``float32``, ``float16``, ``linear4``, ``lut3`` …"""
    if isinstance(value, QuantizedTensor):
        return f"{value.scheme}{value.bits}"
    return str(value.dtype)


def stored_nbytes(value: Weight) -> int:
    return value.nbytes if isinstance(value, QuantizedTensor) else int(value.nbytes)


def tensor_to_proto(name: str, value: Weight) -> pb.Tensor:
    msg = pb.Tensor(name=name)
    if isinstance(value, QuantizedTensor):
        msg.dims.extend(value.shape)
        msg.data_type = pb.FLOAT32
        q = msg.quantized
        q.bits = value.bits
        q.packed = value.packed
        if value.scheme == "linear":
            q.linear.axis = value.axis
            q.linear.scale.extend(value.scale.astype(np.float32).tolist())
            q.linear.bias.extend(value.bias.astype(np.float32).tolist())
        else:
            q.lookup_table.axis = value.axis
            q.lookup_table.group_size = value.group_size
            q.lookup_table.palette.extend(value.palette.astype(np.float32).tolist())
        return msg
    arr = np.asarray(value)
    msg.dims.extend(arr.shape)
    msg.data_type = dtype_to_proto(arr.dtype, f"tensor {name!r}")
    msg.raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return msg


def tensor_from_proto(msg: pb.Tensor, where: str = "") -> Weight:
    where = where or f"tensor {msg.name!r}"
    shape = check_dims(list(msg.dims), where)
    count = int(np.prod(shape, dtype=np.int64))
    storage = msg.WhichOneof("storage")
    if storage == "quantized":
        q = msg.quantized
        scheme_kind = q.WhichOneof("scheme")
        if scheme_kind == "linear":
            qt = QuantizedTensor(shape=shape, bits=q.bits, packed=q.packed, scheme="linear", axis=q.linear.axis,
                                 scale=np.array(q.linear.scale, np.float32), bias=np.array(q.linear.bias, np.float32))
        elif scheme_kind == "lookup_table":
            qt = QuantizedTensor(shape=shape, bits=q.bits, packed=q.packed, scheme="lut", axis=q.lookup_table.axis,
                                 group_size=q.lookup_table.group_size,
                                 palette=np.array(q.lookup_table.palette, np.float32))
        else:
            raise ModelFormatError(f"{where}: quantized tensor names no scheme (linear or lookup_table)")
        qt.validate(where)
        return qt
    dtype = dtype_from_proto(msg.data_type, where)
    data = msg.raw if storage == "raw" else b""
    if len(data) != count * dtype.itemsize:
        raise ModelFormatError(
            f"{where}: declared shape {list(shape)} of {dtype} needs {count * dtype.itemsize} bytes, "
            f"found {len(data)}")
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
