"""The torch backend: corral's ops on torch tensors, on the CPU or a CUDA device.

Imported only when asked for (``compile(model, backend="torch")``). The
compiler binds it to a device and precision with :func:`context`; the
executor then keeps float values as tensors on that device from the graph's
inputs to its outputs:

* ``to_device`` (graph inputs and weights): float arrays become tensors on
  the device (float16 with ``precision="fp16"``, CUDA only); integer arrays
  — shapes, axes, indices — stay numpy on the host, so shape arithmetic
  never waits on the device.
* Each node runs its torch kernel (:mod:`engine.backends.torch_ops`), or,
  for ops and inputs a kernel does not cover and for custom layers without
  ``evaluate_torch``, the numpy op on the host with its float results moved
  back: the graph runs as device segments with host steps between them.
* ``to_host`` (graph outputs): tensors back to numpy (float32 again in fp16).

On CUDA, uploads go through pinned host memory on a separate copy stream
that the compute stream waits on, downloads land in pinned memory, and
cuDNN autotuning is on. The same code runs on the CPU with the stream parts
skipped, which is what the test suite exercises on machines without a GPU.

Precision: ``fp32`` everywhere; ``fp16`` on CUDA only. On the CPU fp16 is
refused with an error rather than silently run in float32, so a job never
reports half-precision numbers it did not compute.

Options (``compile(..., backend_options={...})``, see :data:`OPTIONS`):

* ``channels_last``: 2-D convolutions and the ops between them in NHWC
  memory. Default: on for the CPU, where oneDNN's NHWC convolutions ran the
  style network's layers 1.3-2x faster than NCHW (bench/engine.py); off on
  CUDA until measured there (bench/gpu_check.sh).
* ``buffer_pool_mb``: on the CPU, large results (reflect Pad, instance norm,
  Add, convolutions of 32 MiB or more) are written into buffers reused
  across runs, up to this many MiB per compiled model (0: off); see
  :mod:`engine.backends.torch_ops.buffers`.

With channels-last, an instance norm or Add whose result a reflect / edge
Pad reads writes it straight into that Pad's buffer, which then only fills
its border (:mod:`engine.backends.torch_ops.padded`).

On the CPU, torch's intra-op thread count follows the engine's
(:func:`engine.ops.threads.num_threads`: the CPUs this process may use,
unless set) each time a graph runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from engine.backends.base import Backend, Kernel, RunLayout, cpu_run_items
from engine.backends.torch_ops import Fallback, KernelOptions, TorchKernel, make_kernel
from engine.backends.torch_ops.buffers import BufferPool
from engine.exceptions import BackendError
from engine.graph import Node
from engine.ops import make_op
from engine.ops import threads as engine_threads

log = logging.getLogger(__name__)

NAME = "torch"
DEFAULT_BUFFER_POOL_MB = 1024


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` / ``cuda:N`` (checked against the devices torch sees) or ``auto``; normalized."""
    name = (device or "cpu").strip().lower()
    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BackendError(f"device {device!r}: this torch ({torch.__version__}) sees no CUDA device; "
                               "use --device cpu, or install a CUDA build of torch on a GPU machine")
        try:
            index = int(name.partition(":")[2] or 0)
        except ValueError:
            raise BackendError(f"device {device!r}: expected cuda:N with N a device number") from None
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise BackendError(f"device {device!r}: there are {count} CUDA devices (cuda:0..cuda:{count - 1})")
        return f"cuda:{index}"
    raise BackendError(f"device {device!r} is not one the torch backend knows; use cpu, cuda, cuda:N or auto")


class TorchBackend(Backend):
    """The backend bound to one device and precision: builds kernels and moves values across the boundary."""

    NAME = NAME
    PRECISIONS = ("fp32", "fp16")
    # Compile options (``backend_options``) and their types; None / absent means the device's default.
    OPTIONS: ClassVar[Mapping[str, type]] = {"channels_last": bool, "buffer_pool_mb": int}
    DEVICE_VALUES = True

    def __init__(self, device: str = "cpu", precision: str = "fp32",
                 options: Mapping[str, Any] | None = None) -> None:
        options = self.check_options(options)
        super().__init__(check_device(device), precision, options)
        self.check_precision(precision, self.device)
        self.torch_device = torch.device(self.device)
        self.cuda = self.torch_device.type == "cuda"
        self.half = precision == "fp16"
        # Host fallbacks by op type, counted as they happen (see fallback_counts()).
        self.fallbacks: Counter[str] = Counter()
        self.upload_stream = None
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # autotune conv algorithms per input shape
            self.upload_stream = torch.cuda.Stream(self.torch_device)
        channels_last = options.get("channels_last")
        self.channels_last = (not self.cuda) if channels_last is None else bool(channels_last)
        pool_mb = int(options.get("buffer_pool_mb", DEFAULT_BUFFER_POOL_MB))
        # CUDA's caching allocator already reuses device memory
        pool = BufferPool(pool_mb << 20) if pool_mb > 0 and not self.cuda else None
        self.kernel_options = KernelOptions(channels_last=self.channels_last, pool=pool)

    @classmethod
    def check_device(cls, device: str) -> str:
        return check_device(device)

    @classmethod
    def create(cls, device: str = "cpu", precision: str = "fp32", **options: Any) -> TorchBackend:
        return cls(device, precision, options)

    # ------------------------------------------------------------ kernels
    def build_kernel(self, node: Node) -> TorchNode:
        host = make_op(node)
        return TorchNode(self, node.op_type, host, make_kernel(host, self.kernel_options))

    def wrap_custom(self, node: Node, host_kernel: Kernel, device_kernel: Any | None) -> TorchNode:
        """A custom layer: ``device_kernel.run(*inputs)`` on tensors when given, else the host kernel."""
        kernel = None if device_kernel is None else CustomTorchKernel(self, device_kernel)
        return TorchNode(self, node.op_type, host_kernel, kernel)

    def run_context(self) -> contextlib.AbstractContextManager[Any]:
        """Entered around each graph run: no autograd bookkeeping (version counters, views); on the CPU,
        torch's threads set to the engine's count first (torch's own default may count other CPUs)."""
        if not self.cuda:
            count = engine_threads.num_threads()
            if torch.get_num_threads() != count:
                torch.set_num_threads(count)
        return torch.inference_mode()

    def run_layouts(self, items: int, item_elements: int) -> list[RunLayout]:
        return [RunLayout()] if self.cuda else [RunLayout(1, cpu_run_items(item_elements))]

    # ------------------------------------------------------------ values
    def to_device(self, value: Any) -> Any:
        """A graph input or weight: float arrays to a device tensor, everything else stays on the host."""
        if isinstance(value, torch.Tensor):
            return self._cast(value.to(self.torch_device))
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            return arr
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.array(arr)  # torch shares memory with the array it wraps; never with a read-only one
        src = torch.from_numpy(arr)
        if self.cuda:
            assert self.upload_stream is not None
            compute = torch.cuda.current_stream(self.torch_device)
            src = src.pin_memory()
            with torch.cuda.stream(self.upload_stream):
                dst = src.to(self.torch_device, non_blocking=True)
            compute.wait_stream(self.upload_stream)
            dst.record_stream(compute)
            return self._cast(dst)
        return self._cast(src)

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.half() if self.half and t.dtype == torch.float32 else t

    def device_value(self, value: Any) -> Any:
        """A host kernel's result back onto the device (floats) or left on the host (integers, booleans)."""
        return self.to_device(value)

    def host_value(self, value: Any) -> Any:
        """A value for a host kernel: tensors to numpy (float32 in fp16 mode)."""
        if not isinstance(value, torch.Tensor):
            return value
        if self.half and value.dtype == torch.float16:
            value = value.float()
        return value.detach().cpu().numpy()

    def to_host(self, value: Any) -> np.ndarray:
        """A graph output as a numpy array the caller owns."""
        if not isinstance(value, torch.Tensor):
            return np.asarray(value)
        if self.half and value.dtype == torch.float16:
            value = value.float()
        if self.cuda:
            out = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            out.copy_(value, non_blocking=True)
            torch.cuda.current_stream(self.torch_device).synchronize()
            return out.numpy()
        return value.detach().numpy().copy()

    def as_tensor(self, value: Any) -> torch.Tensor:
        """Any input as a tensor on the device (for ``evaluate_torch``, which takes tensors only)."""
        if isinstance(value, torch.Tensor):
            return value
        arr = np.asarray(value)
        return torch.as_tensor(np.array(arr) if not arr.flags.writeable else arr, device=self.torch_device)


class TorchNode:
    """One node's kernel as the executor calls it: the torch kernel, or the host kernel as a fallback."""

    def __init__(self, ctx: TorchBackend, op_type: str, host: Callable[[Sequence[Any]], list[Any]],
                 kernel: TorchKernel[Any] | CustomTorchKernel | None) -> None:
        self.ctx = ctx
        self.op_type = op_type
        self.host = host
        self.kernel = kernel

    def __call__(self, inputs: Sequence[Any]) -> list[Any]:
        if self.kernel is not None:
            try:
                out = self.kernel.run(*inputs)
            except Fallback:
                pass
            except torch.cuda.OutOfMemoryError as exc:
                raise BackendError(f"{self.op_type} node {getattr(self.host, 'name', '')!r}: out of memory on "
                                   f"{self.ctx.device} ({exc}); use a smaller batch") from exc
            except Exception as exc:  # noqa: BLE001 - the host op reports bad inputs with the node's identity
                log.debug("torch %s failed (%s); running the numpy op", self.op_type, exc)
            else:
                return list(out) if isinstance(out, (tuple, list)) else [out]
        self.ctx.fallbacks[self.op_type] += 1
        results = self.host([self.ctx.host_value(v) for v in inputs])
        return [self.ctx.device_value(r) for r in results]


class CustomTorchKernel:
    """A custom layer's ``evaluate_torch``, fed tensors on the device."""

    def __init__(self, ctx: TorchBackend, layer_kernel: Any) -> None:
        self.ctx = ctx
        self.layer_kernel = layer_kernel

    def run(self, *inputs: Any) -> list[torch.Tensor]:
        data = [None if v is None else self.ctx.as_tensor(v) for v in self.layer_kernel.data_inputs(inputs)]
        return self.layer_kernel.check_outputs(self.layer_kernel.layer.evaluate_torch(data), data)


def fallback_counts(kernels: Mapping[str, Any] | Sequence[Any]) -> dict[str, int]:
    """Host fallbacks so far, by op type, over the given kernels' contexts (one count per context)."""
    seen: dict[int, TorchBackend] = {}
    for k in (kernels.values() if isinstance(kernels, Mapping) else kernels):
        ctx = getattr(k, "ctx", None)
        if isinstance(ctx, TorchBackend):
            seen[id(ctx)] = ctx
    total: Counter[str] = Counter()
    for ctx in seen.values():
        total.update(ctx.fallbacks)
    return dict(total)
