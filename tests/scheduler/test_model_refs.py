"""Model references: store references pinned to a version, package paths checked, needs read for routing."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

import engine
from scheduler import keys
from scheduler.exceptions import ModelRefError
from scheduler.model_refs import ModelNeeds, model_needs, resolve_model
from scheduler.registry import WorkerInfo, publish
from scheduler.routing import choose_queue
from store import exceptions as store_exceptions
from store.fetch import ModelFetcher
from store.repository import Repository
from store.settings import StoreClientSettings
from tests.store.conftest import tiny_model


@pytest.fixture
def fetcher(tmp_path: Path) -> ModelFetcher:
    return ModelFetcher.from_settings(StoreClientSettings(root=tmp_path / "store", cache_dir=tmp_path / "cache"))


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.corral"
    engine.save(tiny_model(), path)
    return path


def test_store_references_are_pinned_so_a_job_runs_one_version(fetcher: ModelFetcher, package: Path,
                                                               tmp_path: Path) -> None:
    repo = Repository(tmp_path / "store")
    repo.publish("tiny", package)
    assert resolve_model("tiny", fetcher) == "tiny:1@fp32"
    assert resolve_model("tiny@lut4", fetcher) == "tiny:1@lut4"
    repo.publish("tiny", package)  # version 2 arrives: new jobs get it, a pinned reference keeps its version
    assert resolve_model("tiny:latest@lut4", fetcher) == "tiny:2@lut4"
    assert resolve_model("tiny:1@lut4", fetcher) == "tiny:1@lut4"


def test_one_error_type_for_every_bad_reference(fetcher: ModelFetcher, package: Path, tmp_path: Path) -> None:
    assert ModelRefError is store_exceptions.ModelRefError
    with pytest.raises(ModelRefError, match="not in the store.*corral store push"):
        resolve_model("nosuch", fetcher)
    Repository(tmp_path / "store").publish("tiny", package)
    with pytest.raises(ModelRefError, match="unknown variant 'lut99'"):
        resolve_model("tiny@lut99", fetcher)
    with pytest.raises(ModelRefError, match="no such file"):
        resolve_model(str(tmp_path / "missing.corral"), fetcher)
    with pytest.raises(ModelRefError, match="corral model import"):
        resolve_model(str(tmp_path / "model.onnx"), fetcher)
    assert resolve_model(str(package), fetcher) == str(package.resolve())


def test_needs_come_from_the_manifest_or_the_package(fetcher: ModelFetcher, package: Path, tmp_path: Path) -> None:
    Repository(tmp_path / "store").publish("tiny", package)
    from_store = model_needs("tiny:1@lut4", fetcher)
    from_file = model_needs(str(package), fetcher)
    assert from_store == from_file and {"Conv", "Relu"} <= from_store.ops
    assert from_store.custom_layers == frozenset() and from_store.custom_model == ""


def test_auto_routing_of_a_store_model(fetcher: ModelFetcher, package: Path, tmp_path: Path) -> None:
    Repository(tmp_path / "store").publish("tiny", package)
    r = fakeredis.FakeRedis()
    pinned = resolve_model("tiny@lut4", fetcher)
    needs = model_needs(pinned, fetcher)
    gpu = WorkerInfo(id="g", hostname="h", pid=1, device="cuda:0", backend="torch", queue=keys.CUDA_QUEUE,
                     ops=sorted(needs.ops - {"Relu"}))
    publish(r, gpu)
    assert choose_queue(r, "auto", lambda: model_needs(pinned, fetcher)) == keys.CPU_QUEUE  # it lacks Relu
    gpu.ops = sorted(needs.ops)
    publish(r, gpu)
    assert choose_queue(r, "auto", lambda: model_needs(pinned, fetcher)) == keys.CUDA_QUEUE
    assert ModelNeeds.from_manifest({}) == ModelNeeds()
