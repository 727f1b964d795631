"""ConvTranspose: the gradient of Conv, computed as a GEMM followed by a strided scatter-add (col2im)."""

from __future__ import annotations

from math import prod

import numpy as np

from engine.graph import Node
from engine.ops import threads
from engine.ops.base import Array, Op, as_int_list
from engine.ops.conv import compute_dtype
from engine.ops.spatial import WindowAttrs, parse_group

# Bytes of GEMM result one col2im band may hold.
BAND_BYTES = 1 << 22


class ConvTranspose(Op):
    """ONNX ConvTranspose. Inputs ``X [N, C, *S]``, ``W [C, M/group, *k]``, optional ``B [M]``.

    Per batch item and group: ``cols[(m, *k), S] = W_g^T @ X_g`` (one GEMM over a
    band of input rows), then each kernel tap adds its slice of ``cols`` into a
    strided view of the full output canvas; the requested pads crop the canvas.
    """

    op_type = "ConvTranspose"
    min_inputs = 2
    max_inputs = 3

    def setup(self, node: Node) -> None:
        self.window = WindowAttrs.parse(node)
        self.group = parse_group(node)
        self.output_padding = as_int_list(self.attr("output_padding"))
        self.output_shape = as_int_list(self.attr("output_shape"))
        self._packed: tuple[Array, Array] | None = None

    def _weights(self, w: Array, dtype: np.dtype) -> Array:
        """``[G, Mg * prod(k), Cg]``: per group, the transposed GEMM operand."""
        if self._packed is not None and self._packed[0] is w and self._packed[1].dtype == dtype:
            return self._packed[1]
        c, mg = w.shape[:2]
        cg = c // self.group
        packed = np.ascontiguousarray(
            w.astype(dtype, copy=False).reshape(self.group, cg, mg * prod(w.shape[2:])).transpose(0, 2, 1))
        self._packed = (w, packed)
        return packed

    def _geometry(self, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[list[int], list[int], list[int]]:
        """Strides, dilations, and per-axis (begin pad, output size)."""
        rank = len(spatial)
        window = self.window.per_axis(rank, kernel)
        s, d = window.strides, window.dilations
        out_pad = self.output_padding or [0] * rank
        if len(out_pad) != rank:
            raise ValueError(f"output_padding has {len(out_pad)} entries for {rank} spatial axes")
        full = [s[a] * (spatial[a] - 1) + out_pad[a] + (kernel[a] - 1) * d[a] + 1 for a in range(rank)]
        target = self.output_shape[-rank:] if self.output_shape else None
        if target is None and window.auto_pad in ("SAME_UPPER", "SAME_LOWER") and self.window.pads is None:
            target = [spatial[a] * s[a] for a in range(rank)]
        if target is not None:
            begins = []
            for a in range(rank):
                total = full[a] - target[a]
                half = total // 2
                begins.append(half if window.auto_pad == "SAME_UPPER" else total - half)
            return list(s), list(d), [*begins, *target]
        begins = [b for b, _ in window.pads]
        sizes = [full[a] - b - e for a, (b, e) in enumerate(window.pads)]
        return list(s), list(d), [*begins, *sizes]

    def run(self, x: Array, w: Array, b: Array | None = None) -> Array:
        if x.ndim < 3 or w.ndim != x.ndim:
            raise ValueError(f"X and W must have the same rank >= 3, got X {list(x.shape)} and W {list(w.shape)}")
        n, c = x.shape[:2]
        if c != w.shape[0] or c % self.group:
            raise ValueError(f"X has {c} channels but W is for {w.shape[0]} input channels in {self.group} groups")
        rank = x.ndim - 2
        kernel = tuple(w.shape[2:])
        spatial = tuple(x.shape[2:])
        strides, dils, geo = self._geometry(spatial, kernel)
        begins, sizes = geo[:rank], geo[rank:]
        if any(v < 1 for v in sizes):
            raise ValueError(f"output spatial shape {sizes} is empty")
        dtype = compute_dtype(x.dtype)
        wp = self._weights(w, dtype)  # [G, Mg*prod(k), Cg]
        g_count = self.group
        mg = w.shape[1]
        cg = c // g_count
        m = mg * g_count
        xc = np.ascontiguousarray(x, dtype=dtype)
        y = np.zeros((n, m, *sizes), dtype=dtype)
        taps = list(np.ndindex(*kernel))
        q = prod(spatial[1:])
        rows_per_band = max(1, min(spatial[0], BAND_BYTES // max(wp.shape[1] * q * xc.itemsize, 1)))

        def tile(t: tuple[int, int]) -> None:
            bi, g = t
            xg = xc[bi, g * cg:(g + 1) * cg].reshape(cg, spatial[0], q)
            out = y[bi, g * mg:(g + 1) * mg]
            for r0 in range(0, spatial[0], rows_per_band):
                r1 = min(r0 + rows_per_band, spatial[0])
                band = (r1 - r0) * q
                cols = threads.scratch("col2im", wp.shape[1] * band, dtype).reshape(wp.shape[1], band)
                np.matmul(wp[g], xg[:, r0:r1].reshape(cg, band), out=cols)
                cols6 = cols.reshape(mg, len(taps), r1 - r0, *spatial[1:])
                band_sp = (r1 - r0, *spatial[1:])
                band_start = (r0, *([0] * (rank - 1)))
                for j, tap in enumerate(taps):
                    _scatter_add(out, cols6[:, j], tap, band_start, band_sp, strides, dils, begins)

        threads.run_tiles(tile, [(bi, g) for bi in range(n) for g in range(g_count)], work=xc.size * wp.shape[1])
        if b is not None:
            y += np.asarray(b, dtype=dtype).reshape((m,) + (1,) * rank)
        return y if y.dtype == x.dtype else y.astype(x.dtype)


def _scatter_add(out: Array, src: Array, tap: tuple[int, ...], start: tuple[int, ...], extent: tuple[int, ...],
                 strides: list[int], dils: list[int], begins: list[int]) -> None:
    """``out[:, o] += src[:, i]`` where ``o = (start + i) * stride + tap * dilation - begin``, clipped to ``out``."""
    out_idx: list[slice] = [slice(None)]
    src_idx: list[slice] = [slice(None)]
    for a, (k, s, d, b0) in enumerate(zip(tap, strides, dils, begins)):
        offset = start[a] * s + k * d - b0  # output coordinate of src index 0
        size = out.shape[a + 1]
        # first/last src index landing inside [0, size)
        lo = 0 if offset >= 0 else -(offset // s)  # ceil(-offset / s)
        hi = min(extent[a], (size - 1 - offset) // s + 1) if size - 1 - offset >= 0 else 0
        if hi <= lo:
            return
        o0 = offset + lo * s
        out_idx.append(slice(o0, o0 + (hi - lo - 1) * s + 1, s))
        src_idx.append(slice(lo, hi))
    out[tuple(out_idx)] += src[tuple(src_idx)]
