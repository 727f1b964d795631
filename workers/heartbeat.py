"""A thread that publishes this worker's heartbeat every few seconds (see :mod:`scheduler.registry`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from scheduler.registry import HEARTBEAT_TTL, WorkerInfo, publish, withdraw

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, r: redis.Redis, snapshot: Callable[[], WorkerInfo], interval: float = HEARTBEAT_TTL / 4) -> None:
        self.r = r
        self.snapshot = snapshot
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="corral-heartbeat", daemon=True)
        self._worker_id = ""

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        info = self.snapshot()
        self._worker_id = info.id
        try:
            publish(self.r, info)
        except redis.RedisError as exc:  # keep working; routing just will not see us until Redis is back
            log.warning("heartbeat not published: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 1)
        if self._worker_id:
            try:
                withdraw(self.r, self._worker_id)
            except redis.RedisError:
                pass
