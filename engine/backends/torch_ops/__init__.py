"""Torch kernels for corral's ops, one module per op family, looked up by op type.

A torch kernel is built from the numpy op of the same node (so attributes
are parsed once, by the same code, and mean the same thing) and is called
with the node's inputs: float tensors on the compile device, and numpy
arrays on the host for everything else (integer shapes, axes, indices —
shape arithmetic never leaves the CPU). It returns tensors (a host array
for shape metadata), or raises
:class:`Fallback` when it does not cover these inputs (an integer tensor, a
rare attribute combination); the backend then runs the numpy op on the host
and moves its float results back to the device.

``TORCH_KERNELS`` maps op type -> module under this package; each module
defines a class named exactly as the op type, a :class:`TorchKernel`
parameterized by that op type's numpy op class. Ops not listed always run on
the host (numpy).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from engine.backends.torch_ops.buffers import BufferPool
from engine.ops.base import Op

TORCH_KERNELS: dict[str, str] = {
    **dict.fromkeys(["Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
                     "Clip", "Softmax", "Sqrt", "Neg", "Exp", "Log", "Abs", "Reciprocal", "Floor", "Ceil"],
                    "activations"),
    **dict.fromkeys(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum"], "arithmetic"),
    **dict.fromkeys(["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2"], "reduce"),
    **dict.fromkeys(["ArgMax", "ArgMin", "TopK", "Tile", "Einsum", "DepthToSpace", "SpaceToDepth"], "indexing"),
    **dict.fromkeys(["Conv", "ConvTranspose", "Gemm", "MatMul"], "linear"),
    **dict.fromkeys(["BatchNormalization", "InstanceNormalization", "FusedMeanVarianceNorm",
                     "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"], "norm_pool"),
    **dict.fromkeys(["Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Expand", "Concat", "Split",
                     "Slice", "Pad", "Identity", "Dropout", "Shape"], "layout"),
    **dict.fromkeys(["Resize", "Upsample"], "resize"),
    **dict.fromkeys(["LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"], "recurrent"),
    **dict.fromkeys(["DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"],
                    "quantized"),
    **dict.fromkeys(["Gelu", "Round", "Erf"], "activations"),
    "Mean": "arithmetic",
    **dict.fromkeys(["Equal", "Less", "Greater", "Not", "And", "Or", "Where"], "logic"),
    "LayerNormalization": "layer_norm",
}


@dataclass(frozen=True)
class KernelOptions:
    """How a context's kernels compute (compile options, see :class:`engine.backends.torch_backend.TorchBackend`).

    ``channels_last``: 2-D convolutions run in channels-last (NHWC) memory,
    weights converted once, and the ops between them (reflect Pad, instance
    norm, Add, Resize) keep that layout; norms and Adds write into a following
    Pad's buffer (:mod:`engine.backends.torch_ops.padded`). ``pool``: large CPU
    results are written into reused buffers (:mod:`engine.backends.torch_ops.buffers`).
    """

    channels_last: bool = False
    pool: BufferPool | None = None

    def empty(self, shape: tuple[int, ...] | torch.Size, like: torch.Tensor,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """An uninitialized result tensor on ``like``'s device and dtype (pooled on the CPU when enabled)."""
        if self.pool is not None and like.device.type == "cpu":
            return self.pool.empty(shape, like.dtype, memory_format)
        return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


DEFAULT_OPTIONS = KernelOptions()


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor laid out NHWC (and not also plain NCHW-contiguous, as 1x1 images are)."""
    return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class Fallback(Exception):
    """The torch kernel does not cover these inputs: run the numpy op on the host instead."""


# The numpy op class a kernel mirrors.
OpT = TypeVar("OpT", bound=Op)


class TorchKernel(Generic[OpT]):
    """Base of every torch kernel: holds the numpy op (parsed attributes) it mirrors."""

    def __init__(self, op: OpT, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        self.op = op
        self.options = options

    def run(self, *inputs: Any) -> torch.Tensor | np.ndarray | tuple[torch.Tensor, ...]:
        raise NotImplementedError


def floats(*values: Any) -> None:
    """Raise :class:`Fallback` unless every given value is a float tensor the kernel may compute in.

    float16 on the CPU goes to numpy, which computes it through float32 as
    the reference does; on CUDA half is native.
    """
    for v in values:
        if v is None:
            continue
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise Fallback
        if v.dtype == torch.float16 and v.device.type == "cpu":
            raise Fallback


def host_ints(value: Any) -> list[int]:
    """An integer parameter input (shape, axes, pads) as a Python list, read on the host."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return [int(v) for v in np.asarray(value).reshape(-1)]


def like(value: Any, ref: torch.Tensor) -> torch.Tensor:
    """``value`` (tensor or host array) as a tensor with ``ref``'s dtype and device."""
    if isinstance(value, torch.Tensor):
        return value.to(device=ref.device, dtype=ref.dtype)
    return host_tensor(value, ref.device).to(ref.dtype)


def host_tensor(value: Any, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on ``device`` (copied first when numpy marks it read-only)."""
    arr = np.asarray(value)
    return torch.as_tensor(arr if arr.flags.writeable else np.array(arr), device=device)


# Looked up by op type name: the kernel's op class is known only at run time, so its parameter is Any.
@cache
def kernel_class(op_type: str) -> type[TorchKernel[Any]] | None:
    module = TORCH_KERNELS.get(op_type)
    if module is None:
        return None
    cls: type[TorchKernel[Any]] = getattr(importlib.import_module(f"engine.backends.torch_ops.{module}"), op_type)
    return cls


def make_kernel(op: Op, options: KernelOptions = DEFAULT_OPTIONS) -> TorchKernel[Any] | None:
    """The torch kernel for ``op``'s node, or None when the op always runs on the host."""
    cls = kernel_class(op.op_type)
    return None if cls is None else cls(op, options)
