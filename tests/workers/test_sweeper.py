"""The lost-chunk sweeper's decisions, on fakeredis with messages laid out as kombu's Redis transport stores them."""

from __future__ import annotations

import json

import fakeredis
import pytest

from scheduler import keys, protocol
from scheduler.jobs import RedisJob
from scheduler.records import ItemOutcome, JobRecord, Outcome
from scheduler.registry import WorkerInfo, publish
from workers.sweeper import BrokerLayout, ChunkSweeper, LostChunk

JOB = "0123456789ab"
LAYOUT = BrokerLayout()


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


class Sent:
    """What a sweeper sent again, as the worker's republisher would receive it."""

    def __init__(self) -> None:
        self.calls: list[tuple[LostChunk, list, int]] = []

    def __call__(self, lost: LostChunk, items: list, attempt: int) -> None:
        self.calls.append((lost, items, attempt))

    @property
    def chunks(self) -> list[tuple[str, int]]:
        return [(lost.job_id, lost.chunk) for lost, _, _ in self.calls]


def _message(job_id: str, chunk: int) -> bytes:
    return json.dumps({"body": "W10=", "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": {"lang": "py", "task": "corral.process_chunk", "id": protocol.task_id(job_id, chunk),
                                   "root_id": protocol.task_id(job_id, chunk)},
                       "properties": {"delivery_tag": f"tag-{chunk}", "priority": 4}}).encode()


def _job(r, n_chunks: int = 3, size: int = 2, job_id: str = JOB) -> None:
    RedisJob.create(r, JobRecord(id=job_id, model="m", model_path="/m", out="/out", total=n_chunks * size, priority=3))
    with r.pipeline() as p:
        RedisJob(r, job_id).publish_chunks_on(p, [(c, [{"i": c * size + k, "n": f"{c * size + k}.jpg"} for k in range(size)])
                                            for c in range(n_chunks)])
        p.execute()


def _sweeper(r, sent: Sent, interval: float = 5.0) -> ChunkSweeper:
    return ChunkSweeper(r, LAYOUT, sent, worker_id="sweeper", interval=interval)


def test_a_chunk_missing_from_the_broker_is_sent_again_after_a_second_look(r) -> None:
    _job(r)
    r.lpush("corral.cpu", _message(JOB, 0))  # queued
    r.hset("unacked", "tag-1", json.dumps([json.loads(_message(JOB, 1)), "", "corral.cpu"]))  # reserved
    sent = Sent()
    sweeper = _sweeper(r, sent)
    assert sweeper.sweep(now=100.0) == []  # first round: progress noted, nothing judged yet
    assert sweeper.sweep(now=105.0) == []  # stalled: chunk 2 is a suspect
    assert r.hexists(keys.SWEEP_SUSPECTS, f"{JOB}.2")
    assert sweeper.sweep(now=108.0) == []  # missing for less than one interval: still waiting
    lost = sweeper.sweep(now=110.0)
    assert [(c.job_id, c.chunk, c.queue, c.priority) for c in lost] == [(JOB, 2, "corral.cpu", 3)]
    assert sent.calls[0][1] == [{"i": 4, "n": "4.jpg"}, {"i": 5, "n": "5.jpg"}]
    assert not r.hexists(keys.SWEEP_SUSPECTS, f"{JOB}.2")


def test_a_chunk_that_shows_up_again_is_no_longer_a_suspect(r) -> None:
    _job(r, n_chunks=1)
    sent = Sent()
    sweeper = _sweeper(r, sent)
    sweeper.sweep(now=100.0)
    sweeper.sweep(now=105.0)
    assert r.hexists(keys.SWEEP_SUSPECTS, f"{JOB}.0")
    # it was only in flight between BRPOP and kombu's bookkeeping: now it is queued again
    r.lpush(f"corral.cpu{LAYOUT.sep}4", _message(JOB, 0))
    assert sweeper.sweep(now=120.0) == [] and sent.calls == []
    assert not r.hexists(keys.SWEEP_SUSPECTS, f"{JOB}.0")


def test_a_job_that_makes_progress_is_not_searched(r) -> None:
    _job(r, n_chunks=2)
    sent = Sent()
    sweeper = _sweeper(r, sent)
    for n, now in enumerate((100.0, 105.0, 110.0)):
        RedisJob(r, JOB).record_outcomes([ItemOutcome(n, Outcome.DONE)])  # chunk 0's items, then one of chunk 1's
        assert sweeper.sweep(now=now) == []
    assert r.hlen(keys.SWEEP_SUSPECTS) == 0


def test_a_chunk_claimed_by_a_dead_worker_is_sent_again_at_once(r) -> None:
    _job(r, n_chunks=2)
    publish(r, WorkerInfo(id="alive", hostname="h", pid=1, device="cpu", backend="numpy", queue="corral.cpu"))
    with r.pipeline() as p:
        RedisJob(r, JOB).claim_on(p, 0, "alive")
        RedisJob(r, JOB).claim_on(p, 1, "gone")  # no heartbeat: that worker was killed
        p.execute()
    sent = Sent()
    lost = _sweeper(r, sent).sweep(now=100.0)
    assert [(c.chunk, c.reason) for c in lost] == [(1, "worker gone stopped while running it")]
    assert r.hget(keys.job_claims(JOB), "1") is None and r.hget(keys.job_claims(JOB), "0") == b"alive"


def test_resending_a_dead_workers_chunk_keeps_the_claim_of_the_worker_that_picked_it_up(r) -> None:
    _job(r, n_chunks=1)

    class PickedUpAtOnce(Sent):
        def __call__(self, lost: LostChunk, items: list, attempt: int) -> None:
            super().__call__(lost, items, attempt)
            with r.pipeline() as p:  # a live worker consumes the resent message before the sweeper goes on
                RedisJob(r, lost.job_id).claim_on(p, lost.chunk, "new")
                p.execute()

    with r.pipeline() as p:
        RedisJob(r, JOB).claim_on(p, 0, "gone")
        p.execute()
    sent = PickedUpAtOnce()
    assert [c.holder for c in _sweeper(r, sent).sweep(now=100.0)] == ["gone"]
    assert sent.chunks == [(JOB, 0)] and r.hget(keys.job_claims(JOB), "0") == b"new"


def test_released_chunks_and_finished_jobs_are_forgotten(r) -> None:
    _job(r, n_chunks=2)
    RedisJob(r, JOB).retire_chunk(0)
    assert r.hkeys(keys.job_chunks(JOB)) == [b"1"]
    RedisJob(r, JOB).record_outcomes([ItemOutcome(i, Outcome.DONE) for i in range(4)])
    sent = Sent()
    assert _sweeper(r, sent).sweep(now=100.0) == []
    assert r.smembers(keys.ACTIVE_JOBS) == set()
    assert not r.exists(keys.job_chunks(JOB)) and not r.exists(keys.job_claims(JOB))


def test_a_long_queue_defers_the_search(r) -> None:
    _job(r, n_chunks=1)
    for n in range(5):
        r.lpush("corral.cpu", _message("ffffffffffff", n))  # another job's backlog
    sent = Sent()
    sweeper = ChunkSweeper(r, LAYOUT, sent, worker_id="s", interval=5.0, max_scan=4)
    for now in (100.0, 105.0, 110.0, 115.0):
        assert sweeper.sweep(now=now) == []
    assert r.hlen(keys.SWEEP_SUSPECTS) == 0


def test_task_ids_name_the_chunk() -> None:
    assert protocol.parse_task_id(protocol.task_id(JOB, 7)) == (JOB, 7)
    assert protocol.parse_task_id(protocol.task_id(JOB, 7, attempt=1234)) == (JOB, 7)
    assert protocol.parse_task_id("5f1c2a8e-1c2d-4e5f-9a8b-7c6d5e4f3a2b") is None
