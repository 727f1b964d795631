"""What several benchmarks share (not a benchmark itself: bench/report.py skips files starting with ``_``)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def queue_bench() -> Any:
    """bench/queue.py as a module (its file name would shadow the standard library's ``queue`` on import)."""
    spec = importlib.util.spec_from_file_location("corral_bench_queue", ROOT / "bench" / "queue.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def write_results(path: str | Path, results: Any) -> None:
    """A benchmark's JSON, where bench/report.py reads it back."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")
