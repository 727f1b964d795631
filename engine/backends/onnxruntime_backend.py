"""The onnxruntime backend: corral's optimized graph handed to an ``onnxruntime.InferenceSession``.

Compile runs corral's own passes (constants folded, BatchNormalization
folded into Conv, identities and dead nodes dropped; not the two fusions
into ops only corral's kernels know, which onnxruntime does its own way),
then :meth:`OnnxRuntimeBackend.lower` cuts the graph into segments: maximal
runs of ONNX-standard nodes, with custom layers between them. Each segment
becomes one ONNX model (opset 17, the model's flexible dimensions left
symbolic) run by a :class:`~engine.backends.onnxruntime_session.SegmentKernel`;
custom layers run their Python kernels on the host between segments. A
segment onnxruntime refuses runs on corral's numpy kernels instead, with one
log line saying why.

Threads: a run uses the engine's thread count as intra-op threads
(:func:`engine.ops.threads.num_threads`), or its lane's share of them when
``predict_batch`` runs lanes side by side (see :meth:`run_layouts`).

Options (``compile(..., backend_options={...})``, see ``OPTIONS``):

* ``lanes``: the most runs side by side on the CPU for one batch (0: as
  many as the threads allow, at most 2); 1 turns lanes off.
* ``spinning``: onnxruntime's intra-op threads spin between parallel
  sections (default on, as onnxruntime's own default: faster runs, CPU burnt
  while waiting; a process that does other work on the same cores may turn
  it off).

GPU: with onnxruntime-gpu, ``cuda:N`` uses the CUDA execution provider
(copies off the compute stream, so a batch's upload overlaps the previous
batch's compute when two run side by side, as :mod:`engine.pipeline` does),
and ``precision="fp16"`` converts the graph to half precision with float32
inputs and outputs (onnxconverter-common, from the 'gpu' extra).
"""

from __future__ import annotations

import hashlib
import logging
import platform
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from engine.backends.base import Backend, Kernel, LoweredGraph, RunLayout, cpu_run_items
from engine.backends.onnxruntime_session import SegmentKernel, SessionSettings
from engine.description import Feature
from engine.exceptions import BackendError, EngineError
from engine.graph import CUSTOM_DOMAIN, Node
from engine.ops import make_op
from engine.ops import threads as engine_threads

log = logging.getLogger(__name__)

NAME = "onnxruntime"
SEGMENT_OP = "OnnxRuntimeSegment"
SEGMENT_DOMAIN = "corral.onnxruntime"
MAX_LANES = 2


@cache
def _cpu_fingerprint() -> str:
    """The CPU's model and flags: onnxruntime's optimized models may use this CPU's instruction set."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read().splitlines() if ln.startswith(("model name", "flags", "Features"))]
        text += "\n".join(sorted(set(lines)))
    except OSError:
        text += platform.processor()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class OnnxRuntimeBackend(Backend):
    """onnxruntime bound to the CPU or one CUDA device."""

    NAME = NAME
    PRECISIONS = ("fp32", "fp16")
    OPTIONS: ClassVar[Mapping[str, type]] = {"lanes": int, "spinning": bool}
    # onnxruntime fuses activations into convolutions itself; corral's fused normalizations it takes as
    # InstanceNormalization, which it has no fusion of its own for (engine.exporters.onnx); and quantized
    # (QDQ) graphs keep their DequantizeLinear weights, which it fuses into its integer kernels
    SKIP_PASSES = ("fuse_activations", "dequantize_weights", "match_dynamic_quantization")
    CUDA_HINT = "with onnxruntime-gpu"

    def __init__(self, device: str, precision: str, options: Mapping[str, Any]) -> None:
        super().__init__(device, precision, options)
        self.cuda = device.startswith("cuda")
        if self.cuda:
            index = int(device.partition(":")[2] or 0)
            cuda_options = {"device_id": str(index), "do_copy_in_default_stream": "0"}
            providers: tuple[Any, ...] = (("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider")
        else:
            providers = ("CPUExecutionProvider",)
        self.settings = SessionSettings(providers=providers, spinning=bool(options.get("spinning", True)),
                                        keep_optimized=not self.cuda)
        # segments that fell back to numpy kernels, with the reason (see compiled.stats)
        self.fallbacks: dict[str, str] = {}

    @classmethod
    def check_device(cls, device: str) -> str:
        name = (device or "cpu").strip().lower()
        if name == "auto":
            name = "cuda" if cls.has_cuda() else "cpu"
        if name == "cpu":
            return "cpu"
        if name == "cuda" or name.startswith("cuda:"):
            if not cls.has_cuda():
                raise BackendError(f"device {device!r}: this onnxruntime ({ort.__version__}) has no CUDA execution "
                                   "provider; install onnxruntime-gpu (corral's 'gpu' extra) on a GPU machine")
            index = name.partition(":")[2] or "0"
            if not index.isdigit():
                raise BackendError(f"device {device!r}: expected cuda:N with N a device number")
            return f"cuda:{int(index)}"
        raise BackendError(f"device {device!r} is not one the onnxruntime backend knows; use cpu, cuda:N or auto")

    @staticmethod
    def has_cuda() -> bool:
        return "CUDAExecutionProvider" in ort.get_available_providers()

    def cache_tag(self) -> str:
        return f"onnxruntime={ort.__version__};cpu={_cpu_fingerprint()}"

    # ------------------------------------------------------------ kernels
    def build_kernel(self, node: Node) -> Kernel:
        """A node onnxruntime does not run (a refused segment's): corral's numpy op."""
        return make_op(node)

    def lower(self, nodes: Sequence[Node], constants: Mapping[str, np.ndarray], inputs: Sequence[Any],
              outputs: Sequence[str], custom: Callable[[Node], Kernel],
              artifacts: Mapping[str, bytes]) -> LoweredGraph:
        features: dict[str, Feature] = {f.name: f for f in inputs}
        lowered = LoweredGraph([], [], {o for o in outputs if o in constants}, {})
        groups = _partition(nodes, constants)
        later_reads = _reads_after(groups, outputs)
        for index, group in enumerate(groups):
            if isinstance(group, Node):  # a custom layer, or a node onnxruntime computes differently: on the host
                lowered.nodes.append(group)
                lowered.kernels.append(custom(group) if group.domain == CUSTOM_DOMAIN else make_op(group))
                lowered.constants |= {i for i in group.inputs if i in constants}
                continue
            seg_in, seg_out = _boundary(group, constants, later_reads[index])
            label = f"segment {index} ({len(group)} nodes)"
            key = f"segment{index}"

            def keep(data: bytes, key: str = key) -> None:
                lowered.artifacts[key] = data

            try:
                kernel = self._segment(label, group, constants, seg_in, seg_out, features, artifacts.get(key), keep)
            except EngineError as exc:
                self._fall_back(label, group, str(exc), lowered, constants)
                continue
            lowered.nodes.append(Node(op_type=SEGMENT_OP, inputs=seg_in, outputs=seg_out, name=key,
                                      domain=SEGMENT_DOMAIN))
            lowered.kernels.append(kernel)
        return lowered

    def _segment(self, label: str, nodes: list[Node], constants: Mapping[str, np.ndarray], seg_in: list[str],
                 seg_out: list[str], features: Mapping[str, Feature], optimized: bytes | None,
                 on_artifact: Callable[[bytes], None]) -> Kernel:
        if all(name in features for name in seg_in):
            def export() -> bytes:  # only when no cached optimized model serves: importing onnx is slow
                proto = _segment_model(nodes, constants, seg_in, seg_out, {n: features[n] for n in seg_in}, label)
                return self._final(proto, label)

            dtypes = {n: _feature_dtype(features[n]) for n in seg_in}
            kernel = SegmentKernel(label, export, seg_in, seg_out, dtypes, self.settings, optimized, on_artifact,
                                   fallback=lambda: self._numpy_segment(label, nodes, constants, seg_in, seg_out))
            try:
                kernel.prepare()
            except Exception as exc:
                raise EngineError(f"onnxruntime refused it ({str(exc).strip().splitlines()[0]})") from exc
            return kernel
        # after a custom layer: the value types are known only when the first run gets there
        return _TypedOnFirstRun(self, label, nodes, constants, seg_in, seg_out)

    def _numpy_segment(self, label: str, nodes: list[Node], constants: Mapping[str, Any], inputs: list[str],
                       outputs: list[str]) -> Kernel:
        """The segment on corral's numpy kernels, as one kernel (an executor of its own)."""
        from engine.runtime import Executor

        self.fallbacks[label] = "onnxruntime failed at run time"
        used = {i for n in nodes for i in n.inputs if i in constants}
        inner = Executor(nodes, [make_op(n) for n in nodes], {k: constants[k] for k in used}, outputs)
        return lambda values: [inner.run(dict(zip(inputs, values)))[o] for o in outputs]

    def _final(self, proto: Any, label: str) -> bytes:
        if self.precision == "fp16":
            try:
                from onnxconverter_common import float16
            except ImportError as exc:
                raise BackendError("precision fp16 on onnxruntime needs onnxconverter-common (corral's 'gpu' "
                                   f"extra): {exc}") from exc
            proto = float16.convert_float_to_float16(proto, keep_io_types=True)
        try:
            return proto.SerializeToString()
        except ValueError as exc:  # protobuf's 2 GiB limit
            raise EngineError(f"{label}: too large for one onnxruntime model ({exc})") from exc

    def _fall_back(self, label: str, nodes: list[Node], reason: str, lowered: LoweredGraph,
                   constants: Mapping[str, np.ndarray]) -> None:
        log.warning("onnxruntime cannot run %s: %s; those nodes run on corral's numpy kernels", label, reason)
        self.fallbacks[label] = reason
        for node in nodes:
            lowered.nodes.append(node)
            lowered.kernels.append(make_op(node))
            lowered.constants |= {i for i in node.inputs if i in constants}

    def held_bytes(self, kernels: Sequence[Kernel]) -> int:
        """Each session holds about its segment's weights: the model's size per session built."""
        return sum(k.held_bytes() for k in kernels if isinstance(k, SegmentKernel))

    # ------------------------------------------------------------ batching
    def lane_count(self) -> int:
        asked = int(self.options.get("lanes", 0) or 0)
        threads = engine_threads.num_threads()
        return max(1, min(threads, asked if asked else MAX_LANES))

    def run_layouts(self, items: int, item_elements: int) -> list[RunLayout]:
        """On the CPU: one item per run on lanes side by side, then stacked runs on lanes, then both on one
        lane. Stacked runs hold at most what fits the caches (:func:`cpu_run_items`). Which wins depends on
        the model (small ones stack; large activations leave the caches; thin graphs scale badly over
        threads), so the tuner measures them."""
        if self.cuda or items < 2:
            return [RunLayout()]
        stacked = min(items, cpu_run_items(item_elements))
        lanes = min(self.lane_count(), items)
        shapes = [1, stacked] if stacked > 1 else [1]
        layouts = [RunLayout(lanes, n) for n in shapes] if lanes > 1 else []
        return layouts + [RunLayout(1, n) for n in shapes]


class _TypedOnFirstRun:
    """A segment behind a custom layer: exported and built when the first run shows its input types."""

    def __init__(self, backend: OnnxRuntimeBackend, label: str, nodes: list[Node], constants: Mapping[str, Any],
                 inputs: list[str], outputs: list[str]) -> None:
        self.backend = backend
        self.label = label
        self.nodes = nodes
        self.constants = constants
        self.inputs = inputs
        self.outputs = outputs
        self.kernels: dict[tuple[tuple[str, int], ...], Kernel] = {}

    def __call__(self, args: Sequence[Any]) -> list[Any]:
        arrays = [np.asarray(a) for a in args]
        key = tuple((a.dtype.str, a.ndim) for a in arrays)
        kernel = self.kernels.get(key)
        if kernel is None:
            kernel = self.kernels[key] = self._build(arrays)
        return kernel(arrays)

    def _build(self, arrays: list[np.ndarray]) -> Kernel:
        from onnx import helper

        from engine.exporters.onnx import graph_to_onnx

        infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                               [f"{n}_d{i}" for i in range(a.ndim)])
                 for n, a in zip(self.inputs, arrays)]
        try:
            proto = graph_to_onnx(self.nodes, self.constants, infos, self.outputs, self.label)
            model = self.backend._final(proto, self.label)
            kernel = SegmentKernel(self.label, lambda: model, self.inputs, self.outputs,
                                   {n: a.dtype for n, a in zip(self.inputs, arrays)}, self.backend.settings)
            kernel.prepare()
            return kernel
        except Exception as exc:  # noqa: BLE001 - export and onnxruntime raise assorted types
            from engine.runtime import Executor

            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("onnxruntime cannot run %s: %s; those nodes run on corral's numpy kernels",
                        self.label, reason)
            self.backend.fallbacks[self.label] = reason
            used = {i for n in self.nodes for i in n.inputs if i in self.constants}
            inner = Executor(self.nodes, [make_op(n) for n in self.nodes],
                             {k: self.constants[k] for k in used}, self.outputs)
            return lambda values: [inner.run(dict(zip(self.inputs, values)))[o] for o in self.outputs]


def _feature_dtype(f: Feature) -> np.dtype:
    return np.dtype("float32" if f.kind == "image" else f.dtype)


def _segment_model(nodes: list[Node], constants: Mapping[str, np.ndarray], inputs: list[str], outputs: list[str],
                   features: Mapping[str, Feature], label: str) -> Any:
    from onnx import helper

    from engine.exporters.onnx import graph_to_onnx, input_dims

    infos = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(_feature_dtype(features[n])),
                                           input_dims(features[n])) for n in inputs]
    try:
        return graph_to_onnx(nodes, constants, infos, outputs, label)
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(f"it cannot be written as ONNX ({type(exc).__name__}: {exc})") from exc


def host_reason(node: Node, constants: Mapping[str, np.ndarray]) -> str | None:
    """Why a default-domain node runs on corral's numpy op between segments, or None.

    Only where onnxruntime (1.32) and ONNX's own reference disagree: Dropout
    in training mode (onnxruntime draws another mask), and Resize with
    ``align_corners`` when it shrinks (onnxruntime samples other points).
    """
    if node.op_type == "Dropout" and len(node.inputs) > 2 and node.inputs[2]:
        mode = constants.get(node.inputs[2])
        if mode is None or bool(np.asarray(mode).reshape(-1)[:1].any()):
            return "Dropout in training mode"
    if node.op_type == "Resize" and node.attrs.get("coordinate_transformation_mode") in ("align_corners", b"align_corners"):
        scales = constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if scales is None or np.asarray(scales).size == 0 or bool((np.asarray(scales) < 1).any()):
            return "Resize with align_corners that may shrink"
    return None


def _partition(nodes: Sequence[Node], constants: Mapping[str, np.ndarray]) -> list[list[Node] | Node]:
    """Maximal runs of nodes onnxruntime runs, with each custom-domain or host node on its own."""
    groups: list[list[Node] | Node] = []
    run: list[Node] = []
    for node in nodes:
        if node.domain == CUSTOM_DOMAIN or host_reason(node, constants) is not None:
            if run:
                groups.append(run)
                run = []
            groups.append(node)
        else:
            run.append(node)
    if run:
        groups.append(run)
    return groups


def _reads_after(groups: list[list[Node] | Node], outputs: Sequence[str]) -> list[set[str]]:
    """For each group, the values read by any later group or returned by the graph."""
    after: list[set[str]] = [set() for _ in groups]
    seen = set(outputs)
    for i in range(len(groups) - 1, -1, -1):
        after[i] = set(seen)
        group = groups[i]
        for node in [group] if isinstance(group, Node) else group:
            seen |= {v for v in node.inputs if v}
    return after


def _boundary(nodes: list[Node], constants: Mapping[str, Any], later: set[str]) -> tuple[list[str], list[str]]:
    """(values the segment reads from outside, values it produces that others read), in first-use order."""
    produced: list[str] = []
    made: set[str] = set()
    reads: list[str] = []
    for node in nodes:
        for v in node.inputs:
            if v and v not in made and v not in constants and v not in reads:
                reads.append(v)
        for v in node.outputs:
            if v:
                produced.append(v)
                made.add(v)
    return reads, [v for v in produced if v in later]
