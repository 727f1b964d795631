"""Outcome reporting on fakeredis: the chunk handshake's fallback, and the status cache's reads."""

from __future__ import annotations

from concurrent.futures import Future

import fakeredis
import pytest

from scheduler import keys
from scheduler.jobs import RedisJob
from scheduler.protocol import ChunkItem
from scheduler.records import JobRecord, JobStatus, Outcome
from workers.entries import Accepted
from workers.outcomes import OutcomeReporter, StatusCache


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def _published(r: fakeredis.FakeRedis, total: int) -> JobRecord:
    record = JobRecord(id="j", model="m", model_path="/m", out="/out", total=total)
    RedisJob.create(r, record, chunks=[(0, [{"i": i, "n": f"{i}.png"} for i in range(total)])])
    return record


def test_a_chunk_whose_items_were_all_counted_before_is_retired_when_its_task_closes_it(r) -> None:
    _published(r, 2)
    reporter = OutcomeReporter(r, "w1")
    chunk = reporter.open_chunk("j", 0, 0)  # a redelivery: nothing left to run
    assert r.hexists(keys.job_chunks("j"), "0")
    reporter.close_chunk(chunk)
    assert chunk.retired and not r.hexists(keys.job_chunks("j"), "0")


def test_a_chunk_retired_by_the_report_of_its_last_item_is_not_retired_again(r) -> None:
    record = _published(r, 1)
    reporter = OutcomeReporter(r, "w1")
    chunk = reporter.open_chunk("j", 0, 1)
    entry = Accepted(record, ChunkItem(0, "0.png"), Future(), chunk)
    reporter.report([entry.outcome(Outcome.DONE)], batch_size=1)
    assert entry.future.result(1) is Outcome.DONE and chunk.retired
    assert RedisJob(r, "j").load().status is JobStatus.DONE
    RedisJob(r, "j").publish_chunks_on(r, [(0, [{"i": 0, "n": "0.png"}])])  # a record that must now stay
    reporter.close_chunk(chunk)
    assert r.hexists(keys.job_chunks("j"), "0")
    assert r.hgetall(keys.worker_batches("w1")) == {b"1": b"1"}


def test_the_status_cache_reads_redis_at_most_once_per_ttl_and_the_device_check_never(r) -> None:
    _published(r, 1)
    cache = StatusCache(r, ttl=60)
    assert not cache.known_cancelled("j")  # nothing read yet, and this check reads nothing
    assert not cache.is_cancelled("j")
    RedisJob(r, "j").cancel()
    assert not cache.is_cancelled("j") and not cache.known_cancelled("j")  # within the TTL: the cached status
    cache.refresh(["j"])
    assert cache.is_cancelled("j") and cache.known_cancelled("j")
