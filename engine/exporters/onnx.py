"""Export a corral model as a float ONNX graph (opset 17) that onnxruntime runs.

Quantized and float16 weights are dequantized to float32, so the ONNX model
computes what corral computes. Nodes that corral keeps in an older opset's
form (attributes that became inputs, Upsample, Softmax's 2-D coercion) are
rewritten into their opset-17 equivalents. Inputs with defaults get an
initializer of the same name (ONNX's way to give an input a default); the
description (metadata, image mappings, class labels) goes into
``metadata_props`` as ``corral.*`` entries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from engine.description import Feature
from engine.exceptions import ExportError
from engine.exporters.onnx_nodes import OPSET, NodeRewriter
from engine.graph import Model, Node
from engine.op_table import MS_DOMAIN
from engine.tensors import Weight, to_float_array

IR_VERSION = 8  # what onnxruntime 1.15+ reads


def input_dims(f: Feature) -> list[int | str]:
    """The graph tensor's dims: symbolic where the feature's shape may vary."""
    spec = f.shape
    dims: list[int | str] = []
    for i, d in enumerate(spec.default):
        sizes = {s[i] for s in spec.enumerated if len(s) > i} | {d}
        varies = len(sizes) > 1 or (bool(spec.ranges) and spec.ranges[i][0] != spec.ranges[i][1])
        dims.append(f"{f.name}_d{i}" if varies or d == 0 else int(d))
    if f.batched:
        dims.insert(f.batch_axis, "N")
    return dims


def _elem_type(f: Feature) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype("float32" if f.kind == "image" else f.dtype))


def graph_to_onnx(nodes: Sequence[Node], initializers: Mapping[str, Weight], inputs: Sequence[onnx.ValueInfoProto],
                  outputs: Sequence[str], name: str) -> onnx.ModelProto:
    """``nodes`` (in execution order) as an opset-17 ``ModelProto`` reading ``inputs`` and returning ``outputs``.

    Only the weights the nodes read go in, dequantized to float32. Outputs
    get the element types and shapes ONNX's shape inference finds (float32
    with an unknown shape where it finds none); the caller may refine them.
    corral's fused normalizations become InstanceNormalization where shape
    inference shows a 4-d input (found on a first export), else their
    decomposition.
    """
    proto = _graph_proto(nodes, initializers, inputs, outputs, name, None)
    if any(n.op_type == "FusedMeanVarianceNorm" for n in nodes):
        ranks = _ranks(proto)
        if ranks:
            proto = _graph_proto(nodes, initializers, inputs, outputs, name, ranks)
    return _typed_outputs(proto)


def _ranks(proto: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is a refinement; ONNX raises assorted types
        return {}
    return {v.name: len(v.type.tensor_type.shape.dim)
            for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
            if v.type.tensor_type.HasField("shape")}


def _graph_proto(nodes: Sequence[Node], initializers: Mapping[str, Weight], inputs: Sequence[onnx.ValueInfoProto],
                 outputs: Sequence[str], name: str, ranks: Mapping[str, int] | None) -> onnx.ModelProto:
    rewriter = NodeRewriter(nodes, initializers, ranks)
    for node in nodes:
        rewriter.add(node)
    fed = {v.name for v in inputs}
    read = {i for n in rewriter.nodes for i in n.input} | set(outputs)
    weights = [numpy_helper.from_array(np.asarray(to_float_array(w), order="C"), key)
               for key, w in initializers.items() if key in read and key not in fed]
    placeholders = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(rewriter.nodes, name or "graph", list(inputs), placeholders,
                              initializer=weights + rewriter.constants)
    opsets = [helper.make_opsetid("", OPSET)]
    if any(n.domain == MS_DOMAIN for n in rewriter.nodes):
        opsets.append(helper.make_opsetid(MS_DOMAIN, 1))  # DynamicQuantizeLSTM
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="corral")
    proto.ir_version = IR_VERSION
    return proto


def _typed_outputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    # Inferred with no element type on the outputs: the float32 placeholder would otherwise stand against
    # (and hide) a bool or integer result (a comparison's, Where's on int64); it returns where none is found.
    for out in proto.graph.output:
        out.type.tensor_type.elem_type = onnx.TensorProto.UNDEFINED
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is a refinement; ONNX raises assorted types
        inferred = onnx.ModelProto()
    known = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)
             if v.type.tensor_type.elem_type}
    for out in proto.graph.output:
        if out.name in known:
            out.type.CopyFrom(known[out.name])
        else:
            out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return proto


def to_onnx(model: Model) -> onnx.ModelProto:
    """The model as a float ONNX ``ModelProto`` (opset 17)."""
    if model.description.custom_model:
        raise ExportError(f"model {model.name!r} is a custom model ({model.description.custom_model}); "
                          "it has no graph to export")
    model.validate()
    desc = model.description
    nodes = model.graph.toposort([f.name for f in desc.inputs], model.name)
    inputs = [helper.make_tensor_value_info(f.name, _elem_type(f), input_dims(f)) for f in desc.inputs]
    proto = graph_to_onnx(nodes, model.graph.initializers, inputs, [f.name for f in desc.outputs], model.name)
    for f in desc.inputs:
        if f.default is not None:
            default = np.asarray(f.default, np.dtype(f.dtype))
            proto.graph.initializer.append(numpy_helper.from_array(default[None] if f.batched else default, f.name))
    meta = desc.metadata
    proto.doc_string = meta.description
    proto.model_version = int(meta.version) if meta.version.isdigit() else 0
    props = {"corral.name": meta.name, "corral.version": meta.version, "corral.author": meta.author,
             "corral.license": meta.license, **{f"corral.user.{k}": v for k, v in meta.user.items()}}
    for f in (*desc.inputs, *desc.outputs):
        if f.kind == "image":
            props[f"corral.image.{f.name}"] = json.dumps(
                {"color_layout": f.color_layout, "scale": list(f.scale), "bias": list(f.bias)})
    if desc.class_labels:
        props["corral.class_labels"] = json.dumps(desc.class_labels)
        props["corral.class_labels_output"] = desc.class_labels_output
    helper.set_model_props(proto, {k: v for k, v in props.items() if v})
    _output_shapes(proto, desc.outputs)
    onnx.checker.check_model(proto)
    return proto


def _output_shapes(proto: onnx.ModelProto, features: list[Feature]) -> None:
    """Give every graph output a shape (the checker requires one): inferred, else the feature's own."""
    declared = {f.name: f for f in features}
    for out in proto.graph.output:
        if out.type.tensor_type.HasField("shape"):
            continue
        if declared[out.name].shape.default:
            out.type.CopyFrom(helper.make_tensor_type_proto(_elem_type(declared[out.name]), input_dims(declared[out.name])))
        else:
            raise ExportError(f"output {out.name!r}: its shape can neither be inferred nor is it declared; "
                              "declare the output's shape in the model description")


def export_onnx(model: Model, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as ``path`` (an ONNX file); returns the path."""
    path = Path(path)
    proto = to_onnx(model)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, path)
    return path
