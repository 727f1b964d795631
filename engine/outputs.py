"""Writing one item's outputs to a directory: PNG for images, JSON for classifiers, ``.npy`` for arrays.

Names depend only on the item's stem and the output names, so writing the
same item again replaces the same files (idempotent), and every file is
written to a temporary name and moved into place (atomic): a reader never
sees half a file, and a crash leaves at most a stray ``.tmp`` file.

=====================================  ===========================================
Output                                 File
=====================================  ===========================================
image                                  ``<stem>.png``
array, classifier (model has labels)   ``<stem>.json``: top-k labels and scores
array                                  ``<stem>.npy`` (or ``.json`` when asked)
every output, with ``raw``             ``<stem>.npz``, one array per output name
=====================================  ===========================================

With more than one output, each name gains the output's name:
``<stem>_<output>.png``. Without an image the stem is ``result``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from engine.description import ModelDescription
from engine.images import encode_png, tensor_to_pixels

NO_IMAGE_STEM = "result"
ArrayFormat = Literal["npy", "json"]


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and ``os.replace``."""
    # Unique per process and thread; opened normally so the file gets the umask's permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # not inherited by children (PEP 446)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def output_stems(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """One output stem per input path: its file stem, or stem + a hash of the path where stems collide.

    The result depends only on the paths given, so the same item always gets
    the same names.
    """
    stems = [_safe(Path(p).stem) for p in paths]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    result = []
    for p, s in zip(paths, stems):
        if seen[s] > 1:
            digest = hashlib.sha256(os.fsencode(os.path.abspath(p))).hexdigest()[:8]
            s = f"{s}-{digest}"
        result.append(s)
    return result


def _safe(name: str) -> str:
    """A file-name-safe version of a stem or output name (no separators, no leading dot)."""
    cleaned = re.sub(r"[^\w.\-]+", "_", name).lstrip(".")
    return cleaned or "item"


def classifier_json(scores: np.ndarray, labels: Sequence[str], output: str, top_k: int = 5) -> dict:
    """Top-k labels and scores of a classifier output (scores of any shape; flattened)."""
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = min(top_k, flat.size)
    order = np.argsort(-flat, kind="stable")[:k]
    return {
        "output": output,
        "top": [{"label": labels[i] if i < len(labels) else str(i), "index": int(i), "score": float(flat[i])}
                for i in order],
    }


def write_item_outputs(out_dir: str | os.PathLike[str], stem: str, outputs: Mapping[str, np.ndarray],
                       description: ModelDescription, *, raw: bool = False, array_format: ArrayFormat = "npy",
                       top_k: int = 5) -> list[Path]:
    """Write one item's outputs into ``out_dir``; returns the paths written, in output order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _safe(stem)
    several = len(outputs) > 1
    written: list[Path] = []
    for name, value in outputs.items():
        feature = next((f for f in description.outputs if f.name == name), None)
        base = f"{stem}_{_safe(name)}" if several else stem
        if feature is not None and feature.kind == "image":
            path = out / f"{base}.png"
            atomic_write(path, encode_png(tensor_to_pixels(value, feature)))
        elif description.class_labels and name == (description.class_labels_output or name):
            path = out / f"{base}.json"
            doc = classifier_json(value, description.class_labels, name, top_k)
            atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())
        elif array_format == "json":
            path = out / f"{base}.json"
            doc = {"output": name, "shape": list(np.shape(value)), "values": np.asarray(value).tolist()}
            atomic_write(path, (json.dumps(doc) + "\n").encode())
        else:
            path = out / f"{base}.npy"
            buf = io.BytesIO()
            np.save(buf, np.asarray(value), allow_pickle=False)
            atomic_write(path, buf.getvalue())
        written.append(path)
    if raw:
        written.append(write_npz(out / f"{stem}.npz", outputs))
    return written


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Every array in one ``.npz`` under its name, written atomically."""
    buf = io.BytesIO()
    named = {name: np.asarray(v) for name, v in arrays.items()}
    np.savez(buf, **named)  # type: ignore[arg-type]  # numpy's stub: names as kwargs
    atomic_write(path, buf.getvalue())
    return path
