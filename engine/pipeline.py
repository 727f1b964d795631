"""Pipelined batch runs: the next batch's upload overlaps this batch's compute and the last one's download.

:func:`run_pipelined` takes a compiled model and an iterable of feeds (graph
tensors with the batch dimension, e.g. from a decoder that reads images) and
yields one output dict per batch, in order. Three things overlap:

* a host thread pulls the next batches from the iterable (decoding, resizing,
  stacking run there while the device computes);
* on CUDA (torch backend), batch k+1 is copied into a pinned host buffer and
  uploaded on a copy stream while batch k computes on the compute stream, and
  batch k-1's outputs come back to pinned memory on the copy stream; CUDA
  events order the three, so Python never waits on the device between
  batches — it waits only for the download of a batch it is about to yield,
  by which time the next batch's compute is already queued;
* on CUDA with onnxruntime, two batches run side by side on the session
  (its CUDA provider copies off the compute stream), so batch k+1's upload
  overlaps batch k's compute and batch k-1's download;
* on the CPU (or the numpy backend), the same loop runs with the device
  steps done immediately: batches compute one after another while the host
  thread prepares the next.

CUDA graphs per shape are not used: they could not be measured on a GPU here,
and the executor's host-side shape steps would have to be proven free of
device reads first.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from engine.exceptions import EngineError

Feeds = Mapping[str, Any]
Outputs = dict[str, np.ndarray]

# Pinned buffer sets per direction: one being filled by the host while another is in flight.
SLOTS = 2


def run_pipelined(compiled: Any, batches: Iterable[Feeds], *, prefetch: int = 2) -> Iterator[Outputs]:
    """Run ``compiled`` over ``batches`` (feeds per run), yielding numpy outputs per batch, in order.

    ``prefetch`` bounds how many batches the host thread reads ahead. An
    error raised while reading a batch is re-raised here, at that batch's
    turn; stopping the iteration early stops the reader.
    """
    reader = _Prefetcher(check_batches(batches), max(1, int(prefetch)))
    try:
        ctx = getattr(compiled, "backend_context", None)
        if getattr(ctx, "NAME", None) == "onnxruntime" and getattr(ctx, "cuda", False):
            yield from run_side_by_side(compiled.run, reader, SLOTS)
            return
        lane = _lane_for(compiled)
        if lane is None:
            for feeds in reader:
                yield compiled.run(feeds)
            return
        yield from _pipelined(compiled, lane, reader)
    finally:
        reader.close()


def run_side_by_side(run: Any, reader: Iterable[Feeds], depth: int) -> Iterator[Outputs]:
    """``run`` over the batches with up to ``depth`` in flight on their own threads; outputs in order."""
    from concurrent.futures import Future, ThreadPoolExecutor

    pending: list[Future[Outputs]] = []
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="corral-pipeline") as pool:
        try:
            for feeds in reader:
                pending.append(pool.submit(run, feeds))
                if len(pending) >= depth:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            for future in pending:
                future.cancel()


def _pipelined(compiled: Any, lane: _TorchLane, reader: Iterable[Feeds]) -> Iterator[Outputs]:
    """Queue batch k's upload and compute and its download, then hand back batch k-1."""
    pending: _Download | None = None
    for index, feeds in enumerate(reader):
        slot = index % SLOTS
        device_feeds = lane.upload(feeds, slot)
        with lane.compute():
            outputs = compiled.run(device_feeds, keep_on_device=True)
        download = lane.download(outputs, slot)
        if pending is not None:
            yield pending.result()
        pending = download
    if pending is not None:
        yield pending.result()


def _lane_for(compiled: Any) -> _TorchLane | None:
    """The torch transfer lane for a torch-compiled graph model; None: run batches as they come."""
    ctx = getattr(compiled, "backend_context", None)
    if getattr(ctx, "NAME", None) != "torch" or not hasattr(getattr(compiled, "executor", None), "run"):
        return None
    return _TorchLane(ctx)


class _Prefetcher:
    """Reads an iterable on a daemon thread, at most ``depth`` items ahead; errors re-raised in order."""

    _END = object()

    def __init__(self, source: Iterable[Feeds], depth: int) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(iter(source),), name="corral-prefetch",
                                        daemon=True)
        self._thread.start()

    def _read(self, it: Iterator[Feeds]) -> None:
        try:
            for item in it:
                if not self._put(("item", item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(("error", exc))
            return
        self._put(("end", self._END))

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Feeds]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Download:
    """One batch's outputs on their way to the host; ``result()`` waits for them and copies them out."""

    def __init__(self, values: dict[str, Any], event: Any) -> None:
        self.values = values
        self.event = event

    def result(self) -> Outputs:
        if self.event is not None:
            self.event.synchronize()  # this batch's download only; later batches keep computing
        # copies: the pinned buffers are reused two batches later
        return {name: np.array(v.numpy() if hasattr(v, "numpy") else v) for name, v in self.values.items()}


class _TorchLane:
    """Uploads and downloads for one torch context: pinned buffers, a copy stream and events on CUDA;
    plain tensor wrapping on the CPU (the same calls, with nothing to overlap)."""

    def __init__(self, ctx: Any) -> None:
        import torch

        self.torch = torch
        self.ctx = ctx
        self.device = ctx.torch_device
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        # (direction, slot, name) -> pinned host tensor; reallocated when the shape or dtype changes
        self._pinned: dict[tuple[str, int, str], Any] = {}
        # slot -> event recorded after that slot's upload, so its pinned buffers are not overwritten early
        self._uploaded: dict[int, Any] = {}
        self._downloaded: dict[int, Any] = {}

    def compute(self) -> Any:
        """The compute stream as a context (CUDA), or nothing to enter (CPU)."""
        import contextlib

        if not self.cuda:
            return contextlib.nullcontext()
        return self.torch.cuda.stream(self.torch.cuda.current_stream(self.device))

    def _buffer(self, direction: str, slot: int, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        key = (direction, slot, name)
        buf = self._pinned.get(key)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != dtype:
            buf = self.torch.empty(shape, dtype=dtype, pin_memory=True)
            self._pinned[key] = buf
        return buf

    def upload(self, feeds: Feeds, slot: int) -> dict[str, Any]:
        """Feeds as device tensors; on CUDA queued on the copy stream, which the compute stream waits on."""
        torch = self.torch
        if not self.cuda:
            return dict(feeds)  # the executor wraps host arrays as CPU tensors without copying
        assert self.copy_stream is not None
        previous = self._uploaded.get(slot)
        if previous is not None:
            previous.synchronize()  # the copy that last read this slot's pinned buffers is done
        out = {}
        with torch.cuda.stream(self.copy_stream):
            for name, value in feeds.items():
                if isinstance(value, torch.Tensor):
                    out[name] = value.to(self.device, non_blocking=True)
                    continue
                arr = np.asarray(value)
                if arr.dtype.kind != "f":
                    out[name] = arr  # integer shapes and indices stay on the host
                    continue
                src = torch.from_numpy(np.ascontiguousarray(arr))
                buf = self._buffer("up", slot, name, tuple(arr.shape), src.dtype)
                buf.copy_(src)  # host memcpy into pinned memory
                out[name] = buf.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        self._uploaded[slot] = event
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(event)
        for value in out.values():
            if isinstance(value, torch.Tensor):
                value.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        return out

    def download(self, outputs: Mapping[str, Any], slot: int) -> _Download:
        """Outputs on their way back (float32 again in fp16); on CUDA queued behind the compute."""
        torch = self.torch
        if not self.cuda:
            return _Download({name: self.ctx.to_host(v) for name, v in outputs.items()}, None)
        assert self.copy_stream is not None
        previous = self._downloaded.get(slot)
        if previous is not None:
            previous.synchronize()  # that slot's last batch was already handed back; its buffers are free
        compute = torch.cuda.current_stream(self.device)
        host: dict[str, Any] = {}
        ready = {}
        for name, value in outputs.items():
            if not isinstance(value, torch.Tensor):
                host[name] = np.asarray(value)
                continue
            if value.dtype == torch.float16:
                value = value.float()  # on the compute stream
            ready[name] = value
        done_computing = torch.cuda.Event()
        done_computing.record(compute)
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(done_computing)
            for name, value in ready.items():
                value.record_stream(self.copy_stream)
                buf = self._buffer("down", slot, name, tuple(value.shape), value.dtype)
                buf.copy_(value, non_blocking=True)
                host[name] = buf
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        self._downloaded[slot] = event
        return _Download(host, event)


def check_batches(batches: Iterable[Feeds]) -> Iterator[Feeds]:
    """Each batch must be a mapping of input name to value (a clear error otherwise)."""
    for i, feeds in enumerate(batches):
        if not isinstance(feeds, Mapping):
            raise EngineError(f"run_pipelined: batch {i} is a {type(feeds).__name__}, not a mapping of "
                              "input name to array")
        yield feeds
