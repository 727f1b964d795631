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
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import redis

from engine.description import ModelDescription
from engine.exceptions import ImageDecodeError
from engine.images import decode_image, image_to_tensor
from engine.outputs import write_item_outputs
from scheduler import blobs
from scheduler.protocol import ChunkItem
from scheduler.records import JobRecord, Transport
from workers.exceptions import UnsafeOutputNameError


def read_source(r: redis.Redis, job: JobRecord, item: ChunkItem) -> bytes | str:
    """What to hand to the decoder: a path, or the blob's bytes."""
    if job.transport is Transport.REDIS:
        data = blobs.read_input(r, job.id, item.index)
        if data is None:
            raise ImageDecodeError(f"{item.name}: its uploaded bytes are gone from Redis (expired after "
                                   f"{job.blob_ttl} s, or deleted); submit the image again")
        return data
    return item.path


def item_feeds(r: redis.Redis, job: JobRecord, item: ChunkItem, description: ModelDescription,
               max_pixels: int) -> dict[str, Any]:
    """The item's model inputs: the job's non-image inputs, and its image decoded into the image input."""
    images = description.image_inputs
    feeds: dict[str, Any] = {name: np.asarray(value) for name, value in job.inputs.items()}
    if images:
        image = decode_image(read_source(r, job, item), max_pixels=max_pixels, name=item.label)
        feeds[images[0].name] = image_to_tensor(image, images[0], policy=job.resize)  # [C, H, W]
    return feeds


def write_outputs(r: redis.Redis, job: JobRecord, item: ChunkItem, outputs: Mapping[str, np.ndarray],
                  description: ModelDescription) -> list[Path]:
    """Write one item's outputs; returns the files written under the job's directory (none for blobs).

    Each file's bytes are fsynced before its rename; the renames themselves are
    made durable by :func:`sync_directories`, once per batch for all its items.
    """
    rel = safe_relative_name(item.name)
    if job.transport is Transport.REDIS:
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
