"""The worker registry: heartbeats that workers publish and that routing and `corral workers` read."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis

from scheduler import keys

HEARTBEAT_TTL = 10.0  # seconds a heartbeat stays valid; workers refresh every HEARTBEAT_TTL / 4


@dataclass
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    device: str  # "cpu", "cuda:0", ...
    backend: str
    queue: str
    warm_models: list[str] = field(default_factory=list)
    backlog: int = 0
    max_batch: int = 0
    batch_sizes: dict[str, int] = field(default_factory=dict)  # size -> batches run
    ops: list[str] = field(default_factory=list)  # engine op types this worker runs (routing checks them)
    custom: list[str] = field(default_factory=list)  # custom layer / model classes it has implementations for
    metrics_url: str = ""  # its Prometheus endpoint, if it serves one
    started: float = 0.0
    updated: float = 0.0

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


_FIELDS = frozenset(f.name for f in fields(WorkerInfo))


def publish(r: redis.Redis, info: WorkerInfo, ttl: float = HEARTBEAT_TTL) -> None:
    info.updated = time.time()
    with r.pipeline() as p:
        p.set(keys.worker(info.id), json.dumps(asdict(info)), px=int(ttl * 1000))
        p.zadd(keys.WORKERS, {info.id: info.updated})
        p.execute()


def withdraw(r: redis.Redis, worker_id: str) -> None:
    with r.pipeline() as p:
        p.delete(keys.worker(worker_id))
        p.zrem(keys.WORKERS, worker_id)
        p.execute()


def live_workers(r: redis.Redis) -> list[WorkerInfo]:
    """Workers whose heartbeat has not expired; stale registry entries are pruned."""
    ids = [keys.text(i) for i in r.zrange(keys.WORKERS, 0, -1)]
    if not ids:
        return []
    raw = r.mget([keys.worker(i) for i in ids])
    live, stale = [], []
    for worker_id, data in zip(ids, raw):
        if data is None:
            stale.append(worker_id)
            continue
        doc: dict[str, Any] = json.loads(data)
        # fields a newer worker added are ignored rather than breaking older readers
        live.append(WorkerInfo(**{k: v for k, v in doc.items() if k in _FIELDS}))
    if stale:
        r.zrem(keys.WORKERS, *stale)
    return live
