"""Resize and Upsample on tensors (mirrors engine.ops.resize and engine.ops.upsample).

Sampling positions and weights per axis come from the numpy op's own
``source_coords`` / ``taps`` (host, a few kilobytes); the tensor is then
resampled one axis at a time with gathers on the device. Every mode and
coordinate transformation is covered the same way; results per axis are
cached by shape, so steady-state runs only gather.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import DEFAULT_OPTIONS, Fallback, KernelOptions, OpT, TorchKernel, floats, host_ints
from engine.ops.base import normalize_axis
from engine.ops.interpolation import Sampling, source_coords, taps
from engine.ops.resize import Resize as ResizeOp
from engine.ops.upsample import Upsample as UpsampleOp

# (axis, index [out, n], weights [out, n] or None for one tap, outside mask [out] or None)
AxisPlan = tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class _Resample(TorchKernel[OpT]):
    def __init__(self, op: OpT, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(op, options)
        self._plans: dict[tuple, list[AxisPlan]] = {}
        self._repeats: dict[tuple, list[int]] = {}  # keys whose resize is a nearest integer repeat per axis

    def resample(self, x: torch.Tensor, s: Sampling, out_sizes: list[int], scales: list[float],
                 rois: list[tuple[float, float] | None]) -> torch.Tensor:
        dims = [int(d) for d in x.shape]  # plain ints, also while torch.jit traces
        out_sizes = [int(d) for d in out_sizes]
        key = (tuple(dims), tuple(out_sizes), tuple(scales), tuple(rois), x.device, x.dtype)
        plans = self._plans.get(key)
        if plans is None:
            plans = self._plan(dims, x, s, out_sizes, scales, rois)
            if len(self._plans) > 32:
                self._plans.clear()
                self._repeats.clear()
            self._plans[key] = plans
            repeats = [1] * x.ndim
            for axis, idx, weights, outside in plans:
                n = idx.shape[0]
                f = n // dims[axis] if dims[axis] and n % dims[axis] == 0 else 0
                same = (weights is None and outside is None and f > 0 and idx.shape[1] == 1
                        and torch.equal(idx[:, 0].cpu(), torch.arange(n) // f))
                repeats[axis] = f if same else 0
            if plans and all(repeats):
                self._repeats[key] = repeats
        if not plans:
            return x.clone()
        factors = self._repeats.get(key)
        if factors is not None:  # nearest integer upscale: no gathers
            if 3 <= x.ndim <= 5 and factors[0] == factors[1] == 1:
                # torch's nearest picks floor(out * in / size) = out // f: the same pixels
                return F.interpolate(x, size=out_sizes[2:], mode="nearest")
            shape = [d for size, f in zip(dims, factors) for d in (size, f)]
            view = x.reshape([d for size in dims for d in (size, 1)]).expand(shape)
            return view.reshape([size * f for size, f in zip(dims, factors)])
        work = x if x.dtype != torch.float16 else x.float()  # half computes through float32, as numpy does
        for axis, idx, weights, _ in plans:
            if weights is None:
                work = torch.index_select(work, axis, idx[:, 0])
                continue
            along = (-1,) + (1,) * (work.ndim - axis - 1)  # weights broadcast over the later axes
            acc = torch.index_select(work, axis, idx[:, 0]) * weights[:, 0].reshape(along)
            for t in range(1, idx.shape[1]):
                acc.add_(torch.index_select(work, axis, idx[:, t]) * weights[:, t].reshape(along))
            work = acc
        masks = [(axis, o) for axis, _, _, o in plans if o is not None]
        if masks:
            outside = torch.zeros(work.shape, dtype=torch.bool, device=work.device)
            for axis, o in masks:
                outside |= o.reshape((-1,) + (1,) * (work.ndim - axis - 1))
            work = work.masked_fill(outside, s.extrapolation_value)
        return work.to(x.dtype)

    @staticmethod
    def _plan(dims: list[int], x: torch.Tensor, s: Sampling, out_sizes: list[int], scales: list[float],
              rois: list[tuple[float, float] | None]) -> list[AxisPlan]:
        dtype = torch.float32 if x.dtype == torch.float16 else x.dtype
        plans: list[AxisPlan] = []
        for axis, (in_len, out_len) in enumerate(zip(dims, out_sizes)):
            roi = rois[axis]
            trivial_roi = roi is None or s.coordinate_mode != "tf_crop_and_resize" or tuple(roi) == (0.0, 1.0)
            if out_len == in_len and scales[axis] == 1.0 and trivial_roi:
                continue
            coords, outside = source_coords(s, out_len, in_len, scales[axis], roi)
            idx, weights = taps(s, coords, in_len, scales[axis])
            keep = np.flatnonzero(np.any(weights != 0, axis=0)) if idx.shape[1] > 1 else np.arange(1)
            idx, weights = idx[:, keep], weights[:, keep]
            plans.append((axis, torch.as_tensor(idx.astype(np.int64), device=x.device),
                          None if s.mode == "nearest" else torch.as_tensor(weights, device=x.device).to(dtype),
                          None if outside is None or not outside.any()
                          else torch.as_tensor(outside, device=x.device)))
        return plans


class Resize(_Resample[ResizeOp]):
    def run(self, x: Any, roi: Any = None, scales: Any = None, sizes: Any = None) -> torch.Tensor:
        floats(x)
        op = self.op
        if op.legacy:
            roi, scales, sizes = None, roi, None
        rank = x.ndim
        axes = [normalize_axis(a, rank) for a in op.axes] if op.axes else list(range(rank))
        scale_vals = None if scales is None or _size(scales) == 0 else [float(v) for v in _host(scales)]
        size_vals = None if sizes is None or _size(sizes) == 0 else host_ints(sizes)
        if (scale_vals is None) == (size_vals is None) or len(set(axes)) != len(axes):
            raise Fallback
        given = scale_vals if scale_vals is not None else size_vals
        assert given is not None  # exactly one of the two, checked above
        if len(given) != len(axes):
            raise Fallback
        full_scales = [1.0] * rank
        out_sizes = [int(d) for d in x.shape]
        if scale_vals is not None:
            if any(v <= 0 for v in scale_vals):
                raise Fallback
            for a, v in zip(axes, scale_vals):
                full_scales[a], out_sizes[a] = v, int(v * x.shape[a])
        else:
            assert size_vals is not None
            if any(v < 0 for v in size_vals):
                raise Fallback
            ratios = [v / x.shape[a] for a, v in zip(axes, size_vals)]
            if op.policy == "stretch":
                for a, v, r in zip(axes, size_vals, ratios):
                    full_scales[a], out_sizes[a] = r, v
            else:
                r = min(ratios) if op.policy == "not_larger" else max(ratios)
                for a in axes:
                    full_scales[a], out_sizes[a] = r, int(r * x.shape[a] + 0.5)
        rois: list[tuple[float, float] | None] = [None] * rank
        if roi is not None and _size(roi) and op.sampling.coordinate_mode == "tf_crop_and_resize":
            values = _host(roi).astype(np.float64)
            if values.size != 2 * len(axes):
                raise Fallback
            for i, a in enumerate(axes):
                rois[a] = (float(values[i]), float(values[i + len(axes)]))
        if 0 in out_sizes:
            return x.new_empty(out_sizes)
        return self.resample(x, op.sampling, out_sizes, full_scales, rois)


class Upsample(_Resample[UpsampleOp]):
    def run(self, x: Any, scales: Any = None) -> torch.Tensor:
        floats(x)
        values = [float(v) for v in _host(scales)] if scales is not None else self.op.attr_scales
        if values is None or len(values) != x.ndim or any(v < 1 for v in values):
            raise Fallback
        sizes = [int(v * n) for v, n in zip(values, x.shape)]
        return self.resample(x, self.op.sampling, sizes, values, [None] * x.ndim)


def _host(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value).reshape(-1)


def _size(value: Any) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else int(np.size(value))
