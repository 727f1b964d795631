"""Linear (affine) quantization: value = code * scale + bias, codes 0 .. 2**bits - 1.

Per tensor (``axis`` < 0) or per index along ``axis`` (output channels).
Affine maps each slice's [min, max] onto the code range; symmetric maps
[-max|w|, +max|w|] instead, as Core ML's ``linear_symmetric`` mode does, so the
grid is symmetric about zero (zero itself falls midway between two codes when
the code count is even).
"""

from __future__ import annotations

import numpy as np

from engine.tensors import QuantizedTensor, pack_bits


def _slices(values: np.ndarray, axis: int) -> np.ndarray:
    """``values`` as [slices, elements]: one row per index along ``axis`` (one row when axis < 0)."""
    if axis < 0:
        return values.reshape(1, -1)
    moved = np.moveaxis(values, axis, 0)
    return moved.reshape(moved.shape[0], int(np.prod(moved.shape[1:], dtype=np.int64)))


def linear_quantize(values: np.ndarray, bits: int, axis: int = 0, symmetric: bool = False) -> QuantizedTensor:
    """Quantize a float array to ``bits``-bit linear codes; ``axis`` < 0 for one scale per tensor."""
    if not 1 <= bits <= 8:
        raise ValueError(f"linear quantization takes 1..8 bits, got {bits}")
    values = np.asarray(values, np.float32)
    if values.ndim == 0:
        axis = -1
    rows = _slices(values, axis).astype(np.float64)  # [S, E]
    lo = rows.min(axis=1) if rows.size else np.zeros(len(rows))
    hi = rows.max(axis=1) if rows.size else np.zeros(len(rows))
    if symmetric:
        hi = np.maximum(np.abs(lo), np.abs(hi))
        lo = -hi
    levels = (1 << bits) - 1
    scale = ((hi - lo) / levels).astype(np.float32)  # [S]
    bias = lo.astype(np.float32)
    # divide by the float32 scale actually stored, so codes match what dequantizes
    safe = np.where(scale > 0, scale, 1.0).astype(np.float64)
    codes = np.rint((rows - bias[:, None]) / safe[:, None])
    codes = np.clip(codes, 0, levels).astype(np.uint8)  # [S, E]
    if axis >= 0:
        codes = np.moveaxis(codes.reshape(np.moveaxis(values, axis, 0).shape), 0, axis)
    return QuantizedTensor(shape=tuple(values.shape), bits=bits, packed=pack_bits(codes.reshape(-1), bits),
                           scheme="linear", axis=axis if axis >= 0 else -1, scale=scale, bias=bias)
