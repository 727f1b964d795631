"""LSTM, GRU, RNN and onnxruntime's DynamicQuantizeLSTM against onnxruntime, as ops and on every backend.

ONNX's own node cases (test_onnx_conformance) cover the defaults, one case
per direction and layout 1 once; these add what they miss: short rows of a
batch in both directions, initial states, every gate option, layout 1 on
every backend (onnxruntime itself refuses layout 1, so its reference runs the
layout-0 model on transposed tensors), and the quantized LSTM that
``onnxruntime.quantization.quantize_dynamic`` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import compile
from engine.exceptions import UnsupportedOpError
from engine.exporters.onnx import to_onnx
from engine.graph import Node
from engine.importers import OnnxImportOptions, import_onnx
from engine.ops import make_op, threads
from engine.ops.dynamic_quantize_lstm import mlas_logistic, mlas_tanh
from engine.passes import optimize
from tests.engine.backend_names import BACKENDS

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
SEQ, BATCH, INPUT, HIDDEN = 6, 4, 5, 3
LENGTHS = np.array([6, 2, 0, 5], np.int32)  # a full row, short ones, an empty one


def layer_inputs(op: str, direction: str, seed: int = 0, batch: int = BATCH) -> dict[str, np.ndarray]:
    """X, W, R, B, initial_h (and initial_c, P for LSTM) for a small layer, in layout 0."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op] * HIDDEN
    made = {"X": rng.standard_normal((SEQ, batch, INPUT)), "W": rng.standard_normal((dirs, g, INPUT)) * 0.6,
            "R": rng.standard_normal((dirs, g, HIDDEN)) * 0.6, "B": rng.standard_normal((dirs, 2 * g)) * 0.3,
            "initial_h": rng.standard_normal((dirs, batch, HIDDEN)) * 0.5}
    if op == "LSTM":
        made["initial_c"] = rng.standard_normal((dirs, batch, HIDDEN)) * 0.5
        made["P"] = rng.standard_normal((dirs, 3 * HIDDEN)) * 0.5
    return {k: v.astype(np.float32) for k, v in made.items()}


def node_model(op: str, slots: list[str], feeds: dict[str, np.ndarray], weights: dict[str, np.ndarray],
               outputs: list[str], attrs: dict[str, Any], domain: str = "") -> onnx.ModelProto:
    """One ``op`` node reading ``slots`` (names; "" for an empty input), weights as initializers."""
    node = helper.make_node(op, slots, outputs, domain=domain or None, **attrs)
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
           for n, v in feeds.items()]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o]
    graph = helper.make_graph([node], "layer", ins, outs,
                              initializer=[numpy_helper.from_array(v, n) for n, v in weights.items()])
    opsets = [helper.make_opsetid("", 14)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime on ``model`` as its own session, with the engine's thread count (what corral's onnxruntime
    backend gives its sessions, and what the quantized LSTM's results depend on)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads.num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_backend(model: onnx.ModelProto, feeds: dict[str, np.ndarray], backend: str,
                fallbacks: bool = False) -> list[np.ndarray]:
    compiled = compile(import_onnx(model, OnnxImportOptions(name="layer", flexible_batch=False)), backend)
    got = compiled.run(feeds)
    if not fallbacks:  # the layer ran on the backend's own kernels (torch) / inside onnxruntime
        assert compiled.backend_context is not None
        assert not dict(getattr(compiled.backend_context, "fallbacks", {}))
    return [got[o.name] for o in model.graph.output]


def assert_close(got: list[np.ndarray], want: list[np.ndarray], tol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=0, atol=tol * max(1.0, float(np.abs(w).max(initial=0))))


def slots_for(op: str) -> list[str]:
    names = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    return names + (["initial_c", "P"] if op == "LSTM" else [])


def outputs_for(op: str) -> list[str]:
    return ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]


# ------------------------------------------------------------------ the numpy ops against onnxruntime

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "clip": {"clip": 0.4},
    "activations": {"activations": ["HardSigmoid", "Softsign", "ScaledTanh"],
                    "activation_alpha": [0.3, 1.5], "activation_beta": [0.6, 0.8]},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", sorted(GATES))
def test_op_matches_onnxruntime(op: str, direction: str, variant: str) -> None:
    attrs: dict[str, Any] = {"hidden_size": HIDDEN, "direction": direction, **VARIANTS[variant]}
    if "activations" in attrs:
        per_direction = attrs["activations"][:{"LSTM": 3, "GRU": 2, "RNN": 1}[op]]
        attrs["activations"] = per_direction * (2 if direction == "bidirectional" else 1)
    feeds = {**layer_inputs(op, direction), "sequence_lens": LENGTHS}
    slots = slots_for(op)
    want = run_ort(node_model(op, slots, feeds, {}, outputs_for(op), attrs), feeds)
    got = make_op(Node(op, slots, outputs_for(op), attrs=attrs))([feeds[s] for s in slots])
    assert_close(got, want)


@pytest.mark.parametrize("attrs", [{"linear_before_reset": 1}, {"linear_before_reset": 1, "clip": 0.5}])
def test_gru_linear_before_reset(attrs: dict[str, Any]) -> None:
    attrs = {"hidden_size": HIDDEN, "direction": "bidirectional", **attrs}
    feeds = {**layer_inputs("GRU", "bidirectional"), "sequence_lens": LENGTHS}
    slots = slots_for("GRU")
    want = run_ort(node_model("GRU", slots, feeds, {}, outputs_for("GRU"), attrs), feeds)
    assert_close(make_op(Node("GRU", slots, outputs_for("GRU"), attrs=attrs))([feeds[s] for s in slots]), want)


def test_lstm_input_forget_and_missing_optional_inputs() -> None:
    feeds = layer_inputs("LSTM", "bidirectional")
    feeds.pop("initial_h")
    feeds.pop("B")
    slots = ["X", "W", "R", "", "", "", "initial_c", "P"]
    attrs = {"hidden_size": HIDDEN, "direction": "bidirectional", "input_forget": 1}
    want = run_ort(node_model("LSTM", slots, feeds, {}, ["", "Y_h", "Y_c"], attrs), feeds)
    got = make_op(Node("LSTM", slots, ["", "Y_h", "Y_c"], attrs=attrs))([feeds.get(s) if s else None for s in slots])
    assert_close(got[1:], want)


# ------------------------------------------------------------------ every backend


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(GATES))
def test_bidirectional_short_rows_on_every_backend(op: str, backend: str) -> None:
    data = layer_inputs(op, "bidirectional", seed=3)
    weights = {k: data.pop(k) for k in ("W", "R", "B", "P") if k in data}
    feeds = {**data, "sequence_lens": LENGTHS}
    model = node_model(op, slots_for(op), feeds, weights, outputs_for(op),
                       {"hidden_size": HIDDEN, "direction": "bidirectional"})
    assert_close(run_backend(model, feeds, backend), run_ort(model, feeds))


def batch_first(model_feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """X and the initial states of layout 0 in layout 1 (batch and the leading axis swapped)."""
    return {k: (v.transpose(1, 0, 2) if k in ("X", "initial_h", "initial_c") else v) for k, v in model_feeds.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "short_rows"])
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
@pytest.mark.parametrize("op", sorted(GATES))
def test_layout_1_on_every_backend(op: str, direction: str, lengths: bool, backend: str) -> None:
    data = layer_inputs(op, direction, seed=5)
    weights = {k: data.pop(k) for k in ("W", "R", "B") if k in data}
    data.pop("P", None)  # no peepholes: torch's fused layer runs the full-length case
    slots = [s if s in data or s in weights or (s == "sequence_lens" and lengths) else "" for s in slots_for(op)]
    feeds = {**data, **({"sequence_lens": LENGTHS} if lengths else {})}
    attrs = {"hidden_size": HIDDEN, "direction": direction}
    # onnxruntime refuses layout 1: its reference is the layout-0 layer with Y and the states moved back
    y, *states = run_ort(node_model(op, slots, feeds, weights, outputs_for(op), attrs), feeds)
    want = [y.transpose(2, 0, 1, 3), *(s.transpose(1, 0, 2) for s in states)]
    model = node_model(op, slots, batch_first(feeds), weights, outputs_for(op), {**attrs, "layout": 1})
    assert_close(run_backend(model, batch_first(feeds), backend), want)


# ------------------------------------------------------------------ DynamicQuantizeLSTM

def quantized_lstm(tmp_path: Path, direction: str, *, seed: int, batch: int = 1, hidden: int = 16,
                   features: int = 12, per_channel: bool = False, unsigned: bool = False,
                   lengths: bool = False) -> onnx.ModelProto:
    """A float LSTM (seeded weights) through onnxruntime's quantize_dynamic; X [9, batch, features]."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    weights = {"W": rng.standard_normal((dirs, 4 * hidden, features)) * 0.3,
               "R": rng.standard_normal((dirs, 4 * hidden, hidden)) * 0.3,
               "B": rng.standard_normal((dirs, 8 * hidden)) * 0.1}
    slots = ["X", "W", "R", "B", "sequence_lens" if lengths else ""]
    feeds: dict[str, np.ndarray] = {"X": np.zeros((9, batch, features), np.float32)}
    if lengths:
        feeds["sequence_lens"] = np.zeros(batch, np.int32)
    model = node_model("LSTM", slots, feeds, {k: v.astype(np.float32) for k, v in weights.items()},
                       ["Y", "Y_h", "Y_c"], {"hidden_size": hidden, "direction": direction})
    float_path, quant_path = tmp_path / f"lstm-{seed}.onnx", tmp_path / f"lstm-{seed}-q.onnx"
    onnx.save(model, float_path)
    quantize_dynamic(float_path, quant_path, per_channel=per_channel,
                     weight_type=QuantType.QUInt8 if unsigned else QuantType.QInt8)
    return onnx.load(quant_path)


QUANTIZED: dict[str, dict[str, Any]] = {
    "forward-batch1": {"direction": "forward", "batch": 1},
    # 3 rows and hidden <= 256: onnxruntime splits the rows over its threads, quantizing each share apart
    "bidirectional-per-channel": {"direction": "bidirectional", "batch": 3, "per_channel": True},
    "reverse-uint8-short-rows": {"direction": "reverse", "batch": 4, "unsigned": True, "lengths": True},
    "bidirectional-wide": {"direction": "bidirectional", "batch": 2, "hidden": 300, "features": 40},
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", sorted(QUANTIZED))
def test_dynamic_quantize_lstm_matches_onnxruntime(tmp_path: Path, config: str, backend: str) -> None:
    spec = QUANTIZED[config]
    batch = int(spec["batch"])
    model = quantized_lstm(tmp_path, seed=7, **spec)
    [node] = model.graph.node
    assert (node.domain, node.op_type) == ("com.microsoft", "DynamicQuantizeLSTM")
    features = int(spec.get("features", 12))
    rng = np.random.default_rng(1)
    feeds = {"X": rng.standard_normal((9, batch, features)).astype(np.float32) * 2}
    if spec.get("lengths"):
        feeds["sequence_lens"] = np.array([9, 3, 0, 6][:batch], np.int32)
    want = run_ort(model, feeds)
    # the torch kernel runs the numpy op on the host: its fallback is expected
    got = run_backend(model, feeds, backend, fallbacks=backend == "torch")
    assert_close(got, want, tol=1e-4)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}


@pytest.mark.parametrize(("op", "fn"), [("Sigmoid", mlas_logistic), ("Tanh", mlas_tanh)])
def test_mlas_activations_are_onnxruntimes(op: str, fn: Any) -> None:
    """onnxruntime's Sigmoid and Tanh ops run the same MLAS kernels as its LSTM's gates."""
    x = np.random.default_rng(4).standard_normal(100_003).astype(np.float32) * 6
    x[:6] = [0.0, -0.0, 30.0, -30.0, 9.5, -18.5]
    model = node_model(op, ["X"], {"X": x}, {}, ["Y"], {})
    (want,) = run_ort(model, {"X": x})
    got = fn(x)
    if {"avx2", "fma"} <= _cpu_flags():  # onnxruntime's FMA3 kernels, which the emulation follows
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-7)


def test_import_keeps_the_quantized_weights(tmp_path: Path) -> None:
    model = import_onnx(quantized_lstm(tmp_path, "bidirectional", seed=2),
                        OnnxImportOptions(name="q", flexible_batch=False))
    [node] = model.graph.nodes
    assert (node.op_type, node.domain) == ("DynamicQuantizeLSTM", "")
    for slot in (1, 2):
        assert model.graph.initializers[node.inputs[slot]].dtype == np.int8
    # corral's passes leave the int8 W and R to the op (and to onnxruntime)
    ctx = optimize(model)
    assert [n.op_type for n in ctx.nodes] == ["DynamicQuantizeLSTM"]
    assert ctx.constants[node.inputs[1]].dtype == np.int8
    exported = to_onnx(model)
    [out] = exported.graph.node
    assert (out.domain, out.op_type) == ("com.microsoft", "DynamicQuantizeLSTM")
    assert {(o.domain, o.version) for o in exported.opset_import} == {("", 17), ("com.microsoft", 1)}
    weights = {t.name: t.data_type for t in exported.graph.initializer}
    assert weights[node.inputs[1]] == TensorProto.INT8


def test_other_contrib_ops_are_refused() -> None:
    x = np.zeros((1, 2, 4, 4), np.float32)
    model = node_model("FusedConv", ["X"], {"X": x}, {}, ["Y"], {}, domain="com.microsoft")
    with pytest.raises(UnsupportedOpError, match="com.microsoft:FusedConv"):
        import_onnx(model, OnnxImportOptions(name="contrib", flexible_batch=False))
