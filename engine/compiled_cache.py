"""The on-disk cache of compiled models.

An entry is one ``.npz`` file (numpy's zip of ``.npy`` arrays) named by the
cache key: the sha256 of the model package digest, backend, device, corral's
version and :data:`COMPILED_FORMAT_VERSION`. It holds the optimized graph's
weights as arrays and a JSON header (member ``__header__``) with the node
list, the model description and the recorded execution plans. It is read
with ``allow_pickle=False`` and checked like a model package, so a tampered
file cannot run code: at worst it is rejected with
:class:`CompiledCacheError` and rebuilt.

Entries are written to a temporary file and renamed into place, so a reader
never sees half an entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from engine.description import Feature, Metadata, ModelDescription, ShapeSpec
from engine.exceptions import CompiledCacheError, EngineError
from engine.graph import Graph, Node
from engine.ops import INTERNAL_OPS, is_supported

# Bump when the entry layout or the meaning of compiled graphs changes
# (a new pass, a changed internal op), so old entries are rebuilt.
COMPILED_FORMAT_VERSION = 2
HEADER = "__header__"


def engine_version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def default_cache_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Where compiled models go by default: ``<home>/.cache/corral/compiled``."""
    return Path(home if home is not None else Path.home()) / ".cache" / "corral" / "compiled"


def cache_key(digest: str, backend: str, device: str, options: str = "") -> str:
    """``options`` is any compile option that changes the result (e.g. skipped passes)."""
    text = f"{digest}\n{backend}\n{device}\n{options}\n{engine_version()}\n{COMPILED_FORMAT_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()


def entry_path(cache_dir: str | os.PathLike[str], digest: str, backend: str, device: str,
               options: str = "") -> Path:
    return Path(cache_dir) / f"{cache_key(digest, backend, device, options)}.npz"


@dataclass
class CompiledEntry:
    """What a compiled model is rebuilt from: everything but the kernels."""

    digest: str
    backend: str
    device: str
    options: str
    description: ModelDescription
    nodes: list[Node]
    constants: dict[str, np.ndarray]
    plans: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    # what the backend made beside the kernels and wants back (onnxruntime: its optimized models)
    artifacts: dict[str, bytes] = field(default_factory=dict)


# ------------------------------------------------------------------ encoding

class _Arrays:
    """Arrays going into (or coming out of) the npz, referenced from JSON as ``{"array": key}``."""

    def __init__(self, stored: dict[str, np.ndarray] | None = None) -> None:
        self.stored: dict[str, np.ndarray] = stored if stored is not None else {}

    def put(self, prefix: str, value: np.ndarray) -> dict[str, str]:
        key = f"{prefix}/{len(self.stored)}"
        self.stored[key] = np.asarray(value, order="C")
        return {"array": key}

    def get(self, ref: Any) -> np.ndarray:
        if not isinstance(ref, dict) or not isinstance(ref.get("array"), str) or ref["array"] not in self.stored:
            raise ValueError(f"array reference {ref!r} names no stored array")
        return self.stored[ref["array"]]


def _encode_attr(value: Any, arrays: _Arrays) -> Any:
    if isinstance(value, np.ndarray):
        return arrays.put("attr", value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [v.item() if isinstance(v, (np.integer, np.floating)) else v for v in value]
    return value


def _decode_attr(value: Any, arrays: _Arrays) -> Any:
    if isinstance(value, dict):
        return arrays.get(value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value):
        return value
    raise ValueError(f"attribute value {value!r} is not an int, float, string, list or array")


def _encode_feature(f: Feature, arrays: _Arrays) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fld in dataclasses.fields(f):
        value = getattr(f, fld.name)
        if isinstance(value, ShapeSpec):
            value = {"default": list(value.default), "enumerated": [list(s) for s in value.enumerated],
                     "ranges": [[lo, hi] for lo, hi in value.ranges]}
        elif isinstance(value, np.ndarray):
            value = arrays.put("default", value)
        elif isinstance(value, tuple):
            value = list(value)
        out[fld.name] = value
    return out


def _decode_feature(data: Any, arrays: _Arrays) -> Feature:
    if not isinstance(data, dict):
        raise TypeError("feature is not an object")
    known = {fld.name for fld in dataclasses.fields(Feature)}
    if set(data) - known:
        raise ValueError(f"feature has unknown fields {sorted(set(data) - known)}")
    kwargs = dict(data)
    shape = kwargs.get("shape") or {}
    kwargs["shape"] = ShapeSpec(default=tuple(int(d) for d in shape["default"]),
                                enumerated=[tuple(int(d) for d in s) for s in shape["enumerated"]],
                                ranges=[(int(lo), None if hi is None else int(hi)) for lo, hi in shape["ranges"]])
    if kwargs.get("default") is not None:
        kwargs["default"] = arrays.get(kwargs["default"])
    for name in ("scale", "bias"):
        if name in kwargs:
            kwargs[name] = tuple(float(v) for v in kwargs[name])
    return Feature(**kwargs)


def _encode_description(d: ModelDescription, arrays: _Arrays) -> dict[str, Any]:
    return {"inputs": [_encode_feature(f, arrays) for f in d.inputs],
            "outputs": [_encode_feature(f, arrays) for f in d.outputs],
            "metadata": dataclasses.asdict(d.metadata), "class_labels": list(d.class_labels),
            "class_labels_output": d.class_labels_output, "custom_model": d.custom_model}


def _decode_description(data: dict[str, Any], arrays: _Arrays) -> ModelDescription:
    return ModelDescription(inputs=[_decode_feature(f, arrays) for f in data["inputs"]],
                            outputs=[_decode_feature(f, arrays) for f in data["outputs"]],
                            metadata=Metadata(**data["metadata"]), class_labels=[str(c) for c in data["class_labels"]],
                            class_labels_output=str(data["class_labels_output"]),
                            custom_model=str(data["custom_model"]))


# ------------------------------------------------------------------ files

def write_entry(path: str | os.PathLike[str], entry: CompiledEntry) -> Path:
    """Write ``entry`` atomically (temporary file, then rename); returns the path."""
    path = Path(path)
    arrays = _Arrays()
    names = list(entry.constants)
    for i, name in enumerate(names):
        arrays.stored[f"const/{i}"] = np.asarray(entry.constants[name], order="C")
    artifacts = list(entry.artifacts)
    for i, name in enumerate(artifacts):
        arrays.stored[f"artifact/{i}"] = np.frombuffer(entry.artifacts[name], dtype=np.uint8)
    header = {
        "compiled_format_version": COMPILED_FORMAT_VERSION, "engine_version": engine_version(),
        "digest": entry.digest, "backend": entry.backend, "device": entry.device, "options": entry.options,
        "description": _encode_description(entry.description, arrays),
        "constants": names,
        "nodes": [{"op_type": n.op_type, "name": n.name, "domain": n.domain, "inputs": list(n.inputs),
                   "outputs": list(n.outputs), "attrs": {k: _encode_attr(v, arrays) for k, v in n.attrs.items()}}
                  for n in entry.nodes],
        "plans": entry.plans, "stats": entry.stats, "artifacts": artifacts,
    }
    arrays.stored[HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays.stored)  # type: ignore[arg-type]  # numpy's stub: names as kwargs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_entry(path: str | os.PathLike[str], digest: str, backend: str, device: str,
               options: str = "") -> CompiledEntry:
    """Load and check one entry; any problem is a :class:`CompiledCacheError` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            stored = {key: npz[key] for key in npz.files}
        header = json.loads(bytes(stored.pop(HEADER)).decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise CompiledCacheError(f"compiled model {path}: unreadable ({type(exc).__name__}: {exc})") from None
    expected = {"compiled_format_version": COMPILED_FORMAT_VERSION, "engine_version": engine_version(),
                "digest": digest, "backend": backend, "device": device, "options": options}
    if not isinstance(header, dict):
        raise CompiledCacheError(f"compiled model {path}: header is not an object")
    stale = {k: header.get(k) for k, v in expected.items() if header.get(k) != v}
    if stale:
        raise CompiledCacheError(f"compiled model {path}: stale entry ({stale} differ from {expected})")
    arrays = _Arrays(stored)
    try:
        description = _decode_description(header["description"], arrays)
        names = [str(n) for n in header["constants"]]
        constants = {name: arrays.get({"array": f"const/{i}"}) for i, name in enumerate(names)}
        nodes = [Node(op_type=str(n["op_type"]), inputs=[str(i) for i in n["inputs"]],
                      outputs=[str(o) for o in n["outputs"]], name=str(n["name"]), domain=str(n["domain"]),
                      attrs={str(k): _decode_attr(v, arrays) for k, v in n["attrs"].items()})
                 for n in header["nodes"]]
        plans = [p for p in header.get("plans", []) if isinstance(p, dict)]
        artifacts = {str(name): arrays.get({"array": f"artifact/{i}"}).tobytes()
                     for i, name in enumerate(header.get("artifacts", []))}
        stats = header.get("stats", {}) if isinstance(header.get("stats"), dict) else {}
        where = f"compiled model {path}"
        unknown = sorted({n.op_type for n in nodes if not n.domain and not (is_supported(n.op_type)
                                                                            or n.op_type in INTERNAL_OPS)})
        if unknown:
            raise ValueError(f"unknown op types {unknown}")
        for f in description.inputs + description.outputs:
            f.check(where)
        ordered = Graph(nodes=nodes, initializers=dict(constants)).toposort([f.name for f in description.inputs], where)
        if [id(n) for n in ordered] != [id(n) for n in nodes]:
            raise ValueError("nodes are not stored in execution order")
        produced = {o for n in nodes for o in n.outputs} | set(constants) | {f.name for f in description.inputs}
        missing = [f.name for f in description.outputs if f.name not in produced]
        if missing:
            raise ValueError(f"outputs {missing} are produced by no node")
    except (KeyError, TypeError, ValueError, AttributeError, EngineError) as exc:
        raise CompiledCacheError(f"compiled model {path}: corrupt entry ({type(exc).__name__}: {exc})") from None
    return CompiledEntry(digest=digest, backend=backend, device=device, options=options,
                         description=description, nodes=nodes,
                         constants=constants, plans=plans, stats=stats, artifacts=artifacts)
