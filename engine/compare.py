"""How far a quantized variant strays from the float model, how fast it runs, and a picture of it.

:func:`compare_models` runs the base model and every variant over the same
images and reports, per output: the largest absolute difference, the
signal-to-noise ratio, PSNR for image outputs (on the 0..255 pixel scale the
output maps to) and top-1 agreement when the model labels classes; plus each
package's size and its speed on the backend it runs on (``predict_batch``
over the images, the models timed in turn, median of a few rounds), so that a
variant that computes more slowly than the float model (8 bits that do not
pay on this machine) says so. :func:`write_contact_sheet` draws one row per
image and one column per model, each cell labelled with the model, its size
and its PSNR.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.description import Feature
from engine.exceptions import InputError
from engine.format import dumps, load
from engine.graph import Model
from engine.images import decode_image, image_to_tensor, tensor_to_image
from engine.images.tensor import resize

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Variant:
    """A model to compare, with its display name and package size in bytes."""

    name: str
    model: Model
    size_bytes: int

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Variant:
        path = Path(path)
        return cls(name=path.stem, model=load(path), size_bytes=path.stat().st_size)

    @classmethod
    def from_model(cls, name: str, model: Model) -> Variant:
        return cls(name=name, model=model, size_bytes=len(dumps(model)))


@dataclass
class OutputStats:
    """One output of one variant against the base, pooled over all images."""

    max_abs_error: float
    snr_db: float | None  # None: identical (infinite)
    psnr_db: float | None = None  # image outputs only; None also when identical
    top1_agreement: float | None = None  # classifier output only
    is_image: bool = False


@dataclass
class VariantResult:
    name: str
    size_bytes: int
    bytes_by_storage: dict[str, int]
    outputs: dict[str, OutputStats] = field(default_factory=dict)
    image_psnr_db: list[float | None] = field(default_factory=list)  # per image, first image output
    backend: str = ""
    seconds_per_image: float | None = None  # median over the timing rounds; None when not timed
    speedup: float | None = None  # the base's seconds per image over this one's (above 1: faster)

    @property
    def pays(self) -> bool | None:
        """Whether this variant computes faster than the base (None: not timed)."""
        return None if self.speedup is None else self.speedup > 1.0


@dataclass
class Comparison:
    base: VariantResult
    images: list[str]
    variants: list[VariantResult]
    # kept for the contact sheet: [model][image] -> RGB picture of the first image output
    pictures: list[list[Image.Image]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        def result(r: VariantResult) -> dict:
            return {**asdict(r), "outputs": {k: asdict(v) for k, v in r.outputs.items()}, "pays": r.pays}

        return {"base": result(self.base), "images": self.images, "variants": [result(v) for v in self.variants]}


def image_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The images in ``directory`` (by suffix), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory of images")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{directory}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _image_input(model: Model, name: str) -> Feature:
    images = model.description.image_inputs
    if not images:
        raise InputError(f"model {name!r} declares no image input, so it cannot be compared over images; "
                         "import it with an image input (e.g. the ONNX importer's image options)")
    return images[0]


def _items(model: Model, name: str, pictures: Sequence[Image.Image],
           inputs: Mapping[str, np.ndarray]) -> list[dict[str, object]]:
    feature = _image_input(model, name)
    return [{**inputs, feature.name: image_to_tensor(p, feature)} for p in pictures]


def _pixels(value: np.ndarray, feature: Feature) -> np.ndarray:
    """An image output on its 0..255 pixel scale (float, clipped, not rounded)."""
    scale = feature.per_channel(feature.scale)[:, None, None]
    bias = feature.per_channel(feature.bias)[:, None, None]
    arr = np.asarray(value, np.float64).reshape((feature.channels,) + np.shape(value)[-2:])
    return np.clip((arr - bias) / scale, 0, 255)


def _db(signal: float, noise: float) -> float | None:
    if noise <= 0:
        return None
    if signal <= 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def _compiled(model: Model, backend: str, device: str = "cpu", precision: str = "fp32") -> object:
    from engine.compiler import compile as compile_model

    return compile_model(model, backend, device, precision=precision)


def _rerun(compiled: Any, items: list[dict[str, object]]) -> Callable[[], object]:
    return lambda: compiled.predict_batch(items)


def _timed(runs: Sequence[Callable[[], object]], rounds: int, images: int) -> list[float | None]:
    """Median seconds per image of each run, timed in turn round by round after one warm-up each."""
    if rounds <= 0 or not images:
        return [None] * len(runs)
    times: list[list[float]] = [[] for _ in runs]
    for run in runs:
        run()
    for _ in range(rounds):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[i].append((time.perf_counter() - start) / images)
    return [statistics.median(t) for t in times]


def compare_models(base: Variant, variants: Sequence[Variant], images: Sequence[str | os.PathLike[str]],
                   inputs: Mapping[str, np.ndarray] | None = None, size: tuple[int, int] | None = None,
                   backend: str = "auto", variant_run: Mapping[str, str] | None = None,
                   timing_rounds: int = 5) -> Comparison:
    """Run ``base`` and each variant over ``images`` and measure how each variant differs from ``base``.

    ``size`` = (height, width) resizes every image first; ``inputs`` supplies
    the non-image inputs (e.g. a style vector) for every item. ``variant_run``
    (``backend`` / ``device`` / ``precision``) runs the variants elsewhere than
    ``base``, e.g. fp16 on CUDA against float on the CPU. ``timing_rounds``
    times every model's ``predict_batch`` over the images that many rounds
    (0: not timed).
    """
    inputs = dict(inputs or {})
    pictures = []
    for path in images:
        picture = decode_image(path)
        pictures.append(resize(picture, size, "fit") if size else picture)
    desc = base.model.description
    image_outputs = {f.name: f for f in desc.outputs if f.kind == "image"}
    labels_output = desc.class_labels_output if desc.class_labels else ""
    base_items = _items(base.model, base.name, pictures, inputs)
    base_compiled: Any = _compiled(base.model, backend)
    base_outs = base_compiled.predict_batch(base_items)
    timings: list[Callable[[], object]] = [lambda: base_compiled.predict_batch(base_items)]

    def sheet_row(outs: list[dict[str, np.ndarray]]) -> list[Image.Image]:
        if not image_outputs:
            return []
        name, feature = next(iter(image_outputs.items()))
        return [tensor_to_image(o[name], feature) for o in outs]

    comparison = Comparison(
        base=VariantResult(base.name, base.size_bytes, base.model.bytes_by_storage(), backend=base_compiled.backend),
        images=[Path(p).name for p in images], variants=[], pictures=[sheet_row(base_outs)])
    for variant in variants:
        items = _items(variant.model, variant.name, pictures, inputs)
        compiled: Any = _compiled(variant.model, **{"backend": backend, **dict(variant_run or {})})
        outs = compiled.predict_batch(items)
        timings.append(_rerun(compiled, items))
        result = VariantResult(variant.name, variant.size_bytes, variant.model.bytes_by_storage(),
                               backend=compiled.backend)
        for f in desc.outputs:
            ref = [np.asarray(o[f.name], np.float64) for o in base_outs]
            got = [np.asarray(o.get(f.name), np.float64) for o in outs]
            if any(r.shape != g.shape for r, g in zip(ref, got)):
                raise InputError(f"variant {variant.name!r}: output {f.name!r} has shape "
                                 f"{list(got[0].shape)}, the base gives {list(ref[0].shape)}")
            stats = OutputStats(
                max_abs_error=float(max(np.max(np.abs(r - g)) if r.size else 0.0 for r, g in zip(ref, got))),
                snr_db=_db(sum(float(np.sum(r * r)) for r in ref),
                           sum(float(np.sum((r - g) ** 2)) for r, g in zip(ref, got))),
                is_image=f.name in image_outputs)
            if f.name in image_outputs:
                errors = [float(np.mean((_pixels(r, f) - _pixels(g, f)) ** 2)) for r, g in zip(ref, got)]
                stats.psnr_db = _db(255.0 ** 2, float(np.mean(errors)))
                if f.name == next(iter(image_outputs)):
                    result.image_psnr_db = [_db(255.0 ** 2, e) for e in errors]
            if f.name == labels_output:
                stats.top1_agreement = float(np.mean([np.argmax(r) == np.argmax(g) for r, g in zip(ref, got)]))
            result.outputs[f.name] = stats
        comparison.variants.append(result)
        comparison.pictures.append(sheet_row(outs))
    seconds = _timed(timings, timing_rounds, len(pictures))
    comparison.base.seconds_per_image = seconds[0]
    for result, spent in zip(comparison.variants, seconds[1:]):
        result.seconds_per_image = spent
        if spent and seconds[0]:
            result.speedup = seconds[0] / spent
    return comparison


def format_size(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.2f} MB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.1f} KB"
    return f"{size} B"


def format_db(value: float | None) -> str:
    return "∞ (identical)" if value is None else f"{value:.2f} dB"


CELL = 256  # longest side of a picture in the sheet
LABEL_HEIGHT = 34
PAD = 6


def write_contact_sheet(comparison: Comparison, path: str | os.PathLike[str]) -> Path:
    """One row per image, one column per model (base first); each cell labelled with name, size and PSNR."""
    if not comparison.pictures or not comparison.pictures[0]:
        raise InputError("the contact sheet needs an image output, and the model declares none; "
                         "import it with an image output (e.g. the ONNX importer's image options)")
    results = [comparison.base, *comparison.variants]
    rows = len(comparison.images)
    thumbs = [[_thumbnail(p) for p in column] for column in comparison.pictures]
    cell_w = max(t.width for column in thumbs for t in column)
    row_h = [max(column[r].height for column in thumbs) for r in range(rows)]
    width = PAD + len(results) * (cell_w + PAD)
    height = PAD + sum(h + LABEL_HEIGHT + PAD for h in row_h)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    y = PAD
    for r in range(rows):
        for c, (result, column) in enumerate(zip(results, thumbs)):
            x = PAD + c * (cell_w + PAD)
            sheet.paste(column[r], (x, y))
            if c == 0:
                quality = f"reference · {comparison.images[r]}"
            else:
                psnr = result.image_psnr_db[r] if result.image_psnr_db else None
                quality = "PSNR ∞ (identical)" if psnr is None else f"PSNR {psnr:.1f} dB"
            text_y = y + row_h[r] + 2
            draw.text((x, text_y), f"{result.name} · {format_size(result.size_bytes)}", fill="black", font=font)
            draw.text((x, text_y + 15), quality.replace("∞", "inf"), fill="black", font=font)
        y += row_h[r] + LABEL_HEIGHT + PAD
    path = Path(path)
    sheet.save(path, format="PNG")
    return path


def _thumbnail(picture: Image.Image) -> Image.Image:
    picture = picture.convert("RGB")
    if max(picture.size) > CELL:
        picture = picture.copy()
        picture.thumbnail((CELL, CELL), Image.Resampling.LANCZOS)
    return picture
