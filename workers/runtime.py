"""Everything one worker process holds: its device, model cache, batcher and heartbeat."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

import redis

import engine
from engine.runtime import CompiledModel
from scheduler.jobs import JobRecord, load_job
from scheduler.registry import WorkerInfo
from scheduler.routing import queue_for_device
from workers.batcher import Batcher, BatcherConfig
from workers.heartbeat import Heartbeat
from workers.model_cache import ModelCache

ModelKey = tuple[str, str, str]  # (package path, backend, device)


@dataclass
class WorkerSettings:
    redis_url: str
    device: str = "cpu"
    backend: str = "auto"
    concurrency: int = 16
    memory_budget: int = 2 * 1024**3
    batcher: BatcherConfig = field(default_factory=BatcherConfig)

    @property
    def queue(self) -> str:
        return queue_for_device(self.device)

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "torch" if self.device.startswith("cuda") else "numpy"


class WorkerRuntime:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.backend = settings.resolved_backend()
        self.r = redis.Redis.from_url(settings.redis_url)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{settings.device}"
        self.started = time.time()
        self.cache: ModelCache[ModelKey, CompiledModel] = ModelCache(self._load, settings.memory_budget)
        self.batcher = Batcher(self.r, self.cache, self.model_key, settings.batcher, worker_id=self.id)
        self.heartbeat = Heartbeat(self.r, self.info)
        self._jobs: dict[str, JobRecord] = {}
        self._jobs_lock = threading.Lock()

    def model_key(self, job: JobRecord) -> ModelKey:
        return (job.model_path, self.backend, self.settings.device)

    def _load(self, key: ModelKey) -> CompiledModel:
        path, backend, device = key
        return engine.compile(engine.load(path), backend=backend, device=device)

    def job(self, job_id: str) -> JobRecord:
        """The job's request (immutable once submitted, so cached; status is read separately)."""
        with self._jobs_lock:
            record = self._jobs.get(job_id)
        if record is None:
            record = load_job(self.r, job_id)
            with self._jobs_lock:
                if len(self._jobs) > 1000:
                    self._jobs.clear()
                self._jobs[job_id] = record
        return record

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id, hostname=socket.gethostname(), pid=os.getpid(), device=self.settings.device,
            backend=self.backend, queue=self.settings.queue, warm_models=[k[0] for k in self.cache.warm()],
            backlog=self.batcher.backlog, max_batch=self.settings.batcher.max_batch,
            batch_sizes={str(k): v for k, v in sorted(self.batcher.batch_sizes.items())}, started=self.started)

    def start(self) -> None:
        self.heartbeat.start()

    def drain(self) -> None:
        self.batcher.drain()

    def close(self) -> None:
        self.batcher.close()
        self.heartbeat.stop()


_current: WorkerRuntime | None = None


def set_runtime(runtime: WorkerRuntime | None) -> None:
    global _current
    _current = runtime


def current_runtime() -> WorkerRuntime:
    if _current is None:
        raise RuntimeError("no corral worker runtime in this process; start workers with `corral worker`")
    return _current
