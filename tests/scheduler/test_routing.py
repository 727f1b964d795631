from __future__ import annotations

import json

import fakeredis
import pytest

from scheduler import keys
from scheduler.exceptions import RoutingError
from scheduler.model_refs import ModelNeeds
from scheduler.registry import WorkerInfo, live_workers, publish, withdraw
from scheduler.routing import can_run, choose_queue

OPS = ["Conv", "InstanceNormalization", "Relu", "Resize", "Sigmoid"]


def _info(device: str, wid: str, backend: str = "torch", ops: list[str] | None = None,
          custom: list[str] | None = None) -> WorkerInfo:
    return WorkerInfo(id=wid, hostname="h", pid=1, device=device, backend=backend, queue="q",
                      ops=OPS if ops is None else ops, custom=custom or [])


STYLE = ModelNeeds(frozenset({"Conv", "InstanceNormalization", "Relu"}))


def test_auto_goes_to_cuda_only_while_a_capable_cuda_worker_is_alive() -> None:
    r = fakeredis.FakeRedis()
    assert choose_queue(r, "auto", STYLE) == keys.CPU_QUEUE
    publish(r, _info("cpu", "c1", backend="numpy"))
    assert choose_queue(r, "auto", STYLE) == keys.CPU_QUEUE
    publish(r, _info("cuda:0", "g1"))
    assert choose_queue(r, "auto", STYLE) == keys.CUDA_QUEUE
    withdraw(r, "g1")
    assert choose_queue(r, "auto", STYLE) == keys.CPU_QUEUE


def test_a_cuda_worker_that_lacks_an_op_or_a_custom_class_does_not_get_the_job() -> None:
    r = fakeredis.FakeRedis()
    publish(r, _info("cuda:0", "g1", ops=["Conv", "Relu"]))  # an older engine without InstanceNormalization
    assert choose_queue(r, "auto", STYLE) == keys.CPU_QUEUE
    swish = ModelNeeds(frozenset({"Conv"}), frozenset({"Swish"}))
    assert choose_queue(r, "auto", swish) == keys.CPU_QUEUE  # no Swish implementation on the GPU worker
    publish(r, _info("cuda:1", "g2", custom=["Swish"]))
    assert choose_queue(r, "auto", swish) == keys.CUDA_QUEUE
    similarity = ModelNeeds(custom_model="ImageSimilarity")
    assert choose_queue(r, "auto", similarity) == keys.CPU_QUEUE
    publish(r, _info("cuda:2", "g3", custom=["ImageSimilarity"]))
    assert choose_queue(r, "auto", similarity) == keys.CUDA_QUEUE


def test_a_cuda_worker_without_a_gpu_backend_cannot_run_anything() -> None:
    assert not can_run(_info("cuda:0", "g", backend="numpy"), STYLE)
    assert not can_run(_info("cuda:0", "g", backend="numpy"), None)
    assert can_run(_info("cuda:0", "g"), None)
    assert can_run(_info("cuda:0", "g", ops=[]), STYLE)  # an older heartbeat without an op list


def test_needs_are_computed_only_when_a_cuda_worker_is_alive() -> None:
    r = fakeredis.FakeRedis()
    calls: list[int] = []

    def needs() -> ModelNeeds:
        calls.append(1)
        return STYLE

    assert choose_queue(r, "auto", needs) == keys.CPU_QUEUE and calls == []
    publish(r, _info("cuda:0", "g1"))
    assert choose_queue(r, "auto", needs) == keys.CUDA_QUEUE and calls == [1]


def test_expired_heartbeats_are_not_live_and_are_pruned() -> None:
    r = fakeredis.FakeRedis()
    publish(r, _info("cuda:0", "g1"), ttl=10)
    r.delete(keys.worker("g1"))  # as if the TTL ran out
    assert live_workers(r) == [] and r.zcard(keys.WORKERS) == 0
    assert choose_queue(r, "auto", STYLE) == keys.CPU_QUEUE


def test_a_heartbeat_with_unknown_fields_is_still_read() -> None:
    r = fakeredis.FakeRedis()
    publish(r, _info("cuda:0", "g1"))
    doc = json.loads(r.get(keys.worker("g1")))
    r.set(keys.worker("g1"), json.dumps({**doc, "added_by_a_newer_worker": 1}))
    assert [w.id for w in live_workers(r)] == ["g1"]


def test_explicit_devices() -> None:
    r = fakeredis.FakeRedis()
    assert choose_queue(r, "cpu") == keys.CPU_QUEUE
    assert choose_queue(r, "cuda:1") == keys.CUDA_QUEUE
    with pytest.raises(RoutingError, match="auto, cpu"):
        choose_queue(r, "tpu")
