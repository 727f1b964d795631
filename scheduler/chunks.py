"""Each job's outstanding chunks, kept beside the broker so that a chunk the broker lost can be sent again.

kombu's Redis transport pops a message with BRPOP and only then records it
as unacknowledged; a worker killed between the two loses that message, and
its items would never get an outcome. So the producer also writes every
chunk it publishes into the job's *chunks* hash, a worker *claims* a chunk
when it starts it and *releases* it once every item has an outcome, and the
sweeper (:mod:`workers.sweeper`) sends again any chunk that is outstanding
yet neither queued, reserved by a worker, nor claimed by a live one.

Task ids name the chunk they carry (``JOB.CHUNK`` or ``JOB.CHUNK.ATTEMPT``),
which is how the sweeper recognises a job's messages in the broker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery

from scheduler import keys
from workers.app import CHUNK_TASK, kombu_priority

_TASK_ID = re.compile(r"([0-9a-f]{12})\.(\d+)(?:\.\d+)?")


def task_id(job_id: str, chunk: int, attempt: int = 0) -> str:
    return f"{job_id}.{chunk}" if attempt == 0 else f"{job_id}.{chunk}.{attempt}"


def parse_task_id(value: str) -> tuple[str, int] | None:
    """``(job id, chunk)`` for a chunk message's task id; None for any other id."""
    m = _TASK_ID.fullmatch(value)
    return (m.group(1), int(m.group(2))) if m else None


def record_published(p: redis.client.Pipeline, job_id: str, chunks: Iterable[tuple[int, list[dict[str, Any]]]]) -> None:
    """Before the messages are sent: the job is active and these ``(number, items)`` chunks outstanding."""
    records = {str(n): json.dumps(items, separators=(",", ":")) for n, items in chunks}
    if records:
        p.hset(keys.job_chunks(job_id), mapping=records)
    p.sadd(keys.ACTIVE_JOBS, job_id)


def send_chunk(app: Celery, job_id: str, chunk: int, items: list[dict[str, Any]], *, queue: str, priority: int,
               attempt: int = 0, producer: Any = None) -> None:
    """Publish one chunk message (``priority``: corral's 0..9) with a task id naming the chunk."""
    # argsrepr/kwargsrepr: what worker logs and monitoring show of the message, given here because Celery's
    # default repr of every item reference costs more than the rest of the publish.
    app.send_task(CHUNK_TASK, args=[job_id, items], kwargs={"chunk": chunk}, task_id=task_id(job_id, chunk, attempt),
                  queue=queue, priority=kombu_priority(priority), producer=producer,
                  argsrepr=f"[{job_id!r}, <{len(items)} items>]", kwargsrepr=f"{{'chunk': {chunk}}}")


def claim(p: redis.client.Pipeline, job_id: str, chunk: int, worker_id: str) -> None:
    """A worker started the chunk (queued on a pipeline the worker sends anyway)."""
    p.hset(keys.job_claims(job_id), str(chunk), worker_id)


_DROP_CLAIM = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


def drop_claim(p: redis.client.Pipeline, job_id: str, chunk: int, worker_id: str) -> None:
    """Remove the chunk's claim only while ``worker_id`` still holds it: a newer claim (a live worker that
    has already picked up the chunk sent again) stays."""
    p.eval(_DROP_CLAIM, 1, keys.job_claims(job_id), str(chunk), worker_id)


def release(r: redis.Redis, job_id: str, chunk: int) -> None:
    """Every item of the chunk has an outcome: nothing of it is left to recover."""
    with r.pipeline(transaction=False) as p:
        queue_release(p, job_id, chunk)
        p.execute()


def queue_release(p: redis.client.Pipeline, job_id: str, chunk: int) -> None:
    """:func:`release` on a caller's pipeline."""
    p.hdel(keys.job_chunks(job_id), str(chunk))
    p.hdel(keys.job_claims(job_id), str(chunk))


def chunk_items(r: redis.Redis, job_id: str, chunk: int) -> list[dict[str, Any]] | None:
    raw = r.hget(keys.job_chunks(job_id), str(chunk))
    return None if raw is None else json.loads(raw)
