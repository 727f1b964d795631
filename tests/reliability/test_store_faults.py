"""The store goes away, or its bytes or manifest are changed: workers wait and recover, and never run what fails verification."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import engine
from scheduler.client import Client
from scheduler.records import JobStatus
from store.client import CorruptDownloadError, StoreClient, StoreUnavailableError
from store.fetch import ModelFetcher
from store.settings import StoreClientSettings
from tests.integration.conftest import make_images, python_env
from tests.reliability.conftest import StoreService

pytestmark = pytest.mark.slow

OUTAGE_S = 30.0  # the figure


def _push(store: StoreService, model: Path, name: str = "tiny") -> dict:
    with StoreClient(store.url, store.token) as client:
        return client.push(model, name)


def _worker_fetcher(monkeypatch: pytest.MonkeyPatch, store: StoreService, cache: Path, wait_s: float) -> ModelFetcher:
    """A fetcher configured exactly as a worker's is: from CORRAL_STORE_URL and CORRAL_STORE_WAIT_S."""
    monkeypatch.setenv("CORRAL_STORE_URL", store.url)
    monkeypatch.setenv("CORRAL_STORE_WAIT_S", str(wait_s))
    monkeypatch.delenv("CORRAL_STORE_TOKEN", raising=False)
    return ModelFetcher.from_settings(StoreClientSettings.from_env(cache_dir=cache))


def _predicts(compiled) -> None:
    image = np.zeros((3, 8, 8), np.float32)
    (out,) = compiled.predict({"image": image}).values()
    assert out.shape == (3, 8, 8)


@pytest.mark.timeout(150)
def test_a_worker_waits_out_a_30_s_store_outage_and_the_job_completes(
        store_service: StoreService, tiny_model: Path, redis_url: str, r, worker, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _push(store_service, tiny_model)
    total = 12
    make_images(tmp_path / "in", total)
    # the producer pins tiny:1@fp32 through the store while it is up
    producer = {**python_env(), "CORRAL_REDIS_URL": redis_url, "CORRAL_STORE_URL": store_service.url,
                "CORRAL_CACHE_DIR": str(tmp_path / "producer-cache")}
    sub = subprocess.run([sys.executable, "-m", "scheduler", "submit", str(tmp_path / "in"), "--model", "tiny@fp32",
                          "--out", str(tmp_path / "out"), "--chunk-size", "4"], env=producer, check=False, capture_output=True,
                         text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    job = Client(redis_url).job(sub.stdout.strip().splitlines()[-1])
    store_service.stop()
    outage_started = time.monotonic()
    # a fresh worker (empty caches) now needs the model while the store is unreachable
    monkeypatch.setenv("CORRAL_STORE_URL", store_service.url)
    monkeypatch.setenv("CORRAL_STORE_WAIT_S", "120")
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path / "worker-cache"))
    proc = worker("--concurrency", "4", visibility_timeout=300)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
    during = job.status()
    assert (during.done, during.failed) == (0, 0), f"items moved without the model: {during}"
    assert proc.poll() is None, "the worker died while the store was away"
    store_service.start()
    final = job.wait(timeout=60)
    assert final.status is JobStatus.DONE and (final.done, final.failed) == (total, 0), job.failures()
    assert len(list((tmp_path / "out").glob("*.png"))) == total
    log = proc.log_path.read_text()  # type: ignore[attr-defined]
    assert store_service.url in log and "retry" in log.lower(), log[-2000:]  # it said what it was waiting for


@pytest.mark.timeout(60)
def test_past_the_wait_limit_the_fetch_fails_saying_where_the_store_was(store_service: StoreService,
                                                                         tiny_model: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _push(store_service, tiny_model)
    fetcher = _worker_fetcher(monkeypatch, store_service, tmp_path / "cache", wait_s=4)
    store_service.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        fetcher.fetch("tiny@fp32")
    took = time.monotonic() - started
    assert 2 <= took <= 20, f"gave up after {took:.1f} s with a 4 s limit"
    assert store_service.url.split("//")[1] in str(info.value)


def _version_dir(store: StoreService) -> Path:
    return store.root / "tiny" / "1"


def _no_model_ran(fetcher: ModelFetcher, loads: list) -> None:
    assert loads == [], "a package that failed verification was loaded"
    assert not list(fetcher.compiled.rglob("*.npz")), "a package that failed verification was compiled"
    assert not [p for p in fetcher.packages.rglob("*.corral")], "a package that failed verification was kept"


@pytest.fixture
def spy_loads(monkeypatch: pytest.MonkeyPatch) -> list:
    """Records every package the engine is asked to load (the real loader still runs)."""
    calls: list = []
    real = engine.load

    def load(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(engine, "load", load)
    return calls


@pytest.mark.timeout(60)
def test_tampered_package_bytes_are_refused_and_never_loaded(store_service: StoreService, tiny_model: Path,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              spy_loads: list) -> None:
    _push(store_service, tiny_model)
    master = _version_dir(store_service) / "master.corral"
    data = bytearray(master.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the weights: still a parseable package
    master.write_bytes(bytes(data))
    fetcher = _worker_fetcher(monkeypatch, store_service, tmp_path / "cache", wait_s=5)
    with pytest.raises(CorruptDownloadError, match="failed sha256 verification"):
        fetcher.fetch("tiny@fp32")
    _no_model_ran(fetcher, spy_loads)


@pytest.mark.timeout(60)
def test_a_tampered_manifest_is_refused_and_nothing_is_loaded(store_service: StoreService, tiny_model: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               spy_loads: list) -> None:
    manifest = _push(store_service, tiny_model)
    real_sha = manifest["master"]["sha256"]
    forged = "0" * 64
    for record in _version_dir(store_service).rglob("*.json"):  # every place the store records the digest
        record.write_text(record.read_text().replace(real_sha, forged))
    with httpx.Client() as http:  # the store now vouches for a digest the bytes do not have
        assert http.get(f"{store_service.url}/v1/models/tiny/1").json()["master"]["sha256"] == forged
    fetcher = _worker_fetcher(monkeypatch, store_service, tmp_path / "cache", wait_s=5)
    with pytest.raises(CorruptDownloadError, match="sha256"):
        fetcher.fetch("tiny@fp32")
    _no_model_ran(fetcher, spy_loads)


@pytest.mark.timeout(60)
def test_a_cached_package_changed_on_the_worker_disk_is_replaced_before_use(
        store_service: StoreService, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _push(store_service, tiny_model)
    fetcher = _worker_fetcher(monkeypatch, store_service, tmp_path / "cache", wait_s=5)
    cached = fetcher.fetch_package("tiny:1@fp32")
    original = cached.read_bytes()
    data = bytearray(original)
    data[-8] ^= 0x55
    cached.write_bytes(bytes(data))
    again = fetcher.fetch_package("tiny:1@fp32")  # verified again before use: the changed copy is replaced
    assert again.read_bytes() == original
    _predicts(fetcher.fetch("tiny:1@fp32"))
