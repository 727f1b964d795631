"""Reading and writing ``.corral`` packages (the protobuf in ``engine/proto``).

Loading is defensive: a truncated or hostile file gives a
:class:`ModelFormatError` naming the file and what is wrong, never an
unbounded allocation.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from engine.description import MAX_NAME, Feature, Metadata, ModelDescription, ShapeSpec
from engine.exceptions import ModelFormatError
from engine.graph import Graph, Model, Node
from engine.proto import corral_model_pb2 as pb
from engine.tensors import (
    QuantizedTensor,
    check_dims,
    dtype_from_proto,
    dtype_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)

FORMAT_VERSION = 1
MAX_PACKAGE_BYTES = 2 << 30  # protobuf's own message limit
MAX_NODES = 100_000

_LAYOUTS = {pb.RGB: "RGB", pb.BGR: "BGR", pb.GRAY: "GRAY"}
_LAYOUT_CODES = {v: k for k, v in _LAYOUTS.items()}


# ---------------------------------------------------------------- attributes

def _attr_to_proto(name: str, value: object) -> pb.Attribute:
    a = pb.Attribute(name=name)
    if isinstance(value, (bool, int, np.integer, np.bool_)):
        a.i = int(value)
    elif isinstance(value, (float, np.floating)):
        a.f = float(value)
    elif isinstance(value, str):
        a.s = value.encode()
    elif isinstance(value, bytes):
        a.s = value
    elif isinstance(value, (np.ndarray, QuantizedTensor)):
        a.t.CopyFrom(tensor_to_proto(name, value))
    elif isinstance(value, (list, tuple)):
        _list_attr_to_proto(a, list(value))
    else:
        raise ModelFormatError(f"attribute {name!r}: cannot store a {type(value).__name__}")
    return a


def _list_attr_to_proto(a: pb.Attribute, items: list) -> None:
    texts = [isinstance(v, (str, bytes)) for v in items]
    numbers = [isinstance(v, (bool, int, float, np.integer, np.floating, np.bool_)) for v in items]
    if items and all(texts):
        a.strings.values.extend(v.encode() if isinstance(v, str) else v for v in items)
    elif not all(numbers):
        kinds = sorted({type(v).__name__ for v in items})
        raise ModelFormatError(f"attribute {a.name!r}: a list must hold only numbers or only strings, "
                               f"found {kinds}")
    elif any(isinstance(v, (float, np.floating)) for v in items):
        a.floats.SetInParent()
        a.floats.values.extend(float(v) for v in items)
    else:
        # also the empty list: SetInParent records which oneof member is set
        a.ints.SetInParent()
        a.ints.values.extend(int(v) for v in items)


def _attr_from_proto(a: pb.Attribute, where: str) -> object:
    kind = a.WhichOneof("value")
    if kind == "i":
        return int(a.i)
    if kind == "f":
        return float(a.f)
    if kind == "s":
        return a.s.decode("utf-8", errors="replace")
    if kind == "t":
        return tensor_from_proto(a.t, f"{where} attribute {a.name!r}")
    if kind == "floats":
        return [float(v) for v in a.floats.values]
    if kind == "ints":
        return [int(v) for v in a.ints.values]
    if kind == "strings":
        return [v.decode("utf-8", errors="replace") for v in a.strings.values]
    raise ModelFormatError(f"{where}: attribute {a.name!r} has no value")


# --------------------------------------------------------------- description

def _shape_to_proto(spec: ShapeSpec, msg: pb.FlexibleShape) -> None:
    msg.default_shape.extend(spec.default)
    for s in spec.enumerated:
        msg.enumerated.add().dims.extend(s)
    for lo, hi in spec.ranges:
        msg.ranges.add(lower=lo, upper=-1 if hi is None else hi)


def _shape_from_proto(msg: pb.FlexibleShape, where: str) -> ShapeSpec:
    default = check_dims(list(msg.default_shape), f"{where} default shape")
    enumerated = [check_dims(list(e.dims), f"{where} enumerated shape") for e in msg.enumerated]
    ranges = [(int(r.lower), None if r.upper < 0 else int(r.upper)) for r in msg.ranges]
    spec = ShapeSpec(default=default, enumerated=enumerated, ranges=ranges)
    spec.check(where)
    return spec


def _feature_to_proto(f: Feature, msg: pb.Feature) -> None:
    msg.name = f.name
    msg.description = f.description
    msg.batched = f.batched
    msg.batch_axis = f.batch_axis
    if f.kind == "image":
        msg.image.color_layout = _LAYOUT_CODES[f.color_layout]
        msg.image.scale.extend(f.scale)
        msg.image.bias.extend(f.bias)
    else:
        msg.array.data_type = dtype_to_proto(np.dtype(f.dtype), f"feature {f.name!r}")
    _shape_to_proto(f.shape, msg.shape)
    if f.default is not None:
        msg.default_value.CopyFrom(tensor_to_proto(f.name, np.asarray(f.default)))


def _feature_from_proto(msg: pb.Feature, where: str) -> Feature:
    kind = msg.WhichOneof("type")
    where = f"{where} feature {msg.name!r}"
    f = Feature(name=msg.name, description=msg.description, batched=msg.batched, batch_axis=msg.batch_axis,
                shape=_shape_from_proto(msg.shape, where))
    if kind == "image":
        f.kind = "image"
        layout = msg.image.color_layout
        if layout != pb.COLOR_LAYOUT_UNSPECIFIED and layout not in _LAYOUTS:
            raise ModelFormatError(f"{where}: unknown colour layout code {layout}")
        f.color_layout = _LAYOUTS.get(layout, "RGB")  # type: ignore[assignment]
        f.scale = tuple(msg.image.scale) or (1.0,)
        f.bias = tuple(msg.image.bias) or (0.0,)
    elif kind == "array":
        f.dtype = str(dtype_from_proto(msg.array.data_type, where))
    else:
        raise ModelFormatError(f"{where}: declares neither an image nor an array type")
    if msg.HasField("default_value"):
        value = tensor_from_proto(msg.default_value, f"{where} default")
        if not isinstance(value, np.ndarray):
            raise ModelFormatError(f"{where}: default value cannot be quantized")
        f.default = value
    return f


# --------------------------------------------------------------------- model

def to_proto(model: Model) -> pb.ModelPackage:
    msg = pb.ModelPackage(format_version=FORMAT_VERSION)
    d, md = model.description, msg.description
    meta = d.metadata
    md.metadata.name, md.metadata.version, md.metadata.author = meta.name, meta.version, meta.author
    md.metadata.license, md.metadata.description = meta.license, meta.description
    md.metadata.user.update(meta.user)
    for f in d.inputs:
        _feature_to_proto(f, md.inputs.add())
    for f in d.outputs:
        _feature_to_proto(f, md.outputs.add())
    md.class_labels.extend(d.class_labels)
    md.class_labels_output = d.class_labels_output
    md.custom_model = d.custom_model
    for n in model.graph.nodes:
        nm = msg.graph.nodes.add(name=n.name, op_type=n.op_type, domain=n.domain)
        nm.inputs.extend(n.inputs)
        nm.outputs.extend(n.outputs)
        for k, v in n.attrs.items():
            nm.attributes.append(_attr_to_proto(k, v))
    for name, w in model.graph.initializers.items():
        msg.graph.initializers.append(tensor_to_proto(name, w))
    return msg


def _check_name(name: str, what: str, where: str) -> None:
    if len(name) > MAX_NAME:
        raise ModelFormatError(f"{where}: {what} name of {len(name)} characters exceeds the limit of {MAX_NAME}")


def _node_from_proto(nm: pb.Node, index: int, source: str) -> Node:
    where = f"{source} node {nm.name or index!r}"
    _check_name(nm.name, "node", where)
    if not nm.op_type or len(nm.op_type) > MAX_NAME or len(nm.domain) > MAX_NAME:
        raise ModelFormatError(f"{where}: op type must be 1..{MAX_NAME} characters (domain at most {MAX_NAME})")
    for value in (*nm.inputs, *nm.outputs):
        _check_name(value, "value", where)
    attrs: dict[str, object] = {}
    for a in nm.attributes:
        if not a.name or len(a.name) > MAX_NAME:
            raise ModelFormatError(f"{where}: attribute names must be 1..{MAX_NAME} characters")
        if a.name in attrs:
            raise ModelFormatError(f"{where}: attribute {a.name!r} is given twice")
        attrs[a.name] = _attr_from_proto(a, where)
    return Node(op_type=nm.op_type, inputs=list(nm.inputs), outputs=list(nm.outputs), name=nm.name,
                attrs=attrs, domain=nm.domain)  # type: ignore[arg-type]


def from_proto(msg: pb.ModelPackage, source: str = "model", validate: bool = True) -> Model:
    """Build a :class:`Model`.

    Structural limits (dimensions, names, tensor sizes, shape specs) are
    always enforced; ``validate=False`` skips only the graph checks
    (unsupported ops, dangling names, cycles, outputs) for inspection.
    """
    if msg.format_version != FORMAT_VERSION:
        raise ModelFormatError(f"{source}: package format version {msg.format_version} is not supported "
                               f"(this corral reads version {FORMAT_VERSION}); re-export it with a matching corral")
    if not msg.HasField("description"):
        raise ModelFormatError(f"{source}: holds no model description; the file is truncated or not a corral "
                               "model package")
    if len(msg.graph.nodes) > MAX_NODES:
        raise ModelFormatError(f"{source}: {len(msg.graph.nodes)} nodes exceeds the limit of {MAX_NODES}")
    md = msg.description
    meta = Metadata(name=md.metadata.name, version=md.metadata.version, author=md.metadata.author,
                    license=md.metadata.license, description=md.metadata.description, user=dict(md.metadata.user))
    desc = ModelDescription(
        inputs=[_feature_from_proto(f, f"{source} input") for f in md.inputs],
        outputs=[_feature_from_proto(f, f"{source} output") for f in md.outputs],
        metadata=meta, class_labels=list(md.class_labels), class_labels_output=md.class_labels_output,
        custom_model=md.custom_model)
    for role, features in (("input", desc.inputs), ("output", desc.outputs)):
        for f in features:
            f.check(f"{source} {role}")
    graph = Graph()
    for t in msg.graph.initializers:
        if not t.name or len(t.name) > MAX_NAME:
            raise ModelFormatError(f"{source}: weight names must be 1..{MAX_NAME} characters")
        if t.name in graph.initializers:
            raise ModelFormatError(f"{source}: weight {t.name!r} is stored twice")
        graph.initializers[t.name] = tensor_from_proto(t, f"{source} weight {t.name!r}")
    graph.nodes = [_node_from_proto(nm, i, source) for i, nm in enumerate(msg.graph.nodes)]
    model = Model(description=desc, graph=graph)
    if validate:
        model.validate(f"{source} (model {model.name!r})")
    return model


def dumps(model: Model) -> bytes:
    return to_proto(model).SerializeToString(deterministic=True)


def loads(data: bytes, source: str = "model", validate: bool = True) -> Model:
    if len(data) > MAX_PACKAGE_BYTES:
        raise ModelFormatError(f"{source}: {len(data)} bytes exceeds the package limit")
    if not data:
        raise ModelFormatError(f"{source}: empty file; it is not a corral model package")
    msg = pb.ModelPackage()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelFormatError(f"{source}: not a valid corral model package (truncated or corrupt: {exc}); "
                               "re-download or re-export it") from None
    return from_proto(msg, source, validate)


def save(model: Model, path: str | os.PathLike[str]) -> str:
    """Write the package atomically; returns its sha256 digest."""
    data = dumps(model)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def load(path: str | os.PathLike[str], validate: bool = True) -> Model:
    """Read a package; ``validate=False`` skips the graph checks (see :func:`from_proto`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_PACKAGE_BYTES:
            raise ModelFormatError(f"{path}: {size} bytes exceeds the package limit")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read model ({exc.strerror or exc})") from None
    return loads(data, str(path), validate)


def digest(model: Model) -> str:
    return hashlib.sha256(dumps(model)).hexdigest()
