"""The store's directory: models, their immutable integer versions, and each version's variants.

    ROOT/<name>/<version>/master.corral        the float master, as uploaded
    ROOT/<name>/<version>/master.json          its sha256, size, upload time
    ROOT/<name>/<version>/manifest.json        what the version is (written last: a version exists once it is there)
    ROOT/<name>/<version>/variants/<v>.corral  quantized forms, made on first request
    ROOT/<name>/<version>/variants/<v>.json    their sha256 and recipe
    ROOT/<name>/<version>/calibration.npz      input tensors the int8 variant is calibrated on (optional, once)
    ROOT/.uploads/                             uploads being received

``latest`` is the highest version with a manifest. Versions are created by
renaming a finished directory into place, so readers never see half of one.
The same class serves the HTTP service and workers that read a local root
directly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from engine.compiled_cache import engine_version
from store.exceptions import ModelRefError, NotFoundError, VersionExistsError
from store.refs import DEFAULT_VARIANT, ModelRef, check_name, parse_version
from store.variants import CALIBRATION, MASTER, VariantFile, VariantMaker, sha256_file, write_atomic, write_sidecar

MANIFEST = "manifest.json"
UPLOADS = ".uploads"


class Repository:
    def __init__(self, root: str | os.PathLike[str], recipes: Mapping[str, Mapping[str, Any]] | None = None,
                 maker: VariantMaker | None = None) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.variants = maker if maker is not None else VariantMaker(recipes)

    # ----------------------------------------------------------- reading

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        base = self.root / check_name(name)
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir()
                      if p.name.isdigit() and (p / MANIFEST).is_file())

    def resolve(self, name: str, version: int | str | None) -> int:
        """A concrete version number for ``version`` (``None``/``latest`` → the highest)."""
        number = parse_version(version)
        versions = self.versions(name)
        if not versions:
            raise NotFoundError(f"model {name!r} is not in the store; `corral store ls` lists what is, "
                                "`corral store push FILE --name NAME` adds it")
        if number is None:
            return versions[-1]
        if number not in versions:
            raise NotFoundError(f"model {name!r} has no version {number}; it has {versions}")
        return number

    def version_dir(self, name: str, version: int | str | None) -> Path:
        return self.root / name / str(self.resolve(name, version))

    def manifest(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """The version's manifest with the variants made so far (``variants``) and those it can make."""
        folder = self.version_dir(name, version)
        data = json.loads((folder / MANIFEST).read_text())
        made: dict[str, Any] = {}
        for variant in self.variants.names():
            found = self.variants.existing(folder, variant)
            if found is not None:
                made[variant] = found.info()
        data["variants"] = made
        data["available_variants"] = self.variants.names()
        calibration = folder / CALIBRATION
        if calibration.is_file():
            data["calibration"] = {"sha256": sha256_file(calibration), "size": calibration.stat().st_size}
        return data

    def index(self) -> list[dict[str, Any]]:
        """Every model: its versions, latest, and per version the variants made (size and sha256)."""
        models = []
        for name in self.names():
            versions = []
            for number in self.versions(name):
                m = self.manifest(name, number)
                versions.append({"version": number, "created": m["created"],
                                 "variants": {k: {"size": v["size"], "sha256": v["sha256"]}
                                              for k, v in m["variants"].items()}})
            models.append({"name": name, "latest": versions[-1]["version"], "versions": versions})
        return models

    def variant(self, ref: ModelRef) -> VariantFile:
        """The package file for ``ref``, making the variant from the master on first request."""
        folder = self.version_dir(ref.name, ref.version)
        return self.variants.ensure(folder, ref.variant)

    # ----------------------------------------------------------- writing

    def upload_dir(self) -> Path:
        path = self.root / UPLOADS
        path.mkdir(exist_ok=True)
        return path

    def publish(self, name: str, package: str | os.PathLike[str], version: int | None = None, *,
                move: bool = False) -> dict[str, Any]:
        """Add ``package`` as version ``version`` of ``name`` (the next free one if None); its manifest.

        The file must load as a corral package (:class:`engine.exceptions.ModelFormatError` otherwise).
        ``move`` takes the file instead of copying it (uploads already in the root).
        """
        from engine.format import load

        check_name(name)
        if version is not None and parse_version(version) is None:
            raise ModelRefError("a version to publish must be a number, not 'latest'")
        source = Path(package)
        model = load(source)  # refuses a corrupt or hostile package before it enters the store
        (self.root / name).mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root / name))
        try:
            (shutil.move if move else shutil.copyfile)(str(source), str(staging / MASTER))
            sha, size = sha256_file(staging / MASTER), (staging / MASTER).stat().st_size
            master = VariantFile(DEFAULT_VARIANT, staging / MASTER, sha, size, {}, time.time())
            write_sidecar(staging / "master.json", master)
            with FileLock(str(self.root / name / ".publish.lock")):
                existing = self.versions(name)
                number = version if version is not None else (existing[-1] + 1 if existing else 1)
                if number in existing or (self.root / name / str(number)).exists():
                    raise VersionExistsError(f"model {name!r} version {number} exists and versions are "
                                             "immutable; push without a version to get the next one")
                desc = model.description
                manifest = {
                    "name": name, "version": number, "created": master.created,
                    "master": {"sha256": sha, "size": size},
                    "model": {"name": desc.metadata.name, "version": desc.metadata.version,
                              "description": desc.metadata.description,
                              "inputs": [f.name for f in desc.inputs], "outputs": [f.name for f in desc.outputs],
                              "quantization": desc.metadata.user.get("corral.quantization", ""),
                              # what a worker must support to run it (read by `--device auto` routing)
                              "ops": sorted({n.op_type for n in model.graph.nodes if not n.domain}),
                              "custom_layers": model.custom_layers(),
                              "custom_model": desc.custom_model or ""},
                    "engine_version": engine_version(),
                }
                write_atomic(staging / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
                os.rename(staging, self.root / name / str(number))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.manifest(name, number)

    def add_calibration(self, name: str, version: int | str | None, data: bytes) -> dict[str, Any]:
        """Keep ``data`` (a :class:`engine.quantize.CalibrationSet` file) as the version's calibration set.

        It must fit the master's inputs; a version takes one set, once (the int8 variant made from it
        would otherwise silently change).
        """
        from engine.format import load
        from engine.quantize.calibration import CalibrationSet

        folder = self.version_dir(name, version)
        where = f"calibration set for {name}:{folder.name}"
        CalibrationSet.from_bytes(data, where).check(load(folder / MASTER))
        with FileLock(str(folder / ".calibration.lock")):
            if (folder / CALIBRATION).exists():
                raise VersionExistsError(f"{name}:{folder.name} has a calibration set already, and versions are "
                                         "immutable; push the model again as a new version to calibrate anew")
            write_atomic(folder / CALIBRATION, data)
        return self.manifest(name, int(folder.name))
