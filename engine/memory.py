"""Keeping freed memory in the process, so that each batch reuses the pages of the one before.

glibc's malloc serves every allocation above its mmap threshold (128 KiB,
raised by use up to 32 MiB) with a fresh ``mmap`` and gives it back with
``munmap`` when it is freed. A batch's activations are larger than that
(16 × 32 channels × 128² float32 is 32 MiB), so by default every batch maps
new memory: the kernel zeroes it on first touch and, on ``munmap``, flushes
the other cores' TLBs. On multistyle26 at 128², batch 16, that was 2.6 to
4.5 ms of kernel time per image (of 24 to 27 ms of CPU), against 0.4 to 0.6
with this setting, which made it 1.2 to 1.3 times as fast
(``bench/memory.py``). ONNX Runtime and PyTorch's GPU allocator keep their
own arenas for the same reason; numpy has none, so this sets glibc's:

* no ``mmap`` for allocations (``M_MMAP_MAX`` 0): large blocks come from
  the heap, where a freed block is reused by the next request of its size;
* no trimming of the heap's free top below 2 GiB (``M_TRIM_THRESHOLD``,
  an ``int``, at its largest);
* one heap for all threads (``M_ARENA_MAX`` 1): a thread's own arena grows
  by mapping 64 MiB heaps and unmaps each one that empties, so a model run
  on a worker's device thread faulted in 30 to 100 pages per image again.

The cost: the process keeps the memory of its largest batch (and of evicted
models) until :func:`release_freed_memory`, which returns the free pages,
and which the workers call after evicting a model.

Both are process-wide, so the engine never applies them on import: corral's
own processes (``corral worker``, its compute process, ``corral model run``)
do, and an application that calls ``predict_batch`` may too. Elsewhere than
glibc (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from typing import Any

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD = 2**31 - 1


@functools.cache
def _glibc() -> Any | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def retain_freed_memory() -> bool:
    """Keep freed memory in this process for reuse (see the module's text); False where malloc is not glibc's.

    Call it before starting threads: one that has already taken an arena of its own keeps it."""
    libc = _glibc()
    if libc is None:
        return False
    return all(libc.mallopt(param, value) for param, value in
               ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1)))


def release_freed_memory() -> bool:
    """Give the free pages of the heap back to the system; True if any were."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
