"""A job as Redis holds it: :class:`RedisJob` owns its keys, status transitions, counters, chunk records,
claims and the Lua scripts that change them. Every other module goes through it.

Counting outcomes. Workers report each item's outcome through
:meth:`RedisJob.record_outcomes`, which adds the item to the job's
*finished* set, bumps the matching counter, keeps failure reasons and ends
the job when every item is in, all in one Lua script (:data:`RECORD_SCRIPT`):
an item that is redelivered after a crash (and so reported twice) is counted
once, a crash between the writes cannot lose a count (a script runs whole or
not at all), and a report costs one round trip.

Chunk records. kombu's Redis transport pops a message with BRPOP and only
then records it as unacknowledged; a worker killed between the two loses
that message, and its items would never get an outcome. So the producer also
writes every chunk it publishes into the job's *chunks* hash, a worker
*claims* a chunk when it starts it and *retires* it (deletes its record and
claim) once every item has an outcome, and the sweeper
(:mod:`workers.sweeper`) sends again any chunk that is outstanding yet
neither queued, reserved by a worker, nor claimed by a live one.

Methods named ``…_on(pipe)`` only add their commands to the caller's
pipeline (so a worker counts a whole batch, across jobs, in one round trip);
the others send their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from scheduler import keys
from scheduler.exceptions import JobNotFoundError
from scheduler.records import DEFAULT_PRIORITY, ItemOutcome, JobRecord, JobStatus, Outcome

Redis = redis.Redis

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

# KEYS: claims hash. ARGV: chunk, worker id. Drops the claim only while that worker still holds it.
DROP_CLAIM_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


@dataclass
class Outstanding:
    """What the sweeper needs of an active job: where its chunks go, its progress, its chunks and claims."""

    id: str
    queue: str
    priority: int
    finished: int  # items with an outcome
    chunks: set[int] = field(default_factory=set)  # published and not yet retired
    claims: dict[int, str] = field(default_factory=dict)  # chunk -> worker running it


class RedisJob:
    """One job's records in Redis (see :mod:`scheduler.keys` for each key's type)."""

    def __init__(self, r: Redis, job_id: str) -> None:
        self.r = r
        self.id = job_id

    def __repr__(self) -> str:
        return f"RedisJob({self.id!r})"

    # ------------------------------------------------------------------ the record
    @classmethod
    def create(cls, r: Redis, record: JobRecord, *, rejected: Sequence[dict[str, str]] = (),
               chunks: Iterable[tuple[int, list[dict[str, Any]]]] = ()) -> RedisJob:
        """Write the record, the inputs rejected before queueing (``{"file", "reason"}``) and the chunks about
        to be published, in one round trip (before any message is sent: a worker may finish a chunk at once)."""
        job = cls(r, record.id)
        record.created = record.created or time.time()
        with r.pipeline() as p:
            if rejected:
                p.rpush(keys.job_rejected(record.id), *[json.dumps(x) for x in rejected])
            fields: dict[FieldT, EncodableT] = {k: v for k, v in record.to_hash().items()}
            p.hset(keys.job(record.id), mapping=fields)
            p.zadd(keys.JOBS, {record.id: record.created})
            job.publish_chunks_on(p, chunks)
            p.execute()
        return job

    def load(self) -> JobRecord:
        data = self.r.hgetall(keys.job(self.id))
        if not data:
            raise JobNotFoundError(self.id)
        return JobRecord.from_hash(data)

    def status(self) -> JobStatus | None:
        raw = self.r.hget(keys.job(self.id), "status")
        return None if raw is None else JobStatus(keys.text(raw))

    @staticmethod
    def statuses(r: Redis, job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        """Each job's status (None: no record), in one round trip."""
        with r.pipeline(transaction=False) as p:
            for job_id in job_ids:
                p.hget(keys.job(job_id), "status")
            raw = p.execute()
        return {job_id: None if s is None else JobStatus(keys.text(s)) for job_id, s in zip(job_ids, raw)}

    @staticmethod
    def recent(r: Redis, limit: int = 50) -> list[JobRecord]:
        """Newest first."""
        ids = [keys.text(i) for i in r.zrevrange(keys.JOBS, 0, limit - 1)]
        with r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hgetall(keys.job(job_id))
            return [JobRecord.from_hash(data) for data in p.execute() if data]

    def cancel(self) -> bool:
        """Flag the job cancelled; workers skip its items that have not started. False if it had already ended."""
        self.load()
        return self._transition({JobStatus.QUEUED, JobStatus.RUNNING}, JobStatus.CANCELLED)

    def _transition(self, allowed: set[JobStatus], to: JobStatus) -> bool:
        """Change status only from one of ``allowed`` (check-and-set under WATCH)."""
        key = keys.job(self.id)
        with self.r.pipeline() as p:
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

    # ------------------------------------------------------------------ outcomes
    def _record_args(self, outcomes: Iterable[ItemOutcome]) -> list[str | int] | None:
        """The script's KEYS and ARGV (after numkeys); a repeated index keeps its last outcome. None: none."""
        latest = {o.index: o for o in outcomes}
        if not latest:
            return None
        args: list[str | int] = [keys.job(self.id), keys.job_finished(self.id), keys.job_failures(self.id),
                                 repr(time.time())]
        for o in latest.values():
            failure = json.dumps({"file": o.file, "reason": o.reason}) if o.outcome is Outcome.FAILED else ""
            args += [o.index, Outcome(o.outcome).value, failure]
        return args

    def record_outcomes(self, outcomes: Iterable[ItemOutcome]) -> int:
        """Count each item's outcome exactly once; returns how many were new. Ends the job when all are in.

        One script call, so one round trip, whatever the number of items.
        """
        args = self._record_args(outcomes)
        return 0 if args is None else int(self.r.eval(RECORD_SCRIPT, 3, *args))

    def record_outcomes_on(self, pipe: Pipeline, outcomes: Iterable[ItemOutcome]) -> bool:
        """:meth:`record_outcomes` on ``pipe``; its reply is how many were new. False: no outcomes, nothing
        added."""
        args = self._record_args(outcomes)
        if args is None:
            return False
        pipe.eval(RECORD_SCRIPT, 3, *args)
        return True

    def failures(self) -> list[dict[str, Any]]:
        """Per-item failures, in item order: ``{"index", "file", "reason"}``."""
        raw = self.r.hgetall(keys.job_failures(self.id))
        rows = [{"index": int(keys.text(k)), **json.loads(keys.text(v))} for k, v in raw.items()]
        return sorted(rows, key=lambda row: row["index"])

    def rejected(self) -> list[dict[str, str]]:
        """Inputs refused before queueing: ``{"file", "reason"}``."""
        return [json.loads(keys.text(v)) for v in self.r.lrange(keys.job_rejected(self.id), 0, -1)]

    # ------------------------------------------------------------------ chunks
    def publish_chunks_on(self, pipe: Pipeline, chunks: Iterable[tuple[int, list[dict[str, Any]]]]) -> None:
        """Before their messages are sent: these ``(number, item messages)`` chunks are outstanding and the
        job is active (swept for lost chunks)."""
        records: dict[FieldT, EncodableT] = {str(n): json.dumps(items, separators=(",", ":")) for n, items in chunks}
        if records:
            pipe.hset(keys.job_chunks(self.id), mapping=records)
        pipe.sadd(keys.ACTIVE_JOBS, self.id)

    def start_chunk(self, indices: Sequence[int], chunk: int | None = None,
                    worker_id: str = "") -> tuple[JobRecord, set[int]]:
        """A worker starts a chunk: the record (as it was before) and which item ``indices`` already have an
        outcome (a redelivered chunk skips them), in one round trip that also moves a queued job to running
        and, given ``chunk``, claims it for ``worker_id``."""
        indices = list(indices)
        with self.r.pipeline(transaction=False) as p:
            p.hgetall(keys.job(self.id))
            if indices:
                p.smismember(keys.job_finished(self.id), indices)
                p.eval(START_SCRIPT, 1, keys.job(self.id), repr(time.time()))
            if chunk is not None:
                p.hset(keys.job_claims(self.id), str(chunk), worker_id)
            replies = p.execute()
        if not replies[0]:
            raise JobNotFoundError(self.id)
        present = replies[1] if indices else []
        return JobRecord.from_hash(replies[0]), {i for i, seen in zip(indices, present) if seen}

    def chunk_items(self, chunk: int) -> list[dict[str, Any]] | None:
        """The item messages of an outstanding chunk; None once it is retired."""
        raw = self.r.hget(keys.job_chunks(self.id), str(chunk))
        return None if raw is None else json.loads(raw)

    def claim_on(self, pipe: Pipeline, chunk: int, worker_id: str) -> None:
        """``worker_id`` runs the chunk now."""
        pipe.hset(keys.job_claims(self.id), str(chunk), worker_id)

    def drop_claim_on(self, pipe: Pipeline, chunk: int, worker_id: str) -> None:
        """Remove the chunk's claim only while ``worker_id`` still holds it: a newer claim (a live worker that
        has already picked up the chunk sent again) stays."""
        pipe.eval(DROP_CLAIM_SCRIPT, 1, keys.job_claims(self.id), str(chunk), worker_id)

    def retire_chunk(self, chunk: int) -> None:
        """Every item of the chunk has an outcome: nothing of it is left to recover."""
        with self.r.pipeline(transaction=False) as p:
            self.retire_chunk_on(p, chunk)
            p.execute()

    def retire_chunk_on(self, pipe: Pipeline, chunk: int) -> None:
        """:meth:`retire_chunk` on ``pipe``."""
        pipe.hdel(keys.job_chunks(self.id), str(chunk))
        pipe.hdel(keys.job_claims(self.id), str(chunk))

    def forget_chunks_on(self, pipe: Pipeline) -> None:
        """Drop every chunk record and claim (the job is over, or its record is gone)."""
        pipe.delete(keys.job_chunks(self.id), keys.job_claims(self.id))

    @staticmethod
    def active(r: Redis) -> tuple[list[Outstanding], list[str]]:
        """Jobs with chunks to watch, and the ids of active jobs that need no more watching (every item has
        an outcome, or the record is gone): one round trip for all."""
        ids = sorted(keys.text(i) for i in r.smembers(keys.ACTIVE_JOBS))
        with r.pipeline(transaction=False) as p:
            for job_id in ids:
                p.hmget(keys.job(job_id), ["total", "done", "failed", "skipped", "queue", "priority"])
                p.hkeys(keys.job_chunks(job_id))
                p.hgetall(keys.job_claims(job_id))
            replies = p.execute()
        jobs, finished = [], []
        for n, job_id in enumerate(ids):
            (total, done, failed, skipped, queue, priority), chunks, claims = replies[3 * n:3 * n + 3]
            count = sum(int(v or 0) for v in (done, failed, skipped))
            if total is None or count >= int(total):
                finished.append(job_id)
                continue
            jobs.append(Outstanding(job_id, keys.text(queue or keys.CPU_QUEUE), int(priority or DEFAULT_PRIORITY),
                                    count, {int(c) for c in chunks},
                                    {int(k): keys.text(v) for k, v in claims.items()}))
        return jobs, finished
