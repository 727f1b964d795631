"""The job commands: submit, status, wait, cancel, results, jobs, workers, run. Thin layers over the client."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import redis
from rich.console import Console
from rich.table import Table

from engine.images import ResizePolicy
from scheduler.client import Client, Job
from scheduler.exceptions import (
    EmbeddedError,
    JobNotFoundError,
    ModelRefError,
    NoImagesError,
    RoutingError,
    SettingsError,
)
from scheduler.records import DEFAULT_PRIORITY, JobRecord, JobStatus, Transport
from scheduler.settings import ENV_REDIS_URL, SchedulerSettings

# the policies a user may ask for ("none" is the engine's own name for "reject")
RESIZING = [p.value for p in ResizePolicy if p is not ResizePolicy.NONE]

console = Console()
err = Console(stderr=True)

redis_url_option = click.option("--redis-url", envvar=ENV_REDIS_URL, default=None,
                                help=f"Redis of the fleet [env {ENV_REDIS_URL}; default redis://127.0.0.1:6379/0]")


def redis_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn an unreachable or refusing Redis into one clear line instead of a traceback."""

    @functools.wraps(command)
    def run_command(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except redis.AuthenticationError as exc:
            raise click.ClickException(f"Redis refused corral ({exc}): give its password in the URL, "
                                       f"redis://:PASSWORD@HOST:PORT/0 (--redis-url or {ENV_REDIS_URL})") from None
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis error ({type(exc).__name__}: {exc}); check that Redis runs and "
                                       f"that --redis-url / {ENV_REDIS_URL} points at it") from None

    return run_command


def settings(redis_url: str | None = None) -> SchedulerSettings:
    """The environment's settings with the command line's ``--redis-url`` over them."""
    try:
        return SchedulerSettings.from_env(redis_url=redis_url)
    except (SettingsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def client_for(redis_url: str | None) -> Client:
    return Client.from_settings(settings(redis_url))


def parse_inputs(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; VALUE is a JSON number/list or ``@file.npy``."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: write NAME=VALUE", param_hint="--input")
        if raw.startswith("@"):
            if not Path(raw[1:]).is_file():
                raise click.BadParameter(f"{pair!r}: no such file {raw[1:]!r}", param_hint="--input")
            values[name] = raw
            continue
        try:
            values[name] = json.loads(raw)
        except json.JSONDecodeError:
            raise click.BadParameter(f"{pair!r}: VALUE must be a JSON number or list, or @file.npy",
                                     param_hint="--input") from None
    return values


def submit_options(f):
    for deco in reversed([
        click.argument("inputs", nargs=-1, required=True),
        click.option("--model", "model", required=True,
                     help="model: a store reference name[:version][@variant] or a .corral package path"),
        click.option("--input", "input_pairs", multiple=True, metavar="NAME=VALUE",
                     help="a non-image input: JSON number/list or @file.npy (repeatable)"),
        click.option("--out", type=click.Path(file_okay=False), required=True, help="output directory"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N"),
        click.option("--priority", type=click.IntRange(0, 9), default=DEFAULT_PRIORITY, show_default=True,
                     help="9 most urgent"),
        click.option("--chunk-size", type=click.IntRange(1, 1024), default=32, show_default=True,
                     help="items per queue message"),
        click.option("--transport", type=click.Choice([t.value for t in Transport]), default=Transport.PATH.value,
                     show_default=True,
                     help="path: workers share the files; redis: images and outputs travel as Redis blobs"),
        click.option("--resize", type=click.Choice(RESIZING), default=ResizePolicy.FIT.value,
                     show_default=True, help="images outside the model's sizes: stretch, crop, pad, or fail"),
    ]):
        f = deco(f)
    return f


def _submit(client: Client, inputs: Sequence[str], model: str, input_pairs: tuple[str, ...], out: str | Path,
            device: str, priority: int, chunk_size: int, transport: str, resize: str,
            values: dict[str, Any] | None = None) -> Job:
    """Submit and print the inputs that were refused; ``values`` are non-image inputs already parsed."""
    try:
        job = client.submit(list(inputs), model=model, out=out, inputs={**parse_inputs(input_pairs), **(values or {})},
                            device=device, priority=priority, chunk_size=chunk_size, transport=transport,
                            resize=resize)
    except (NoImagesError, ModelRefError, RoutingError, ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None
    for rej in job.rejected_inputs:
        err.print(f"[yellow]skipped[/] {rej.file}: {rej.reason}", highlight=False, soft_wrap=True)
    return job


def _job(client: Client, job_id: str) -> Job:
    try:
        return client.job(job_id)
    except JobNotFoundError as exc:
        raise click.ClickException(str(exc)) from None


def _wait(job: Job, timeout: float | None = None) -> JobRecord:
    from scheduler.progress import job_progress

    with job_progress(err) as update:
        return job.wait(progress=update, timeout=timeout)


def report_job(job: Job, record: JobRecord) -> None:
    """Print the failed items and a one-line summary of the ended job."""
    for row in job.failures():
        err.print(f"[red]failed[/] {row['file']}: {row['reason']}", highlight=False, soft_wrap=True)
    took = record.finished - record.started if record.started and record.finished else 0.0
    rate = f", {record.done / took:.1f} images/s" if took > 0 else ""
    err.print(f"job {record.id} {record.status.value}: {record.done} done, {record.failed} failed, "
              f"{record.skipped} skipped of {record.total}{rate}", highlight=False, soft_wrap=True)


def _exit_code(record: JobRecord) -> int:
    return 0 if record.status is JobStatus.DONE and not record.failed else 1


@click.command()
@submit_options
@click.option("--wait", "wait_", is_flag=True, help="follow the job to its end with a progress bar")
@redis_url_option
@redis_errors
def submit(inputs: tuple[str, ...], model: str, input_pairs: tuple[str, ...], out: str, device: str, priority: int,
           chunk_size: int, transport: str, resize: str, wait_: bool, redis_url: str | None) -> None:
    """Queue INPUTS (files, directories, globs, @list.txt) as one job; prints the job id."""
    client = client_for(redis_url)
    job = _submit(client, inputs, model, input_pairs, out, device, priority, chunk_size, transport, resize)
    click.echo(job.id)
    if wait_:
        record = _wait(job)
        report_job(job, record)
        sys.exit(_exit_code(record))


def _record_json(job: Job, record: JobRecord) -> dict[str, Any]:
    doc = asdict(record)
    doc["status"] = record.status.value
    doc["failures"] = job.failures()
    doc["rejected_inputs"] = job.rejected()
    return doc


@click.command()
@click.argument("job_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@redis_url_option
@redis_errors
def status(job_id: str | None, as_json: bool, redis_url: str | None) -> None:
    """One job's status and per-item failures, or (without JOB) the recent jobs."""
    client = client_for(redis_url)
    if job_id is None:
        _print_jobs(client, as_json)
        return
    job = _job(client, job_id)
    record = job.status()
    if as_json:
        click.echo(json.dumps(_record_json(job, record), indent=2))
        return
    table = Table(show_header=False, box=None)
    for key in ("id", "status", "model", "out", "transport", "queue", "priority", "total", "done", "failed",
                "skipped", "rejected"):
        table.add_row(key, str(getattr(record, key).value if key == "status" else getattr(record, key)))
    console.print(table)
    for row in job.failures():
        console.print(f"[red]failed[/] {row['file']}: {row['reason']}", highlight=False, soft_wrap=True)
    for row in job.rejected():
        console.print(f"[yellow]rejected[/] {row['file']}: {row['reason']}", highlight=False, soft_wrap=True)


@click.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="give up after this many seconds")
@redis_url_option
@redis_errors
def wait(job_id: str, timeout: float | None, redis_url: str | None) -> None:
    """Follow a job with a live progress bar; exit status 0 when every item succeeded."""
    client = client_for(redis_url)
    job = _job(client, job_id)
    try:
        record = _wait(job, timeout)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    report_job(job, record)
    sys.exit(_exit_code(record))


@click.command()
@click.argument("job_id")
@redis_url_option
@redis_errors
def cancel(job_id: str, redis_url: str | None) -> None:
    """Cancel a job: queued items are dropped, running ones finish."""
    client = client_for(redis_url)
    job = _job(client, job_id)
    if job.cancel():
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id} had already ended ({job.status().status.value})")


@click.command()
@click.argument("job_id")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@redis_url_option
@redis_errors
def results(job_id: str, out: str, redis_url: str | None) -> None:
    """Put a job's output files under --out (fetched from Redis for `--transport redis` jobs)."""
    client = client_for(redis_url)
    paths = _job(client, job_id).results(out)
    click.echo(f"{len(paths)} files in {out}")


def _print_jobs(client: Client, as_json: bool, limit: int = 50) -> None:
    records = client.jobs(limit)
    if as_json:
        click.echo(json.dumps([{**asdict(r), "status": r.status.value} for r in records], indent=2))
        return
    table = Table("job", "status", "done", "failed", "total", "model", "created")
    for r in records:
        table.add_row(r.id, r.status.value, str(r.done), str(r.failed), str(r.total), r.model,
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created)))
    console.print(table)


@click.command()
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@redis_url_option
@redis_errors
def jobs(limit: int, as_json: bool, redis_url: str | None) -> None:
    """Recent jobs, newest first."""
    _print_jobs(client_for(redis_url), as_json, limit)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@redis_url_option
@redis_errors
def workers(as_json: bool, redis_url: str | None) -> None:
    """Live workers (by heartbeat): device, backend, warm models, backlog, batch sizes."""
    infos = client_for(redis_url).workers()
    if as_json:
        click.echo(json.dumps([asdict(w) for w in infos], indent=2))
        return
    table = Table("worker", "device", "backend", "backlog", "warm models", "batches (size: count)")
    for w in infos:
        table.add_row(w.id, w.device, w.backend, str(w.backlog), "\n".join(w.warm_models) or "-",
                      " ".join(f"{k}:{v}" for k, v in w.batch_sizes.items()) or "-")
    console.print(table)


@click.command()
@submit_options
@click.option("--max-batch", type=click.IntRange(1), default=16, show_default=True,
              help="embedded worker's largest batch")
@redis_url_option
@redis_errors
def run(inputs: tuple[str, ...], model: str, input_pairs: tuple[str, ...], out: str, device: str, priority: int,
        chunk_size: int, transport: str, resize: str, max_batch: int, redis_url: str | None) -> None:
    """Run a job to the end and collect its outputs in --out.

    Without CORRAL_REDIS_URL (or --redis-url) this starts an embedded
    redis-server and one worker, and stops both afterwards; with it, the job
    goes to that fleet's workers.
    """
    config = settings(redis_url)
    if config.redis_url:
        client = Client.from_settings(config)
        job = _submit(client, inputs, model, input_pairs, out, device, priority, chunk_size, transport, resize)
        record = _wait(job)
        job.results(out)
        report_job(job, record)
        sys.exit(_exit_code(record))
    worker_device = "cpu" if device in ("auto", "cpu") else device
    record = run_embedded(config, inputs, model=model, inputs_values=parse_inputs(input_pairs), out=out,
                          device=worker_device, priority=priority, chunk_size=chunk_size, transport=transport,
                          resize=resize, worker_args=("--max-batch", str(max_batch)))
    sys.exit(_exit_code(record))


def run_embedded(config: SchedulerSettings, inputs: Sequence[str], *, model: str, out: str | Path,
                 inputs_values: dict[str, Any] | None = None, device: str = "cpu", priority: int = DEFAULT_PRIORITY,
                 chunk_size: int = 32, transport: Transport | str = Transport.PATH,
                 resize: ResizePolicy | str = ResizePolicy.FIT,
                 worker_args: Sequence[str] = ()) -> JobRecord:
    """`corral run` on the embedded fleet (a private redis-server and one worker): submit, follow with a
    progress bar, collect the outputs in ``out``, report, stop the fleet. `corral demo` runs its jobs here."""
    from scheduler.embedded import EmbeddedFleet
    from scheduler.progress import job_progress

    try:
        with EmbeddedFleet(config, *worker_args, device=device) as fleet:
            assert fleet.client is not None
            job = _submit(fleet.client, inputs, model, (), out, device, priority, chunk_size, transport, resize,
                          values=inputs_values)
            with job_progress(err) as update:
                record = fleet.wait(job, progress=update)
            job.results(out)
            report_job(job, record)
            return record
    except EmbeddedError as exc:
        raise click.ClickException(str(exc)) from None
