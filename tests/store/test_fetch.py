"""Worker side: reference -> verified package -> compiled model, with the disk caches and the memory cache."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import engine
from store.client import CorruptDownloadError, StoreClient
from store.exceptions import ConfigError
from store.fetch import LocalSource, ModelFetcher, RemoteSource
from store.metrics import FETCH
from store.repository import Repository
from store.settings import StoreClientSettings
from store.variants import VariantMaker
from tests.store.conftest import StoreFactory
from tests.store.test_client import TamperDownloads
from workers.model_cache import ModelCache

X = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)


def _reference(model_file: Path) -> np.ndarray:
    return engine.compile(engine.load(model_file), backend="numpy").run({"x": X})["y"]


def test_remote_fetch_downloads_verifies_compiles_and_a_restart_reuses_the_disk_caches(
        live_store: StoreFactory, model_file: Path, tmp_path: Path) -> None:
    live = live_store()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    downloads = FETCH.downloads._value.get()
    fetcher = ModelFetcher(RemoteSource(StoreClient(live.url)), tmp_path / "cache")
    compiled = fetcher.fetch("tiny", device="cpu", backend="numpy")
    assert fetcher.last.level == "download" and not compiled.from_cache
    np.testing.assert_array_equal(compiled.run({"x": X})["y"], _reference(model_file))
    assert FETCH.downloads._value.get() == downloads + 1
    assert fetcher.pin("tiny") == "tiny:1@fp32"

    live.stop()  # a restarted worker needs neither the store nor the compiler for a pinned ref
    restarted = ModelFetcher(RemoteSource(StoreClient(live.url)), tmp_path / "cache")
    again = restarted.fetch("tiny:1", device="cpu", backend="numpy")
    assert again.from_cache and restarted.last.level == "compiled-cache"
    assert FETCH.downloads._value.get() == downloads + 1
    np.testing.assert_array_equal(again.run({"x": X})["y"], _reference(model_file))


def test_quantized_variants_come_from_the_store_and_run_close_to_float(live_store: StoreFactory, model_file: Path,
                                                                       tmp_path: Path) -> None:
    live = live_store()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    fetcher = ModelFetcher(RemoteSource(StoreClient(live.url)), tmp_path / "cache")
    ref = _reference(model_file)
    for variant, tolerance in (("fp16", 1e-2), ("linear8", 0.1), ("lut4", 0.6)):
        compiled = fetcher.fetch(f"tiny:1@{variant}")
        error = float(np.abs(compiled.run({"x": X})["y"] - ref).max())
        assert 0 < error < tolerance * float(np.abs(ref).max()), (variant, error)
    sizes = {k: v["size"] for k, v in StoreClient(live.url).manifest("tiny", 1)["variants"].items()}
    assert sizes["lut4"] < sizes["linear8"] < sizes["fp16"] < sizes["fp32"]


def test_tampered_downloads_are_never_compiled(live_store: StoreFactory, model_file: Path, tmp_path: Path) -> None:
    live = live_store(wrap=lambda app: TamperDownloads(app, times=100))
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    fetcher = ModelFetcher(RemoteSource(StoreClient(live.url, verify_attempts=2)), tmp_path / "cache")
    with pytest.raises(CorruptDownloadError, match="nothing was loaded"):
        fetcher.fetch("tiny:1")
    assert list((tmp_path / "cache" / "compiled").iterdir()) == []
    assert list((tmp_path / "cache" / "packages").rglob("*.corral")) == []


def test_a_cached_package_changed_on_disk_is_rejected_and_not_compiled(live_store: StoreFactory, model_file: Path,
                                                                       tmp_path: Path) -> None:
    live = live_store()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    fetcher = ModelFetcher(RemoteSource(StoreClient(live.url)), tmp_path / "cache")
    path = fetcher.fetch_package("tiny:1")
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    # the client sees the bad copy, throws it away and downloads a good one
    assert fetcher.fetch_package("tiny:1").read_bytes() == model_file.read_bytes()
    assert fetcher.last.level == "package-cache"


def test_local_store_without_a_server(model_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    Repository(root).publish("tiny", model_file)
    fetcher = ModelFetcher(LocalSource(root), tmp_path / "cache")
    compiled = fetcher.fetch("tiny@fp16")
    assert compiled.run({"x": X})["y"].shape == (2, 4, 8, 8)
    assert list((tmp_path / "cache" / "packages").iterdir()) == []  # read in place, not copied
    variant = root / "tiny" / "1" / "variants" / "fp16.corral"
    variant.write_bytes(variant.read_bytes()[:-1] + b"\x01")
    with pytest.raises(CorruptDownloadError, match="changed after it was stored"):
        ModelFetcher(LocalSource(root), tmp_path / "cache2").fetch("tiny:1@fp16")


def test_settings_without_a_url_pick_the_local_root(model_file: Path, tmp_path: Path) -> None:
    Repository(tmp_path / "store").publish("tiny", model_file)
    fetcher = ModelFetcher.from_settings(StoreClientSettings(root=tmp_path / "store", cache_dir=tmp_path / "cache"))
    assert isinstance(fetcher.source, LocalSource) and fetcher.pin("tiny@lut4") == "tiny:1@lut4"
    # the manifest tells routing what the model needs, without a download
    assert {"Conv", "Relu"} <= set(fetcher.describe("tiny")["ops"])
    assert fetcher.describe("tiny")["custom_layers"] == []


def test_store_settings_from_the_environment(tmp_path: Path) -> None:
    env = {"CORRAL_STORE_URL": "http://store:8700", "CORRAL_STORE_TOKEN": "t" * 20,
           "CORRAL_STORE_ROOT": str(tmp_path / "r"), "CORRAL_CACHE_DIR": str(tmp_path / "c"),
           "CORRAL_STORE_WAIT_S": "2.5"}
    settings = StoreClientSettings.from_env(env)
    assert settings == StoreClientSettings("http://store:8700", "t" * 20, tmp_path / "r", tmp_path / "c", 2.5)
    assert StoreClientSettings.from_env(env, root=tmp_path / "x", url=None).root == tmp_path / "x"  # options win
    assert StoreClientSettings.from_env({}).url is None
    with pytest.raises(ConfigError, match="CORRAL_STORE_WAIT_S='soon'"):
        StoreClientSettings.from_env({"CORRAL_STORE_WAIT_S": "soon"})


def test_two_makers_on_one_root_build_a_variant_once(model_file: Path, tmp_path: Path) -> None:
    """Two repositories on one root stand for two server processes: the file lock keeps it to one build."""
    root = tmp_path / "store"
    makers = [VariantMaker(), VariantMaker()]
    repos = [Repository(root, maker=m) for m in makers]
    repos[0].publish("tiny", model_file)
    from store.refs import parse_ref

    barrier = threading.Barrier(8)

    def get(i: int) -> str:
        barrier.wait()
        return repos[i % 2].variant(parse_ref("tiny:1@lut3")).sha256

    with ThreadPoolExecutor(8) as pool:
        shas = set(pool.map(get, range(8)))
    assert len(shas) == 1 and sum(m.builds for m in makers) == 1


def test_the_worker_memory_cache_loads_through_the_fetcher_once(live_store: StoreFactory, model_file: Path,
                                                               tmp_path: Path) -> None:
    live = live_store()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    fetcher = ModelFetcher(RemoteSource(StoreClient(live.url)), tmp_path / "cache")
    cache: ModelCache[tuple[str, str, str, str], engine.CompiledModel] = ModelCache(fetcher.loader, 1 << 30)
    key = ("tiny:1@fp16", "numpy", "cpu", "fp32")  # the store variant fp16, computed in float32 on the CPU

    def run(_: int) -> np.ndarray:
        with cache.use(key) as model:
            return model.run({"x": X})["y"]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    assert cache.loads == 1 and all(np.array_equal(r, results[0]) for r in results)


def test_default_fetcher_and_ref_detection(monkeypatch: pytest.MonkeyPatch, model_file: Path,
                                           tmp_path: Path) -> None:
    from store import fetch

    monkeypatch.setattr(fetch, "_default", None)
    monkeypatch.setattr(fetch, "_default_settings", fetch._default_settings)
    fetch.configure(StoreClientSettings(root=tmp_path / "store", cache_dir=tmp_path / "cache"))
    Repository(tmp_path / "store").publish("tiny", model_file)
    assert fetch.is_store_ref("tiny:1@lut4") and not fetch.is_store_ref(str(model_file))
    assert fetch.default_fetcher() is fetch.default_fetcher()
    compiled = fetch.default_fetcher().loader(("tiny:1@lut4", "numpy", "cpu", "fp32"))
    assert compiled.run({"x": X})["y"].shape == (2, 4, 8, 8)
    assert list((tmp_path / "cache" / "compiled").glob("*.npz"))
    # a package given by path goes through the same compiled cache
    path_model = fetch.default_fetcher().load_path(model_file)
    assert fetch.default_fetcher().last.level == "path"
    assert np.allclose(path_model.run({"x": X})["y"], _reference(model_file), rtol=1e-5, atol=1e-5)
    fetch.default_fetcher().load_path(model_file)
    assert fetch.default_fetcher().last.level == "compiled-cache"


def test_a_fetch_waits_for_a_store_that_is_down_then_fails_clearly(tmp_path: Path) -> None:
    from store.client import StoreUnavailableError
    from store.server import loopback_socket

    sock = loopback_socket()
    settings = StoreClientSettings(url=f"http://127.0.0.1:{sock.getsockname()[1]}", wait_s=1,
                                   cache_dir=tmp_path / "cache")
    fetcher = ModelFetcher.from_settings(settings)
    with pytest.raises(StoreUnavailableError, match="within 1 s; last error.*CORRAL_STORE_URL"):
        fetcher.fetch("tiny:1@lut4")
    sock.close()
