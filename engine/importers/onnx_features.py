"""Typed inputs and outputs for an imported ONNX model: images, arrays, flexible shapes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from engine.description import ColorLayout, ShapeSpec
from engine.exceptions import ModelImportError
from engine.importers.onnx_graph import numpy_dtype

# Default height and width for an image input whose spatial size the file
# leaves symbolic and the caller does not fix.
DEFAULT_SPATIAL = 256

Range = tuple[int, int | None]


@dataclass
class TensorInfo:
    """An ONNX graph input or output: name, element type, dims (None: symbolic; dims None: rank unknown)."""

    name: str
    dtype: np.dtype
    dims: list[int | None] | None

    @property
    def batch_candidate(self) -> bool:
        """True when the leading dimension could be a batch: 1 or symbolic, on a tensor of rank >= 2."""
        return self.dims is not None and len(self.dims) >= 2 and self.dims[0] in (1, None)


def tensor_info(onnx: ModuleType, value_info: Any, where: str) -> TensorInfo:
    where = f"{where} {value_info.name!r}"
    kind = value_info.type.WhichOneof("value")
    if kind is None:  # untyped (allowed for outputs): assume float32 of unknown rank
        return TensorInfo(value_info.name, np.dtype(np.float32), None)
    if kind != "tensor_type":
        raise ModelImportError(f"{where} is a {kind.removesuffix('_type')}; corral's inputs and outputs are tensors")
    tt = value_info.type.tensor_type
    dtype = numpy_dtype(onnx, tt.elem_type, where) if tt.elem_type else np.dtype(np.float32)
    if not tt.HasField("shape"):
        return TensorInfo(value_info.name, dtype, None)
    dims: list[int | None] = []
    for d in tt.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None)
    return TensorInfo(value_info.name, dtype, dims)


def per_channel(values: float | Sequence[float], channels: int, what: str, where: str) -> tuple[float, ...]:
    # float32, as the package stores them, so a saved model reads back equal.
    arr = np.atleast_1d(np.asarray(values, np.float32)).reshape(-1)
    if arr.size not in (1, channels):
        raise ModelImportError(f"{where}: {arr.size} {what} values for {channels} channels; give 1 or {channels}")
    return tuple(float(v) for v in arr)


def image_layout(info: TensorInfo, requested: ColorLayout | None, where: str) -> tuple[ColorLayout, int]:
    """Colour layout and channel count of an image tensor ``[N, C, H, W]``."""
    if info.dims is None or len(info.dims) != 4:
        shape = "unknown rank" if info.dims is None else f"shape {info.dims}"
        raise ModelImportError(f"{where}: an image tensor must be [N, C, H, W], the file declares {shape}")
    channels = info.dims[1]
    if channels is None:
        channels = 1 if requested == "GRAY" else 3
    if channels == 1:
        if requested not in (None, "GRAY"):
            raise ModelImportError(f"{where}: has 1 channel, so its colour layout is GRAY, not {requested}")
        return "GRAY", 1
    if channels == 3:
        if requested == "GRAY":
            raise ModelImportError(f"{where}: has 3 channels; choose RGB or BGR, not GRAY")
        return requested or "RGB", 3
    raise ModelImportError(f"{where}: has {channels} channels; an image needs 1 (GRAY) or 3 (RGB/BGR)")


def _clamp(value: int, lo: int, hi: int | None) -> int:
    return max(lo, value if hi is None else min(value, hi))


def image_shape(channels: int, file_hw: tuple[int | None, int | None], sizes: Sequence[tuple[int, int]],
                height_range: Range | None, width_range: Range | None, default_size: tuple[int, int] | None,
                where: str) -> ShapeSpec:
    """Allowed item shapes ``(C, H, W)`` of an image input.

    Enumerated ``sizes`` or ``height_range``/``width_range`` win; otherwise
    symbolic spatial dims get the range 1..unbounded and fixed ones stay fixed.
    The default is ``default_size``, else the file's size, else the first
    enumerated size, else 256 clamped into the range.
    """
    if sizes and (height_range or width_range):
        raise ModelImportError(f"{where}: give either enumerated sizes or height/width ranges, not both")
    if sizes:
        enumerated = [(channels, int(h), int(w)) for h, w in sizes]
        if default_size is not None:
            default = (channels, *map(int, default_size))
        elif None not in file_hw and (channels, *file_hw) in enumerated:
            default = (channels, *file_hw)  # type: ignore[assignment]
        else:
            default = enumerated[0]
        if default not in enumerated:
            raise ModelImportError(f"{where}: default size {default[1:]} is not one of the enumerated sizes {sizes}")
        return ShapeSpec(default=default, enumerated=list(dict.fromkeys([default, *enumerated])))
    ranges: list[Range] = []
    for dim, given in zip(file_hw, (height_range, width_range)):
        if given is not None:
            lo, hi = int(given[0]), None if given[1] is None else int(given[1])
            if lo < 1 or (hi is not None and hi < lo):
                raise ModelImportError(f"{where}: invalid size range {given}; need 1 <= lower <= upper")
            ranges.append((lo, hi))
        else:
            ranges.append((1, None) if dim is None else (dim, dim))
    if default_size is not None:
        hw = tuple(int(v) for v in default_size)
    else:
        hw = tuple(dim if dim is not None and lo <= dim and (hi is None or dim <= hi) else _clamp(DEFAULT_SPATIAL, lo, hi)
                   for dim, (lo, hi) in zip(file_hw, ranges))
    flexible = any(lo != hi for lo, hi in ranges)
    spec = ShapeSpec(default=(channels, *hw), ranges=[(channels, channels), *ranges] if flexible else [])
    if flexible and not spec.allows(spec.default):
        raise ModelImportError(f"{where}: default size {hw} is outside the allowed sizes {spec.describe()}")
    return spec


def array_shape(dims: Sequence[int | None]) -> ShapeSpec:
    """Item shape of an array: symbolic dims default to 1 and range over 1..unbounded."""
    default = tuple(1 if d is None else d for d in dims)
    if all(d is not None for d in dims):
        return ShapeSpec(default=default)
    return ShapeSpec(default=default, ranges=[(1, None) if d is None else (d, d) for d in dims])


def probe_hw(spec: ShapeSpec, target: int = 64) -> tuple[int, int]:
    """A small allowed (H, W) to run the batch check at."""
    if spec.enumerated:
        shape = min(spec.planned_shapes(), key=lambda s: s[1] * s[2])
        return shape[1], shape[2]
    if spec.ranges:
        return _clamp(target, *spec.ranges[1]), _clamp(target, *spec.ranges[2])
    return spec.default[1], spec.default[2]
