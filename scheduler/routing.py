"""Which device queue a job goes to.

``--device auto`` sends a job to ``corral.cuda`` only when a live CUDA worker
(by heartbeat) can run the model: its backend runs on a GPU, its engine
knows every op the model uses, and it has the model's custom layer / custom
model classes registered. Otherwise the job goes to ``corral.cpu``, which
every model can use (the numpy backend is the reference).
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from scheduler import keys
from scheduler.keys import queue_for_device
from scheduler.model_refs import ModelNeeds
from scheduler.registry import WorkerInfo, live_workers

GPU_BACKENDS = frozenset({"torch", "onnxruntime"})


def can_run(worker: WorkerInfo, needs: ModelNeeds | None) -> bool:
    """Whether ``worker``, as its heartbeat describes it, can run a model with ``needs``.

    ``needs`` None (not known) checks only the backend. A worker that does not
    advertise its op list (an older heartbeat) is taken to know every op.
    """
    if worker.is_cuda and worker.backend not in GPU_BACKENDS:
        return False
    if needs is None:
        return True
    if worker.ops and not needs.ops <= set(worker.ops):
        return False
    custom = set(worker.custom)
    return needs.custom_layers <= custom and (not needs.custom_model or needs.custom_model in custom)


def choose_queue(r: redis.Redis, device: str = "auto",
                 needs: ModelNeeds | Callable[[], ModelNeeds] | None = None,
                 workers: Callable[[], list[WorkerInfo]] | None = None) -> str:
    """The queue for a job. ``needs`` (or a function giving them, called only if a CUDA worker is live)
    describes the model for ``auto``; ``workers`` gives the live workers (default: read the registry)."""
    if device != "auto":
        return queue_for_device(device)
    cuda = [w for w in (workers() if workers is not None else live_workers(r)) if w.is_cuda]
    if not cuda:
        return keys.CPU_QUEUE
    wanted = needs() if callable(needs) else needs
    return keys.CUDA_QUEUE if any(can_run(w, wanted) for w in cuda) else keys.CPU_QUEUE
