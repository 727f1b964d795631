"""Workers and Redis die mid-job: every item is still done exactly once, and nothing is counted that is not written."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from scheduler import keys
from scheduler.client import Client
from scheduler.embedded import start_worker, stop_process
from scheduler.jobs import RedisJob
from scheduler.records import JobStatus
from scheduler.registry import live_workers
from tests.integration.conftest import make_images
from tests.reliability.conftest import AofRedis, wait_for

pytestmark = pytest.mark.slow


def _output_names(out: Path) -> list[str]:
    """The outputs a user sees. A worker killed inside a write can leave its hidden temporary file
    (``.NAME.PID-TID.tmp``, never renamed into place); those are listed apart and must name a real output."""
    names = sorted(p.name for p in out.iterdir())
    partial = [n for n in names if n.startswith(".") and n.endswith(".tmp")]
    visible = [n for n in names if n not in partial]
    assert all(n[1:].split(".png.")[0] + ".png" in visible for n in partial), partial
    return visible


def _diagnose(r: redis.Redis, job_id: str, total: int, fleet: list[subprocess.Popen]) -> str:
    """What a stuck job looks like from Redis and the workers' logs, for the failure message."""
    lines = [f"record: {RedisJob(r, job_id).load()}",
             f"missing items: {sorted(set(range(total)) - _finished(r, job_id))}",
             (f"unacked chunks: {r.hlen('unacked')}, queues: "
             f"{ {k.decode(): r.llen(k) for k in r.keys('corral.*') if r.type(k) == b'list'} }, "
             f"sweep lock ttl: {r.pttl('unacked_mutex')} ms")]
    for proc in fleet:
        log = getattr(proc, "log_path", None)
        if log is not None:
            lines.append(f"--- {log}\n{log.read_text()[-1500:]}")
    return "\n".join(lines)


def _finished(r: redis.Redis, job_id: str) -> set[int]:
    return {int(i) for i in r.smembers(keys.job_finished(job_id))}


@pytest.mark.timeout(180)
def test_three_sigkills_during_a_500_image_job_with_two_workers(redis_url: str, r: redis.Redis, worker,
                                                                slow_model: Path, tmp_path: Path) -> None:
    total = 500
    make_images(tmp_path / "in", total, size=(160, 160))  # ~20 s of work for two workers on two cores
    args = ("--concurrency", "4", "--max-batch", "8")
    fleet = [worker(*args, visibility_timeout=3), worker(*args, visibility_timeout=3)]
    job = Client(redis_url).submit([tmp_path / "in"], model=str(slow_model), out=tmp_path / "out", chunk_size=10)
    kills = []
    for n in range(3):
        wait_for(lambda n=n: RedisJob(r, job.id).load().done >= (n + 1) * 60, 90, f"{(n + 1) * 60} items before kill {n + 1}")
        victim = fleet[n % 2]  # the 3rd kill takes the replacement started at the 1st
        wait_for(lambda v=victim: v.pid in {w.pid for w in live_workers(r)}, 30, "the victim to be running")
        in_flight = r.hlen("unacked")  # chunks reserved by some worker and not yet acknowledged
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills.append((RedisJob(r, job.id).load().done, in_flight))
        fleet[n % 2] = worker(*args, visibility_timeout=3, wait=False)  # starts while the other one works on
    assert all(done < total for done, _ in kills), f"the job ended before all three kills: {kills}"
    assert any(in_flight for _, in_flight in kills), "no kill caught a worker holding chunks"
    try:
        final = job.wait(timeout=90)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{_diagnose(r, job.id, total, fleet)}") from None
    assert final.status is JobStatus.DONE
    assert (final.done, final.failed, final.skipped) == (total, 0, 0)  # each item counted exactly once
    assert _finished(r, job.id) == set(range(total))
    assert _output_names(tmp_path / "out") == [f"img{i:03d}.png" for i in range(total)]  # no duplicates, no .tmp


def _aof_worker(url: str, log: Path) -> subprocess.Popen:
    client = redis.Redis.from_url(url)
    before = {w.pid for w in live_workers(client)}
    proc = start_worker(url, "--concurrency", "4", "--max-batch", "8", "--visibility-timeout", "3",
                        "--loglevel", "info", log_path=log)
    wait_for(lambda: {w.pid for w in live_workers(client)} - before, 30, "the worker's heartbeat")
    return proc


@pytest.mark.timeout(150)
def test_redis_killed_and_restarted_from_its_append_only_file_mid_job(aof_redis: AofRedis, slow_model: Path,
                                                                      tmp_path: Path) -> None:
    total = 200
    make_images(tmp_path / "in", total, size=(64, 64))
    out = tmp_path / "out"
    workers = [_aof_worker(aof_redis.url, tmp_path / f"worker-{i}.log") for i in range(2)]
    try:
        r = redis.Redis.from_url(aof_redis.url)
        job = Client(aof_redis.url).submit([tmp_path / "in"], model=str(slow_model), out=out, chunk_size=10)
        wait_for(lambda: RedisJob(r, job.id).load().done >= 40, 60, "40 items before the crash")
        aof_redis.kill()
        time.sleep(2)  # workers lose their broker, heartbeats and progress writes meanwhile
        aof_redis.start()
        r = redis.Redis.from_url(aof_redis.url)
        restored = RedisJob(r, job.id).load()  # the job survived in the AOF
        assert restored.total == total and restored.done < total
        # whatever Redis says is done is on disk: a lost second of AOF may forget done items, never invent them.
        # Read Redis before the folder: workers are back and write each output before recording it.
        finished = _finished(r, job.id)
        written = {int(p.stem[3:]) for p in out.glob("img*.png")}
        assert finished <= written, f"counted but not written: {sorted(finished - written)}"
        assert restored.done <= len(finished), restored  # the counter shown to users, read first, agrees
        try:
            final = Client(aof_redis.url).job(job.id).wait(timeout=60)
        except TimeoutError as exc:
            for w, i in zip(workers, range(2)):
                w.log_path = tmp_path / f"worker-{i}.log"  # type: ignore[attr-defined]
            raise AssertionError(f"{exc}\n{_diagnose(r, job.id, total, workers)}") from None
        assert all(w.poll() is None for w in workers), "a worker died with its Redis"
    finally:
        for w in workers:
            stop_process(w, timeout=10)
    assert final.status is JobStatus.DONE and (final.done, final.failed, final.skipped) == (total, 0, 0)
    assert _finished(r, job.id) == set(range(total))
    assert _output_names(out) == [f"img{i:03d}.png" for i in range(total)]
