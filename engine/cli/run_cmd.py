"""``corral model run``: predict over image files (or one item of arrays) and write the outputs."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from engine.cli.parsing import batch_count, fail, parse_input_value
from engine.compiled_model import CompiledModel
from engine.description import Feature
from engine.exceptions import EngineError
from engine.images import DEFAULT_MAX_PIXELS, ResizePolicy, decode_image, image_to_tensor
from engine.outputs import NO_IMAGE_STEM, output_stems, write_item_outputs, write_npz

# Decoding and resizing release the GIL in Pillow, so a few threads keep up with the model.
_DECODE_THREADS = min(4, os.cpu_count() or 1)


def _run_stacked(compiled: CompiledModel, given: dict[str, np.ndarray], count: int, out: Path, raw: bool,
                 array_format: str) -> list[Path]:
    """``count`` items whose batched inputs arrive stacked: each item's outputs as files (``result_<i>``) and,
    with ``raw``, ``result.npz`` holding every output stacked back along its batch axis, as the file gives it."""
    desc = compiled.description
    items = [{name: arr[i] if desc.input(name).batched else arr for name, arr in given.items()}
             for i in range(count)]
    results = compiled.predict_batch(items)
    width = len(str(count - 1))
    written = [path for i, result in enumerate(results)
               for path in write_item_outputs(out, f"{NO_IMAGE_STEM}_{i:0{width}d}", result, desc,
                                              array_format=array_format)]  # type: ignore[arg-type]
    if raw:
        stacked = {}
        for f in desc.outputs:
            values = [r[f.name] for r in results]
            stacked[f.name] = np.stack(values, axis=f.batch_axis) if f.batched else values[0]
        written.append(write_npz(out / f"{NO_IMAGE_STEM}.npz", stacked))
    return written


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a directory stands for the files directly inside it (sorted, hidden ones skipped)."""
    result: list[Path] = []
    for p in paths:
        if p.is_dir():
            result.extend(sorted(c for c in p.iterdir() if c.is_file() and not c.name.startswith(".")))
        else:
            result.append(p)
    return result


def _naming(path: Path, exc: BaseException) -> str:
    """The error message, starting with the file's name."""
    message = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
    return message if message.startswith(str(path)) else f"{path}: {message}"


class _Run:
    """One ``corral model run`` over image files: decode, predict in batches, write, tally failures."""

    def __init__(self, compiled: CompiledModel, feature: Feature, given: dict[str, np.ndarray], out: Path,
                 console: Console, *, resize: str, raw: bool, array_format: str, max_pixels: int) -> None:
        self.compiled, self.feature, self.given, self.out = compiled, feature, given, out
        self.console = console
        self.resize, self.raw, self.array_format, self.max_pixels = resize, raw, array_format, max_pixels
        self.failures: list[tuple[Path, str]] = []
        self.written = 0

    def fail_item(self, path: Path, exc: BaseException) -> None:
        message = _naming(path, exc)
        self.failures.append((path, message))
        self.console.print(f"[red]error[/] {escape(message)}")

    def load(self, path: Path) -> np.ndarray | BaseException:
        try:
            image = decode_image(path, max_pixels=self.max_pixels)
            return image_to_tensor(image, self.feature, self.resize)
        except EngineError as exc:
            return exc

    def predict(self, items: list[tuple[int, dict[str, Any]]], paths: Sequence[Path]) -> list[tuple[int, dict]]:
        """Predict a batch; if the batch fails, item by item, so that one bad item fails alone."""
        try:
            results = self.compiled.predict_batch([item for _, item in items])
        except Exception:  # noqa: BLE001 - retried per item below to find the culprit
            results = None
        if results is not None:
            return [(i, r) for (i, _), r in zip(items, results)]
        done = []
        for i, item in items:
            try:
                done.append((i, self.compiled.predict(item)))
            except Exception as exc:  # noqa: BLE001 - reported against its file, the run goes on
                self.fail_item(paths[i], exc)
        return done

    def __call__(self, paths: Sequence[Path], batch_size: int) -> None:
        stems = output_stems(paths)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with ThreadPoolExecutor(_DECODE_THREADS) as pool, \
                Progress(*columns, console=self.console, transient=True,
                         disable=not self.console.is_terminal) as progress:
            task = progress.add_task(escape(self.compiled.name), total=len(paths))
            # Decode batch k+1 on the pool while batch k runs.
            batches = [list(range(s, min(s + batch_size, len(paths)))) for s in range(0, len(paths), batch_size)]
            pending = [pool.submit(self.load, paths[i]) for i in batches[0]] if batches else []
            for k, batch in enumerate(batches):
                loaded = [f.result() for f in pending]
                if k + 1 < len(batches):
                    pending = [pool.submit(self.load, paths[i]) for i in batches[k + 1]]
                items = []
                for i, value in zip(batch, loaded):
                    if isinstance(value, BaseException):
                        self.fail_item(paths[i], value)
                    else:
                        items.append((i, {**self.given, self.feature.name: value}))
                for i, result in self.predict(items, paths) if items else []:
                    try:
                        write_item_outputs(self.out, stems[i], result, self.compiled.description, raw=self.raw,
                                           array_format=self.array_format)  # type: ignore[arg-type]
                        self.written += 1
                    except (EngineError, OSError) as exc:
                        self.fail_item(paths[i], exc)
                progress.advance(task, len(batch))


@click.command("run")
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the outputs (created if missing).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
              help="A model input: a JSON number or list, or @file.npy (repeat for several).")
@click.option("--backend", default="auto", show_default=True,
              help="Backend to run on: onnxruntime, torch, numpy, or auto (onnxruntime on the CPU, torch on CUDA).")
@click.option("--device", default="cpu", show_default=True, help="Device for the backend: cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Compute precision; fp16 needs a CUDA device (torch or onnxruntime-gpu).")
@click.option("--plugin", "plugins", multiple=True, envvar="CORRAL_PLUGINS",
              help="Module that registers custom layer/model classes (repeatable; CORRAL_PLUGINS, comma separated).")
@click.option("--raw", is_flag=True, help="Also write every output as DIR/<stem>.npz.")
@click.option("--resize", type=click.Choice([p.value for p in ResizePolicy if p is not ResizePolicy.NONE]),
              default=ResizePolicy.FIT.value, show_default=True,
              help="What to do with an image whose size the model does not accept.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True,
              help="Images per prediction batch.")
@click.option("--array-format", type=click.Choice(["npy", "json"]), default="npy", show_default=True,
              help="File format for array outputs (classifier outputs are always JSON).")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images with more pixels than this (decompression bombs).")
@click.pass_context
def run(ctx: click.Context, model_path: Path, images: Sequence[Path], out: Path, inputs: Sequence[str],
        backend: str, device: str, precision: str, plugins: Sequence[str], raw: bool, resize: str, batch_size: int, array_format: str,
        max_pixels: int) -> None:
    """Run MODEL over IMAGE files (or directories of them) and write the outputs to --out.

    \b
    Image outputs become PNG files, classifier outputs JSON, other arrays .npy.
    A model whose inputs are all arrays takes them from --input, with no images:
      corral model run adder.corral --input 'a=[1,2]' --input b=@b.npy --out results
    One bad image is reported and skipped; the exit status is 1 if any failed.
    """
    from engine.compiler import compile
    from engine.format import load
    from engine.memory import retain_freed_memory

    retain_freed_memory()  # each batch reuses the last one's memory instead of faulting in fresh pages
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        modules = [m.strip() for spec in plugins for m in spec.split(",") if m.strip()]
        compiled = compile(load(model_path), backend, device, precision=precision, plugins=modules or None)
    except EngineError as exc:
        fail(str(exc))
    desc = compiled.description
    given = dict(parse_input_value(spec, desc) for spec in inputs)
    open_images = [f for f in desc.image_inputs if f.name not in given]
    paths = expand_paths(images)
    if images and not open_images:
        from engine.cli.inspect_cmd import image_hints

        hints = "" if desc.image_inputs else "".join(f"; {hint}" for hint in image_hints(desc))
        fail(f"{model_path}: the model has no image input left to feed the images "
             f"({'all given with --input' if desc.image_inputs else 'it takes only arrays'}); "
             f"drop the image arguments or the --input for the image{hints}")
    if len(open_images) > 1:
        fail(f"{model_path}: the model has image inputs {[f.name for f in open_images]}; give all but one "
             "with --input NAME=@array.npy")
    if images and not paths:
        fail("the given directories hold no files")
    feature = open_images[0] if open_images else None
    missing = [f.name for f in desc.inputs
               if f.name not in given and f.default is None and (feature is None or f.name != feature.name)]
    if feature is not None and not paths:
        missing.insert(0, feature.name)
    if missing:
        needs = "; ".join(f"{desc.input(n).name} ({desc.input(n).kind} {desc.input(n).shape.describe()})"
                          for n in missing)
        fail(f"{model_path}: missing inputs: {needs}. Give images, or --input NAME=VALUE (JSON or @file.npy)")
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    count = batch_count(given, desc)
    if count is not None and feature is not None:
        fail(f"{model_path}: a leading batch dimension on --input arrays applies when the model takes no images; "
             "give single items, or feed the images as files")
    if count is not None:  # N items, as the model's own file takes them
        try:
            written = _run_stacked(compiled, given, count, out, raw, array_format)
        except EngineError as exc:
            fail(str(exc))
        console.print(f"{count} items → {len(written)} files in {escape(str(out))}")
        return
    if feature is None:  # one item, every input from --input or defaults
        try:
            result = compiled.predict(given)
            written = write_item_outputs(out, NO_IMAGE_STEM, result, desc, raw=raw,
                                         array_format=array_format)  # type: ignore[arg-type]
        except EngineError as exc:
            fail(str(exc))
        console.print(f"wrote {', '.join(escape(str(p)) for p in written)}")
        return

    job = _Run(compiled, feature, given, out, console, resize=resize, raw=raw, array_format=array_format,
               max_pixels=max_pixels)
    job(paths, batch_size)
    elapsed = time.perf_counter() - started
    rate = job.written / elapsed if elapsed > 0 else 0.0
    console.print(f"{len(paths)} images: {job.written} done, {len(job.failures)} failed, "
                  f"in {elapsed:.1f} s ({rate:.1f} images/s) → {escape(str(out))}")
    if job.failures:
        console.print(f"[red]failed ({len(job.failures)}):[/]")
        for _, message in job.failures:
            console.print(f"  {escape(message)}")
        ctx.exit(1)
