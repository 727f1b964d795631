"""The dynamic batcher: items from any chunk of any job, grouped into batch predictions on one device thread.

Flow of one item::

    submit ──> intake ──> decode pool: read, decode, map to a tensor ──> pending group
           (model, non-image inputs, tensor shapes)
    device thread: picks a group when it holds max_batch items, or when its
    oldest item has waited max_delay_ms (twice that while other accepted
    items are still being decoded); runs predict_batch
    ──> writer pool: each item's outputs written (encoded, fsynced) in parallel
    ──> the batch's last write syncs the output directories (the renames become durable), then counts
        the outcomes of every job in it, one round trip ──> futures resolved

Decoding and writing run on thread pools while the device thread computes,
so the device is fed the next batch as soon as it finishes one; the device
thread itself never waits on Redis or on disk. Decoding is paced: only
``decode_ahead`` batches' worth of items are decoded or waiting in groups at
once, the rest wait undecoded in the intake. A worker that has prefetched
hundreds of items therefore holds a few batches of tensors, not hundreds, and
decodes them a batch at a time beside the device instead of in one burst that
would take the CPU from the first batches. Groups are keyed across
chunks *and* jobs: sixteen one-image jobs for the same model and image size
become one batch of sixteen. Outcomes are counted in one pipeline per batch
(one script call per job in it, see :func:`scheduler.jobs.queue_outcomes`),
so Redis sees one round trip per batch however many jobs it serves.

An item's future resolves only after its output is durable and its outcome
counted; the chunk task waits for all of its items' futures before
returning, which is when Celery acknowledges the message (late ack).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from engine.description import ModelDescription
from engine.images import decode_image, image_to_tensor
from scheduler import chunks, keys
from scheduler.jobs import ItemOutcome, JobRecord, JobStatus, Outcome, job_status, queue_outcomes
from workers import metrics
from workers.item_io import ChunkItem, ChunkRelease, read_source, sync_directories, write_outputs
from workers.models import Models, Result

log = logging.getLogger(__name__)

ModelKey = Hashable


class Requeue(Exception):
    """The worker is shutting down and this item had not started: its chunk goes back to the queue."""


@dataclass
class _Pending:
    job: JobRecord
    item: ChunkItem
    description: ModelDescription
    feeds: dict[str, Any]
    future: Future[Outcome]
    ready_at: float = field(default_factory=time.monotonic)


def io_threads() -> int:
    """Decode threads, and write threads, by default: one per CPU this process may use, at most 4. More than
    the cores only contend for the GIL (on 2 cores, 2 + 2 beat 4 + 4 in 25 of 36 interleaved 200-image jobs,
    by about 3 %)."""
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


class Batcher:
    def __init__(self, r: redis.Redis, models: Models, model_key: Callable[[JobRecord], ModelKey],
                 config: BatcherConfig, worker_id: str = "") -> None:
        self.r = r
        self.models = models
        self.model_key = model_key
        self.config = config
        self.worker_id = worker_id
        self.batch_sizes: dict[int, int] = {}
        self._cond = threading.Condition()
        self._groups: OrderedDict[tuple, list[_Pending]] = OrderedDict()
        self._intake: deque[tuple[JobRecord, ChunkItem, Future[Outcome]]] = deque()  # accepted, not yet decoding
        self._decoding = 0
        self._draining = False
        self._stopped = False
        self._closing = threading.Event()  # set by close(); the status refresher waits on it between rounds
        self._in_flight = 0  # batches handed to the models and not yet returned
        self._depth = max(1, models.batches_in_flight)
        # With room for two batches in the models, a second thread hands over the next full batch while one runs.
        self._dispatch = (ThreadPoolExecutor(self._depth, thread_name_prefix="corral-dispatch")
                          if self._depth > 1 else None)
        self._decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="corral-decode")
        self._write_pool = ThreadPoolExecutor(config.writer_threads, thread_name_prefix="corral-write")
        self._status_cache: dict[str, tuple[float, JobStatus | None]] = {}
        self._device = threading.Thread(target=self._device_loop, name="corral-device", daemon=True)
        self._device.start()
        self._refresher = threading.Thread(target=self._refresh_loop, name="corral-status", daemon=True)
        self._refresher.start()

    # ------------------------------------------------------------------ intake
    def submit(self, job: JobRecord, items: list[ChunkItem]) -> list[Future[Outcome]]:
        futures: list[Future[Outcome]] = [Future() for _ in items]
        with self._cond:
            if self._draining:
                for fut in futures:
                    fut.set_exception(Requeue())
                return futures
            self._intake.extend((job, item, fut) for item, fut in zip(items, futures))
            start = self._release()
        self._start_decoding(start)
        return futures

    def _release(self) -> list[tuple[JobRecord, ChunkItem, Future[Outcome]]]:
        """Under the lock: take items from the intake up to the decode-ahead bound; they count as decoding."""
        room = self.config.decode_ahead * self.config.max_batch - self._decoding - self._grouped()
        start = []
        while room > 0 and self._intake:
            start.append(self._intake.popleft())
            room -= 1
        self._decoding += len(start)
        return start

    def _start_decoding(self, entries: list[tuple[JobRecord, ChunkItem, Future[Outcome]]]) -> None:
        for job, item, fut in entries:
            self._decode_pool.submit(self._prepare, job, item, fut)

    @property
    def backlog(self) -> int:
        """Items accepted and not yet in a running batch."""
        with self._cond:
            return len(self._intake) + self._decoding + self._grouped()

    def _grouped(self) -> int:
        """Under the lock: items decoded and waiting in groups (a few groups at most: one per model and shape)."""
        return sum(len(g) for g in self._groups.values())

    def _prepare(self, job: JobRecord, item: ChunkItem, fut: Future[Outcome]) -> None:
        """Decode pool: image -> tensor, then into its group. Failures are the item's outcome."""
        try:
            cancelled = self.is_cancelled(job.id)
            if not cancelled:
                description = self.models.description(self.model_key(job))
                feeds = self._feeds(job, item, description)
                shapes = tuple((name, getattr(v, "shape", None)) for name, v in sorted(feeds.items()))
                key = (self.model_key(job), json.dumps(job.inputs, sort_keys=True), shapes)
        except Exception as exc:  # noqa: BLE001 - one bad item never stops the others
            self._prepared(None)
            self._finish(job, [(item, fut, _failure(item, exc))])
            return
        if cancelled:
            self._prepared(None)
            self._finish(job, [(item, fut, ItemOutcome(item.index, Outcome.SKIPPED, item.label))])
            return
        self._prepared((key, _Pending(job, item, description, feeds, fut)))

    def _prepared(self, entry: tuple[tuple, _Pending] | None) -> None:
        """An item left the decode stage: into its group (``entry``), or to its outcome (None)."""
        with self._cond:
            self._decoding -= 1
            settled = self._decoding == 0 and not self._intake  # deadlines shorten once nothing is left to decode
            if entry is None:
                if settled:
                    self._cond.notify()
            elif self._draining:
                entry[1].future.set_exception(Requeue())
            else:
                key, pending = entry
                group = self._groups.setdefault(key, [])
                group.append(pending)
                # Wake the device thread only when this changes what it waits for: a new group (a new deadline),
                # a full one, or the last decode done. Otherwise it already waits for this.
                if len(group) == 1 or len(group) == self.config.max_batch or settled:
                    self._cond.notify()
            start = self._release()
        self._start_decoding(start)

    def _feeds(self, job: JobRecord, item: ChunkItem, description: ModelDescription) -> dict[str, Any]:
        images = description.image_inputs
        feeds: dict[str, Any] = {name: np.asarray(value) for name, value in job.inputs.items()}
        if images:
            source = read_source(self.r, job, item)
            image = decode_image(source, max_pixels=self.config.max_pixels, name=item.label)
            tensor = image_to_tensor(image, images[0], policy=job.resize)  # [C, H, W]
            feeds[images[0].name] = tensor
        return feeds

    # ------------------------------------------------------------------ device
    def _device_loop(self) -> None:
        while True:
            with self._cond:
                batch = None
                while batch is None:
                    if self._stopped and not self._groups and not self._decoding:
                        return
                    if self._in_flight >= self._depth:
                        self._cond.wait()  # until a batch returns
                        continue
                    wait = self._take_ready(full_only=self._in_flight > 0)
                    if isinstance(wait, list):
                        batch = wait
                    else:
                        self._cond.wait(wait)
                self._in_flight += 1
                start = self._release()  # the batch left its group: decode the items that will follow it
            self._start_decoding(start)
            dispatched = False
            if self._dispatch is not None:
                try:
                    self._dispatch.submit(self._run_batch, batch)
                    dispatched = True
                except RuntimeError:  # close() gave up waiting for this thread and shut the pool down
                    pass
            if not dispatched:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            self._run(batch)
        except Exception as exc:  # a bug here must not kill the device thread
            log.exception("batch failed")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify()

    def _take_ready(self, full_only: bool = False) -> list[_Pending] | float | None:
        """A batch to run now, or how long to wait for one (None: until notified). ``full_only`` while a batch
        runs: a partial batch keeps filling until the models are idle, so only a full one goes in beside it."""
        if not self._groups:
            return None
        now = time.monotonic()
        # While accepted items are still being decoded, a partial batch waits up to twice as long for them:
        # cutting it sooner would not serve anyone sooner (more work is already queued behind it) and would
        # spend a whole prediction on a fraction of a batch.
        delay = self.config.max_delay_ms / 1000.0 * (2 if self._decoding or self._intake else 1)
        full = [k for k, g in self._groups.items() if len(g) >= self.config.max_batch]
        if full_only and not full:
            return None
        due = full or [k for k, g in self._groups.items() if now - g[0].ready_at >= delay or self._stopped]
        if not due:
            return max(0.0, min(g[0].ready_at for g in self._groups.values()) + delay - now)
        key = min(due, key=lambda k: self._groups[k][0].ready_at)
        group = self._groups[key]
        batch, rest = group[:self.config.max_batch], group[self.config.max_batch:]
        if rest:
            self._groups[key] = rest
        else:
            del self._groups[key]
        return batch

    def _run(self, batch: list[_Pending]) -> None:
        live, skipped = [], []
        for p in batch:
            if self._known_cancelled(p.job.id):
                skipped.append((p.job, (p.item, p.future, ItemOutcome(p.item.index, Outcome.SKIPPED, p.item.label))))
            else:
                live.append(p)
        for job_items in _by_job(skipped).values():
            self._write_pool.submit(self._finish, job_items[0][0], [x[1] for x in job_items])
        if not live:
            return
        start = time.perf_counter()
        results = self.models.predict_batch(self.model_key(live[0].job), [p.feeds for p in live])
        seconds = time.perf_counter() - start
        self.batch_sizes[len(live)] = self.batch_sizes.get(len(live), 0) + 1
        metrics.observe_batch(len(live), seconds)
        writes = _BatchWrites(len(live))
        for p, result in zip(live, results):
            self._write_pool.submit(self._write, p, result, writes)

    def _write(self, p: _Pending, result: Result, writes: _BatchWrites) -> None:
        """Writer pool: one item's outputs; the batch's last write counts the whole batch."""
        if isinstance(result, Exception):
            outcome = _failure(p.item, result)
        else:
            try:
                writes.files(write_outputs(self.r, p.job, p.item, result, p.description))
                outcome = ItemOutcome(p.item.index, Outcome.DONE, p.item.label)
            except Exception as exc:  # noqa: BLE001 - an item's failure is its outcome
                outcome = _failure(p.item, exc)
        done = writes.add(p, outcome)
        if done is not None:
            try:
                sync_directories(writes.written)
            except OSError as exc:  # the renames may not survive a crash: count nothing, let the chunks come back
                log.warning("could not sync output directories (%s); the batch's chunks will be redelivered", exc)
                for q, _ in done:
                    if not q.future.done():
                        q.future.set_exception(exc)
                return
            self._finish_batch(done)

    def _finish_batch(self, done: list[tuple[_Pending, ItemOutcome]]) -> None:
        """Count a batch's outcomes, every job's, and its observed size in one round trip."""
        by_job = _by_job([(q.job, (q.item, q.future, o)) for q, o in done])
        self._finish_jobs([(items[0][0], [x[1] for x in items]) for items in by_job.values()],
                          batch_size=len(done))

    def _finish(self, job: JobRecord, entries: list[tuple[ChunkItem, Future[Outcome], ItemOutcome]]) -> None:
        """Count outcomes in the job record, then resolve the futures (so the chunk can be acked)."""
        self._finish_jobs([(job, entries)])

    def _finish_jobs(self, jobs: list[tuple[JobRecord, list[tuple[ChunkItem, Future[Outcome], ItemOutcome]]]],
                     batch_size: int = 0) -> None:
        """One pipeline: each job's outcomes (one script call per job) and, given ``batch_size``, the
        observed batch size (read by `corral workers`). A job's futures resolve only once its outcomes
        are counted; if they could not be, they get the error, so the chunk is not acked."""
        jobs = [(job, entries) for job, entries in jobs if entries]  # one reply per job, in order
        releases = _settled_chunks(entry[0] for _, entries in jobs for entry in entries)
        spans: list[tuple[ChunkRelease, int, int]] = []  # each released chunk and where its replies are
        sizes_at = None  # where the batch size's reply is
        replies: list[Any] = []
        failure: Exception | None = None  # Redis unreachable: every reply is this error
        try:
            with self.r.pipeline(transaction=False) as pipe:
                for job, entries in jobs:
                    queue_outcomes(pipe, job.id, [e[2] for e in entries])
                for chunk in releases:
                    start = len(pipe)
                    chunks.queue_release(pipe, chunk.job_id, chunk.chunk)
                    spans.append((chunk, start, len(pipe)))
                if batch_size and self.worker_id:
                    sizes_at = len(pipe)
                    pipe.hincrby(keys.worker_batches(self.worker_id), str(batch_size), 1)
                replies = pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - no chunk of these may be acked
            failure = exc

        def reply(i: int) -> Any:
            return failure if failure is not None else replies[i]

        for chunk, start, end in spans:  # a chunk not released here is released by its task
            chunk.released = not any(isinstance(reply(i), Exception) for i in range(start, end))
        for i, (_, entries) in enumerate(jobs):
            for _, fut, outcome in entries:
                if fut.done():
                    continue
                if isinstance(reply(i), Exception):
                    fut.set_exception(reply(i))
                else:
                    fut.set_result(outcome.outcome)
        if sizes_at is not None and isinstance(reply(sizes_at), Exception):
            log.warning("could not record a batch size in Redis: %s", reply(sizes_at))

    # ------------------------------------------------------------------ state
    def is_cancelled(self, job_id: str, ttl: float = 0.5) -> bool:
        """Whether a job was cancelled; read from Redis at most every ``ttl`` seconds per job."""
        now = time.monotonic()
        cached = self._status_cache.get(job_id)
        if cached is None or now - cached[0] > ttl:
            self.note_status(job_id, job_status(self.r, job_id))
            cached = self._status_cache[job_id]
        return cached[1] is JobStatus.CANCELLED

    def _known_cancelled(self, job_id: str) -> bool:
        """The device thread's check: the cached status only (kept fresh by the status thread), no I/O."""
        cached = self._status_cache.get(job_id)
        return cached is not None and cached[1] is JobStatus.CANCELLED

    def _refresh_loop(self, every: float = 0.25) -> None:
        """Re-read the status of jobs with items waiting in groups, in one round trip, so cancels are seen."""
        while True:
            with self._cond:
                if self._stopped:
                    return
                jobs = sorted({p.job.id for g in self._groups.values() for p in g})
            if jobs:
                try:
                    with self.r.pipeline(transaction=False) as pipe:
                        for job_id in jobs:
                            pipe.hget(keys.job(job_id), "status")
                        raw = pipe.execute()
                    for job_id, status in zip(jobs, raw):
                        self.note_status(job_id, None if status is None else JobStatus(keys.text(status)))
                except redis.RedisError:
                    log.debug("could not refresh job statuses", exc_info=True)
            self._closing.wait(every)  # close() sets it: a stopping worker does not wait out the interval

    def note_status(self, job_id: str, status: JobStatus | None, ttl: float = 0.5) -> None:
        """A job's status just read from Redis (by the chunk task), so that the next checks need no round trip."""
        now = time.monotonic()
        if len(self._status_cache) > 1000:  # a long-lived worker sees many jobs: forget the stale ones
            self._status_cache = {k: v for k, v in self._status_cache.items() if now - v[0] <= ttl}
        self._status_cache[job_id] = (now, status)

    def drain(self) -> None:
        """Stop taking work: items not yet in a running batch are handed back (their futures get Requeue)."""
        with self._cond:
            self._draining = True
            futures = [p.future for g in self._groups.values() for p in g] + [e[2] for e in self._intake]
            self._groups.clear()
            self._intake.clear()
            self._cond.notify_all()
        for fut in futures:
            if not fut.done():
                fut.set_exception(Requeue())

    def close(self, timeout: float = 30.0) -> None:
        """Stop: items not yet decoding are handed back; those decoding or grouped still run."""
        self._closing.set()
        with self._cond:
            self._stopped = True
            handed_back = [e[2] for e in self._intake]
            self._intake.clear()
            self._cond.notify_all()
        for fut in handed_back:
            if not fut.done():
                fut.set_exception(Requeue())
        self._device.join(timeout)
        if self._dispatch is not None:
            self._dispatch.shutdown(wait=True)
        self._refresher.join(timeout)
        self._decode_pool.shutdown(wait=True)
        self._write_pool.shutdown(wait=True)


class _BatchWrites:
    """Collects a batch's outcomes from the writer threads; the last one to arrive gets them all."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._done: list[tuple[_Pending, ItemOutcome]] = []
        self.written: list[Path] = []  # output files of the batch, whose directories are synced before counting
        self._lock = threading.Lock()

    def files(self, paths: list[Path]) -> None:
        with self._lock:
            self.written.extend(paths)

    def add(self, p: _Pending, outcome: ItemOutcome) -> list[tuple[_Pending, ItemOutcome]] | None:
        with self._lock:
            self._done.append((p, outcome))
            self._left -= 1
            return self._done if self._left == 0 else None


def _settled_chunks(items: Iterable[ChunkItem]) -> list[ChunkRelease]:
    """The chunks whose last outstanding items are among ``items`` (which are about to be counted)."""
    counts: dict[ChunkRelease, int] = {}
    for item in items:
        if item.release is not None:
            counts[item.release] = counts.get(item.release, 0) + 1
    return [chunk for chunk, count in counts.items() if chunk.settle(count)]


def _failure(item: ChunkItem, exc: BaseException) -> ItemOutcome:
    reason = str(exc) or type(exc).__name__
    return ItemOutcome(item.index, Outcome.FAILED, item.label, reason)


def _by_job(entries: list[tuple[JobRecord, Any]]) -> dict[str, list[tuple[JobRecord, Any]]]:
    grouped: dict[str, list[tuple[JobRecord, Any]]] = {}
    for job, entry in entries:
        grouped.setdefault(job.id, []).append((job, entry))
    return grouped
