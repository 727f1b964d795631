"""ONNX import: ``import_onnx(path_or_model, options) -> Model``.

Opsets: files whose default-domain opset is 11 or newer are what corral is
built for; opsets 7–10 are accepted too, because corral's ops also read the
older attribute forms (Slice/Pad/Clip/Split/Squeeze/Unsqueeze/Reduce* axes
as attributes), and the two ops whose meaning changed without a change of
form are rewritten: Softmax nodes carry an ``opset`` attribute (2-D coercion
before opset 13) and Resize-10 nodes get opset 11's (X, roi, scales) inputs
and asymmetric/floor sampling. Older files are refused.

Weights come from initializers (including old-style ones also listed as
graph inputs, which stay weights), sparse initializers and Constant nodes.
Shape arithmetic whose inputs are all constant is then folded by running
corral's own ops, so a typical PyTorch export keeps only its compute nodes;
Shape nodes on real inputs stay in the graph.

Image inputs get a colour layout, per-channel scale and bias (so
``tensor = pixel * scale + bias``; ImageNet mean/std is
``scale = 1/(255*std)``, ``bias = -mean/std``) and allowed sizes. The batch
dimension is made flexible when a run of two items equals two runs of one
(see :mod:`engine.importers.batch_probe`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.description import MAX_BATCH_KEY, ColorLayout, Feature, Metadata, ModelDescription, ShapeSpec
from engine.exceptions import ModelImportError
from engine.graph import CUSTOM_DOMAIN, Graph, Model
from engine.importers.batch_probe import BatchProbe, probe_batch
from engine.importers.onnx_features import (
    Range,
    TensorInfo,
    array_shape,
    image_layout,
    image_shape,
    per_channel,
    probe_hw,
    tensor_info,
)
from engine.importers.onnx_graph import DEFAULT_DOMAINS, GraphConverter, check_ops, default_opset
from engine.importers.onnx_layout import TensorLayout, channels_first, channels_first_graph, tensor_layout
from engine.importers.onnx_rewrites import fold_constants, unfix_batch

MIN_OPSET = 7
INSTALL_HINT = "pip install 'corral[onnx]'"



@dataclass
class OnnxImportOptions:
    """How to read an ONNX file as a corral model.

    Image options (``color_layout``, ``image_scale``, ``image_bias``, sizes)
    apply to every name in ``image_inputs``; ``color_layout`` may also be a
    mapping of input/output name to layout. Image outputs map back with
    ``output_scale``/``output_bias`` (default: the input's scale and bias),
    ``pixel = (tensor - bias) / scale``.
    """

    name: str = ""
    image_inputs: Sequence[str] = ()
    image_outputs: Sequence[str] = ()
    # None: RGB for 3 channels, GRAY for 1.
    color_layout: ColorLayout | Mapping[str, ColorLayout] | None = None
    # Where image tensors keep their channels (for every image name, or per name); None: read from the shape.
    image_layout: TensorLayout | Mapping[str, TensorLayout] | None = None
    image_scale: float | Sequence[float] = 1.0
    image_bias: float | Sequence[float] = 0.0
    output_scale: float | Sequence[float] | None = None
    output_bias: float | Sequence[float] | None = None
    # Allowed image sizes as (height, width): an enumerated list, or ranges.
    image_sizes: Sequence[tuple[int, int]] = ()
    height_range: Range | None = None
    width_range: Range | None = None
    default_size: tuple[int, int] | None = None
    # Class labels (a list, or a text file with one label per line) and the output they index.
    class_labels: Sequence[str] | str | os.PathLike[str] | None = None
    class_labels_output: str = ""
    input_defaults: Mapping[str, Any] = field(default_factory=dict)
    # None: decide by running the model at batch 1 and 2; True/False: trust the caller.
    flexible_batch: bool | None = None
    # Node domains whose ops are corral custom layers (registered on the worker).
    custom_domains: Sequence[str] = (CUSTOM_DOMAIN,)
    author: str = ""
    license: str = ""
    version: str = ""
    description: str = ""

    def tensor_layout_for(self, name: str) -> TensorLayout | None:
        if self.image_layout is None or isinstance(self.image_layout, str):
            return self.image_layout
        return self.image_layout.get(name)

    def layout_for(self, name: str) -> ColorLayout | None:
        if self.color_layout is None or isinstance(self.color_layout, str):
            return self.color_layout
        return self.color_layout.get(name)


def _load(source: Any) -> tuple[Any, Any, str, str]:
    """(onnx module, ModelProto, source label for messages, file stem)."""
    try:
        import onnx
    except ImportError:
        raise ModelImportError(f"importing ONNX models needs the onnx package: {INSTALL_HINT}") from None
    if isinstance(source, onnx.ModelProto):
        return onnx, source, f"ONNX model {source.graph.name or '(unnamed)'!r}", ""
    path = Path(source)
    if not path.is_file():
        raise ModelImportError(f"{path}: no such ONNX file")
    try:
        # Loads external data files too, resolved relative to the model's folder.
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf and onnx raise assorted types for bad files
        raise ModelImportError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    return onnx, proto, str(path), path.stem


def _read_labels(labels: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelImportError(f"class labels file {path}: {exc.strerror or exc}") from exc
        return [line.strip() for line in text.splitlines() if line.strip()]
    return [str(v) for v in labels]


def _same_as_min_opset(onnx: Any, nodes: Iterable[Any], opset: int) -> bool:
    """An older file whose every default-domain op has the definition it has at MIN_OPSET (ONNX's node tests
    give a one-op model its op's first opset: 1 for Not) means what it would at MIN_OPSET."""
    for node in nodes:
        if node.domain not in DEFAULT_DOMAINS:
            continue
        try:
            if (onnx.defs.get_schema(node.op_type, opset, "").since_version
                    != onnx.defs.get_schema(node.op_type, MIN_OPSET, "").since_version):
                return False
        except onnx.defs.SchemaError:
            return False
    return True


def import_graph(source: str | os.PathLike[str] | Any, where: str = "") -> Graph:
    """Only the graph of an ONNX model, converted and folded as :func:`import_onnx` does it, for a caller that
    has the model's description already (e.g. a graph onnxruntime's quantizer rewrote)."""
    onnx, proto, label, _ = _load(source)
    graph, proto, _ = _convert(onnx, proto, (CUSTOM_DOMAIN,), where or label)
    weights = set(graph.initializers)
    inputs = [vi.name for vi in proto.graph.input if vi.name not in weights]
    return fold_constants(graph, inputs, [vi.name for vi in proto.graph.output])


def _convert(onnx: Any, proto: Any, custom_domains: Sequence[str], where: str) -> tuple[Graph, Any, int]:
    """(graph, the proto with local functions inlined, its default-domain opset)."""
    opset = default_opset(proto)
    if opset < MIN_OPSET and not _same_as_min_opset(onnx, proto.graph.node, opset):
        raise ModelImportError(f"{where}: uses ONNX opset {opset}; corral imports opset {MIN_OPSET} and newer "
                               "(11+ recommended). Convert it with onnx.version_converter first")
    if proto.functions:
        from onnx import inliner

        proto = inliner.inline_local_functions(proto)
    check_ops(proto.graph.node, custom_domains, where)
    return GraphConverter(onnx, opset, custom_domains, where).convert(proto.graph), proto, opset


def import_onnx(source: str | os.PathLike[str] | Any, options: OnnxImportOptions | None = None) -> Model:
    """Convert an ONNX file (or an ``onnx.ModelProto``) into a corral :class:`Model`."""
    opts = options or OnnxImportOptions()
    onnx, proto, where, stem = _load(source)
    graph, proto, opset = _convert(onnx, proto, opts.custom_domains, where)

    weights = set(graph.initializers)
    inputs = [tensor_info(onnx, vi, f"{where}: input") for vi in proto.graph.input if vi.name not in weights]
    outputs = [tensor_info(onnx, vi, f"{where}: output") for vi in proto.graph.output]
    _check_names(opts, inputs, outputs, where)
    graph, inputs, outputs = _images_channels_first(graph, inputs, outputs, opts, where)
    graph = fold_constants(graph, [i.name for i in inputs], [o.name for o in outputs])

    importer = _Describer(opts, where, opset, proto, stem)
    model = Model(description=importer.describe(inputs, outputs, batch=None), graph=graph)
    model.validate(where)
    candidates = {i.name for i in inputs if i.batch_candidate}
    probe: BatchProbe | None = None
    if not candidates:
        flexible = False
    elif opts.flexible_batch is not None:
        flexible = opts.flexible_batch
    else:
        shapes = {f.name: ((1, *f.shape.default) if f.name in candidates else f.shape.default)
                  for f in model.description.inputs}
        for f in model.description.image_inputs:
            shapes[f.name] = (1, f.shape.default[0], *probe_hw(f.shape))
        dtypes = {f.name: np.dtype(f.dtype) for f in model.description.inputs}
        probe = probe_batch(model, shapes, dtypes, candidates)
        if probe is not None and not probe.flexible:
            # An exporter may have written the batch of 1 into Reshape shapes: with those dims copied
            # from the input instead (0), a batch of 2 may equal two runs of 1 after all.
            unfixed = unfix_batch(model.graph)
            if unfixed is not None:
                trial = Model(description=model.description, graph=unfixed)
                second = probe_batch(trial, shapes, dtypes, candidates)
                if second is not None and second.flexible:
                    model.graph, probe = unfixed, second
        # Nothing learned (the model would not run on random inputs): trust a symbolic batch dim.
        flexible = probe.flexible if probe else all(i.dims is not None and i.dims[0] is None
                                                    for i in inputs if i.name in candidates)
    model.description = importer.describe(inputs, outputs, batch=(flexible, probe))
    model.validate(where)
    return model


def _images_channels_first(graph: Graph, inputs: list[TensorInfo], outputs: list[TensorInfo],
                           opts: OnnxImportOptions,
                           where: str) -> tuple[Graph, list[TensorInfo], list[TensorInfo]]:
    """NHWC image inputs and outputs rewritten to the NCHW tensors corral maps images to (see onnx_layout)."""
    nhwc: dict[str, set[str]] = {"input": set(), "output": set()}
    for role, infos, names in (("input", inputs, opts.image_inputs), ("output", outputs, opts.image_outputs)):
        for k, info in enumerate(infos):
            if info.name in names:
                layout = tensor_layout(info, opts.tensor_layout_for(info.name), f"{where}: image {role} {info.name!r}")
                if layout == "NHWC":
                    nhwc[role].add(info.name)
                    infos[k] = channels_first(info, layout)
    return channels_first_graph(graph, nhwc["input"], nhwc["output"]), inputs, outputs


def _check_names(opts: OnnxImportOptions, inputs: list[TensorInfo], outputs: list[TensorInfo], where: str) -> None:
    input_names = [i.name for i in inputs]
    output_names = [o.name for o in outputs]
    for role, given, known in (("image input", opts.image_inputs, input_names),
                               ("image output", opts.image_outputs, output_names),
                               ("input default", list(opts.input_defaults), input_names)):
        unknown = [n for n in given if n not in known]
        if unknown:
            raise ModelImportError(f"{where}: {role} names {unknown} are not in the model; "
                                   f"its {role.split()[-1]}s are {known}")
    if opts.class_labels_output and opts.class_labels_output not in output_names:
        raise ModelImportError(f"{where}: class labels output {opts.class_labels_output!r} is not an output; "
                               f"outputs are {output_names}")


class _Describer:
    """Builds the model description from the ONNX graph's inputs/outputs and the options."""

    def __init__(self, opts: OnnxImportOptions, where: str, opset: int, proto: Any, stem: str) -> None:
        self.opts = opts
        self.where = where
        self.opset = opset
        self.proto = proto
        self.stem = stem

    def describe(self, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 batch: tuple[bool, BatchProbe | None] | None) -> ModelDescription:
        """``batch`` None: provisional (every batch candidate batched), else (flexible, probe result)."""
        flexible, probe = batch if batch is not None else (True, None)
        image_names = set(self.opts.image_inputs)
        features = []
        for info in inputs:
            if info.name in image_names:
                features.append(self._image_input(info))
            else:
                features.append(self._array_input(info, info.batch_candidate and flexible))
        # Image items are [C, H, W]: a fixed batch of 1 stays a batch axis, limited to one item per run.
        strips_batch = flexible or any(f.kind == "image" for f in features)
        outs = []
        for info in outputs:
            axis = 0
            if probe is not None and (probe.flexible or (strips_batch and info.name in probe.batched_outputs)):
                batched = info.name in probe.batched_outputs
                axis = probe.batched_outputs.get(info.name, 0) if info.dims is not None else 0
            else:
                batched = strips_batch and info.dims is not None and len(info.dims) >= 1 and info.dims[0] in (1, None)
            outs.append(self._output(info, batched, axis))
        desc = ModelDescription(inputs=features, outputs=outs, metadata=self._metadata())
        if batch is not None and not flexible and any(f.kind == "image" and f.batched for f in features):
            desc.metadata.user[MAX_BATCH_KEY] = "1"
        if self.opts.class_labels is not None:
            self._class_labels(desc, outputs)
        return desc

    # ------------------------------------------------------------ inputs
    def _image_input(self, info: TensorInfo) -> Feature:
        where = f"{self.where}: image input {info.name!r}"
        layout, channels = image_layout(info, self.opts.layout_for(info.name), where)
        assert info.dims is not None
        if info.dims[0] not in (1, None):
            raise ModelImportError(f"{where}: batch dimension is {info.dims[0]}; an image input needs 1 or a "
                                   "symbolic batch dimension")
        if info.dtype.kind != "f":
            raise ModelImportError(f"{where}: is {info.dtype}; image inputs must be floating point")
        o = self.opts
        shape = image_shape(channels, (info.dims[2], info.dims[3]), o.image_sizes, o.height_range, o.width_range,
                            o.default_size, where)
        return Feature(name=info.name, kind="image", shape=shape, dtype=str(info.dtype), color_layout=layout,
                       scale=per_channel(o.image_scale, channels, "scale", where),
                       bias=per_channel(o.image_bias, channels, "bias", where), batched=True)

    def _array_input(self, info: TensorInfo, batched: bool) -> Feature:
        where = f"{self.where}: input {info.name!r}"
        if info.dims is None:
            raise ModelImportError(f"{where}: the file gives no shape; run onnx shape inference "
                                   "(onnx.shape_inference.infer_shapes) or export with input shapes")
        dims = info.dims[1:] if batched else [1 if i == 0 and d is None and info.batch_candidate else d
                                              for i, d in enumerate(info.dims)]
        feature = Feature(name=info.name, kind="array", shape=array_shape(dims), dtype=str(info.dtype),
                          batched=batched)
        if info.name in self.opts.input_defaults:
            default = np.asarray(self.opts.input_defaults[info.name], dtype=info.dtype)
            if not feature.shape.allows(default.shape):
                raise ModelImportError(f"{where}: default value of shape {list(default.shape)} is not an "
                                       f"allowed shape ({feature.shape.describe()})")
            feature.default = default
        return feature

    # ------------------------------------------------------------ outputs
    def _output(self, info: TensorInfo, batched: bool, axis: int = 0) -> Feature:
        dims = [] if info.dims is None else info.dims if not batched else [*info.dims[:axis], *info.dims[axis + 1:]]
        if info.name not in self.opts.image_outputs:
            return Feature(name=info.name, kind="array", shape=ShapeSpec(tuple(d or 0 for d in dims)),
                           dtype=str(info.dtype), batched=batched, batch_axis=axis if batched else 0)
        where = f"{self.where}: image output {info.name!r}"
        layout, channels = image_layout(info, self.opts.layout_for(info.name), where)
        if not batched or axis:
            raise ModelImportError(f"{where}: has no batch dimension the runtime can strip; an image output "
                                   "must be [N, C, H, W]")
        o = self.opts
        scale = o.image_scale if o.output_scale is None else o.output_scale
        bias = o.image_bias if o.output_bias is None else o.output_bias
        return Feature(name=info.name, kind="image", shape=ShapeSpec(tuple(d or 0 for d in dims)),
                       dtype=str(info.dtype), color_layout=layout, batched=True,
                       scale=per_channel(scale, channels, "scale", where),
                       bias=per_channel(bias, channels, "bias", where))

    def _class_labels(self, desc: ModelDescription, outputs: list[TensorInfo]) -> None:
        labels = _read_labels(self.opts.class_labels)  # type: ignore[arg-type]
        if not labels:
            raise ModelImportError(f"{self.where}: the class labels list is empty")
        target = self.opts.class_labels_output
        if not target:
            if len(outputs) != 1:
                raise ModelImportError(f"{self.where}: the model has {len(outputs)} outputs; say which one the "
                                       "class labels index (class_labels_output)")
            target = outputs[0].name
        feature = desc.output(target)
        classes = feature.shape.default[-1] if feature.shape.default else 0
        if classes and classes != len(labels):
            raise ModelImportError(f"{self.where}: {len(labels)} class labels for output {target!r}, "
                                   f"which has {classes} classes")
        desc.class_labels = labels
        desc.class_labels_output = target

    # ------------------------------------------------------------ metadata
    def _metadata(self) -> Metadata:
        o, proto = self.opts, self.proto
        user = {p.key: p.value for p in proto.metadata_props}
        user["onnx_opset"] = str(self.opset)
        if proto.producer_name:
            user["onnx_producer"] = f"{proto.producer_name} {proto.producer_version}".strip()
        return Metadata(name=o.name or self.stem or proto.graph.name or "model",
                        version=o.version or (str(proto.model_version) if proto.model_version else ""),
                        author=o.author, license=o.license,
                        description=o.description or proto.doc_string or proto.graph.doc_string, user=user)
