"""ONNX protos (tensors, attributes, nodes, value types) to corral's graph IR.

Everything here takes the ``onnx`` module as an argument, so that importing
this module never imports ``onnx`` (an optional extra).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from engine.exceptions import ModelImportError, UnsupportedOpError
from engine.graph import CUSTOM_DOMAIN, AttrValue, Graph, Node
from engine.op_table import MS_DOMAIN, MS_OPS, is_supported
from engine.tensors import MAX_DIM, MAX_RANK

# ONNX TensorProto data types corral stores, with their numpy dtypes. Every
# other type (bfloat16, float8*, float4, int4/uint4, int2/uint2, string,
# complex) is refused with the name of the tensor that uses it.
ONNX_TO_NUMPY: dict[int, np.dtype] = {
    1: np.dtype(np.float32),   # FLOAT
    2: np.dtype(np.uint8),     # UINT8
    3: np.dtype(np.int8),      # INT8
    4: np.dtype(np.uint16),    # UINT16
    5: np.dtype(np.int16),     # INT16
    6: np.dtype(np.int32),     # INT32
    7: np.dtype(np.int64),     # INT64
    9: np.dtype(np.bool_),     # BOOL
    10: np.dtype(np.float16),  # FLOAT16
    11: np.dtype(np.float64),  # DOUBLE
    12: np.dtype(np.uint32),   # UINT32
    13: np.dtype(np.uint64),   # UINT64
}

# The default ONNX operator set goes by either name.
DEFAULT_DOMAINS = ("", "ai.onnx")


def onnx_type_name(onnx: ModuleType, code: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return f"type code {code}"


def numpy_dtype(onnx: ModuleType, code: int, where: str) -> np.dtype:
    """The numpy dtype for ONNX element type ``code``; refuses types corral does not store."""
    try:
        return ONNX_TO_NUMPY[code]
    except KeyError:
        raise ModelImportError(
            f"{where} has data type {onnx_type_name(onnx, code)}, which corral cannot store "
            "(it stores float32/float16/float64, 8-64-bit integers and bool); "
            "convert the model to one of those types first") from None


def tensor_to_array(onnx: ModuleType, tensor: Any, where: str) -> np.ndarray:
    """A TensorProto as a native-byte-order numpy array of a stored dtype."""
    from onnx import numpy_helper

    where = f"{where} {tensor.name!r}" if tensor.name else where
    dtype = numpy_dtype(onnx, tensor.data_type, where)
    if len(tensor.dims) > MAX_RANK or any(d < 0 or d > MAX_DIM for d in tensor.dims):
        raise ModelImportError(f"{where}: dimensions {list(tensor.dims)} exceed corral's limits "
                               f"(rank <= {MAX_RANK}, each dimension 0..{MAX_DIM})")
    try:
        arr = numpy_helper.to_array(tensor)
    except Exception as exc:  # onnx raises assorted types for missing external data
        raise ModelImportError(f"{where}: cannot read its data ({exc}); if the weights live in an external "
                               "data file, import the model from its path so the file is found beside it") from exc
    return np.asarray(arr, dtype=dtype, order="C")  # keeps 0-d tensors 0-d (ascontiguousarray makes them 1-d)


def sparse_to_array(onnx: ModuleType, sparse: Any, where: str) -> np.ndarray:
    """A SparseTensorProto as a dense array (indices linear ``[NNZ]`` or per-axis ``[NNZ, rank]``)."""
    values = tensor_to_array(onnx, sparse.values, where)
    indices = tensor_to_array(onnx, sparse.indices, where).astype(np.int64)
    shape = tuple(int(d) for d in sparse.dims)
    dense = np.zeros(shape, dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), shape) if indices.size else indices.reshape(-1)
    dense.reshape(-1)[indices.reshape(-1)] = values.reshape(-1)
    return dense


def attribute_value(onnx: ModuleType, attr: Any, where: str) -> AttrValue:
    kinds = onnx.AttributeProto
    kind = attr.type
    if kind == kinds.FLOAT:
        return float(attr.f)
    if kind == kinds.INT:
        return int(attr.i)
    if kind == kinds.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if kind == kinds.TENSOR:
        return tensor_to_array(onnx, attr.t, f"{where} attribute {attr.name!r}")
    if kind == kinds.SPARSE_TENSOR:
        return sparse_to_array(onnx, attr.sparse_tensor, f"{where} attribute {attr.name!r}")
    if kind == kinds.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == kinds.INTS:
        return [int(v) for v in attr.ints]
    if kind == kinds.STRINGS:
        return [v.decode("utf-8", errors="replace") for v in attr.strings]
    raise ModelImportError(f"{where}: attribute {attr.name!r} holds a {kinds.AttributeType.Name(kind)}, "
                           "which corral's graph cannot hold (subgraphs and type protos are not supported)")


def constant_value(onnx: ModuleType, node: Any, where: str) -> np.ndarray:
    """The value of an ONNX Constant node."""
    for attr in node.attribute:
        if attr.name == "value":
            return tensor_to_array(onnx, attr.t, where)
        if attr.name == "sparse_value":
            return sparse_to_array(onnx, attr.sparse_tensor, where)
        if attr.name == "value_float":
            return np.array(attr.f, np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), np.int64)
        if attr.name in ("value_string", "value_strings"):
            raise ModelImportError(f"{where}: string constants cannot be stored by corral")
    raise ModelImportError(f"{where}: Constant node has no value attribute")


def default_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    # IR versions before 3 had no opset_import; such files predate every opset corral reads.
    return 1


def node_label(node: Any) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def check_ops(nodes: Iterable[Any], custom_domains: Sequence[str], source: str) -> None:
    """Raise :class:`UnsupportedOpError` naming every unsupported op type and its nodes."""
    missing = unsupported_ops(nodes, custom_domains)
    if missing:
        raise UnsupportedOpError(missing, source)


def unsupported_ops(nodes: Iterable[Any], custom_domains: Sequence[str]) -> dict[str, list[str]]:
    """Op type (``domain:type`` outside the default domain) -> names of the nodes corral cannot run."""
    missing: dict[str, list[str]] = {}
    for node in nodes:
        if node.domain in custom_domains or (node.domain == MS_DOMAIN and node.op_type in MS_OPS):
            continue
        if node.domain not in DEFAULT_DOMAINS:
            missing.setdefault(f"{node.domain}:{node.op_type}", []).append(node_label(node))
        elif node.op_type != "Constant" and not is_supported(node.op_type):
            missing.setdefault(node.op_type, []).append(node_label(node))
    return missing


class GraphConverter:
    """Builds a corral :class:`Graph` from an ONNX GraphProto.

    Initializers and Constant nodes become weights; other nodes keep their
    ONNX op type, inputs, outputs and attributes, with the few rewrites that
    give older opsets' nodes the meaning corral's ops implement.
    """

    def __init__(self, onnx: ModuleType, opset: int, custom_domains: Sequence[str], source: str) -> None:
        self.onnx = onnx
        self.opset = opset
        self.custom_domains = tuple(custom_domains)
        self.source = source
        self.graph = Graph()

    def convert(self, graph_proto: Any) -> Graph:
        for tensor in graph_proto.initializer:
            self.graph.initializers[tensor.name] = tensor_to_array(self.onnx, tensor, f"{self.source}: initializer")
        for tensor in graph_proto.sparse_initializer:
            name = tensor.values.name
            self.graph.initializers[name] = sparse_to_array(self.onnx, tensor, f"{self.source}: initializer {name!r}")
        for node in graph_proto.node:
            self._node(node)
        return self.graph

    def _node(self, proto: Any) -> None:
        where = f"{self.source}: node {node_label(proto)!r} ({proto.op_type})"
        if proto.domain in DEFAULT_DOMAINS and proto.op_type == "Constant":
            self.graph.initializers[proto.output[0]] = constant_value(self.onnx, proto, where)
            return
        attrs = {a.name: attribute_value(self.onnx, a, where) for a in proto.attribute}
        domain = CUSTOM_DOMAIN if proto.domain in self.custom_domains else ""
        node = Node(op_type=proto.op_type, inputs=list(proto.input), outputs=list(proto.output),
                    name=proto.name, attrs=attrs, domain=domain)
        if not domain:
            self._check_dtype_attrs(node, where)
            self._upgrade(node)
        self.graph.nodes.append(node)

    def _check_dtype_attrs(self, node: Node, where: str) -> None:
        # Cast's target type is an int attribute, not a tensor: check it here so an
        # unstorable type fails at import rather than on the first run.
        if node.op_type == "Cast" and (code := node.int_attr("to")) is not None:
            numpy_dtype(self.onnx, code, f"{where} target type")

    def _upgrade(self, node: Node) -> None:
        """Rewrite older-opset forms whose meaning corral's op would otherwise misread."""
        if node.op_type == "Softmax":
            # Softmax changed meaning at opset 13 (per-axis instead of 2-D coercion).
            node.attrs["opset"] = self.opset
        elif node.op_type == "Resize" and self.opset < 11:
            # Resize-10 took (X, scales) with Upsample's asymmetric/floor sampling;
            # from opset 11 the second input is roi.
            node.inputs = [node.inputs[0], "", *node.inputs[1:]]
            node.attrs.setdefault("coordinate_transformation_mode", "asymmetric")
            node.attrs.setdefault("nearest_mode", "floor")
