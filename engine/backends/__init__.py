"""Backends, chosen by name and imported only when asked for."""

from __future__ import annotations

import importlib

from engine.exceptions import BackendError

# name -> module under engine.backends
BACKENDS: dict[str, str] = {
    "numpy": "numpy_backend",
}


def backend_module(name: str):
    try:
        module = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    try:
        return importlib.import_module(f"engine.backends.{module}")
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is not installed ({exc}); install corral's {name!r} extra") from exc


def available_backends() -> list[str]:
    found = []
    for name in BACKENDS:
        try:
            backend_module(name)
        except BackendError:
            continue
        found.append(name)
    return found
