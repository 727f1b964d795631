"""The store's HTTP API (FastAPI); ``create_app(config)`` builds it, ``corral store serve`` runs it.

    GET       /v1/models                              index
    GET       /v1/models/{name}                       one model's index entry
    GET       /v1/models/{name}/{version}             manifest (version: a number or latest)
    GET|HEAD  /v1/models/{name}/{version}/{variant}   package bytes: ETag = "sha256", Range, If-None-Match
    POST      /v1/models/{name}                       upload the next version (bearer token)
    PUT       /v1/models/{name}/{version}             upload a given, new version (bearer token)
    GET       /metrics                                Prometheus

Downloads go through Starlette's FileResponse, which answers single and
multiple Range requests (206) and unsatisfiable ones (416). Handlers that
touch the disk are plain ``def`` so they run on the thread pool; a variant
build blocks only the requests that wait for that variant.
"""

from __future__ import annotations

import hmac
import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.exceptions import InputError, ModelFormatError
from store.config import StoreServerSettings
from store.exceptions import ModelRefError, NotFoundError, UnknownVariantError, VersionExistsError
from store.metrics import StoreMetrics
from store.refs import ModelRef, check_name, parse_version
from store.repository import Repository
from store.variants import VariantMaker

log = logging.getLogger(__name__)

PACKAGE_TYPE = "application/vnd.corral.model"
VERSION_HEADER = "X-Corral-Version"
SHA_HEADER = "X-Corral-Sha256"
# why a request was refused, for HEAD replies, which have no body (URL-quoted)
DETAIL_HEADER = "X-Corral-Detail"


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check_token(request: Request, expected: str | None, action: str) -> None:
    if expected is None:
        raise HTTPException(403, f"{action} is disabled on this store: start it with --token-file")
    given = _bearer(request)
    if given is None:
        raise HTTPException(401, f"{action} needs a bearer token (Authorization: Bearer ...); "
                                 "pass --token-file to the client", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(403, f"{action}: the bearer token is wrong")


def _ref(name: str, version: str, variant: str = "fp32") -> ModelRef:
    try:
        return ModelRef(check_name(name), parse_version(version), check_name(variant, "variant"))
    except ModelRefError as exc:
        raise HTTPException(400, str(exc)) from None


def create_app(config: StoreServerSettings) -> FastAPI:
    metrics = StoreMetrics()
    repo = Repository(config.root, maker=VariantMaker(config.recipes, on_build=metrics.built))
    token = config.token()  # read once: a bad token file fails at start-up

    app = FastAPI(title="corral model store", version="1",
                  description="Versioned model packages and their quantized variants, made on demand.")
    app.state.repo = repo
    app.state.metrics = metrics
    app.state.config = config

    def can_read(request: Request) -> None:
        if config.protect_reads:
            _check_token(request, token, "reading")

    def can_write(request: Request) -> None:
        _check_token(request, token, "uploading")

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return _refusal(str(exc), 404)

    @app.exception_handler(UnknownVariantError)
    async def _unknown_variant(request: Request, exc: UnknownVariantError) -> JSONResponse:
        return _refusal(str(exc), 404)

    @app.exception_handler(ModelRefError)
    async def _bad_ref(request: Request, exc: ModelRefError) -> JSONResponse:
        return _refusal(str(exc), 400)

    @app.get("/v1/models", dependencies=[Depends(can_read)])
    def index() -> dict[str, Any]:
        return {"models": repo.index()}

    @app.get("/v1/models/{name}", dependencies=[Depends(can_read)])
    def model(name: str) -> dict[str, Any]:
        check = _ref(name, "latest")
        entries = [m for m in repo.index() if m["name"] == check.name]
        if not entries:
            raise NotFoundError(f"model {name!r} is not in the store")
        return entries[0]

    @app.get("/v1/models/{name}/{version}", dependencies=[Depends(can_read)])
    def manifest(name: str, version: str) -> dict[str, Any]:
        ref = _ref(name, version)
        return repo.manifest(ref.name, ref.version)

    @app.get("/v1/models/{name}/{version}/{variant}", dependencies=[Depends(can_read)],
             response_class=FileResponse, operation_id="download_package")
    @app.head("/v1/models/{name}/{version}/{variant}", dependencies=[Depends(can_read)],
              response_class=FileResponse, operation_id="head_package")
    def package(name: str, version: str, variant: str, request: Request) -> Response:
        ref = _ref(name, version, variant)
        number = repo.resolve(ref.name, ref.version)
        found = repo.variant(ref.with_version(number))
        etag = f'"{found.sha256}"'
        headers = {"ETag": etag, VERSION_HEADER: str(number), SHA_HEADER: found.sha256,
                   "Cache-Control": "public, max-age=31536000, immutable" if ref.pinned else "no-cache"}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=headers)
        if request.method == "GET":
            ranged = request.headers.get("range")
            metrics.downloads.labels(found.variant, "range" if ranged else "full").inc()
            metrics.bytes.labels(found.variant).inc(_requested_bytes(ranged, found.size))
        return FileResponse(found.path, media_type=PACKAGE_TYPE, headers=headers,
                            filename=f"{ref.name}-{number}-{found.variant}.corral")

    @app.post("/v1/models/{name}", status_code=201, dependencies=[Depends(can_write)])
    async def upload_next(name: str, request: Request) -> dict[str, Any]:
        ref = _ref(name, "latest")
        return await _receive(request, ref.name, None)

    @app.put("/v1/models/{name}/{version}", status_code=201, dependencies=[Depends(can_write)])
    async def upload_version(name: str, version: str, request: Request) -> dict[str, Any]:
        ref = _ref(name, version)
        if ref.version is None:
            raise HTTPException(400, "PUT needs a version number; POST /v1/models/{name} takes the next one")
        return await _receive(request, ref.name, ref.version)

    @app.put("/v1/calibrations/{name}/{version}", status_code=201, dependencies=[Depends(can_write)])
    async def upload_calibration(name: str, version: str, request: Request) -> dict[str, Any]:
        """A version's calibration set (the ``.npz`` of :class:`engine.quantize.CalibrationSet`), once."""
        ref = _ref(name, version)
        limit = config.max_upload_bytes
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, f"upload exceeds this store's limit of {limit} bytes")
        try:
            return await run_in_threadpool(repo.add_calibration, ref.name, ref.version, bytes(body))
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        except VersionExistsError as exc:
            raise HTTPException(409, str(exc)) from None

    async def _receive(request: Request, name: str, version: int | None) -> dict[str, Any]:
        """Stream the body to a file under the root, refusing it past the size limit; then publish it."""
        limit = config.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            metrics.uploads.labels("too_large").inc()
            raise HTTPException(413, f"upload of {declared} bytes exceeds this store's limit of {limit} bytes")
        fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=".corral", dir=repo.upload_dir())
        path = Path(tmp)
        try:
            received = 0
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > limit:
                        metrics.uploads.labels("too_large").inc()
                        raise HTTPException(413, f"upload exceeds this store's limit of {limit} bytes")
                    out.write(chunk)
            try:
                manifest = await run_in_threadpool(repo.publish, name, path, version, move=True)
            except ModelFormatError as exc:
                metrics.uploads.labels("invalid").inc()
                raise HTTPException(422, f"not a loadable corral package: {exc}") from None
            except VersionExistsError as exc:
                metrics.uploads.labels("conflict").inc()
                raise HTTPException(409, str(exc)) from None
        finally:
            path.unlink(missing_ok=True)
        metrics.uploads.labels("accepted").inc()
        log.info("stored %s version %s (%d bytes)", name, manifest["version"], received)
        return manifest

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _refusal(detail: str, status: int) -> JSONResponse:
    """The reason in the body and, for HEAD requests (which carry no body), in a header too."""
    return JSONResponse({"detail": detail}, status_code=status, headers={DETAIL_HEADER: quote(detail)})


def _requested_bytes(range_header: str | None, size: int) -> int:
    """Bytes a single ``bytes=a-b`` range asks for (the whole file otherwise), for the bytes counter."""
    if not range_header or not range_header.startswith("bytes=") or "," in range_header:
        return size
    start, _, end = range_header[6:].strip().partition("-")
    try:
        if not start:
            return min(int(end), size)
        first = int(start)
        last = min(int(end), size - 1) if end else size - 1
    except ValueError:
        return size
    return max(0, last - first + 1)
