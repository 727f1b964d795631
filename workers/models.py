"""Where a worker's models live and run: in the worker process, or in its compute process.

The batcher needs two things of a model: its description (to decode images
into its input tensors, and to write its outputs), and a batch prediction.
:class:`Models` is that contract. :class:`LocalModels` keeps compiled models
in this process's :class:`~workers.model_cache.ModelCache`;
:class:`workers.compute.ComputeProcess` keeps them in a child process and
runs batches there (``corral worker --compute process``, the default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from engine.compiled_model import CompiledModel, RunObserver
from engine.description import ModelDescription
from engine.memory import release_freed_memory
from workers import metrics
from workers.model_cache import ModelCache


class ModelKey(NamedTuple):
    """Which compiled model a job needs on this worker: one per key is kept warm."""

    ref: str  # pinned store reference, or a package path
    backend: str
    device: str
    precision: str


Result = dict[str, np.ndarray] | Exception  # one item's outputs, or why it has none


class Models(Protocol):
    # Batches the models take at once (predict_batch from as many threads): with 2, the next batch waits in
    # the compute process, ready to start the moment the one before finishes.
    batches_in_flight: int

    def description(self, key: ModelKey) -> ModelDescription:
        """The model's description, loading the model on first use (raises the load's error)."""

    def predict_batch(self, key: ModelKey, items: Sequence[Mapping[str, Any]]) -> list[Result]:
        """One result per item; an item that cannot be predicted gets its exception, the others their outputs."""

    def warm(self) -> list[ModelKey]:
        """Keys of the models held in memory."""

    @property
    def used_bytes(self) -> int:
        """Bytes of the models held in memory."""

    def close(self) -> None:
        """Release what the models hold (a child process, shared memory)."""


def load_model(fetcher: Any, key: ModelKey) -> Any:
    """The compiled model for ``(store reference or package path, backend, device, precision)``: store
    references through the fetcher (download, verify, compile, disk caches), package paths compiled through
    the same compiled-model cache."""
    from store.fetch import is_store_ref

    ref, backend, device, precision = key
    if is_store_ref(ref):
        return fetcher.loader(key)
    return fetcher.load_path(ref, device=device, backend=backend, precision=precision)


def compiled_models(fetcher: Any, budget_bytes: int,
                    on_run: RunObserver = metrics.observe_run) -> ModelCache[ModelKey, Any]:
    """The cache of compiled models of the process that runs them (the compute process, or the worker with
    ``--compute thread``): loads through ``fetcher``, memory hits counted, freed memory given back after
    evictions, every run of the engine told to ``on_run``."""
    def load(key: ModelKey) -> Any:
        model = load_model(fetcher, key)
        if isinstance(model, CompiledModel):  # custom models run their own way
            model.run_observer = on_run
        return model

    return ModelCache(load, budget_bytes, on_hit=metrics.observe_memory_hit, on_evict=release_freed_memory)


def predict_isolated(model: Any, items: Sequence[Mapping[str, Any]]) -> list[Result]:
    """``predict_batch``; if the batch fails, each item alone, so one bad item costs only its own result."""
    try:
        return list(model.predict_batch(items))
    except Exception:  # noqa: BLE001 - isolate the item(s) that broke the batch; the rest get results
        results: list[Result] = []
        for item in items:
            try:
                results.append(model.predict(item))
            except Exception as exc:  # noqa: BLE001 - an item's failure is its outcome
                results.append(exc)
        return results


class LocalModels:
    """Compiled models in this process's cache; batches run on the calling thread."""

    batches_in_flight = 1  # a second would only share the same cores and GIL

    def __init__(self, cache: ModelCache[ModelKey, Any]) -> None:
        self.cache = cache

    def description(self, key: ModelKey) -> ModelDescription:
        with self.cache.use(key) as model:
            return model.description

    def predict_batch(self, key: ModelKey, items: Sequence[Mapping[str, Any]]) -> list[Result]:
        with self.cache.use(key) as model:
            return predict_isolated(model, items)

    def warm(self) -> list[ModelKey]:
        return self.cache.warm()

    @property
    def used_bytes(self) -> int:
        return self.cache.used_bytes

    def close(self) -> None:
        pass
