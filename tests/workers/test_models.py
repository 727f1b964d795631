"""Models in the worker's own process: the engine's runs of each batch are reported as they happen."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import engine
from engine.backends.base import cpu_run_items
from engine.builder import ModelBuilder
from store.fetch import ModelFetcher
from store.settings import StoreClientSettings
from workers.models import LocalModels, ModelKey, compiled_models


def test_a_batch_the_engine_splits_reports_each_run(tmp_path: Path) -> None:
    b = ModelBuilder("conv")
    x = b.image_input("image", size=(16, 16), height_range=(1, 2048), width_range=(1, 2048))
    w = np.full((3, 3, 1, 1), 0.1, np.float32)
    b.image_output(b.node("Sigmoid", [b.node("Conv", [x, b.weight("w", w)])]), name="out", scale=1 / 255)
    engine.save(b.build(), tmp_path / "conv.corral")
    runs: list[tuple[int, float]] = []
    fetcher = ModelFetcher.from_settings(StoreClientSettings(root=tmp_path / "store", cache_dir=tmp_path / "cache"))
    models = LocalModels(compiled_models(fetcher, 2**30, on_run=lambda n, s: runs.append((n, s))))
    key = ModelKey(str(tmp_path / "conv.corral"), "numpy", "cpu", "fp32")
    items = [{"image": np.zeros((3, 256, 256), np.float32)} for _ in range(10)]
    assert len(models.predict_batch(key, items)) == 10
    at_most = cpu_run_items(3 * 256 * 256)
    assert sum(n for n, _ in runs) == 10 and all(n <= at_most for n, _ in runs) and len(runs) > 1
    assert all(seconds > 0 for _, seconds in runs)
