"""The backend contract: classes looked up by name, ``auto`` in a stated order, one way to bind and run."""

from __future__ import annotations

import numpy as np
import pytest

from engine import ModelBuilder, backends, compile
from engine.backends import BACKENDS, backend_class, create_backend, resolve_backend
from engine.backends.base import Backend
from engine.exceptions import BackendError
from tests.engine.backend_names import BACKENDS as INSTALLED


def identity_model():
    b = ModelBuilder("identity")
    x = b.array_input("x", (3,))
    b.array_output(b.node("Identity", [x]), name="y")
    return b.build()


@pytest.mark.parametrize("name", INSTALLED)
def test_every_backend_is_a_backend_class_bound_by_create(name: str) -> None:
    cls = backend_class(name)
    assert issubclass(cls, Backend) and cls.NAME == name
    bound = create_backend(name, "cpu")
    assert isinstance(bound, cls) and bound.device == "cpu" and bound.precision == "fp32"


def test_unknown_and_missing_backends_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="unknown backend 'tensorflow'; choose one of numpy, onnxruntime, torch"):
        backend_class("tensorflow")
    monkeypatch.setitem(BACKENDS, "numpy", "no_such_module:NumpyBackend")
    backend_class.cache_clear()
    try:
        with pytest.raises(BackendError, match="backend 'numpy' is not installed"):
            backend_class("numpy")
    finally:
        backend_class.cache_clear()


@pytest.mark.parametrize("missing, expected", [((), "onnxruntime"), (("onnxruntime",), "torch"),
                                               (("onnxruntime", "torch"), "numpy")])
def test_auto_on_the_cpu_takes_onnxruntime_then_torch_then_numpy(monkeypatch: pytest.MonkeyPatch, missing,
                                                                 expected: str) -> None:
    monkeypatch.setattr(backends, "installed", lambda name: name not in missing)
    assert resolve_backend("auto", "cpu") == expected
    assert resolve_backend("numpy", "cpu") == "numpy"


def test_auto_on_a_gpu_without_a_gpu_backend_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "_gpu_capable", lambda name, device: False)
    with pytest.raises(BackendError, match="needs a GPU backend"):
        resolve_backend("auto", "cuda:0")
    assert resolve_backend("auto", "auto") == resolve_backend("auto", "cpu")  # no GPU: the CPU's choice


def test_compile_defaults_to_auto() -> None:
    assert compile(identity_model()).backend == resolve_backend("auto", "cpu")


@pytest.mark.parametrize("name", INSTALLED)
def test_outputs_never_share_memory_with_the_callers_feed(name: str) -> None:
    """A one-node graph hands back a copy, on every path (keep_on_device included) and every backend."""
    compiled = compile(identity_model(), name)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for keep in (False, True):
        out = compiled.run({"x": x}, keep_on_device=keep)["y"]
        host = compiled.backend_context.to_host(out) if keep and compiled.backend_context.DEVICE_VALUES else out
        host = np.asarray(host)
        assert not np.shares_memory(host, x)
        assert host.flags.writeable
        np.testing.assert_array_equal(host, x)
