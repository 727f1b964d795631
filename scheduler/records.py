"""What a job is: its request, status and counters (:class:`JobRecord`), and what can happen to an item.

These are plain values. Where they live in Redis, and every change to them
there, is :class:`scheduler.jobs.RedisJob`'s.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from engine.images import ResizePolicy
from scheduler import keys
from scheduler.settings import DEFAULT_BLOB_TTL


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class Outcome(str, Enum):
    """What happened to one item; each maps to the counter of the same name."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # the job was cancelled before the item ran


class Transport(str, Enum):
    """How a job's images reach the workers and its outputs come back."""

    PATH = "path"  # workers read and write paths they share with the producer
    REDIS = "redis"  # images uploaded into Redis, outputs kept there until fetched


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


DEFAULT_PRIORITY = 5


@dataclass
class JobRecord:
    """What a job asked for and where it stands. Stored as the job hash (JSON for ``inputs``)."""

    id: str
    model: str  # the reference as given (`--model`)
    model_path: str  # what the reference resolved to
    out: str  # output directory (path transport) or the default `results` directory (redis transport)
    transport: Transport = Transport.PATH
    inputs: dict[str, Any] = field(default_factory=dict)  # non-image input name -> JSON value
    device: str = "auto"  # as requested
    queue: str = keys.CPU_QUEUE  # where its chunks were routed
    priority: int = DEFAULT_PRIORITY  # 0 (lowest) .. 9 (highest)
    chunk_size: int = 32
    resize: ResizePolicy = ResizePolicy.FIT  # how images outside the model's sizes are resized
    blob_ttl: int = DEFAULT_BLOB_TTL  # seconds the job's blobs live in Redis (redis transport)
    total: int = 0
    rejected: int = 0  # inputs refused before queueing (not part of total)
    status: JobStatus = JobStatus.QUEUED
    created: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    done: int = 0
    failed: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        for name, kind in _ENUM_FIELDS.items():
            setattr(self, name, kind(getattr(self, name)))  # a plain string given for an enum field

    @property
    def finished_items(self) -> int:
        return self.done + self.failed + self.skipped

    def to_hash(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in _FIELD_NAMES:
            value = getattr(self, key)  # shallow: ``inputs`` is serialized below, nothing else nests
            if key in ("started", "finished") and not value:
                continue  # absent until set (the start script relies on HSETNX)
            if key == "inputs":
                out[key] = json.dumps(value)
            elif isinstance(value, Enum):
                out[key] = value.value
            else:
                out[key] = str(value)
        return out

    @classmethod
    def from_hash(cls, data: dict[bytes | str, bytes | str]) -> JobRecord:
        text = {keys.text(k): keys.text(v) for k, v in data.items()}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in text:
                continue
            raw = text[f.name]
            if f.name == "inputs":
                kwargs[f.name] = json.loads(raw)
            elif f.type in ("int", int):
                kwargs[f.name] = int(raw)
            elif f.type in ("float", float):
                kwargs[f.name] = float(raw)
            else:
                kwargs[f.name] = raw
        return cls(**kwargs)  # enum fields arrive as their values: __post_init__ makes them enums


_FIELD_NAMES = tuple(f.name for f in fields(JobRecord))
_ENUM_FIELDS: dict[str, type[Enum]] = {"status": JobStatus, "transport": Transport, "resize": ResizePolicy}


@dataclass
class ItemOutcome:
    index: int
    outcome: Outcome
    file: str = ""
    reason: str = ""


