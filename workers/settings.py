"""One worker's settings, read from the environment in this one place.

``corral worker`` builds a :class:`WorkerSettings` with
:meth:`WorkerSettings.from_env` and its options; the runtime, batcher and
model cache take the values as parameters and never read the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from scheduler.routing import queue_for_device
from scheduler.settings import DEFAULT_REDIS_URL, ENV_NUM_THREADS, ENV_REDIS_URL
from store.settings import StoreSettings
from workers.app import DEFAULT_VISIBILITY_TIMEOUT
from workers.batcher import BatcherConfig
from workers.compute import supported as compute_process_supported
from workers.exceptions import WorkerError

# The environment variables this package reads (see the README's configuration table).
ENV_VISIBILITY_TIMEOUT = "CORRAL_VISIBILITY_TIMEOUT"
ENV_METRICS_PORT = "CORRAL_METRICS_PORT"
ENV_PLUGINS = "CORRAL_PLUGINS"


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
    # interval. 0.5 ms against 5 ms: a 200-image job ran 8 % and 6 % faster at the median of two interleaved
    # runs (10 and 14 pairs of workers side by side, multistyle26 128², 2 cores). With the compute process
    # it made no measurable difference (10 pairs, 2 decode and 2 write threads, 5 ms against 0.5 ms: 1.02 at
    # the median, 5 of 10 faster).
    switch_interval_ms: float = 0.5
    store: StoreSettings = field(default_factory=StoreSettings)
    # Where models are compiled and batches run: "process", a child process of the worker's own, whose GIL
    # the worker's decode, write and Celery threads do not share (see workers.compute); "thread", the
    # worker's device thread in this process (platforms without memfd_create).
    compute: str = field(default_factory=lambda: "process" if compute_process_supported() else "thread")

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
        values: dict[str, object] = {"store": StoreSettings.from_env(env)}
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

    def with_(self, **changes: object) -> WorkerSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
