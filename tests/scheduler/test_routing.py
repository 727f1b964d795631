from __future__ import annotations

import fakeredis
import pytest

from scheduler import keys
from scheduler.registry import WorkerInfo, live_workers, publish, withdraw
from scheduler.routing import RoutingError, choose_queue


def _info(device: str, wid: str) -> WorkerInfo:
    return WorkerInfo(id=wid, hostname="h", pid=1, device=device, backend="numpy", queue="q")


def test_auto_goes_to_cuda_only_while_a_cuda_worker_is_alive() -> None:
    r = fakeredis.FakeRedis()
    assert choose_queue(r, "auto") == keys.CPU_QUEUE
    publish(r, _info("cpu", "c1"))
    assert choose_queue(r, "auto") == keys.CPU_QUEUE
    publish(r, _info("cuda:0", "g1"))
    assert choose_queue(r, "auto") == keys.CUDA_QUEUE
    withdraw(r, "g1")
    assert choose_queue(r, "auto") == keys.CPU_QUEUE


def test_expired_heartbeats_are_not_live_and_are_pruned() -> None:
    r = fakeredis.FakeRedis()
    publish(r, _info("cuda:0", "g1"), ttl=10)
    r.delete(keys.worker("g1"))  # as if the TTL ran out
    assert live_workers(r) == [] and r.zcard(keys.WORKERS) == 0
    assert choose_queue(r, "auto") == keys.CPU_QUEUE


def test_explicit_devices() -> None:
    r = fakeredis.FakeRedis()
    assert choose_queue(r, "cpu") == keys.CPU_QUEUE
    assert choose_queue(r, "cuda:1") == keys.CUDA_QUEUE
    with pytest.raises(RoutingError, match="auto, cpu"):
        choose_queue(r, "tpu")
