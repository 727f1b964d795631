"""Variants: quantized forms of a version's float master, made on first request and then kept.

Built-in names: ``fp32`` (the master itself), ``fp16``, ``linear8`` …
``linear1``, ``lut8`` … ``lut1`` and ``int8`` (8-bit compute, made from the
version's calibration set); a store may add named recipes. A
variant is built at most once even when many requests (threads of one
server, or several server processes on one root) ask for it together: a
per-variant thread lock, then a per-variant file lock, then a second look
for the finished file before building.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from store.exceptions import MissingCalibrationError, ModelRefError, UnknownVariantError
from store.refs import DEFAULT_VARIANT, check_name

log = logging.getLogger(__name__)

MASTER = "master.corral"
VARIANTS_DIR = "variants"
CALIBRATION = "calibration.npz"


def builtin_variants() -> dict[str, dict[str, Any]]:
    """Variant name -> quantizer options (``{}`` for the float master)."""
    table: dict[str, dict[str, Any]] = {DEFAULT_VARIANT: {}, "fp16": {"mode": "fp16"}}
    for bits in range(8, 0, -1):
        table[f"linear{bits}"] = {"mode": "linear", "bits": bits}
        table[f"lut{bits}"] = {"mode": "lut", "bits": bits}
    table["int8"] = {"mode": "int8"}
    return table


@dataclass(frozen=True)
class VariantFile:
    """One servable package: where it is, its sha256 and size."""

    variant: str
    path: Path
    sha256: str
    size: int
    recipe: dict[str, Any]
    created: float

    def info(self) -> dict[str, Any]:
        data = asdict(self)
        del data["path"]
        return data


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class VariantMaker:
    """Makes and finds variant files inside one store root."""

    def __init__(self, recipes: Mapping[str, Mapping[str, Any]] | None = None,
                 on_build: Callable[[str, float], None] | None = None) -> None:
        self.recipes: dict[str, dict[str, Any]] = builtin_variants()
        for name, options in (recipes or {}).items():
            check_name(name, "recipe name")
            if name in self.recipes:
                raise ModelRefError(f"recipe {name!r} would replace a built-in variant; pick another name")
            self.recipes[name] = dict(options)
            self.options(name)  # fail at start-up, not on first request
        self.on_build = on_build
        self.builds = 0  # variants built by this maker (tests check once-only building)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def names(self) -> list[str]:
        return list(self.recipes)

    def options(self, variant: str) -> Any:
        """The :class:`engine.quantize.QuantizeOptions` for ``variant``."""
        from engine.exceptions import EngineError
        from engine.quantize import QuantizeOptions

        recipe = self.recipe(variant)
        try:
            options = QuantizeOptions(**recipe)
            options.check()
        except (TypeError, EngineError) as exc:
            raise ModelRefError(f"variant {variant!r}: bad quantizer options {recipe} ({exc})") from None
        return options

    def recipe(self, variant: str) -> dict[str, Any]:
        if variant not in self.recipes:
            raise UnknownVariantError(f"unknown variant {variant!r}: choose one of {', '.join(self.recipes)}")
        return self.recipes[variant]

    def existing(self, version_dir: Path, variant: str) -> VariantFile | None:
        """The variant's file if it has been made (its sidecar JSON is written last)."""
        if variant == DEFAULT_VARIANT:
            return read_sidecar(version_dir / "master.json", version_dir / MASTER, variant)
        base = version_dir / VARIANTS_DIR
        return read_sidecar(base / f"{variant}.json", base / f"{variant}.corral", variant)

    def ensure(self, version_dir: Path, variant: str) -> VariantFile:
        """The variant's file, building it from the master first if no one has yet."""
        self.recipe(variant)
        found = self.existing(version_dir, variant)
        if found is not None:
            return found
        key = str(version_dir / variant)
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            (version_dir / VARIANTS_DIR).mkdir(exist_ok=True)
            with FileLock(str(version_dir / VARIANTS_DIR / f".{variant}.lock")):
                found = self.existing(version_dir, variant)
                if found is None:
                    found = self._build(version_dir, variant)
        return found

    def _build(self, version_dir: Path, variant: str) -> VariantFile:
        from engine.format import dumps, load
        from engine.quantize import QuantizeReport, quantize_model

        started = time.perf_counter()
        options = self.options(variant)
        master = load(version_dir / MASTER)
        report = QuantizeReport()
        data = dumps(quantize_model(master, options, report, self._calibration(version_dir, variant, options)))
        path = version_dir / VARIANTS_DIR / f"{variant}.corral"
        write_atomic(path, data)
        made = VariantFile(variant, path, hashlib.sha256(data).hexdigest(), len(data), self.recipe(variant),
                           time.time())
        write_sidecar(version_dir / VARIANTS_DIR / f"{variant}.json", made,
                      quantized=report.count, skipped=len(report.skipped))
        seconds = time.perf_counter() - started
        self.builds += 1
        log.info("built variant %s of %s in %.2f s (%d weights quantized, %d bytes)",
                 variant, version_dir, seconds, report.count, len(data))
        if self.on_build is not None:
            self.on_build(variant, seconds)
        return made


    @staticmethod
    def _calibration(version_dir: Path, variant: str, options: Any) -> Any:
        """The version's calibration set for a recipe that needs one (int8); None for the others."""
        if options.mode != "int8":
            return None
        from engine.quantize.calibration import CalibrationSet

        path = version_dir / CALIBRATION
        if not path.is_file():
            name = f"{version_dir.parent.name}:{version_dir.name}"
            raise MissingCalibrationError(
                f"variant {variant!r} of {name} computes in 8 bits and is made from calibration images, and "
                f"this version has none; add them with `corral store calibrate {name} IMAGES_DIR` "
                "(or push with --calibration IMAGES_DIR)")
        return CalibrationSet.load(path)


def write_sidecar(path: Path, made: VariantFile, **extra: Any) -> None:
    write_atomic(path, json.dumps({**made.info(), **extra}, sort_keys=True).encode())


def read_sidecar(sidecar: Path, package: Path, variant: str) -> VariantFile | None:
    try:
        data = json.loads(sidecar.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OSError(f"{sidecar}: unreadable variant record ({exc}); delete it to rebuild the variant") from None
    return VariantFile(variant, package, str(data["sha256"]), int(data["size"]), dict(data.get("recipe", {})),
                       float(data.get("created", 0.0)))
