"""Where an item's image comes from and where its outputs go, for both transports.

``path``: the chunk names a file the worker reads directly; outputs are
written under the job's ``out`` directory. ``redis``: the image is a blob in
Redis; outputs go into the job's outputs hash. Either way an item's output
names depend only on its name, so a redelivered item rewrites the same files.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import redis

from engine.description import ModelDescription
from engine.exceptions import ImageDecodeError
from engine.outputs import write_item_outputs
from scheduler import blobs
from scheduler.jobs import JobRecord


@dataclass(frozen=True)
class ChunkItem:
    """One item reference as a chunk message carries it."""

    index: int
    name: str  # relative POSIX name; outputs are named after it
    path: str = ""  # the file (path transport); empty for blobs

    @classmethod
    def from_message(cls, raw: Mapping[str, Any]) -> ChunkItem:
        return cls(int(raw["i"]), str(raw["n"]), str(raw.get("p", "")))

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
                                   f"{blobs.DEFAULT_TTL} s, or deleted); submit the image again")
        return data
    return item.path


def write_outputs(r: redis.Redis, job: JobRecord, item: ChunkItem, outputs: Mapping[str, np.ndarray],
                  description: ModelDescription) -> None:
    rel = PurePosixPath(item.name)
    if job.transport == "redis":
        with tempfile.TemporaryDirectory(prefix="corral-out-") as tmp:
            written = write_item_outputs(tmp, rel.stem, outputs, description)
            files = {str(rel.parent / p.name) if str(rel.parent) != "." else p.name: p.read_bytes()
                     for p in written}
        blobs.store_outputs(r, job.id, files)
    else:
        write_item_outputs(Path(job.out).joinpath(*rel.parent.parts), rel.stem, outputs, description)
