"""Compiled models kept warm in memory: LRU by bytes under a budget, never evicting a model in use.

``with cache.use(key) as model:`` returns the compiled model for ``key``,
loading it on first use. Concurrent first requests for one key wait for a
single load (a per-key future); a failed load is raised to every waiter and
not cached, so a later request tries again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")


def model_nbytes(model: Any) -> int:
    """Bytes a compiled model holds: its ``nbytes`` if it says, else the numpy arrays among its constants."""
    size = getattr(model, "nbytes", None)
    if isinstance(size, int):
        return size
    constants = getattr(getattr(model, "executor", None), "constants", None) or {}
    return sum(v.nbytes for v in constants.values() if isinstance(v, np.ndarray))


@dataclass
class _Entry(Generic[M]):
    model: M
    size: int
    users: int = 0


class ModelCache(Generic[K, M]):
    def __init__(self, loader: Callable[[K], M], budget_bytes: int,
                 sizer: Callable[[M], int] = model_nbytes, on_hit: Callable[[], None] | None = None,
                 on_evict: Callable[[], object] | None = None) -> None:
        """``on_hit`` is called for each request answered from memory (the worker counts them); ``on_evict``
        after models were evicted (a worker gives their freed memory back to the system)."""
        self.loader = loader
        self.budget_bytes = budget_bytes
        self.sizer = sizer
        self.on_hit = on_hit
        self.on_evict = on_evict
        self.loads = 0  # how many times the loader ran (tests check once-only loading)
        self.hits = 0  # requests answered from memory
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, _Entry[M]] = OrderedDict()
        self._loading: dict[K, Future[None]] = {}

    @contextmanager
    def use(self, key: K) -> Iterator[M]:
        model = self.acquire(key)
        try:
            yield model
        finally:
            self.release(key)

    def acquire(self, key: K) -> M:
        """The model for ``key``, marked in use until :meth:`release`."""
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.users += 1
                    self._entries.move_to_end(key)
                    self.hits += 1
                else:
                    waiting = self._loading.get(key)
                    owner = waiting is None
                    pending = self._loading[key] = Future() if waiting is None else waiting
            if entry is not None:
                if self.on_hit is not None:
                    self.on_hit()  # outside the lock: a metrics callback never holds up other threads
                return entry.model
            if not owner:
                pending.result()  # raises the loader's error; on success, look again
                continue
            try:
                model = self.loader(key)
                self.loads += 1
            except BaseException as exc:
                with self._lock:
                    del self._loading[key]
                pending.set_exception(exc)
                raise
            with self._lock:
                self._entries[key] = _Entry(model, self.sizer(model), users=1)
                del self._loading[key]
                evicted = self._evict()
            pending.set_result(None)
            self._evicted(evicted)
            return model

    def release(self, key: K) -> None:
        evicted = 0
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.users -= 1
                evicted = self._evict()
        self._evicted(evicted)

    def _evict(self) -> int:
        """Under the lock: drop least recently used idle models while over budget (the most recent one always
        stays); how many were dropped."""
        total = sum(e.size for e in self._entries.values())
        dropped = 0
        for key in list(self._entries)[:-1]:
            if total <= self.budget_bytes:
                break
            entry = self._entries[key]
            if entry.users == 0:
                total -= entry.size
                del self._entries[key]
                dropped += 1
        return dropped

    def _evicted(self, count: int) -> None:
        if count and self.on_evict is not None:
            self.on_evict()  # outside the lock: giving memory back may take milliseconds

    def warm(self) -> list[K]:
        with self._lock:
            return list(self._entries)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())
