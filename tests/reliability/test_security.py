"""Security checks: tokens for uploads, no path traversal through model or output names, only allowlisted
custom code, and a password-protected Redis honoured by every command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

import engine
from engine.builder import ModelBuilder
from engine.custom import MissingImplementationError
from scheduler.embedded import start_worker, stop_process
from scheduler.inputs import scan_inputs
from scheduler.registry import live_workers
from store.refs import parse_ref
from store.repository import Repository
from tests.integration.conftest import make_images, python_env
from tests.reliability.conftest import AofRedis, StoreService, wait_for

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- store uploads

@pytest.mark.timeout(60)
def test_uploads_without_the_token_are_refused(store_service: StoreService, tiny_model: Path) -> None:
    body = tiny_model.read_bytes()
    url = f"{store_service.url}/v1/models/tiny"
    with httpx.Client(timeout=10) as http:
        anonymous = http.post(url, content=body)
        assert anonymous.status_code == 401 and "bearer token" in anonymous.json()["detail"]
        wrong = http.post(url, content=body, headers={"Authorization": "Bearer " + "x" * 32})
        assert wrong.status_code == 403
        put = http.put(f"{url}/7", content=body)
        assert put.status_code == 401
        assert http.get(f"{store_service.url}/v1/models").json()["models"] == []  # nothing was stored
    cli = subprocess.run([sys.executable, "-m", "scheduler", "store", "push", str(tiny_model), "--name", "tiny",
                          "--url", store_service.url], env=python_env(), check=False, capture_output=True, text=True, timeout=60)
    assert cli.returncode != 0 and "token" in cli.stderr
    with httpx.Client(timeout=10) as http:
        ok = http.post(url, content=body, headers={"Authorization": f"Bearer {store_service.token}"})
        assert ok.status_code == 201, ok.text


# ---------------------------------------------------------------- path traversal

TRAVERSALS = ["../../etc/passwd", "..", ".hidden", "a/b", "a\\b", "/abs", "x" * 65, "name\0nul", "%2e%2e"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_model_references_with_path_tricks_are_refused(name: str) -> None:
    for ref in (name, f"ok:1@{name}", f"{name}:1"):
        with pytest.raises(ValueError):
            parse_ref(ref)


@pytest.mark.timeout(60)
def test_the_store_refuses_traversal_in_urls_and_writes_nothing_outside_its_root(
        store_service: StoreService, tiny_model: Path, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {store_service.token}"}
    body = tiny_model.read_bytes()
    with httpx.Client(timeout=10) as http:
        for name in ("..%2F..%2Fescaped", "%2E%2E", ".hidden", "a%5Cb", "..%252F..%252Fescaped"):
            up = http.put(f"{store_service.url}/v1/models/{name}/1", content=body, headers=headers)
            assert up.status_code in (400, 404, 405), (name, up.status_code, up.text)
            down = http.get(f"{store_service.url}/v1/models/{name}/1/fp32")
            assert down.status_code in (400, 404), (name, down.status_code)
        variant = http.get(f"{store_service.url}/v1/models/tiny/1/..%2F..%2Fmaster")
        assert variant.status_code in (400, 404)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and store_service.root not in p.parents]
    assert {p.name for p in outside} <= {"store-token", "store.log"}
    with pytest.raises(ValueError):
        Repository(tmp_path / "direct").publish("../escaped", tiny_model)
    assert not (tmp_path / "escaped").exists()


def test_input_names_never_lead_outputs_out_of_the_job_directory(tmp_path: Path) -> None:
    """A list file naming ``../../x.png`` and a glob reaching upwards both give plain names inside OUT."""
    (tmp_path / "deep" / "in").mkdir(parents=True)
    make_images(tmp_path, 1, prefix="x")  # tmp_path/x000.png, two levels above the list file's folder
    listing = tmp_path / "deep" / "in" / "list.txt"
    listing.write_text("../../x000.png\n")
    items, rejected = scan_inputs([f"@{listing}", str(tmp_path / "deep" / "in" / ".." / ".." / "*.png")])
    assert not rejected and items
    for item in items:
        assert ".." not in Path(item.name).parts and not Path(item.name).is_absolute(), item.name


def test_a_worker_refuses_an_item_name_that_climbs_out_of_the_job_directory(tmp_path: Path) -> None:
    """Chunk messages come from whoever can write to Redis; the worker must not trust their names."""
    import fakeredis

    from scheduler.protocol import ChunkItem
    from scheduler.records import JobRecord
    from workers.exceptions import UnsafeOutputNameError
    from workers.item_io import write_outputs

    b = ModelBuilder("ident")
    x = b.image_input("image", size=(4, 4))
    b.image_output(b.node("Identity", [x]), name="out")
    description = b.build().description
    out = tmp_path / "jobs" / "out"
    job = JobRecord(id="j1", model="m", model_path="m", out=str(out))
    image = {"out": np.zeros((3, 4, 4), np.float32)}
    r = fakeredis.FakeRedis()
    absolute = tmp_path / "abs" / "escaped.png"
    for name in ("../../escaped.png", str(absolute), "a/../../escaped2.png"):
        with pytest.raises(UnsafeOutputNameError, match="outside the job's output directory"):
            write_outputs(r, job, ChunkItem(0, name, str(tmp_path / "x.png")), image, description)
    written = [p for p in tmp_path.rglob("*.png") if out not in p.parents]
    assert written == [], f"outputs written outside {out}: {written}"
    assert not absolute.exists()


# ---------------------------------------------------------------- custom layers

def _custom_layer_model(class_name: str) -> engine.Model:
    b = ModelBuilder("custom")
    x = b.image_input("image", size=(8, 8), height_range=(1, 64), width_range=(1, 64))
    y = b.custom_layer(class_name, [x], gain=2.0)
    b.image_output(y, name="out", scale=1 / 255)
    return b.build()


@pytest.mark.parametrize("class_name", ["NotAllowlisted", "os.system", "subprocess:Popen", "builtins.eval"])
def test_a_custom_layer_that_is_not_allowlisted_is_refused_at_compile(class_name: str, tmp_path: Path) -> None:
    path = tmp_path / "custom.corral"
    engine.save(_custom_layer_model(class_name), path)
    with pytest.raises(MissingImplementationError) as info:
        engine.compile(engine.load(path), backend="numpy", device="cpu")
    assert class_name in str(info.value) and "never carry code" in str(info.value)


# ---------------------------------------------------------------- Redis with a password

@pytest.fixture
def password_redis(tmp_path: Path):
    (tmp_path / "pw").mkdir()
    server = AofRedis(tmp_path / "pw", password="s3cret-" + "ab" * 12).start()
    yield server
    server.kill()


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], env=env, check=False, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(150)
def test_a_redis_password_in_the_url_is_honoured_by_worker_submit_status_and_results(
        password_redis: AofRedis, tiny_model: Path, tmp_path: Path) -> None:
    url = password_redis.url
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=password_redis.port).ping()
    worker = start_worker(url, "--loglevel", "info", log_path=tmp_path / "worker.log")
    try:
        r = redis.Redis.from_url(url)
        wait_for(lambda: live_workers(r), 30, "the worker's heartbeat through the password-protected Redis")
        make_images(tmp_path / "in", 4)
        env = python_env()
        # --redis-url on the command line, path transport
        sub = _cli("submit", str(tmp_path / "in"), "--model", str(tiny_model), "--out", str(tmp_path / "out"),
                   "--wait", "--redis-url", url, env=env, timeout=90)
        assert sub.returncode == 0, sub.stderr
        job_id = sub.stdout.strip().splitlines()[0]
        status = _cli("status", job_id, "--json", "--redis-url", url, env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["done"] == 4
        # CORRAL_REDIS_URL in the environment, Redis transport, then `results`
        env_url = {**env, "CORRAL_REDIS_URL": url}
        sub2 = _cli("submit", str(tmp_path / "in"), "--model", str(tiny_model), "--out", str(tmp_path / "o2"),
                    "--transport", "redis", "--wait", env=env_url, timeout=90)
        assert sub2.returncode == 0, sub2.stderr
        got = _cli("results", sub2.stdout.strip().splitlines()[0], "--out", str(tmp_path / "fetched"), env=env_url)
        assert got.returncode == 0 and len(list((tmp_path / "fetched").glob("*.png"))) == 4, got.stderr
        assert _cli("workers", "--redis-url", url, env=env).returncode == 0
    finally:
        stop_process(worker, timeout=20)


@pytest.mark.timeout(60)
def test_a_missing_redis_password_is_a_clear_error_not_a_traceback(password_redis: AofRedis) -> None:
    bare = f"redis://127.0.0.1:{password_redis.port}/0"
    for args in (["status", "--redis-url", bare], ["jobs", "--redis-url", bare]):
        refused = _cli(*args, env=python_env(), timeout=30)
        assert refused.returncode != 0
        assert "Traceback" not in refused.stderr, refused.stderr[-400:]
        assert "password" in refused.stderr.lower() or "auth" in refused.stderr.lower(), refused.stderr
