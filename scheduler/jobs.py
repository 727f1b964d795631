"""The job record in Redis: status, request, progress counters and per-item outcomes.

A job is one hash (:func:`scheduler.keys.job`). Workers report each item's
outcome through :func:`record_outcomes`, which adds the item to the job's
*finished* set, bumps the matching counter, keeps failure reasons and ends
the job when every item is in, all in one Lua script (:data:`RECORD_SCRIPT`):
an item that is redelivered after a crash (and so reported twice) is counted
once, a crash between the writes cannot lose a count (a script runs whole or
not at all), and a report costs one round trip. :func:`queue_outcomes` puts
the same script on a caller's pipeline, so a worker counts a whole batch,
across jobs, in one round trip.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

import redis

from scheduler import keys
from scheduler.exceptions import JobNotFoundError
from scheduler.settings import DEFAULT_BLOB_TTL


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class Outcome(str, Enum):
    """What happened to one item; each maps to the counter of the same name."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # the job was cancelled before the item ran


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class JobRecord:
    """What a job asked for and where it stands. Stored as the job hash (JSON for ``inputs``)."""

    id: str
    model: str  # the reference as given (`--model`)
    model_path: str  # what the reference resolved to
    out: str  # output directory (path transport) or the default `results` directory (redis transport)
    transport: str = "path"  # "path": workers read/write shared paths; "redis": blobs in Redis
    inputs: dict[str, Any] = field(default_factory=dict)  # non-image input name -> JSON value
    device: str = "auto"  # as requested
    queue: str = keys.CPU_QUEUE  # where its chunks were routed
    priority: int = 5  # 0 (lowest) .. 9 (highest)
    chunk_size: int = 32
    resize: str = "fit"  # how images outside the model's sizes are resized (engine.images policies)
    blob_ttl: int = DEFAULT_BLOB_TTL  # seconds the job's blobs live in Redis (redis transport)
    total: int = 0
    rejected: int = 0  # inputs refused before queueing (not part of total)
    status: JobStatus = JobStatus.QUEUED
    created: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    done: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def finished_items(self) -> int:
        return self.done + self.failed + self.skipped

    def to_hash(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in _FIELD_NAMES:
            value = getattr(self, key)  # shallow: ``inputs`` is serialized below, nothing else nests
            if key in ("started", "finished") and not value:
                continue  # absent until set (the start script relies on HSETNX)
            if key == "inputs":
                out[key] = json.dumps(value)
            elif isinstance(value, Enum):
                out[key] = value.value
            else:
                out[key] = str(value)
        return out

    @classmethod
    def from_hash(cls, data: dict[bytes | str, bytes | str]) -> JobRecord:
        text = {keys.text(k): keys.text(v) for k, v in data.items()}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in text:
                continue
            raw = text[f.name]
            if f.name == "inputs":
                kwargs[f.name] = json.loads(raw)
            elif f.name == "status":
                kwargs[f.name] = JobStatus(raw)
            elif f.type in ("int", int):
                kwargs[f.name] = int(raw)
            elif f.type in ("float", float):
                kwargs[f.name] = float(raw)
            else:
                kwargs[f.name] = raw
        return cls(**kwargs)


_FIELD_NAMES = tuple(f.name for f in fields(JobRecord))


def create_job(r: redis.Redis, record: JobRecord) -> None:
    with r.pipeline() as p:
        queue_job(p, record)
        p.execute()


def queue_job(p: redis.client.Pipeline, record: JobRecord) -> None:
    """:func:`create_job`'s writes, on a caller's pipeline (the producer adds its chunk records to it)."""
    record.created = record.created or time.time()
    p.hset(keys.job(record.id), mapping=record.to_hash())
    p.zadd(keys.JOBS, {record.id: record.created})


def load_job(r: redis.Redis, job_id: str) -> JobRecord:
    data = r.hgetall(keys.job(job_id))
    if not data:
        raise JobNotFoundError(job_id)
    return JobRecord.from_hash(data)


def job_status(r: redis.Redis, job_id: str) -> JobStatus | None:
    raw = r.hget(keys.job(job_id), "status")
    return None if raw is None else JobStatus(keys.text(raw))


# KEYS: job hash. ARGV: now. Sets `started` once and moves queued -> running; a missing job is left alone.
START_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'started', ARGV[1])
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running')
  return 1
end
return 0
"""


def queue_start(p: redis.client.Pipeline, job_id: str) -> None:
    """On a caller's pipeline (a worker sends it with its first read of a chunk): record the job's start time
    once and move it queued -> running. The reply is 1 if this call moved the job to running, else 0."""
    p.eval(START_SCRIPT, 1, keys.job(job_id), repr(time.time()))


def cancel_job(r: redis.Redis, job_id: str) -> bool:
    """Flag the job cancelled; workers skip its items that have not started. False if it had already ended."""
    load_job(r, job_id)
    return _transition(r, job_id, {JobStatus.QUEUED, JobStatus.RUNNING}, JobStatus.CANCELLED)


def _transition(r: redis.Redis, job_id: str, allowed: set[JobStatus], to: JobStatus) -> bool:
    """Change status only from one of ``allowed`` (check-and-set under WATCH)."""
    key = keys.job(job_id)
    with r.pipeline() as p:
        while True:
            try:
                p.watch(key)
                current = p.hget(key, "status")
                if current is None or JobStatus(keys.text(current)) not in allowed:
                    p.unwatch()
                    return False
                p.multi()
                p.hset(key, "status", to.value)
                if to.terminal:
                    p.hset(key, "finished", repr(time.time()))
                p.execute()
                return True
            except redis.WatchError:
                continue


# KEYS: job hash, finished set, failures hash. ARGV: now, then (index, outcome, failure JSON or "") per item.
# SADD answers whether an index is new, which is what makes counting exactly-once; the job ends (done, or
# failed when nothing succeeded) as soon as every item has an outcome, unless it already ended (cancelled).
# The finish check runs on every call, so a job whose last report was a redelivery still ends.
RECORD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fresh, counts = 0, {}
for i = 2, #ARGV, 3 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    fresh = fresh + 1
    counts[ARGV[i + 1]] = (counts[ARGV[i + 1]] or 0) + 1
    if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2]) end
  end
end
for outcome, n in pairs(counts) do redis.call('HINCRBY', KEYS[1], outcome, n) end
local v = redis.call('HMGET', KEYS[1], 'total', 'done', 'failed', 'skipped', 'status')
local total, done, failed = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
if done + failed + (tonumber(v[4]) or 0) >= total and (v[5] == 'queued' or v[5] == 'running') then
  local final = 'done'
  if total > 0 and done == 0 and failed > 0 then final = 'failed' end
  redis.call('HSET', KEYS[1], 'status', final, 'finished', ARGV[1])
end
return fresh
"""


@dataclass
class ItemOutcome:
    index: int
    outcome: Outcome
    file: str = ""
    reason: str = ""


def _record_args(job_id: str, outcomes: Iterable[ItemOutcome]) -> list[str | int] | None:
    """The script's KEYS and ARGV (after numkeys); a repeated index keeps its last outcome. None: no outcomes."""
    latest = {o.index: o for o in outcomes}
    if not latest:
        return None
    args: list[str | int] = [keys.job(job_id), keys.job_finished(job_id), keys.job_failures(job_id),
                             repr(time.time())]
    for o in latest.values():
        failure = json.dumps({"file": o.file, "reason": o.reason}) if o.outcome is Outcome.FAILED else ""
        args += [o.index, Outcome(o.outcome).value, failure]
    return args


def queue_outcomes(pipe: redis.client.Pipeline, job_id: str, outcomes: Iterable[ItemOutcome]) -> bool:
    """Put :func:`record_outcomes`'s script on ``pipe``; its reply is how many were new. False if nothing
    was queued (no outcomes)."""
    args = _record_args(job_id, outcomes)
    if args is None:
        return False
    pipe.eval(RECORD_SCRIPT, 3, *args)
    return True


def record_outcomes(r: redis.Redis, job_id: str, outcomes: Iterable[ItemOutcome]) -> int:
    """Count each item's outcome exactly once; returns how many were new. Ends the job when all are in.

    One script call, so one round trip, whatever the number of items.
    """
    args = _record_args(job_id, outcomes)
    if args is None:
        return 0
    return int(r.eval(RECORD_SCRIPT, 3, *args))


def finished_indices(r: redis.Redis, job_id: str, indices: list[int]) -> set[int]:
    """Which of ``indices`` already have an outcome (a redelivered chunk skips them)."""
    if not indices:
        return set()
    present = r.smismember(keys.job_finished(job_id), indices)
    return {i for i, seen in zip(indices, present) if seen}


def failures(r: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """Per-item failures, in item order: ``{"index", "file", "reason"}``."""
    raw = r.hgetall(keys.job_failures(job_id))
    rows = [{"index": int(keys.text(k)), **json.loads(keys.text(v))} for k, v in raw.items()]
    return sorted(rows, key=lambda row: row["index"])


def rejected(r: redis.Redis, job_id: str) -> list[dict[str, str]]:
    return [json.loads(keys.text(v)) for v in r.lrange(keys.job_rejected(job_id), 0, -1)]


def list_jobs(r: redis.Redis, limit: int = 50) -> list[JobRecord]:
    """Newest first."""
    ids = [keys.text(i) for i in r.zrevrange(keys.JOBS, 0, limit - 1)]
    records = []
    for job_id in ids:
        data = r.hgetall(keys.job(job_id))
        if data:
            records.append(JobRecord.from_hash(data))
    return records
