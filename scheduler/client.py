"""The Python client: submit image sets as jobs, follow them, cancel them, collect results.

    from scheduler.client import Client

    client = Client("redis://localhost:6379/0")          # or Client.from_settings(SchedulerSettings.from_env())
    job = client.submit(["photos/"], model="style:2@lut4", inputs={"style_weights": weights}, out="out/")
    final = job.wait(progress=lambda rec: print(rec.done, "/", rec.total))
    print(final.status, job.failures())

The CLI is a thin layer over this class; nothing here prints or exits, so it
can be used from a web app as it is.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import redis
from celery import Celery

from engine.images import ResizePolicy, resize_policy
from scheduler import blobs
from scheduler.broker import QueueConfig, make_app
from scheduler.exceptions import JobTimeoutError, NoImagesError
from scheduler.inputs import InputItem, Rejected, scan_inputs
from scheduler.jobs import RedisJob
from scheduler.model_refs import model_needs, resolve_model
from scheduler.protocol import ChunkItem, send_chunk
from scheduler.records import DEFAULT_PRIORITY, JobRecord, JobStatus, Transport, new_job_id
from scheduler.registry import WorkerInfo, live_workers
from scheduler.routing import choose_queue
from scheduler.settings import DEFAULT_BLOB_TTL, DEFAULT_REDIS_URL, SchedulerSettings
from store.fetch import ModelFetcher, default_fetcher

DEFAULT_CHUNK_SIZE = 32


def input_value(value: Any) -> Any:
    """A non-image input value as JSON (numbers and nested lists); arrays and ``@file.npy`` accepted."""
    if isinstance(value, str) and value.startswith("@"):
        value = np.load(value[1:], allow_pickle=False)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [input_value(v) for v in value]
    if isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"input value {value!r}: give a number, a list of numbers, an array or @file.npy")


class Job:
    """A submitted job. Cheap to create: it holds only the id and the connection."""

    def __init__(self, client: Client, job_id: str, rejected_inputs: list[Rejected] | None = None) -> None:
        self.client = client
        self.id = job_id
        self.rejected_inputs = rejected_inputs or []  # as found by submit; also in Redis, see rejected()
        self.record = RedisJob(client.r, job_id)

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobRecord:
        """The job record now: status, counters, request."""
        return self.record.load()

    def wait(self, progress: Callable[[JobRecord], None] | None = None, timeout: float | None = None,
             poll: float = 0.25) -> JobRecord:
        """Block until the job ends (done, failed or cancelled); calls ``progress`` with each new snapshot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            record = self.status()
            state = (record.status, record.done, record.failed, record.skipped)
            if progress is not None and state != last:
                progress(record)
            last = state
            if record.status.terminal:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeoutError(f"job {self.id} still {record.status.value} after {timeout} s "
                                 f"({record.finished_items}/{record.total} items finished)")
            time.sleep(poll)

    def cancel(self) -> bool:
        """Drop the job's queued items (running ones finish). False if the job had already ended."""
        return self.record.cancel()

    def failures(self) -> list[dict[str, Any]]:
        """Items that failed on a worker: ``{"index", "file", "reason"}``."""
        return self.record.failures()

    def rejected(self) -> list[dict[str, str]]:
        """Inputs refused before queueing: ``{"file", "reason"}``."""
        return self.record.rejected()

    def results(self, out: str | os.PathLike[str]) -> list[Path]:
        """Put the job's output files under ``out``; returns their paths.

        Redis transport: fetched from the job's outputs hash. Path transport:
        the outputs already lie in the job's ``out``; they are copied when
        ``out`` is another directory.
        """
        record = self.status()
        dest = Path(out)
        if record.transport is Transport.REDIS:
            return blobs.fetch_outputs(self.client.r, self.id, dest)
        src = Path(record.out)
        if dest.resolve() != src.resolve():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        return sorted(p for p in dest.rglob("*") if p.is_file() and not p.name.startswith("."))


ROUTING_CACHE_S = 1.0  # how stale the live-worker list that routes `--device auto` jobs may be (heartbeats: 10 s)


class Client:
    def __init__(self, redis_url: str | None = None, connection: redis.Redis | None = None, *,
                 blob_ttl: int = DEFAULT_BLOB_TTL, fetcher: ModelFetcher | None = None) -> None:
        """``redis_url``: the fleet's Redis (default :data:`DEFAULT_REDIS_URL`). ``connection`` replaces the
        client built from it for the job record (publishing still goes through Celery to ``redis_url``).
        ``blob_ttl``: seconds blobs of ``transport="redis"`` jobs live. ``fetcher`` resolves store
        references (default: this process's :func:`store.fetch.default_fetcher`)."""
        self.redis_url = redis_url or DEFAULT_REDIS_URL
        self.r = connection if connection is not None else redis.Redis.from_url(self.redis_url)
        self.blob_ttl = blob_ttl
        self._fetcher = fetcher
        self._app: Celery | None = None
        self._workers: tuple[float, list[WorkerInfo]] = (-1e9, [])
        self._workers_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: SchedulerSettings) -> Client:
        return cls(settings.fleet_redis_url, blob_ttl=settings.blob_ttl,
                   fetcher=ModelFetcher.from_settings(settings.store))

    @property
    def fetcher(self) -> ModelFetcher:
        return self._fetcher if self._fetcher is not None else default_fetcher()

    @property
    def app(self) -> Celery:
        """The Celery app, built on first publish."""
        if self._app is None:
            self._app = make_app(QueueConfig(redis_url=self.redis_url))
        return self._app

    def _live_workers(self) -> list[WorkerInfo]:
        """Live workers for routing, read at most once per :data:`ROUTING_CACHE_S` (a burst of submits from
        a web app then costs Redis one registry read, not one per job)."""
        with self._workers_lock:
            read_at, workers = self._workers
            if time.monotonic() - read_at > ROUTING_CACHE_S:
                workers = live_workers(self.r)
                self._workers = (time.monotonic(), workers)
            return workers

    def job(self, job_id: str) -> Job:
        RedisJob(self.r, job_id).load()  # raises JobNotFoundError
        return Job(self, job_id)

    def jobs(self, limit: int = 50) -> list[JobRecord]:
        return RedisJob.recent(self.r, limit)

    def workers(self) -> list[WorkerInfo]:
        return live_workers(self.r)

    def submit(self, images: Iterable[str | os.PathLike[str]], *, model: str, out: str | os.PathLike[str],
               inputs: Mapping[str, Any] | None = None, device: str = "auto", priority: int = DEFAULT_PRIORITY,
               chunk_size: int = DEFAULT_CHUNK_SIZE, transport: Transport | str = Transport.PATH,
               resize: ResizePolicy | str = ResizePolicy.FIT, check: bool = True) -> Job:
        """Scan ``images`` (files, directories, globs, list files), record a job, and queue it in chunks.

        ``model`` is a store reference ``name[:version][@variant]`` (pinned to its version now, so the
        whole job runs one version) or a ``.corral`` path the workers also see.

        Inputs that are plainly not images are left out and reported
        (``Job.rejected_inputs``); if none is left, :class:`NoImagesError`.
        ``transport="redis"`` uploads the images into Redis (for workers that
        do not share the producer's files) and keeps outputs there until
        :meth:`Job.results` fetches them.
        """
        try:
            transport = Transport(transport)
        except ValueError:
            raise ValueError(f"transport {transport!r}: use 'path' (shared files) or 'redis' (blobs)") from None
        resize = resize_policy(resize)
        if not 1 <= chunk_size <= 1024:
            raise ValueError(f"chunk_size {chunk_size}: use 1..1024 items per message")
        model_path = resolve_model(model, self.fetcher)
        items, rejects = scan_inputs([images] if isinstance(images, (str, os.PathLike)) else images, check)
        if not items:
            raise NoImagesError(rejects)
        out_dir = Path(out).absolute()
        if transport is Transport.PATH:
            out_dir.mkdir(parents=True, exist_ok=True)
        record = JobRecord(
            id=new_job_id(), model=model, model_path=model_path, out=str(out_dir), transport=transport,
            inputs={k: input_value(v) for k, v in (inputs or {}).items()}, device=device,
            queue=choose_queue(self.r, device, lambda: model_needs(model_path, self.fetcher), self._live_workers),
            priority=max(0, min(9, priority)), chunk_size=chunk_size, total=len(items), rejected=len(rejects),
            resize=resize, blob_ttl=self.blob_ttl)
        # One round trip makes the job: its record, its rejected inputs and, for shared paths, every chunk's
        # record; uploaded chunks are recorded as their blobs are stored.
        ready = list(enumerate(self._path_chunks(record, items))) if transport is Transport.PATH else []
        RedisJob.create(self.r, record, rejected=[{"file": r.file, "reason": r.reason} for r in rejects],
                              chunks=ready)
        with self.app.producer_or_acquire() as producer:
            for n, chunk in ready or self._uploaded_chunks(record, items):
                send_chunk(self.app, record.id, n, chunk, queue=record.queue, priority=record.priority,
                           producer=producer)
        return Job(self, record.id, rejects)

    @staticmethod
    def _path_chunks(record: JobRecord, items: list[InputItem]) -> Iterator[list[dict[str, Any]]]:
        size = record.chunk_size
        for start in range(0, len(items), size):
            yield [ChunkItem(i, it.name, str(it.path)).to_message()
                   for i, it in enumerate(items[start:start + size], start)]

    def _uploaded_chunks(self, record: JobRecord, items: list[InputItem]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Redis transport: each chunk, recorded, as soon as its blobs are stored (uploads stay windowed)."""
        job = RedisJob(self.r, record.id)

        def recorded(n: int, chunk: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
            with self.r.pipeline(transaction=False) as p:
                job.publish_chunks_on(p, [(n, chunk)])
                p.execute()
            return n, chunk

        size, n = record.chunk_size, 0
        pending: list[dict[str, Any]] = []
        for stored in blobs.upload_inputs(self.r, record.id, ((i, it.path) for i, it in enumerate(items)),
                                          ttl=record.blob_ttl):
            pending.extend(ChunkItem(i, items[i].name).to_message() for i in stored)
            while len(pending) >= size:
                yield recorded(n, pending[:size])
                pending, n = pending[size:], n + 1
        if pending:
            yield recorded(n, pending)


__all__ = ["Client", "Job", "JobRecord", "JobStatus"]
