"""``corral model inspect``: what a model takes and gives, what it is made of, and whether it can run here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.cli.parsing import fail
from engine.description import MAX_BATCH_KEY, Feature, ModelDescription
from engine.exceptions import EngineError
from engine.graph import Model
from engine.importers.onnx_features import TensorInfo
from engine.importers.onnx_layout import image_like


def _feature_report(f: Feature) -> dict[str, Any]:
    spec = f.shape
    flexibility = "enumerated" if spec.enumerated else "range" if spec.ranges else "fixed"
    report: dict[str, Any] = {
        "name": f.name, "kind": f.kind, "shape": list(spec.default), "flexibility": flexibility,
        "allowed": spec.describe(), "batched": f.batched,
    }
    if spec.enumerated:
        report["enumerated"] = [list(s) for s in spec.enumerated]
    if spec.ranges:
        report["ranges"] = [[lo, hi] for lo, hi in spec.ranges]
    if f.kind == "image":
        report.update(color_layout=f.color_layout, scale=list(f.scale), bias=list(f.bias))
    else:
        report["dtype"] = f.dtype
    if f.default is not None:
        report["has_default"] = True
    if f.description:
        report["description"] = f.description
    return report


def batching(m: Model) -> dict[str, Any]:
    """Whether items of one shape share a run, and why not when they cannot."""
    desc = m.description
    if desc.metadata.user.get(MAX_BATCH_KEY) == "1":
        return {"batchable": False, "reason": "the file fixes its batch at 1 in a way corral could not undo (a "
                "batch of 2 did not equal two runs of 1, even with its Reshape shapes' literal 1 read as the "
                "batch): items run one at a time"}
    if not any(f.batched for f in desc.inputs):
        return {"batchable": False, "reason": "no input has a batch dimension: each item is one whole run"}
    return {"batchable": True, "reason": "items of the same shape are stacked into one run"}


def image_hints(desc: ModelDescription) -> list[str]:
    """Array inputs that are plainly images, with how to declare them (the rule of onnx_layout.image_like)."""
    hints = []
    for f in desc.inputs:
        if f.kind != "array" or not f.batched or len(f.shape.default) != 3:
            continue
        layout = image_like(TensorInfo(f.name, np.dtype(f.dtype), [None, *f.shape.default]))
        if layout is not None:
            flag = " --image-layout NHWC" if layout == "NHWC" else ""
            hints.append(f"input {f.name!r} ({'×'.join(map(str, f.shape.default))} {f.dtype}) looks like an image "
                         f"but was imported as an array: to feed pictures, import the model again with "
                         f"--image-input {f.name}{flag}")
    return hints


def inspect_report(m: Model, path: Path | None = None) -> dict[str, Any]:
    """Everything ``corral model inspect`` shows, as JSON-ready data."""
    desc = m.description
    meta = desc.metadata
    problems: list[str] = []
    try:
        m.validate()
    except EngineError as exc:
        problems.append(str(exc))
    report: dict[str, Any] = {}
    if path is not None:
        data = path.read_bytes()
        report.update(file=str(path), size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    report.update(
        name=m.name,
        metadata={"name": meta.name, "version": meta.version, "author": meta.author, "license": meta.license,
                  "description": meta.description, "user": dict(meta.user)},
        inputs=[_feature_report(f) for f in desc.inputs],
        outputs=[_feature_report(f) for f in desc.outputs],
        node_count=len(m.graph.nodes),
        ops=m.op_counts(),
        unsupported_ops=m.unsupported_ops(),
        parameters=m.parameter_count(),
        bytes_by_storage=m.bytes_by_storage(),
        class_labels=len(desc.class_labels),
        class_labels_output=desc.class_labels_output,
        custom_layers=m.custom_layers(),
        custom_model=desc.custom_model,
        batching=batching(m),
        hints=image_hints(desc),
        valid=not problems,
        problems=problems,
    )
    return report


def _numbers(values: list[float]) -> str:
    text = ",".join(f"{v:.6g}" for v in values)
    return text if len(values) == 1 else f"({text})"


def _print_report(r: dict[str, Any], console: Console) -> None:
    title = r["name"] + (f" {r['metadata']['version']}" if r["metadata"]["version"] else "")
    console.print(f"[bold]{escape(title)}[/]  {escape(r.get('file', ''))}")
    for key in ("author", "license", "description"):
        if r["metadata"][key]:
            console.print(f"  {key}: {escape(r['metadata'][key])}")
    for label in ("inputs", "outputs"):
        table = Table(title=label, title_justify="left", show_edge=False)
        for col in ("name", "kind", "shape", "allowed", "mapping"):
            table.add_column(col)
        for f in r[label]:
            mapping = (f"{f['color_layout']}, pixel × {_numbers(f['scale'])} + {_numbers(f['bias'])}"
                       if f["kind"] == "image" else f["dtype"] + (" (has default)" if f.get("has_default") else ""))
            shape = "×".join(str(d) if d else "?" for d in f["shape"])  # 0: decided when it runs
            allowed = "follows the inputs" if 0 in f["shape"] else f"{f['flexibility']}: {f['allowed']}"
            table.add_row(escape(f["name"]), f["kind"], shape, allowed, escape(mapping))
        console.print(table)
    ops = Table(title=f"ops ({r['node_count']} nodes)", title_justify="left", show_edge=False)
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, count in r["ops"].items():
        ops.add_row(escape(op) + (" [red](unsupported)[/]" if op in r["unsupported_ops"] else ""), str(count))
    console.print(ops)
    storage = ", ".join(f"{k} {v:,} B" for k, v in r["bytes_by_storage"].items()) or "none"
    console.print(f"parameters: {r['parameters']:,}   weight bytes: {storage}")
    if r["class_labels"]:
        console.print(f"class labels: {r['class_labels']} (output {escape(r['class_labels_output'])})")
    if r["custom_layers"]:
        console.print(f"custom layers: {escape(', '.join(r['custom_layers']))}")
    if r["custom_model"]:
        console.print(f"custom model: {escape(r['custom_model'])}")
    if not r["batching"]["batchable"]:
        console.print(f"cannot batch: {escape(r['batching']['reason'])}")
    for hint in r["hints"]:
        console.print(f"[yellow]hint:[/] {escape(hint)}")
    for op, nodes in sorted(r["unsupported_ops"].items()):
        console.print(f"[red]unsupported op {escape(op)}[/] in nodes: {escape(', '.join(nodes))}")
    for problem in r["problems"]:
        console.print(f"[red]problem:[/] {escape(problem)}")


@click.command("inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(model_path: Path, as_json: bool) -> None:
    """Show a model's inputs, outputs, ops, parameters and metadata, even if it cannot run here.

    An ONNX file is read as it is, without importing it: its inputs, its ops and those corral lacks, and
    the `corral model import` command that maps its image inputs.
    """
    from engine.format import load

    if model_path.suffix.lower() == ".onnx":
        _inspect_onnx(model_path, as_json)
        return
    try:
        m = load(model_path, validate=False)
    except EngineError as exc:
        fail(str(exc))
    report = inspect_report(m, model_path)
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_report(report, Console(highlight=False))


def _inspect_onnx(path: Path, as_json: bool) -> None:
    from engine.importers.onnx_survey import survey_onnx

    try:
        report = survey_onnx(path)
    except ImportError as exc:
        fail(f"reading ONNX files needs the onnx package ({exc})")
    except Exception as exc:  # noqa: BLE001 - a file onnx cannot parse: say so, naming it
        fail(f"{path}: not a readable ONNX model ({exc})")
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    console = Console(highlight=False)
    console.print(f"[bold]{escape(path.name)}[/]  ONNX opset {report['opset']}"
                  + (f", made by {escape(report['producer'])}" if report["producer"] else ""))
    for label in ("inputs", "outputs"):
        table = Table(title=label, title_justify="left", show_edge=False)
        for col in ("name", "dtype", "shape", "looks like"):
            table.add_column(col)
        for t in report[label]:
            shape = "unknown" if t["shape"] is None else "×".join(map(str, t["shape"]))
            looks = f"an image ({report['image_like'][t['name']]})" if t["name"] in report["image_like"] else ""
            table.add_row(escape(t["name"]), t["dtype"], shape, looks)
        console.print(table)
    ops = ", ".join(f"{op} {n}" for op, n in report["ops"].items())
    console.print(f"ops ({report['node_count']} nodes): {escape(ops)}")
    for op, nodes in sorted(report["unsupported_ops"].items()):
        console.print(f"[red]unsupported op {escape(op)}[/] in nodes: {escape(', '.join(nodes[:10]))}"
                      + (f" and {len(nodes) - 10} more" if len(nodes) > 10 else ""))
    if report["unsupported_ops"]:
        console.print("corral cannot run this model until those ops are provided (as custom layers)")
    else:
        console.print(f"import it with: {escape(report['import_command'])}")
