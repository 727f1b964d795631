"""What an ONNX file holds, read without importing it: its inputs and outputs, its ops and which of them corral
lacks, and how to import it (``corral model inspect FILE.onnx``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from engine.graph import CUSTOM_DOMAIN
from engine.importers.onnx_features import TensorInfo, tensor_info
from engine.importers.onnx_graph import DEFAULT_DOMAINS, default_opset, unsupported_ops
from engine.importers.onnx_layout import image_like


def _op_name(node: Any) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}:{node.op_type}"


def _tensor(info: TensorInfo) -> dict[str, Any]:
    return {"name": info.name, "dtype": str(info.dtype),
            "shape": None if info.dims is None else ["?" if d is None else d for d in info.dims]}


def survey_onnx(path: Path) -> dict[str, Any]:
    """JSON-ready: ``inputs``, ``outputs``, ``ops`` (counts), ``unsupported_ops`` (op -> node names),
    ``image_like`` (input/output name -> NCHW/NHWC) and the ``import_command`` that maps those as images."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    where = f"ONNX model {path.name!r}"
    weights = {t.name for t in proto.graph.initializer}
    inputs = [tensor_info(onnx, vi, f"{where}: input") for vi in proto.graph.input if vi.name not in weights]
    outputs = [tensor_info(onnx, vi, f"{where}: output") for vi in proto.graph.output]
    ops = Counter(_op_name(n) for n in proto.graph.node)
    unsupported = unsupported_ops(proto.graph.node, (CUSTOM_DOMAIN,))
    images = {i.name: layout for i in inputs if (layout := image_like(i)) is not None}
    command = [f"corral model import {path.name} -o {path.stem}.corral"]
    command += [f"--image-input {name}" for name in images]
    if any(layout == "NHWC" for layout in images.values()):
        command.append("--image-layout NHWC")
    return {"file": str(path), "format": "onnx", "opset": default_opset(proto), "producer": proto.producer_name,
            "inputs": [_tensor(i) for i in inputs], "outputs": [_tensor(o) for o in outputs],
            "node_count": len(proto.graph.node), "ops": dict(sorted(ops.items())), "unsupported_ops": unsupported,
            "image_like": images, "import_command": " ".join(command)}
