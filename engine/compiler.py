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
from pathlib import Path
from typing import Any

from engine.backends import create_backend
from engine.backends.base import Backend
from engine.compiled_cache import CompiledEntry, entry_path, read_entry, write_entry
from engine.compiled_model import CompiledModel
from engine.custom import build_layer_kernel, check_implementations, compile_custom_model
from engine.description import ModelDescription
from engine.exceptions import CompiledCacheError, EngineError
from engine.format import digest as model_digest
from engine.graph import Model
from engine.passes import optimize
from engine.runtime import MAX_PLANS, Executor, Plan

log = logging.getLogger(__name__)


def compile(model: Model, backend: str = "auto", device: str = "cpu",
            cache_dir: str | os.PathLike[str] | None = None, *, plan_ahead: bool = True,
            max_plans: int = MAX_PLANS, skip_passes: Sequence[str] = (), precision: str = "fp32",
            plugins: str | Sequence[str] | None = None,
            backend_options: Mapping[str, Any] | None = None) -> CompiledModel:
    """Compile ``model`` for ``backend`` on ``device``; the caller's model is left untouched.

    ``backend="auto"`` (the default) picks the fastest installed backend for
    the device: onnxruntime, then torch, then numpy on the CPU (see
    :func:`engine.backends.resolve_backend`). ``cache_dir`` (e.g.
    :func:`engine.compiled_cache.default_cache_dir()`) enables the on-disk
    cache: an entry for this package, backend, device and engine version is
    loaded instead of compiling; a stale or corrupt one is logged and
    rebuilt. ``plan_ahead`` runs each enumerated input shape once (on zeros)
    so the first real prediction finds its plan ready. ``skip_passes`` names
    graph passes to leave out (see :data:`engine.passes.PASS_NAMES`), for
    debugging and measurement. ``precision`` is ``fp32`` or, on a CUDA
    device (torch, onnxruntime), ``fp16``. ``plugins`` lists modules that
    register custom layer/model classes (:mod:`engine.custom`).
    ``backend_options`` are the backend's own knobs (its ``OPTIONS``, e.g.
    torch's ``channels_last`` or onnxruntime's ``lanes``); they are part of
    the cache key, and a backend without such options refuses them.
    """
    given = {k: v for k, v in (backend_options or {}).items() if v is not None}
    bound = create_backend(backend, device, precision, given)
    device = bound.device
    model.validate()
    started = time.perf_counter()
    digest = model_digest(model)
    check_implementations(model, plugins)
    if model.description.custom_model:
        return compile_custom_model(model, bound.NAME, device, digest, plugins)
    skip = sorted(set(skip_passes) | set(bound.SKIP_PASSES))
    options = ",".join(skip) + (f";precision={precision}" if precision != "fp32" else "")
    tag = bound.cache_tag()
    options += "".join(f";{k}={given[k]}" for k in sorted(given)) + (f";{tag}" if tag else "")
    path = entry_path(cache_dir, digest, bound.NAME, device, options) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            entry = read_entry(path, digest, bound.NAME, device, options)
            try:
                compiled = _assemble(entry, bound, max_plans, from_cache=True)
            except EngineError as exc:  # e.g. an attribute a kernel rejects
                raise CompiledCacheError(f"compiled model {path}: corrupt entry ({exc})") from None
        except CompiledCacheError as exc:
            log.warning("%s; recompiling %s", exc, model.name)
        else:
            compiled.stats["load_seconds"] = time.perf_counter() - started
            compiled.load_tuning(tuning_path(path))
            return compiled

    ctx = optimize(model, skip=skip)
    stats: dict[str, Any] = dict(ctx.stats)
    entry = CompiledEntry(digest=digest, backend=bound.NAME, device=device, options=options,
                          description=model.description, nodes=ctx.nodes, constants=ctx.constants, stats=stats)
    compiled = _assemble(entry, bound, max_plans, from_cache=False)
    if plan_ahead:
        compiled.stats["plans_ahead"] = compiled.plan_ahead()
    compiled.stats["compile_seconds"] = time.perf_counter() - started
    if path is not None:
        compiled.load_tuning(tuning_path(path))
        entry.plans = [p.to_json() for p in compiled.executor.plans.values()]
        entry.stats = {k: v for k, v in compiled.stats.items() if isinstance(v, (int, float, str, bool))}
        try:
            write_entry(path, entry)
        except OSError as exc:
            log.warning("%s: cannot write the compiled-model cache entry %s (%s); continuing without it",
                        model.name, path, exc)
    return compiled


def tuning_path(entry: Path) -> Path:
    """Where the run tuner's decisions for a compiled-cache entry are kept: beside it."""
    return entry.with_name(f"{entry.stem}.tuning.json")


def _assemble(entry: CompiledEntry, bound: Backend, max_plans: int, from_cache: bool) -> CompiledModel:
    """The backend's kernels for the entry's graph (pre-packed where it can), wrapped in a CompiledModel.

    Artifacts the backend makes while lowering (onnxruntime's optimized
    models) are added to ``entry``, so that writing it keeps them.
    """
    desc: ModelDescription = entry.description
    outputs = [f.name for f in desc.outputs]
    lowered = bound.lower(entry.nodes, entry.constants, desc.inputs, outputs,
                          lambda node: build_layer_kernel(node, entry.constants, bound), entry.artifacts)
    for key, artifact in lowered.artifacts.items():
        entry.artifacts.setdefault(key, artifact)
    hooks: dict[str, Any] = {"to_device": bound.to_device, "to_host": bound.to_host} if bound.DEVICE_VALUES else {}
    executor = Executor(lowered.nodes, lowered.kernels, {k: entry.constants[k] for k in lowered.constants},
                        outputs, max_plans=max_plans, run_context=bound.run_context, **hooks)
    # Pack from the executor's own weight objects: kernels may key their packed
    # form on the identity of the array they are later called with.
    prepacked = sum(bool(bound.prepack(node, kernel, executor.constants))
                    for node, kernel in zip(lowered.nodes, lowered.kernels))
    for data in entry.plans:
        try:
            executor.add_plan(Plan.from_json(data))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: ignoring an unreadable stored plan (%s)", desc.metadata.name or "model", exc)
    stats = dict(entry.stats)
    stats["weights_prepacked"] = prepacked
    compiled = CompiledModel(desc, executor, backend=bound.NAME, device=entry.device, digest=entry.digest,
                             from_cache=from_cache, stats=stats)
    compiled.backend_context = bound  # the bound backend (engine.pipeline and predict_batch read it)
    return compiled
