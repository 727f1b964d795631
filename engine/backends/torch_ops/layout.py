"""Layout ops on tensors (mirrors engine.ops.reshape, flatten, transpose, squeeze, unsqueeze, expand,
concat, split, slice, pad, identity, dropout, shape).

Where the numpy op's result shape is all that matters, it is computed by
running that very op on a zero-strided stand-in of the tensor's shape (no
memory is touched), so both backends agree on every rule and error.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import (
    DEFAULT_OPTIONS,
    Fallback,
    KernelOptions,
    OpT,
    TorchKernel,
    floats,
    host_ints,
    is_channels_last,
)
from engine.backends.torch_ops.linear import torch_pads
from engine.backends.torch_ops.padded import pad_in_place
from engine.ops.base import normalize_axis
from engine.ops.concat import Concat as ConcatOp
from engine.ops.dropout import Dropout as DropoutOp
from engine.ops.expand import Expand as ExpandOp
from engine.ops.flatten import Flatten as FlattenOp
from engine.ops.identity import Identity as IdentityOp
from engine.ops.pad import Pad as PadOp
from engine.ops.reshape import Reshape as ReshapeOp
from engine.ops.shape import Shape as ShapeOp
from engine.ops.slice import Slice as SliceOp
from engine.ops.split import Split as SplitOp
from engine.ops.squeeze import Squeeze as SqueezeOp
from engine.ops.transpose import Transpose as TransposeOp
from engine.ops.unsqueeze import Unsqueeze as UnsqueezeOp


def stand_in(x: torch.Tensor) -> np.ndarray:
    """A read-only numpy array of ``x``'s shape whose elements all share one byte of memory."""
    return np.broadcast_to(np.zeros((), np.uint8), tuple(x.shape))


def axis_stand_in(x: torch.Tensor, axis: int) -> np.ndarray:
    """``x``'s shape, holding each element's index along ``axis`` (memory: that axis only)."""
    line = np.arange(x.shape[axis], dtype=np.int64)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return np.broadcast_to(line.reshape(shape), tuple(x.shape))


class _ShapeOnly(TorchKernel[OpT]):
    """A view with the shape the numpy op gives for this input shape and parameter, remembered per pair
    (the op's own rules run once; later runs of the same shapes only reshape)."""

    def __init__(self, op: OpT, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(op, options)
        self._shapes: dict[tuple[tuple[int, ...], tuple[int, ...] | None], tuple[int, ...]] = {}

    def reshaped(self, x: torch.Tensor, param: Any) -> torch.Tensor:
        values = None if param is None else tuple(host_ints(param))
        key = (tuple(x.shape), values)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self.result_shape(x, None if values is None else np.asarray(values, np.int64))
            if len(self._shapes) > 64:
                self._shapes.clear()
            self._shapes[key] = shape
        return x.reshape(shape)

    def result_shape(self, x: torch.Tensor, param: np.ndarray | None) -> tuple[int, ...]:
        out = self.op.run(stand_in(x), param)
        assert isinstance(out, np.ndarray)  # the shape-only ops have one output
        return tuple(out.shape)


class Reshape(_ShapeOnly[ReshapeOp]):
    def run(self, x: Any, shape: Any) -> torch.Tensor:
        floats(x)
        if shape is None:
            raise Fallback
        return self.reshaped(x, shape)


class Flatten(_ShapeOnly[FlattenOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        return self.reshaped(x, None)

    def result_shape(self, x: torch.Tensor, param: np.ndarray | None) -> tuple[int, ...]:
        return tuple(self.op.run(stand_in(x)).shape)


class _Axes(_ShapeOnly[OpT]):
    def run(self, x: Any, axes: Any = None) -> torch.Tensor:
        floats(x)
        return self.reshaped(x, axes)


class Squeeze(_Axes[SqueezeOp]):
    pass


class Unsqueeze(_Axes[UnsqueezeOp]):
    pass


class Expand(TorchKernel[ExpandOp]):
    def run(self, x: Any, shape: Any) -> torch.Tensor:
        floats(x)
        dims = [] if shape is None else host_ints(shape)
        if any(d < 0 for d in dims):
            raise Fallback
        return x.expand(np.broadcast_shapes(tuple(x.shape), tuple(dims))).contiguous()


class Transpose(TorchKernel[TransposeOp]):
    def run(self, x: Any) -> torch.Tensor:
        floats(x)
        perm = self.op.perm
        if perm is None:
            perm = list(reversed(range(x.ndim)))
        if sorted(perm) != list(range(x.ndim)):
            raise Fallback
        return x.permute(perm)


class Concat(TorchKernel[ConcatOp]):
    def run(self, *inputs: Any) -> torch.Tensor:
        floats(*inputs)
        if any(x is None for x in inputs) or len({x.dtype for x in inputs}) != 1 or inputs[0].ndim == 0:
            raise Fallback
        return torch.cat(list(inputs), dim=normalize_axis(self.op.axis, inputs[0].ndim))


class Split(TorchKernel[SplitOp]):
    def run(self, x: Any, split: Any = None) -> tuple[torch.Tensor, ...]:
        floats(x)
        split = None if split is None else np.asarray(host_ints(split), np.int64)
        parts = self.op.run(stand_in(x), split)
        axis = normalize_axis(self.op.axis, x.ndim)
        return tuple(torch.split(x, [p.shape[axis] for p in parts], dim=axis))


class Slice(TorchKernel[SliceOp]):
    """Per sliced axis, the numpy op picks the indices from an index stand-in; contiguous runs narrow."""

    def run(self, x: Any, *params: Any) -> torch.Tensor:
        floats(x)
        host = [None if p is None else np.asarray(host_ints(p), np.int64) for p in params]
        picked = self.op.run(stand_in(x), *host)
        if 0 in picked.shape:
            return x.new_empty(picked.shape)
        y = x
        for axis in range(x.ndim):
            index = self.op.run(axis_stand_in(x, axis), *host)
            line = index[(0,) * axis + (slice(None),) + (0,) * (x.ndim - axis - 1)]  # [out_len]
            if line.size == x.shape[axis] and np.array_equal(line, np.arange(x.shape[axis])):
                continue
            step = int(line[1] - line[0]) if line.size > 1 else 1
            if step > 0:
                y = y[(slice(None),) * axis + (slice(int(line[0]), int(line[-1]) + 1, step),)]
            else:  # torch slices only forward: gather the reversed indices
                y = torch.index_select(y, axis, torch.as_tensor(np.ascontiguousarray(line), device=x.device))
        return y


# 2-D reflect / edge padding with an ``out=`` form
POOLED_PADS: dict[str, Any] = {
    "reflect": torch._C._nn.reflection_pad2d,  # type: ignore[attr-defined]  # torch's _C._nn stub omits it
    "edge": torch._C._nn.replication_pad2d,  # type: ignore[attr-defined]  # torch's _C._nn stub omits it
}


class Pad(TorchKernel[PadOp]):
    """Constant padding of any axes; reflect/edge/wrap on up to the last three axes (torch's limits)."""

    TORCH_MODES: ClassVar[dict[str, str]] = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}

    def run(self, x: Any, pads: Any = None, value: Any = None, axes: Any = None) -> torch.Tensor:
        floats(x)
        op = self.op
        pad_list = host_ints(pads) if pads is not None else op.attr_pads
        if pad_list is None:
            raise Fallback
        rank = x.ndim
        axis_list = [normalize_axis(a, rank) for a in host_ints(axes)] if axes is not None else list(range(rank))
        if len(pad_list) != 2 * len(axis_list):
            raise Fallback
        width = [(0, 0)] * rank
        for i, a in enumerate(axis_list):
            width[a] = (pad_list[i], pad_list[i + len(axis_list)])
        if op.mode == "constant":
            fill = op.attr_value if value is None or _size(value) == 0 else float(value.reshape(-1)[0])
            # F.pad crops on negative pads, as ONNX asks
            return F.pad(x, torch_pads(width), value=fill) if any(b or e for b, e in width) else x.clone()
        # negative pads crop first
        for a, (b, e) in enumerate(width):
            if b < 0 or e < 0:
                x = x.narrow(a, max(-b, 0), x.shape[a] - max(-b, 0) - max(-e, 0))
        width = [(max(b, 0), max(e, 0)) for b, e in width]
        padded = [a for a, (b, e) in enumerate(width) if b or e]
        if not padded:
            return x.clone()
        first = padded[0]
        if rank - first > 3:
            raise Fallback  # torch pads at most the last three axes in these modes
        if any(b >= x.shape[a] or e >= x.shape[a] for a, (b, e) in enumerate(width) if b or e):
            raise Fallback  # numpy repeats reflections; torch reflects once
        if first >= 2 and rank == 4 and op.mode in POOLED_PADS:
            # the producer may have written x into this padding's buffer already: only the border is left
            placed = pad_in_place(x, (width[2][0], width[2][1], width[3][0], width[3][1]), op.mode)
            if placed is not None:
                return placed
        if first >= 2 and rank == 4 and op.mode in POOLED_PADS and self.options.pool is not None \
                and x.device.type == "cpu":
            # into a reused buffer (a fresh 512x512x32 result costs as much in page faults as the copy)
            shape = (x.shape[0], x.shape[1], *(x.shape[a] + b + e for a, (b, e) in enumerate(width) if a >= 2))
            out = self.options.empty(shape, x, torch.channels_last if is_channels_last(x) else torch.contiguous_format)
            return POOLED_PADS[op.mode](x, torch_pads(width[2:]), out=out)
        if first >= 2 and 3 <= rank <= 5:
            # batch and channel unpadded: torch pads N-C-spatial directly, keeping channels-last memory
            return F.pad(x, torch_pads(width[2:]), mode=self.TORCH_MODES[op.mode])
        lead, tail = tuple(x.shape[:first]), tuple(x.shape[first:])
        y = F.pad(x.reshape((math.prod(lead),) + tail), torch_pads(width[first:]), mode=self.TORCH_MODES[op.mode])
        return y.reshape(lead + tuple(y.shape[1:]))


def _size(value: Any) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else int(np.size(value))


class Identity(TorchKernel[IdentityOp]):
    def run(self, x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            raise Fallback
        return x


class Dropout(TorchKernel[DropoutOp]):
    """Inference: the input passes through; training mode (and the mask output) run on the host."""

    def run(self, x: Any, ratio: Any = None, training_mode: Any = None) -> torch.Tensor:
        floats(x)
        if self.op.want_mask or (training_mode is not None and bool(np.asarray(host_ints(training_mode))[0])):
            raise Fallback
        return x


class Shape(TorchKernel[ShapeOp]):
    def run(self, x: Any) -> np.ndarray:
        # the shape is host metadata: no download of the tensor
        return self.op.run(stand_in(x) if isinstance(x, torch.Tensor) else x)

