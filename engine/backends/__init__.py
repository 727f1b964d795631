"""Backends, chosen by name and imported only when asked for."""

from __future__ import annotations

import importlib
import importlib.util

from engine.exceptions import BackendError

# name -> module under engine.backends
BACKENDS: dict[str, str] = {
    "numpy": "numpy_backend",
    "torch": "torch_backend",
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


def resolve_backend(name: str, device: str = "cpu") -> str:
    """``auto`` -> ``torch`` when torch is installed, else ``numpy``; other names pass through.

    ``auto`` with a GPU device and no torch is an error rather than a silent
    CPU run.
    """
    if name != "auto":
        return name
    if importlib.util.find_spec("torch") is not None:
        return "torch"
    if (device or "cpu") not in ("cpu", "auto"):
        raise BackendError(f"device {device!r} needs the torch backend, which is not installed; "
                           "install corral's 'torch' extra (pip install 'corral[torch]')")
    return "numpy"
