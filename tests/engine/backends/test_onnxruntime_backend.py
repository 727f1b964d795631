"""The onnxruntime backend against the numpy reference: segments, custom layers between them, refusals that
fall back to numpy, the optimized model in the compiled cache, options and devices.

ONNX's node conformance cases run through it in tests/engine/test_onnx_conformance.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from engine import ModelBuilder, compile
from engine.backends import backend_class, create_backend, resolve_backend
from engine.backends.onnxruntime_backend import SEGMENT_OP, OnnxRuntimeBackend
from engine.backends.onnxruntime_session import SegmentKernel
from engine.compiled_cache import read_entry
from engine.custom import CustomLayer, register_layer, unregister
from engine.exceptions import BackendError
from engine.format import digest
from engine.ops import threads
from tests.engine.backends.test_torch_backend import classifier_model, decoder_model

RNG = np.random.default_rng(17)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def segments(compiled) -> list[SegmentKernel]:
    return [s.kernel for s in compiled.executor.steps if isinstance(s.kernel, SegmentKernel)]


@pytest.mark.parametrize("make, feeds", [
    (classifier_model, lambda: {"image": RNG.random((2, 3, 48, 40), dtype=np.float32)}),
    (decoder_model, lambda: {"x": rand(3, 4, 9, 7)}),
])
def test_builder_models_match_numpy_in_one_session(make, feeds) -> None:
    model, x = make(), feeds()
    compiled = compile(model, "onnxruntime")
    assert [n.op_type for n in compiled.executor.nodes] == [SEGMENT_OP]  # the whole graph, one session
    want = compile(model, "numpy").run(x)
    got = compiled.run(x)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
    assert compiled.executor.constants == {}  # the weights live in the session only
    assert compiled.nbytes > 0


def test_the_passes_onnxruntime_fuses_its_own_way_are_left_to_it(tmp_path: Path) -> None:
    """BatchNormalization is folded by corral, the activation and norm fusions (ops only corral's kernels know)
    are not: the exported segment holds standard ONNX ops only."""
    import onnx

    compiled = compile(classifier_model(), "onnxruntime")
    [kernel] = segments(compiled)
    ops = {n.op_type for n in onnx.load_from_string(kernel.model).graph.node}
    assert "BatchNormalization" not in ops and "Relu" in ops and "Conv" in ops
    assert compiled.stats["fold_batchnorm"] == 1 and "fuse_activations" not in compiled.stats


class Triple(CustomLayer):
    """y = 3 x, on the host."""

    def evaluate(self, inputs):
        return [np.asarray(inputs[0]) * 3]

    def output_shapes(self, input_shapes):
        return [input_shapes[0]]


@pytest.fixture
def triple():
    register_layer(Triple)
    yield
    unregister("Triple")


def layer_model():
    b = ModelBuilder("layered")
    x = b.array_input("x", (3, 6, 6))
    y = b.node("Conv", [x, b.weight("w", rand(4, 3, 3, 3))], pads=[1, 1, 1, 1])
    y = b.custom_layer("Triple", [b.node("Relu", [y])])
    y = b.node("Conv", [y, b.weight("w2", rand(2, 4, 1, 1))])
    b.array_output(b.node("Sigmoid", [y]), name="y")
    return b.build()


def test_a_custom_layer_runs_between_two_sessions(triple) -> None:
    model = layer_model()
    compiled = compile(model, "onnxruntime")
    assert [n.op_type for n in compiled.executor.nodes] == [SEGMENT_OP, "Triple", SEGMENT_OP]
    x = {"x": rand(2, 3, 6, 6)}
    np.testing.assert_allclose(compiled.run(x)["y"], compile(model, "numpy").run(x)["y"], rtol=1e-5, atol=1e-6)
    assert not compiled.backend_context.fallbacks
    items = [{"x": rand(3, 6, 6)} for _ in range(3)]
    for item, got in zip(items, compiled.predict_batch(items)):
        np.testing.assert_allclose(got["y"], compiled.predict(item)["y"], rtol=1e-5, atol=1e-6)


def dilated_same_model():
    """A dilated convolution with auto_pad SAME: onnxruntime 1.32 refuses it at run time."""
    b = ModelBuilder("dilated")
    x = b.array_input("x", (3, 9, 9))
    y = b.node("Conv", [x, b.weight("w", rand(4, 3, 3, 3))], dilations=[2, 2], auto_pad="SAME_UPPER")
    b.array_output(b.node("Relu", [y]), name="y")
    return b.build()


def test_a_segment_onnxruntime_cannot_run_runs_on_numpy_with_one_log_line(caplog) -> None:
    model = dilated_same_model()
    compiled = compile(model, "onnxruntime")
    reference = compile(model, "numpy")
    with caplog.at_level(logging.WARNING, logger="engine.backends.onnxruntime_session"):
        for _ in range(3):
            x = {"x": rand(1, 3, 9, 9)}
            np.testing.assert_allclose(compiled.run(x)["y"], reference.run(x)["y"], rtol=1e-5, atol=1e-6)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "segment 0" in lines[0] and "Dilation not supported" in lines[0]
    assert "numpy kernels" in lines[0]
    assert compiled.backend_context.fallbacks


def test_a_bad_input_still_fails_naming_the_node() -> None:
    compiled = compile(dilated_same_model(), "onnxruntime")
    with pytest.raises(Exception, match="Conv node"):
        compiled.run({"x": rand(1, 5, 9, 9)})  # 5 channels into a 3-channel convolution


def test_the_compiled_cache_keeps_onnxruntimes_optimized_model(tmp_path: Path) -> None:
    model = classifier_model()
    x = {"image": RNG.random((1, 3, 32, 32), dtype=np.float32)}
    first = compile(model, "onnxruntime", cache_dir=tmp_path)
    [path] = tmp_path.glob("*.npz")
    entry = read_entry(path, digest(model), "onnxruntime", "cpu", _options(first))
    assert list(entry.artifacts) == ["segment0"] and len(entry.artifacts["segment0"]) > 1000
    second = compile(model, "onnxruntime", cache_dir=tmp_path)
    assert second.from_cache
    [kernel] = segments(second)
    assert kernel.optimized == entry.artifacts["segment0"]  # sessions load it, optimizations off
    np.testing.assert_allclose(second.run(x)["probs"], first.run(x)["probs"], rtol=1e-6, atol=1e-7)


def test_a_damaged_optimized_model_is_rebuilt(tmp_path: Path, caplog) -> None:
    model = classifier_model()
    first = compile(model, "onnxruntime", cache_dir=tmp_path)
    [path] = tmp_path.glob("*.npz")
    entry = read_entry(path, digest(model), "onnxruntime", "cpu", _options(first))
    from engine.compiled_cache import write_entry

    entry.artifacts["segment0"] = b"not an onnx model"
    write_entry(path, entry)
    with caplog.at_level(logging.WARNING):
        again = compile(model, "onnxruntime", cache_dir=tmp_path)
    x = {"image": RNG.random((1, 3, 32, 32), dtype=np.float32)}
    np.testing.assert_allclose(again.run(x)["probs"], first.run(x)["probs"], rtol=1e-6, atol=1e-7)
    assert any("rejected the cached optimized model" in r.getMessage() for r in caplog.records)


def _options(compiled) -> str:
    be = compiled.backend_context
    return ",".join(sorted(be.SKIP_PASSES)) + f";{be.cache_tag()}"


def test_sessions_follow_the_engine_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile(decoder_model(), "onnxruntime")
    [kernel] = segments(compiled)
    x = {"x": rand(1, 4, 9, 7)}
    monkeypatch.setattr(threads, "_override", 1)
    compiled.run(x)
    monkeypatch.setattr(threads, "_override", 3)
    compiled.run(x)
    assert {1, 3} <= set(kernel.pool._idle)  # one session per thread count, kept for the next run


def test_options_devices_and_precision_are_checked() -> None:
    with pytest.raises(BackendError, match="no option 'channels_last'"):
        compile(classifier_model(), "onnxruntime", backend_options={"channels_last": True})
    with pytest.raises(BackendError, match="expected int"):
        compile(classifier_model(), "onnxruntime", backend_options={"lanes": "2"})
    assert create_backend("onnxruntime", "cpu", options={"lanes": 1}).lane_count() == 1
    with pytest.raises(BackendError, match="fp16 needs a CUDA device"):
        compile(classifier_model(), "onnxruntime", precision="fp16")
    if not OnnxRuntimeBackend.has_cuda():
        with pytest.raises(BackendError, match="no CUDA execution provider"):
            compile(classifier_model(), "onnxruntime", "cuda:0")
    assert backend_class("onnxruntime") is OnnxRuntimeBackend


def test_auto_is_onnxruntime_on_the_cpu() -> None:
    assert resolve_backend("auto", "cpu") == "onnxruntime"
    assert compile(classifier_model()).backend == "onnxruntime"


def test_run_layouts_offer_lanes_only_for_groups_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    be = create_backend("onnxruntime", "cpu")
    monkeypatch.setattr(threads, "_override", 2)
    assert len(be.run_layouts(1, 100)) == 1
    assert [(lay.lanes, lay.per_run) for lay in be.run_layouts(8, 100)] == [(2, 1), (2, 8), (1, 1), (1, 8)]
    # stacked runs hold at most what fits the caches: four 3x256x256 items
    assert [(lay.lanes, lay.per_run) for lay in be.run_layouts(8, 3 * 256 * 256)] == [(2, 1), (2, 4), (1, 1), (1, 4)]
    monkeypatch.setattr(threads, "_override", 1)
    assert {lay.lanes for lay in be.run_layouts(8, 100)} == {1}


def test_zero_d_values_stay_zero_d() -> None:
    """x[:, 0] (a scalar Gather index) then MatMul: [N, T, C] -> [N, C] -> [N, K], as onnxruntime gives."""
    b = ModelBuilder("class-token")
    x = b.array_input("x", (5, 3))
    token = b.node("Gather", [x, b.weight("zero", np.array(0, np.int64))], axis=1)
    b.array_output(b.node("MatMul", [token, b.weight("w", rand(3, 4))]), name="y")
    model = b.build()
    feeds = {"x": rand(2, 5, 3)}
    want = feeds["x"][:, 0] @ model.graph.initializers["w"]
    for backend in ("numpy", "onnxruntime"):
        got = compile(model, backend).run(feeds)["y"]
        assert got.shape == (2, 4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_run_tuners_decisions_are_kept_beside_the_compiled_cache_entry(tmp_path: Path) -> None:
    from engine.compiler import tuning_path

    model = decoder_model()
    compiled = compile(model, "onnxruntime", cache_dir=tmp_path)
    items = [{"x": rand(4, 9, 7)} for _ in range(4)]
    for _ in range(3 * len(compiled.backend_context.run_layouts(4, 4 * 9 * 7))):
        compiled.predict_batch(items)
    [kept] = compiled.tuner.chosen().values()
    [entry] = tmp_path.glob("*.npz")
    assert tuning_path(entry).is_file()
    again = compile(model, "onnxruntime", cache_dir=tmp_path)
    assert again.from_cache and list(again.tuner.chosen().values()) == [kept]
