"""The one Celery task: process a chunk of item references through this worker's batcher."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery
from celery.exceptions import Reject

from scheduler import blobs
from scheduler.jobs import ItemOutcome, JobNotFound, Outcome, finished_indices, mark_started, record_outcomes
from workers.app import CHUNK_TASK
from workers.batcher import Requeue
from workers.item_io import ChunkItem
from workers.runtime import current_runtime

log = logging.getLogger(__name__)


def process_chunk(job_id: str, items: list[dict[str, Any]]) -> int:
    """Run every item of the chunk; returns how many were processed here. Acked when this returns."""
    rt = current_runtime()
    try:
        job = rt.job(job_id)
    except JobNotFound:
        log.warning("dropping a chunk of job %s: the job record is gone", job_id)
        return 0
    chunk = [ChunkItem.from_message(m) for m in items]
    try:
        seen = finished_indices(rt.r, job_id, [c.index for c in chunk])  # redelivered: skip what is done
        todo = [c for c in chunk if c.index not in seen]
        if todo and rt.batcher.is_cancelled(job_id, ttl=0):
            record_outcomes(rt.r, job_id, [ItemOutcome(c.index, Outcome.SKIPPED, c.label) for c in todo])
            todo = []
        if todo:
            mark_started(rt.r, job_id)
    except redis.RedisError as exc:
        raise Reject(f"Redis unavailable ({exc})", requeue=True) from exc
    requeue = False
    broken: list[ItemOutcome] = []
    for item, fut in zip(todo, rt.batcher.submit(job, todo)):
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
    return len(todo)


def register_tasks(app: Celery) -> None:
    app.task(name=CHUNK_TASK, acks_late=True, ignore_result=True)(process_chunk)
