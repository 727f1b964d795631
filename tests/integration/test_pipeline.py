"""Submit -> worker batches -> outputs -> progress -> results, on a real Redis and real worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from click.testing import CliRunner
from PIL import Image

from scheduler import keys
from scheduler.cli import main
from scheduler.client import Client
from scheduler.records import JobStatus
from scheduler.registry import live_workers
from tests.integration.conftest import make_images, python_env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("compute", ["process", "thread"])
def test_fifty_image_job_end_to_end(redis_url: str, r: redis.Redis, worker, tiny_model: Path, tmp_path: Path,
                                    compute: str) -> None:
    worker("--max-batch", "8", "--compute", compute)
    make_images(tmp_path / "in" / "a", 25, prefix="x")
    make_images(tmp_path / "in" / "b", 25, prefix="x")  # same file names in two folders
    client = Client(redis_url)
    job = client.submit([tmp_path / "in"], model=str(tiny_model), out=tmp_path / "out", chunk_size=16)
    seen = []
    final = job.wait(progress=seen.append, timeout=60)
    assert final.status is JobStatus.DONE
    assert (final.total, final.done, final.failed, final.skipped) == (50, 50, 0, 0)
    assert seen[-1].done == 50 and len(seen) >= 2  # progress reported along the way
    outputs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert outputs == [f"{d}/x{i:03d}.png" for d in "ab" for i in range(25)]
    img = Image.open(tmp_path / "out" / "a" / "x007.png")
    assert img.size == (32, 24) and img.mode == "RGB"
    assert r.scard(keys.job_finished(job.id)) == 50
    # the worker recorded its batch sizes; none exceeds --max-batch
    sizes = {int(k): int(v) for k, v in r.hgetall(keys.worker_batches(live_workers(r)[0].id)).items()}
    assert sum(k * v for k, v in sizes.items()) == 50 and max(sizes) <= 8

    runner = CliRunner()
    res = runner.invoke(main, ["status", job.id, "--json", "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["status"] == "done" and doc["done"] == 50 and doc["failures"] == []
    res = runner.invoke(main, ["results", job.id, "--out", str(tmp_path / "copy"), "--redis-url", redis_url])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "copy").rglob("*.png"))) == 50
    res = runner.invoke(main, ["jobs", "--json", "--redis-url", redis_url])
    assert [j["id"] for j in json.loads(res.output)] == [job.id]
    deadline = time.monotonic() + 5  # heartbeats refresh every few seconds
    while not live_workers(r)[0].warm_models and time.monotonic() < deadline:
        time.sleep(0.2)
    res = runner.invoke(main, ["workers", "--json", "--redis-url", redis_url])
    [info] = json.loads(res.output)
    assert info["device"] == "cpu" and info["backend"] == "onnxruntime" and info["warm_models"] == [str(tiny_model)]


def test_concurrent_one_image_jobs_share_batches(redis_url: str, r: redis.Redis, worker, tiny_model: Path,
                                                 tmp_path: Path) -> None:
    worker("--max-batch", "16", "--max-delay-ms", "300", "--concurrency", "16")
    paths = make_images(tmp_path / "in", 16)
    client = Client(redis_url)
    # warm the model first, so that the 16 jobs arrive while the worker is idle
    client.submit([paths[0]], model=str(tiny_model), out=tmp_path / "warm").wait(timeout=30)
    r.delete(*r.keys(keys.PREFIX + "worker:*:batches"))
    jobs = []
    barrier = threading.Barrier(16)

    def submit(p: Path) -> None:
        barrier.wait()
        jobs.append(Client(redis_url).submit([p], model=str(tiny_model), out=tmp_path / "out"))

    threads = [threading.Thread(target=submit, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({j.id for j in jobs}) == 16
    for job in jobs:
        assert job.wait(timeout=30).done == 1
    [wid] = [w.id for w in live_workers(r)]
    sizes = {int(k): int(v) for k, v in r.hgetall(keys.worker_batches(wid)).items()}
    assert sum(k * v for k, v in sizes.items()) == 16
    assert max(sizes) > 1, f"no cross-job batching: batch sizes {sizes}"
    assert len(list((tmp_path / "out").glob("*.png"))) == 16


def test_redis_blob_transport(redis_url: str, r: redis.Redis, worker, tiny_model: Path, tmp_path: Path) -> None:
    worker()
    make_images(tmp_path / "in", 12)
    client = Client(redis_url)
    job = client.submit([tmp_path / "in"], model=str(tiny_model), out=tmp_path / "unused", transport="redis",
                        chunk_size=5)
    final = job.wait(timeout=60)
    assert (final.status, final.done) == (JobStatus.DONE, 12)
    assert not (tmp_path / "unused").exists()  # nothing written on the shared filesystem
    assert r.keys(keys.PREFIX + f"job:{job.id}:in:*") == []  # input blobs dropped once their chunk is done
    assert 0 < r.ttl(keys.job_outputs(job.id))  # outputs expire
    written = job.results(tmp_path / "fetched")
    assert sorted(p.name for p in written) == [f"img{i:03d}.png" for i in range(12)]
    assert Image.open(written[0]).size == (32, 24)


def test_priority_orders_queued_chunks(redis_url: str, r: redis.Redis, worker, tiny_model: Path,
                                       tmp_path: Path) -> None:
    """With no worker running, a later urgent job is taken before an earlier low-priority one."""
    make_images(tmp_path / "in", 4)
    client = Client(redis_url)
    low = client.submit([tmp_path / "in"], model=str(tiny_model), out=tmp_path / "low", priority=0, chunk_size=1)
    high = client.submit([tmp_path / "in"], model=str(tiny_model), out=tmp_path / "high", priority=9,
                         chunk_size=1)
    worker("--concurrency", "1", "--max-delay-ms", "0")
    low_rec, high_rec = low.wait(timeout=30), high.wait(timeout=30)
    assert high_rec.finished <= low_rec.started


def test_corral_run_embedded(tiny_model: Path, tmp_path: Path) -> None:
    """`corral run` with no CORRAL_REDIS_URL: its own redis-server and worker, then everything stops."""
    make_images(tmp_path / "in", 6)
    (tmp_path / "in" / "notes.txt.jpg").write_text("not an image")
    env = python_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-m", "scheduler", "run", str(tmp_path / "in"), "--model", str(tiny_model),
                          "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert "notes.txt.jpg: not an image" in res.stderr
    assert "6 done, 0 failed" in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"img{i:03d}.png" for i in range(6)]
    assert (tmp_path / "cache" / "corral" / "redis" / "redis.log").exists()
    # nothing left running: the worker log ends with its shutdown
    ps = subprocess.run(["pgrep", "-f", str(tmp_path / "cache")], capture_output=True, text=True, check=False)
    assert ps.stdout.strip() == ""
    assert np.asarray(Image.open(tmp_path / "out" / "img000.png")).shape == (24, 32, 3)
