"""Freed memory kept for reuse (``engine.retain_freed_memory``) against glibc's default: ``predict_batch``
throughput and kernel time. Prints a table and writes JSON (not run by CI).

The allocator's settings are process-wide, so each side is its own process, started once: it compiles the
model, decodes the images and makes one untimed pass; then the two take turns (default, retained, retained,
default, ...), one pass over the images each, so load from other processes on the machine hits both. A pass
reports its images/s and its user time, kernel time and minor page faults per image (``getrusage``).
Medians of ``--rounds`` turns each.

Cases: multistyle26 (the 26-style network ``corral demo`` runs) at 128², batch 16, the job of
``bench/queue.py`` (a); and at 256², batch 8.

    .venv/bin/python bench/memory.py [--rounds 8]
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != _HERE]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from typing import Any

from bench._shared import queue_bench, write_results

ROOT = Path(__file__).resolve().parents[1]
MODES = ("default", "retained")
CASES = ((128, 16), (256, 8))


def serve(mode: str, model: Path, images: Path, batch: int) -> None:
    """One side: a pass per line read from stdin, its figures as a JSON line on stdout."""
    import engine

    if mode == "retained" and not engine.retain_freed_memory():
        raise SystemExit("retain_freed_memory() is not available here (the allocator is not glibc's)")
    bq = queue_bench()
    inputs = bq.MODELS["multistyle26"][1]
    peer = bq.EnginePeer(engine.compile(engine.load(model)), inputs, sorted(images.glob("*.jpg")), batch,
                         decoded=True)
    n = len(peer.items)
    for _ in sys.stdin:
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for i in range(0, n, batch):
            peer.compiled.predict_batch(peer.items[i:i + batch])
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"img_s": n / seconds, "user_ms": 1e3 * (after.ru_utime - before.ru_utime) / n,
                          "sys_ms": 1e3 * (after.ru_stime - before.ru_stime) / n,
                          "faults": (after.ru_minflt - before.ru_minflt) / n}), flush=True)


def bench_case(tmp: Path, size: int, batch: int, images: int, rounds: int) -> dict[str, Any]:
    bq = queue_bench()
    model = tmp / "multistyle26.corral"
    if not model.exists():
        bq.MODELS["multistyle26"][0](model)
    folder = tmp / f"images-{size}"
    bq.make_images(folder, images, size)
    sides = {mode: subprocess.Popen([sys.executable, __file__, "--serve", mode, str(model), str(folder), str(batch)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for mode in MODES}
    try:
        for proc in sides.values():  # the untimed pass: plans recorded, the heap grown
            proc.stdin.write("\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            proc.stdout.readline()  # type: ignore[union-attr]
        rows = []
        for k in range(rounds):
            row = {}
            for mode in MODES if k % 2 == 0 else MODES[::-1]:
                sides[mode].stdin.write("\n")  # type: ignore[union-attr]
                sides[mode].stdin.flush()  # type: ignore[union-attr]
                line = sides[mode].stdout.readline()  # type: ignore[union-attr]
                if not line:
                    raise SystemExit(f"the {mode} side exited")
                row.update({f"{mode}_{key}": value for key, value in json.loads(line).items()})
            rows.append(row)
    finally:
        for proc in sides.values():
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=60)
    medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    return {"size": size, "batch": batch, "images": images, "runs": rows, **medians,
            "speedup": statistics.median(r["retained_img_s"] / r["default_img_s"] for r in rows),
            "retained_faster": sum(r["retained_img_s"] > r["default_img_s"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--images", type=int, default=96, help="images per pass")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "memory.json"))
    ap.add_argument("--serve", nargs=4, metavar=("MODE", "MODEL", "IMAGES", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        mode, model, images, batch = args.serve
        serve(mode, Path(model), Path(images), int(batch))
        return
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as t:
        cases = [bench_case(Path(t), size, batch, args.images, args.rounds) for size, batch in CASES]
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "rounds": args.rounds,
               "cases": cases}
    print(f"{'multistyle26 predict_batch (median of ' + str(args.rounds) + ' turns)':<44}"
          f"{'default':>9}{'retained':>10}{'ratio':>8}")
    for c in cases:
        label = f"{c['size']}², batch {c['batch']}"
        print(f"{label + ': img/s':<44}{c['default_img_s']:>9.1f}{c['retained_img_s']:>10.1f}{c['speedup']:>8.2f}"
              f"   retained faster in {c['retained_faster']} of {args.rounds}")
        for key, what in (("user_ms", "user ms/img"), ("sys_ms", "kernel ms/img"), ("faults", "page faults/img")):
            print(f"{'    ' + what:<44}{c['default_' + key]:>9.2f}{c['retained_' + key]:>10.2f}")
    write_results(args.json, results)


if __name__ == "__main__":
    main()
