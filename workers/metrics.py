"""A worker's Prometheus metrics, served over HTTP by ``corral worker --metrics-port N``.

All live on prometheus_client's default registry, next to the model
fetcher's (:data:`store.metrics.FETCH`: downloads, bytes, verification
failures, compile time, fetches by the cache level that answered), so one
endpoint exports both:

* ``corral_worker_batch_size`` / ``corral_worker_batch_seconds``: histograms
  of each batch prediction's size and wall time (the batcher calls
  :func:`observe_batch`);
* ``corral_worker_run_size`` / ``corral_worker_run_seconds``: the runs the
  engine made of those batches (how many items it stacked into one run, and
  each run's wall time; :func:`observe_run`). The batcher decides which items
  travel together, the engine how they run, and this is where it shows;
* ``corral_worker_items_total{outcome}``: items done / failed / skipped;
* ``corral_worker_backlog``: items accepted and not yet in a running batch;
* ``corral_worker_model_fetches_total{level="memory"}``: requests the warm
  memory cache answered (the other levels are counted by the fetcher);
* ``corral_worker_warm_model_bytes``: bytes of models kept warm.

A worker whose models live in its compute process (:mod:`workers.compute`)
fetches them there; :func:`export_fetches` then exports that process's fetch
metrics, as it last reported them, in place of this process's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.registry import Collector

from store.metrics import FETCH
from workers.exceptions import MetricsPortError

log = logging.getLogger(__name__)

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

BATCH_SIZE = Histogram("corral_worker_batch_size", "Items per batch prediction", buckets=BATCH_SIZE_BUCKETS)
BATCH_SECONDS = Histogram("corral_worker_batch_seconds", "Wall time of one batch prediction",
                          buckets=BATCH_SECONDS_BUCKETS)
RUN_SIZE = Histogram("corral_worker_run_size", "Items stacked into one run of the engine",
                     buckets=BATCH_SIZE_BUCKETS)
RUN_SECONDS = Histogram("corral_worker_run_seconds", "Wall time of one run of the engine",
                        buckets=BATCH_SECONDS_BUCKETS)
ITEMS = Counter("corral_worker_items", "Items finished by outcome", ["outcome"])
BACKLOG = Gauge("corral_worker_backlog", "Items accepted and not yet in a running batch")
WARM_BYTES = Gauge("corral_worker_warm_model_bytes", "Bytes of compiled models kept warm in memory")

for _outcome in ("done", "failed", "skipped"):
    ITEMS.labels(_outcome)  # exported as 0 from the start, so rates work before the first failure


def observe_batch(size: int, seconds: float) -> None:
    """Record one batch prediction of ``size`` items that took ``seconds``."""
    BATCH_SIZE.observe(size)
    BATCH_SECONDS.observe(seconds)


def observe_run(size: int, seconds: float) -> None:
    """Record one run of the engine over ``size`` stacked items that took ``seconds``."""
    RUN_SIZE.observe(size)
    RUN_SECONDS.observe(seconds)


def observe_item(outcome: str) -> None:
    """Record one finished item (``done``, ``failed`` or ``skipped``)."""
    ITEMS.labels(outcome).inc()


def observe_memory_hit() -> None:
    """A model request answered by the warm memory cache."""
    FETCH.hits.labels("memory").inc()


def track(backlog: Callable[[], int], warm_bytes: Callable[[], int]) -> None:
    """Read the backlog and warm bytes from these functions at each scrape."""
    BACKLOG.set_function(backlog)
    WARM_BYTES.set_function(warm_bytes)


class _Reported(Collector):
    """Metric families as another process last reported them."""

    def __init__(self, families: Callable[[], Iterable[Any]]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families()

    def describe(self) -> list[Any]:
        return []  # the families are known only once reported: not checked against the registry's names


def export_fetches(families: Callable[[], Iterable[Any]]) -> None:
    """Export the fetch metrics ``families()`` returns at each scrape, instead of this process's own."""
    for metric in FETCH.collectors():
        try:
            REGISTRY.unregister(metric)
        except KeyError:
            pass  # already replaced
    REGISTRY.register(_Reported(families))


def serve(port: int, host: str = "0.0.0.0") -> int:
    """Start the endpoint (``/metrics``) on a daemon thread; returns the port it listens on."""
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise MetricsPortError(f"the metrics endpoint could not listen on {host}:{port} ({exc.strerror or exc}); "
                               "pick another --metrics-port, or 0 for none") from None
    bound = server.server_address[1]
    log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
    return bound
