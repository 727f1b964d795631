"""Backends, chosen by name and imported only when asked for.

Each backend is a :class:`engine.backends.base.Backend` subclass named in
:data:`BACKENDS`; :func:`backend_class` imports it on first use and
:func:`create_backend` binds it to a device and precision. ``auto`` is
resolved by :func:`resolve_backend`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from functools import cache
from typing import Any

from engine.backends.base import Backend
from engine.exceptions import BackendError

# name -> "module:Class" under engine.backends, and the extra that installs what it imports
BACKENDS: dict[str, str] = {
    "onnxruntime": "onnxruntime_backend:OnnxRuntimeBackend",
    "torch": "torch_backend:TorchBackend",
    "numpy": "numpy_backend:NumpyBackend",
}
EXTRAS: dict[str, str] = {"onnxruntime": "onnxruntime (a core dependency; 'gpu' for onnxruntime-gpu)",
                          "torch": "'torch'", "numpy": "(none)"}
# what `auto` tries, in order, on the CPU and on a GPU
AUTO_CPU = ("onnxruntime", "torch", "numpy")
AUTO_GPU = ("torch", "onnxruntime")
# the packages each backend needs importable, checked without importing them
REQUIRES: dict[str, tuple[str, ...]] = {"onnxruntime": ("onnxruntime", "onnx"), "torch": ("torch",), "numpy": ()}


@cache
def backend_class(name: str) -> type[Backend]:
    """The backend class called ``name``; :class:`BackendError` if unknown or not installed."""
    try:
        module, _, cls = BACKENDS[name].partition(":")
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))} or auto") from None
    try:
        found = getattr(importlib.import_module(f"engine.backends.{module}"), cls)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is not installed ({exc}); install {EXTRAS[name]}") from exc
    assert issubclass(found, Backend) and found.NAME == name, f"{BACKENDS[name]} is not the {name} backend"
    return found


def create_backend(name: str, device: str = "cpu", precision: str = "fp32",
                   options: Mapping[str, Any] | None = None) -> Backend:
    """Backend ``name`` (``auto`` resolved) bound to ``device`` and ``precision`` with ``options``."""
    cls = backend_class(resolve_backend(name, device))
    return cls.create(device, precision, **dict(options or {}))


def installed(name: str) -> bool:
    """Whether backend ``name`` can be imported (its packages are found; nothing is imported)."""
    return all(importlib.util.find_spec(pkg) is not None for pkg in REQUIRES[name])


def available_backends() -> list[str]:
    found = []
    for name in BACKENDS:
        try:
            backend_class(name)
        except BackendError:
            continue
        found.append(name)
    return found


def _gpu_capable(name: str, device: str) -> bool:
    try:
        backend_class(name).check_device(device)
    except BackendError:
        return False
    return True


def resolve_backend(name: str, device: str = "cpu") -> str:
    """``auto`` -> the fastest installed backend for ``device``; other names pass through.

    On the CPU: onnxruntime, then torch, then numpy. On a GPU: torch, then
    onnxruntime (with onnxruntime-gpu's CUDA provider); ``auto`` with a GPU
    device and neither is an error rather than a silent CPU run.
    """
    if name != "auto":
        return name
    device = (device or "cpu").strip().lower()
    cpu = next(n for n in AUTO_CPU if installed(n))
    if device == "cpu":
        return cpu
    wanted = "cuda" if device == "auto" else device
    for candidate in AUTO_GPU:
        if installed(candidate) and _gpu_capable(candidate, wanted):
            return candidate
    if device == "auto":
        return cpu
    raise BackendError(f"device {device!r} needs a GPU backend, and none that sees it is installed; install "
                       "corral's 'torch' extra (a CUDA build of torch) or its 'gpu' extra (onnxruntime-gpu)")
