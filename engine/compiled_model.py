"""A model ready to run: ``predict`` and ``predict_batch`` over the graph executor (:mod:`engine.runtime`)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Backend, RunLayout, cpu_run_items
from engine.description import MAX_BATCH_KEY, Feature, ModelDescription
from engine.exceptions import EngineError, InputError
from engine.ops import threads as engine_threads
from engine.run_tuner import RunTuner, from_json, size_class
from engine.runtime import Executor

log = logging.getLogger(__name__)

Item = Mapping[str, Any]
RunObserver = Callable[[int, float], None]  # (items stacked in one run, its wall seconds)

# Lanes beside the calling thread's (see CompiledModel.predict_batch); shared by every model in the process.
_lane_pool: ThreadPoolExecutor | None = None
_lane_pool_size = 0
_lane_lock = threading.Lock()


def _lanes(count: int) -> ThreadPoolExecutor:
    global _lane_pool, _lane_pool_size
    with _lane_lock:
        if _lane_pool is None or _lane_pool_size < count:
            _lane_pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="corral-lane")
            _lane_pool_size = count
        return _lane_pool


class CompiledModel:
    """A model ready to run on one backend and device.

    ``run`` takes and returns graph tensors (with the batch dimension);
    ``predict`` takes one item (a dict of input name to value, no batch
    dimension) and ``predict_batch`` a list of them, stacking items of the same
    shape into one tensor.

    ``from_cache`` says whether this object was loaded from the compiled-model
    cache; ``stats`` counts what the compiler's passes did.
    """

    def __init__(self, description: ModelDescription, executor: Executor, backend: str, device: str,
                 digest: str = "", *, from_cache: bool = False, stats: Mapping[str, Any] | None = None) -> None:
        self.description = description
        self.executor = executor
        self.backend = backend
        self.device = device
        self.digest = digest
        self.from_cache = from_cache
        self.stats: dict[str, Any] = dict(stats or {})
        # the backend bound to this device and precision (set by the compiler)
        self.backend_context: Backend | None = None
        self.tuner = RunTuner()
        # where the tuner's decisions are kept between processes (beside the compiled-cache entry), if anywhere
        self.tuning_path: Path | None = None
        # told of every run predict_batch makes (from any lane's thread): how a batch really ran
        self.run_observer: RunObserver | None = None

    @property
    def name(self) -> str:
        return self.description.metadata.name or "model"

    @property
    def nbytes(self) -> int:
        """Bytes of weights this model holds: the executor's, plus copies the backend's kernels keep."""
        own = sum(int(getattr(v, "nbytes", 0)) for v in self.executor.constants.values())
        held = self.backend_context.held_bytes([s.kernel for s in self.executor.steps]) if self.backend_context else 0
        return own + held

    # ------------------------------------------------------------------ graph
    def run(self, feeds: Mapping[str, Any], keep_on_device: bool = False) -> dict[str, Any]:
        """Graph tensors in and out; ``keep_on_device`` leaves a device backend's outputs on the device
        (tensors, unsynchronized) — see :meth:`Executor.run`."""
        return self.executor.run(feeds, keep_on_device=keep_on_device)

    def plan_ahead(self) -> int:
        """Record a plan, batch size 1, for every combination of enumerated input shapes.

        Inputs given as ranges are planned on first use. Runs the model on
        zeros (defaults for unbatched inputs that have one); returns the
        number of plans recorded.
        """
        inputs = self.description.inputs
        if not any(f.shape.enumerated for f in inputs):
            return 0
        choices = [f.shape.planned_shapes() if f.shape.enumerated else [f.shape.default] for f in inputs]
        done = 0
        for shapes in itertools.islice(itertools.product(*choices), self.executor.max_plans):
            feeds = {}
            for f, shape in zip(inputs, shapes):
                if not f.batched and f.default is not None:
                    feeds[f.name] = np.asarray(f.default, dtype=np.dtype(f.dtype))
                else:
                    feeds[f.name] = np.zeros(((1,) if f.batched else ()) + tuple(shape), np.dtype(f.dtype))
            try:
                with np.errstate(all="ignore"):
                    self.executor.run(feeds)
            except EngineError as exc:
                log.warning("%s: planning shapes %s ahead failed (%s); they will be planned on first use",
                            self.name, [list(s) for s in shapes], exc)
                continue
            done += 1
        return done

    # ------------------------------------------------------------------ items
    def prepare_item(self, item: Item) -> dict[str, np.ndarray]:
        """Resolve one item's inputs to arrays of the item shape: defaults filled, images converted."""
        from engine.images import image_to_tensor

        known = {f.name for f in self.description.inputs}
        unknown = set(item) - known
        if unknown:
            raise InputError(f"{self.name}: unknown inputs {sorted(unknown)}; the model takes {sorted(known)}")
        out: dict[str, np.ndarray] = {}
        for f in self.description.inputs:
            value = item.get(f.name)
            if value is None:
                if f.default is None:
                    raise InputError(f"{self.name}: input {f.name!r} is required ({f.shape.describe()})")
                value = f.default
            if f.kind == "image" and not isinstance(value, np.ndarray):
                value = image_to_tensor(value, f)
            arr = np.asarray(value, dtype=np.dtype(f.dtype))
            f.check_item(arr)
            out[f.name] = arr
        return out

    def predict(self, item: Item) -> dict[str, np.ndarray]:
        return self.predict_batch([item])[0]

    def predict_batch(self, items: Sequence[Item], max_batch: int | None = None) -> list[dict[str, np.ndarray]]:
        """One result per item, equal to ``predict`` on each; same-shape items share runs.

        Items whose inputs have the same shapes (and the same values for
        unbatched inputs) form a group, stacked into one tensor per run, at
        most ``max_batch`` items per run when given, and never more than the
        model allows (:data:`engine.description.MAX_BATCH_KEY`). How a group runs (how
        many items per run, how many runs side by side on the CPU, each on its
        share of the threads) is the backend's offer
        (:meth:`engine.backends.base.Backend.run_layouts`), measured and kept
        by :attr:`tuner` when there is more than one.
        """
        prepared = [self.prepare_item(item) for item in items]
        allowed = self.description.metadata.user.get(MAX_BATCH_KEY)
        if allowed:
            max_batch = min(max_batch or int(allowed), int(allowed))
        results: list[dict[str, np.ndarray] | None] = [None] * len(prepared)
        for group in self._groups(prepared):
            first = prepared[group[0]]
            per_item = sum(first[f.name].size for f in self.description.inputs if f.batched)
            layouts = self._layouts(len(group), per_item)
            key = (tuple((f.name, first[f.name].shape) for f in self.description.inputs), size_class(len(group)))
            layout = self.tuner.choose(key, layouts)
            started = time.perf_counter()
            self._run_group(prepared, group, layout, max_batch, results)
            if len(layouts) > 1 and self.tuner.record(key, layout, time.perf_counter() - started, len(group)):
                self._keep_tuning()
        return results  # type: ignore[return-value]

    def load_tuning(self, path: Path) -> None:
        """Keep the tuner's decisions in ``path`` from now on, starting from those already there."""
        self.tuning_path = path
        try:
            self.tuner.load(from_json(json.loads(path.read_text())))
        except (OSError, ValueError):
            return  # none yet, or unreadable: measured again, then rewritten

    def _keep_tuning(self) -> None:
        if self.tuning_path is None:
            return
        try:
            tmp = self.tuning_path.with_name(f".{self.tuning_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(self.tuner.to_json()))
            os.replace(tmp, self.tuning_path)
        except OSError as exc:
            log.warning("%s: cannot keep the run tuner's decisions in %s (%s)", self.name, self.tuning_path, exc)

    def _layouts(self, items: int, item_elements: int) -> list[RunLayout]:
        if self.backend_context is not None:
            return self.backend_context.run_layouts(items, item_elements)
        return [RunLayout(1, cpu_run_items(item_elements))] if self.device == "cpu" else [RunLayout()]

    def _run_group(self, prepared: list[dict[str, np.ndarray]], group: list[int], layout: RunLayout,
                   max_batch: int | None, results: list[dict[str, np.ndarray] | None]) -> None:
        lanes = max(1, min(layout.lanes, len(group)))
        size = -(-len(group) // lanes)
        parts = [group[i:i + size] for i in range(0, len(group), size)]
        limit = max_batch if max_batch and max_batch > 0 else None

        def run_part(part: list[int]) -> None:
            step = min(x for x in (layout.per_run, limit, len(part)) if x)
            for start in range(0, len(part), step):
                self._run_items(prepared, part[start:start + step], results)

        if len(parts) == 1:
            run_part(parts[0])
            return
        share = max(1, engine_threads.num_threads() // len(parts))

        def lane(part: list[int]) -> None:
            with engine_threads.limited(share):
                run_part(part)

        others = [_lanes(len(parts) - 1).submit(lane, part) for part in parts[1:]]
        try:
            lane(parts[0])
        finally:
            for done in others:
                done.result()

    def _run_items(self, prepared: list[dict[str, np.ndarray]], indices: list[int],
                   results: list[dict[str, np.ndarray] | None]) -> None:
        feeds = {}
        for f in self.description.inputs:
            if f.batched:
                feeds[f.name] = np.stack([prepared[i][f.name] for i in indices])  # [B, *item shape]
            else:
                feeds[f.name] = prepared[indices[0]][f.name]
        started = time.perf_counter()
        outputs = self.run(feeds)
        if self.run_observer is not None:
            self.run_observer(len(indices), time.perf_counter() - started)
        for pos, i in enumerate(indices):
            results[i] = {name: self._item_output(self.description.output(name), value, pos, len(indices))
                          for name, value in outputs.items()}

    def _groups(self, prepared: list[dict[str, np.ndarray]]) -> list[list[int]]:
        """Items that can share one run: same shapes, same values for unbatched inputs."""
        groups: dict[tuple, list[int]] = {}
        for i, arrays in enumerate(prepared):
            key: list[Any] = []
            for f in self.description.inputs:
                arr = arrays[f.name]
                key.append(arr.shape)
                if not f.batched:
                    key.append(arr.tobytes())
            groups.setdefault(tuple(key), []).append(i)
        return list(groups.values())

    @staticmethod
    def _item_output(feature: Feature, value: np.ndarray, pos: int, count: int) -> np.ndarray:
        axis = feature.batch_axis
        if feature.batched and value.ndim > axis and value.shape[axis] == count:
            return np.array(np.take(value, pos, axis=axis))
        return np.array(value)
