"""Prometheus metrics: the store service's (one registry per app) and the worker side's fetches.

Service: downloads and bytes by variant, variant builds and their time,
uploads by outcome. Worker side (``FETCH``, on the default registry that a
worker's metrics endpoint exports): downloads and bytes, verification
failures, compile time, and where each fetch was answered from.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

BUILD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


class StoreMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.downloads = Counter("corral_store_downloads", "Package downloads served (full or ranged)",
                                 ["variant", "kind"], registry=r)
        self.bytes = Counter("corral_store_download_bytes", "Package bytes requested by downloads",
                             ["variant"], registry=r)
        self.builds = Counter("corral_store_variant_builds", "Variants made from a float master",
                              ["variant"], registry=r)
        self.build_seconds = Histogram("corral_store_variant_build_seconds", "Time to make one variant",
                                       ["variant"], buckets=BUILD_BUCKETS, registry=r)
        self.uploads = Counter("corral_store_uploads", "Uploads by outcome", ["outcome"], registry=r)

    def built(self, variant: str, seconds: float) -> None:
        self.builds.labels(variant).inc()
        self.build_seconds.labels(variant).observe(seconds)


class FetchMetrics:
    """Worker-side counters; one instance per process on the default registry (see :data:`FETCH`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = REGISTRY if registry is None else registry
        self.downloads = Counter("corral_worker_model_downloads", "Model packages downloaded from the store",
                                 registry=r)
        self.bytes = Counter("corral_worker_model_download_bytes", "Model package bytes downloaded", registry=r)
        self.rejected = Counter("corral_worker_model_rejected", "Downloads rejected by sha256 verification",
                                registry=r)
        self.compile_seconds = Histogram("corral_worker_model_compile_seconds",
                                         "Time to compile (or load from the compiled cache) one model",
                                         ["from_cache"], buckets=BUILD_BUCKETS, registry=r)
        self.hits = Counter("corral_worker_model_fetches", "Model fetches by the level that answered",
                            ["level"], registry=r)

    def collectors(self) -> tuple[Counter | Histogram, ...]:
        return self.downloads, self.bytes, self.rejected, self.compile_seconds, self.hits


FETCH = FetchMetrics()
