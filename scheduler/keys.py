"""Every Redis key corral uses, in one place. All start with ``corral:``.

Celery's own keys (the queues ``corral.cpu`` / ``corral.cuda`` and kombu's
``unacked`` bookkeeping) are named by kombu, not here.
"""

from __future__ import annotations

from scheduler.exceptions import RoutingError

PREFIX = "corral:"


def text(value: object) -> str:
    """A key, member or field value as Redis returned it (bytes, unless the client decodes), as text."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a Redis string reply, got {type(value).__name__}")


# queue names (Celery routing keys); one per device kind
CPU_QUEUE = "corral.cpu"
CUDA_QUEUE = "corral.cuda"


def queue_for_device(device: str) -> str:
    """The queue that serves an explicit device request ("cpu", "cuda", "cuda:N")."""
    if device == "cpu":
        return CPU_QUEUE
    if device == "cuda" or device.startswith("cuda:"):
        return CUDA_QUEUE
    raise RoutingError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")

# sorted set: job id -> created time (what `corral jobs` lists)
JOBS = PREFIX + "jobs"
# sorted set: worker id -> last heartbeat time (entries outlive their heartbeat key; readers drop stale ones)
WORKERS = PREFIX + "workers"
# set of job ids that still have items without an outcome (what the lost-chunk sweeper looks at)
ACTIVE_JOBS = PREFIX + "active"
# string with a TTL: held by the one worker sweeping for lost chunks this round
SWEEP_LOCK = PREFIX + "sweep:lock"
# hash: job id -> finished-item count at the last sweep (a job whose count did not move is checked)
SWEEP_PROGRESS = PREFIX + "sweep:progress"
# hash: "job id.chunk" -> time a sweep first found that chunk neither queued, reserved nor claimed
SWEEP_SUSPECTS = PREFIX + "sweep:suspects"


def job(job_id: str) -> str:
    """Hash: the job record (see :class:`scheduler.records.JobRecord`) and its progress counters."""
    return f"{PREFIX}job:{job_id}"


def job_finished(job_id: str) -> str:
    """Set of item indices that reached an outcome (done, failed or skipped); makes counting idempotent."""
    return f"{PREFIX}job:{job_id}:finished"


def job_failures(job_id: str) -> str:
    """Hash: item index -> JSON ``{"file", "reason"}`` for items that failed on a worker."""
    return f"{PREFIX}job:{job_id}:failures"


def job_rejected(job_id: str) -> str:
    """List of JSON ``{"file", "reason"}``: inputs rejected before queueing (never items of the job)."""
    return f"{PREFIX}job:{job_id}:rejected"


def job_outputs(job_id: str) -> str:
    """Hash: output file name (relative) -> bytes, for jobs using the Redis blob transport."""
    return f"{PREFIX}job:{job_id}:outputs"


def job_chunks(job_id: str) -> str:
    """Hash: chunk number -> JSON item list, for each chunk published and not yet completed by a worker."""
    return f"{PREFIX}job:{job_id}:chunks"


def job_claims(job_id: str) -> str:
    """Hash: chunk number -> id of the worker running that chunk now."""
    return f"{PREFIX}job:{job_id}:claims"


def input_blob(job_id: str, index: int) -> str:
    """String: the bytes of one input image, for jobs using the Redis blob transport."""
    return f"{PREFIX}job:{job_id}:in:{index}"


def worker(worker_id: str) -> str:
    """String (JSON, with a TTL): a worker's latest heartbeat."""
    return f"{PREFIX}worker:{worker_id}"


def worker_batches(worker_id: str) -> str:
    """Hash: batch size -> number of batches of that size a worker ran (observed batch sizes)."""
    return f"{PREFIX}worker:{worker_id}:batches"


def job_keys(job_id: str) -> list[str]:
    """Every key a job owns except its input blobs (which expire on their own)."""
    return [job(job_id), job_finished(job_id), job_failures(job_id), job_rejected(job_id), job_outputs(job_id),
            job_chunks(job_id), job_claims(job_id)]
