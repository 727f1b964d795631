"""Custom layers and custom models: registry, entry points, plugins, both backends, the similarity example."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import ModelBuilder, compile, load, save
from engine.custom import (
    LAYER_GROUP,
    MODEL_GROUP,
    CustomLayer,
    CustomModel,
    MissingImplementationError,
    PluginError,
    check_implementations,
    register_layer,
    register_model,
    registered,
    required_implementations,
    unregister,
)
from engine.description import Feature, Metadata, ModelDescription, ShapeSpec
from engine.exceptions import OpError
from engine.graph import Graph, Model

HAVE_TORCH = True
try:
    import torch
except ImportError:  # the numpy half of these tests still runs
    HAVE_TORCH = False
from tests.engine.backend_names import BACKENDS

CALLS: dict[str, int] = {}


class ScaledSwish(CustomLayer):
    """``y = x * sigmoid(beta * x) * gain[c]``: a parameter (beta) and a weight (gain, per channel)."""

    def __init__(self, params: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        super().__init__(params, weights)
        self.beta = float(params["beta"])
        (self.gain,) = weights.values()  # [C]

    def output_shapes(self, input_shapes):
        return [input_shapes[0]]

    def evaluate(self, inputs):
        CALLS["evaluate"] = CALLS.get("evaluate", 0) + 1
        (x,) = inputs
        y = x / (1 + np.exp(-self.beta * x)) * self.gain.reshape(1, -1, 1, 1)
        return [y.astype(np.float32)]


class ScaledSwishTorch(ScaledSwish):
    def evaluate_torch(self, inputs):
        CALLS["evaluate_torch"] = CALLS.get("evaluate_torch", 0) + 1
        (x,) = inputs
        gain = torch.as_tensor(self.gain, device=x.device).reshape(1, -1, 1, 1)
        return [x * torch.sigmoid(self.beta * x) * gain]


class WrongShape(ScaledSwish):
    def output_shapes(self, input_shapes):
        return [(1, 2, 3)]


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    before = registered()
    CALLS.clear()
    yield
    after = registered()
    for name in set(after["layers"]) - set(before["layers"]) | set(after["models"]) - set(before["models"]):
        unregister(name)


def layer_model(class_name: str = "ScaledSwish") -> Model:
    b = ModelBuilder("with-custom-layer")
    x = b.array_input("x", (3, 5, 5))
    y = b.node("Conv", [x, b.weight("w", np.ones((3, 3, 1, 1), np.float32) / 3)])
    y = b.custom_layer(class_name, [y, b.weight("gain", np.array([1.0, 2.0, 0.5], np.float32))], beta=1.5)
    y = b.node("Relu", [b.node("Neg", [y])])
    b.array_output(y, name="y")
    return b.build()


def expected(x: np.ndarray) -> np.ndarray:
    y = np.repeat(x.mean(axis=1, keepdims=True), 3, axis=1)
    y = y / (1 + np.exp(-1.5 * y)) * np.array([1.0, 2.0, 0.5], np.float32).reshape(1, -1, 1, 1)
    return np.maximum(-y, 0)


# ---------------------------------------------------------------- layers
def test_missing_layer_fails_at_compile_naming_the_class_and_the_ways_to_provide_it() -> None:
    model = layer_model("NoSuchLayer")
    assert required_implementations(model) == {"layers": ["NoSuchLayer"], "models": []}
    with pytest.raises(MissingImplementationError) as info:
        compile(model)
    text = str(info.value)
    for part in ("'with-custom-layer'", "'NoSuchLayer'", LAYER_GROUP, "--plugin", "CORRAL_PLUGINS",
                 "never carry code"):
        assert part in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_without_evaluate_torch_runs_evaluate_on_every_backend(backend: str) -> None:
    register_layer(ScaledSwish)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    compiled = compile(layer_model(), backend)
    np.testing.assert_allclose(compiled.run({"x": x})["y"], expected(x), rtol=1e-5, atol=1e-6)
    assert CALLS.get("evaluate", 0) >= 1 and "evaluate_torch" not in CALLS


@pytest.mark.skipif(not HAVE_TORCH, reason="torch backend not installed")
def test_layer_with_evaluate_torch_runs_on_the_device() -> None:
    from engine.backends.torch_backend import fallback_counts

    register_layer(ScaledSwishTorch, name="ScaledSwish")
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32)
    torch_run = compile(layer_model(), "torch")
    got = torch_run.run({"x": x})["y"]
    assert CALLS.get("evaluate_torch", 0) >= 1 and "evaluate" not in CALLS
    assert fallback_counts([s.kernel for s in torch_run.executor.steps]) == {}
    np.testing.assert_allclose(got, compile(layer_model(), "numpy").run({"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_layer_output_shapes_are_enforced() -> None:
    register_layer(WrongShape, name="ScaledSwish")
    with pytest.raises(OpError, match=r"output_shapes says \[\(1, 2, 3\)\]"):
        compile(layer_model()).run({"x": np.zeros((1, 3, 5, 5), np.float32)})


def test_registration_checks_the_contract() -> None:
    class NotALayer:
        pass

    with pytest.raises(PluginError, match="evaluate, output_shapes"):
        register_layer(NotALayer)


# ---------------------------------------------------------------- plugins and entry points
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


PLUGIN_SOURCE = """
    import numpy as np
    from engine.custom import register_layer

    class Halve:
        def __init__(self, params, weights):
            pass
        def output_shapes(self, input_shapes):
            return list(input_shapes)
        def evaluate(self, inputs):
            return [inputs[0] * np.float32(0.5)]

    class Unlisted(Halve):
        pass

    def register():
        register_layer(Halve)
"""


def halve_model(name: str = "Halve") -> Model:
    b = ModelBuilder("halve")
    x = b.array_input("x", (4,))
    b.array_output(b.custom_layer(name, [x]), name="y")
    return b.build()


def test_plugin_modules_register_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "corral_test_plugin_a.py", textwrap.dedent(PLUGIN_SOURCE) + "\nregister()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingImplementationError):
        compile(halve_model())
    compiled = compile(halve_model(), plugins="corral_test_plugin_a")  # the CORRAL_PLUGINS string form
    np.testing.assert_array_equal(compiled.run({"x": np.full((1, 4), 3, np.float32)})["y"], np.full((1, 4), 1.5))
    sys.modules.pop("corral_test_plugin_a", None)


def test_a_plugin_that_fails_to_import_is_named() -> None:
    with pytest.raises(PluginError, match="'corral_no_such_plugin_module'.*--plugin / CORRAL_PLUGINS"):
        compile(halve_model(), plugins=["corral_no_such_plugin_module"])


def test_entry_points_provide_only_the_names_they_declare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "corral_test_plugin_b.py", PLUGIN_SOURCE)
    _write(tmp_path / "corral_test_plugin_b-1.0.dist-info" / "METADATA",
           "Metadata-Version: 2.1\nName: corral-test-plugin-b\nVersion: 1.0\n")
    _write(tmp_path / "corral_test_plugin_b-1.0.dist-info" / "entry_points.txt",
           f"[{LAYER_GROUP}]\nHalve = corral_test_plugin_b:Halve\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    compiled = compile(halve_model())
    np.testing.assert_array_equal(compiled.run({"x": np.ones((2, 4), np.float32)})["y"], np.full((2, 4), 0.5))
    # the module defines Unlisted too, but no entry point names it: it is never used
    with pytest.raises(MissingImplementationError, match="'Unlisted'"):
        compile(halve_model("Unlisted"))
    sys.modules.pop("corral_test_plugin_b", None)


# ---------------------------------------------------------------- custom models
def custom_model(class_name: str) -> Model:
    desc = ModelDescription(
        inputs=[Feature(name="x", kind="array", shape=ShapeSpec((3,)))],
        outputs=[Feature(name="total", kind="array", shape=ShapeSpec(()))],
        metadata=Metadata(name="summer"), custom_model=class_name)
    return Model(description=desc, graph=Graph(initializers={"offset": np.array([10.0], np.float32)}))


class Summer(CustomModel):
    def predict(self, item):
        CALLS["predict"] = CALLS.get("predict", 0) + 1
        return {"total": np.float32(item["x"].sum() + self.weights["offset"][0])}


class BatchSummer(Summer):
    def predict_batch(self, items):
        CALLS["predict_batch"] = CALLS.get("predict_batch", 0) + 1
        totals = np.stack([i["x"] for i in items]).sum(axis=1) + self.weights["offset"][0]
        return [{"total": t} for t in totals.astype(np.float32)]


def test_missing_custom_model_names_the_class_and_the_model_group() -> None:
    with pytest.raises(MissingImplementationError, match=f"'NoSuchModel'.*{MODEL_GROUP}.*--plugin"):
        check_implementations(custom_model("NoSuchModel"))


@pytest.mark.parametrize("cls, batch_calls, predict_calls", [(Summer, 0, 4), (BatchSummer, 1, 0)])
def test_custom_model_predict_batch_uses_the_class_or_loops(cls: type, batch_calls: int, predict_calls: int) -> None:
    register_model(cls, name="Summer")
    compiled = compile(custom_model("Summer"))
    items = [{"x": np.array([i, i, i], np.float32)} for i in range(4)]
    results = compiled.predict_batch(items)
    assert [float(r["total"]) for r in results] == [10.0, 13.0, 16.0, 19.0]
    assert CALLS.get("predict_batch", 0) == batch_calls and CALLS.get("predict", 0) == predict_calls
    np.testing.assert_array_equal(compiled.run({"x": np.ones((2, 3), np.float32)})["total"], [13.0, 13.0])


# ---------------------------------------------------------------- the similarity example
@pytest.mark.parametrize("backend", BACKENDS)
def test_similarity_example_end_to_end(backend: str, photo_paths: list[Path], tmp_path: Path) -> None:
    from engine.plugins.similarity import CLASS_NAME, build_similarity_model

    model = build_similarity_model(photo_paths, [p.stem for p in photo_paths], k=3)
    path = tmp_path / "similar.corral"
    save(model, path)
    loaded = load(path)
    assert required_implementations(loaded) == {"layers": [], "models": [CLASS_NAME]}
    unregister(CLASS_NAME)
    sys.modules.pop("engine.plugins.similarity", None)  # so that the plugin list imports (registers) it afresh
    compiled = compile(loaded, backend, plugins=["engine.plugins.similarity"])
    assert compiled.stats["batched_natively"] is True
    items = [{"image": str(p)} for p in photo_paths]
    results = compiled.predict_batch(items)
    for i, result in enumerate(results):
        assert result["neighbors"].dtype == np.int64 and result["neighbors"].shape == (3,)
        assert result["neighbors"][0] == i                 # every indexed photo finds itself first
        assert result["scores"][0] == pytest.approx(1.0, abs=1e-4)
        assert np.all(np.diff(result["scores"]) <= 0)        # best first
        single = compiled.predict(items[i])
        np.testing.assert_array_equal(single["neighbors"], result["neighbors"])
        np.testing.assert_allclose(single["scores"], result["scores"], atol=1e-5)
    # a crop of a photo still ranks that photo first
    from PIL import Image

    crop = Image.open(photo_paths[0]).convert("RGB")
    w, h = crop.size
    crop = crop.crop((w // 10, h // 10, w - w // 10, h - h // 10))
    labels = loaded.description.class_labels
    assert labels[int(compiled.predict({"image": crop})["neighbors"][0])] == photo_paths[0].stem


def test_corral_declares_the_example_as_an_entry_point() -> None:
    import importlib
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    value = pyproject["project"]["entry-points"][MODEL_GROUP]["ImageSimilarity"]
    module, _, attr = value.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    assert callable(cls.predict) and callable(cls.predict_batch)
