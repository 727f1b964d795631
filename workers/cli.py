"""``corral worker``: one process per device, consuming that device's queue.

Why Celery's *threads* pool: the default prefork pool runs one task per
child process, so chunks of different jobs would never meet in one batch.
With ``--pool threads`` several chunk tasks are in flight in this one
process; each hands its items to the shared batcher and waits, and the
batcher runs the model on a single device thread. ``--concurrency`` is how
many chunks may be in flight at once (threads mostly waiting, so cheap).
"""

from __future__ import annotations

import logging
import re

import click
from celery import signals

from engine.backends import BACKENDS
from engine.exceptions import EngineError
from scheduler.broker import QueueConfig, make_app
from scheduler.routing import GPU_BACKENDS
from scheduler.settings import ENV_REDIS_URL
from store.settings import ENV_CACHE_DIR, ENV_ROOT, ENV_URL
from workers.exceptions import WorkerError
from workers.runtime import WorkerRuntime, set_runtime
from workers.settings import (
    ENV_METRICS_PORT,
    ENV_PLUGINS,
    ENV_VISIBILITY_TIMEOUT,
    BatcherConfig,
    ComputeMode,
    WorkerSettings,
    compute_process_supported,
    io_threads,
)
from workers.tasks import register_tasks

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """``"2GiB"``, ``"512M"``, ``"1.5gb"``, ``"1000"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise click.BadParameter(f"{text!r} is not a size; write e.g. 2GiB, 512M or 1000000")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value == "cpu" or re.fullmatch(r"cuda(:\d+)?", value):
        return "cuda:0" if value == "cuda" else value
    raise click.BadParameter("use cpu, cuda or cuda:N")


def check_precision(precision: str, backend: str, device: str) -> None:
    """fp16 runs only on a CUDA device, with the torch or onnxruntime backend (the CPU computes float32 only)."""
    if precision == "fp32":
        return
    if backend not in GPU_BACKENDS or not device.startswith("cuda"):
        raise click.UsageError(f"--precision {precision} needs a CUDA device with the torch or onnxruntime backend "
                               f"(got --backend {backend} --device {device}); use --device cuda:N, or --precision "
                               "fp32")


@click.command()
@click.option("--device", default="cpu", show_default=True, callback=_device, help="cpu, cuda or cuda:N")
@click.option("--backend", type=click.Choice(["auto", *BACKENDS]), default="auto", show_default=True,
              help="auto: onnxruntime on cpu (torch, then numpy, when it is missing); torch, then onnxruntime-gpu, "
                   "on cuda")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: half precision, with --backend torch (or auto) on a CUDA device only")
@click.option("--max-batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--max-delay-ms", type=click.FloatRange(0), default=20.0, show_default=True,
              help="longest an item waits for its batch to fill (twice that while more items are being decoded)")
@click.option("--memory-budget", default="2GiB", show_default=True, help="bytes of warm models to keep")
@click.option("--concurrency", type=click.IntRange(1), default=16, show_default=True,
              help="chunks in flight at once (threads feeding the one batcher)")
@click.option("--decode-threads", type=click.IntRange(1), default=None,
              help="threads reading, decoding and resizing images while the device computes "
                   "[default: the usable CPUs, at most 4]")
@click.option("--decode-ahead", type=click.IntRange(1), default=2, show_default=True,
              help="batches' worth of items decoded ahead of the device; bounds the decoded images held in memory")
@click.option("--writer-threads", type=click.IntRange(1), default=None,
              help="threads encoding and writing outputs while the device computes [default: the usable CPUs, "
                   "at most 4]")
@click.option("--compute", type=click.Choice([m.value for m in ComputeMode]), default=None,
              help="where models are compiled and batches run: a child process of the worker's own (its own GIL; "
                   "a custom layer that crashes it fails only its item) or a thread of the worker [default: process "
                   "where the platform has memfd_create (Linux), else thread]")
@click.option("--redis-url", envvar=ENV_REDIS_URL, default=None,
              help=f"Redis of the fleet [env {ENV_REDIS_URL}; default redis://127.0.0.1:6379/0]")
@click.option("--visibility-timeout", type=float, envvar=ENV_VISIBILITY_TIMEOUT, default=None,
              help=f"seconds before an unacknowledged chunk is redelivered [env {ENV_VISIBILITY_TIMEOUT}; default 3600]")
@click.option("--metrics-port", type=click.IntRange(0, 65535), envvar=ENV_METRICS_PORT, default=None,
              help=f"serve Prometheus metrics on this port; 0 = off [env {ENV_METRICS_PORT}; default 0]")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help=f"module registering custom layers/models (repeatable) [env {ENV_PLUGINS}=MOD,MOD]")
@click.option("--store-url", envvar=ENV_URL, default=None, help=f"model store service [env {ENV_URL}]")
@click.option("--store-root", type=click.Path(file_okay=False), envvar=ENV_ROOT, default=None,
              help=f"local store directory, used without --store-url [env {ENV_ROOT}]")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar=ENV_CACHE_DIR, default=None,
              help=f"downloaded and compiled model caches [env {ENV_CACHE_DIR}; default ~/.cache/corral]")
@click.option("--loglevel", default="warning", show_default=True)
def worker(device: str, backend: str, precision: str, max_batch: int, max_delay_ms: float, memory_budget: str,
           concurrency: int, decode_threads: int | None, decode_ahead: int, writer_threads: int | None,
           compute: str | None,
           redis_url: str | None,
           visibility_timeout: float | None,
           metrics_port: int | None, plugins: tuple[str, ...], store_url: str | None, store_root: str | None,
           cache_dir: str | None, loglevel: str) -> None:
    """Run a worker for one device until stopped (SIGTERM/Ctrl-C drains and hands back unstarted work)."""
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        base = WorkerSettings.from_env()
    except (WorkerError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    settings = base.with_(
        redis_url=redis_url, device=device, backend=backend, precision=precision, concurrency=concurrency,
        compute=compute,
        memory_budget=parse_size(memory_budget), visibility_timeout=visibility_timeout, metrics_port=metrics_port,
        plugins=tuple(plugins) or None, store=base.store.with_(url=store_url, root=store_root, cache_dir=cache_dir),
        batcher=BatcherConfig(max_batch=max_batch, max_delay_ms=max_delay_ms, decode_ahead=decode_ahead,
                              decode_threads=decode_threads or io_threads(),
                              writer_threads=writer_threads or io_threads()))
    check_precision(precision, settings.resolved_backend(), device)
    if settings.compute is ComputeMode.PROCESS and not compute_process_supported():
        raise click.UsageError("--compute process needs memfd_create, which this platform lacks (it is Linux's); "
                               "use --compute thread")
    app = make_app(QueueConfig(redis_url=settings.redis_url, visibility_timeout=settings.visibility_timeout))
    app.conf.worker_enable_remote_control = False
    register_tasks(app)
    runtime = WorkerRuntime(settings)
    set_runtime(runtime)

    def on_shutdown(**_: object) -> None:
        runtime.drain()

    signals.worker_shutting_down.connect(on_shutdown, weak=False)
    try:
        runtime.start(app)
    except (WorkerError, EngineError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        app.worker_main([
            "worker", "--queues", settings.queue, "--pool", "threads", "--concurrency", str(concurrency),
            "--hostname", f"corral-{runtime.id.replace(':', '-')}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", loglevel.upper(),
        ])
    finally:
        runtime.drain()
        runtime.close()
        set_runtime(None)
