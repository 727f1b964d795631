"""Corral's nodes as opset-17 ONNX nodes: attributes that became inputs, older ops' newer forms, and the forms
onnxruntime accepts for the ops it implements differently (see :mod:`engine.exporters.onnx`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from engine.exceptions import ExportError
from engine.graph import Node
from engine.op_table import MS_DOMAIN
from engine.tensors import Weight, to_float_array

OPSET = 17
RECURRENT_OPS = ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM")


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


class NodeRewriter:
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
        if op in RECURRENT_OPS and node.int_attr("layout", 0) == 1:
            self.batch_first_recurrent(node)
            return
        if op == "DynamicQuantizeLSTM":
            # onnxruntime's contrib op: corral keeps it in the default domain, ONNX needs its own
            self.emit(op, inputs, list(node.outputs), hint, **attrs)
            self.nodes[-1].domain = MS_DOMAIN
            return
        if op == "Gelu":
            self.gelu(node)
            return
        if op in ("Squeeze", "Unsqueeze", "ReduceSum") and "axes" in attrs:
            axes = attrs.pop("axes")
            inputs = [inputs[0], self.const(f"{hint}_axes", np.asarray(axes, np.int64))]
        elif op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2") and (
                len(inputs) > 1 and inputs[1] or "noop_with_empty_axes" in attrs):
            # opset 18 forms: opset 17 reads these axes as an attribute and has no noop_with_empty_axes
            if len(inputs) > 1 and inputs[1]:
                given = self.const_input(node, 1)
                if given is None:
                    raise ExportError(f"node {hint!r}: {op} with computed axes needs opset 18; corral exports opset 17")
                attrs["axes"] = [int(a) for a in given.reshape(-1)]
            inputs = inputs[:1]
            attrs.pop("noop_with_empty_axes", None)
            if not attrs.get("axes"):
                if node.int_attr("noop_with_empty_axes", 0):
                    self.emit("Identity", inputs, list(node.outputs), hint)
                    return
                attrs.pop("axes", None)  # empty: every axis, as no attribute says
        elif op == "TopK" and "k" in attrs:
            # TopK-1's k attribute is the second input from opset 10
            inputs = [inputs[0], self.const(f"{hint}_k", np.asarray([attrs.pop("k")], np.int64))]
        elif op == "SpaceToDepth" and "mode" in attrs:
            # SpaceToDepth's mode is opset 28's; opset 17 knows only DCR, its default
            if str(attrs.pop("mode")).upper() == "CRD":
                self.space_to_depth_crd(node)
                return
        elif op == "Einsum" and "equation" in attrs:
            # the explicit form: onnxruntime 1.32 refuses implicit outputs of upper-case letters ("bA,AC")
            from engine.ops.einsum import explicit_equation

            attrs["equation"] = explicit_equation(str(attrs["equation"]))
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
        if op == "Sigmoid":
            attrs.pop("approximation", None)  # onnxruntime's sigmoid is that approximation
        self.emit(op, inputs, list(node.outputs), hint, **attrs)

    def space_to_depth_crd(self, node: Node) -> None:
        """SpaceToDepth in CRD order in opset-17 ops: each channel on its own is a one-channel DCR
        SpaceToDepth ([N*C, 1, H, W] -> [N*C, b*b, H/b, W/b]); then the channels go back beside the batch."""
        x, hint = node.inputs[0], node.label
        planes, blocks, batch, shape = (self.fresh(f"{hint}_{k}") for k in ("planes", "blocks", "batch", "shape"))
        # Reshape's 0 copies the input's dimension: H and W, then H/b and W/b
        self.emit("Reshape", [x, self.const(f"{hint}_planes_shape", np.array([-1, 1, 0, 0], np.int64))],
                  [planes], f"{hint}_planes")
        self.emit("SpaceToDepth", [planes], [blocks], f"{hint}_blocks", blocksize=node.int_attr("blocksize"))
        self.emit("Shape", [x], [batch], f"{hint}_batch", start=0, end=1)
        self.emit("Concat", [batch, self.const(f"{hint}_rest", np.array([-1, 0, 0], np.int64))], [shape],
                  f"{hint}_shape", axis=0)
        self.emit("Reshape", [blocks, shape], list(node.outputs), hint)

    def batch_first_recurrent(self, node: Node) -> None:
        """A ``layout`` 1 recurrent node as layout 0 between Transposes: onnxruntime refuses layout 1."""
        hint = node.label
        inputs = list(node.inputs)
        # X [batch, seq, input] and the initial states [batch, dirs, hidden] to layout 0
        for slot in (0, 5, 6) if node.op_type in ("LSTM", "DynamicQuantizeLSTM") else (0, 5):
            if slot < len(inputs) and inputs[slot]:
                moved = self.fresh(f"{inputs[slot]}_seq_major")
                self.emit("Transpose", [inputs[slot]], [moved], f"{hint}_in{slot}", perm=[1, 0, 2])
                inputs[slot] = moved
        outputs = [self.fresh(f"{o}_seq_major") if o else "" for o in node.outputs]
        attrs = {k: v for k, v in node.attrs.items() if k != "layout"}
        self.emit(node.op_type, inputs, outputs, hint, **attrs)
        if node.op_type == "DynamicQuantizeLSTM":
            self.nodes[-1].domain = MS_DOMAIN
        # Y [seq, dirs, batch, hidden] -> [batch, seq, dirs, hidden]; the states -> [batch, dirs, hidden]
        for k, (inner, outer) in enumerate(zip(outputs, node.outputs)):
            if outer:
                perm = [2, 0, 1, 3] if k == 0 else [1, 0, 2]
                self.emit("Transpose", [inner], [outer], f"{hint}_out{k}", perm=perm)

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

    def gelu(self, node: Node) -> None:
        """Gelu (opset 20) as its opset-17 decomposition. The erf form is the exact pattern onnxruntime fuses
        back into its one-kernel Gelu (Div by sqrt(2), Erf, Add 1, Mul x, Mul 0.5); the tanh form follows
        ONNX's function body (Pow 3). The constants are float32, as every float the exported graph holds."""
        x, hint, out = node.inputs[0], node.label, node.outputs[0]
        raw = node.attrs.get("approximate", "none")
        approximate = raw.decode() if isinstance(raw, bytes) else str(raw)
        if approximate not in ("none", "tanh"):
            raise ExportError(f"node {hint!r}: Gelu approximate={approximate!r} is not an ONNX approximation")

        def f32(name: str, value: float) -> str:
            return self.const(f"{hint}_{name}", np.asarray(value, np.float32))

        names = {k: self.fresh(f"{hint}_{k}") for k in ("inner", "phi", "one_plus", "times_x")}
        if approximate == "tanh":
            cube, cubic, poly = (self.fresh(f"{hint}_{k}") for k in ("cube", "cubic", "poly"))
            self.emit("Pow", [x, f32("three", 3.0)], [cube], f"{hint}_cube")
            self.emit("Mul", [cube, f32("c", 0.044715)], [cubic], f"{hint}_cubic")
            self.emit("Add", [x, cubic], [poly], f"{hint}_poly")
            self.emit("Mul", [poly, f32("k", float(np.sqrt(2.0 / np.pi)))], [names["inner"]], f"{hint}_inner")
            self.emit("Tanh", [names["inner"]], [names["phi"]], f"{hint}_tanh")
        else:
            self.emit("Div", [x, f32("sqrt2", float(np.sqrt(2.0)))], [names["inner"]], f"{hint}_inner")
            self.emit("Erf", [names["inner"]], [names["phi"]], f"{hint}_erf")
        self.emit("Add", [names["phi"], f32("one", 1.0)], [names["one_plus"]], f"{hint}_one_plus")
        self.emit("Mul", [x, names["one_plus"]], [names["times_x"]], f"{hint}_times_x")
        self.emit("Mul", [names["times_x"], f32("half", 0.5)], [out], hint)
