"""Writing a batch's outputs: each item's files on a thread pool, then one report of the whole batch.

An item's outputs are encoded and fsynced by its writer thread; the batch's
last write syncs the output directories (so the renames survive a power
loss) and hands every outcome of the batch to the
:class:`~workers.outcomes.OutcomeReporter`, one round trip. Until then no
item of the batch counts as done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from scheduler.records import Outcome
from workers.entries import Decoded, Settled
from workers.item_io import sync_directories, write_outputs
from workers.models import Result
from workers.outcomes import OutcomeReporter

log = logging.getLogger(__name__)


class _BatchWrites:
    """Collects a batch's outcomes from the writer threads; the last one to arrive gets them all."""

    def __init__(self, size: int) -> None:
        self._left = size
        self._done: list[Settled] = []
        self.written: list[Path] = []  # output files of the batch, whose directories are synced before counting
        self._lock = threading.Lock()

    def files(self, paths: list[Path]) -> None:
        with self._lock:
            self.written.extend(paths)

    def add(self, settled: Settled) -> list[Settled] | None:
        with self._lock:
            self._done.append(settled)
            self._left -= 1
            return self._done if self._left == 0 else None


class BatchWriter:
    def __init__(self, r: redis.Redis, reporter: OutcomeReporter, threads: int) -> None:
        self.r = r
        self.reporter = reporter
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="corral-write")

    def write(self, batch: Sequence[Decoded], results: Sequence[Result]) -> None:
        """Write each item's outputs (or record its failure); the batch is reported once all are in."""
        writes = _BatchWrites(len(batch))
        for decoded, result in zip(batch, results):
            self._pool.submit(self._write, decoded, result, writes)

    def report(self, settled: list[Settled]) -> None:
        """Outcomes without outputs (skipped items), reported on a writer thread."""
        if settled:
            self._pool.submit(self.reporter.report, settled)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _write(self, decoded: Decoded, result: Result, writes: _BatchWrites) -> None:
        entry = decoded.entry
        if isinstance(result, Exception):
            settled = entry.failed(result)
        else:
            try:
                writes.files(write_outputs(self.r, entry.job, entry.item, result, decoded.description))
                settled = entry.outcome(Outcome.DONE)
            except Exception as exc:  # noqa: BLE001 - an item's failure is its outcome
                settled = entry.failed(exc)
        done = writes.add(settled)
        if done is None:
            return
        try:
            sync_directories(writes.written)
        except OSError as exc:  # the renames may not survive a crash: count nothing, let the chunks come back
            log.warning("could not sync output directories (%s); the batch's chunks will be redelivered", exc)
            for s in done:
                if not s.entry.future.done():
                    s.entry.future.set_exception(exc)
            return
        self.reporter.report(done, batch_size=len(done))
