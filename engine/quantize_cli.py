"""``corral model quantize`` and ``corral model compare``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from engine.exceptions import EngineError
from engine.quantize.calibration import CalibrationSet

if TYPE_CHECKING:
    from engine.compare import VariantResult

console = Console()


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the quantized package.")
@click.option("--mode", type=click.Choice(["fp16", "linear", "lut", "int8"]), required=True,
              help="float16, linear (code × scale + bias), lookup table (palette[code]), or int8: a graph that "
                   "computes in 8 bits on onnxruntime (needs --calibration).")
@click.option("--bits", type=click.IntRange(1, 8), default=8, show_default=True,
              help="Bits per weight for linear and lut.")
@click.option("--granularity", type=click.Choice(["per-channel", "per-tensor"]), default=None,
              help="One scale / palette per output channel (group) or per tensor. "
                   "Default: per-channel for linear, per-tensor for lut (per-channel when --group-size is set).")
@click.option("--symmetric", is_flag=True, help="linear: a grid symmetric about zero ([-max|w|, +max|w|]).")
@click.option("--group-size", type=click.IntRange(0), default=0, show_default=True,
              help="lut per-channel: output channels sharing one palette.")
@click.option("--palette", type=click.Choice(["kmeans", "uniform"]), default="kmeans", show_default=True,
              help="lut: k-means palette, or evenly spaced entries (linear LUT).")
@click.option("--kmeans", type=click.Choice(["auto", "dp", "kmeans++"]), default="auto", show_default=True,
              help="lut k-means method: exact 1-D dynamic programming, k-means++ with restarts, or auto "
                   "(dp unless a tensor is too large for it).")
@click.option("--min-size", type=click.IntRange(0), default=None,
              help="Leave tensors with fewer elements float. Default: 1024 for linear/lut, 0 for fp16.")
@click.option("--include", multiple=True, help="Only weights whose name or consuming node name matches "
                                               "(shell pattern; repeatable). Naming a bias includes it.")
@click.option("--exclude", multiple=True, help="Keep float: weights whose name or node name matches (repeatable).")
@click.option("--include-op", multiple=True, help="Only weights read by this op type (repeatable).")
@click.option("--exclude-op", multiple=True, help="Keep float: weights read by this op type (repeatable).")
@click.option("--params", "quantize_params", is_flag=True, default=None,
              help="Also quantize biases and normalization parameters.")
@click.option("--calibration", type=click.Path(exists=True, path_type=Path), default=None,
              help="int8: a directory of images like the real inputs (or a calibration .npz) to measure "
                   "activation ranges on.")
@click.option("--calibration-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True, help="int8: how activation ranges are taken from the calibration images.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="int8: a non-image input for every calibration item: JSON number/list or @file.npy.")
@click.option("-v", "--verbose", is_flag=True, help="List every weight and why it was kept float.")
def quantize(src: Path, dst: Path, mode: str, bits: int, granularity: str | None, symmetric: bool, group_size: int,
             palette: str, kmeans: str, min_size: int | None, include: tuple[str, ...], exclude: tuple[str, ...],
             include_op: tuple[str, ...], exclude_op: tuple[str, ...], quantize_params: bool | None,
             calibration: Path | None, calibration_method: str, inputs: tuple[str, ...], verbose: bool) -> None:
    """Quantize SRC's weights and write the smaller package to DST.

    \b
    8-bit compute, calibrated on images like the real ones:
      corral model quantize det.corral -o det-int8.corral --mode int8 --calibration photos/
    """
    from engine.format import load, save
    from engine.quantize import QuantizeOptions, QuantizeReport, quantize_model

    options = QuantizeOptions(mode=mode, bits=bits, granularity=granularity, symmetric=symmetric,  # type: ignore
                              group_size=group_size, palette="uniform" if palette == "uniform" else kmeans,  # type: ignore
                              min_size=min_size, include=include, exclude=exclude, include_ops=include_op,
                              exclude_ops=exclude_op, quantize_params=quantize_params,
                              calibration_method=calibration_method)
    report = QuantizeReport()
    started = time.perf_counter()
    try:
        model = load(src)
        calibration_set = None
        if mode == "int8" and calibration is not None:
            from engine.cli.parsing import parse_input_value

            feeds = dict(parse_input_value(text, model.description) for text in inputs)
            calibration_set = CalibrationSet.from_source(model, calibration, feeds)
        small = quantize_model(model, options, report, calibration_set)
        save(small, dst)
    except EngineError as exc:
        _fail(exc)
    seconds = time.perf_counter() - started
    before, after = src.stat().st_size, dst.stat().st_size
    console.print(f"{src} → {dst}: {options.label()}, {report.count} weight(s) quantized, "
                  f"{len(report.skipped)} kept; {before:,} → {after:,} bytes ({after / before:.1%}) in {seconds:.1f}s")
    table = Table("storage", "bytes")
    for kind, size in small.bytes_by_storage().items():
        table.add_row(kind, f"{size:,}")
    console.print(table)
    if verbose:
        for name, mse in report.quantized.items():
            console.print(f"  quantized {name}: weight MSE {mse:.3g}")
        for name, reason in report.skipped.items():
            console.print(f"  kept {name}: {reason}")
    if report.count == 0:
        console.print("[yellow]no weight matched the selection; the package is unchanged apart from metadata[/]")


@click.command()
@click.argument("base", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("variants", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of images to run every model on.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="A non-image input for every item: JSON number/list or @file.npy (repeatable).")
@click.option("--size", default=None, metavar="HxW", help="Resize every image to HEIGHTxWIDTH first.")
@click.option("--sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a contact sheet PNG: one row per image, one column per model.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--backend", default="auto", show_default=True, help="Backend for the float BASE.")
@click.option("--variant-backend", default=None, help="Backend for the VARIANTS (default: --backend).")
@click.option("--variant-device", default="cpu", show_default=True, help="Device for the VARIANTS (cpu, cuda:N).")
@click.option("--variant-precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Precision for the VARIANTS: compare fp16 on CUDA with float by giving BASE itself as a variant.")
def compare(base: Path, variants: tuple[Path, ...], images: Path, inputs: tuple[str, ...], size: str | None,
            sheet: Path | None, as_json: bool, backend: str, variant_backend: str | None, variant_device: str,
            variant_precision: str) -> None:
    """Compare quantized VARIANTS with the float BASE over a directory of images.

    \b
    fp16 on a GPU against float on the CPU:
      corral model compare m.corral m.corral --images photos --variant-backend torch \\
          --variant-device cuda --variant-precision fp16
    """
    # engine.cli imports this module, so its parsing helpers are imported here, on use
    from engine.cli.parsing import parse_input_value, parse_size
    from engine.compare import Variant, compare_models, format_db, format_size, image_files, write_contact_sheet

    hw = parse_size(size) if size else None
    try:
        reference = Variant.from_path(base)
        feeds = dict(parse_input_value(text, reference.model.description) for text in inputs)
        result = compare_models(reference, [Variant.from_path(v) for v in variants],
                                image_files(images), feeds, size=hw, backend=backend,
                                variant_run={"backend": variant_backend or backend, "device": variant_device,
                                             "precision": variant_precision})
        if sheet:
            write_contact_sheet(result, sheet)
    except EngineError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    table = Table("model", "size", "vs base", "speed", "output", "max abs err", "SNR", "PSNR", "top-1",
                  title=f"{len(result.images)} image(s) from {images}")
    table.add_row(result.base.name, format_size(result.base.size_bytes), "1.00×",
                  "1.00×" if result.base.seconds_per_image else "—", "", "", "", "", "")
    for v in result.variants:
        for i, (name, s) in enumerate(v.outputs.items()):
            table.add_row(v.name if i == 0 else "", format_size(v.size_bytes) if i == 0 else "",
                          f"{result.base.size_bytes / v.size_bytes:.2f}× smaller" if i == 0 else "",
                          _speed(v) if i == 0 else "", name,
                          f"{s.max_abs_error:.4g}", format_db(s.snr_db),
                          format_db(s.psnr_db) if s.is_image else "—",
                          "—" if s.top1_agreement is None else f"{s.top1_agreement:.1%}")
    console.print(table)
    timed = [r for r in (result.base, *result.variants) if r.seconds_per_image]
    if timed:
        console.print("speed: " + ", ".join(f"{r.name} {1 / (r.seconds_per_image or 1):.1f} img/s on {r.backend}"
                                            for r in timed))
    for v in result.variants:
        if v.pays is False:
            console.print(f"[yellow]{v.name} computes {1 / (v.speedup or 1):.2f}× slower than {result.base.name} "
                          f"on {v.backend} here: it saves bytes, not time, on this machine[/]")
    if sheet:
        console.print(f"contact sheet: {sheet}")


def _speed(result: VariantResult) -> str:
    """A variant's speed against the base (images per second over the base's)."""
    return "—" if result.speedup is None else f"{result.speedup:.2f}×"


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the .onnx file.")
def export(model_path: Path, dst: Path) -> None:
    """Export MODEL as a float ONNX graph (opset 17; quantized weights dequantized)."""
    from engine.format import load

    try:
        from engine.exporters.onnx import export_onnx
    except ImportError as exc:
        _fail(ImportError(f"ONNX export needs the onnx package ({exc}); install corral's 'onnx' extra: "
                          "pip install 'corral[onnx]'"))
    try:
        export_onnx(load(model_path), dst)
    except EngineError as exc:
        _fail(exc)
    console.print(f"{model_path} → {dst} ({dst.stat().st_size:,} bytes, ONNX opset 17)")
