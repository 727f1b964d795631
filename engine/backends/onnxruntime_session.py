"""onnxruntime sessions for graph segments: options, pools per thread count, the optimized-model artifact.

A :class:`SegmentKernel` runs one segment of corral's optimized graph (a run
of ONNX-standard nodes between custom layers; usually the whole graph) as
an ``onnxruntime.InferenceSession``. It keeps idle sessions per intra-op
thread count, so runs side by side (the engine's lanes, each on its share of
the threads) each get a session of their own while a single run uses all
the threads.

The first session of a segment is built from corral's graph with every
graph optimization on; onnxruntime's optimized model is kept (on the CPU)
and handed to the compiled-model cache, and later sessions, in this process
or a restarted one, load that model with optimizations off instead of
optimizing again.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.exceptions import OpError
from engine.ops import threads as engine_threads

log = logging.getLogger(__name__)

# onnxruntime writes its optimized model to a file; past protobuf's 2 GiB limit it would need external data.
MAX_ARTIFACT_BYTES = 1 << 30


@dataclass(frozen=True)
class SessionSettings:
    """What every session of one compiled model shares.

    ``providers`` is onnxruntime's execution-provider list; ``spinning``
    lets the intra-op threads spin between parallel sections (faster runs,
    CPU burnt while waiting); ``keep_optimized`` keeps onnxruntime's
    optimized model as an artifact (CPU only: a CUDA graph carries its
    device copies).
    """

    providers: tuple[Any, ...] = ("CPUExecutionProvider",)
    spinning: bool = True
    keep_optimized: bool = True

    def options(self, threads: int, optimized: bool) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized
                                       else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        so.log_severity_level = 3  # errors only: shape-mismatch warnings on symbolic batch dims are noise
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return so

    def session(self, model: bytes, threads: int, optimized: bool) -> tuple[ort.InferenceSession, bytes | None]:
        """A session for ``model``; with ``optimized`` False also onnxruntime's optimized model (or None)."""
        so = self.options(threads, optimized)
        if optimized or not self.keep_optimized or len(model) > MAX_ARTIFACT_BYTES:
            return ort.InferenceSession(model, so, providers=list(self.providers)), None
        with tempfile.TemporaryDirectory(prefix="corral-ort-") as tmp:
            path = os.path.join(tmp, "optimized.onnx")
            so.optimized_model_filepath = path
            session = ort.InferenceSession(model, so, providers=list(self.providers))
            try:
                with open(path, "rb") as f:
                    return session, f.read()
            except OSError:
                return session, None


class SessionPool:
    """Idle sessions of one model, by thread count; a run takes one (or builds one) and gives it back."""

    def __init__(self, build: Callable[[int], ort.InferenceSession]) -> None:
        self._build = build
        self._idle: dict[int, list[ort.InferenceSession]] = {}
        self._lock = threading.Lock()
        self.built = 0

    def acquire(self, threads: int) -> ort.InferenceSession:
        with self._lock:
            idle = self._idle.get(threads)
            if idle:
                return idle.pop()
        session = self._build(threads)
        with self._lock:
            self.built += 1
        return session

    def release(self, threads: int, session: ort.InferenceSession) -> None:
        with self._lock:
            self._idle.setdefault(threads, []).append(session)

    def add(self, threads: int, session: ort.InferenceSession) -> None:
        self.release(threads, session)
        with self._lock:
            self.built += 1


def as_feed(value: Any, dtype: np.dtype | None) -> np.ndarray:
    """A C-contiguous array of the input's dtype (0-d kept 0-d), as onnxruntime takes it."""
    arr = np.asarray(value)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return arr if arr.flags.c_contiguous else np.array(arr, order="C")


class SegmentKernel:
    """One segment as a kernel: its inputs in ``inputs`` order, its outputs in ``outputs`` order.

    ``model`` makes the segment's ONNX model (serialized), asked only when
    no session can be built from ``optimized``, an earlier optimized form of
    it the cache had. ``on_artifact``
    receives onnxruntime's optimized model the first time one is made.
    ``fallback`` makes the same segment on corral's numpy kernels: a run
    onnxruntime fails is run there, and if that works (onnxruntime lacks
    what the graph uses, e.g. dilated convolutions with ``auto_pad``), the
    segment stays there, with one log line saying why.
    """

    def __init__(self, label: str, model: Callable[[], bytes], inputs: Sequence[str], outputs: Sequence[str],
                 input_dtypes: Mapping[str, np.dtype], settings: SessionSettings,
                 optimized: bytes | None = None, on_artifact: Callable[[bytes], None] | None = None,
                 fallback: Callable[[], Callable[[Sequence[Any]], list[Any]]] | None = None) -> None:
        self.label = label
        self._export = model
        self._model: bytes | None = None
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.dtypes = [input_dtypes.get(n) for n in self.inputs]
        self.settings = settings
        self.optimized = optimized
        self.on_artifact = on_artifact
        self._artifact_lock = threading.Lock()
        self.pool = SessionPool(self._build)
        self.make_fallback = fallback
        self.fallback: Callable[[Sequence[Any]], list[Any]] | None = None
        self.fallback_reason = ""

    @property
    def model(self) -> bytes:
        """The segment as an ONNX model (made on first use)."""
        if self._model is None:
            self._model = self._export()
        return self._model

    def _build(self, threads: int) -> ort.InferenceSession:
        optimized = self.optimized
        if optimized is not None:
            try:
                return self.settings.session(optimized, threads, optimized=True)[0]
            except Exception as exc:  # noqa: BLE001 - a stale artifact is rebuilt, never fatal
                log.warning("%s: onnxruntime rejected the cached optimized model (%s); optimizing again",
                            self.label, exc)
                self.optimized = None
        session, artifact = self.settings.session(self.model, threads, optimized=False)
        if artifact is not None:
            with self._artifact_lock:
                if self.optimized is None:
                    self.optimized = artifact
                    if self.on_artifact is not None:
                        self.on_artifact(artifact)
        return session

    def held_bytes(self) -> int:
        return len(self.optimized or self.model) * max(1, self.pool.built)

    def prepare(self, threads: int | None = None) -> None:
        """Build one session now (compile time), so that errors surface before the first run."""
        count = engine_threads.num_threads() if threads is None else threads
        self.pool.add(count, self._build(count))

    def __call__(self, args: Sequence[Any]) -> list[Any]:
        if self.fallback is not None:
            return self.fallback(args)
        feeds = {name: as_feed(v, dt) for name, v, dt in zip(self.inputs, args, self.dtypes)}
        threads = engine_threads.num_threads()
        session = self.pool.acquire(threads)
        try:
            return list(session.run(self.outputs, feeds))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are pybind types without a common base
            failure = exc
        finally:
            self.pool.release(threads, session)
        reason = _first_line(failure)
        if self.make_fallback is None:
            raise OpError("onnxruntime", self.label, reason, [list(np.shape(v)) for v in feeds.values()]) from failure
        fallback = self.make_fallback()
        results = fallback(args)  # corral's own error (naming the node) when the input is what is wrong
        log.warning("onnxruntime cannot run %s (%s); it runs on corral's numpy kernels from now on",
                    self.label, reason)
        self.fallback, self.fallback_reason = fallback, reason
        return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
