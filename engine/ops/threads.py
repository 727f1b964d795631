"""The CPU thread budget of the numpy engine's tiled kernels.

Convolution and friends split their work into tiles (a batch item times a band
of output rows); the calling thread and helpers from one shared thread pool
take the tiles from a queue. numpy releases the GIL inside copies, ufuncs and
BLAS calls, so the tiles really run in parallel. While tiles run, BLAS is
held to one thread: a multi-threaded BLAS called from several threads at once
oversubscribes the cores and runs many times slower. The hold is
reference-counted so that concurrent callers restore BLAS's own setting only
when the last of them is done. It works from any thread: a worker predicts
on its device thread, a web app on its request threads (threadpoolctl 3.8
would let only the first thread that changes OpenBLAS's shared pool change
it again, and silently ignore the others).

Without ``threadpoolctl`` (which is what can change BLAS's thread count at run
time) tiles run one after another and BLAS keeps its own threads.

The thread count is the CPUs this process may run on unless
:func:`set_num_threads` says otherwise; the engine never reads the
environment (the ``corral`` command sets it from ``--threads`` /
``CORRAL_NUM_THREADS``, a worker from its settings).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_override: int | None = None
# A run's own budget (the engine's lanes: several runs side by side, each on its share of the threads).
_budget: contextvars.ContextVar[int | None] = contextvars.ContextVar("corral_thread_budget", default=None)

# BLAS hold: how many callers hold it, and the settings to restore after the last.
_blas_holders = 0
_blas_saved: list[tuple[Any, int]] = []
_blas_libs: list[Any] | None = None


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def num_threads() -> int:
    """Threads a run may use: the engine's count, or less inside :func:`limited`."""
    count = _override if _override is not None else _default_threads()
    budget = _budget.get()
    return count if budget is None else max(1, min(count, budget))


@contextlib.contextmanager
def limited(count: int) -> Iterator[None]:
    """Runs inside use at most ``count`` threads (in this thread and the context it was entered in)."""
    token = _budget.set(max(1, int(count)))
    try:
        yield
    finally:
        _budget.reset(token)


def set_num_threads(count: int | None) -> None:
    """Use ``count`` threads from now on; ``None`` returns to the default (the CPUs this process may use)."""
    global _override
    if count is not None and count < 1:
        raise ValueError(f"thread count must be at least 1, got {count}")
    _override = count


def _blas_controllers() -> list[Any]:
    global _blas_libs
    if _blas_libs is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_libs = []
        else:
            _blas_libs = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _blas_libs


def _set_blas_threads(lib: Any, count: int) -> None:
    # The engine's changes are already serialized (under _lock) and counted, so it bypasses threadpoolctl's
    # one-controlling-thread rule for OpenBLAS's pthreads pool; left in place, a kernel run from any other
    # thread than the first ran its GEMMs on all of BLAS's threads besides the pool's, contending with them.
    setter = getattr(lib, "_real_set_num_threads", None) or lib.set_num_threads
    setter(count)


def _hold_blas() -> None:
    global _blas_holders, _blas_saved
    with _lock:
        if _blas_holders == 0:
            _blas_saved = [(lib, lib.get_num_threads()) for lib in _blas_controllers()]
            for lib, _ in _blas_saved:
                _set_blas_threads(lib, 1)
        _blas_holders += 1


def _release_blas() -> None:
    global _blas_holders
    with _lock:
        _blas_holders -= 1
        if _blas_holders == 0:
            for lib, count in _blas_saved:
                _set_blas_threads(lib, count)


def _get_pool(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="corral-kernel")
            _pool_size = size
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def can_parallelize() -> bool:
    """True when tiles would run on several threads (and BLAS can be held to one)."""
    return num_threads() > 1 and not getattr(_local, "in_pool", False) and bool(_blas_controllers())


class _TileQueue(Generic[T]):
    """Tiles handed out one at a time to whichever thread asks next; the first failure stops the handing out."""

    def __init__(self, fn: Callable[[T], Any], tiles: list[T]) -> None:
        self._fn = fn
        self._tiles = iter(tiles)
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def drain(self) -> None:
        while True:
            with self._lock:
                if self.error is not None:
                    return
                try:
                    tile = next(self._tiles)
                except StopIteration:
                    return
            try:
                self._fn(tile)
            except BaseException as exc:  # noqa: BLE001 - re-raised by run_tiles once every thread has stopped
                with self._lock:
                    if self.error is None:
                        self.error = exc
                return


def _helper(queue: _TileQueue[Any]) -> None:
    _local.in_pool = True
    try:
        queue.drain()
    finally:
        _local.in_pool = False


# Below this much work (bytes moved, or multiply-adds for GEMMs) handing
# tiles to other threads costs more than it saves.
PARALLEL_MIN_WORK = 1 << 20


def run_tiles(fn: Callable[[T], Any], tiles: Sequence[T] | Iterable[T], work: int | None = None) -> None:
    """Call ``fn`` on every tile, on the shared pool when that helps; the first exception propagates.

    ``work`` sizes the whole job (see PARALLEL_MIN_WORK); small jobs run on
    the calling thread. Otherwise the calling thread and ``threads - 1``
    helpers from the pool take tiles from one queue until it is empty: one
    hand-off per helper rather than per tile, and a helper that starts late
    (its core busy with other work) leaves its share to the threads already
    running instead of holding up the op. Calls made from inside a helper run
    serially, so kernels may nest without deadlocking the pool.
    """
    tiles = list(tiles)
    available = num_threads()
    threads = min(available, len(tiles))
    if threads <= 1 or (work is not None and work < PARALLEL_MIN_WORK) or not can_parallelize():
        for tile in tiles:
            fn(tile)
        return
    queue = _TileQueue(fn, tiles)
    pool = _get_pool(available - 1)
    _hold_blas()
    try:
        helpers = [pool.submit(_helper, queue) for _ in range(threads - 1)]
        _helper(queue)
        wait(helpers)
    finally:
        _release_blas()
    for helper in helpers:
        helper.result()  # a failure of the pool itself, not of a tile
    if queue.error is not None:
        raise queue.error


def scratch(name: str, size: int, dtype: Any) -> Any:
    """A per-thread reusable 1-D buffer of at least ``size`` elements (contents undefined)."""
    import numpy as np

    buffers: dict[tuple[str, Any], np.ndarray] | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    key = (name, np.dtype(dtype))
    buf = buffers.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1), dtype=dtype)
        buffers[key] = buf
    return buf[:size]
