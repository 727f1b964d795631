"""``corral model import``: convert an ONNX model to a corral package."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from engine.cli.parsing import fail, parse_floats, parse_range, parse_size
from engine.exceptions import EngineError
from engine.graph import Model


@click.command("import")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the .corral package.")
@click.option("--name", help="Model name (default: the source file's stem).")
@click.option("--image-input", multiple=True, help="An input that takes images (repeat for several).")
@click.option("--image-output", multiple=True, help="An output that gives images (repeat for several).")
@click.option("--color-layout", type=click.Choice(["RGB", "BGR", "GRAY"]), default="RGB", show_default=True,
              help="Channel order the image inputs and outputs use.")
@click.option("--image-layout", type=click.Choice(["NCHW", "NHWC"]), default=None,
              help="Where the image tensors keep their channels (default: read from the shape; a shape that could "
                   "be either is refused until this says which).")
@click.option("--image-scale", help="tensor = pixel * scale + bias; one value or one per channel (e.g. 1/255, "
                                    "1/127.5).")
@click.option("--image-bias", help="One value or one per channel (e.g. -0.485,-0.456,-0.406).")
@click.option("--class-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file with one class label per line, for a classifier output.")
@click.option("--class-labels-output", help="The output the class labels index (default: the only output).")
@click.option("--size", "sizes", multiple=True, help="An allowed image size HxW (repeat to enumerate sizes).")
@click.option("--default-size", help="The default image size HxW (one of --size, or inside the ranges).")
@click.option("--height-range", help="Allowed image heights LO:HI (or LO: for no upper bound).")
@click.option("--width-range", help="Allowed image widths LO:HI (or LO: for no upper bound).")
@click.option("--author", default="", help="Metadata: author.")
@click.option("--license", "license_", default="", help="Metadata: licence.")
@click.option("--version", default="", help="Metadata: model version.")
@click.option("--description", default="", help="Metadata: description.")
def import_(src: Path, out: Path, name: str | None, image_input: Sequence[str], image_output: Sequence[str],
            color_layout: str, image_layout: str | None, image_scale: str | None, image_bias: str | None, class_labels: Path | None,
            class_labels_output: str | None, sizes: Sequence[str], default_size: str | None, height_range: str | None,
            width_range: str | None, author: str, license_: str, version: str, description: str) -> None:
    """Convert SRC (an ONNX model, or a Core ML NeuralNetwork .mlmodel) to a corral package.

    \b
    Example:
      corral model import style.onnx -o style.corral --image-input image \\
          --image-output stylized --image-scale 1/255 --size 256x256 --size 512x512
    """
    suffix = src.suffix.lower()
    if suffix == ".mlmodel":
        onnx_only = [flag for flag, given in (("--image-input", image_input), ("--image-output", image_output),
                                              ("--image-layout", image_layout),
                                              ("--image-scale", image_scale), ("--image-bias", image_bias),
                                              ("--class-labels", class_labels), ("--size", sizes),
                                              ("--height-range", height_range), ("--width-range", width_range),
                                              ("--default-size", default_size),
                                              ("--class-labels-output", class_labels_output))
                     if given]
        if onnx_only:
            fail(f"{src}: {', '.join(onnx_only)} apply to ONNX models; a Core ML model declares its own image "
                 "inputs, preprocessing, sizes and class labels")
        from engine.importers.coreml import CoreMLImportOptions, import_coreml

        coreml_options = CoreMLImportOptions(name=name or src.stem, author=author, license=license_,
                                             version=version, description=description)
        _write(lambda: import_coreml(src, coreml_options), out)
        return
    if suffix != ".onnx":
        fail(f"{src}: cannot import {suffix or 'extension-less'} files; corral imports ONNX models (.onnx) and "
             "Core ML NeuralNetwork models (.mlmodel)")
    # Parse every option before importing anything, so mistakes are reported at once.
    scale = parse_floats(image_scale, "--image-scale")
    bias = parse_floats(image_bias, "--image-bias")
    size_list = [parse_size(s) for s in sizes]
    heights = parse_range(height_range, "--height-range")
    widths = parse_range(width_range, "--width-range")
    default_hw = parse_size(default_size, "--default-size") if default_size else None
    labels: list[str] = []
    if class_labels is not None:
        labels = [line.strip() for line in class_labels.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not labels:
            fail(f"{class_labels}: no class labels in the file; give one label per line")
    try:
        from engine.importers.onnx import OnnxImportOptions, import_onnx
    except ImportError as exc:
        fail(f"ONNX import needs the onnx package ({exc}); install corral's 'onnx' extra: pip install 'corral[onnx]'")
    options = OnnxImportOptions(
        name=name or src.stem,
        image_inputs=list(image_input),
        image_outputs=list(image_output),
        color_layout=color_layout,  # type: ignore[arg-type]
        image_layout=image_layout,  # type: ignore[arg-type]
        image_scale=scale or (1.0,),
        image_bias=bias or (0.0,),
        image_sizes=size_list,
        height_range=heights,
        width_range=widths,
        default_size=default_hw,
        class_labels=labels or None,
        class_labels_output=class_labels_output or "",
        author=author, license=license_, version=version, description=description,
    )
    _write(lambda: import_onnx(src, options), out)


def _write(convert: Callable[[], Model], out: Path) -> None:
    """Run the import, save the package, and report what was written."""
    from engine.format import save

    try:
        imported = convert()
        digest = save(imported, out)
    except EngineError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write the package ({exc.strerror})")
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"wrote {escape(str(out))} ({out.stat().st_size:,} bytes, sha256 {digest[:16]}…): "
                  f"{len(imported.graph.nodes)} nodes, {imported.parameter_count():,} parameters")
    unsupported = imported.unsupported_ops()
    if unsupported:
        console.print(f"[yellow]warning:[/] unsupported ops {sorted(unsupported)}; "
                      "`corral model inspect` lists the nodes")
