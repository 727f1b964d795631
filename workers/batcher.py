"""The dynamic batcher: items from any chunk of any job, grouped into batch predictions on one device thread.

Flow of one item::

    submit ──> intake ──> decode pool: read, decode, map to a tensor ──> pending group
           (model, non-image inputs, tensor shapes: a GroupKey)
    device thread: picks a group when it holds max_batch items, or when its
    oldest item has waited max_delay_ms (twice that while other accepted
    items are still being decoded); runs predict_batch
    ──> BatchWriter: each item's outputs written (encoded, fsynced) in parallel
    ──> OutcomeReporter: the batch's outcomes counted, every job's, one round trip ──> futures resolved

This module owns grouping and scheduling; reading and decoding an item is
:mod:`workers.item_io`'s, writing :mod:`workers.writer`'s, counting
:mod:`workers.outcomes`'s. Decoding and writing run on thread pools while the
device thread computes, so the device is fed the next batch as soon as it
finishes one; the device thread itself never waits on Redis or on disk.

Decoding is paced: only ``decode_ahead`` batches' worth of items are decoded
or waiting in groups at once, the rest wait undecoded in the intake. A worker
that has prefetched hundreds of items therefore holds a few batches of
tensors, not hundreds, and decodes them a batch at a time beside the device
instead of in one burst that would take the CPU from the first batches.
Groups are keyed across chunks *and* jobs: sixteen one-image jobs for the
same model and image size become one batch of sixteen.

How a batch runs on the device (how many items per run, how many runs side
by side) is the engine's choice (:meth:`engine.CompiledModel.predict_batch`);
the runs it made are in the worker's metrics (``corral_worker_run_size``).

An item's future resolves only after its output is durable and its outcome
counted; the chunk task waits for all of its items' futures before
returning, which is when Celery acknowledges the message (late ack).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import redis

from engine.description import ModelDescription
from scheduler.protocol import ChunkItem
from scheduler.records import JobRecord, Outcome
from workers import metrics
from workers.entries import Accepted, Decoded, GroupKey
from workers.exceptions import Requeue
from workers.item_io import item_feeds
from workers.models import ModelKey, Models
from workers.outcomes import ChunkSettlement, OutcomeReporter
from workers.settings import BatcherConfig
from workers.writer import BatchWriter

log = logging.getLogger(__name__)


class Batcher:
    def __init__(self, r: redis.Redis, models: Models, model_key: Callable[[JobRecord], ModelKey],
                 config: BatcherConfig, reporter: OutcomeReporter) -> None:
        self.r = r
        self.models = models
        self.model_key = model_key
        self.config = config
        self.reporter = reporter
        self.batch_sizes: dict[int, int] = {}
        self._cond = threading.Condition()
        self._groups: OrderedDict[GroupKey, list[Decoded]] = OrderedDict()
        self._intake: deque[Accepted] = deque()  # accepted, not yet decoding
        self._decoding = 0
        self._draining = False
        self._stopped = False
        self._in_flight = 0  # batches handed to the models and not yet returned
        self._depth = max(1, models.batches_in_flight)
        # With room for two batches in the models, a second thread hands over the next full batch while one runs.
        self._dispatch = (ThreadPoolExecutor(self._depth, thread_name_prefix="corral-dispatch")
                          if self._depth > 1 else None)
        self._decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="corral-decode")
        self._writer = BatchWriter(r, reporter, config.writer_threads)
        self._device = threading.Thread(target=self._device_loop, name="corral-device", daemon=True)
        self._device.start()
        reporter.statuses.watch(self._waiting_jobs)

    # ------------------------------------------------------------------ intake
    def submit(self, job: JobRecord, items: list[ChunkItem],
               chunk: ChunkSettlement | None = None) -> list[Future[Outcome]]:
        """Take the items; each future resolves with the item's outcome once it is counted (``chunk``: the
        chunk they complete, retired with the last of them)."""
        entries = [Accepted(job, item, Future(), chunk) for item in items]
        with self._cond:
            if self._draining:
                for entry in entries:
                    entry.future.set_exception(Requeue())
                return [e.future for e in entries]
            self._intake.extend(entries)
            start = self._admit()
        self._start_decoding(start)
        return [e.future for e in entries]

    def _admit(self) -> list[Accepted]:
        """Under the lock: take items from the intake up to the decode-ahead bound; they count as decoding."""
        room = self.config.decode_ahead * self.config.max_batch - self._decoding - self._grouped()
        start = []
        while room > 0 and self._intake:
            start.append(self._intake.popleft())
            room -= 1
        self._decoding += len(start)
        return start

    def _start_decoding(self, entries: list[Accepted]) -> None:
        for entry in entries:
            self._decode_pool.submit(self._decode, entry)

    @property
    def backlog(self) -> int:
        """Items accepted and not yet in a running batch."""
        with self._cond:
            return len(self._intake) + self._decoding + self._grouped()

    def _grouped(self) -> int:
        """Under the lock: items decoded and waiting in groups (a few groups at most: one per model and shape)."""
        return sum(len(g) for g in self._groups.values())

    def _waiting_jobs(self) -> list[str]:
        """Jobs with items waiting in groups (whose cancels the status cache keeps watching)."""
        with self._cond:
            return sorted({d.entry.job.id for g in self._groups.values() for d in g})

    def _decode(self, entry: Accepted) -> None:
        """Decode pool: image -> tensor, then into its group. Failures are the item's outcome."""
        job, item = entry.job, entry.item
        try:
            if self.reporter.statuses.is_cancelled(job.id):
                self._decoded(None)
                self.reporter.report([entry.outcome(Outcome.SKIPPED)])
                return
            model = self.model_key(job)
            description = self.models.description(model)
            feeds = self._feeds(job, item, description)
            shapes = tuple((name, getattr(v, "shape", None)) for name, v in sorted(feeds.items()))
            key = GroupKey(model, json.dumps(job.inputs, sort_keys=True), shapes)
        except Exception as exc:  # noqa: BLE001 - one bad item never stops the others
            self._decoded(None)
            self.reporter.report([entry.failed(exc)])
            return
        self._decoded(key, Decoded(entry, description, feeds))

    def _feeds(self, job: JobRecord, item: ChunkItem, description: ModelDescription) -> dict[str, Any]:
        return item_feeds(self.r, job, item, description, self.config.max_pixels)

    def _decoded(self, key: GroupKey | None, decoded: Decoded | None = None) -> None:
        """An item left the decode stage: into its group, or (no key) to its outcome."""
        with self._cond:
            self._decoding -= 1
            settled = self._decoding == 0 and not self._intake  # deadlines shorten once nothing is left to decode
            if key is None or decoded is None:
                if settled:
                    self._cond.notify()
            elif self._draining:
                decoded.entry.future.set_exception(Requeue())
            else:
                group = self._groups.setdefault(key, [])
                group.append(decoded)
                # Wake the device thread only when this changes what it waits for: a new group (a new deadline),
                # a full one, or the last decode done. Otherwise it already waits for this.
                if len(group) == 1 or len(group) == self.config.max_batch or settled:
                    self._cond.notify()
            start = self._admit()
        self._start_decoding(start)

    # ------------------------------------------------------------------ device
    def _device_loop(self) -> None:
        while True:
            with self._cond:
                batch = None
                while batch is None:
                    if self._stopped and not self._groups and not self._decoding:
                        return
                    if self._in_flight >= self._depth:
                        self._cond.wait()  # until a batch returns
                        continue
                    wait = self._take_ready(full_only=self._in_flight > 0)
                    if isinstance(wait, list):
                        batch = wait
                    else:
                        self._cond.wait(wait)
                self._in_flight += 1
                start = self._admit()  # the batch left its group: decode the items that will follow it
            self._start_decoding(start)
            dispatched = False
            if self._dispatch is not None:
                try:
                    self._dispatch.submit(self._run_batch, batch)
                    dispatched = True
                except RuntimeError:  # close() gave up waiting for this thread and shut the pool down
                    pass
            if not dispatched:
                self._run_batch(batch)

    def _run_batch(self, batch: list[Decoded]) -> None:
        try:
            self._run(batch)
        except Exception as exc:  # a bug here must not kill the device thread
            log.exception("batch failed")
            for d in batch:
                if not d.entry.future.done():
                    d.entry.future.set_exception(exc)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify()

    def _take_ready(self, full_only: bool = False) -> list[Decoded] | float | None:
        """A batch to run now, or how long to wait for one (None: until notified). ``full_only`` while a batch
        runs: a partial batch keeps filling until the models are idle, so only a full one goes in beside it."""
        if not self._groups:
            return None
        now = time.monotonic()
        # While accepted items are still being decoded, a partial batch waits up to twice as long for them:
        # cutting it sooner would not serve anyone sooner (more work is already queued behind it) and would
        # spend a whole prediction on a fraction of a batch.
        delay = self.config.max_delay_ms / 1000.0 * (2 if self._decoding or self._intake else 1)
        full = [k for k, g in self._groups.items() if len(g) >= self.config.max_batch]
        if full_only and not full:
            return None
        due = full or [k for k, g in self._groups.items() if now - g[0].ready_at >= delay or self._stopped]
        if not due:
            return max(0.0, min(g[0].ready_at for g in self._groups.values()) + delay - now)
        key = min(due, key=lambda k: self._groups[k][0].ready_at)
        group = self._groups[key]
        batch, rest = group[:self.config.max_batch], group[self.config.max_batch:]
        if rest:
            self._groups[key] = rest
        else:
            del self._groups[key]
        return batch

    def _run(self, batch: list[Decoded]) -> None:
        cancelled = self.reporter.statuses.known_cancelled
        live = [d for d in batch if not cancelled(d.entry.job.id)]
        self._writer.report([d.entry.outcome(Outcome.SKIPPED) for d in batch if cancelled(d.entry.job.id)])
        if not live:
            return
        start = time.perf_counter()
        results = self.models.predict_batch(self.model_key(live[0].entry.job), [d.feeds for d in live])
        seconds = time.perf_counter() - start
        self.batch_sizes[len(live)] = self.batch_sizes.get(len(live), 0) + 1
        metrics.observe_batch(len(live), seconds)
        self._writer.write(live, results)

    # ------------------------------------------------------------------ stopping
    def drain(self) -> None:
        """Stop taking work: items not yet in a running batch are handed back (their futures get Requeue)."""
        with self._cond:
            self._draining = True
            futures = [d.entry.future for g in self._groups.values() for d in g] + [e.future for e in self._intake]
            self._groups.clear()
            self._intake.clear()
            self._cond.notify_all()
        for fut in futures:
            if not fut.done():
                fut.set_exception(Requeue())

    def close(self, timeout: float = 30.0) -> None:
        """Stop: items not yet decoding are handed back; those decoding or grouped still run."""
        self.reporter.statuses.stop(timeout)
        with self._cond:
            self._stopped = True
            handed_back = [e.future for e in self._intake]
            self._intake.clear()
            self._cond.notify_all()
        for fut in handed_back:
            if not fut.done():
                fut.set_exception(Requeue())
        self._device.join(timeout)
        if self._dispatch is not None:
            self._dispatch.shutdown(wait=True)
        self._decode_pool.shutdown(wait=True)
        self._writer.close()
