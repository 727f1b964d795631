"""Pad: constant, reflect, edge and wrap padding; negative pads crop."""

from __future__ import annotations

from typing import Literal

import numpy as np

from engine.graph import Node
from engine.ops import threads
from engine.ops.base import Array, Op, as_int_list, normalize_axis

PadMode = Literal["constant", "reflect", "edge", "wrap"]
MODES: tuple[PadMode, ...] = ("constant", "reflect", "edge", "wrap")


class Pad(Op):
    """ONNX Pad, opsets 2 (``pads``/``value`` attributes) through 18+ (``pads``, ``constant_value``, ``axes`` inputs).

    Negative pads crop first; the remaining padding is done by one output
    allocation and slice copies (``np.pad``) — no per-pixel Python.
    """

    op_type = "Pad"
    min_inputs = 1
    max_inputs = 4

    def setup(self, node: Node) -> None:
        raw = self.attr("mode", "constant")
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        mode = next((m for m in MODES if m == name), None)
        if mode is None:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {name!r}")
        self.mode: PadMode = mode
        self.attr_pads = as_int_list(self.attr("pads"))
        self.attr_value = float(self.attr("value", 0.0))

    def run(self, x: Array, pads: Array | None = None, value: Array | None = None,
            axes: Array | None = None) -> Array:
        pad_list = as_int_list(pads) if pads is not None else self.attr_pads
        if pad_list is None:
            raise ValueError("pads is required (as the second input, or the attribute before opset 11)")
        rank = x.ndim
        axis_list = [normalize_axis(a, rank) for a in as_int_list(axes)] if axes is not None else list(range(rank))
        if len(pad_list) != 2 * len(axis_list):
            raise ValueError(f"pads has {len(pad_list)} values; {len(axis_list)} axes need {2 * len(axis_list)}")
        signed = [[0, 0] for _ in range(rank)]
        for i, a in enumerate(axis_list):
            signed[a] = [pad_list[i], pad_list[i + len(axis_list)]]
        # negative pads crop
        crop = tuple(slice(max(-b, 0), x.shape[a] - max(-e, 0)) for a, (b, e) in enumerate(signed))
        if any(s.start or s.stop != x.shape[a] for a, s in enumerate(crop)):
            x = x[crop]
        width = [(max(b, 0), max(e, 0)) for b, e in signed]
        if not any(b or e for b, e in width):
            return x.copy()
        if self.mode == "constant":
            fill = self.attr_value if value is None or np.size(value) == 0 else np.asarray(value).reshape(-1)[0]
            return _pad_constant(x, width, fill)
        for a, (b, e) in enumerate(width):
            if (b or e) and x.shape[a] == 0:
                raise ValueError(f"cannot {self.mode}-pad axis {a}, which is empty")
        reach = [n - 1 if self.mode == "reflect" else n for n in x.shape]
        if any(b > r or e > r for (b, e), r in zip(width, reach)):
            return np.pad(x, width, mode=self.mode)  # pads wider than the input repeat the pattern
        return _pad_tiled(x, width, self.mode)


def _pad_tiled(x: Array, width: list[tuple[int, int]], mode: str) -> Array:
    """reflect/edge/wrap padding no wider than the input, over blocks of the leading unpadded axes in parallel."""
    out = np.empty(tuple(s + b + e for s, (b, e) in zip(x.shape, width)), dtype=x.dtype)
    lead = 0  # leading axes without padding can be split into independent blocks
    while lead < x.ndim - 1 and width[lead] == (0, 0):
        lead += 1
    rows = int(np.prod(x.shape[:lead])) if lead else 1
    x2 = x.reshape((rows, *x.shape[lead:]))
    out2 = out.reshape((rows, *out.shape[lead:]))
    inner = [(0, 0)] + width[lead:]
    block = max(1, -(-rows // threads.num_threads()))

    def fill(r0: int) -> None:
        dst = out2[r0:r0 + block]
        dst[tuple(slice(b, b + n) for n, (b, _) in zip(x2.shape, inner))] = x2[r0:r0 + block]
        for axis, (b, e) in enumerate(inner):
            if b or e:
                _fill_axis(dst, axis, b, e, dst.shape[axis] - b - e, mode)

    threads.run_tiles(fill, range(0, rows, block), work=out.nbytes)
    return out


def _fill_axis(out: Array, axis: int, b: int, e: int, n: int, mode: str) -> None:
    """Fill the ``b`` leading and ``e`` trailing slots of ``axis`` from the ``n`` inner ones, in place."""
    def at(sl: slice) -> tuple[slice, ...]:
        return (slice(None),) * axis + (sl,)

    def rev(hi: int, lo: int) -> slice:  # hi down to lo+1
        return slice(hi, lo if lo >= 0 else None, -1)

    if b:
        src = {"reflect": rev(2 * b, b), "edge": slice(b, b + 1), "wrap": slice(n, n + b)}[mode]
        out[at(slice(0, b))] = out[at(src)]
    if e:
        end = b + n
        src = {"reflect": rev(end - 2, end - 2 - e), "edge": slice(end - 1, end), "wrap": slice(b, b + e)}[mode]
        out[at(slice(end, end + e))] = out[at(src)]


def _pad_constant(x: Array, width: list[tuple[int, int]], fill: object) -> Array:
    out = np.empty(tuple(s + b + e for s, (b, e) in zip(x.shape, width)), dtype=x.dtype)
    out[...] = np.asarray(fill).astype(x.dtype)
    out[tuple(slice(b, b + s) for s, (b, _) in zip(x.shape, width))] = x
    return out
