"""The Redis blob store: image bytes and outputs carried through Redis when producer and workers share nothing else.

Uploads go in windows of at most ``window_bytes`` (one pipeline each), so a
producer's memory stays flat however large the set; every blob expires after
``ttl`` seconds, so an abandoned job cannot fill Redis for good. Workers
write each item's output files into the job's outputs hash (file name ->
bytes, same expiry), which ``corral results`` streams back with HSCAN.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

import redis
from redis.typing import EncodableT, FieldT

from scheduler import keys
from scheduler.settings import DEFAULT_BLOB_TTL

DEFAULT_TTL = DEFAULT_BLOB_TTL  # a job's own expiry is its record's ``blob_ttl`` (CORRAL_BLOB_TTL at submit)
DEFAULT_WINDOW_BYTES = 64 * 1024 * 1024


def upload_inputs(r: redis.Redis, job_id: str, items: Iterable[tuple[int, Path]], *, ttl: int = DEFAULT_TTL,
                  window_bytes: int = DEFAULT_WINDOW_BYTES) -> Iterator[list[int]]:
    """Upload each ``(index, path)``; yields the indices of each window once it is stored.

    At most one window of file bytes is held at a time (plus one file that
    alone exceeds the window).
    """
    pipe = r.pipeline(transaction=False)
    held, indices = 0, []
    for index, path in items:
        data = Path(path).read_bytes()
        pipe.set(keys.input_blob(job_id, index), data, ex=ttl)
        held += len(data)
        indices.append(index)
        if held >= window_bytes:
            pipe.execute()
            yield indices
            held, indices = 0, []
    if indices:
        pipe.execute()
        yield indices


def read_input(r: redis.Redis, job_id: str, index: int) -> bytes | None:
    data = r.get(keys.input_blob(job_id, index))
    return data.encode() if isinstance(data, str) else data


def drop_inputs(r: redis.Redis, job_id: str, indices: Sequence[int]) -> None:
    if indices:
        r.delete(*[keys.input_blob(job_id, i) for i in indices])


def store_outputs(r: redis.Redis, job_id: str, files: dict[str, bytes], ttl: int = DEFAULT_TTL) -> None:
    """Add output files (relative POSIX name -> bytes) to the job's outputs; same name replaces."""
    if not files:
        return
    with r.pipeline() as p:
        mapping: dict[FieldT, EncodableT] = {name: data for name, data in files.items()}
        p.hset(keys.job_outputs(job_id), mapping=mapping)
        p.expire(keys.job_outputs(job_id), ttl)
        p.execute()


def fetch_outputs(r: redis.Redis, job_id: str, out: str | os.PathLike[str]) -> list[Path]:
    """Write every stored output of the job under ``out``; returns the paths written."""
    from engine.outputs import atomic_write

    root = Path(out)
    written = []
    for name, data in r.hscan_iter(keys.job_outputs(job_id), count=64):
        rel = PurePosixPath(keys.text(name))
        if rel.is_absolute() or ".." in rel.parts:
            continue  # never write outside `out`
        path = root.joinpath(*rel.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        written.append(path)
    return written
