"""MaxPool and AveragePool over N spatial axes: one vectorized pass per kernel tap."""

from __future__ import annotations

from math import prod

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op
from engine.ops.conv_kernels import pad_input
from engine.ops.spatial import Window, WindowAttrs


def _tap_view(xp: Array, tap: tuple[int, ...], window: Window, out_sp: list[int]) -> Array:
    """The input element each output position reads at kernel tap ``tap`` (a strided view)."""
    index = [slice(None), slice(None)]
    for a, k in enumerate(tap):
        start = k * window.dilations[a]
        index.append(slice(start, start + (out_sp[a] - 1) * window.strides[a] + 1, window.strides[a]))
    return xp[tuple(index)]


class _Pool(Op):
    def setup(self, node: Node) -> None:
        attrs = WindowAttrs.parse(node)
        if attrs.kernel_shape is None:
            raise ValueError("kernel_shape is required")
        self.attrs = attrs
        self.ceil_mode = bool(int(self.attr("ceil_mode", 0)))

    def _window(self, x: Array) -> tuple[Window, list[tuple[int, int]], list[int]]:
        if x.ndim < 3:
            raise ValueError(f"X must be [N, C, *spatial], got shape {list(x.shape)}")
        window = self.attrs.per_axis(x.ndim - 2)
        pads, out_sp = window.resolve(x.shape[2:], self.ceil_mode)
        return window, pads, out_sp


class MaxPool(_Pool):
    """ONNX MaxPool (opset 1-22): padding never wins; optional second output ``Indices``.

    Indices are flat offsets into X (row-major, or column-major over the
    spatial axes with ``storage_order=1``), as ONNX defines them.
    """

    op_type = "MaxPool"

    def setup(self, node: Node) -> None:
        super().setup(node)
        self.storage_order = int(self.attr("storage_order", 0))
        self.want_indices = len(node.outputs) > 1 and bool(node.outputs[1])

    def run(self, x: Array) -> Array | tuple[Array, Array]:
        window, pads, out_sp = self._window(x)
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp = pad_input(x, pads, low)
        taps = list(np.ndindex(*window.kernel))
        y = np.array(_tap_view(xp, taps[0], window, out_sp))
        if not self.want_indices:
            for tap in taps[1:]:
                np.maximum(y, _tap_view(xp, tap, window, out_sp), out=y)
            return y
        best = np.zeros(y.shape, dtype=np.int64)  # tap number of the current maximum
        for t, tap in enumerate(taps[1:], start=1):
            v = _tap_view(xp, tap, window, out_sp)
            better = v > y
            np.copyto(y, v, where=better)
            best[better] = t
        return y, self._indices(x.shape, best, window, pads, out_sp)

    def _indices(self, shape: tuple[int, ...], best: Array, window: Window, pads: list[tuple[int, int]],
                 out_sp: list[int]) -> Array:
        rank = len(out_sp)
        taps = np.array(list(np.ndindex(*window.kernel)), dtype=np.int64).reshape(-1, rank)
        spatial = shape[2:]
        if self.storage_order:
            strides_sp = [prod(spatial[:a]) for a in range(rank)]  # column-major over the spatial axes
        else:
            strides_sp = [prod(spatial[a + 1:]) for a in range(rank)]
        flat = np.zeros(best.shape, dtype=np.int64)
        for a in range(rank):
            out_pos = np.arange(out_sp[a], dtype=np.int64).reshape((-1,) + (1,) * (rank - 1 - a))
            coord = out_pos * window.strides[a] + taps[best, a] * window.dilations[a] - pads[a][0]
            flat += coord * strides_sp[a]
        plane = prod(spatial)
        nc = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape[0], shape[1], *([1] * rank))
        return flat + nc * plane


class AveragePool(_Pool):
    """ONNX AveragePool: ``count_include_pad`` counts explicit padding but never the ceil-mode overhang."""

    op_type = "AveragePool"

    def setup(self, node: Node) -> None:
        super().setup(node)
        self.count_include_pad = bool(int(self.attr("count_include_pad", 0)))

    def run(self, x: Array) -> Array:
        window, pads, out_sp = self._window(x)
        dtype = np.float32 if x.dtype.itemsize < 4 or x.dtype.kind != "f" else x.dtype
        xp = pad_input(x.astype(dtype, copy=False), pads, 0.0)
        taps = list(np.ndindex(*window.kernel))
        y = np.array(_tap_view(xp, taps[0], window, out_sp), dtype=dtype)
        for tap in taps[1:]:
            y += _tap_view(xp, tap, window, out_sp)
        y /= self._counts(x.shape[2:], window, pads, out_sp).astype(dtype)
        return y.astype(x.dtype, copy=False)

    def _counts(self, spatial: tuple[int, ...], window: Window, pads: list[tuple[int, int]],
                out_sp: list[int]) -> Array:
        """Elements each window averages over (separable: a product of per-axis counts)."""
        total = np.ones((), dtype=np.int64)
        explicit = self.attrs.pads or (0,) * (2 * len(spatial))
        for a, size in enumerate(spatial):
            starts = np.arange(out_sp[a]) * window.strides[a] - pads[a][0]
            pos = starts[:, None] + np.arange(window.kernel[a]) * window.dilations[a]
            if self.count_include_pad:
                # padded extent: explicit (or auto) pads, but not the ceil-mode overhang
                end_pad = explicit[len(spatial) + a] if self.attrs.auto_pad == "NOTSET" else pads[a][1]
                valid = (pos >= -pads[a][0]) & (pos < size + end_pad)
            else:
                valid = (pos >= 0) & (pos < size)
            counts = valid.sum(axis=1)
            total = total[..., None] * counts if total.ndim else counts
        return np.maximum(total, 1)
