"""HTTP client of the store: ``push``, ``index``, ``manifest``, ``pull`` (resuming and verified).

Every request is retried with exponential backoff (tenacity) when the store
cannot be reached or answers 502/503/504, with one log line per retry; past
the limit :class:`StoreUnavailableError` says where the store was expected
and what to check. ``pull`` resumes a partial ``DEST.part`` with a Range
request (``If-Range`` on the expected sha256, so a changed file restarts from
zero), verifies the finished file's sha256 against the version's manifest,
and on a mismatch deletes it and downloads again, up to ``verify_attempts``;
a file that never verifies raises :class:`CorruptDownloadError` and is never
left at ``DEST``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import unquote

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from store.exceptions import CorruptDownloadError, StoreError, StoreUnavailableError
from store.refs import ModelRef, parse_ref

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8700"
RETRY_STATUSES = (502, 503, 504)
T = TypeVar("T")


class _Retryable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)


@dataclass
class RetryPolicy:
    """Backoff for an unreachable store: ``attempts`` tries within ``max_seconds``, waits doubling from ``initial``."""

    attempts: int = 6
    max_seconds: float = 60.0
    initial: float = 0.5
    maximum: float = 10.0


@dataclass
class PullResult:
    ref: ModelRef  # pinned: the version that was resolved
    path: Path
    sha256: str
    size: int
    downloaded_bytes: int  # over the network in this call (0 when DEST already verified)
    resumed_from: int  # bytes of a partial file that were kept
    attempts: int  # downloads started (more than 1 after a rejected file)


class StoreClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, verify_attempts: int = 3,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.verify_attempts = verify_attempts
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- retry

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        policy = self.retry

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("model store %s unreachable while %s (%s); retry %d/%d in %.1f s",
                        self.url, what, exc, state.attempt_number, policy.attempts - 1, wait)

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, (httpx.TransportError, _Retryable))),
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.max_seconds),
            wait=wait_exponential(multiplier=policy.initial, max=policy.maximum),
            before_sleep=log_retry, reraise=True)
        try:
            return retrying(call)
        except (httpx.TransportError, _Retryable) as exc:
            tries = retrying.statistics.get("attempt_number", policy.attempts)
            raise StoreUnavailableError(
                f"model store at {self.url} did not answer {what} after {tries} attempts "
                f"(limit {policy.attempts} attempts within {policy.max_seconds:g} s; last error: {exc}); check that `corral store serve` is running "
                "there and that CORRAL_STORE_URL points at it") from None

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        def once() -> httpx.Response:
            response = self.http.request(method, path, **kwargs)
            if response.status_code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {response.status_code}")
            return response

        return _checked(self._retrying(what, once), what)

    # ------------------------------------------------------------- reading

    def index(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/models", "listing models").json()["models"]

    def manifest(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        text = "latest" if version is None else str(version)
        return self._request("GET", f"/v1/models/{name}/{text}", f"reading the manifest of {name}:{text}").json()

    def locate(self, ref: ModelRef | str) -> tuple[ModelRef, str, int]:
        """Pin ``ref`` to a version and learn its variant's sha256 and size (the store makes it if needed)."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        head = self._request("HEAD", _package_path(ref), f"locating {ref}")
        pinned = ref.with_version(int(head.headers["x-corral-version"]))
        manifest = self.manifest(pinned.name, pinned.version)
        entry = manifest["variants"].get(pinned.variant)
        if entry is None:
            raise StoreError(f"{pinned}: the store served the variant but its manifest does not list it")
        return pinned, str(entry["sha256"]), int(entry["size"])

    def pull(self, ref: ModelRef | str, dest: str | os.PathLike[str]) -> PullResult:
        """Download ``ref`` to ``dest``, resuming ``dest.part``; verified against the manifest's sha256."""
        pinned, sha, size = self.locate(ref)
        return self.download(pinned, sha, size, dest)

    def download(self, pinned: ModelRef, sha: str, size: int, dest: str | os.PathLike[str]) -> PullResult:
        dest = Path(dest)
        if dest.is_file() and dest.stat().st_size == size and _sha256(dest) == sha:
            return PullResult(pinned, dest, sha, size, 0, size, 0)
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        total = 0
        first_resume = part.stat().st_size if part.is_file() else 0
        for attempt in range(1, self.verify_attempts + 1):
            total += self._retrying(f"downloading {pinned}", lambda: self._fetch_into(pinned, sha, size, part))
            got = _sha256(part)
            if got == sha:
                os.replace(part, dest)
                return PullResult(pinned, dest, sha, size, total, first_resume, attempt)
            part.unlink(missing_ok=True)
            log.warning("model %s from %s: sha256 %s does not match the manifest's %s; discarded it "
                        "(attempt %d/%d)", pinned, self.url, got[:12], sha[:12], attempt, self.verify_attempts)
            _on_reject()
        raise CorruptDownloadError(
            f"model {pinned} from {self.url}: every download ({self.verify_attempts}) failed sha256 "
            "verification against the manifest; the file was discarded and nothing was loaded. The store's "
            "copy or the network path is corrupt: ask the store's operator to check it")

    def _fetch_into(self, pinned: ModelRef, sha: str, size: int, part: Path) -> int:
        """Append the missing bytes of the package to ``part``; bytes received."""
        have = part.stat().st_size if part.is_file() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            return 0
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{sha}"'} if have else {}
        received = 0
        with self.http.stream("GET", _package_path(pinned), headers=headers) as response:
            if response.status_code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {response.status_code}")
            if response.status_code == 416:  # the partial file is not a prefix of this package
                part.unlink(missing_ok=True)
                raise _Retryable("partial download did not fit the package; starting again")
            if response.status_code not in (200, 206):
                response.read()
                _checked(response, f"downloading {pinned}")
            mode = "ab" if response.status_code == 206 else "wb"
            with open(part, mode) as out:
                for chunk in response.iter_bytes(1 << 16):
                    out.write(chunk)
                    received += len(chunk)
                    _on_bytes(len(chunk))
        return received

    # ------------------------------------------------------------- writing

    def add_calibration(self, name: str, version: int | str, data: bytes) -> dict[str, Any]:
        """Upload a calibration set (its ``.npz`` bytes) for one version; the store answers with the manifest."""
        target = f"/v1/calibrations/{name}/{version}"

        def send() -> httpx.Response:
            response = self.http.put(target, content=data, headers={"Content-Type": "application/x-npz"})
            if response.status_code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {response.status_code}")
            return response

        return _checked(self._retrying(f"uploading the calibration set of {name}:{version}", send),
                        f"uploading the calibration set of {name}:{version}").json()

    def push(self, path: str | os.PathLike[str], name: str, version: int | None = None) -> dict[str, Any]:
        """Upload a package; the store answers with the new version's manifest."""
        path = Path(path)
        target = f"/v1/models/{name}" if version is None else f"/v1/models/{name}/{version}"
        method = "POST" if version is None else "PUT"

        def send() -> httpx.Response:
            with open(path, "rb") as f:
                response = self.http.request(method, target, content=f,
                                             headers={"Content-Type": "application/vnd.corral.model",
                                                      "Content-Length": str(path.stat().st_size)})
            if response.status_code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {response.status_code}")
            return response

        return _checked(self._retrying(f"uploading {path.name}", send), f"uploading {path}").json()


def _package_path(ref: ModelRef) -> str:
    return f"/v1/models/{ref.name}/{ref.version_text}/{ref.variant}"


def _checked(response: httpx.Response, what: str) -> httpx.Response:
    if response.is_success:
        return response
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text or unquote(response.headers.get("X-Corral-Detail", ""))
    raise StoreError(f"model store refused {what}: HTTP {response.status_code}: {detail}", response.status_code)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _on_bytes(n: int) -> None:
    from store.metrics import FETCH

    FETCH.bytes.inc(n)


def _on_reject() -> None:
    from store.metrics import FETCH

    FETCH.rejected.inc()
