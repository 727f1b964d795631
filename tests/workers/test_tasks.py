"""The chunk task's one-round-trip read of the job state (RedisJob.start_chunk), on fakeredis."""

from __future__ import annotations

import fakeredis
import pytest

from scheduler.exceptions import JobNotFoundError
from scheduler.jobs import RedisJob
from scheduler.records import ItemOutcome, JobRecord, JobStatus, Outcome


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_reads_the_record_and_the_items_already_finished(r) -> None:
    RedisJob.create(r, JobRecord(id="j", model="m", model_path="/m.corral", out="/out", total=4, inputs={"k": [1, 2]}))
    RedisJob(r, "j").record_outcomes([ItemOutcome(1, Outcome.DONE), ItemOutcome(3, Outcome.FAILED, "x.png", "bad")])
    job, seen = RedisJob(r, "j").start_chunk([0, 1, 2, 3])
    assert (job.id, job.model_path, job.inputs, job.status) == ("j", "/m.corral", {"k": [1, 2]}, JobStatus.QUEUED)
    assert seen == {1, 3}


def test_sees_a_cancel_in_the_same_read(r) -> None:
    RedisJob.create(r, JobRecord(id="j", model="m", model_path="/m.corral", out="/out", total=2))
    RedisJob(r, "j").cancel()
    job, seen = RedisJob(r, "j").start_chunk([0, 1])
    assert job.status is JobStatus.CANCELLED and seen == set()


def test_a_missing_job_is_named(r) -> None:
    with pytest.raises(JobNotFoundError, match="nope"):
        RedisJob(r, "nope").start_chunk([0])
