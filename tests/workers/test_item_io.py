"""Item outputs: where they are written, made durable, and stale temporaries of a killed writer removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.description import Feature, ModelDescription
from scheduler.protocol import ChunkItem
from scheduler.records import JobRecord
from workers.item_io import remove_stale_temporaries, sync_directories, write_outputs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_writers_temporary_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    out = tmp_path / "img001.png"
    out.write_bytes(b"png")
    dead = tmp_path / f".img001.png.{_dead_pid()}-123.tmp"
    live = tmp_path / f".img001.png.{os.getppid()}-456.tmp"  # the test runner's parent: alive
    other = tmp_path / f".img0011.png.{_dead_pid()}-789.tmp"  # another item's: not this output's
    for p in (dead, live, other):
        p.write_bytes(b"half")
    remove_stale_temporaries([out])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name, other.name])


def test_redelivery_is_not_part_of_the_message() -> None:
    item = ChunkItem.from_message({"i": 3, "n": "a.png", "p": "/x/a.png"}, redelivered=True)
    assert item.redelivered and item.to_message() == {"i": 3, "n": "a.png", "p": "/x/a.png"}


def test_written_outputs_are_returned_and_their_directories_synced(tmp_path: Path) -> None:
    desc = ModelDescription(outputs=[Feature(name="y", kind="array", shape=(2,))])
    job = JobRecord(id="j", model="m", model_path="m", out=str(tmp_path / "out"))
    written = write_outputs(None, job, ChunkItem(0, "sub/a.jpg", "/in/sub/a.jpg"), {"y": np.ones(2, np.float32)}, desc)
    assert written == [tmp_path / "out" / "sub" / "a.npy"] and written[0].exists()
    sync_directories(written)  # the directory holding the rename is flushed
    (tmp_path / "out" / "sub" / "a.npy").unlink()
    (tmp_path / "out" / "sub").rmdir()
    with pytest.raises(FileNotFoundError):  # a directory gone before its sync is an error, never a silent pass
        sync_directories(written)
