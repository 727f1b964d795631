"""The one Celery task: process a chunk of item references through this worker's batcher.

Redis round trips per chunk are kept few, since a one-image job is a
one-item chunk and these costs are then per image: one pipeline gives the
job record (with its current status) and which items are already done, and
also moves a queued job to running and claims the chunk; outcomes are counted
by the batcher once per batch, in the same round trip that releases each chunk
whose last item that batch settles.
"""

from __future__ import annotations

import logging
from concurrent.futures import wait
from dataclasses import replace
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject

from scheduler import blobs, chunks, keys
from scheduler.exceptions import JobNotFoundError
from scheduler.jobs import ItemOutcome, JobRecord, JobStatus, Outcome, queue_start, record_outcomes
from workers.app import CHUNK_TASK
from workers.batcher import Requeue
from workers.item_io import ChunkItem, ChunkRelease
from workers.runtime import current_runtime

log = logging.getLogger(__name__)


def read_chunk_state(r: redis.Redis, job_id: str, indices: list[int],
                     claim: tuple[int, str] | None = None) -> tuple[JobRecord, set[int]]:
    """The job record (as it was before this chunk started) and which of ``indices`` already have an outcome,
    in one round trip that also moves a queued job to running and claims the chunk (``(chunk, worker id)``)
    when given."""
    with r.pipeline(transaction=False) as p:
        p.hgetall(keys.job(job_id))
        if indices:
            p.smismember(keys.job_finished(job_id), indices)
            queue_start(p, job_id)
        if claim is not None:
            chunks.claim(p, job_id, *claim)
        replies = p.execute()
    if not replies[0]:
        raise JobNotFoundError(job_id)
    present = replies[1] if indices else []
    return JobRecord.from_hash(replies[0]), {i for i, seen in zip(indices, present) if seen}


def process_chunk(job_id: str, items: list[dict[str, Any]], redelivered: bool = False,
                  chunk_no: int | None = None) -> int:
    """Run every item of the chunk; returns how many were processed here. Acked when this returns.

    ``redelivered``: the message came back after a worker died or handed it
    back; its items then also clean up temporaries a killed writer left.
    ``chunk_no``: the chunk's number in its job, claimed while it runs and
    released once every item has an outcome (see :mod:`scheduler.chunks`).
    """
    rt = current_runtime()
    chunk = [ChunkItem.from_message(m, redelivered) for m in items]
    claim = None if chunk_no is None else (chunk_no, rt.id)
    try:
        job, seen = read_chunk_state(rt.r, job_id, [c.index for c in chunk], claim)  # redelivered: skip what is done
    except JobNotFoundError:
        log.warning("dropping a chunk of job %s: the job record is gone", job_id)
        rt.r.delete(keys.job_chunks(job_id), keys.job_claims(job_id))
        return 0
    except redis.RedisError as exc:
        raise Reject(f"Redis unavailable ({exc})", requeue=True) from exc
    rt.batcher.note_status(job_id, job.status)
    todo = [c for c in chunk if c.index not in seen]
    release = None
    if chunk_no is not None and todo:  # released with the last of these outcomes, in the batcher's round trip
        release = ChunkRelease(job_id, chunk_no, len(todo))
        todo = [replace(c, release=release) for c in todo]
    try:
        if todo and job.status is JobStatus.CANCELLED:
            record_outcomes(rt.r, job_id, [ItemOutcome(c.index, Outcome.SKIPPED, c.label) for c in todo])
            todo = []
    except redis.RedisError as exc:
        raise Reject(f"Redis unavailable ({exc})", requeue=True) from exc
    requeue = False
    broken: list[ItemOutcome] = []
    futures = rt.batcher.submit(job, todo)
    wait(futures)  # one wake-up when the last item is settled, not one per item as batches finish them
    for item, fut in zip(todo, futures):
        try:
            fut.result()
        except Requeue:
            requeue = True
        except redis.RedisError as exc:  # the outcome could not be counted: let another delivery do it
            log.warning("job %s: outcome not recorded (%s); the chunk will be redelivered", job_id, exc)
            requeue = True
        except Exception as exc:  # a worker fault, not the item's: still never leave an item uncounted
            log.exception("job %s: item %s", job_id, item.label)
            broken.append(ItemOutcome(item.index, Outcome.FAILED, item.label, f"worker error: {exc}"))
    if broken:
        record_outcomes(rt.r, job_id, broken)
    if requeue:
        raise Reject("worker shutting down or Redis unavailable; chunk handed back", requeue=True)
    if job.transport == "redis":
        blobs.drop_inputs(rt.r, job_id, [c.index for c in chunk])
    if chunk_no is not None and (release is None or not release.released):
        try:
            chunks.release(rt.r, job_id, chunk_no)
        except redis.RedisError as exc:  # harmless: a later sweep finds every item done and releases it then
            log.warning("job %s: chunk %d done but not released (%s)", job_id, chunk_no, exc)
    return len(todo)


def register_tasks(app: Celery) -> None:
    def chunk_task(task: Task, job_id: str, items: list[dict[str, Any]], chunk: int | None = None) -> int:
        delivery = task.request.delivery_info or {}
        return process_chunk(job_id, items, redelivered=bool(delivery.get("redelivered")), chunk_no=chunk)

    app.task(name=CHUNK_TASK, bind=True, acks_late=True, ignore_result=True)(chunk_task)
