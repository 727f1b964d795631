"""The chunk message: what a producer publishes and a worker's one Celery task reads.

A job's items travel in chunks. Each chunk is one message of the task
:data:`CHUNK_TASK`, with ``args=[job id, [item, ...]]`` and
``kwargs={"chunk": number}``; an item is ``{"i": index, "n": name}`` plus
``"p": path`` when the worker reads a shared file (the path transport). The
task id names the chunk (``JOB.CHUNK``, or ``JOB.CHUNK.ATTEMPT`` when the
sweeper sends it again), which is how the sweeper recognises a job's
messages in the broker. The producer side owns this format; workers only
read it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

CHUNK_TASK = "corral.process_chunk"

_TASK_ID = re.compile(r"([0-9a-f]{12})\.(\d+)(?:\.\d+)?")


def kombu_priority(priority: int) -> int:
    """corral priority (0 lowest .. 9 highest) -> kombu Redis priority (0 popped first)."""
    return 9 - max(0, min(9, int(priority)))


@dataclass(frozen=True)
class ChunkItem:
    """One item reference as a chunk message carries it."""

    index: int
    name: str  # relative POSIX name; outputs are named after it
    path: str = ""  # the file (path transport); empty for blobs
    redelivered: bool = False  # came in a redelivered message (known from the delivery, not in the message)

    @classmethod
    def from_message(cls, raw: Mapping[str, Any], redelivered: bool = False) -> ChunkItem:
        return cls(int(raw["i"]), str(raw["n"]), str(raw.get("p", "")), redelivered)

    def to_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"i": self.index, "n": self.name}
        if self.path:
            msg["p"] = self.path
        return msg

    @property
    def label(self) -> str:
        """How errors name the item."""
        return self.path or self.name


def task_id(job_id: str, chunk: int, attempt: int = 0) -> str:
    return f"{job_id}.{chunk}" if attempt == 0 else f"{job_id}.{chunk}.{attempt}"


def parse_task_id(value: str) -> tuple[str, int] | None:
    """``(job id, chunk)`` for a chunk message's task id; None for any other id."""
    m = _TASK_ID.fullmatch(value)
    return (m.group(1), int(m.group(2))) if m else None


def send_chunk(app: Celery, job_id: str, chunk: int, items: list[dict[str, Any]], *, queue: str, priority: int,
               attempt: int = 0, producer: Any = None) -> None:
    """Publish one chunk message (``priority``: corral's 0..9) with a task id naming the chunk."""
    # argsrepr/kwargsrepr: what worker logs and monitoring show of the message, given here because Celery's
    # default repr of every item reference costs more than the rest of the publish.
    app.send_task(CHUNK_TASK, args=[job_id, items], kwargs={"chunk": chunk}, task_id=task_id(job_id, chunk, attempt),
                  queue=queue, priority=kombu_priority(priority), producer=producer,
                  argsrepr=f"[{job_id!r}, <{len(items)} items>]", kwargsrepr=f"{{'chunk': {chunk}}}")
