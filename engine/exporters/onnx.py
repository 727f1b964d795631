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
from engine.exceptions import EngineError
from engine.graph import Model, Node
from engine.tensors import Weight, to_float_array

OPSET = 17
IR_VERSION = 8  # what onnxruntime 1.15+ reads


class ExportError(EngineError):
    """The model cannot be expressed in ONNX."""


class _Rewriter:
    """Turns corral nodes into opset-17 ONNX nodes, adding the constants they need."""

    def __init__(self, nodes: Sequence[Node], initializers: Mapping[str, Weight],
                 ranks: Mapping[str, int] | None = None) -> None:
        self.initializers = initializers
        self.ranks = ranks or {}
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.taken = {n for node in nodes for n in (*node.inputs, *node.outputs)}
        self.taken |= set(initializers)

    def fresh(self, hint: str) -> str:
        name, i = hint, 0
        while name in self.taken:
            i += 1
            name = f"{hint}_{i}"
        self.taken.add(name)
        return name

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self.constants.append(numpy_helper.from_array(value, name))
        return name

    def const_input(self, node: Node, slot: int) -> np.ndarray | None:
        """The value of input ``slot`` when it is a weight, else None."""
        name = node.inputs[slot] if slot < len(node.inputs) else ""
        weight = self.initializers.get(name) if name else None
        return None if weight is None else to_float_array(weight)

    def emit(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs: object) -> None:
        made = {k: _attribute(k, v, name) for k, v in attrs.items()}
        node = helper.make_node(op, inputs, outputs, name=name)
        node.attribute.extend(made.values())
        self.nodes.append(node)

    def add(self, node: Node) -> None:
        if node.domain:
            raise ExportError(f"node {node.label!r}: custom layer {node.op_type!r} (domain {node.domain!r}) has no "
                              "ONNX equivalent; the model cannot be exported")
        attrs = dict(node.attrs)
        inputs = list(node.inputs)
        op = node.op_type
        hint = node.label
        if op == "FusedMeanVarianceNorm":
            self.mean_variance_norm(node)
            return
        if op in ("Squeeze", "Unsqueeze", "ReduceSum") and "axes" in attrs:
            axes = attrs.pop("axes")
            inputs = [inputs[0], self.const(f"{hint}_axes", np.asarray(axes, np.int64))]
        elif op in ("ReduceMean", "ReduceMax") and len(inputs) > 1 and inputs[1]:
            given = self.const_input(node, 1)
            if given is None:
                raise ExportError(f"node {hint!r}: {op} with computed axes needs opset 18; corral exports opset 17")
            attrs["axes"] = [int(a) for a in given.reshape(-1)]
            inputs = inputs[:1]
        elif op == "Split" and "split" in attrs:
            inputs = [inputs[0], self.const(f"{hint}_split", np.asarray(attrs.pop("split"), np.int64))]
        elif op == "Clip" and ("min" in attrs or "max" in attrs):
            lo, hi = attrs.pop("min", None), attrs.pop("max", None)
            inputs = [inputs[0], "" if lo is None else self.const(f"{hint}_min", np.asarray(lo, np.float32)),
                      "" if hi is None else self.const(f"{hint}_max", np.asarray(hi, np.float32))]
        elif op == "Pad" and "pads" in attrs:
            pads = self.const(f"{hint}_pads", np.asarray(attrs.pop("pads"), np.int64))
            value = attrs.pop("value", 0.0)
            inputs = [inputs[0], pads, self.const(f"{hint}_value", np.asarray(value, np.float32))]
        elif op == "Slice" and "starts" in attrs:
            parts = [self.const(f"{hint}_{k}", np.asarray(attrs.pop(k), np.int64))
                     for k in ("starts", "ends", "axes") if k in attrs]
            inputs = [inputs[0], *parts]
        elif op == "Dropout":
            # inference: Dropout is the identity; a mask output would be all ones
            self.emit("Identity", inputs[:1], node.outputs[:1], hint)
            if len(node.outputs) > 1 and node.outputs[1]:
                shape = self.fresh(f"{hint}_shape")
                self.emit("Shape", inputs[:1], [shape], f"{hint}_mask_shape")
                self.emit("ConstantOfShape", [shape], [node.outputs[1]], f"{hint}_mask",
                          value=np.ones(1, np.bool_))
            return
        elif op == "Upsample":
            scales = attrs.pop("scales", None)
            scale_input = (self.const(f"{hint}_scales", np.asarray(scales, np.float32)) if scales is not None
                           else inputs[1])
            mode = str(attrs.pop("mode", "nearest"))
            self.emit("Resize", [inputs[0], "", scale_input], node.outputs, hint,
                      mode="linear" if mode in ("linear", "bilinear") else "nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
            return
        elif op == "Softmax" and node.int_attr("opset", 13) < 13:
            # old Softmax: flatten to 2-D at axis, normalize rows, restore the shape
            axis = node.int_attr("axis", 1)
            flat, shape, out = self.fresh(f"{hint}_2d"), self.fresh(f"{hint}_shape"), self.fresh(f"{hint}_rows")
            self.emit("Flatten", inputs[:1], [flat], f"{hint}_flatten", axis=axis)
            self.emit("Softmax", [flat], [out], f"{hint}_rows", axis=1)
            self.emit("Shape", inputs[:1], [shape], f"{hint}_shape")
            self.emit("Reshape", [out, shape], node.outputs, hint)
            return
        attrs.pop("opset", None)
        self.emit(op, inputs, list(node.outputs), hint, **attrs)


    def mean_variance_norm(self, node: Node) -> None:
        """corral's fused normalization in ONNX ops: InstanceNormalization (one kernel in onnxruntime, which
        has no fusion of its own for the ten-node pattern) when it normalizes the spatial axes of a 4-d
        tensor, else the decomposition; then the scale and shift as the Mul and Add they were."""
        if node.attrs.get("activation"):
            raise ExportError(f"node {node.label!r}: a fused activation has no ONNX form here; compile without "
                              "the fuse_activations pass")
        x, hint = node.inputs[0], node.label
        scale = node.inputs[1] if len(node.inputs) > 1 else ""
        bias = node.inputs[2] if len(node.inputs) > 2 else ""
        axes = node.ints_attr("axes")
        if axes is None:
            raise ExportError(f"node {node.label!r}: {node.op_type} has no axes attribute")
        epsilon = node.float_attr("epsilon", 1e-5)
        out = node.outputs[0]
        normed = self.fresh(f"{hint}_normed") if scale or bias else out
        if axes == [2, 3] and self.ranks.get(x) == 4:
            shape = self.fresh(f"{hint}_shape")
            ones, zeros = self.fresh(f"{hint}_ones"), self.fresh(f"{hint}_zeros")
            self.emit("Shape", [x], [shape], f"{hint}_shape", start=1, end=2)  # [C]
            self.emit("ConstantOfShape", [shape], [ones], f"{hint}_ones", value=np.ones(1, np.float32))
            self.emit("ConstantOfShape", [shape], [zeros], f"{hint}_zeros", value=np.zeros(1, np.float32))
            self.emit("InstanceNormalization", [x, ones, zeros], [normed], hint, epsilon=epsilon)
        else:
            names = {k: self.fresh(f"{hint}_{k}") for k in ("mean", "centred", "square", "var", "padded", "std")}
            self.emit("ReduceMean", [x], [names["mean"]], f"{hint}_mean", axes=axes, keepdims=1)
            self.emit("Sub", [x, names["mean"]], [names["centred"]], f"{hint}_centred")
            self.emit("Mul", [names["centred"], names["centred"]], [names["square"]], f"{hint}_square")
            self.emit("ReduceMean", [names["square"]], [names["var"]], f"{hint}_var", axes=axes, keepdims=1)
            eps = self.const(f"{hint}_epsilon", np.asarray(epsilon, np.float32))
            self.emit("Add", [names["var"], eps], [names["padded"]], f"{hint}_padded")
            self.emit("Sqrt", [names["padded"]], [names["std"]], f"{hint}_std")
            self.emit("Div", [names["centred"], names["std"]], [normed], hint)
        if scale:
            scaled = self.fresh(f"{hint}_scaled") if bias else out
            self.emit("Mul", [normed, scale], [scaled], f"{hint}_scale")
            normed = scaled
        if bias:
            self.emit("Add", [normed, bias], [out], f"{hint}_bias")


def _attribute(key: str, value: object, where: str) -> onnx.AttributeProto:
    if isinstance(value, np.ndarray):
        return helper.make_attribute(key, numpy_helper.from_array(to_float_array(value)))
    if isinstance(value, (list, tuple)) and not value:
        return helper.make_attribute(key, [], attr_type=onnx.AttributeProto.INTS)
    if isinstance(value, (list, tuple)) and any(isinstance(v, float) for v in value):
        value = [float(v) for v in value]
    try:
        return helper.make_attribute(key, value)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"node {where!r}: attribute {key!r} cannot be written to ONNX ({exc})") from None


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
    rewriter = _Rewriter(nodes, initializers, ranks)
    for node in nodes:
        rewriter.add(node)
    fed = {v.name for v in inputs}
    read = {i for n in rewriter.nodes for i in n.input} | set(outputs)
    weights = [numpy_helper.from_array(np.asarray(to_float_array(w), order="C"), key)
               for key, w in initializers.items() if key in read and key not in fed]
    placeholders = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(rewriter.nodes, name or "graph", list(inputs), placeholders,
                              initializer=weights + rewriter.constants)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="corral")
    proto.ir_version = IR_VERSION
    return proto


def _typed_outputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - inference is a refinement; ONNX raises assorted types
        return proto
    known = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)
             if v.type.tensor_type.elem_type}
    for out in proto.graph.output:
        if out.name in known:
            out.type.CopyFrom(known[out.name])
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
