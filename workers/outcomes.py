"""Outcome reporting: counting items in their jobs' records, retiring settled chunks, knowing who cancelled.

Redis round trips are kept few, since a one-image job is a one-item chunk
and these costs are then per image. :meth:`OutcomeReporter.report` counts a
whole batch's outcomes, across jobs, retires every chunk whose last item that
batch settles, and records the batch's size, in one pipeline. The chunk a
task opens with :meth:`OutcomeReporter.open_chunk` is retired there or, when
its last outcome was never counted here (its items were finished before, or
failed in the task), by :meth:`OutcomeReporter.close_chunk`: this module is
the one side of that handshake.

:class:`StatusCache` keeps each job's status as last read, so cancel checks
cost no round trip per item; a thread re-reads the jobs whose items wait in
groups, one round trip for all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import redis

from scheduler import keys
from scheduler.jobs import RedisJob
from scheduler.records import JobStatus, Outcome
from workers.entries import Settled

log = logging.getLogger(__name__)

STATUS_TTL_S = 0.5  # how stale a cached job status may be when an item's decode checks for a cancel
REFRESH_EVERY_S = 0.25  # how often the statuses of jobs with items waiting in groups are re-read


class ChunkSettlement:
    """A chunk this worker runs: retired in the round trip that counts the last of its items' outcomes."""

    def __init__(self, job: RedisJob, chunk: int, items: int) -> None:
        self.job = job
        self.chunk = chunk
        self.retired = False  # set once a pipeline that retired it has run without error
        self._left = items
        self._lock = threading.Lock()

    def settle(self, count: int) -> bool:
        """``count`` more of the chunk's items are being counted; True for the call that counts the last."""
        with self._lock:
            self._left -= count
            return self._left == 0


class StatusCache:
    """Job statuses as last read from Redis, read again at most every :data:`STATUS_TTL_S` per job."""

    def __init__(self, r: redis.Redis, ttl: float = STATUS_TTL_S) -> None:
        self.r = r
        self.ttl = ttl
        self._seen: dict[str, tuple[float, JobStatus | None]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note(self, job_id: str, status: JobStatus | None) -> None:
        """A status just read (by the chunk task, or a refresh), so that the next checks need no round trip."""
        now = time.monotonic()
        if len(self._seen) > 1000:  # a long-lived worker sees many jobs: forget the stale ones
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] <= self.ttl}
        self._seen[job_id] = (now, status)

    def is_cancelled(self, job_id: str) -> bool:
        """Whether the job was cancelled, read from Redis when the cached status is older than the TTL."""
        cached = self._seen.get(job_id)
        if cached is None or time.monotonic() - cached[0] > self.ttl:
            self.note(job_id, RedisJob(self.r, job_id).status())
            cached = self._seen[job_id]
        return cached[1] is JobStatus.CANCELLED

    def known_cancelled(self, job_id: str) -> bool:
        """The cached status only, no I/O (the device thread's check; :meth:`watch` keeps it fresh)."""
        cached = self._seen.get(job_id)
        return cached is not None and cached[1] is JobStatus.CANCELLED

    def refresh(self, job_ids: Sequence[str]) -> None:
        """Re-read these jobs' statuses in one round trip."""
        if job_ids:
            for job_id, status in RedisJob.statuses(self.r, job_ids).items():
                self.note(job_id, status)

    def watch(self, waiting: Callable[[], list[str]]) -> None:
        """Refresh the jobs ``waiting()`` names every :data:`REFRESH_EVERY_S`, on a thread, until :meth:`stop`."""
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.refresh(waiting())
                except redis.RedisError:
                    log.debug("could not refresh job statuses", exc_info=True)
                self._stop.wait(REFRESH_EVERY_S)  # stop() sets it: a stopping worker does not wait out the interval

        self._thread = threading.Thread(target=loop, name="corral-status", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class OutcomeReporter:
    """Counts outcomes in the job records and retires the chunks they settle; ``worker_id`` given, also
    records each batch's size (read by `corral workers`)."""

    def __init__(self, r: redis.Redis, worker_id: str = "", statuses: StatusCache | None = None) -> None:
        self.r = r
        self.worker_id = worker_id
        self.statuses = statuses if statuses is not None else StatusCache(r)

    def open_chunk(self, job_id: str, chunk: int, items: int) -> ChunkSettlement:
        """A chunk whose ``items`` outstanding items are about to be submitted."""
        return ChunkSettlement(RedisJob(self.r, job_id), chunk, items)

    def close_chunk(self, chunk: ChunkSettlement) -> None:
        """Every item of the chunk has an outcome: retire it, unless a report already did."""
        if chunk.retired:
            return
        try:
            chunk.job.retire_chunk(chunk.chunk)
            chunk.retired = True
        except redis.RedisError as exc:  # harmless: a later sweep finds every item done and retires it then
            log.warning("job %s: chunk %d done but not retired (%s)", chunk.job.id, chunk.chunk, exc)

    def report(self, settled: Sequence[Settled], batch_size: int = 0) -> None:
        """One pipeline: each job's outcomes (one script call per job), the chunks they settle and, given
        ``batch_size``, the observed batch size. An item's future resolves only once its outcome is counted;
        if it could not be, the future gets the error, so its chunk is not acked."""
        by_job: dict[str, list[Settled]] = {}
        for s in settled:
            by_job.setdefault(s.entry.job.id, []).append(s)
        settling = self._settling(settled)
        spans: list[tuple[ChunkSettlement, int, int]] = []  # each retired chunk and where its replies are
        job_replies: dict[str, int] = {}
        sizes_at = None
        replies: list[Any] = []
        failure: Exception | None = None  # Redis unreachable: every reply is this error
        try:
            with self.r.pipeline(transaction=False) as pipe:
                for job_id, group in by_job.items():
                    job_replies[job_id] = len(pipe)
                    RedisJob(self.r, job_id).record_outcomes_on(pipe, [s.outcome for s in group])
                for chunk in settling:
                    start = len(pipe)
                    chunk.job.retire_chunk_on(pipe, chunk.chunk)
                    spans.append((chunk, start, len(pipe)))
                if batch_size and self.worker_id:
                    sizes_at = len(pipe)
                    pipe.hincrby(keys.worker_batches(self.worker_id), str(batch_size), 1)
                replies = pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - no chunk of these may be acked
            failure = exc

        def reply(i: int) -> Any:
            return failure if failure is not None else replies[i]

        for chunk, start, end in spans:  # a chunk not retired here is retired by close_chunk
            chunk.retired = not any(isinstance(reply(i), Exception) for i in range(start, end))
        for job_id, group in by_job.items():
            answer = reply(job_replies[job_id])
            for s in group:
                _resolve(s.entry.future, answer if isinstance(answer, Exception) else s.outcome.outcome)
        if sizes_at is not None and isinstance(reply(sizes_at), Exception):
            log.warning("could not record a batch size in Redis: %s", reply(sizes_at))

    @staticmethod
    def _settling(settled: Sequence[Settled]) -> list[ChunkSettlement]:
        """The chunks whose last outstanding items are among ``settled`` (which are about to be counted)."""
        counts: dict[ChunkSettlement, int] = {}
        for s in settled:
            if s.entry.chunk is not None:
                counts[s.entry.chunk] = counts.get(s.entry.chunk, 0) + 1
        return [chunk for chunk, count in counts.items() if chunk.settle(count)]


def _resolve(future: Future[Outcome], value: Outcome | Exception) -> None:
    if future.done():
        return
    if isinstance(value, Exception):
        future.set_exception(value)
    else:
        future.set_result(value)
