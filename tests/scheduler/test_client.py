"""Chunking and the blob store, on fakeredis (publishing to Celery is covered by the integration tests)."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import numpy as np
import pytest
from PIL import Image

from scheduler import blobs, keys
from scheduler.client import Client, input_value
from scheduler.inputs import scan_inputs
from scheduler.records import JobRecord


def _items(tmp_path: Path, n: int):
    for i in range(n):
        Image.new("RGB", (4, 4)).save(tmp_path / f"i{i:02d}.png")
    return scan_inputs([tmp_path])[0]


def test_chunks_carry_item_references_not_bytes(tmp_path: Path) -> None:
    client = Client("redis://unused:1/0", connection=fakeredis.FakeRedis())
    items = _items(tmp_path, 70)
    rec = JobRecord(id="j", model="m", model_path="m", out="o", chunk_size=32, total=70)
    chunks = list(client._path_chunks(rec, items))
    assert [len(c) for c in chunks] == [32, 32, 6]
    assert chunks[2][0] == {"i": 64, "n": "i64.png", "p": str(tmp_path / "i64.png")}


def test_blob_transport_uploads_in_bounded_windows(tmp_path: Path) -> None:
    r = fakeredis.FakeRedis()
    client = Client("redis://unused:1/0", connection=r)
    items = _items(tmp_path, 10)
    size = items[0].path.stat().st_size
    windows = list(blobs.upload_inputs(r, "j", ((i, it.path) for i, it in enumerate(items)),
                                       window_bytes=3 * size, ttl=100))
    assert [len(w) for w in windows] == [3, 3, 3, 1]
    assert r.get(keys.input_blob("j", 4)) == items[4].path.read_bytes() and 0 < r.ttl(keys.input_blob("j", 4)) <= 100
    rec = JobRecord(id="k", model="m", model_path="m", out="o", chunk_size=4, total=10, transport="redis")
    numbered = list(client._uploaded_chunks(rec, items))
    assert [(n, len(c)) for n, c in numbered] == [(0, 4), (1, 4), (2, 2)] and "p" not in numbered[0][1][0]
    # each chunk is recorded (for the lost-chunk sweeper) before it is handed out to be sent
    assert sorted(int(n) for n in r.hkeys(keys.job_chunks("k"))) == [0, 1, 2] and r.sismember(keys.ACTIVE_JOBS, "k")


def test_outputs_round_trip_and_stay_inside_out(tmp_path: Path) -> None:
    r = fakeredis.FakeRedis()
    blobs.store_outputs(r, "j", {"a.png": b"A", "sub/b.png": b"B", "../escape.png": b"X"})
    written = blobs.fetch_outputs(r, "j", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["a.png", "sub/b.png"]
    assert not (tmp_path / "escape.png").exists()


def test_input_values(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.arange(3, dtype=np.float32))
    assert input_value(f"@{tmp_path / 'w.npy'}") == [0.0, 1.0, 2.0]
    assert input_value(np.float32(2)) == 2.0 and input_value([1, 2]) == [1, 2]
    with pytest.raises(TypeError):
        input_value({"a": 1})
