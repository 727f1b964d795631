"""Compute process against compute thread: the same jobs on ``corral worker --compute process`` and
``--compute thread``, side by side. Prints a table and writes JSON (not run by CI).

1. The 200-image job of ``bench/queue.py`` (a) (multistyle26 128², batch 16): each worker's images/s over
   ``predict_batch`` given the files, measured between them; the peer runs after every job, and each job is
   compared with the mean of the peer runs either side of it.
2. The 64 one-image jobs of ``bench/queue.py`` (c) (32², batching on: ``--max-batch 16 --max-delay-ms 20``):
   jobs/s from the first submit to the last item counted.

Both workers stay up on separate Redis databases, and their runs alternate (process, thread, thread,
process, ...), so load from other processes on the machine hits both. This process keeps freed memory for
reuse (``engine.retain_freed_memory``), as both workers' compute does. Medians of ``--rounds`` pairs, and in
how many pairs the compute process was faster.

    .venv/bin/python bench/compute_process.py [--rounds 8]
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != _HERE]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
from typing import Any

import engine
from bench._shared import queue_bench, write_results
from scheduler.client import Client
from scheduler.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
MODES = ("process", "thread")


def _pairs(rows: list[dict[str, float]], key: str) -> dict[str, float]:
    return {"process": statistics.median(r[f"process_{key}"] for r in rows),
            "thread": statistics.median(r[f"thread_{key}"] for r in rows),
            "ratio": statistics.median(r[f"process_{key}"] / r[f"thread_{key}"] for r in rows),
            "process_faster": sum(r[f"process_{key}"] > r[f"thread_{key}"] for r in rows)}


def bench(tmp: Path, url: str, rounds: int) -> dict[str, Any]:
    bq = queue_bench()
    build, inputs = bq.MODELS["multistyle26"]
    model = tmp / "multistyle26.corral"
    build(model)
    job_images = bq.make_images(tmp / "job", 200, 128)
    one_images = bq.make_images(tmp / "one", 64, 32, seed=2)
    urls = {mode: url[:-1] + str(i + 1) for i, mode in enumerate(MODES)}
    with contextlib.ExitStack() as stack:
        clients = {}
        for mode in MODES:
            stack.enter_context(bq.worker(urls[mode], tmp / f"{mode}.log", "--compute", mode, "--max-batch", "16",
                                          "--max-delay-ms", "20", "--concurrency", "64"))
            clients[mode] = Client(urls[mode])
            bq.run_job(clients[mode], job_images, model, inputs, tmp / f"warm-{mode}")  # untimed: warm
            bq.concurrent_round(clients[mode], one_images, model, inputs, tmp / f"warm-one-{mode}")
        peer = bq.EnginePeer(engine.compile(engine.load(model)), inputs, job_images, 16, decoded=False)
        before = peer.rate()
        rows = []
        for k in range(rounds):
            row: dict[str, float] = {}
            for mode in MODES if k % 2 == 0 else MODES[::-1]:
                seconds, done = bq.run_job(clients[mode], job_images, model, inputs, tmp / f"job-{mode}-{k}")
                after = peer.rate()
                row[f"{mode}_job_ratio"] = done / seconds / ((before + after) / 2)
                before = after
            for mode in MODES if k % 2 == 1 else MODES[::-1]:
                row[f"{mode}_jobs_s"] = bq.concurrent_round(clients[mode], one_images, model, inputs,
                                                            tmp / f"one-{mode}-{k}")[0]
            rows.append(row)
    return {"rounds": rounds, "runs": rows, "job": _pairs(rows, "job_ratio"), "one_image_jobs": _pairs(rows, "jobs_s")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "compute_process.json"))
    args = ap.parse_args()
    engine.retain_freed_memory()
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as t, EmbeddedRedis(Path(t, "redis")) as server:
        results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                   **bench(Path(t), server.url, args.rounds)}
    job, one = results["job"], results["one_image_jobs"]
    print(f"{'measure (median of ' + str(args.rounds) + ' pairs)':<58}{'process':>9}{'thread':>9}{'ratio':>8}   faster")
    print(f"{'200-image job, multistyle26 128²: over predict_batch':<58}{job['process']:>9.3f}{job['thread']:>9.3f}"
          f"{job['ratio']:>8.3f}   {job['process_faster']} of {args.rounds}")
    print(f"{'64 one-image jobs, 32², batching on: jobs/s':<58}{one['process']:>9.1f}{one['thread']:>9.1f}"
          f"{one['ratio']:>8.3f}   {one['process_faster']} of {args.rounds}")
    write_results(args.json, results)


if __name__ == "__main__":
    main()
