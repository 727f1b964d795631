"""``compile``: turn a model into a :class:`CompiledModel` for one backend and device.

Steps: validate the model; optimize a copy of its graph (weights dequantized
to float, constants folded, BatchNormalization folded into Conv,
mean/variance normalization fused, Relu/Sigmoid fused into their producer,
dead nodes dropped — see :mod:`engine.passes`); build one kernel per node and
let the backend pre-pack weights; plan each enumerated input shape ahead of
time. With ``cache_dir`` the result is stored on disk and later compiles of
the same package for the same backend and device load it instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from engine.backends import backend_module, resolve_backend
from engine.compiled_cache import CompiledEntry, entry_path, read_entry, write_entry
from engine.custom import build_layer_kernel, check_implementations, compile_custom_model
from engine.description import ModelDescription
from engine.exceptions import BackendError, CompiledCacheError, EngineError
from engine.format import digest as model_digest
from engine.graph import CUSTOM_DOMAIN, Model, Node
from engine.passes import optimize
from engine.runtime import MAX_PLANS, CompiledModel, Executor, Plan

log = logging.getLogger(__name__)


def compile(model: Model, backend: str = "numpy", device: str = "cpu",
            cache_dir: str | os.PathLike[str] | None = None, *, plan_ahead: bool = True,
            max_plans: int = MAX_PLANS, skip_passes: Sequence[str] = (), precision: str = "fp32",
            plugins: str | Sequence[str] | None = None,
            backend_options: Mapping[str, Any] | None = None) -> CompiledModel:
    """Compile ``model`` for ``backend`` on ``device``; the caller's model is left untouched.

    ``cache_dir`` (e.g. :func:`engine.compiled_cache.default_cache_dir()`)
    enables the on-disk cache: an entry for this package, backend, device and
    engine version is loaded instead of compiling; a stale or corrupt one is
    logged and rebuilt. ``plan_ahead`` runs each enumerated input shape once
    (on zeros) so the first real prediction finds its plan ready.
    ``skip_passes`` names graph passes to leave out (see
    :data:`engine.passes.PASS_NAMES`), for debugging and measurement.
    ``backend="auto"`` picks torch when installed (see
    :func:`engine.backends.resolve_backend`); ``precision`` is ``fp32`` or,
    on the torch backend with a CUDA device, ``fp16``. ``plugins`` lists
    modules that register custom layer/model classes (:mod:`engine.custom`).
    ``backend_options`` are the backend's own knobs, passed to its
    ``context`` (e.g. the torch backend's ``channels_last``, see
    :data:`engine.backends.torch_backend.OPTIONS`); they are part of the
    cache key, and a backend without such options refuses them.
    """
    be = backend_module(resolve_backend(backend, device))
    device = be.check_device(device)
    model.validate()
    started = time.perf_counter()
    digest = model_digest(model)
    check_implementations(model, plugins)
    if model.description.custom_model:
        return compile_custom_model(model, be.NAME, device, digest, plugins)
    given = {k: v for k, v in (backend_options or {}).items() if v is not None}
    kit = bind_backend(be, device, precision, given)
    options = ",".join(sorted(set(skip_passes))) + (f";precision={precision}" if precision != "fp32" else "")
    options += "".join(f";{k}={given[k]}" for k in sorted(given))
    path = entry_path(cache_dir, digest, be.NAME, device, options) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            entry = read_entry(path, digest, be.NAME, device, options)
            try:
                compiled = _assemble(entry, kit, max_plans, from_cache=True)
            except EngineError as exc:  # e.g. an attribute a kernel rejects
                raise CompiledCacheError(f"compiled model {path}: corrupt entry ({exc})") from None
        except CompiledCacheError as exc:
            log.warning("%s; recompiling %s", exc, model.name)
        else:
            compiled.stats["load_seconds"] = time.perf_counter() - started
            return compiled

    ctx = optimize(model, skip=skip_passes)
    stats: dict[str, Any] = dict(ctx.stats)
    entry = CompiledEntry(digest=digest, backend=be.NAME, device=device, options=options,
                          description=model.description, nodes=ctx.nodes, constants=ctx.constants, stats=stats)
    compiled = _assemble(entry, kit, max_plans, from_cache=False)
    if plan_ahead:
        compiled.stats["plans_ahead"] = compiled.plan_ahead()
    compiled.stats["compile_seconds"] = time.perf_counter() - started
    if path is not None:
        entry.plans = [p.to_json() for p in compiled.executor.plans.values()]
        entry.stats = {k: v for k, v in compiled.stats.items() if isinstance(v, (int, float, str, bool))}
        try:
            write_entry(path, entry)
        except OSError as exc:
            log.warning("%s: cannot write the compiled-model cache entry %s (%s); continuing without it",
                        model.name, path, exc)
    return compiled


def _assemble(entry: CompiledEntry, be: Any, max_plans: int, from_cache: bool) -> CompiledModel:
    """Kernels for the entry's nodes (pre-packed where the backend can), wrapped in a CompiledModel."""
    kernels = [build_layer_kernel(node, entry.constants, be) if node.domain == CUSTOM_DOMAIN
               else be.build_kernel(node) for node in entry.nodes]
    desc: ModelDescription = entry.description
    executor = Executor(entry.nodes, kernels, entry.constants, [f.name for f in desc.outputs], max_plans=max_plans,
                        to_device=getattr(be, "to_device", None), to_host=getattr(be, "to_host", None),
                        run_context=getattr(be, "run_context", None))
    # Pack from the executor's own weight objects: kernels may key their packed
    # form on the identity of the array they are later called with.
    prepacked = _prepack(be, entry.nodes, kernels, executor.constants)
    for data in entry.plans:
        try:
            executor.add_plan(Plan.from_json(data))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: ignoring an unreadable stored plan (%s)", desc.metadata.name or "model", exc)
    stats = dict(entry.stats)
    stats["weights_prepacked"] = prepacked
    compiled = CompiledModel(desc, executor, backend=be.NAME, device=entry.device, digest=entry.digest,
                             from_cache=from_cache, stats=stats)
    compiled.backend_context = be  # the bound backend (engine.pipeline reads its device and streams)
    return compiled


def bind_backend(be: ModuleType, device: str, precision: str, options: Mapping[str, Any] | None = None) -> Any:
    """The backend bound to ``device``, ``precision`` and its ``options`` (its ``context``), or the module itself.

    A backend without ``context`` (numpy) computes in float32 only and takes no options.
    """
    bind = getattr(be, "context", None)
    if bind is not None:
        return bind(device, precision, **dict(options or {}))
    if options:
        raise BackendError(f"the {be.NAME} backend takes no backend options (got {', '.join(sorted(options))}); "
                           "they are for --backend torch")
    if precision != "fp32":
        raise BackendError(f"the {be.NAME} backend computes in float32 only, not {precision!r}; "
                           "use --backend torch with a CUDA device for fp16")
    return be


def _prepack(be: ModuleType, nodes: list[Node], kernels: list[Any], constants: dict[str, Any]) -> int:
    """Give the backend's optional ``prepack(node, kernel, weights)`` hook each kernel; count the takers.

    Pre-packed forms are derived from the stored weights when a model is
    assembled, so they never go into the on-disk cache.
    """
    hook = getattr(be, "prepack", None)
    if hook is None:
        return 0
    return sum(bool(hook(node, kernel, constants)) for node, kernel in zip(nodes, kernels))
