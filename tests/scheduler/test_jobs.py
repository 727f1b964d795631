from __future__ import annotations

import threading

import fakeredis
import pytest

from scheduler import keys
from scheduler.jobs import (
    ItemOutcome,
    JobNotFoundError,
    JobRecord,
    JobStatus,
    Outcome,
    cancel_job,
    create_job,
    failures,
    finished_indices,
    list_jobs,
    load_job,
    queue_outcomes,
    queue_start,
    record_outcomes,
)


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def _job(r, total: int = 4, job_id: str = "j1") -> JobRecord:
    rec = JobRecord(id=job_id, model="m.corral", model_path="/m.corral", out="/out", total=total,
                    inputs={"style": [0.5, 0.5]}, priority=7)
    create_job(r, rec)
    return rec


def test_record_round_trips_through_the_hash(r) -> None:
    rec = _job(r)
    back = load_job(r, "j1")
    assert back.inputs == {"style": [0.5, 0.5]} and back.priority == 7 and back.status is JobStatus.QUEUED
    assert back.created == pytest.approx(rec.created) and back.started == 0.0
    assert list_jobs(r)[0].id == "j1"
    with pytest.raises(JobNotFoundError, match="corral jobs"):
        load_job(r, "nope")


def test_keys_share_the_prefix_and_differ_per_job() -> None:
    names = keys.job_keys("a") + keys.job_keys("b") + [keys.input_blob("a", 1), keys.worker("w")]
    assert all(n.startswith("corral:") for n in names) and len(set(names)) == len(names)


def test_outcomes_are_counted_once_even_when_redelivered(r) -> None:
    _job(r, total=4)
    assert record_outcomes(r, "j1", [ItemOutcome(0, Outcome.DONE), ItemOutcome(1, Outcome.DONE)]) == 2
    # redelivery reports item 1 again, plus a new failure
    assert record_outcomes(r, "j1", [ItemOutcome(1, Outcome.DONE), ItemOutcome(2, Outcome.FAILED, "b.jpg", "bad")]) == 1
    rec = load_job(r, "j1")
    assert (rec.done, rec.failed, rec.status) == (2, 1, JobStatus.QUEUED)
    assert failures(r, "j1") == [{"index": 2, "file": "b.jpg", "reason": "bad"}]
    assert finished_indices(r, "j1", [0, 1, 2, 3]) == {0, 1, 2}
    record_outcomes(r, "j1", [ItemOutcome(3, Outcome.DONE)])
    rec = load_job(r, "j1")
    assert rec.status is JobStatus.DONE and rec.finished > 0 and rec.finished_items == 4


def test_concurrent_reports_of_the_same_items_count_exactly(r) -> None:
    _job(r, total=200)

    def report() -> None:
        for start in range(0, 200, 10):
            record_outcomes(r, "j1", [ItemOutcome(i, Outcome.DONE) for i in range(start, start + 10)])

    threads = [threading.Thread(target=report) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec = load_job(r, "j1")
    assert rec.done == 200 and rec.status is JobStatus.DONE


def test_all_failed_is_a_failed_job(r) -> None:
    _job(r, total=2)
    record_outcomes(r, "j1", [ItemOutcome(0, Outcome.FAILED, "a", "x"), ItemOutcome(1, Outcome.FAILED, "b", "y")])
    assert load_job(r, "j1").status is JobStatus.FAILED


def _start(r, job_id: str) -> bool:
    with r.pipeline(transaction=False) as p:
        queue_start(p, job_id)
        return bool(p.execute()[0])


def test_status_transitions(r) -> None:
    _job(r, total=2)
    assert _start(r, "j1")
    rec = load_job(r, "j1")
    assert rec.status is JobStatus.RUNNING and rec.started > 0
    first = rec.started
    assert not _start(r, "j1")
    assert load_job(r, "j1").started == first  # set once
    assert cancel_job(r, "j1")
    assert not cancel_job(r, "j1")
    # skipped items finish a cancelled job without changing its status
    record_outcomes(r, "j1", [ItemOutcome(0, Outcome.SKIPPED), ItemOutcome(1, Outcome.SKIPPED)])
    rec = load_job(r, "j1")
    assert rec.status is JobStatus.CANCELLED and rec.skipped == 2
    assert JobStatus.CANCELLED.terminal and not JobStatus.RUNNING.terminal


def test_outcomes_of_several_jobs_count_in_one_pipeline(r) -> None:
    _job(r, total=2, job_id="a")
    _job(r, total=3, job_id="b")
    with r.pipeline(transaction=False) as p:
        assert queue_outcomes(p, "a", [ItemOutcome(0, Outcome.DONE), ItemOutcome(1, Outcome.FAILED, "x", "bad")])
        assert queue_outcomes(p, "b", [ItemOutcome(0, Outcome.DONE)])
        assert not queue_outcomes(p, "b", [])
        assert p.execute() == [2, 1]
    a, b = load_job(r, "a"), load_job(r, "b")
    assert (a.done, a.failed, a.status) == (1, 1, JobStatus.DONE) and (b.done, b.status) == (1, JobStatus.QUEUED)
    assert failures(r, "a") == [{"index": 1, "file": "x", "reason": "bad"}]


def test_an_index_reported_twice_in_one_call_counts_once_with_its_last_outcome(r) -> None:
    _job(r, total=2)
    assert record_outcomes(r, "j1", [ItemOutcome(0, Outcome.FAILED, "a", "x"), ItemOutcome(0, Outcome.DONE)]) == 1
    rec = load_job(r, "j1")
    assert (rec.done, rec.failed) == (1, 0) and failures(r, "j1") == []


def test_a_job_whose_last_report_is_a_redelivery_still_ends(r) -> None:
    _job(r, total=1)
    # counted but not ended: what a worker of an older version left if it died between its two writes
    r.sadd(keys.job_finished("j1"), 0)
    r.hincrby(keys.job("j1"), "done", 1)
    assert load_job(r, "j1").status is JobStatus.QUEUED
    assert record_outcomes(r, "j1", [ItemOutcome(0, Outcome.DONE)]) == 0
    rec = load_job(r, "j1")
    assert (rec.done, rec.status) == (1, JobStatus.DONE) and rec.finished > 0


def test_reports_for_a_missing_job_write_nothing(r) -> None:
    assert record_outcomes(r, "gone", [ItemOutcome(0, Outcome.DONE)]) == 0
    assert not _start(r, "gone")
    assert not r.exists(*keys.job_keys("gone"))
