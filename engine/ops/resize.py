"""Resize (opsets 10-19): nearest, linear and cubic over any axes, every coordinate mode, antialias."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op, as_int_list, normalize_axis
from engine.ops.interpolation import Sampling, resize

POLICIES = ("stretch", "not_larger", "not_smaller")


def _text(value: object, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


class Resize(Op):
    """ONNX Resize. Inputs ``X``, ``roi``, ``scales``, ``sizes`` (opset 11+), or ``X, scales`` (opset 10).

    Exactly one of ``scales`` and ``sizes`` is given; with ``axes`` (opset 18)
    they list only those axes. ``keep_aspect_ratio_policy`` applies to
    ``sizes``. A nearest integer upscale is a single broadcast copy; other
    cases take one vectorized gather-and-weight pass per tap and resized axis.
    """

    op_type = "Resize"
    min_inputs = 2
    max_inputs = 4

    def setup(self, node: Node) -> None:
        self.sampling = Sampling(
            mode=_text(self.attr("mode"), "nearest"),
            coordinate_mode=_text(self.attr("coordinate_transformation_mode"), "half_pixel"),
            nearest_mode=_text(self.attr("nearest_mode"), "round_prefer_floor"),
            cubic_coeff_a=float(self.attr("cubic_coeff_a", -0.75)),
            exclude_outside=bool(int(self.attr("exclude_outside", 0))),
            extrapolation_value=float(self.attr("extrapolation_value", 0.0)),
            antialias=bool(int(self.attr("antialias", 0))),
        )
        self.sampling.check()
        if self.sampling.antialias and self.sampling.mode == "nearest":
            raise ValueError("antialias applies to linear and cubic modes only")
        self.policy = _text(self.attr("keep_aspect_ratio_policy"), "stretch")
        if self.policy not in POLICIES:
            raise ValueError(f"keep_aspect_ratio_policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        self.axes = as_int_list(self.attr("axes"))
        # opset 10 has two inputs: X and scales
        self.legacy = len([i for i in node.inputs if i]) == 2 and len(node.inputs) == 2

    def run(self, x: Array, roi: Array | None = None, scales: Array | None = None,
            sizes: Array | None = None) -> Array:
        if self.legacy:
            roi, scales, sizes = None, roi, None
        rank = x.ndim
        axes = [normalize_axis(a, rank) for a in self.axes] if self.axes else list(range(rank))
        if len(set(axes)) != len(axes):
            raise ValueError(f"axes {self.axes} repeat an axis")
        scale_vals = None if scales is None or np.size(scales) == 0 else [float(v) for v in np.asarray(
            scales).reshape(-1)]
        size_vals = None if sizes is None or np.size(sizes) == 0 else as_int_list(sizes)
        given = scale_vals if scale_vals is not None else size_vals
        if given is None or (scale_vals is not None and size_vals is not None):
            raise ValueError("give exactly one of scales and sizes")
        if len(given) != len(axes):
            raise ValueError(f"{'scales' if scale_vals is not None else 'sizes'} has {len(given)} values "
                             f"for {len(axes)} axes")
        full_scales = [1.0] * rank
        out_sizes = list(x.shape)
        if scale_vals is not None:
            if any(v <= 0 for v in scale_vals):
                raise ValueError(f"scales must be positive, got {scale_vals}")
            for a, v in zip(axes, scale_vals):
                full_scales[a] = v
                out_sizes[a] = int(v * x.shape[a])
        else:
            assert size_vals is not None
            if any(v < 0 for v in size_vals):
                raise ValueError(f"sizes must not be negative, got {size_vals}")
            ratios = [v / x.shape[a] for a, v in zip(axes, size_vals)]
            if self.policy == "stretch":
                for a, v, r in zip(axes, size_vals, ratios):
                    full_scales[a], out_sizes[a] = r, v
            else:
                r = min(ratios) if self.policy == "not_larger" else max(ratios)
                for a in axes:
                    full_scales[a], out_sizes[a] = r, int(r * x.shape[a] + 0.5)
        rois: list[tuple[float, float] | None] = [None] * rank
        if roi is not None and np.size(roi) and self.sampling.coordinate_mode == "tf_crop_and_resize":
            values = np.asarray(roi, dtype=np.float64).reshape(-1)
            if values.size != 2 * len(axes):
                raise ValueError(f"roi has {values.size} values; {len(axes)} axes need {2 * len(axes)}")
            for i, a in enumerate(axes):
                rois[a] = (float(values[i]), float(values[i + len(axes)]))
        if any(o == 0 for o in out_sizes):
            return np.empty(out_sizes, dtype=x.dtype)
        return resize(x, self.sampling, out_sizes, full_scales, rois)
