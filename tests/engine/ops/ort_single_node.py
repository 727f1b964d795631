"""Run one ONNX node in onnxruntime (the reference peer) and the same node in corral's numpy ops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from engine.graph import Node
from engine.ops import make_op

_DTYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
           np.dtype(np.int64): TensorProto.INT64, np.dtype(np.uint8): TensorProto.UINT8,
           np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.int8): TensorProto.INT8,
           np.dtype(np.int32): TensorProto.INT32, np.dtype(np.int16): TensorProto.INT16,
           np.dtype(np.uint16): TensorProto.UINT16}


def ort_run(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any], n_outputs: int = 1,
            opset: int = 19, out_dtypes: Sequence[Any] | None = None) -> list[np.ndarray]:
    """Outputs of a single ``op_type`` node in onnxruntime with 2 intra-op threads; ``None`` inputs are omitted.

    Outputs are declared with ``out_dtypes`` when given, else with the first
    input's dtype, except a second MaxPool output (its int64 indices).
    """
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    while names and not names[-1]:
        names.pop()
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, _DTYPES[np.asarray(x).dtype], None)
                    for n, x in zip(names, inputs) if n]
    out_types = [_DTYPES[np.asarray(inputs[0]).dtype]] + [TensorProto.INT64] * (n_outputs - 1)
    if out_dtypes is not None:
        out_types = [_DTYPES[np.dtype(d)] for d in out_dtypes]
    graph_outputs = [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, out_types)]
    model = helper.make_model(helper.make_graph([node], "single", graph_inputs, graph_outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {n: x for n, x in zip(names, inputs) if n})


def corral_run(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
               n_outputs: int = 1) -> list[np.ndarray]:
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    node = Node(op_type, names, [f"out{i}" for i in range(n_outputs)], attrs=dict(attrs))
    return make_op(node)(list(inputs))


def assert_matches_ort(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
                       n_outputs: int = 1, rtol: float = 1e-4, atol: float = 1e-4, opset: int = 19) -> None:
    expected = ort_run(op_type, inputs, attrs, n_outputs, opset)
    got = corral_run(op_type, inputs, attrs, n_outputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape, f"{op_type} {attrs}: shape {g.shape} != onnxruntime's {e.shape}"
        assert g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{op_type} {attrs}")
