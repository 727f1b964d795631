from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.ops import threads
from workers.exceptions import WorkerError
from workers.runtime import apply_thread_settings
from workers.settings import BatcherConfig, WorkerSettings


def test_worker_settings_from_the_environment_with_options_over_them(tmp_path: Path) -> None:
    env = {"CORRAL_REDIS_URL": "redis://q:6379/1", "CORRAL_VISIBILITY_TIMEOUT": "30", "CORRAL_METRICS_PORT": "9100",
           "CORRAL_PLUGINS": "a.b, c", "CORRAL_NUM_THREADS": "3", "CORRAL_STORE_ROOT": str(tmp_path / "s")}
    s = WorkerSettings.from_env(env)
    assert (s.redis_url, s.visibility_timeout, s.metrics_port, s.plugins, s.num_threads) == \
        ("redis://q:6379/1", 30.0, 9100, ("a.b", "c"), 3)
    assert s.store.root == tmp_path / "s" and s.store.url is None
    assert WorkerSettings.from_env(env, metrics_port=0, redis_url=None).metrics_port == 0  # an option wins
    assert WorkerSettings.from_env({}).metrics_port == 0 and WorkerSettings.from_env({}).queue == "corral.cpu"
    with pytest.raises(WorkerError, match="CORRAL_METRICS_PORT='lots'"):
        WorkerSettings.from_env({"CORRAL_METRICS_PORT": "lots"})


def test_backend_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import backends

    assert WorkerSettings(device="cpu").resolved_backend() == "onnxruntime"
    assert WorkerSettings(device="cpu", backend="numpy").resolved_backend() == "numpy"
    monkeypatch.setattr(backends, "_gpu_capable", lambda name, device: name == "torch")
    assert WorkerSettings(device="cuda:1").resolved_backend() == "torch"
    monkeypatch.setattr(backends, "_gpu_capable", lambda name, device: name == "onnxruntime")
    assert WorkerSettings(device="cuda:1").resolved_backend() == "onnxruntime"
    assert WorkerSettings(device="cuda:1").queue == "corral.cuda"


def test_a_worker_applies_its_thread_settings_to_the_process() -> None:
    before = sys.getswitchinterval()
    try:
        apply_thread_settings(WorkerSettings(num_threads=3))
        assert sys.getswitchinterval() == pytest.approx(0.0005)  # the GIL changes hands within 0.5 ms
        assert threads.num_threads() == 3
        apply_thread_settings(WorkerSettings(switch_interval_ms=2.0))
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)
        threads.set_num_threads(None)


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 2), (3, 3), (64, 4)])
def test_decode_and_write_threads_follow_the_usable_cpus(monkeypatch: pytest.MonkeyPatch, cpus: int,
                                                          threads: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    config = BatcherConfig()
    assert (config.decode_threads, config.writer_threads) == (threads, threads)
    assert BatcherConfig(decode_threads=8).decode_threads == 8  # an explicit count stands
