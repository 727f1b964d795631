"""Convolution kernels for the numpy engine: tiled im2col + BLAS GEMM, and a depthwise path.

Layout: x ``[N, C, *S]`` (already padded), weights ``[M, C/G, *k]``, output
``[N, M, *So]``. Work is split into tiles of one batch item, one group and a
band of rows of the first output spatial axis, so the scratch buffers of a
tile stay small (cache-sized) whatever the image size; tiles run on the
shared pool from :mod:`engine.ops.threads`.

Two GEMM layouts, picked per layer by a memory-traffic estimate:

- ``full`` im2col: ``cols[C*prod(k), band]`` is one strided copy of the input,
  then ``y_band[M, band] = W[M, K] @ cols``. A 1x1 stride-1 kernel needs no
  copy at all: the input band is the GEMM operand.
- ``rows`` (stride 1 on the first axis only): im2col over the channels and the
  *other* kernel axes only, and the first kernel axis stacked into the GEMM's
  M dimension: ``Y[(i, o), rows] = W'[(i, o), (c, k')] @ cols``; the output is
  the sum of ``k0`` row-shifted slices of Y. The copy shrinks by ``k0`` at the
  cost of ``k0 * M`` extra output rows, which wins when M is small (e.g.
  a 4->3 9x9 conv copies 9x less).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod

import numpy as np
from numpy.lib.stride_tricks import as_strided

from engine.ops import threads

Array = np.ndarray

# Scratch bytes one tile may use (im2col columns plus the stacked GEMM
# result): about a core's L2, so a tile's copy-then-GEMM mostly stays in
# cache while its GEMM is still wide enough for BLAS to run near peak
# (measured on the style network's layers: 1 MB tiles were slower, 16 MB too).
TILE_BYTES = 1 << 22

ACTIVATIONS = ("Relu", "Sigmoid")


def apply_activation(y: Array, activation: str | None) -> None:
    """Apply a fused activation to ``y`` in place."""
    if activation is None:
        return
    if activation == "Relu":
        np.maximum(y, 0, out=y)
    elif activation == "Sigmoid":
        # sigmoid(v) = 0.5 * tanh(v / 2) + 0.5, in place, no overflow for large |v|.
        half = y.dtype.type(0.5)
        np.multiply(y, half, out=y)
        np.tanh(y, out=y)
        np.multiply(y, half, out=y)
        np.add(y, half, out=y)
    else:
        raise ValueError(f"unknown fused activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")


@dataclass
class ConvPlan:
    """Everything about one conv call that depends only on shapes and weights."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int
    m_out: int
    method: str  # "full", "rows" or "depthwise"
    weights: Array  # method-specific packed weights (see pack_weights)
    packed_from: Array | None = field(default=None, repr=False)


def choose_method(c_in: int, m_out: int, group: int, kernel: Sequence[int], strides: Sequence[int]) -> str:
    cg, mg = c_in // group, m_out // group
    if group > 1 and cg == 1 and mg == 1:
        return "depthwise"
    k0, krest = kernel[0], prod(kernel[1:])
    if strides[0] != 1 or k0 == 1:
        return "full"
    # Floats moved per output position: the im2col copy (read + write) plus
    # the GEMM's read of it, plus the output (and, for "rows", Y's rows).
    full = 3 * cg * k0 * krest + mg
    rows = 3 * cg * krest + 2 * k0 * mg + mg
    return "rows" if rows < 0.8 * full else "full"


def pack_weights(w: Array, group: int, method: str) -> Array:
    """The weight layout ``method`` feeds to the GEMM (from ``[M, C/G, *k]``)."""
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    mg = m // group
    if method == "depthwise":
        return np.ascontiguousarray(w.reshape(m, prod(kernel)))  # [C, prod(k)]
    if method == "full":
        return np.ascontiguousarray(w.reshape(group, mg, cg * prod(kernel)))  # [G, Mg, K]
    # rows: [G, k0 * Mg, Cg * prod(k[1:])], rows ordered (i, o)
    k0 = kernel[0]
    w5 = w.reshape(group, mg, cg, k0, prod(kernel[1:]))
    return np.ascontiguousarray(w5.transpose(0, 3, 1, 2, 4).reshape(group, k0 * mg, cg * prod(kernel[1:])))


def make_plan(w: Array, group: int, strides: Sequence[int], dilations: Sequence[int], dtype: np.dtype) -> ConvPlan:
    kernel = tuple(w.shape[2:])
    method = choose_method(w.shape[1] * group, w.shape[0], group, kernel, strides)
    packed = pack_weights(w.astype(dtype, copy=False), group, method)
    return ConvPlan(kernel, tuple(strides), tuple(dilations), group, w.shape[0], method, packed, w)


def _bands(n_out: int, per_row_bytes: int, halo_rows: int, other_tiles: int) -> list[tuple[int, int]]:
    """Split ``n_out`` output rows into bands that fit TILE_BYTES and give every thread work."""
    # at least 3x the halo, so re-read halo rows stay a small share of the band's work
    rows = min(n_out, max(1, 3 * halo_rows, TILE_BYTES // max(per_row_bytes, 1) - halo_rows))
    want = threads.num_threads()
    if other_tiles * -(-n_out // rows) < want:
        bands = -(-want // other_tiles)
        rows = max(1, -(-n_out // bands))
    return [(r, min(r + rows, n_out)) for r in range(0, n_out, rows)]


def conv(xp: Array, plan: ConvPlan, bias: Array | None, activation: str | None) -> Array:
    """Convolve the padded input ``xp`` ``[N, C, *Sp]``; returns ``[N, M, *So]``."""
    n = xp.shape[0]
    k, s, d = plan.kernel, plan.strides, plan.dilations
    spatial = xp.shape[2:]
    out_sp = tuple((spatial[a] - (k[a] - 1) * d[a] - 1) // s[a] + 1 for a in range(len(k)))
    if any(o < 1 for o in out_sp):
        raise ValueError(f"padded input {list(spatial)} is smaller than the kernel's reach "
                         f"{[(k[a] - 1) * d[a] + 1 for a in range(len(k))]}")
    m = plan.m_out
    y = np.empty((n, m, *out_sp), dtype=xp.dtype)
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=xp.dtype).reshape(m)
    runner: Callable[[Array, Array, ConvPlan, Array | None, str | None], None] = {
        "full": _conv_full, "rows": _conv_rows, "depthwise": _conv_depthwise}[plan.method]
    runner(xp, y, plan, bias, activation)
    return y


def _epilogue(out: Array, bias: Array | None, activation: str | None) -> None:
    """Bias and fused activation on one output band ``[M, band]``, in place while it is in cache."""
    if bias is not None:
        out += bias.reshape((-1,) + (1,) * (out.ndim - 1))
    apply_activation(out, activation)


def _window_view(x: Array, kernel_axes: Sequence[int], plan: ConvPlan, first_rows: int, first_step: int,
                 out_rest: Sequence[int]) -> Array:
    """Strided view ``[C, *k(kernel_axes), first_rows, *out_rest]`` of one batch item ``x`` ``[C, *S]``.

    ``first_step`` is the input step between consecutive rows of the band along
    the first spatial axis; the other output axes step by their strides.
    """
    st = x.strides
    sp = st[1:]
    shape = (x.shape[0], *(plan.kernel[a] for a in kernel_axes), first_rows, *out_rest)
    strides = (st[0], *(plan.dilations[a] * sp[a] for a in kernel_axes), first_step * sp[0],
               *(plan.strides[a] * sp[a] for a in range(1, len(sp))))
    return as_strided(x, shape=shape, strides=strides, writeable=False)


def _conv_full(xp: Array, y: Array, plan: ConvPlan, bias: Array | None, activation: str | None) -> None:
    n = xp.shape[0]
    g_count, mg, kdim = plan.weights.shape
    cg = xp.shape[1] // g_count
    out_sp = y.shape[2:]
    q = prod(out_sp[1:])
    s0 = plan.strides[0]
    direct = all(v == 1 for v in plan.kernel) and all(v == 1 for v in plan.strides)
    per_row = 0 if direct else kdim * q * xp.itemsize
    bands = _bands(out_sp[0], per_row, 0, n * g_count)
    tiles = [(b, g, r0, r1) for b in range(n) for g in range(g_count) for r0, r1 in bands]
    all_axes = tuple(range(len(plan.kernel)))

    def tile(t: tuple[int, int, int, int]) -> None:
        b, g, r0, r1 = t
        rows = r1 - r0
        xg = xp[b, g * cg:(g + 1) * cg]
        out = y[b, g * mg:(g + 1) * mg, r0:r1].reshape(mg, rows * q)
        if direct:
            cols = xg[:, r0:r1].reshape(cg, rows * q)
        else:
            src = _window_view(xg[:, r0 * s0:], all_axes, plan, rows, s0, out_sp[1:])
            cols = threads.scratch("im2col", kdim * rows * q, xp.dtype).reshape(src.shape)
            np.copyto(cols, src)
            cols = cols.reshape(kdim, rows * q)
        np.matmul(plan.weights[g], cols, out=out)
        _epilogue(out, None if bias is None else bias[g * mg:(g + 1) * mg], activation)

    threads.run_tiles(tile, tiles, work=y.size * kdim)


def _conv_rows(xp: Array, y: Array, plan: ConvPlan, bias: Array | None, activation: str | None) -> None:
    n = xp.shape[0]
    g_count, k0m, k1dim = plan.weights.shape
    k0, d0 = plan.kernel[0], plan.dilations[0]
    mg = k0m // k0
    cg = xp.shape[1] // g_count
    out_sp = y.shape[2:]
    q = prod(out_sp[1:])
    halo = (k0 - 1) * d0
    bands = _bands(out_sp[0], (k1dim + k0m) * q * xp.itemsize, halo, n * g_count)
    tiles = [(b, g, r0, r1) for b in range(n) for g in range(g_count) for r0, r1 in bands]
    rest_axes = tuple(range(1, len(plan.kernel)))
    no_copy = all(v == 1 for v in plan.kernel[1:] + plan.strides[1:])

    def tile(t: tuple[int, int, int, int]) -> None:
        b, g, r0, r1 = t
        rows = r1 - r0
        span = rows + halo  # input rows this band reads
        xg = xp[b, g * cg:(g + 1) * cg]
        out = y[b, g * mg:(g + 1) * mg, r0:r1].reshape(mg, rows * q)
        src = _window_view(xg[:, r0:], rest_axes, plan, span, 1, out_sp[1:])
        if no_copy:
            cols = xg[:, r0:r0 + span].reshape(cg, span * q)  # 1-wide kernel axes: no copy
        else:
            cols = threads.scratch("im2col", k1dim * span * q, xp.dtype).reshape(src.shape)
            np.copyto(cols, src)
            cols = cols.reshape(k1dim, span * q)
        stacked = threads.scratch("stacked", k0m * span * q, xp.dtype).reshape(k0m, span * q)
        np.matmul(plan.weights[g], cols, out=stacked)
        # out[o, r] = sum_i stacked[i*Mg + o, r + i*d0]
        np.add(stacked[0:mg, 0:rows * q], stacked[mg:2 * mg, d0 * q:(d0 + rows) * q], out=out)
        for i in range(2, k0):
            out += stacked[i * mg:(i + 1) * mg, i * d0 * q:(i * d0 + rows) * q]
        _epilogue(out, None if bias is None else bias[g * mg:(g + 1) * mg], activation)

    threads.run_tiles(tile, tiles, work=y.size * k1dim * k0)


def _conv_depthwise(xp: Array, y: Array, plan: ConvPlan, bias: Array | None, activation: str | None) -> None:
    """One filter per channel: a multiply-add per kernel tap over a band of channels."""
    n, c = xp.shape[:2]
    out_sp = y.shape[2:]
    per_channel = prod(out_sp) * xp.itemsize * 2
    block = max(1, min(c, TILE_BYTES // max(per_channel, 1)))
    want = threads.num_threads()
    if n * -(-c // block) < want:
        block = max(1, -(-c * n // want))
    tiles = [(b, c0, min(c0 + block, c)) for b in range(n) for c0 in range(0, c, block)]
    taps = list(np.ndindex(*plan.kernel))
    w = plan.weights  # [C, prod(k)]
    spatial_ones = (1,) * len(out_sp)

    def tile(t: tuple[int, int, int]) -> None:
        b, c0, c1 = t
        out = y[b, c0:c1]
        tmp = threads.scratch("depthwise", out.size, xp.dtype).reshape(out.shape)
        for j, tap in enumerate(taps):
            start = tuple(slice(tap[a] * plan.dilations[a],
                                tap[a] * plan.dilations[a] + (out_sp[a] - 1) * plan.strides[a] + 1,
                                plan.strides[a]) for a in range(len(tap)))
            index: tuple[int | slice, ...] = (b, slice(c0, c1), *start)
            src = xp[index]
            wt = w[c0:c1, j].reshape((c1 - c0, *spatial_ones))
            if j == 0:
                np.multiply(src, wt, out=out)
            else:
                np.multiply(src, wt, out=tmp)
                out += tmp
        _epilogue(out, None if bias is None else bias[c0:c1], activation)

    threads.run_tiles(tile, tiles, work=y.nbytes * len(taps))


def pad_input(x: Array, pads: Sequence[tuple[int, int]], value: float = 0.0) -> Array:
    """``x`` with constant padding on its spatial axes (no copy when there is none)."""
    if not any(b or e for b, e in pads):
        return x
    shape = x.shape[:2] + tuple(size + b + e for size, (b, e) in zip(x.shape[2:], pads))
    out = np.full(shape, value, dtype=x.dtype)
    inner = (slice(None), slice(None)) + tuple(slice(b, b + size) for size, (b, _) in zip(x.shape[2:], pads))
    out[inner] = x
    return out
