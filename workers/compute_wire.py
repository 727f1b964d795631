"""What crosses between a worker and its compute process: shared buffers and the layouts of the arrays in
them, the child's settings, and the state it reports with every reply (see :mod:`workers.compute`)."""

from __future__ import annotations

import mmap
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from store.settings import StoreClientSettings
from workers.exceptions import ComputeProcessError

if TYPE_CHECKING:
    from workers.settings import WorkerSettings

ALIGN = 64  # each array starts on a cache line (and any dtype's alignment)
Layout = dict[str, tuple[int, tuple[int, ...], str]]  # input or output name -> (offset, shape, dtype)


class SharedBuffer:
    """An anonymous shared memory file mapped into this process; its descriptor can be sent to the other."""

    def __init__(self, size: int, fd: int | None = None) -> None:
        self.size = size
        self.fd = os.memfd_create("corral-batch", os.MFD_CLOEXEC) if fd is None else fd
        if fd is None:
            os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)
        self.bytes = np.frombuffer(self.map, np.uint8)  # [size]

    def close(self) -> None:
        del self.bytes
        try:
            self.map.close()
        except BufferError:  # an array still views it: the mapping goes when the last view does
            pass
        os.close(self.fd)


def aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def layout_size(items: Sequence[Mapping[str, Any]]) -> int:
    """Bytes needed to hold every array of ``items`` at aligned offsets."""
    return sum(aligned(np.asarray(v).nbytes) for item in items for v in item.values())


def pack(items: Sequence[Mapping[str, Any]], buf: np.ndarray) -> list[Layout]:
    """Copy each item's arrays into ``buf`` (uint8, large enough: :func:`layout_size`); their layouts."""
    layouts, offset = [], 0
    for item in items:
        layout: Layout = {}
        for name, value in item.items():
            arr = np.asarray(value)
            view(buf, offset, arr.shape, arr.dtype.str)[...] = arr
            layout[name] = (offset, arr.shape, arr.dtype.str)
            offset += aligned(arr.nbytes)
        layouts.append(layout)
    return layouts


def view(buf: np.ndarray, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The array of ``shape`` and ``dtype`` at ``offset`` in ``buf`` (no copy)."""
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    return buf[offset:offset + count * dt.itemsize].view(dt).reshape(shape)


def unpack(buf: np.ndarray, layouts: Sequence[Layout]) -> Iterator[dict[str, np.ndarray]]:
    """Views of each item's arrays in ``buf``."""
    for layout in layouts:
        yield {name: view(buf, offset, tuple(shape), dtype) for name, (offset, shape, dtype) in layout.items()}


def extent(layouts: Sequence[Layout]) -> int:
    """Bytes from the buffer's start to the end of the last array that ``layouts`` place."""
    return max((offset + np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64))
                for layout in layouts for offset, shape, dtype in layout.values()), default=0)


def portable(exc: BaseException) -> Exception:
    """``exc`` if it survives pickling, else a :class:`ComputeProcessError` with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc if isinstance(exc, Exception) else ComputeProcessError(f"{type(exc).__name__}: {exc}")
    except Exception:  # noqa: BLE001 - any exception type may fail to pickle; its text still travels
        return ComputeProcessError(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class ComputeSettings:
    """What the compute process needs of the worker's settings (sent as its first message)."""

    memory_budget: int
    store: StoreClientSettings
    plugins: tuple[str, ...] = ()
    num_threads: int | None = None

    @classmethod
    def of(cls, settings: WorkerSettings) -> ComputeSettings:
        return cls(settings.memory_budget, settings.store, tuple(settings.plugins), settings.num_threads)


@dataclass
class ChildState:
    """What the compute process reports with each reply."""

    warm: list[Any] = field(default_factory=list)  # keys of the models held in memory
    used_bytes: int = 0
    metrics: list[Any] = field(default_factory=list)  # prometheus metric families of its fetches
    runs: list[tuple[int, float]] = field(default_factory=list)  # engine runs since the last reply: (items, s)
