"""Queue benchmark: prints a table and writes JSON (not run by CI).

(a) end-to-end images/s of a 200-image job on one worker vs the engine's own
    predict_batch throughput on the same images and batch size (target >= 0.9);
(b) seconds to submit a 10,000-image set (target <= 3 s);
(c) 64 concurrent one-image jobs, batching on vs off (target >= 2x).

    .venv/bin/python bench/queue.py [--images 200] [--size 128] [--json bench-queue.json]
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
import json
import shutil
import tempfile
import threading
import time

import numpy as np
import redis
from PIL import Image

import engine
from engine.builder import ModelBuilder
from engine.images import decode_image, image_to_tensor
from scheduler.client import Client
from scheduler.embedded import EmbeddedRedis, start_worker, stop_worker
from scheduler.registry import live_workers


def build_model(path: Path, hidden: int = 32) -> None:
    rng = np.random.default_rng(0)
    b = ModelBuilder("bench")
    x = b.image_input("image", size=(128, 128), height_range=(1, 4096), width_range=(1, 4096))
    y = b.node("Conv", [x, b.weight("w1", (rng.standard_normal((hidden, 3, 3, 3)) * 0.1).astype(np.float32))],
               pads=[1, 1, 1, 1])
    y = b.node("Relu", [y])
    y = b.node("Conv", [y, b.weight("w2", (rng.standard_normal((3, hidden, 1, 1)) * 0.1).astype(np.float32))])
    b.image_output(b.node("Sigmoid", [y]), name="out", scale=1 / 255)
    engine.save(b.build(), path)


def make_images(d: Path, n: int, size: int) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        p = d / f"im{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def with_worker(url: str, log: Path, *args: str):
    proc = start_worker(url, *args, log_path=log)
    r = redis.Redis.from_url(url)
    while not live_workers(r):
        time.sleep(0.1)
    time.sleep(0.5)
    return proc


def bench_end_to_end(url: str, tmp: Path, model: Path, n: int, size: int, batch: int) -> dict:
    paths = make_images(tmp / "e2e", n, size)
    compiled = engine.compile(engine.load(model))
    feature = compiled.description.inputs[0]
    start = time.perf_counter()  # engine alone: decode + predict_batch, same batch size
    for i in range(0, n, batch):
        compiled.predict_batch([{"image": image_to_tensor(decode_image(p), feature)} for p in paths[i:i + batch]])
    engine_rate = n / (time.perf_counter() - start)
    proc = with_worker(url, tmp / "w.log", "--max-batch", str(batch))
    client = Client(url)
    client.submit(paths[:batch], model=str(model), out=tmp / "warm").wait()  # load the model
    start = time.perf_counter()
    rec = client.submit(paths, model=str(model), out=tmp / "e2e-out").wait()
    queue_rate = rec.done / (time.perf_counter() - start)
    stop_worker(proc)
    return {"images": n, "size": size, "batch": batch, "engine_img_s": engine_rate, "queue_img_s": queue_rate,
            "ratio": queue_rate / engine_rate, "target": 0.9}


def bench_submit(url: str, tmp: Path, model: Path, n: int = 10_000) -> dict:
    d = tmp / "many"
    d.mkdir()
    src = make_images(tmp / "one", 1, 8)[0]
    for i in range(n):
        shutil.copyfile(src, d / f"p{i:05d}.png")
    start = time.perf_counter()
    Client(url).submit([d], model=str(model), out=tmp / "many-out")
    took = time.perf_counter() - start
    redis.Redis.from_url(url).flushall()
    return {"images": n, "seconds": took, "target_s": 3.0}


def bench_concurrent(url: str, tmp: Path, model: Path, size: int, jobs: int = 64) -> dict:
    paths = make_images(tmp / "conc", jobs, size)
    rates = {}
    for label, max_batch in (("batching_on", 16), ("batching_off", 1)):
        proc = with_worker(url, tmp / f"{label}.log", "--max-batch", str(max_batch), "--concurrency", "64")
        client = Client(url)  # one client (one Celery app and connection pool) shared by the submitting threads
        client.submit(paths[:1], model=str(model), out=tmp / "warm2").wait()
        submitted = []
        start = time.perf_counter()
        threads = [threading.Thread(target=lambda p=p: submitted.append(
            client.submit([p], model=str(model), out=tmp / label))) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for job in submitted:
            job.wait(poll=0.05)
        rates[label] = jobs / (time.perf_counter() - start)
        stop_worker(proc)
    return {"jobs": jobs, "size": size, **{f"{k}_img_s": v for k, v in rates.items()},
            "speedup": rates["batching_on"] / rates["batching_off"], "target": 2.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--submit-images", type=int, default=10_000)
    ap.add_argument("--json", default="bench-queue.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as t, EmbeddedRedis(Path(t, "redis")) as server:
        tmp = Path(t)
        model = tmp / "bench.corral"
        build_model(model)
        results = {
            "end_to_end": bench_end_to_end(server.url, tmp, model, args.images, args.size, args.batch),
            "submit": bench_submit(server.url, tmp, model, args.submit_images),
            "concurrent": bench_concurrent(server.url, tmp, model, args.size),
        }
    e, s, c = results["end_to_end"], results["submit"], results["concurrent"]
    print(f"{'measure':<44}{'value':>12}{'target':>10}")
    print(f"{'(a) queue / engine throughput':<44}{e['ratio']:>12.2f}{'>= 0.9':>10}"
          f"   ({e['queue_img_s']:.1f} vs {e['engine_img_s']:.1f} img/s, {e['size']}², batch {e['batch']})")
    print(f"{'(b) submit ' + str(s['images']) + ' images (s)':<44}{s['seconds']:>12.2f}{'<= 3':>10}")
    print(f"{'(c) 64 one-image jobs, batching on / off':<44}{c['speedup']:>12.2f}{'>= 2':>10}"
          f"   ({c['batching_on_img_s']:.1f} vs {c['batching_off_img_s']:.1f} img/s)")
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
