"""Which device queue a job goes to."""

from __future__ import annotations

import redis

from scheduler import keys
from scheduler.registry import live_workers


class RoutingError(ValueError):
    pass


def queue_for_device(device: str) -> str:
    """The queue that serves an explicit device request ("cpu", "cuda", "cuda:N")."""
    if device == "cpu":
        return keys.CPU_QUEUE
    if device == "cuda" or device.startswith("cuda:"):
        return keys.CUDA_QUEUE
    raise RoutingError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def choose_queue(r: redis.Redis, device: str = "auto") -> str:
    """``auto``: the CUDA queue when a live CUDA worker is heartbeating, else the CPU queue.

    Every model corral runs has a CPU implementation, and a CUDA worker runs
    the torch backend, which covers the same op set; so any live CUDA worker
    can run the job.
    """
    if device != "auto":
        return queue_for_device(device)
    return keys.CUDA_QUEUE if any(w.is_cuda for w in live_workers(r)) else keys.CPU_QUEUE
