"""Weight quantization: float16, 1–8-bit linear, 1–8-bit lookup table; and 8-bit compute (``int8``).

    from engine.quantize import QuantizeOptions, quantize_model
    small = quantize_model(model, QuantizeOptions(mode="lut", bits=4))
    fast = quantize_model(model, QuantizeOptions(mode="int8"), calibration=CalibrationSet.from_images(model, files))

``int8`` is not a storage format but a graph that computes in 8 bits
(:mod:`engine.quantize.int8`); it needs a calibration set.

Which weights are touched is decided in :mod:`engine.quantize.selection`;
the storage is :class:`engine.tensors.QuantizedTensor` (MSB-first packing).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine.exceptions import EngineError
from engine.graph import Graph, Model
from engine.quantize.calibration import CalibrationSet
from engine.quantize.fp16 import Float16RangeError, to_float16
from engine.quantize.linear import linear_quantize
from engine.quantize.lut import PALETTE_METHODS, PaletteMethod, lut_quantize
from engine.quantize.selection import Selector, output_channel_axis
from engine.tensors import Weight

Mode = Literal["fp16", "linear", "lut", "int8"]
MODES: tuple[str, ...] = ("fp16", "linear", "lut", "int8")
DEFAULT_MIN_SIZE = 1024

__all__ = ["MODES", "PALETTE_METHODS", "CalibrationSet", "Float16RangeError", "QuantizeOptions", "QuantizeReport",
           "quantize_model", "quantize_weight"]


@dataclass
class QuantizeOptions:
    """How to quantize.

    ``granularity``: linear — one (scale, bias) per output channel or per
    tensor; lut — ``per-channel`` with ``group_size`` G gives one palette per G
    output channels, ``per-tensor`` (the lut default) one palette in all.
    ``min_size``: smallest tensor (elements) worth quantizing; None means 1024
    for linear/lut and 0 for fp16. ``quantize_params`` also quantizes biases
    and normalization parameters (fp16 converts them by default).
    """

    mode: Mode = "linear"
    bits: int = 8
    granularity: Literal["per-channel", "per-tensor"] | None = None
    symmetric: bool = False
    group_size: int = 0
    palette: PaletteMethod = "auto"
    min_size: int | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    include_ops: Sequence[str] = ()
    exclude_ops: Sequence[str] = ()
    quantize_params: bool | None = None
    # int8: how activation ranges are taken from the calibration set (see engine.quantize.int8.METHODS)
    calibration_method: str = "minmax"

    def check(self) -> None:
        if self.mode not in MODES:
            raise EngineError(f"unknown quantization mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "int8":
            from engine.quantize.int8 import METHODS

            if self.calibration_method not in METHODS:
                raise EngineError(f"unknown calibration method {self.calibration_method!r}; choose one of "
                                  f"{', '.join(METHODS)}")
            return
        if self.mode != "fp16" and not 1 <= self.bits <= 8:
            raise EngineError(f"--bits must be 1..8 for {self.mode} quantization, got {self.bits}")
        if self.palette not in PALETTE_METHODS:
            raise EngineError(f"unknown palette method {self.palette!r}; choose one of {', '.join(PALETTE_METHODS)}")
        if self.group_size < 0:
            raise EngineError(f"--group-size must be >= 0, got {self.group_size}")
        if self.granularity not in (None, "per-channel", "per-tensor"):
            raise EngineError(f"unknown granularity {self.granularity!r}; use per-channel or per-tensor")

    @property
    def per_channel(self) -> bool:
        if self.granularity is None:
            # linear defaults to per channel; lut to per tensor unless groups are asked for
            return self.mode == "linear" or self.group_size > 0
        return self.granularity == "per-channel"

    def selector(self) -> Selector:
        min_size = self.min_size if self.min_size is not None else (0 if self.mode == "fp16" else DEFAULT_MIN_SIZE)
        params = self.quantize_params if self.quantize_params is not None else self.mode == "fp16"
        return Selector(min_size=min_size, include=tuple(self.include), exclude=tuple(self.exclude),
                        include_ops=tuple(self.include_ops), exclude_ops=tuple(self.exclude_ops),
                        quantize_params=params)

    def label(self) -> str:
        return self.mode if self.mode in ("fp16", "int8") else f"{self.mode}{self.bits}"


@dataclass
class QuantizeReport:
    """What happened to every float weight: quantized (with its error) or skipped (with why)."""

    quantized: dict[str, float] = field(default_factory=dict)  # name -> weight MSE
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason

    @property
    def count(self) -> int:
        return len(self.quantized)


def quantize_weight(values: np.ndarray, options: QuantizeOptions, axis: int = 0, name: str = "weight") -> Weight:
    """One array in the storage ``options`` ask for; ``axis`` indexes its output channels."""
    if options.mode == "fp16":
        return to_float16(values, name)
    axis = axis if options.per_channel and np.ndim(values) >= 1 else -1
    if options.mode == "linear":
        return linear_quantize(values, options.bits, axis=axis, symmetric=options.symmetric)
    group = (options.group_size or 1) if axis >= 0 else 0
    return lut_quantize(values, options.bits, method=options.palette, axis=axis, group_size=group)


def quantize_model(model: Model, options: QuantizeOptions, report: QuantizeReport | None = None,
                   calibration: CalibrationSet | None = None) -> Model:
    """A copy of ``model`` with the selected weights quantized; ``model`` is left unchanged.

    ``int8`` needs ``calibration`` (the other modes ignore it).
    """
    options.check()
    if options.mode == "int8":
        return _int8(model, options, report, calibration)
    selector = options.selector()
    uses = selector.uses(model)
    report = report if report is not None else QuantizeReport()
    weights: dict[str, Weight] = dict(model.graph.initializers)
    for name, value in model.graph.initializers.items():
        reason = selector.decide(name, value, uses.get(name, []))
        if reason is not None:
            report.skipped[name] = reason
            continue
        assert isinstance(value, np.ndarray)
        stored = quantize_weight(value.astype(np.float32), options,
                                 axis=output_channel_axis(value, uses[name]), name=name)
        restored = stored.astype(np.float32) if isinstance(stored, np.ndarray) else stored.dequantize()
        report.quantized[name] = float(np.mean((restored - value) ** 2)) if value.size else 0.0
        weights[name] = stored
    graph = Graph(nodes=copy.deepcopy(model.graph.nodes), initializers=weights)
    description = copy.deepcopy(model.description)
    description.metadata.user = {**description.metadata.user, "corral.quantization": options.label()}
    return Model(description=description, graph=graph)


def _int8(model: Model, options: QuantizeOptions, report: QuantizeReport | None,
          calibration: CalibrationSet | None) -> Model:
    from engine.quantize.int8 import quantize_int8

    if calibration is None:
        raise EngineError(f"int8 computes activations in 8 bits too, so it is made from calibration images: "
                          f"give some that look like {model.name!r}'s real inputs (--calibration DIR)")
    errors: dict[str, float] = {}
    quantized = quantize_int8(model, calibration, options.calibration_method, errors)
    if report is not None:
        report.quantized.update(errors)
    return quantized
