"""``corral store``: run the store service and talk to one (or to a local store root directly)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from store.config import DEFAULT_HOST, DEFAULT_MAX_UPLOAD, DEFAULT_PORT, StoreServerSettings, load_recipes
from store.refs import parse_ref
from store.settings import ENV_TOKEN, ENV_URL, StoreClientSettings

if TYPE_CHECKING:
    from store.client import StoreClient

URL_ENV = ENV_URL


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        return token_file.read_text().strip()
    return StoreClientSettings.from_env().token


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


@click.group()
def store() -> None:
    """The model store: versioned packages and their quantized variants, made on demand."""


@store.command()
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory holding the models (created if missing).")
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="File holding the bearer token uploads need; without it uploads are refused.")
@click.option("--protect-reads", is_flag=True, help="Require the token for downloads and listings too.")
@click.option("--max-upload", type=int, default=DEFAULT_MAX_UPLOAD, show_default=True,
              help="Largest accepted upload, in bytes.")
@click.option("--recipes", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSON file of named variant recipes (name -> quantizer options).")
def serve(root: Path, host: str, port: int, token_file: Path | None, protect_reads: bool, max_upload: int,
          recipes: Path | None) -> None:
    """Serve a store directory over HTTP."""
    import uvicorn

    from store.app import create_app

    try:
        config = StoreServerSettings(root=root, token_file=token_file, protect_reads=protect_reads,
                                     max_upload_bytes=max_upload, recipes=load_recipes(recipes))
        app = create_app(config)
    except ValueError as exc:
        _fail(exc)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=host, port=port, log_level="info")


_url = click.option("--url", envvar=URL_ENV, default=None,
                    help=f"Store service URL (env {URL_ENV}); without it and without --root, http://127.0.0.1:8700.")
_root = click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Use a local store directory directly instead of a service.")
_token_file = click.option("--token-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                           help=f"File holding the bearer token (or env {ENV_TOKEN}).")


def _client(url: str | None, token_file: Path | None) -> StoreClient:
    from store.client import DEFAULT_URL, StoreClient

    return StoreClient(url or DEFAULT_URL, _token(token_file))


def _calibration_bytes(package: Path, source: Path, inputs: tuple[str, ...]) -> bytes:
    """The calibration set for ``package``'s model from images or a saved .npz, as the bytes the store keeps."""
    from engine.cli.parsing import parse_input_value
    from engine.format import load
    from engine.quantize import CalibrationSet

    model = load(package)
    feeds = dict(parse_input_value(text, model.description) for text in inputs)
    return CalibrationSet.from_source(model, source, feeds).to_bytes()


@store.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", required=True, help="Model name (1-64 of A-Z a-z 0-9 . _ -).")
@click.option("--version", "version", type=int, default=None, help="Version number (default: the next one).")
@click.option("--calibration", type=click.Path(exists=True, path_type=Path), default=None,
              help="Images like the real inputs (a directory), or a calibration .npz, for the int8 variant.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="With --calibration: a non-image input for every calibration item (JSON or @file.npy).")
@_url
@_root
@_token_file
def push(file: Path, name: str, version: int | None, calibration: Path | None, inputs: tuple[str, ...],
         url: str | None, root: Path | None, token_file: Path | None) -> None:
    """Upload FILE (a .corral package) as a new version of NAME (with --calibration, the images its int8
    variant is calibrated on)."""
    from engine.exceptions import EngineError
    from store.client import StoreError
    from store.repository import Repository

    try:
        data = _calibration_bytes(file, calibration, inputs) if calibration is not None else None
        if root is not None:
            repo = Repository(root)
            manifest = repo.publish(name, file, version)
            if data is not None:
                manifest = repo.add_calibration(name, manifest["version"], data)
        else:
            with _client(url, token_file) as client:
                manifest = client.push(file, name, version)
                if data is not None:
                    manifest = client.add_calibration(name, manifest["version"], data)
    except (StoreError, EngineError, ValueError, LookupError) as exc:
        _fail(exc)
    extra = f", calibration {manifest['calibration']['size']} bytes" if "calibration" in manifest else ""
    click.echo(f"stored {manifest['name']}:{manifest['version']} "
               f"({manifest['master']['size']} bytes, sha256 {manifest['master']['sha256'][:16]}…{extra})")


@store.command()
@click.argument("ref")
@click.argument("calibration", type=click.Path(exists=True, path_type=Path))
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="A non-image input for every calibration item (JSON number/list or @file.npy).")
@_url
@_root
@_token_file
def calibrate(ref: str, calibration: Path, inputs: tuple[str, ...], url: str | None, root: Path | None,
              token_file: Path | None) -> None:
    """Give version REF (name[:version]) the images (a directory, or a calibration .npz) its int8 variant is
    calibrated on; once per version."""
    import tempfile

    from engine.exceptions import EngineError
    from store.client import StoreError
    from store.repository import Repository

    try:
        parsed = parse_ref(ref)
        with tempfile.TemporaryDirectory(prefix="corral-calibrate-") as tmp:
            if root is not None:
                repo = Repository(root)
                number = repo.resolve(parsed.name, parsed.version)
                package = repo.version_dir(parsed.name, number) / "master.corral"
                manifest = repo.add_calibration(parsed.name, number, _calibration_bytes(package, calibration, inputs))
            else:
                with _client(url, token_file) as client:
                    master = client.pull(parse_ref(f"{parsed.name}:{parsed.version_text}@fp32"),
                                         Path(tmp) / "master.corral")
                    data = _calibration_bytes(Path(tmp) / "master.corral", calibration, inputs)
                    manifest = client.add_calibration(parsed.name, master.ref.version_text, data)  # pull pinned it
    except (StoreError, EngineError, ValueError, LookupError) as exc:
        _fail(exc)
    click.echo(f"{manifest['name']}:{manifest['version']}: calibration set stored "
               f"({manifest['calibration']['size']} bytes); `@int8` is made from it on first request")


@store.command(name="ls")
@_url
@_root
@_token_file
@click.option("--json", "as_json", is_flag=True, help="Print the index as JSON.")
def ls(url: str | None, root: Path | None, token_file: Path | None, as_json: bool) -> None:
    """List models, versions and the variants made so far."""
    from store.client import StoreError
    from store.repository import Repository

    try:
        if root is not None:
            models = Repository(root).index()
        else:
            with _client(url, token_file) as client:
                models = client.index()
    except (StoreError, ValueError) as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(models, indent=1))
        return
    if not models:
        click.echo("the store is empty; add a model with `corral store push FILE --name NAME`")
    for m in models:
        for v in m["versions"]:
            tag = " (latest)" if v["version"] == m["latest"] else ""
            variants = ", ".join(f"{k} {_size(e['size'])}" for k, e in sorted(v["variants"].items()))
            click.echo(f"{m['name']}:{v['version']}{tag}  {variants}")


@store.command()
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the package (resumes OUTPUT.part if present).")
@_url
@_root
@_token_file
def pull(ref: str, output: Path, url: str | None, root: Path | None, token_file: Path | None) -> None:
    """Download REF (name[:version][@variant]) verified against its manifest's sha256."""
    import shutil

    from store.client import StoreError
    from store.repository import Repository

    try:
        parsed = parse_ref(ref)
        if root is not None:
            repo = Repository(root)
            found = repo.variant(parsed.with_version(repo.resolve(parsed.name, parsed.version)))
            shutil.copyfile(found.path, output)
            sha, size = found.sha256, found.size
        else:
            with _client(url, token_file) as client:
                result = client.pull(parsed, output)
            sha, size = result.sha256, result.size
    except (StoreError, ValueError, LookupError) as exc:
        _fail(exc)
    click.echo(f"{output}: {size} bytes, sha256 {sha[:16]}… verified")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
