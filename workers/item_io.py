"""Where an item's image comes from and where its outputs go, for both transports.

``path``: the chunk names a file the worker reads directly; outputs are
written under the job's ``out`` directory. ``redis``: the image is a blob in
Redis; outputs go into the job's outputs hash. Either way an item's output
names depend only on its name, so a redelivered item rewrites the same files.
"""

from __future__ import annotations

import glob
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import redis

from engine.description import ModelDescription
from engine.exceptions import ImageDecodeError
from engine.outputs import write_item_outputs
from scheduler import blobs
from scheduler.jobs import JobRecord
from workers.exceptions import UnsafeOutputNameError


class ChunkRelease:
    """A chunk whose record is released (:func:`scheduler.chunks.queue_release`) in the same round trip
    that counts the last of its items' outcomes, not in one of its own: a one-image job's chunk costs
    one round trip less."""

    def __init__(self, job_id: str, chunk: int, items: int) -> None:
        self.job_id = job_id
        self.chunk = chunk
        self.released = False  # set once a pipeline that released it has run without error
        self._left = items
        self._lock = threading.Lock()

    def settle(self, count: int) -> bool:
        """``count`` more of the chunk's items are being counted; True for the call that counts the last."""
        with self._lock:
            self._left -= count
            return self._left == 0


@dataclass(frozen=True)
class ChunkItem:
    """One item reference as a chunk message carries it."""

    index: int
    name: str  # relative POSIX name; outputs are named after it
    path: str = ""  # the file (path transport); empty for blobs
    redelivered: bool = False  # came in a redelivered message (not part of the message itself)
    release: ChunkRelease | None = field(default=None, compare=False, repr=False)  # its chunk, if released late

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


def read_source(r: redis.Redis, job: JobRecord, item: ChunkItem) -> bytes | str:
    """What to hand to the decoder: a path, or the blob's bytes."""
    if job.transport == "redis":
        data = blobs.read_input(r, job.id, item.index)
        if data is None:
            raise ImageDecodeError(f"{item.name}: its uploaded bytes are gone from Redis (expired after "
                                   f"{job.blob_ttl} s, or deleted); submit the image again")
        return data
    return item.path


def write_outputs(r: redis.Redis, job: JobRecord, item: ChunkItem, outputs: Mapping[str, np.ndarray],
                  description: ModelDescription) -> list[Path]:
    """Write one item's outputs; returns the files written under the job's directory (none for blobs).

    Each file's bytes are fsynced before its rename; the renames themselves are
    made durable by :func:`sync_directories`, once per batch for all its items.
    """
    rel = safe_relative_name(item.name)
    if job.transport == "redis":
        with tempfile.TemporaryDirectory(prefix="corral-out-") as tmp:
            written = write_item_outputs(tmp, rel.stem, outputs, description)
            files = {str(rel.parent / p.name) if str(rel.parent) != "." else p.name: p.read_bytes()
                     for p in written}
        blobs.store_outputs(r, job.id, files, ttl=job.blob_ttl)
        return []
    written = write_item_outputs(Path(job.out).joinpath(*rel.parent.parts), rel.stem, outputs, description)
    if item.redelivered:
        remove_stale_temporaries(written)
    return written


def sync_directories(paths: Iterable[Path]) -> None:
    """fsync each distinct parent directory of ``paths``: after a power loss the renamed outputs are there,
    not just their bytes (an item is counted done only after this)."""
    for directory in sorted({p.parent for p in paths}):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def safe_relative_name(name: str) -> PurePosixPath:
    """The item's output path relative to the job directory; refuses names that would leave it.

    Chunk messages come from whoever can write to Redis, so absolute names,
    ``..`` parts and backslash tricks are refused rather than trusted.
    """
    rel = PurePosixPath(name.replace("\\", "/"))
    if not name or rel.is_absolute() or ".." in rel.parts or rel.name in ("", ".", ".."):
        raise UnsafeOutputNameError(f"item name {name!r} would write outside the job's output directory; "
                                    "submit relative names without '..'")
    return rel


def remove_stale_temporaries(written: list[Path]) -> None:
    """Remove what a killed writer of these same outputs left: ``.<name>.<pid>-<thread>.tmp`` files.

    Called only for redelivered items (a directory scan per output; first
    deliveries never need it). A temporary of a process still alive on this
    host is left alone: it may be mid-write.
    """
    for path in written:
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            pid = tmp.name[len(path.name) + 2:].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
