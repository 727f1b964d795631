"""One worker's settings, read from the environment in this one place.

``corral worker`` builds a :class:`WorkerSettings` with
:meth:`WorkerSettings.from_env` and its options; the runtime, batcher and
model cache take the values as parameters and never read the environment.
A leaf: it imports only other settings modules.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from scheduler.keys import queue_for_device
from scheduler.settings import DEFAULT_REDIS_URL, DEFAULT_VISIBILITY_TIMEOUT, ENV_NUM_THREADS, ENV_REDIS_URL
from store.settings import StoreClientSettings
from workers.exceptions import WorkerError

# The environment variables this package reads (see the README's configuration table).
ENV_VISIBILITY_TIMEOUT = "CORRAL_VISIBILITY_TIMEOUT"
ENV_METRICS_PORT = "CORRAL_METRICS_PORT"
ENV_PLUGINS = "CORRAL_PLUGINS"


class ComputeMode(str, Enum):
    """Where a worker compiles its models and runs its batches."""

    PROCESS = "process"  # a child process of its own, whose GIL decode, write and Celery threads do not share
    THREAD = "thread"  # the worker's device thread, in the worker process


def compute_process_supported() -> bool:
    """Whether this platform can run a compute process (anonymous shared memory files: Linux)."""
    return hasattr(os, "memfd_create")


def io_threads() -> int:
    """Decode threads, and write threads, by default: one per CPU this process may use, at most 4. More than
    the cores only contend for the GIL (measured by bench/queue.py)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus))


@dataclass
class BatcherConfig:
    max_batch: int = 16
    max_delay_ms: float = 20.0
    decode_threads: int = field(default_factory=io_threads)
    decode_ahead: int = 2  # batches' worth of items decoded ahead of the device: the next batch, and one filling
    writer_threads: int = field(default_factory=io_threads)  # PNG encoding and fsync release the GIL
    max_pixels: int = 100_000_000


@dataclass
class WorkerSettings:
    redis_url: str = DEFAULT_REDIS_URL
    device: str = "cpu"
    backend: str = "auto"
    precision: str = "fp32"  # fp16: torch backend on CUDA only (checked by `corral worker`)
    concurrency: int = 16
    memory_budget: int = 2 * 1024**3
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    metrics_port: int = 0  # 0: no Prometheus endpoint
    metrics_host: str = "0.0.0.0"
    plugins: tuple[str, ...] = ()  # modules that register custom layers / models
    num_threads: int | None = None  # the numpy engine's kernel threads; None: the CPUs this process may use
    # How long a thread may hold the GIL while another waits for it (Python's default is 5 ms). With
    # compute="thread", the device thread gives the GIL up at every numpy call and must win it back to start
    # the next; with decode and write threads running Python beside it, each win could wait out a whole
    # interval. A shorter interval made one worker's job faster with compute="thread" and changed nothing
    # measurable with the compute process (bench/compute_process.py).
    switch_interval_ms: float = 0.5
    store: StoreClientSettings = field(default_factory=StoreClientSettings)
    # the compute process (workers.compute) where the platform has one
    compute: ComputeMode = field(default_factory=lambda: ComputeMode.PROCESS if compute_process_supported()
                                 else ComputeMode.THREAD)

    def __post_init__(self) -> None:
        self.compute = ComputeMode(self.compute)

    @property
    def queue(self) -> str:
        return queue_for_device(self.device)

    @property
    def sweep_interval(self) -> float:
        """Seconds between lost-chunk sweeps: half the visibility timeout, within 1..30 s (a short test
        timeout also means quick sweeps)."""
        return min(30.0, max(1.0, self.visibility_timeout / 2))

    def resolved_backend(self) -> str:
        """The backend ``auto`` names on this worker's device (see :func:`engine.backends.resolve_backend`)."""
        if self.backend != "auto":
            return self.backend
        from engine.backends import resolve_backend  # looks packages up without importing them

        return resolve_backend("auto", self.device)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> WorkerSettings:
        """From ``CORRAL_REDIS_URL``, ``CORRAL_VISIBILITY_TIMEOUT``, ``CORRAL_METRICS_PORT``,
        ``CORRAL_PLUGINS``, ``CORRAL_NUM_THREADS`` and the store's variables; ``overrides`` that are
        not None win (command-line options)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"store": StoreClientSettings.from_env(env)}
        if env.get(ENV_REDIS_URL):
            values["redis_url"] = env[ENV_REDIS_URL]
        for key, name, kind in (("visibility_timeout", ENV_VISIBILITY_TIMEOUT, float),
                                ("metrics_port", ENV_METRICS_PORT, int), ("num_threads", ENV_NUM_THREADS, int)):
            if env.get(name):
                try:
                    values[key] = kind(env[name])
                except ValueError:
                    raise WorkerError(f"{name}={env[name]!r}: give a {'whole ' if kind is int else ''}number") from None
        if env.get(ENV_PLUGINS):
            values["plugins"] = tuple(p.strip() for p in env[ENV_PLUGINS].split(",") if p.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def with_(self, **changes: Any) -> WorkerSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
