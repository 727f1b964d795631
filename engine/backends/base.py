"""The backend contract: one class per backend, bound to a device and precision, looked up by name.

The compiler creates a backend with :meth:`Backend.create` (device, precision
and the backend's own options checked there) and then asks it for the
graph's kernels (:meth:`Backend.lower`). The executor calls those kernels in
node order, moving values across the backend's boundary with
:meth:`Backend.to_device` / :meth:`Backend.to_host` when the backend keeps
values on a device (``DEVICE_VALUES``).

Two shapes of backend fit this contract:

* node by node (numpy, torch): :meth:`Backend.build_kernel` makes one kernel
  per node, and :meth:`Backend.lower` keeps the node list as it is;
* whole graphs (onnxruntime): :meth:`Backend.lower` replaces runs of nodes by
  one segment node whose kernel runs them all, with custom layers between
  segments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from engine.exceptions import BackendError
from engine.graph import CUSTOM_DOMAIN, Node

# A kernel takes a node's input values (None for an omitted optional input) and returns its outputs.
Kernel = Callable[[Sequence[Any]], list[Any]]

# On a CPU, one run's batched inputs hold at most this many elements (a 512² RGB image; always at least one
# item): a stacked batch's intermediates then still fit the caches, which is where a batch beats a loop
# (bench/engine.py's batch rows measure it; the run tuner picks among the layouts a backend offers).
# A GPU has no such limit.
CPU_RUN_ELEMENTS = 3 * 512 * 512


def cpu_run_items(item_elements: int) -> int:
    """Items per run on a CPU under :data:`CPU_RUN_ELEMENTS` (at least one)."""
    return max(1, CPU_RUN_ELEMENTS // max(1, item_elements))


@dataclass
class LoweredGraph:
    """What a backend makes of an optimized graph: the nodes the executor steps through and their kernels.

    ``constants`` names the weights the executor must still hold (inputs of
    nodes that read them at run time); a backend that bakes weights into its
    own kernels lists fewer. ``artifacts`` are bytes the backend wants kept in
    the compiled-model cache (e.g. onnxruntime's optimized model), keyed by a
    name of its choosing; they come back through :meth:`Backend.lower`.
    """

    nodes: list[Node]
    kernels: list[Kernel]
    constants: set[str]
    artifacts: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class RunLayout:
    """How one group of same-shape items runs: ``lanes`` concurrent runs, at most ``per_run`` items each.

    ``per_run`` None means as many items as the lane holds.
    """

    lanes: int = 1
    per_run: int | None = None


class Backend:
    """A backend bound to one device and precision; subclasses set the class attributes and kernels."""

    NAME: ClassVar[str] = ""
    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32",)
    # The backend's own compile options and their types (``compile(..., backend_options=...)``).
    OPTIONS: ClassVar[Mapping[str, type]] = {}
    # Graph passes whose rewrites this backend cannot take (see engine.passes.PASS_NAMES).
    SKIP_PASSES: ClassVar[tuple[str, ...]] = ()
    # Whether values between nodes live on a device (to_device / to_host move them across).
    DEVICE_VALUES: ClassVar[bool] = False
    # How to get a CUDA device for this backend, for the message refusing fp16 on the CPU.
    CUDA_HINT: ClassVar[str] = "on a GPU machine"

    def __init__(self, device: str, precision: str, options: Mapping[str, Any]) -> None:
        self.device = device
        self.precision = precision
        self.options = dict(options)

    # ------------------------------------------------------------ creation
    @classmethod
    def check_device(cls, device: str) -> str:
        """The device name normalized (``cpu``, ``cuda:0`` …), or a :class:`BackendError` saying why not."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``options`` checked against :attr:`OPTIONS` (names and types); Nones dropped."""
        out: dict[str, Any] = {}
        for name, value in (options or {}).items():
            kind = cls.OPTIONS.get(name)
            if kind is None:
                if not cls.OPTIONS:
                    raise BackendError(f"the {cls.NAME} backend takes no backend options (got {name!r})")
                raise BackendError(f"the {cls.NAME} backend has no option {name!r}; it takes "
                                   f"{', '.join(sorted(cls.OPTIONS))}")
            if value is None:
                continue
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise BackendError(f"{cls.NAME} backend option {name}={value!r}: expected {kind.__name__}")
            if isinstance(value, int) and value < 0:
                raise BackendError(f"{cls.NAME} backend option {name}={value!r}: expected a non-negative number")
            out[name] = value
        return out

    @classmethod
    def check_precision(cls, precision: str, device: str) -> None:
        """One of :attr:`PRECISIONS`; fp16 only on a CUDA device (a CPU run never reports half-precision
        numbers it did not compute)."""
        if precision not in cls.PRECISIONS:
            if cls.PRECISIONS == ("fp32",):
                raise BackendError(f"the {cls.NAME} backend computes in float32 only, not {precision!r}; "
                                   "use --backend torch or onnxruntime with a CUDA device for fp16")
            raise BackendError(f"precision {precision!r} is unknown; choose one of {', '.join(cls.PRECISIONS)}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendError(f"precision fp16 needs a CUDA device; on the CPU the {cls.NAME} backend computes in "
                               f"float32 (use --precision fp32, or --device cuda:N {cls.CUDA_HINT})")

    @classmethod
    def create(cls, device: str = "cpu", precision: str = "fp32", **options: Any) -> Backend:
        """The backend bound to ``device`` and ``precision``; device, precision and options checked first."""
        device = cls.check_device(device)
        cls.check_precision(precision, device)
        return cls(device, precision, cls.check_options(options))

    def cache_tag(self) -> str:
        """Anything beyond package, backend, device and options that a compiled entry depends on."""
        return ""

    # ------------------------------------------------------------ kernels
    def build_kernel(self, node: Node) -> Kernel:
        """The kernel for one node of a default-domain op."""
        raise NotImplementedError

    def wrap_custom(self, node: Node, host_kernel: Kernel, device_kernel: Any | None) -> Kernel:
        """A custom layer's kernel: the host kernel, unless the backend can run ``device_kernel`` itself."""
        return host_kernel

    def lower(self, nodes: Sequence[Node], constants: Mapping[str, np.ndarray], inputs: Sequence[Any],
              outputs: Sequence[str], custom: Callable[[Node], Kernel],
              artifacts: Mapping[str, bytes]) -> LoweredGraph:
        """Kernels for the optimized graph; by default one per node (custom layers from ``custom``).

        ``inputs`` are the graph's input features (:class:`engine.description.Feature`).
        """
        kernels = [custom(n) if n.domain == CUSTOM_DOMAIN else self.build_kernel(n) for n in nodes]
        return LoweredGraph(list(nodes), kernels, set(constants))

    def prepack(self, node: Node, kernel: Kernel, weights: Mapping[str, Any]) -> bool:
        """Pack a node's constant weight into the layout its kernel computes with; True if it did."""
        return False

    def held_bytes(self, kernels: Sequence[Kernel]) -> int:
        """Bytes the backend's own kernels hold beyond the executor's weights (e.g. sessions' copies)."""
        return 0

    # ------------------------------------------------------------ values
    def to_device(self, value: Any) -> Any:
        """A graph input or weight on the backend's device (only called when ``DEVICE_VALUES``)."""
        return value

    def to_host(self, value: Any) -> np.ndarray:
        """A graph output as a numpy array (only called when ``DEVICE_VALUES``)."""
        return np.asarray(value)

    def run_context(self) -> contextlib.AbstractContextManager[Any]:
        """Entered around each graph run."""
        return contextlib.nullcontext()

    # ------------------------------------------------------------ batching
    def run_layouts(self, items: int, item_elements: int) -> list[RunLayout]:
        """Ways to run ``items`` same-shape items of ``item_elements`` input elements each, best guess first.

        With more than one, :class:`engine.run_tuner.RunTuner` measures them
        on real batches and keeps the fastest. The default: one lane, the
        whole group in one run.
        """
        return [RunLayout()]
