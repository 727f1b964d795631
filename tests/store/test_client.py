"""The store client against a real server: resumed, verified pulls; tampered bytes; a store that is down."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.client import CorruptDownloadError, RetryPolicy, StoreClient, StoreUnavailableError
from store.server import BackgroundServer, loopback_socket
from tests.store.conftest import StoreFactory

FAST = RetryPolicy(attempts=4, max_seconds=20, initial=0.05, maximum=0.2)


class TamperDownloads:
    """ASGI wrapper that flips one byte in the body of the first ``times`` package downloads."""

    def __init__(self, app: Any, times: int) -> None:
        self.app = app
        self.left = times
        self.tampered = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        is_download = (scope["type"] == "http" and scope["method"] == "GET"
                       and scope["path"].count("/") == 5 and self.left > 0)
        if not is_download:
            return await self.app(scope, receive, send)
        self.left -= 1
        done = False

        async def tampering_send(message: dict) -> None:
            nonlocal done
            if message["type"] == "http.response.body" and message.get("body") and not done:
                body = bytearray(message["body"])
                body[len(body) // 2] ^= 0xFF
                message = {**message, "body": bytes(body)}
                done = True
                self.tampered += 1
            await send(message)

        await self.app(scope, receive, tampering_send)


def test_pull_resumes_an_interrupted_download(live_store: StoreFactory, model_file: Path, tmp_path: Path) -> None:
    live = live_store()
    data = model_file.read_bytes()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
    dest = tmp_path / "out" / "tiny.corral"
    dest.parent.mkdir()
    half = len(data) // 2
    # a download cut off half-way: the stream is dropped after `half` bytes
    with httpx.stream("GET", f"{live.url}/v1/models/tiny/1/fp32") as response:
        got = bytearray()
        for chunk in response.iter_bytes(64):
            got += chunk
            if len(got) >= half:
                break
    (dest.parent / "tiny.corral.part").write_bytes(bytes(got[:half]))
    with StoreClient(live.url) as client:
        result = client.pull("tiny:latest", dest)
    assert result.resumed_from == half and result.downloaded_bytes == len(data) - half
    assert result.attempts == 1 and str(result.ref) == "tiny:1@fp32"
    assert dest.read_bytes() == data and result.sha256 == hashlib.sha256(data).hexdigest()
    assert not (dest.parent / "tiny.corral.part").exists()
    with StoreClient(live.url) as client:  # already there and verified: nothing downloaded
        assert client.pull("tiny:1", dest).downloaded_bytes == 0


def test_a_partial_file_that_is_not_a_prefix_is_caught_and_replaced(live_store: StoreFactory, model_file: Path,
                                                                      tmp_path: Path) -> None:
    live = live_store()
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
        dest = tmp_path / "pulled.corral"
        (tmp_path / "pulled.corral.part").write_bytes(b"\0" * 100)  # wrong bytes: resuming gives a bad sha256
        result = client.pull("tiny:1", dest)
    assert result.attempts == 2 and dest.read_bytes() == model_file.read_bytes()


def test_tampered_bytes_are_rejected_and_fetched_again(live_store: StoreFactory, model_file: Path,
                                                      tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrappers: list[TamperDownloads] = []
    live = live_store(wrap=lambda app: wrappers.append(TamperDownloads(app, times=1)) or wrappers[-1])
    with StoreClient(live.url, live.token) as client:
        client.push(model_file, "tiny")
        with caplog.at_level(logging.WARNING, logger="store.client"):
            result = client.pull("tiny:1", tmp_path / "pulled.corral")
    assert wrappers[0].tampered == 1 and result.attempts == 2
    assert (tmp_path / "pulled.corral").read_bytes() == model_file.read_bytes()
    assert "does not match the manifest" in caplog.text


def test_always_tampered_bytes_end_in_a_clear_error_and_no_file(live_store: StoreFactory, model_file: Path,
                                                               tmp_path: Path) -> None:
    live = live_store(wrap=lambda app: TamperDownloads(app, times=100))
    with StoreClient(live.url, live.token, verify_attempts=3) as client:
        client.push(model_file, "tiny")
        with pytest.raises(CorruptDownloadError, match="failed sha256 verification"):
            client.pull("tiny:1", tmp_path / "pulled.corral")
    assert list(tmp_path.glob("pulled.corral*")) == []


def test_a_store_that_is_down_is_retried_then_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sock = loopback_socket()  # bound but not listening: connections are refused
    host, port = sock.getsockname()
    started = time.monotonic()
    with (StoreClient(f"http://{host}:{port}", retry=FAST) as client,
          caplog.at_level(logging.WARNING, logger="store.client"),
          pytest.raises(StoreUnavailableError, match="did not answer listing models after 4 attempts")):
        client.index()
    sock.close()
    assert time.monotonic() - started < 10
    retries = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(retries) == 3 and "retry 1/3" in retries[0].getMessage()


def test_a_store_that_comes_back_is_used_after_backoff(tmp_path: Path, model_file: Path) -> None:
    from store.app import create_app
    from store.config import StoreServerSettings

    sock = loopback_socket()
    host, port = sock.getsockname()
    app = create_app(StoreServerSettings(root=tmp_path / "root"))
    servers: list[BackgroundServer] = []
    timer = threading.Timer(0.3, lambda: servers.append(BackgroundServer(app, sock).start()))
    timer.start()
    try:
        with StoreClient(f"http://{host}:{port}", retry=RetryPolicy(attempts=8, initial=0.1, maximum=0.5)) as c:
            assert c.index() == []
    finally:
        timer.join()
        for server in servers:
            server.stop()
