"""Real models on every backend: the ops each uses, how far each backend is from onnxruntime, and how fast.

For each model from a wheel (bench/_models.py): import it, compile it on every
installed backend, run the same real photo crops through corral (one image per
prediction) and through onnxruntime on the original file (its own session,
the same threads), interleaved, and report the largest difference scaled by
max(1, |reference|) and the median time ratio (above 1: corral is faster).

    python bench/coverage.py [--models a,b] [--repeats 5] [--json bench/results/coverage.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# Run as a script, this folder would come first on sys.path, where bench/queue.py shadows the standard library's.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != _HERE]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._models import MODELS, RealModel
from bench._shared import write_results
from engine import compile
from engine.backends import available_backends
from engine.ops import threads

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["ddddocr-ocr", "ddddocr-ocr-old", "ppocr-rec", "captcha-crnn", "yolox-det", "orientation",
                  "multistyle26-256"]
# ops added for the models people ship (recurrent, integer quantization, exported vision models)
NEW_OPS = {"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
           "QLinearConv", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear", "LayerNormalization", "Gelu", "Erf",
           "Where", "Equal", "Less", "Greater", "Not", "And", "Or", "Round", "Mean", "ReduceMin", "ReduceProd",
           "ReduceL2", "ArgMax", "ArgMin", "TopK", "Tile", "Einsum", "DepthToSpace", "SpaceToDepth"}


def measure(model: RealModel, backends: list[str], images: int, repeats: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads.num_threads()
    session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    corral_model = model.load()
    photos = model.photos(images, seed=7)
    items = model.items(photos)
    feeds = [model.peer_runs(photos[i:i + 1])[0] for i in range(images)]
    reference = [session.run(None, f)[0] for f in feeds]
    out = corral_model.description.outputs[0]
    axis = out.batch_axis if out.batched else 0
    compiled = {b: compile(corral_model, b) for b in backends}
    row: dict = {"key": model.key, "title": model.title, "ops": corral_model.op_counts(),
                 "new_ops": sorted(NEW_OPS & set(corral_model.op_counts())), "backends": {}}
    diffs = {b: 0.0 for b in backends}
    for b, c in compiled.items():
        for item, want in zip(items, reference):
            got = np.asarray(c.predict(item)[out.name])
            want = np.take(want, 0, axis=axis) if out.batched else want
            diffs[b] = max(diffs[b], float(np.abs(got - want).max()) / max(1.0, float(np.abs(want).max())))
    times: dict[str, list[float]] = {b: [] for b in [*backends, "onnxruntime-file"]}
    for _ in range(2):  # warm up: sessions' first runs, the run tuner's trials
        for c in compiled.values():
            for item in items:
                c.predict(item)
    # Interleaved rounds, each side in a burst led by one untimed run: an onnxruntime session's threads spin for
    # a while after its run, so whichever side runs right after another session's run would pay for that spin.
    for _ in range(repeats):
        session.run(None, feeds[0])
        start = time.perf_counter()
        for f in feeds:
            session.run(None, f)
        times["onnxruntime-file"].append(time.perf_counter() - start)
        for b, c in compiled.items():
            c.predict(items[0])
            start = time.perf_counter()
            for item in items:
                c.predict(item)
            times[b].append(time.perf_counter() - start)
    peer = statistics.median(times["onnxruntime-file"])
    for b in backends:
        ours = statistics.median(times[b])
        row["backends"][b] = {"max_scaled_diff": diffs[b], "ms_per_image": 1000 * ours / images,
                              "vs_onnxruntime": peer / ours}
    row["onnxruntime_ms_per_image"] = 1000 * peer / images
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="2 images, 2 rounds")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "coverage.json"))
    args = ap.parse_args()
    images, repeats = (2, 2) if args.quick else (args.images, args.repeats)
    backends = available_backends()
    rows = [measure(MODELS[k], backends, images, repeats) for k in args.models.split(",") if k]
    print(f"{'model':<46} {'ops added for it':<48} " + " ".join(f"{b:>24}" for b in backends))
    for row in rows:
        cells = [f"{r['max_scaled_diff']:.1e} {r['vs_onnxruntime']:.2f}×" for r in row["backends"].values()]
        print(f"{row['title'][:46]:<46} {', '.join(row['new_ops'])[:48]:<48} " + " ".join(f"{c:>24}" for c in cells))
    write_results(args.json, {"threads": threads.num_threads(), "images": images, "repeats": repeats, "rows": rows})


if __name__ == "__main__":
    main()
