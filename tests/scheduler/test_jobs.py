from __future__ import annotations

import threading

import fakeredis
import pytest

from scheduler import keys
from scheduler.exceptions import JobNotFoundError
from scheduler.jobs import RedisJob
from scheduler.records import ItemOutcome, JobRecord, JobStatus, Outcome


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def _job(r, total: int = 4, job_id: str = "j1") -> JobRecord:
    rec = JobRecord(id=job_id, model="m.corral", model_path="/m.corral", out="/out", total=total,
                    inputs={"style": [0.5, 0.5]}, priority=7)
    RedisJob.create(r, rec)
    return rec


def test_record_round_trips_through_the_hash(r) -> None:
    rec = _job(r)
    back = RedisJob(r, "j1").load()
    assert back.inputs == {"style": [0.5, 0.5]} and back.priority == 7 and back.status is JobStatus.QUEUED
    assert back.created == pytest.approx(rec.created) and back.started == 0.0
    assert RedisJob.recent(r)[0].id == "j1"
    with pytest.raises(JobNotFoundError, match="corral jobs"):
        RedisJob(r, "nope").load()


def test_keys_share_the_prefix_and_differ_per_job() -> None:
    names = keys.job_keys("a") + keys.job_keys("b") + [keys.input_blob("a", 1), keys.worker("w")]
    assert all(n.startswith("corral:") for n in names) and len(set(names)) == len(names)


def test_outcomes_are_counted_once_even_when_redelivered(r) -> None:
    _job(r, total=4)
    assert RedisJob(r, "j1").record_outcomes([ItemOutcome(0, Outcome.DONE), ItemOutcome(1, Outcome.DONE)]) == 2
    # redelivery reports item 1 again, plus a new failure
    assert RedisJob(r, "j1").record_outcomes([ItemOutcome(1, Outcome.DONE), ItemOutcome(2, Outcome.FAILED, "b.jpg", "bad")]) == 1
    rec = RedisJob(r, "j1").load()
    assert (rec.done, rec.failed, rec.status) == (2, 1, JobStatus.QUEUED)
    assert RedisJob(r, "j1").failures() == [{"index": 2, "file": "b.jpg", "reason": "bad"}]
    assert RedisJob(r, "j1").start_chunk([0, 1, 2, 3])[1] == {0, 1, 2}
    RedisJob(r, "j1").record_outcomes([ItemOutcome(3, Outcome.DONE)])
    rec = RedisJob(r, "j1").load()
    assert rec.status is JobStatus.DONE and rec.finished > 0 and rec.finished_items == 4


def test_concurrent_reports_of_the_same_items_count_exactly(r) -> None:
    _job(r, total=200)

    def report() -> None:
        for start in range(0, 200, 10):
            RedisJob(r, "j1").record_outcomes([ItemOutcome(i, Outcome.DONE) for i in range(start, start + 10)])

    threads = [threading.Thread(target=report) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec = RedisJob(r, "j1").load()
    assert rec.done == 200 and rec.status is JobStatus.DONE


def test_all_failed_is_a_failed_job(r) -> None:
    _job(r, total=2)
    RedisJob(r, "j1").record_outcomes([ItemOutcome(0, Outcome.FAILED, "a", "x"), ItemOutcome(1, Outcome.FAILED, "b", "y")])
    assert RedisJob(r, "j1").load().status is JobStatus.FAILED


def _start(r, job_id: str) -> bool:
    """A worker starts a chunk of the job; True if that moved the job to running."""
    record = RedisJob(r, job_id)
    before = record.status()
    try:
        record.start_chunk([0])
    except JobNotFoundError:
        return False
    return before is JobStatus.QUEUED and record.status() is JobStatus.RUNNING


def test_status_transitions(r) -> None:
    _job(r, total=2)
    assert _start(r, "j1")
    rec = RedisJob(r, "j1").load()
    assert rec.status is JobStatus.RUNNING and rec.started > 0
    first = rec.started
    assert not _start(r, "j1")
    assert RedisJob(r, "j1").load().started == first  # set once
    assert RedisJob(r, "j1").cancel()
    assert not RedisJob(r, "j1").cancel()
    # skipped items finish a cancelled job without changing its status
    RedisJob(r, "j1").record_outcomes([ItemOutcome(0, Outcome.SKIPPED), ItemOutcome(1, Outcome.SKIPPED)])
    rec = RedisJob(r, "j1").load()
    assert rec.status is JobStatus.CANCELLED and rec.skipped == 2
    assert JobStatus.CANCELLED.terminal and not JobStatus.RUNNING.terminal


def test_outcomes_of_several_jobs_count_in_one_pipeline(r) -> None:
    _job(r, total=2, job_id="a")
    _job(r, total=3, job_id="b")
    with r.pipeline(transaction=False) as p:
        assert RedisJob(r, "a").record_outcomes_on(p, [ItemOutcome(0, Outcome.DONE), ItemOutcome(1, Outcome.FAILED, "x", "bad")])
        assert RedisJob(r, "b").record_outcomes_on(p, [ItemOutcome(0, Outcome.DONE)])
        assert not RedisJob(r, "b").record_outcomes_on(p, [])
        assert p.execute() == [2, 1]
    a, b = RedisJob(r, "a").load(), RedisJob(r, "b").load()
    assert (a.done, a.failed, a.status) == (1, 1, JobStatus.DONE) and (b.done, b.status) == (1, JobStatus.QUEUED)
    assert RedisJob(r, "a").failures() == [{"index": 1, "file": "x", "reason": "bad"}]


def test_an_index_reported_twice_in_one_call_counts_once_with_its_last_outcome(r) -> None:
    _job(r, total=2)
    assert RedisJob(r, "j1").record_outcomes([ItemOutcome(0, Outcome.FAILED, "a", "x"), ItemOutcome(0, Outcome.DONE)]) == 1
    rec = RedisJob(r, "j1").load()
    assert (rec.done, rec.failed) == (1, 0) and RedisJob(r, "j1").failures() == []


def test_a_job_whose_last_report_is_a_redelivery_still_ends(r) -> None:
    _job(r, total=1)
    # counted but not ended: what a worker of an older version left if it died between its two writes
    r.sadd(keys.job_finished("j1"), 0)
    r.hincrby(keys.job("j1"), "done", 1)
    assert RedisJob(r, "j1").load().status is JobStatus.QUEUED
    assert RedisJob(r, "j1").record_outcomes([ItemOutcome(0, Outcome.DONE)]) == 0
    rec = RedisJob(r, "j1").load()
    assert (rec.done, rec.status) == (1, JobStatus.DONE) and rec.finished > 0


def test_reports_for_a_missing_job_write_nothing(r) -> None:
    assert RedisJob(r, "gone").record_outcomes([ItemOutcome(0, Outcome.DONE)]) == 0
    assert not _start(r, "gone")
    assert not r.exists(*keys.job_keys("gone"))
