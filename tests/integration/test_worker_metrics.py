"""A worker's Prometheus endpoint after a real job, and a store reference run end to end through the queue."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from scheduler.client import Client
from scheduler.embedded import free_port, store_args
from scheduler.jobs import RedisJob
from scheduler.records import JobStatus
from scheduler.registry import live_workers
from store.fetch import ModelFetcher
from store.repository import Repository
from store.settings import StoreClientSettings
from tests.integration.conftest import make_images

pytestmark = pytest.mark.slow


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_endpoint_after_a_store_model_job(redis_url: str, r: redis.Redis, worker, tiny_model: Path,
                                                  tmp_path: Path) -> None:
    store = StoreClientSettings(root=tmp_path / "store", cache_dir=tmp_path / "producer-cache")
    Repository(store.root).publish("tiny", tiny_model)
    port = free_port()
    worker("--max-batch", "4", "--metrics-port", str(port), *store_args(store.with_(cache_dir=tmp_path / "wc")))
    make_images(tmp_path / "in", 10)
    client = Client(redis_url, fetcher=ModelFetcher.from_settings(store))
    job = client.submit([tmp_path / "in"], model="tiny@lut8", out=tmp_path / "out", chunk_size=5)
    assert RedisJob(r, job.id).load().model_path == "tiny:1@lut8"  # pinned at submit
    final = job.wait(timeout=60)
    assert (final.status, final.done) == (JobStatus.DONE, 10)
    assert len(list((tmp_path / "out").glob("*.png"))) == 10

    [info] = live_workers(r)
    assert info.metrics_url.endswith(f":{port}/metrics") and "Conv" in info.ops
    m = scrape(f"http://127.0.0.1:{port}/metrics")
    assert m[("corral_worker_items_total", (("outcome", "done"),))] == 10
    assert m[("corral_worker_items_total", (("outcome", "failed"),))] == 0
    assert m[("corral_worker_backlog", ())] == 0
    assert m[("corral_worker_warm_model_bytes", ())] > 0
    # the model came from the store once (download or package cache), in the worker's compute process;
    # every batch found it warm in memory there
    levels = {dict(k[1])["level"]: v for k, v in m.items() if k[0] == "corral_worker_model_fetches_total"}
    assert sum(v for lvl, v in levels.items() if lvl != "memory") == 1
    assert levels["memory"] >= m[("corral_worker_batch_size_count", ())] >= 3
    assert m[("corral_worker_model_compile_seconds_count", (("from_cache", "false"),))] == 1
    # the batch histograms are exported (filled by the batcher through workers.metrics.observe_batch)
    assert ("corral_worker_batch_size_count", ()) in m and ("corral_worker_batch_seconds_count", ()) in m
