"""A real worker's compute process: a custom layer that crashes it fails only its own item, and the worker goes on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

import engine
from engine.builder import ModelBuilder
from scheduler.client import Client
from scheduler.records import JobStatus
from scheduler.registry import live_workers
from tests.integration.conftest import make_images

pytestmark = pytest.mark.slow


def crash_model(path: Path) -> Path:
    """image -> the ``crash_plugin`` fixture's HalveOrCrash layer -> image (an all-white one crashes it)."""
    b = ModelBuilder("halve-or-crash")
    x = b.image_input("image", size=(24, 32), height_range=(1, 4096), width_range=(1, 4096), scale=1 / 255)
    b.image_output(b.custom_layer("HalveOrCrash", [x]), name="halved", scale=1 / 255)
    engine.save(b.build(), path)
    return path


def test_a_crashing_custom_layer_fails_only_its_item(redis_url: str, r: redis.Redis, worker, tmp_path: Path,
                                                     crash_plugin: str) -> None:
    model = crash_model(tmp_path / "crash.corral")
    proc = worker("--plugin", crash_plugin)  # the white image shares a batch with the others
    make_images(tmp_path / "in", 5)
    Image.fromarray(np.full((24, 32, 3), 255, np.uint8)).save(tmp_path / "in" / "white.png")

    client = Client(redis_url)
    job = client.submit([tmp_path / "in"], model=str(model), out=tmp_path / "out")
    final = job.wait(timeout=60)
    assert (final.status, final.done, final.failed) == (JobStatus.DONE, 5, 1)
    [failure] = job.failures()
    assert failure["file"].endswith("white.png")
    assert "compute process" in failure["reason"] and "SIGKILL" in failure["reason"]
    assert len(list((tmp_path / "out").glob("*.png"))) == 5

    # the worker is the same process, still heartbeating, and its next job runs in a new compute process
    assert proc.poll() is None and [w.pid for w in live_workers(r)] == [proc.pid]
    make_images(tmp_path / "more", 3, prefix="more")
    again = client.submit([tmp_path / "more"], model=str(model), out=tmp_path / "out2").wait(timeout=60)
    assert (again.status, again.done, again.failed) == (JobStatus.DONE, 3, 0)
    halved = np.asarray(Image.open(tmp_path / "out2" / "more000.png"), np.float32)
    original = np.asarray(Image.open(tmp_path / "more" / "more000.png"), np.float32)
    np.testing.assert_allclose(halved, original * 0.5, atol=1.0)
    worker_log = proc.log_path.read_text()
    assert "compute process" in worker_log and "SIGKILL" in worker_log
    assert "items of that batch one at a time" in worker_log  # the crash was isolated to its item
