"""Worker side: turn a model reference into a compiled model, verified, compiled once, cached on disk.

    fetcher = ModelFetcher.from_settings(StoreClientSettings(url="http://store:8700"))  # or a local root
    compiled = fetcher.fetch("style:2@lut4", device="cpu", backend="auto")

Steps on first need: locate the package (pinning ``latest`` to a number),
download it into the package cache (resuming; skipped when a verified copy
is there), verify its sha256 against the manifest, compile it with the
engine's compiled-model disk cache, and trim both caches to their byte
budgets. A restarted worker finds the verified package and the compiled
entry on disk and neither downloads nor compiles. Nothing is loaded before
its sha256 matches. The memory level is the worker's
:class:`workers.model_cache.ModelCache`; give it :meth:`ModelFetcher.loader`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

from store.client import RetryPolicy, StoreClient
from store.exceptions import CorruptDownloadError
from store.metrics import FETCH
from store.refs import ModelRef, looks_like_ref, parse_ref
from store.repository import Repository
from store.settings import StoreClientSettings, default_cache_root
from store.variants import sha256_file

log = logging.getLogger(__name__)

DEFAULT_PACKAGE_BUDGET = 4 << 30
DEFAULT_COMPILED_BUDGET = 8 << 30


class PackageSource(Protocol):
    """Where packages come from: a store root read directly, or a store service."""

    def locate(self, ref: ModelRef) -> tuple[ModelRef, str, int]:
        """``ref`` pinned to a version, with its package's sha256 and size."""

    def materialize(self, pinned: ModelRef, sha256: str, size: int, cache: Path) -> Path:
        """A local file holding exactly that package (verified)."""

    def describe(self, ref: ModelRef) -> dict[str, Any]:
        """The ``model`` section of the version's manifest."""


class LocalSource:
    """A store root on this machine, read without a server (the embedded default)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.repo = Repository(root)

    def __repr__(self) -> str:
        return f"local store {self.repo.root}"

    def locate(self, ref: ModelRef) -> tuple[ModelRef, str, int]:
        pinned = ref.with_version(self.repo.resolve(ref.name, ref.version))
        found = self.repo.variant(pinned)
        return pinned, found.sha256, found.size

    def describe(self, ref: ModelRef) -> dict[str, Any]:
        return dict(self.repo.manifest(ref.name, ref.version).get("model", {}))

    def materialize(self, pinned: ModelRef, sha256: str, size: int, cache: Path) -> Path:
        path = self.repo.variant(pinned).path
        got = sha256_file(path)
        if got != sha256:
            FETCH.rejected.inc()
            raise CorruptDownloadError(f"model {pinned}: the store file {path} has sha256 {got[:12]}…, not the "
                                       f"recorded {sha256[:12]}…; it was changed after it was stored. Delete it "
                                       "(and its .json record) so the store rebuilds it, or re-push the model")
        return path


class RemoteSource:
    """A store service (``CORRAL_STORE_URL``)."""

    def __init__(self, client: StoreClient) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"model store {self.client.url}"

    def locate(self, ref: ModelRef) -> tuple[ModelRef, str, int]:
        return self.client.locate(ref)

    def describe(self, ref: ModelRef) -> dict[str, Any]:
        return dict(self.client.manifest(ref.name, ref.version_text).get("model", {}))

    def materialize(self, pinned: ModelRef, sha256: str, size: int, cache: Path) -> Path:
        dest = package_path(cache, pinned, sha256)
        result = self.client.download(pinned, sha256, size, dest)
        if result.downloaded_bytes:
            FETCH.downloads.inc()
        return result.path


def package_path(cache: Path, pinned: ModelRef, sha256: str) -> Path:
    """Where a downloaded package lives; the sha256 in the name ties the file to its manifest entry."""
    return cache / pinned.name / str(pinned.version) / f"{pinned.variant}-{sha256[:16]}.corral"


@dataclass
class FetchTimes:
    """Seconds per step of the last :meth:`ModelFetcher.fetch` (0 for a step that was skipped)."""

    locate: float = 0.0
    download: float = 0.0
    verify: float = 0.0
    load: float = 0.0
    compile: float = 0.0
    level: str = ""  # compiled-cache | package-cache | download
    extra: dict[str, Any] = field(default_factory=dict)


class ModelFetcher:
    def __init__(self, source: PackageSource, cache_root: str | os.PathLike[str] | None = None, *,
                 package_budget: int = DEFAULT_PACKAGE_BUDGET, compiled_budget: int = DEFAULT_COMPILED_BUDGET) -> None:
        root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
        self.source = source
        self.packages = root / "packages"
        self.compiled = root / "compiled"
        self.pins = root / "pins.json"  # pinned ref -> sha256/size, so a restart needs no store round trip
        self.package_budget = package_budget
        self.compiled_budget = compiled_budget
        self.last = FetchTimes()
        for d in (self.packages, self.compiled):
            d.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: StoreClientSettings, *, retry: RetryPolicy | None = None) -> ModelFetcher:
        """The store service ``settings.url`` if set, else the local store ``settings.root``.

        A store that is down is retried for ``settings.wait_s`` seconds before a fetch fails.
        """
        if retry is None:
            retry = RetryPolicy(attempts=max(2, int(settings.wait_s) + 2), max_seconds=settings.wait_s)
        if settings.url:
            source: PackageSource = RemoteSource(StoreClient(settings.url, settings.token, retry=retry))
        else:
            source = LocalSource(settings.root)
        return cls(source, settings.cache_dir)

    # -------------------------------------------------------------- public

    def pin(self, ref: str | ModelRef) -> str:
        """``ref`` with ``latest`` replaced by the current version number (what a job should record)."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        pinned, _sha, _size = self._locate(ref)
        return str(pinned)

    def fetch_package(self, ref: str | ModelRef) -> Path:
        """A verified local file of the package ``ref`` names (downloaded if needed)."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        times = self.last = FetchTimes()
        started = time.perf_counter()
        pinned, sha, size = self._locate(ref)
        times.locate = time.perf_counter() - started
        cached = package_path(self.packages, pinned, sha)
        times.level = "package-cache" if cached.is_file() else "download"
        started = time.perf_counter()
        path = self.source.materialize(pinned, sha, size, self.packages)
        times.download = time.perf_counter() - started
        started = time.perf_counter()
        got = sha256_file(path)  # checked again here: a cached file may have been changed since
        times.verify = time.perf_counter() - started
        if got != sha:
            if path.is_relative_to(self.packages):  # never delete a file inside a local store root
                path.unlink(missing_ok=True)
            FETCH.rejected.inc()
            raise CorruptDownloadError(f"model {pinned}: {path} has sha256 {got[:12]}…, the manifest says "
                                       f"{sha[:12]}…; it was discarded. Fetch again")
        _touch(path)
        return path

    def fetch(self, ref: str | ModelRef, device: str = "cpu", backend: str = "auto",
              precision: str = "fp32") -> Any:
        """The compiled model for ``ref`` on ``device`` with ``backend`` (and ``precision``, see
        :func:`engine.compile`): an :class:`engine.CompiledModel`."""
        path = self.fetch_package(ref)
        return self._compile(path, str(ref), device, backend, self.last, precision)

    def load_path(self, path: str | os.PathLike[str], device: str = "cpu", backend: str = "auto",
                  precision: str = "fp32") -> Any:
        """The compiled model for a package file given by path (no store), through the same compiled cache."""
        times = self.last = FetchTimes(level="path")
        return self._compile(Path(path), str(path), device, backend, times, precision)

    def describe(self, ref: str | ModelRef) -> dict[str, Any]:
        """What the store's manifest says about the model ``ref`` names (inputs, outputs, ops, custom
        classes), without downloading the package."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        return self.source.describe(ref)

    def _compile(self, path: Path, what: str, device: str, backend: str, times: FetchTimes,
                 precision: str = "fp32") -> Any:
        import engine

        started = time.perf_counter()
        model = engine.load(path)
        times.load = time.perf_counter() - started
        started = time.perf_counter()
        compiled = engine.compile(model, backend=backend, device=device, cache_dir=self.compiled,
                                  precision=precision)
        times.compile = time.perf_counter() - started
        if compiled.from_cache:
            times.level = "compiled-cache"
        FETCH.compile_seconds.labels(str(compiled.from_cache).lower()).observe(times.compile)
        FETCH.hits.labels(times.level).inc()
        log.info("model %s ready on %s/%s from %s (locate %.3f s, download %.3f s, verify %.3f s, "
                 "load %.3f s, compile %.3f s)", what, backend, device, times.level, times.locate,
                 times.download, times.verify, times.load, times.compile)
        self.trim()
        return compiled

    def loader(self, key: tuple[str, str, str, str]) -> Any:
        """A :class:`workers.model_cache.ModelCache` loader for keys ``(ref, backend, device, precision)``."""
        ref, backend, device, precision = key
        return self.fetch(ref, device=device, backend=backend, precision=precision)

    def trim(self) -> None:
        """Keep each disk cache under its budget, dropping the least recently used files."""
        _trim(self.packages, "*.corral", self.package_budget)
        _trim(self.compiled, "*.npz", self.compiled_budget)

    # ------------------------------------------------------------- helpers

    def _locate(self, ref: ModelRef) -> tuple[ModelRef, str, int]:
        """Pinned refs seen before are answered from ``pins.json`` (remote stores; versions are immutable)."""
        pins = self._read_pins() if isinstance(self.source, RemoteSource) else {}
        if ref.pinned and str(ref) in pins:
            entry = pins[str(ref)]
            return ref, entry["sha256"], entry["size"]
        pinned, sha, size = self.source.locate(ref)
        with FileLock(str(self.pins) + ".lock"):
            pins = self._read_pins()
            pins[str(pinned)] = {"sha256": sha, "size": size}
            tmp = self.pins.with_name(f".pins.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(pins, sort_keys=True))
            os.replace(tmp, self.pins)
        return pinned, sha, size

    def _read_pins(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.pins.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _trim(folder: Path, pattern: str, budget: int) -> None:
    files = []
    for p in folder.rglob(pattern):
        try:
            st = p.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in files)
    # the newest file always stays, even over budget: it is the one just fetched
    for _, size, path in sorted(files)[:-1]:
        if total <= budget:
            break
        path.unlink(missing_ok=True)
        total -= size
        log.info("model cache over its %d-byte budget: removed %s", budget, path)


_default: ModelFetcher | None = None
_default_settings = StoreClientSettings()
_default_lock = threading.Lock()


def configure(settings: StoreClientSettings) -> None:
    """Set what :func:`default_fetcher` uses in this process (the CLI does, from its settings)."""
    global _default, _default_settings
    with _default_lock:
        _default_settings = settings
        _default = None


def default_fetcher() -> ModelFetcher:
    """This process's fetcher, made on first use from the settings given to :func:`configure`
    (the built-in defaults, a local store under ~/.local/share/corral/store, until then)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelFetcher.from_settings(_default_settings)
        return _default


def is_store_ref(text: str) -> bool:
    """True for ``name[:version][@variant]``; False for a package path (an existing file or a ``.corral`` name)."""
    return looks_like_ref(text) and not os.path.exists(text)
