"""Custom layers and custom models: implementations registered by name on the worker, never in model files.

A model names what it needs — a node in the ``custom`` domain names a layer
class (its ``op_type``; its attributes are the layer's parameters and its
inputs that are weights are the layer's weights); ``description.custom_model``
names a model class that replaces the graph. The worker provides those
classes in one of two ways, and only names provided so are ever used:

* an installed package declares them as entry points, in the group
  ``corral.layers`` or ``corral.models``, the entry point name being the
  class name the model uses::

      [project.entry-points."corral.layers"]
      Swish = "mypkg.layers:Swish"

* modules listed explicitly (``compile(..., plugins=[...])``; the CLI's
  ``--plugin MODULE`` and ``CORRAL_PLUGINS=MODULE,...`` pass them) register
  classes on import with :func:`register_layer` / :func:`register_model`.

The contract is Core ML's. A layer class is built once per node as
``cls(params, weights)`` and provides ``output_shapes(input_shapes)`` and
``evaluate(inputs)`` on numpy arrays (the node's non-weight inputs), and
optionally ``evaluate_torch(inputs)`` on tensors, which the torch backend
uses on the device; without it the layer runs on the host between device
segments. A model class is built once as ``cls(description, weights,
backend=..., device=...)`` and provides ``predict(item)`` and optionally
``predict_batch(items)`` (otherwise the engine loops over ``predict``).

Compiling a model whose implementation is missing fails with
:class:`MissingImplementationError`, naming the class and these ways to
provide it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import metadata
from typing import Any

import numpy as np

from engine.description import ModelDescription
from engine.exceptions import EngineError, ModelFormatError, OpError
from engine.graph import CUSTOM_DOMAIN, Model, Node

LAYER_GROUP = "corral.layers"
MODEL_GROUP = "corral.models"
PLUGINS_ENV = "CORRAL_PLUGINS"


class MissingImplementationError(ModelFormatError):
    """A model needs a custom layer or model class that is not registered on this worker."""


class PluginError(EngineError):
    """A plugin module or entry point could not be loaded."""


class CustomLayer:
    """Optional base class for custom layers (any class with the same methods will do)."""

    def __init__(self, params: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        self.params = dict(params)
        self.weights = dict(weights)

    def output_shapes(self, input_shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def evaluate(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class CustomModel:
    """Optional base class for custom models (any class with the same methods will do)."""

    def __init__(self, description: ModelDescription, weights: Mapping[str, np.ndarray], *,
                 backend: str = "numpy", device: str = "cpu") -> None:
        self.description = description
        self.weights = dict(weights)
        self.backend = backend
        self.device = device

    def predict(self, item: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


# ------------------------------------------------------------------ registry
_LOCK = threading.Lock()
_LAYERS: dict[str, type] = {}
_MODELS: dict[str, type] = {}
_GROUPS = {LAYER_GROUP: ("custom layer", _LAYERS, "register_layer", ("evaluate", "output_shapes")),
           MODEL_GROUP: ("custom model", _MODELS, "register_model", ("predict",))}


def _register(group: str, cls: type, name: str | None) -> type:
    kind, table, _, methods = _GROUPS[group]
    missing = [m for m in methods if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        raise PluginError(f"{kind} {name or getattr(cls, '__name__', cls)!r}: {cls!r} is not a class with "
                          f"{', '.join(methods)} (missing: {', '.join(missing) or 'a class'})")
    with _LOCK:
        table[name or cls.__name__] = cls
    return cls


def register_layer(cls: type | None = None, *, name: str | None = None) -> Any:
    """Register a custom layer class under ``name`` (default: the class name); usable as a decorator."""
    if cls is None:
        return lambda c: _register(LAYER_GROUP, c, name)
    return _register(LAYER_GROUP, cls, name)


def register_model(cls: type | None = None, *, name: str | None = None) -> Any:
    """Register a custom model class under ``name`` (default: the class name); usable as a decorator."""
    if cls is None:
        return lambda c: _register(MODEL_GROUP, c, name)
    return _register(MODEL_GROUP, cls, name)


def unregister(name: str) -> None:
    """Forget a layer or model class (tests; a worker that drops a plugin)."""
    with _LOCK:
        _LAYERS.pop(name, None)
        _MODELS.pop(name, None)


def registered() -> dict[str, list[str]]:
    with _LOCK:
        return {"layers": sorted(_LAYERS), "models": sorted(_MODELS)}


def parse_plugins(value: str | Sequence[str] | None) -> list[str]:
    """``"a.b, c"`` or ``["a.b", "c"]`` -> module names (the CORRAL_PLUGINS / --plugin forms)."""
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    return [p.strip() for p in items if p.strip()]


def load_plugins(plugins: str | Sequence[str] | None) -> None:
    """Import each listed module; importing it registers its classes."""
    for module in parse_plugins(plugins):
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PluginError(f"plugin module {module!r} could not be imported ({type(exc).__name__}: {exc}); "
                              f"check the --plugin / {PLUGINS_ENV} list and that the module is installed") from exc


def _from_entry_point(group: str, name: str) -> type | None:
    """Load the entry point named exactly ``name`` in ``group`` (only that one), registering its class."""
    for ep in metadata.entry_points(group=group, name=name):
        try:
            cls = ep.load()
        except Exception as exc:
            raise PluginError(f"entry point {name!r} in group {group!r} ({ep.value}) could not be loaded "
                              f"({type(exc).__name__}: {exc})") from exc
        return _register(group, cls, name)
    return None


def _lookup(group: str, name: str, plugins: str | Sequence[str] | None) -> type | None:
    table = _GROUPS[group][1]
    if name not in table:
        load_plugins(plugins)
    if name not in table:
        _from_entry_point(group, name)
    return table.get(name)


def missing_message(group: str, names: Sequence[str], where: str) -> str:
    kind, _, register, _ = _GROUPS[group]
    listed = ", ".join(repr(n) for n in names)
    return (f"{where} needs the {kind} implementation{'s' if len(names) > 1 else ''} {listed}, not registered "
            f"on this worker. Provide {'them' if len(names) > 1 else 'it'} by installing a package that "
            f"declares it in the {group!r} entry point group ({names[0]} = \"package.module:{names[0]}\"), or "
            f"by naming a module that registers it with engine.custom.{register} via --plugin MODULE or "
            f"{PLUGINS_ENV}=MODULE[,MODULE...]. Model files never carry code.")


def layer_class(name: str, plugins: str | Sequence[str] | None = None, where: str = "model") -> type:
    cls = _lookup(LAYER_GROUP, name, plugins)
    if cls is None:
        raise MissingImplementationError(missing_message(LAYER_GROUP, [name], where))
    return cls


def model_class(name: str, plugins: str | Sequence[str] | None = None, where: str = "model") -> type:
    cls = _lookup(MODEL_GROUP, name, plugins)
    if cls is None:
        raise MissingImplementationError(missing_message(MODEL_GROUP, [name], where))
    return cls


def required_implementations(model: Model) -> dict[str, list[str]]:
    """What ``model`` needs registered: ``{"layers": [...], "models": [...]}`` (for `corral model inspect`)."""
    desc = model.description
    return {"layers": model.custom_layers(), "models": [desc.custom_model] if desc.custom_model else []}


def check_implementations(model: Model, plugins: str | Sequence[str] | None = None) -> None:
    """Raise :class:`MissingImplementationError` naming every class ``model`` needs but this worker lacks."""
    where = f"model {model.name!r}"
    need = required_implementations(model)
    load_plugins(plugins)
    for group, names in ((MODEL_GROUP, need["models"]), (LAYER_GROUP, need["layers"])):
        missing = [n for n in names if _lookup(group, n, None) is None]
        if missing:
            raise MissingImplementationError(missing_message(group, missing, where))


# ------------------------------------------------------------------ layers at run time
class CustomLayerKernel:
    """One custom-layer node as the executor calls it: weights bound at build, data inputs at run.

    Results are checked against the layer's own ``output_shapes`` so that a
    layer that disagrees with itself fails loudly, naming its node.
    """

    def __init__(self, node: Node, layer: Any, weight_positions: set[int]) -> None:
        self.node = node
        self.name = node.label
        self.op_type = node.op_type
        self.layer = layer
        self.weight_positions = weight_positions

    def data_inputs(self, inputs: Sequence[Any]) -> list[Any]:
        return [v for i, v in enumerate(inputs) if i not in self.weight_positions]

    def check_outputs(self, outputs: Any, inputs: Sequence[Any] | None = None) -> list[Any]:
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if len(outs) != len(self.node.outputs):
            raise self._fail(f"evaluate returned {len(outs)} outputs; the node has {len(self.node.outputs)}")
        if inputs is not None:
            expected = [tuple(s) for s in self.layer.output_shapes([tuple(np.shape(v)) for v in inputs])]
            got = [tuple(np.shape(o)) for o in outs]
            if expected != got:
                raise self._fail(f"evaluate returned shapes {got}, but output_shapes says {expected}")
        return outs

    def _fail(self, message: str) -> OpError:
        return OpError(f"custom:{self.op_type}", self.name, message)

    def __call__(self, inputs: Sequence[Any]) -> list[np.ndarray]:
        data = [None if v is None else np.asarray(v) for v in self.data_inputs(inputs)]
        try:
            outs = self.layer.evaluate(data)
        except EngineError:
            raise
        except Exception as exc:
            shapes = [None if v is None else list(v.shape) for v in data]
            raise OpError(f"custom:{self.op_type}", self.name, f"{type(exc).__name__}: {exc}", shapes) from exc
        return [np.asarray(o) for o in self.check_outputs(outs, data)]


def build_layer_kernel(node: Node, constants: Mapping[str, np.ndarray], backend: Any,
                       plugins: str | Sequence[str] | None = None) -> Any:
    """The kernel for a ``custom``-domain node on ``backend`` (a bound :class:`engine.backends.base.Backend`).

    The node's attributes are the layer's parameters and its inputs that
    are weights (``constants``) its weights, keyed by name.
    """
    assert node.domain == CUSTOM_DOMAIN
    cls = layer_class(node.op_type, plugins, f"node {node.label!r}")
    positions = {i for i, n in enumerate(node.inputs) if n and n in constants}
    weights = {node.inputs[i]: np.asarray(constants[node.inputs[i]]) for i in sorted(positions)}
    params = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in node.attrs.items()}
    try:
        layer = cls(params, weights)
    except Exception as exc:
        raise OpError(f"custom:{node.op_type}", node.label,
                      f"could not build {cls.__module__}.{cls.__qualname__} ({type(exc).__name__}: {exc})") from exc
    kernel = CustomLayerKernel(node, layer, positions)
    return backend.wrap_custom(node, kernel, kernel if callable(getattr(layer, "evaluate_torch", None)) else None)


# ------------------------------------------------------------------ custom models
@cache
def _compiled_model_class() -> type:
    from engine.compiled_model import CompiledModel
    from engine.runtime import Executor

    class CustomCompiledModel(CompiledModel):
        """A compiled custom model: ``predict`` / ``predict_batch`` go to the registered class.

        Items are prepared as for any model (defaults filled, images decoded
        and mapped to tensors per the description). ``predict_batch`` calls
        the class's own ``predict_batch`` when it has one, else loops over
        ``predict``; either way one result per item, in order.
        """

        def __init__(self, description: ModelDescription, impl: Any, backend: str, device: str,
                     digest: str, stats: Mapping[str, Any]) -> None:
            super().__init__(description, Executor([], [], {}, []), backend=backend, device=device,
                             digest=digest, stats=stats)
            self.impl = impl

        def plan_ahead(self) -> int:
            return 0

        def prepare_item(self, item: Mapping[str, Any]) -> dict[str, np.ndarray]:
            if not self.description.inputs:  # the class defines its own inputs
                return {k: v for k, v in item.items()}
            return super().prepare_item(item)

        def predict_batch(self, items: Sequence[Mapping[str, Any]],
                          max_batch: int | None = None) -> list[dict[str, np.ndarray]]:
            prepared = [self.prepare_item(item) for item in items]
            step = max_batch if max_batch and max_batch > 0 else max(len(prepared), 1)
            batch_fn = getattr(self.impl, "predict_batch", None)
            results: list[dict[str, np.ndarray]] = []
            for start in range(0, len(prepared), step):
                chunk = prepared[start:start + step]
                try:
                    outs = list(batch_fn(chunk)) if callable(batch_fn) else [self.impl.predict(i) for i in chunk]
                except EngineError:
                    raise
                except Exception as exc:
                    raise EngineError(f"{self.name}: custom model {self.description.custom_model} failed "
                                      f"({type(exc).__name__}: {exc})") from exc
                if len(outs) != len(chunk):
                    raise EngineError(f"{self.name}: custom model {self.description.custom_model} returned "
                                      f"{len(outs)} results for {len(chunk)} items")
                results += [{k: np.asarray(v) for k, v in out.items()} for out in outs]
            return results

        def run(self, feeds: Mapping[str, Any], keep_on_device: bool = False) -> dict[str, np.ndarray]:
            """Graph-style call: batched inputs are split into items, results stacked again.

            The class returns host arrays, so ``keep_on_device`` changes nothing.
            """
            batched = [f for f in self.description.inputs if f.batched and f.name in feeds]
            count = len(feeds[batched[0].name]) if batched else 1
            items = [{k: (v[i] if any(f.name == k for f in batched) else v) for k, v in feeds.items()}
                     for i in range(count)]
            outs = self.predict_batch(items)
            return {name: np.stack([o[name] for o in outs]) for name in (outs[0] if outs else {})}

    return CustomCompiledModel


def compile_custom_model(model: Model, backend: str, device: str, digest: str = "",
                         plugins: str | Sequence[str] | None = None) -> Any:
    """Build the registered class for ``model.description.custom_model`` with the model's weights."""
    from engine.tensors import to_float_array

    desc = model.description
    cls = model_class(desc.custom_model, plugins, f"model {model.name!r}")
    weights = {name: to_float_array(w) for name, w in model.graph.initializers.items()}
    try:
        impl = cls(desc, weights, backend=backend, device=device)
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(f"model {model.name!r}: could not build custom model {cls.__module__}.{cls.__qualname__} "
                          f"({type(exc).__name__}: {exc})") from exc
    stats = {"custom_model": desc.custom_model, "batched_natively": callable(getattr(impl, "predict_batch", None))}
    return _compiled_model_class()(desc, impl, backend, device, digest, stats)
