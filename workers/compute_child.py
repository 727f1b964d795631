"""The compute process's side (``python -m workers.compute_child FD``): models loaded, batches run.

Started by :class:`workers.compute.ComputeProcess` with one end of a socket
pair as ``FD``. The first message is its
:class:`~workers.compute.ComputeSettings`; once they are applied (plugins
loaded) it says ``(0, True, "ready", state)``. Then requests, each answered
with ``(id, ok, payload, state)``:

* ``("load", id, key)``: load the model (fetch, verify, compile, or the
  compiled cache), on a loader thread so batches keep running; payload: its
  description.
* ``("run", id, key, layouts, in, out, buffers)``: first map the
  ``buffers`` whose descriptors follow the message (``(name, size)``, such
  as ``"in0"`` or ``"out1"``), then predict the items laid out in the input
  buffer ``in``, on the compute thread, one batch after another; payload:
  ``(output layouts in the buffer out or per-item exceptions, None, 0)``,
  or when the outputs do not fit it ``(None, results, bytes needed)``.
* ``("stop", 0)``: exit. So does the end of the connection (the worker died).

Signals meant for the worker (Ctrl-C in a terminal reaches the whole
process group) are ignored: the worker decides when this process ends.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any

from engine.custom import load_plugins
from engine.memory import retain_freed_memory
from engine.ops.threads import set_num_threads
from store.fetch import ModelFetcher
from store.metrics import FETCH
from workers.compute_wire import ChildState, ComputeSettings, Layout, SharedBuffer, layout_size, pack, portable, unpack
from workers.models import Result, compiled_models, predict_isolated

log = logging.getLogger("workers.compute")


class ComputeServer:
    def __init__(self, conn: Connection, settings: ComputeSettings) -> None:
        self.conn = conn
        retain_freed_memory()  # each batch reuses the last one's activations instead of faulting in fresh pages
        load_plugins(list(settings.plugins))
        if settings.num_threads is not None:
            set_num_threads(settings.num_threads)
        fetcher = ModelFetcher.from_settings(settings.store)
        self._runs_made: list[tuple[int, float]] = []  # engine runs not yet reported (list.append is atomic)
        self.cache = compiled_models(fetcher, settings.memory_budget,
                                     on_run=lambda items, seconds: self._runs_made.append((items, seconds)))
        self.buffers: dict[str, SharedBuffer] = {}
        self._send_lock = threading.Lock()
        self._runs: queue.Queue[tuple[int, Any, list[Layout], str, str] | None] = queue.Queue()

    def serve(self) -> None:
        compute = threading.Thread(target=self._compute_loop, name="corral-compute", daemon=True)
        compute.start()
        self._reply(0, True, "ready")
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break  # the worker is gone
            kind, rid = message[0], message[1]
            if kind == "stop":
                break
            if kind == "load":
                threading.Thread(target=self._load, args=(rid, message[2]), name="corral-load", daemon=True).start()
            elif kind == "run":
                _, _, key, layouts, inname, outname, buffers = message
                for name, size in buffers:
                    self._map(name, size, recv_handle(self.conn))
                self._runs.put((rid, key, layouts, inname, outname))
        self._runs.put(None)
        compute.join()

    def _map(self, name: str, size: int, fd: int) -> None:
        old = self.buffers.get(name)
        self.buffers[name] = SharedBuffer(size, fd)
        if old is not None:
            old.close()

    def _reply(self, rid: int, ok: bool, payload: Any) -> None:
        runs, self._runs_made = self._runs_made, []
        state = ChildState(self.cache.warm(), self.cache.used_bytes, fetch_metrics(), runs)
        with self._send_lock:
            try:
                self.conn.send((rid, ok, payload, state))
            except OSError:
                pass  # the worker is gone; the main loop ends on its own

    def _load(self, rid: int, key: Any) -> None:
        try:
            with self.cache.use(key) as model:
                description = model.description
        except Exception as exc:  # noqa: BLE001 - the load's error is the worker's to report, per item
            self._reply(rid, False, portable(exc))
            return
        self._reply(rid, True, description)

    def _compute_loop(self) -> None:
        while True:
            job = self._runs.get()
            if job is None:
                return
            rid, key, layouts, inname, outname = job
            try:
                payload = self._run(key, layouts, inname, outname)
            except Exception as exc:  # noqa: BLE001 - e.g. the model failed to load: the whole batch's error
                self._reply(rid, False, portable(exc))
                continue
            self._reply(rid, True, payload)
            del payload

    def _run(self, key: Any, layouts: list[Layout], inname: str,
             outname: str) -> tuple[list[Layout | Exception] | None, Any, int]:
        # The items are views of the input buffer (and a model may return them as outputs): they must be gone
        # when this returns, before a later message may replace the buffer (the worker replaces a slot's
        # buffers only once it has this batch's reply).
        items = list(unpack(self.buffers[inname].bytes, layouts))
        with self.cache.use(key) as model:
            return self._outputs(predict_isolated(model, items), self.buffers[outname])

    def _outputs(self, results: Sequence[Result],
                 out: SharedBuffer) -> tuple[list[Layout | Exception] | None, Any, int]:
        """Copy each item's outputs into the output buffer; if they do not fit, send them pickled instead."""
        outputs = [r for r in results if not isinstance(r, Exception)]
        needed = layout_size(outputs)
        if needed > out.size:
            return None, [portable(r) if isinstance(r, Exception) else r for r in results], needed
        packed = iter(pack(outputs, out.bytes))
        return [portable(r) if isinstance(r, Exception) else next(packed) for r in results], None, 0


def fetch_metrics() -> list[Any]:
    """This process's fetch metric families (downloads, compile time, fetches by level), for the worker to export."""
    return [family for metric in FETCH.collectors() for family in metric.collect()]


def main(argv: list[str]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s[compute]: %(message)s")
    conn = Connection(int(argv[0]))
    try:
        settings: ComputeSettings = conn.recv()
    except (EOFError, OSError):
        return
    ComputeServer(conn, settings).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
