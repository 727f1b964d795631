"""Crashes and shutdowns lose nothing and count nothing twice; cancel drops queued items."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from scheduler import keys
from scheduler.client import Client
from scheduler.jobs import RedisJob
from scheduler.records import JobStatus
from tests.integration.conftest import make_images

pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _assert_exactly_once(r: redis.Redis, job_id: str, out: Path, total: int) -> None:
    record = RedisJob(r, job_id).load()
    assert record.status is JobStatus.DONE
    assert (record.done, record.failed, record.skipped) == (total, 0, 0)
    assert r.scard(keys.job_finished(job_id)) == total
    assert sorted(p.name for p in out.iterdir()) == [f"img{i:03d}.png" for i in range(total)]  # no .tmp leftovers


def test_sigkill_mid_job_redelivers_every_item_once(redis_url: str, r: redis.Redis, worker, slow_model: Path,
                                                    tmp_path: Path) -> None:
    total = 40
    make_images(tmp_path / "in", total, size=(192, 192))
    first = worker("--concurrency", "4", "--max-batch", "4", visibility_timeout=4)
    job = Client(redis_url).submit([tmp_path / "in"], model=str(slow_model), out=tmp_path / "out", chunk_size=4)
    _wait_for(lambda: RedisJob(r, job.id).load().done >= 6, 60, "some items to finish")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = RedisJob(r, job.id).load().done
    assert killed_at < total, "the job finished before the kill; make the model slower"
    assert r.hlen("unacked") > 0  # kombu holds the killed worker's chunks as unacknowledged
    # the second worker decodes one batch ahead and writes on two threads: redelivery holds under any pacing
    worker("--concurrency", "4", "--max-batch", "4", "--decode-ahead", "1", "--writer-threads", "2",
           visibility_timeout=4)
    final = job.wait(timeout=90)
    assert final.status is JobStatus.DONE
    _assert_exactly_once(r, job.id, tmp_path / "out", total)


def test_a_chunk_message_the_broker_lost_is_sent_again(redis_url: str, r: redis.Redis, worker, tiny_model: Path,
                                                      tmp_path: Path) -> None:
    total = 12
    make_images(tmp_path / "in", total, size=(64, 64))
    job = Client(redis_url).submit([tmp_path / "in"], model=str(tiny_model), out=tmp_path / "out", chunk_size=4)
    queued = r.lrange(keys.CPU_QUEUE, 0, -1) + r.lrange(f"{keys.CPU_QUEUE}\x06\x164", 0, -1)
    assert len(queued) == 3
    # what a worker killed between BRPOP and kombu's unacked bookkeeping leaves: the message is simply gone
    gone = next(m for m in queued if f'"{job.id}.1"'.encode() in m)
    assert sum(r.lrem(k, 0, gone) for k in (keys.CPU_QUEUE, f"{keys.CPU_QUEUE}\x06\x164")) == 1
    proc = worker(visibility_timeout=2)  # sweeps every second
    final = job.wait(timeout=60)
    assert final.status is JobStatus.DONE
    _assert_exactly_once(r, job.id, tmp_path / "out", total)
    assert f"job {job.id}: chunk 1 sent again (4 items)" in proc.log_path.read_text()
    assert not r.exists(keys.job_chunks(job.id))  # all released
    time.sleep(2.5)  # one more sweep forgets the finished job
    assert job.id.encode() not in r.smembers(keys.ACTIVE_JOBS)


def test_sigterm_drains_and_hands_back_unstarted_chunks(redis_url: str, r: redis.Redis, worker, slow_model: Path,
                                                       tmp_path: Path) -> None:
    total = 40
    make_images(tmp_path / "in", total, size=(192, 192))
    # a long visibility timeout: the job can only complete in time if SIGTERM requeued its chunks at once
    first = worker("--concurrency", "4", "--max-batch", "4", visibility_timeout=600)
    job = Client(redis_url).submit([tmp_path / "in"], model=str(slow_model), out=tmp_path / "out", chunk_size=4)
    _wait_for(lambda: RedisJob(r, job.id).load().done >= 4, 60, "some items to finish")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert RedisJob(r, job.id).load().done < total
    worker("--concurrency", "4", "--max-batch", "4", visibility_timeout=600)
    job.wait(timeout=90)
    _assert_exactly_once(r, job.id, tmp_path / "out", total)


def test_cancel_drops_queued_items(redis_url: str, r: redis.Redis, worker, slow_model: Path, tiny_model: Path,
                                   tmp_path: Path) -> None:
    total = 60
    make_images(tmp_path / "in", total, size=(192, 192))
    proc = worker("--concurrency", "2", "--max-batch", "4")
    client = Client(redis_url)
    job = client.submit([tmp_path / "in"], model=str(slow_model), out=tmp_path / "out", chunk_size=4)
    _wait_for(lambda: RedisJob(r, job.id).load().done >= 2, 60, "some items to finish")
    assert job.cancel()
    assert job.status().status is JobStatus.CANCELLED
    assert not job.cancel()  # already ended
    _wait_for(lambda: RedisJob(r, job.id).load().finished_items == total, 60, "every item to be accounted for")
    record = RedisJob(r, job.id).load()
    assert record.skipped > total // 2 and record.done + record.skipped == total
    assert len(list((tmp_path / "out").glob("*.png"))) == record.done
    # the worker carries on with other jobs
    make_images(tmp_path / "next", 3)
    assert client.submit([tmp_path / "next"], model=str(tiny_model), out=tmp_path / "o2").wait(timeout=30).done == 3
    assert proc.poll() is None
