"""Reused output buffers for large CPU tensors.

A fresh tensor of more than ~32 MiB (one 32-channel 512x512 activation) is
mapped from the kernel by glibc on every allocation and unmapped when freed,
so each run pays a page fault per 4 KiB page before the first write: about
15 ms per such tensor on a 2-core machine, as much as the op itself.
onnxruntime avoids this with its arena; :class:`BufferPool` does the same for
the kernels that can write into a given tensor (``out=``).

A buffer is free when nothing but the pool references its storage: the pool
hands out a separate tensor object over the same storage, and every view or
numpy array made from it holds the storage, so a buffer still feeding a later
node, or returned to a caller (``keep_on_device``), is never handed out again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

# Buffers smaller than this come from the ordinary allocator, which keeps
# them on its heap between runs already.
MIN_POOLED_BYTES = 1 << 20
# glibc serves blocks of this size or more (its largest mmap threshold on 64-bit) with a fresh mapping on
# every allocation, so a result this large pays its page faults on every run unless it is pooled.
FRESH_MAPPING_BYTES = 32 << 20


def _storage_users(t: torch.Tensor) -> int:
    """References to ``t``'s storage (counting the one this call makes to read it)."""
    return int(torch._C._storage_Use_Count(t.untyped_storage()._cdata))


# What _storage_users reads for a buffer nothing else references.
_ALONE = _storage_users(torch.empty(1))


class BufferPool:
    """Keeps up to ``max_bytes`` of CPU buffers, by shape, dtype and memory format, across runs."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.held_bytes = 0
        self._lock = threading.Lock()
        # key -> buffers; keys in least-recently-used order (the first is evicted first)
        self._free: OrderedDict[tuple[object, ...], list[torch.Tensor]] = OrderedDict()

    def empty(self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """An uninitialized CPU tensor of ``shape``: a free pooled buffer, or a new one (pooled when it fits)."""
        shape = tuple(int(d) for d in shape)
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        if nbytes < MIN_POOLED_BYTES or nbytes > self.max_bytes:
            return torch.empty(shape, dtype=dtype, memory_format=memory_format)
        key = (shape, dtype, memory_format)
        with self._lock:
            held = self._free.setdefault(key, [])
            self._free.move_to_end(key)
            for buf in held:
                if _storage_users(buf) == _ALONE:
                    return buf.detach()  # a new tensor object over the same storage
            if self.held_bytes + nbytes > self.max_bytes:
                self._evict(self.held_bytes + nbytes - self.max_bytes)
                held = self._free.setdefault(key, held)  # eviction drops keys left empty
            buf = torch.empty(shape, dtype=dtype, memory_format=memory_format)
            if self.held_bytes + nbytes <= self.max_bytes:
                held.append(buf)
                self.held_bytes += nbytes
                return buf.detach()
            return buf

    def _evict(self, need: int) -> None:
        """Drop free buffers, least recently used shapes first, until ``need`` bytes are released."""
        for key in list(self._free):
            held = self._free[key]
            for buf in [b for b in held if _storage_users(b) == _ALONE]:
                held.remove(buf)
                freed = buf.numel() * buf.element_size()
                self.held_bytes -= freed
                need -= freed
                if need <= 0:
                    break
            if not held:
                del self._free[key]
            if need <= 0:
                return

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self.held_bytes = 0
