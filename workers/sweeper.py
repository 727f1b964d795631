"""The lost-chunk sweeper: sends again any outstanding chunk that the broker or a dead worker lost.

Every worker runs one, and each round one of them (whoever takes
:data:`scheduler.keys.SWEEP_LOCK`) looks at the active jobs:

* a chunk *claimed* by a worker whose heartbeat has expired is sent again
  at once: that worker died while running it, and kombu would only give the
  message back after the visibility timeout (an hour by default);
* a chunk of a job that made no progress since the last round, which is
  neither in a queue, nor reserved (kombu's ``unacked`` hash), nor claimed,
  is a *suspect*; still missing one full round later, it is sent again.
  This covers the message a worker took off the queue and died before
  kombu recorded it as unacknowledged, which nothing else would redeliver.

Sending a chunk twice costs little: a delivery skips the items that already
have an outcome (:meth:`scheduler.jobs.RedisJob.start_chunk`), and
outcomes are counted once. A job's chunk records are dropped once all its
items have an outcome.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from redis.typing import EncodableT, FieldT

from scheduler import keys
from scheduler.jobs import Outstanding, RedisJob
from scheduler.protocol import parse_task_id, send_chunk

log = logging.getLogger(__name__)

DEFAULT_MAX_SCAN = 50_000  # queued messages a sweep reads at most; above that it waits for the queues to drain


@dataclass(frozen=True)
class BrokerLayout:
    """Where kombu's Redis transport keeps messages: one list per queue and priority step, and ``unacked``."""

    unacked: str = "unacked"
    sep: str = "\x06\x16"
    priority_steps: tuple[int, ...] = tuple(range(10))

    def lists(self, queue: str) -> list[str]:
        return [f"{queue}{self.sep}{p}" if p else queue for p in self.priority_steps]

    @classmethod
    def from_app(cls, app: Celery) -> BrokerLayout:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            return cls(unacked=channel.unacked_key, sep=channel.sep, priority_steps=tuple(channel.priority_steps))


@dataclass(frozen=True)
class LostChunk:
    job_id: str
    chunk: int
    queue: str
    priority: int
    reason: str
    holder: str = ""  # the dead worker whose claim this chunk had; empty when the broker lost it unclaimed


Republish = Callable[[LostChunk, list[dict[str, Any]], int], None]  # (chunk, its item messages, attempt)


class ChunkSweeper:
    def __init__(self, r: redis.Redis, layout: BrokerLayout, republish: Republish, worker_id: str,
                 interval: float, max_scan: int = DEFAULT_MAX_SCAN) -> None:
        self.r = r
        self.layout = layout
        self.republish = republish
        self.worker_id = worker_id
        self.interval = interval
        self.max_scan = max_scan
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="corral-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.r.set(keys.SWEEP_LOCK, self.worker_id, nx=True, px=max(1, int(self.interval * 900))):
                    self.sweep()
            except redis.RedisError as exc:  # Redis away: the next round tries again
                log.debug("lost-chunk sweep skipped: %s", exc)
            except Exception:
                log.exception("lost-chunk sweep failed")

    def sweep(self, now: float | None = None) -> list[LostChunk]:
        """One round; returns the chunks it sent again."""
        now = time.time() if now is None else now
        jobs, finished = RedisJob.active(self.r)
        if finished:
            self._forget(finished)
        lost = self._dead_claims(jobs)
        lost += self._missing(jobs, {(c.job_id, c.chunk) for c in lost}, now)
        for chunk in lost:
            self._send_again(chunk, now)
        return lost

    def _forget(self, job_ids: list[str]) -> None:
        """Jobs whose items all have an outcome (or whose record is gone) need no more sweeping."""
        with self.r.pipeline(transaction=False) as p:
            p.srem(keys.ACTIVE_JOBS, *job_ids)
            p.hdel(keys.SWEEP_PROGRESS, *job_ids)
            for job_id in job_ids:
                RedisJob(self.r, job_id).forget_chunks_on(p)
            p.execute()
        gone = set(job_ids)
        self._drop_suspects(lambda job_id, _: job_id in gone)

    def _dead_claims(self, jobs: list[Outstanding]) -> list[LostChunk]:
        holders = sorted({w for job in jobs for w in job.claims.values()})
        if not holders:
            return []
        alive = {w for w, beat in zip(holders, self.r.mget([keys.worker(w) for w in holders])) if beat is not None}
        return [LostChunk(job.id, chunk, job.queue, job.priority, f"worker {worker} stopped while running it",
                          holder=worker)
                for job in jobs for chunk, worker in sorted(job.claims.items())
                if worker not in alive and chunk in job.chunks]

    def _missing(self, jobs: list[Outstanding], handled: set[tuple[str, int]], now: float) -> list[LostChunk]:
        """Unclaimed chunks of stalled jobs found nowhere in the broker, for a second round running."""
        seen = {keys.text(k): int(v) for k, v in self.r.hgetall(keys.SWEEP_PROGRESS).items()}
        if jobs:
            progress: dict[FieldT, EncodableT] = {job.id: job.finished for job in jobs}
            self.r.hset(keys.SWEEP_PROGRESS, mapping=progress)
        stalled = [job for job in jobs if seen.get(job.id) == job.finished]
        candidates = {(job.id, c) for job in stalled for c in job.chunks - set(job.claims)} - handled
        if not candidates:
            return []
        known = self._in_broker({job.queue for job in stalled})
        if known is None:
            return []
        missing = candidates - known
        scanned = {job.id for job in stalled}
        suspects = {keys.text(k): float(v) for k, v in self.r.hgetall(keys.SWEEP_SUSPECTS).items()}
        by_id = {job.id: job for job in stalled}
        lost: list[LostChunk] = []
        fresh: dict[FieldT, EncodableT] = {}
        for job_id, chunk in sorted(missing):
            first = suspects.get(f"{job_id}.{chunk}")
            if first is None:
                fresh[f"{job_id}.{chunk}"] = now
            elif now - first >= self.interval:
                job = by_id[job_id]
                lost.append(LostChunk(job_id, chunk, job.queue, job.priority,
                                      "neither queued, reserved nor claimed by any worker: the broker lost it"))
        if fresh:
            self.r.hset(keys.SWEEP_SUSPECTS, mapping=fresh)
        self._drop_suspects(lambda job_id, chunk: job_id in scanned and (job_id, chunk) not in missing)
        return lost

    def _in_broker(self, queues: Iterable[str]) -> set[tuple[str, int]] | None:
        """(job, chunk) of every chunk message queued or reserved now; None when the queues are too long to read."""
        names = [name for q in sorted(queues) for name in self.layout.lists(q)]
        with self.r.pipeline(transaction=False) as p:
            for name in names:
                p.llen(name)
            queued = sum(p.execute())
        if queued > self.max_scan:
            log.info("lost-chunk sweep deferred: %d messages queued (reads at most %d)", queued, self.max_scan)
            return None
        with self.r.pipeline(transaction=False) as p:
            for name in names:
                p.lrange(name, 0, -1)
            p.hvals(self.layout.unacked)
            *lists, reserved = p.execute()
        known: set[tuple[str, int]] = set()
        for raw in (m for msgs in lists for m in msgs):
            _add_task(known, json.loads(raw))
        for raw in reserved:
            _add_task(known, json.loads(raw)[0])  # [message, exchange, routing key]
        return known

    def _drop_suspects(self, drop: Callable[[str, int], bool]) -> None:
        stale = []
        for key in self.r.hkeys(keys.SWEEP_SUSPECTS):
            job_id, _, chunk = keys.text(key).rpartition(".")
            if drop(job_id, int(chunk)):
                stale.append(key)
        if stale:
            self.r.hdel(keys.SWEEP_SUSPECTS, *stale)

    def _send_again(self, lost: LostChunk, now: float) -> None:
        job = RedisJob(self.r, lost.job_id)
        items = job.chunk_items(lost.chunk)
        if items is None:  # completed since this round looked
            return
        self.republish(lost, items, int(now * 1000))
        with self.r.pipeline(transaction=False) as p:
            if lost.holder:
                job.drop_claim_on(p, lost.chunk, lost.holder)
            p.hdel(keys.SWEEP_SUSPECTS, f"{lost.job_id}.{lost.chunk}")
            p.execute()
        log.warning("job %s: chunk %d sent again (%d items): %s", lost.job_id, lost.chunk, len(items), lost.reason)


def _add_task(known: set[tuple[str, int]], message: dict[str, Any]) -> None:
    parsed = parse_task_id(str((message.get("headers") or {}).get("id", "")))
    if parsed is not None:
        known.add(parsed)


def celery_republisher(app: Celery) -> Republish:
    """Send a lost chunk through the worker's own Celery app, to the queue and priority of its job."""
    def republish(lost: LostChunk, items: list[dict[str, Any]], attempt: int) -> None:
        send_chunk(app, lost.job_id, lost.chunk, items, queue=lost.queue, priority=lost.priority, attempt=attempt)
    return republish
