"""The one Celery task: process a chunk of item references through this worker's batcher.

Redis round trips per chunk are kept few, since a one-image job is a
one-item chunk and these costs are then per image: one pipeline gives the
job record (with its current status) and which items are already done, and
also moves a queued job to running and claims the chunk
(:meth:`scheduler.jobs.RedisJob.start_chunk`); outcomes are counted by
the batcher's :class:`~workers.outcomes.OutcomeReporter` once per batch, in
the same round trip that retires each chunk whose last item that batch
settles.
"""

from __future__ import annotations

import logging
from concurrent.futures import wait
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject

from scheduler import blobs
from scheduler.exceptions import JobNotFoundError
from scheduler.jobs import RedisJob
from scheduler.protocol import CHUNK_TASK, ChunkItem
from scheduler.records import ItemOutcome, JobStatus, Outcome, Transport
from workers.exceptions import Requeue
from workers.runtime import current_runtime

log = logging.getLogger(__name__)


def process_chunk(job_id: str, items: list[dict[str, Any]], redelivered: bool = False,
                  chunk_no: int | None = None) -> int:
    """Run every item of the chunk; returns how many were processed here. Acked when this returns.

    ``redelivered``: the message came back after a worker died or handed it
    back; its items then also clean up temporaries a killed writer left.
    ``chunk_no``: the chunk's number in its job, claimed while it runs and
    retired once every item has an outcome (see :mod:`scheduler.jobs`).
    """
    rt = current_runtime()
    chunk = [ChunkItem.from_message(m, redelivered) for m in items]
    record = RedisJob(rt.r, job_id)
    try:
        job, seen = record.start_chunk([c.index for c in chunk], chunk_no, rt.id)  # redelivered: skip what is done
    except JobNotFoundError:
        log.warning("dropping a chunk of job %s: the job record is gone", job_id)
        with rt.r.pipeline(transaction=False) as p:
            record.forget_chunks_on(p)
            p.execute()
        return 0
    except redis.RedisError as exc:
        raise Reject(f"Redis unavailable ({exc})", requeue=True) from exc
    rt.reporter.statuses.note(job_id, job.status)
    todo = [c for c in chunk if c.index not in seen]
    settlement = None if chunk_no is None else rt.reporter.open_chunk(job_id, chunk_no, len(todo))
    try:
        if todo and job.status is JobStatus.CANCELLED:
            record.record_outcomes([ItemOutcome(c.index, Outcome.SKIPPED, c.label) for c in todo])
            todo = []
    except redis.RedisError as exc:
        raise Reject(f"Redis unavailable ({exc})", requeue=True) from exc
    requeue = False
    broken: list[ItemOutcome] = []
    futures = rt.batcher.submit(job, todo, settlement) if todo else []
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
        record.record_outcomes(broken)
    if requeue:
        raise Reject("worker shutting down or Redis unavailable; chunk handed back", requeue=True)
    if job.transport is Transport.REDIS:
        blobs.drop_inputs(rt.r, job_id, [c.index for c in chunk])
    if settlement is not None:
        rt.reporter.close_chunk(settlement)
    return len(todo)


def register_tasks(app: Celery) -> None:
    def chunk_task(task: Task, job_id: str, items: list[dict[str, Any]], chunk: int | None = None) -> int:
        delivery = task.request.delivery_info or {}
        return process_chunk(job_id, items, redelivered=bool(delivery.get("redelivered")), chunk_no=chunk)

    app.task(name=CHUNK_TASK, bind=True, acks_late=True, ignore_result=True)(chunk_task)
