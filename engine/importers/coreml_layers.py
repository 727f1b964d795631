"""Core ML NeuralNetwork layers as corral nodes (ONNX-style ops, NCHW).

Core ML's pre-ND layers see rank-5 blobs ``[Seq, Batch, C, H, W]``; with the
sequence length 1 that corral supports, every blob here is ``[N, C, H, W]``:
a vector ``[C]`` is ``[N, C, 1, 1]``, as Core ML's own inner product and
flatten layers produce it. Each converter writes its result under the
layer's output name, so the layers connect by their Core ML blob names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from engine.exceptions import ModelImportError
from engine.graph import CUSTOM_DOMAIN, Graph, Node
from engine.importers.coreml_weights import weight_from_coreml
from engine.tensors import QuantizedTensor, Weight

Converter = Callable[[Any, Any, list[str], list[str]], None]


class LayerConverter:
    """Appends the nodes for one Core ML layer after another to ``graph``."""

    def __init__(self, graph: Graph, where: str) -> None:
        self.graph = graph
        self.where = where
        self._counter = 0
        self.table: dict[str, Converter] = {
            "convolution": self.convolution, "batchnorm": self.batchnorm, "activation": self.activation,
            "pooling": self.pooling, "padding": self.padding, "upsample": self.upsample,
            "innerProduct": self.inner_product, "add": self.add, "multiply": self.multiply,
            "average": self.average, "max": self.max, "min": self.min, "concat": self.concat,
            "softmax": self.softmax, "flatten": self.flatten, "reshape": self.reshape, "permute": self.permute,
            "scale": self.scale, "bias": self.bias, "loadConstant": self.load_constant, "unary": self.unary,
            "custom": self.custom,
        }

    # ------------------------------------------------------------ helpers
    def _fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}/{self._counter}"

    def const(self, hint: str, value: Weight) -> str:
        name = self._fresh(hint)
        self.graph.initializers[name] = value
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, name: str = "", **attrs: Any) -> str:
        out = output or self._fresh(f"{name or op}")
        self.graph.nodes.append(Node(op_type=op, inputs=inputs, outputs=[out], name=name or out, attrs=attrs))
        return out

    def weight(self, wp: Any, shape: tuple[int, ...], label: str, axis: int = 0) -> Weight:
        return weight_from_coreml(wp, shape, f"{self.where}: {label}", axis)

    def fail(self, layer: Any, message: str) -> ModelImportError:
        kind = layer.WhichOneof("layer")
        return ModelImportError(f"{self.where}: layer {layer.name!r} ({kind}): {message}")

    def convert(self, layer: Any, inputs: list[str], outputs: list[str]) -> None:
        kind = layer.WhichOneof("layer")
        converter = self.table.get(kind or "")
        if converter is None:
            raise ModelImportError(
                f"{self.where}: layer {layer.name!r} is of type {kind!r}, which corral cannot import; "
                f"supported Core ML layer types: {', '.join(sorted(self.table))}")
        if kind not in ("loadConstant",) and not inputs:
            raise self.fail(layer, "has no inputs")
        converter(layer, getattr(layer, kind), inputs, outputs)

    def _pair(self, values: Any, default: int) -> list[int]:
        return [int(v) for v in values] if len(values) else [default, default]

    def _vector(self, layer: Any, wp: Any, label: str) -> np.ndarray | QuantizedTensor:
        """A per-channel (or single) parameter as ``[C, 1, 1]``, broadcasting over ``[N, C, H, W]``."""
        count = _count(wp)
        return self.weight(wp, (count, 1, 1), f"layer {layer.name!r} {label}")

    # ------------------------------------------------------------ convolution
    def convolution(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        kh, kw = self._pair(p.kernelSize, 3)
        strides = self._pair(p.stride, 1)
        groups = int(p.nGroups) or 1
        label = f"layer {layer.name!r}"
        bias = [self.const(f"{layer.name}/bias", self.weight(p.bias, (int(p.outputChannels),), f"{label} bias"))
                ] if p.hasBias else []
        padding = p.WhichOneof("ConvolutionPaddingType")
        if not p.isDeconvolution:
            shape = (int(p.outputChannels), int(p.kernelChannels), kh, kw)  # [M, C/group, kH, kW]
            w = self.const(f"{layer.name}/weights", self.weight(p.weights, shape, f"{label} weights"))
            attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": strides, "group": groups,
                                         "dilations": self._pair(p.dilationFactor, 1)}
            attrs.update(self._padding(p, padding))
            self.node("Conv", [ins[0], w, *bias], outs[0], name=layer.name, **attrs)
            return
        if p.outputChannels % groups:
            raise self.fail(layer, f"{p.outputChannels} output channels do not split into {groups} groups")
        shape = (int(p.kernelChannels), int(p.outputChannels) // groups, kh, kw)  # [C, M/group, kH, kW]
        w = self.const(f"{layer.name}/weights", self.weight(p.weights, shape, f"{label} weights", axis=1))
        attrs = {"kernel_shape": [kh, kw], "strides": strides, "group": groups}
        if not len(p.outputShape):
            attrs.update(self._padding(p, padding))
            self.node("ConvTranspose", [ins[0], w, *bias], outs[0], name=layer.name, **attrs)
            return
        # With outputShape, Core ML crops the start by the valid padding (none for
        # same padding) and sizes the output to outputShape, extending the end with
        # bias-only rows when it is larger than the transposed convolution.
        out_h, out_w = (int(v) for v in p.outputShape)
        top, left = (0, 0)
        if padding == "valid":
            amounts = p.valid.paddingAmounts.borderAmounts
            if len(amounts) == 2:
                top, left = int(amounts[0].startEdgeSize), int(amounts[1].startEdgeSize)
        y = self.node("ConvTranspose", [ins[0], w], name=layer.name, pads=[top, left, 0, 0], **attrs)
        pads = self.const(f"{layer.name}/pads", np.array([0, 0, 0, 0, 0, 0, out_h, out_w], np.int64))
        y = self.node("Pad", [y, pads], name=f"{layer.name}/extend", mode="constant")
        starts = self.const(f"{layer.name}/starts", np.array([0, 0], np.int64))
        ends = self.const(f"{layer.name}/ends", np.array([out_h, out_w], np.int64))
        axes = self.const(f"{layer.name}/axes", np.array([2, 3], np.int64))
        if bias:
            y = self.node("Slice", [y, starts, ends, axes], name=f"{layer.name}/crop")
            b = self.const(f"{layer.name}/bias_chw", self.weight(p.bias, (int(p.outputChannels), 1, 1),
                                                               f"{label} bias"))
            self.node("Add", [y, b], outs[0], name=f"{layer.name}/add_bias")
        else:
            self.node("Slice", [y, starts, ends, axes], outs[0], name=f"{layer.name}/crop")

    def _padding(self, p: Any, padding: str | None) -> dict[str, Any]:
        """ONNX pads / auto_pad for Core ML valid or same padding."""
        if padding == "same":
            return {"auto_pad": "SAME_LOWER" if p.same.asymmetryMode == 1 else "SAME_UPPER"}
        amounts = p.valid.paddingAmounts.borderAmounts if padding == "valid" else []
        if len(amounts) != 2:
            return {"pads": [0, 0, 0, 0]}
        return {"pads": [int(amounts[0].startEdgeSize), int(amounts[1].startEdgeSize),
                         int(amounts[0].endEdgeSize), int(amounts[1].endEdgeSize)]}

    def batchnorm(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        c = int(p.channels)
        label = f"layer {layer.name!r}"
        eps = float(p.epsilon) or 1e-5
        gamma = self.const(f"{layer.name}/gamma", self.weight(p.gamma, (c,), f"{label} gamma"))
        beta = self.const(f"{layer.name}/beta", self.weight(p.beta, (c,), f"{label} beta"))
        if p.computeMeanVar:
            if not p.instanceNormalization:
                raise self.fail(layer, "computes batch statistics at prediction time (computeMeanVar without "
                                       "instanceNormalization), which corral does not support")
            self.node("InstanceNormalization", [ins[0], gamma, beta], outs[0], name=layer.name, epsilon=eps)
            return
        mean = self.const(f"{layer.name}/mean", self.weight(p.mean, (c,), f"{label} mean"))
        var = self.const(f"{layer.name}/variance", self.weight(p.variance, (c,), f"{label} variance"))
        self.node("BatchNormalization", [ins[0], gamma, beta, mean, var], outs[0], name=layer.name, epsilon=eps)

    # ------------------------------------------------------------ activations
    def activation(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        kind = p.WhichOneof("NonlinearityType")
        x, out, n = ins[0], outs[0], layer.name
        a: Any = getattr(p, kind or "", None)  # the activation's parameters (None for an unknown kind)
        scalar = lambda v, hint: self.const(f"{n}/{hint}", np.array(v, np.float32))
        if kind in ("ReLU", "tanh", "sigmoid"):
            self.node({"ReLU": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[kind], [x], out, name=n)
        elif kind == "leakyReLU":
            self.node("LeakyRelu", [x], out, name=n, alpha=float(a.alpha))
        elif kind == "ELU":
            self.node("Elu", [x], out, name=n, alpha=float(a.alpha))
        elif kind == "sigmoidHard":
            self.node("HardSigmoid", [x], out, name=n, alpha=float(a.alpha), beta=float(a.beta))
        elif kind == "PReLU":
            slope = self.const(f"{n}/alpha", self._vector(layer, a.alpha, "alpha"))
            self.node("PRelu", [x, slope], out, name=n)
        elif kind == "linear":  # alpha * x + beta
            y = self.node("Mul", [x, scalar(a.alpha, "alpha")], name=f"{n}/scale")
            self.node("Add", [y, scalar(a.beta, "beta")], out, name=n)
        elif kind == "scaledTanh":  # alpha * tanh(beta * x)
            y = self.node("Mul", [x, scalar(a.beta, "beta")], name=f"{n}/pre")
            y = self.node("Tanh", [y], name=f"{n}/tanh")
            self.node("Mul", [y, scalar(a.alpha, "alpha")], out, name=n)
        elif kind == "softsign":  # x / (1 + |x|)
            y = self.node("Abs", [x], name=f"{n}/abs")
            y = self.node("Add", [y, scalar(1.0, "one")], name=f"{n}/denominator")
            self.node("Div", [x, y], out, name=n)
        elif kind == "softplus":
            self._softplus(n, x, out)
        elif kind == "parametricSoftplus":  # alpha_c * softplus(beta_c * x)
            y = self.node("Mul", [x, self.const(f"{n}/beta", self._vector(layer, a.beta, "beta"))], name=f"{n}/pre")
            y = self._softplus(n, y, None)
            self.node("Mul", [y, self.const(f"{n}/alpha", self._vector(layer, a.alpha, "alpha"))], out, name=n)
        else:
            raise self.fail(layer, f"activation {kind!r} has no corral equivalent; supported: ReLU, leakyReLU, "
                                   "PReLU, tanh, scaledTanh, sigmoid, sigmoidHard, ELU, linear, softsign, "
                                   "softplus, parametricSoftplus")

    def _softplus(self, n: str, x: str, out: str | None) -> str:
        """log(1 + e^x) as relu(x) + log(1 + e^-|x|), which never overflows."""
        neg = self.node("Neg", [self.node("Abs", [x], name=f"{n}/abs")], name=f"{n}/neg_abs")
        tail = self.node("Log", [self.node("Add", [self.node("Exp", [neg], name=f"{n}/exp"),
                                                   self.const(f"{n}/one", np.array(1.0, np.float32))],
                                           name=f"{n}/one_plus")], name=f"{n}/log")
        return self.node("Add", [self.node("Relu", [x], name=f"{n}/relu"), tail], out, name=f"{n}/softplus")

    def unary(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        n, x = layer.name, ins[0]
        scale, shift = float(p.scale) or 1.0, float(p.shift)
        scalar = lambda v, hint: self.const(f"{n}/{hint}", np.array(v, np.float32))
        if scale != 1.0:
            x = self.node("Mul", [x, scalar(scale, "scale")], name=f"{n}/scale")
        if shift:
            x = self.node("Add", [x, scalar(shift, "shift")], name=f"{n}/shift")
        kinds = ["SQRT", "RSQRT", "INVERSE", "POWER", "EXP", "LOG", "ABS", "THRESHOLD"]
        kind = kinds[p.type] if p.type < len(kinds) else str(p.type)
        eps = float(p.epsilon) or 1e-6
        if kind in ("SQRT", "EXP", "LOG", "ABS"):
            self.node(kind.capitalize(), [x], outs[0], name=n)
        elif kind in ("RSQRT", "INVERSE"):
            y = self.node("Add", [x, scalar(eps, "epsilon")], name=f"{n}/epsilon")
            if kind == "RSQRT":
                y = self.node("Sqrt", [y], name=f"{n}/sqrt")
            self.node("Reciprocal", [y], outs[0], name=n)
        elif kind == "POWER":
            self.node("Pow", [x, scalar(p.alpha, "alpha")], outs[0], name=n)
        elif kind == "THRESHOLD":
            self.node("Max", [x, scalar(p.alpha, "alpha")], outs[0], name=n)
        else:
            raise self.fail(layer, f"unknown unary function {kind}")

    # ------------------------------------------------------------ spatial
    def pooling(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        if p.type not in (0, 1):
            raise self.fail(layer, "L2 pooling has no corral equivalent; use MAX or AVERAGE")
        op = "MaxPool" if p.type == 0 else "AveragePool"
        if p.globalPooling:
            self.node("Global" + op, [ins[0]], outs[0], name=layer.name)
            return
        attrs: dict[str, Any] = {"kernel_shape": self._pair(p.kernelSize, 3), "strides": self._pair(p.stride, 1)}
        padding = p.WhichOneof("PoolingPaddingType")
        if padding == "includeLastPixel":
            ph, pw = (int(v) for v in p.includeLastPixel.paddingAmounts) if len(
                p.includeLastPixel.paddingAmounts) else (0, 0)
            # Core ML's rule (round the window count up, drop a window that starts in
            # the end padding) is ONNX's ceil_mode with symmetric pads.
            attrs.update(pads=[ph, pw, ph, pw], ceil_mode=1)
        else:
            attrs.update(self._padding(p, padding))
        if op == "AveragePool":
            attrs["count_include_pad"] = 0 if p.avgPoolExcludePadding else 1
        self.node(op, [ins[0]], outs[0], name=layer.name, **attrs)

    def padding(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        amounts = p.paddingAmounts.borderAmounts
        (t, b), (left, r) = [(int(e.startEdgeSize), int(e.endEdgeSize)) for e in amounts] if len(amounts) == 2 \
            else [(0, 0), (0, 0)]
        pads = self.const(f"{layer.name}/pads", np.array([0, 0, t, left, 0, 0, b, r], np.int64))
        kind = p.WhichOneof("PaddingType") or "constant"
        mode = {"constant": "constant", "reflection": "reflect", "replication": "edge"}[kind]
        inputs = [ins[0], pads]
        if kind == "constant":
            inputs.append(self.const(f"{layer.name}/value", np.array(p.constant.value, np.float32)))
        self.node("Pad", inputs, outs[0], name=layer.name, mode=mode)

    def upsample(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        if len(p.fractionalScalingFactor):
            scales = [float(v) for v in p.fractionalScalingFactor]
        else:
            scales = [float(v) for v in self._pair(p.scalingFactor, 1)]
        roi = self.const(f"{layer.name}/roi", np.zeros(0, np.float32))
        scale_const = self.const(f"{layer.name}/scales", np.array([1.0, 1.0, *scales], np.float32))
        if p.mode == 0:  # nearest neighbour: each input pixel repeated
            attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            # DEFAULT samples at x_out / scale (ONNX "asymmetric"); the align-corners modes are ONNX's own
            coords = {0: "asymmetric", 1: "align_corners", 2: "half_pixel"}[int(p.linearUpsampleMode)]
            attrs = {"mode": "linear", "coordinate_transformation_mode": coords}
        self.node("Resize", [ins[0], roi, scale_const], outs[0], name=layer.name, **attrs)

    # ------------------------------------------------------------ dense and elementwise
    def inner_product(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        label = f"layer {layer.name!r}"
        cin, cout = int(p.inputChannels), int(p.outputChannels)
        w = self.const(f"{layer.name}/weights", self.weight(p.weights, (cout, cin), f"{label} weights"))
        inputs = [self.node("Flatten", [ins[0]], name=f"{layer.name}/flatten", axis=1), w]  # [N, C*H*W]
        if p.hasBias:
            inputs.append(self.const(f"{layer.name}/bias", self.weight(p.bias, (cout,), f"{label} bias")))
        y = self.node("Gemm", inputs, name=layer.name, transB=1)  # [N, C_out]
        self.node("Reshape", [y, self._shape(layer, [0, -1, 1, 1])], outs[0], name=f"{layer.name}/to_nchw")

    def _shape(self, layer: Any, dims: list[int]) -> str:
        return self.const(f"{layer.name}/shape", np.array(dims, np.int64))

    def _nary(self, layer: Any, op: str, ins: list[str], outs: list[str]) -> str:
        """Fold ``op`` over the inputs pairwise, the last result written to the layer's output."""
        y = ins[0]
        for i, other in enumerate(ins[1:], start=1):
            y = self.node(op, [y, other], outs[0] if i == len(ins) - 1 else None, name=f"{layer.name}/{i}"
                          if i < len(ins) - 1 else layer.name)
        return y

    def add(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        if len(ins) == 1:
            self.node("Add", [ins[0], self.const(f"{layer.name}/alpha", np.array(p.alpha, np.float32))], outs[0],
                      name=layer.name)
        else:
            self._nary(layer, "Add", ins, outs)

    def multiply(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        if len(ins) == 1:
            self.node("Mul", [ins[0], self.const(f"{layer.name}/alpha", np.array(p.alpha, np.float32))], outs[0],
                      name=layer.name)
        else:
            self._nary(layer, "Mul", ins, outs)

    def average(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        total = self.node("Sum", ins, name=f"{layer.name}/sum")
        self.node("Mul", [total, self.const(f"{layer.name}/inv_count", np.array(1 / len(ins), np.float32))],
                  outs[0], name=layer.name)

    def max(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        self.node("Max", ins, outs[0], name=layer.name)

    def min(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        self.node("Min", ins, outs[0], name=layer.name)

    def concat(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        if p.sequenceConcat:
            raise self.fail(layer, "concatenates along the sequence axis; corral models have no sequence axis")
        self.node("Concat", ins, outs[0], name=layer.name, axis=1)

    def softmax(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        self.node("Softmax", [ins[0]], outs[0], name=layer.name, axis=1)

    # ------------------------------------------------------------ layout
    def flatten(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        x = ins[0]
        if p.mode == 1:  # CHANNEL_LAST: flatten in H, W, C order
            x = self.node("Transpose", [x], name=f"{layer.name}/to_nhwc", perm=[0, 2, 3, 1])
        self.node("Reshape", [x, self._shape(layer, [0, -1, 1, 1])], outs[0], name=layer.name)

    def reshape(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        target = [int(v) for v in p.targetShape]
        if len(target) == 4:
            if target[0] != 1:
                raise self.fail(layer, f"reshapes to sequence length {target[0]}; corral supports sequence length 1")
            target = target[1:]
        if len(target) != 3:
            raise self.fail(layer, f"targetShape {list(p.targetShape)} must have 3 or 4 entries")
        c, h, w = target
        if p.mode == 0:  # CHANNEL_FIRST
            self.node("Reshape", [ins[0], self._shape(layer, [0, c, h, w])], outs[0], name=layer.name)
            return
        # CHANNEL_LAST: flatten in H, W, C order, fill [H_out, W_out, C_out], back to channels first
        x = self.node("Transpose", [ins[0]], name=f"{layer.name}/to_nhwc", perm=[0, 2, 3, 1])
        x = self.node("Reshape", [x, self._shape(layer, [0, h, w, c])], name=f"{layer.name}/reshape")
        self.node("Transpose", [x], outs[0], name=layer.name, perm=[0, 3, 1, 2])

    def permute(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        axes = [int(v) for v in p.axis] or [0, 1, 2, 3]
        if sorted(axes) != [0, 1, 2, 3]:
            raise self.fail(layer, f"axis {axes} is not a permutation of [0, 1, 2, 3]")
        if axes[0] != 0:
            raise self.fail(layer, f"axis {axes} moves the sequence axis; corral supports permutations of "
                                   "C, H, W that keep the sequence axis first")
        # Core ML's axes (Seq, C, H, W) line up with corral's (N, C, H, W): Seq is 1, batch stays put
        self.node("Transpose", [ins[0]], outs[0], name=layer.name, perm=axes)

    def scale(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        label = f"layer {layer.name!r}"
        s = self.const(f"{layer.name}/scale", self.weight(p.scale, _chw(p.shapeScale), f"{label} scale"))
        if not p.hasBias:
            self.node("Mul", [ins[0], s], outs[0], name=layer.name)
            return
        y = self.node("Mul", [ins[0], s], name=f"{layer.name}/scale")
        b = self.const(f"{layer.name}/bias", self.weight(p.bias, _chw(p.shapeBias), f"{label} bias"))
        self.node("Add", [y, b], outs[0], name=layer.name)

    def bias(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        b = self.const(f"{layer.name}/bias", self.weight(p.bias, _chw(p.shape), f"layer {layer.name!r} bias"))
        self.node("Add", [ins[0], b], outs[0], name=layer.name)

    def load_constant(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        if len(p.shape) != 3:
            raise self.fail(layer, f"shape {list(p.shape)} must be [C, H, W]")
        c, h, w = (int(v) for v in p.shape)
        # [1, C, H, W]: broadcasts over the batch like Core ML's [1, 1, C, H, W]
        self.graph.initializers[outs[0]] = self.weight(p.data, (1, c, h, w), f"layer {layer.name!r} data", axis=1)

    # ------------------------------------------------------------ custom
    def custom(self, layer: Any, p: Any, ins: list[str], outs: list[str]) -> None:
        if not p.className:
            raise self.fail(layer, "custom layer names no className")
        attrs: dict[str, Any] = {}
        for key, value in sorted(p.parameters.items()):
            kind = value.WhichOneof("value")
            v = getattr(value, kind) if kind else 0
            attrs[key] = int(v) if isinstance(v, bool) else v
        weights = []
        for i, wp in enumerate(p.weights):
            label = f"layer {layer.name!r} weights[{i}]"
            if len(wp.rawValue) and not wp.HasField("quantization"):
                weight: Weight = np.frombuffer(wp.rawValue, np.uint8).copy()  # opaque bytes for the class
            else:
                weight = self.weight(wp, (_count(wp),), label)
            weights.append(self.const(f"{layer.name}/weights{i}", weight))
        self.graph.nodes.append(Node(op_type=p.className, inputs=[*ins, *weights], outputs=list(outs),
                                     name=layer.name, attrs=attrs, domain=CUSTOM_DOMAIN))


def _chw(shape: Any) -> tuple[int, ...]:
    """A scale/bias shape ([1], [C], [1, H, W] or [C, H, W]) laid out to broadcast over [N, C, H, W]."""
    dims = tuple(int(v) for v in shape) or (1,)
    return (dims[0], 1, 1) if len(dims) == 1 else dims


def _count(wp: Any) -> int:
    """How many values a WeightParams holds when no layer field says so."""
    if len(wp.floatValue):
        return len(wp.floatValue)
    if len(wp.float16Value):
        return len(wp.float16Value) // 2
    bits = int(wp.quantization.numberOfBits) if wp.HasField("quantization") else 8
    # packed codes fill whole bytes; the largest count those bytes hold
    return len(wp.rawValue) * 8 // max(bits, 1)
