"""Slice: ``starts``/``ends``/``axes``/``steps`` as inputs (opset 10+) or attributes (opset 1).

Out-of-range starts and ends are clamped as ONNX specifies (so INT64_MAX
means "to the end" and INT64_MIN "from the start"); negative steps walk
backwards. Returns a view of the input.
"""

from __future__ import annotations

from engine.graph import Node
from engine.ops.base import Array, Op, as_int_list, normalize_axis


class Slice(Op):
    op_type = "Slice"
    min_inputs = 1
    max_inputs = 5

    def setup(self, node: Node) -> None:
        self.attr_form = "starts" in node.attrs
        self.attr_starts = as_int_list(node.attrs.get("starts"))
        self.attr_ends = as_int_list(node.attrs.get("ends"))
        self.attr_axes = as_int_list(node.attrs.get("axes"))

    def run(self, x: Array, starts: Array | None = None, ends: Array | None = None,
            axes: Array | None = None, steps: Array | None = None) -> Array:
        if self.attr_form:
            if starts is not None:
                raise ValueError("starts/ends are given both as attributes and as inputs")
            start_list, end_list, axis_list, step_list = self.attr_starts, self.attr_ends, self.attr_axes, None
        else:
            if starts is None or ends is None:
                raise ValueError("starts and ends inputs are required")
            start_list, end_list = as_int_list(starts), as_int_list(ends)
            axis_list, step_list = as_int_list(axes), as_int_list(steps)
        assert start_list is not None and end_list is not None
        count = len(start_list)
        if len(end_list) != count:
            raise ValueError(f"{count} starts but {len(end_list)} ends")
        if axis_list is None:
            axis_list = list(range(count))
        if step_list is None:
            step_list = [1] * count
        if len(axis_list) != count or len(step_list) != count:
            raise ValueError(f"starts, ends, axes and steps must have one length, got "
                             f"{count}, {len(end_list)}, {len(axis_list)}, {len(step_list)}")
        index: list[slice] = [slice(None)] * x.ndim
        seen: set[int] = set()
        for start, end, axis, step in zip(start_list, end_list, axis_list, step_list):
            axis = normalize_axis(axis, x.ndim)
            if axis in seen:
                raise ValueError(f"axis {axis} is sliced twice")
            seen.add(axis)
            if step == 0:
                raise ValueError("step must not be 0")
            index[axis] = _clamped(start, end, step, x.shape[axis])
        return x[tuple(index)]


_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def _clamped(start: int, end: int, step: int, dim: int) -> slice:
    """The python slice selecting what ONNX's (start, end, step) selects on an axis of length ``dim``."""
    if dim == 0:
        return slice(0, 0)
    if end in (_INT32_MAX, _INT64_MAX):
        # INT_MAX as end means "run off the end", in either direction (as onnxruntime reads it).
        end = -dim - 1 if step < 0 else dim
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    # end == -1 here means "through index 0", which a python slice spells None.
    return slice(start, end if end >= 0 else None, step)
