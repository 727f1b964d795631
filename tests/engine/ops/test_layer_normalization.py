"""LayerNormalization against onnxruntime running the same one-node ONNX model, on every backend.

What ONNX's node tests leave out: negative axes with the optional outputs
(each on its own and both), Scale and B that broadcast, float16 and float64
inputs (stage one in the float32 stash type), weights beside inputs, inputs
far from zero, and the attributes corral refuses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import compile
from engine.exceptions import EngineError, OpError
from engine.graph import Node
from engine.importers import OnnxImportOptions, import_onnx
from engine.ops import make_op
from tests.engine.backend_names import BACKENDS
from tests.engine.ops.test_logic import check, corral_outputs, node_model, ort_outputs

RNG = np.random.default_rng(5)
F32 = np.float32


def normal(*shape: int, dtype: Any = F32, offset: float = 0.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * 1.5 + offset).astype(dtype)


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, outputs: dict[str, Any],
               weights: tuple[str, ...] = (), **attrs: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """The model and its feeds; the parameters named in ``weights`` are initializers, the rest inputs."""
    params = {"x": x, "scale": scale, **({} if bias is None else {"bias": bias})}
    feeds = {k: v for k, v in params.items() if k not in weights}
    inits = {k: v for k, v in params.items() if k in weights}
    return node_model("LayerNormalization", list(params), outputs, feeds, inits, **attrs), feeds


STATS = {"y": F32, "mean": F32, "inv_std_dev": F32}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", [-1, -2, -3, 1, 2])
def test_every_axis_with_both_statistics(backend: str, axis: int) -> None:
    x = normal(2, 3, 5, 8)
    rank_from = axis % 4
    model, feeds = layer_norm(x, normal(*x.shape[rank_from:]), normal(*x.shape[rank_from:]), STATS, axis=axis,
                              epsilon=1e-3)
    got = check(model, feeds, backend, rtol=1e-5, atol=1e-5)
    assert got["mean"].shape == got["inv_std_dev"].shape == x.shape[:rank_from] + (1,) * (4 - rank_from)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("outputs", [{"y": F32, "mean": F32}, {"y": F32, "": F32, "inv_std_dev": F32}],
                         ids=["mean-only", "inv-std-dev-only"])
def test_one_optional_output_at_a_time(backend: str, outputs: dict[str, Any]) -> None:
    x = normal(4, 6)
    model, feeds = layer_norm(x, normal(6), None, outputs, weights=("scale",))
    check(model, feeds, backend, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale_shape", [(1,), (1, 8), (5, 1), (1, 5, 8)])
def test_scale_and_bias_that_broadcast_to_the_normalized_shape(backend: str, scale_shape: tuple[int, ...]) -> None:
    x = normal(3, 5, 8)
    model, feeds = layer_norm(x, normal(*scale_shape), normal(*scale_shape), STATS, weights=("scale", "bias"),
                              axis=-2)
    check(model, feeds, backend, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_input_computes_stage_one_in_float32(backend: str) -> None:
    x = normal(4, 7, 24, dtype=np.float16, offset=3.0)
    model, feeds = layer_norm(x, normal(24, dtype=np.float16), normal(24, dtype=np.float16),
                              {"y": np.float16, "mean": F32, "inv_std_dev": F32}, axis=-1, stash_type=1)
    # torch on the CPU runs float16 on the numpy op; Y differs from onnxruntime's by a rounding or two of
    # float16 (onnxruntime rounds Y once, ONNX's function body after Normalized, Scale and B each)
    got = check(model, feeds, backend, rtol=4e-3, atol=4e-3, host_fallbacks=True)
    assert got["mean"].dtype == got["inv_std_dev"].dtype == np.float32
    x32 = x.astype(F32)
    np.testing.assert_allclose(got["mean"][..., 0], x32.mean(-1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_model_with_float16_weights(backend: str) -> None:
    """corral holds float16 weights as float32: the op still answers in X's float16."""
    x = normal(3, 16, dtype=np.float16)
    model, feeds = layer_norm(x, normal(16, dtype=np.float16), normal(16, dtype=np.float16), {"y": np.float16},
                              weights=("scale", "bias"))
    got = corral_outputs(model, feeds, backend, host_fallbacks=True)["y"]
    want = ort_outputs(model, feeds)["y"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, want, rtol=4e-3, atol=4e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_input_keeps_float32_statistics(backend: str) -> None:
    x = normal(5, 12, dtype=np.float64)
    model, feeds = layer_norm(x, normal(12, dtype=np.float64), normal(12, dtype=np.float64),
                              {"y": np.float64, "mean": F32, "inv_std_dev": F32})
    # onnxruntime computes float64 in float64; ONNX (and corral) in the float32 stash type
    got = check(model, feeds, backend, rtol=2e-6, atol=2e-6, host_fallbacks=True)
    assert got["y"].dtype == np.float64


@pytest.mark.parametrize("backend", BACKENDS)
def test_far_from_zero_is_as_accurate_as_float32_statistics_allow(backend: str) -> None:
    x = (RNG.standard_normal((6, 512)) * 0.05 + 200).astype(F32)
    model, feeds = layer_norm(x, np.ones(512, F32), None, {"y": F32}, weights=("scale",))
    got = corral_outputs(model, feeds, backend)["y"]
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    # Mean rounded to float32 (ulp 1.5e-5 at 200) is 3e-4 of a standard deviation of 0.05
    np.testing.assert_allclose(got, exact, atol=2e-3)
    np.testing.assert_allclose(got, ort_outputs(model, feeds)["y"], atol=2e-3)


def test_attributes_corral_refuses() -> None:
    node = Node("LayerNormalization", ["x", "s"], ["y"], name="ln", attrs={"stash_type": 16})
    with pytest.raises(OpError, match="stash_type 16"):
        make_op(node)
    model, _ = layer_norm(normal(2, 3), normal(3), None, {"y": F32}, stash_type=16)
    with pytest.raises(EngineError, match="stash_type"):
        compile(import_onnx(model, OnnxImportOptions(name="ln", flexible_batch=False)), "numpy")


def test_shape_and_type_errors() -> None:
    op = make_op(Node("LayerNormalization", ["x", "s", "b"], ["y"], name="ln", attrs={"axis": 3}))
    with pytest.raises(OpError, match="axis 3 out of range"):
        op([normal(2, 3), normal(3), None])
    op = make_op(Node("LayerNormalization", ["x", "s"], ["y"], name="ln"))
    with pytest.raises(OpError, match="Scale of shape"):
        op([normal(2, 3), normal(4)])
    with pytest.raises(OpError, match="floating-point"):
        op([np.ones((2, 3), np.int64), normal(3)])


def test_statistics_are_the_stage_one_values() -> None:
    x = normal(3, 4, 10)
    node = Node("LayerNormalization", ["x", "s", "b"], ["y", "m", "r"], name="ln", attrs={"axis": 1, "epsilon": 0.5})
    y, mean, inv = make_op(node)([x, np.full((10,), 2.0, F32), np.full((4, 10), 1.0, F32)])
    rows = x.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(mean.reshape(3), rows.mean(1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(inv.reshape(3), 1 / np.sqrt(rows.var(1) + 0.5), rtol=1e-6)
    np.testing.assert_allclose(y, (x - mean) * inv * 2 + 1, rtol=1e-5, atol=1e-6)
    assert make_op(Node("LayerNormalization", ["x", "s"], ["y"]))([np.ones((2, 0), F32), np.ones(0, F32)])[0].shape \
        == (2, 0)
