"""Everything one worker process holds: its device, model cache, batcher, heartbeat and metrics."""

from __future__ import annotations

import os
import socket
import sys
import time
from concurrent.futures import Future
from importlib import metadata

import redis
from celery import Celery

from engine.memory import retain_freed_memory
from scheduler.protocol import ChunkItem
from scheduler.records import JobRecord, Outcome
from scheduler.registry import WorkerInfo
from store.fetch import ModelFetcher
from workers import metrics
from workers.batcher import Batcher
from workers.compute import ComputeProcess, ComputeSettings
from workers.exceptions import NoRuntimeError
from workers.heartbeat import Heartbeat
from workers.models import LocalModels, ModelKey, Models, compiled_models
from workers.outcomes import ChunkSettlement, OutcomeReporter
from workers.settings import ComputeMode, WorkerSettings
from workers.sweeper import BrokerLayout, ChunkSweeper, celery_republisher

__all__ = ["WorkerRuntime", "WorkerSettings", "current_runtime", "set_runtime"]


def custom_implementations() -> list[str]:
    """Custom layer and model classes this process can provide: registered ones and entry point names."""
    from engine.custom import LAYER_GROUP, MODEL_GROUP, registered

    names = {n for group in registered().values() for n in group}
    for group in (LAYER_GROUP, MODEL_GROUP):
        names.update(ep.name for ep in metadata.entry_points(group=group))
    return sorted(names)


def supported_ops() -> list[str]:
    from engine.ops import SUPPORTED_OPS

    return sorted(SUPPORTED_OPS)


class _MeteredBatcher(Batcher):
    """The batcher, with each item's outcome counted for the metrics endpoint."""

    def submit(self, job: JobRecord, items: list[ChunkItem],
               chunk: ChunkSettlement | None = None) -> list[Future[Outcome]]:
        futures = super().submit(job, items, chunk)
        for fut in futures:
            fut.add_done_callback(_count_outcome)
        return futures


def _count_outcome(fut: Future[Outcome]) -> None:
    if fut.cancelled() or fut.exception() is not None:
        return  # handed back (Requeue) or not counted: another delivery will finish the item
    metrics.observe_item(Outcome(fut.result()).value)


def apply_thread_settings(settings: WorkerSettings) -> None:
    """The process-wide thread settings of a worker: the engine's kernel threads and the GIL switch interval."""
    from engine.ops.threads import set_num_threads

    if settings.num_threads is not None:
        set_num_threads(settings.num_threads)
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)


class WorkerRuntime:
    def __init__(self, settings: WorkerSettings, fetcher: ModelFetcher | None = None) -> None:
        """``fetcher``: how models are fetched when they are loaded in this process (``compute="thread"``);
        a compute process builds its own from ``settings.store``."""
        # Before any thread starts (see engine.memory): decoded tensors and, with --compute thread, each
        # batch's activations reuse freed pages.
        retain_freed_memory()
        self.settings = settings
        self.backend = settings.resolved_backend()
        self.r = redis.Redis.from_url(settings.redis_url)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{settings.device}"
        self.started = time.time()
        self.models: Models
        self.compute: ComputeProcess | None
        if settings.compute is ComputeMode.PROCESS:
            self.models = self.compute = ComputeProcess(ComputeSettings.of(settings))
        else:
            self.compute = None
            fetcher = fetcher if fetcher is not None else ModelFetcher.from_settings(settings.store)
            self.models = LocalModels(compiled_models(fetcher, settings.memory_budget))
        self.reporter = OutcomeReporter(self.r, self.id)
        self.batcher = _MeteredBatcher(self.r, self.models, self.model_key, settings.batcher, self.reporter)
        self.heartbeat = Heartbeat(self.r, self.info)
        self.metrics_url = ""
        self._ops = supported_ops()
        self._custom: list[str] = []
        self.sweeper: ChunkSweeper | None = None

    def model_key(self, job: JobRecord) -> ModelKey:
        return ModelKey(job.model_path, self.backend, self.settings.device, self.settings.precision)

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id, hostname=socket.gethostname(), pid=os.getpid(), device=self.settings.device,
            backend=self.backend, queue=self.settings.queue, warm_models=[k.ref for k in self.models.warm()],
            backlog=self.batcher.backlog, max_batch=self.settings.batcher.max_batch,
            batch_sizes={str(k): v for k, v in sorted(self.batcher.batch_sizes.items())}, started=self.started,
            ops=self._ops, custom=self._custom, metrics_url=self.metrics_url)

    def start(self, app: Celery | None = None) -> None:
        """Load plugins, apply the thread budget, open the metrics endpoint, then start heartbeating and,
        given the worker's Celery ``app``, sweeping for lost chunks."""
        from engine.custom import load_plugins

        load_plugins(list(self.settings.plugins))
        self._custom = custom_implementations()
        apply_thread_settings(self.settings)
        compute = self.compute
        if compute is not None:
            compute.start()  # it imports the engine while Celery starts up
            metrics.export_fetches(lambda: compute.state.metrics)
        metrics.track(lambda: self.batcher.backlog, lambda: self.models.used_bytes)
        if self.settings.metrics_port:
            port = metrics.serve(self.settings.metrics_port, self.settings.metrics_host)
            host = socket.gethostname() if self.settings.metrics_host in ("0.0.0.0", "::") else \
                self.settings.metrics_host
            self.metrics_url = f"http://{host}:{port}/metrics"
        self.heartbeat.start()
        if app is not None:
            self.sweeper = ChunkSweeper(self.r, BrokerLayout.from_app(app), celery_republisher(app), self.id,
                                        self.settings.sweep_interval)
            self.sweeper.start()

    def drain(self) -> None:
        self.batcher.drain()

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
        self.batcher.close()
        self.models.close()
        self.heartbeat.stop()


_current: WorkerRuntime | None = None


def set_runtime(runtime: WorkerRuntime | None) -> None:
    global _current
    _current = runtime


def current_runtime() -> WorkerRuntime:
    if _current is None:
        raise NoRuntimeError("no corral worker runtime in this process; start workers with `corral worker`")
    return _current
