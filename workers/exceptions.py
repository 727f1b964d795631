"""The worker's errors, one type per concept; each message says what to do."""

from __future__ import annotations


class WorkerError(RuntimeError):
    """Base of the worker's own errors."""


class NoRuntimeError(WorkerError):
    """Worker code ran in a process that is not a `corral worker`."""


class MetricsPortError(WorkerError):
    """The Prometheus endpoint could not listen on the port asked for."""


class UnsafeOutputNameError(WorkerError, ValueError):
    """A chunk names an item whose output would land outside the job's output directory."""


class Requeue(WorkerError):
    """The worker is shutting down and this item had not started: its chunk goes back to the queue."""


class ComputeProcessError(WorkerError):
    """The worker's compute process died, or an error from it could not be carried back as it was."""


class ComputeProcessDiedError(ComputeProcessError):
    """The compute process died after it was ready, before it answered a request; ``ran``: whether the request
    was the batch it was running (False for a batch that only waited behind that one)."""

    def __init__(self, message: str, ran: bool = True) -> None:
        super().__init__(message)
        self.ran = ran


__all__ = ["ComputeProcessDiedError", "ComputeProcessError", "MetricsPortError", "NoRuntimeError", "Requeue",
           "UnsafeOutputNameError", "WorkerError"]
