"""The store service over a real loopback HTTP server: index, manifest, downloads, auth, names, limits."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from store.client import StoreClient, StoreError
from tests.store.conftest import StoreFactory


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_index_and_manifest_list_versions_variants_sizes_and_digests(live_store: StoreFactory,
                                                                     model_file: Path) -> None:
    live = live_store()
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    with StoreClient(live.url, live.token) as client:
        assert client.index() == []
        first = client.push(model_file, "tiny")
        second = client.push(model_file, "tiny")
        assert (first["version"], second["version"]) == (1, 2)
        assert first["master"] == {"sha256": sha, "size": model_file.stat().st_size}
        [entry] = client.index()
        assert entry["name"] == "tiny" and entry["latest"] == 2
        assert [v["version"] for v in entry["versions"]] == [1, 2]
        assert entry["versions"][0]["variants"] == {"fp32": {"size": model_file.stat().st_size, "sha256": sha}}
        manifest = client.manifest("tiny", "latest")
        assert manifest["version"] == 2 and manifest["model"]["inputs"] == ["x"]
        assert {"fp16", "linear8", "lut1"} <= set(manifest["available_variants"])
        with pytest.raises(StoreError) as exc:  # versions are immutable
            client.push(model_file, "tiny", version=2)
        assert exc.value.status == 409
        with pytest.raises(StoreError) as missing:
            client.manifest("tiny", 7)
        assert missing.value.status == 404 and "[1, 2]" in str(missing.value)
    schema = httpx.get(f"{live.url}/openapi.json").json()
    assert "/v1/models/{name}/{version}/{variant}" in schema["paths"]


def test_download_has_etag_length_ranges_and_conditional_get(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store()
    data = model_file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    url = f"{live.url}/v1/models/tiny/1/fp32"
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == f'"{sha}"' and int(head.headers["content-length"]) == len(data)
    assert head.headers["accept-ranges"] == "bytes" and head.headers["x-corral-version"] == "1"
    full = httpx.get(url)
    assert full.content == data and full.headers["etag"] == f'"{sha}"'
    part = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    assert httpx.get(url, headers={"Range": f"bytes={len(data) + 5}-"}).status_code == 416
    assert httpx.get(url, headers={"If-None-Match": f'"{sha}"'}).status_code == 304
    latest = httpx.get(f"{live.url}/v1/models/tiny/latest/fp32")
    assert latest.content == data and latest.headers["cache-control"] == "no-cache"
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'corral_store_downloads_total{kind="range",variant="fp32"} 2.0' in metrics


def test_variant_is_made_once_under_8_concurrent_requests(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    url = f"{live.url}/v1/models/tiny/1/fp16"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: httpx.get(url, timeout=60), range(8)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1 and len({a.headers["etag"] for a in answers}) == 1
    assert answers[0].headers["etag"] == f'"{hashlib.sha256(answers[0].content).hexdigest()}"'
    assert live.app.state.repo.variants.builds == 1
    assert len(answers[0].content) < 0.75 * model_file.stat().st_size  # weights halved
    text = httpx.get(f"{live.url}/metrics").text
    assert 'corral_store_variant_builds_total{variant="fp16"} 1.0' in text
    manifest = httpx.get(f"{live.url}/v1/models/tiny/1").json()
    assert manifest["variants"]["fp16"]["recipe"] == {"mode": "fp16"}
    assert httpx.get(f"{live.url}/v1/models/tiny/1/lut9").status_code == 404


def test_uploads_need_the_bearer_token(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store()
    body = model_file.read_bytes()
    assert httpx.post(f"{live.url}/v1/models/tiny", content=body).status_code == 401
    wrong = httpx.post(f"{live.url}/v1/models/tiny", content=body, headers=_auth("x" * 32))
    assert wrong.status_code == 403 and "wrong" in wrong.json()["detail"]
    assert httpx.put(f"{live.url}/v1/models/tiny/3", content=body).status_code == 401
    assert httpx.get(f"{live.url}/v1/models").json() == {"models": []}  # reads are open by default
    assert httpx.post(f"{live.url}/v1/models/tiny", content=body, headers=_auth(live.token)).status_code == 201


def test_a_store_without_a_token_refuses_all_uploads(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store(with_token=False)
    answer = httpx.post(f"{live.url}/v1/models/tiny", content=model_file.read_bytes(), headers=_auth("x" * 32))
    assert answer.status_code == 403 and "--token-file" in answer.json()["detail"]


def test_protected_reads(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store(protect_reads=True)
    assert httpx.get(f"{live.url}/v1/models").status_code == 401
    assert httpx.get(f"{live.url}/v1/models", headers=_auth("y" * 32)).status_code == 403
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
        assert client.index()[0]["name"] == "tiny"
    assert httpx.head(f"{live.url}/v1/models/tiny/1/fp32").status_code == 401


@pytest.mark.parametrize("path", [
    "/v1/models/%2e%2e/1/fp32", "/v1/models/%2E%2E", "/v1/models/..%2f..%2fetc/1/fp32",
    "/v1/models/tiny/1/..%2fmaster.json", "/v1/models/tiny/1/%2e%2e", "/v1/models/.hidden/1",
    "/v1/models/tiny/..%2f1/fp32", "/v1/models/" + "x" * 65 + "/1/fp32", "/v1/models/tiny/1/manifest.json",
])
def test_traversal_and_bad_names_are_refused(live_store: StoreFactory, model_file: Path, path: str) -> None:
    live = live_store()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    (live.root / "secret").write_text("not for download")
    with httpx.Client(base_url=live.url) as http:
        answer = http.get(path)
    assert answer.status_code in (400, 404), (path, answer.status_code)
    assert b"not for download" not in answer.content and answer.headers.get("etag") is None


def test_traversal_in_upload_names_is_refused(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store()
    answer = httpx.post(f"{live.url}/v1/models/%2e%2e", content=model_file.read_bytes(), headers=_auth(live.token))
    assert answer.status_code == 400 and "not allowed" in answer.json()["detail"]
    assert [p.name for p in live.root.iterdir() if p.name != ".uploads"] == []


def test_oversize_uploads_are_refused_with_413(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store(max_upload_bytes=model_file.stat().st_size - 1)
    with StoreClient(live.url, live.token) as client, pytest.raises(StoreError) as exc:
        client.push(model_file, "tiny")
    assert exc.value.status == 413 and "limit" in str(exc.value)
    data = model_file.read_bytes()

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for i in range(0, len(data), 256):
            yield data[i:i + 256]

    streamed = httpx.post(f"{live.url}/v1/models/tiny", content=chunks(), headers=_auth(live.token))
    assert streamed.status_code == 413
    assert list((live.root / ".uploads").iterdir()) == []
    assert httpx.get(f"{live.url}/v1/models").json() == {"models": []}


def test_uploads_must_be_loadable_packages(live_store: StoreFactory, model_file: Path) -> None:
    live = live_store()
    for junk in (os.urandom(500), model_file.read_bytes()[:-7]):
        answer = httpx.post(f"{live.url}/v1/models/tiny", content=junk, headers=_auth(live.token))
        assert answer.status_code == 422 and "not a loadable corral package" in answer.json()["detail"]
    assert httpx.get(f"{live.url}/v1/models").json() == {"models": []}
    assert list((live.root / ".uploads").iterdir()) == []


def test_named_recipes_are_variants_and_bad_ones_fail_at_start(live_store: StoreFactory, model_file: Path,
                                                              tmp_path: Path) -> None:
    from store.app import create_app
    from store.config import StoreServerSettings
    from store.exceptions import ModelRefError

    live = live_store(recipes={"tiny2": {"mode": "lut", "bits": 2, "group_size": 4}})
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    answer = httpx.get(f"{live.url}/v1/models/tiny/1/tiny2")
    assert answer.status_code == 200 and len(answer.content) < model_file.stat().st_size / 4
    recipe = httpx.get(f"{live.url}/v1/models/tiny/1").json()["variants"]["tiny2"]["recipe"]
    assert recipe == {"mode": "lut", "bits": 2, "group_size": 4}
    with pytest.raises(ModelRefError, match="bad quantizer options"):
        create_app(StoreServerSettings(root=tmp_path / "r", recipes={"odd": {"mode": "lut", "bits": 11}}))
    with pytest.raises(ModelRefError, match="built-in"):
        create_app(StoreServerSettings(root=tmp_path / "r", recipes={"lut4": {"mode": "lut", "bits": 4}}))
