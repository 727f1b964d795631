"""The compute process: a worker's models compiled and run in a child process of their own.

Why a second process: a worker's decode and write threads run Python
(Celery's receipts and acks, chunk state, image decoding, PNG encoding)
beside the device thread, and in one process they share one GIL with it;
every numpy call the engine makes gives the GIL up and must win it back.
In its own process the compute never waits for the worker's Python, and the
worker's threads never wait for the compute's. A custom layer that crashes
also takes down only this process: the worker starts another and runs that
batch's items again one at a time, so that only the item that crashes it fails.

Batches cross in shared memory, not through a pipe: the worker copies each
item's arrays into an input buffer, the child predicts straight from views
of it and copies the outputs into an output buffer; the messages carry only
their layout (offsets, shapes, dtypes). The buffers are anonymous memory
files (``memfd_create``) whose descriptors are passed over the socket, so
nothing is left behind in ``/dev/shm`` when either process is killed.
There are two pairs of buffers (slots), so that two batches can be in the
child at once: while one computes, the next waits in its queue, already
copied in, and starts the moment the first is done. With one, the compute
stood idle between batches while the worker read the outputs and packed
the next batch (bench/compute_process.py measures the difference).

::

    worker process                                  compute process
    ModelDescription cache                          ModelCache: fetch, compile, LRU under the budget
    description(key) ── ("load", id, key) ────────> load on a loader thread
                     <── (id, True, description, state)
    predict_batch ─ copy arrays into the input buffer
                   ── ("run", id, key, layouts, slot's buffers, ...) ─> queued; predict_batch on views
                                                      (compute thread, one batch after another)
                                                      outputs copied into the output buffer
                   <── (id, True, (output layouts, None, 0), state)
    outputs copied out, the slot's buffers free for another batch

``state`` (warm models, their bytes, the fetch metrics) rides on every
reply, for the heartbeat and the metrics endpoint. What crosses between the
two processes (buffers, layouts, settings, state) is :mod:`workers.compute_wire`.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from multiprocessing.reduction import send_handle
from typing import Any

import numpy as np

from engine.description import ModelDescription
from workers import metrics
from workers.compute_wire import (
    ChildState,
    ComputeSettings,
    SharedBuffer,
    aligned,
    extent,
    layout_size,
    pack,
    unpack,
)
from workers.exceptions import ComputeProcessDiedError, ComputeProcessError
from workers.model_cache import ModelCache
from workers.models import ModelKey, Result

log = logging.getLogger(__name__)

START_FAILURES = 2  # children in a row that die before they are ready: then no new one for HOLD_S
HOLD_S = 10.0
SLOTS = 2  # batches in the compute process at once: one computing, the next waiting to start
RESENDS = 3  # times a batch that waited in a child which died (running another batch) is sent to the next one


# ---------------------------------------------------------------------------------------------- parent side
class ComputeProcess:
    """The worker's side of its compute process: a :class:`workers.models.Models` whose models live there.

    The child is started by :meth:`start` (or the first request) and
    restarted by the first request after it died. The items of the batch
    it was running run again one at a time in the new process: an item that
    kills it again gets a :class:`ComputeProcessError` naming the model and
    the exit, the others their outputs. A batch that waited behind it runs
    again as it was.
    """

    batches_in_flight = SLOTS

    def __init__(self, settings: ComputeSettings) -> None:
        self.settings = settings
        self.state = ChildState()
        self.restarts = 0
        self._start_failures = 0  # children in a row that died before they were ready
        self._hold_until = 0.0
        self._lock = threading.Lock()  # the process, its connection, the pending requests, sending
        # Free buffer pairs (a batch owns one until its reply is read), last freed first: one batch at a time
        # keeps using the first pair, and only a second batch in flight maps the second.
        self._slots: queue.LifoQueue[int] = queue.LifoQueue()
        for slot in reversed(range(SLOTS)):
            self._slots.put(slot)
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._pending: dict[int, tuple[Future[Any], str, bool]] = {}  # id -> (reply, what it is, a batch)
        self._next_id = 0
        # descriptions are small: up to 256 models' kept, loaded once however many threads ask at the same time
        self._descriptions: ModelCache[Any, ModelDescription] = ModelCache(self._load, 256, sizer=lambda _: 1)
        self._buffers: dict[str, SharedBuffer] = {}  # "in0", "out0", "in1", ...: per slot, once a batch needed them
        self._unsent: set[str] = set()  # buffers the current child has not been sent yet
        self._closed = False

    # ------------------------------------------------------------------ process
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child now: it imports the engine while the worker starts up."""
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> Connection:
        """Under the lock: the live child's connection, starting one if there is none."""
        if self._closed:
            raise ComputeProcessError("the worker's compute process was closed")
        if self._conn is not None:
            return self._conn
        if time.monotonic() < self._hold_until:
            raise ComputeProcessError(
                f"the compute process died while starting {self._start_failures} times in a row (a plugin that "
                f"fails to import there, a broken environment); no new one for {self._hold_until - time.monotonic():.0f}"
                " s; see the worker's log")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ours, theirs:
            proc = subprocess.Popen([sys.executable, "-m", "workers.compute_child", str(theirs.fileno())],
                                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
            conn = Connection(os.dup(ours.fileno()))
        conn.send(self.settings)
        self._proc, self._conn = proc, conn
        self._unsent = set(self._buffers)  # a new child has mapped none of them
        threading.Thread(target=self._read_loop, args=(proc, conn), name="corral-compute-reader",
                         daemon=True).start()
        log.info("compute process started (pid %d)", proc.pid)
        return conn

    def _read_loop(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        """Resolve each request's future from the child's replies; on its exit, fail what was pending."""
        ready = False
        while True:
            try:
                rid, ok, payload, state = conn.recv()
            except (EOFError, OSError):
                break
            if rid == 0:  # the child's own message: it has started
                ready = True
                with self._lock:
                    self._start_failures = 0
                continue
            with self._lock:
                fut, _, _ = self._pending.pop(rid, (None, "", False))
                self.state = state
            for size, seconds in state.runs:
                metrics.observe_run(size, seconds)
            if fut is not None:
                if ok:
                    fut.set_result(payload)
                else:
                    fut.set_exception(payload)
        code = proc.wait()
        conn.close()
        with self._lock:
            if self._conn is conn:
                self._conn = None
            pending, self._pending = self._pending, {}
            closing = self._closed
            if not ready and not closing:
                self._start_failures += 1
                if self._start_failures >= START_FAILURES:
                    self._hold_until = time.monotonic() + HOLD_S
        if closing:
            return
        self.restarts += 1
        # The child runs batches one after another in the order they were sent (ids rise): the oldest batch
        # pending is the one it was running; the others only waited, and run again in the next child. A child
        # that never became ready ran nothing: what was sent to it just fails.
        batches = sorted(rid for rid, (_, _, batch) in pending.items() if batch) if ready else []
        if not ready:
            doing = f"before it was ready; {len(pending)} request(s) failed"
        elif batches:
            doing = f"running a batch of {pending[batches[0]][1]}; {len(batches) - 1} waiting batch(es) go to the next"
        else:
            doing = "with no batch running"
        log.warning("compute process (pid %d) exited (%s) %s", proc.pid, _exit_text(code), doing)
        for rid, (fut, what, _) in pending.items():
            waited = rid in batches[1:]
            text = (f"{what}: the compute process (pid {proc.pid}) exited ({_exit_text(code)}) before it "
                    f"{'started this batch' if waited else 'answered'}; see the worker's log. A custom layer that "
                    "crashes, or memory running out, can cause this")
            fut.set_exception(ComputeProcessDiedError(text, ran=not waited) if ready else ComputeProcessError(text))

    def _send(self, message: tuple[Any, ...], what: str, fds: Sequence[int] = ()) -> Future[Any]:
        """Under the lock: send ``message`` with an id after its kind, then the descriptors ``fds``; the
        reply's future. ``what`` names the request in the error if the child dies first."""
        conn = self._ensure_started()
        fut: Future[Any] = Future()
        rid = self._next_id = self._next_id + 1
        self._pending[rid] = (fut, what, message[0] == "run")
        try:
            conn.send((message[0], rid, *message[1:]))
            for fd in fds:
                send_handle(conn, fd, self._proc.pid)  # type: ignore[union-attr]
        except OSError as exc:  # the child is gone: the reader fails the future (or already has)
            log.debug("compute process: send failed (%s)", exc)
        return fut

    # ------------------------------------------------------------------ Models
    def description(self, key: ModelKey) -> ModelDescription:
        """The model's description; the first request for a key loads the model in the child."""
        with self._descriptions.use(key) as description:
            return description

    def _load(self, key: ModelKey) -> ModelDescription:
        with self._lock:
            request = self._send(("load", key), _model_text(key))
        return request.result()

    def predict_batch(self, key: ModelKey, items: Sequence[Mapping[str, Any]]) -> list[Result]:
        """Each item's outputs (arrays of this process) or exception.

        If the child dies running this batch, its items run again one at a
        time in the next child, so only the item that kills it (every time)
        fails; if it dies running another batch while this one waited, this
        one runs again in the next child.
        """
        try:
            return self._predict_resent(key, items)
        except ComputeProcessDiedError as exc:
            if len(items) == 1:
                return [exc]
            log.warning("running the %d items of that batch one at a time, to fail only one that kills the compute"
                        " process again", len(items))
            return [self._predict_one(key, item) for item in items]
        except ComputeProcessError as exc:
            return [exc] * len(items)

    def _predict_one(self, key: ModelKey, item: Mapping[str, Any]) -> Result:
        try:
            return self._predict_resent(key, [item])[0]
        except ComputeProcessError as exc:
            return exc

    def _predict_resent(self, key: ModelKey, items: Sequence[Mapping[str, Any]]) -> list[Result]:
        """:meth:`_predict` in a free slot, sent again (up to :data:`RESENDS` times) if the child died while it
        waited behind another batch."""
        resends = 0
        while True:
            slot = self._slots.get()
            try:
                return self._predict(key, items, f"in{slot}", f"out{slot}")
            except ComputeProcessDiedError as exc:
                if exc.ran or resends == RESENDS:
                    raise
                resends += 1
            finally:
                self._slots.put(slot)

    def _predict(self, key: ModelKey, items: Sequence[Mapping[str, Any]], inname: str, outname: str) -> list[Result]:
        need = layout_size(items)
        with self._lock:
            if inname not in self._buffers or self._buffers[inname].size < need:
                self._grow(inname, need)
            if outname not in self._buffers:
                self._grow(outname, need)
            inbuf, outbuf = self._buffers[inname], self._buffers[outname]
        layouts = pack(items, inbuf.bytes)
        with self._lock:
            self._ensure_started()  # a child started since the buffers were chosen gets them all
            sends = [name for name in (inname, outname) if name in self._unsent]
            self._unsent.difference_update(sends)
            # the child maps the buffers sent after this message before it queues the batch
            request = self._send(("run", key, layouts, inname, outname, [(n, self._buffers[n].size) for n in sends]),
                                 _model_text(key), [self._buffers[n].fd for n in sends])
        layouts_out, pickled, needed = request.result()
        if pickled is not None:  # the outputs did not fit: they came pickled; the next batch gets room
            with self._lock:
                self._grow(outname, needed + needed // 4)
            return pickled
        used = extent([lay for lay in layouts_out if isinstance(lay, dict)])
        own = np.array(outbuf.bytes[:used])  # [used] copied out: the buffer is free for the next batch
        return [lay if isinstance(lay, Exception) else next(unpack(own, [lay])) for lay in layouts_out]

    def _grow(self, name: str, size: int) -> None:
        """Under the lock: a new buffer ``name`` of at least ``size`` bytes, sent with the next batch."""
        old = self._buffers.get(name)
        if old is not None:
            old.close()
        self._buffers[name] = SharedBuffer(max(aligned(size), 1 << 20))
        self._unsent.add(name)

    def warm(self) -> list[Any]:
        return list(self.state.warm)

    @property
    def used_bytes(self) -> int:
        return self.state.used_bytes

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to exit (SIGKILL after ``timeout``) and unmap the buffers."""
        with self._lock:
            self._closed = True
            proc, conn = self._proc, self._conn
            if conn is not None:
                try:
                    conn.send(("stop", 0))
                except OSError:
                    pass
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        held = [self._slots.get() for _ in range(SLOTS)]  # every batch has read its reply (or failed)
        with self._lock:
            for buf in self._buffers.values():
                buf.close()
            self._buffers.clear()
        for slot in held:
            self._slots.put(slot)


def _model_text(key: ModelKey) -> str:
    return f"model {key.ref!r}" if isinstance(key, ModelKey) else f"model {key!r}"


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
