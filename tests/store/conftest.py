"""A real store service on a loopback port (uvicorn in a thread) and a small float model to put in it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from engine import ModelBuilder
from engine.format import save
from store.app import create_app
from store.config import StoreServerSettings
from store.server import BackgroundServer, loopback_socket


def tiny_model(seed: int = 0) -> Any:
    """conv(3->48, 3x3) -> relu -> conv(48->4, 3x3): both weights over the quantizers' 1024-element minimum."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder("tiny", version="1")
    x = b.array_input("x", (3, 8, 8), shapes=[(3, 8, 8)])
    h = b.node("Relu", [b.node("Conv", [x, b.weight("w1", rng.standard_normal((48, 3, 3, 3)).astype(np.float32)),
                                        b.weight("b1", rng.standard_normal(48).astype(np.float32))],
                                pads=[1, 1, 1, 1])])
    y = b.node("Conv", [h, b.weight("w2", rng.standard_normal((4, 48, 3, 3)).astype(np.float32) * 0.1)],
               pads=[1, 1, 1, 1])
    b.array_output(y, name="y")
    return b.build()


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.corral"
    save(tiny_model(), path)
    return path


@dataclass
class LiveStore:
    url: str
    app: FastAPI
    root: Path
    token: str
    server: BackgroundServer

    def stop(self) -> None:
        self.server.stop()


StoreFactory = Callable[..., LiveStore]


@pytest.fixture
def live_store(tmp_path: Path) -> Iterator[StoreFactory]:
    """``live_store(**config, wrap=None)``: start a store on its own root; ``wrap`` may wrap the ASGI app."""
    started: list[LiveStore] = []

    def make(wrap: Callable[[Any], Any] | None = None, with_token: bool = True, **options: Any) -> LiveStore:
        root = tmp_path / f"root{len(started)}"
        token = secrets.token_hex(16)
        token_file = None
        if with_token:
            token_file = tmp_path / f"token{len(started)}"
            token_file.write_text(token + "\n")
        app = create_app(StoreServerSettings(root=root, token_file=token_file, **options))
        server = BackgroundServer(wrap(app) if wrap else app, loopback_socket()).start()
        live = LiveStore(server.url, app, root, token, server)
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()
