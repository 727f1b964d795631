"""compile(): the on-disk compiled-model cache, execution plans and their bound, input checks."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from engine import ModelBuilder, compiler
from engine import compile as engine_compile
from engine.compiled_cache import HEADER, cache_key, default_cache_dir, entry_path
from engine.exceptions import InputError
from engine.format import digest
from engine.graph import Model

RNG = np.random.default_rng(11)

# These tests look inside corral's own pipeline: the numpy backend, the reference, runs every pass.
compile = partial(engine_compile, backend="numpy")


def conv_model(sizes: list[tuple[int, int]] | None = None) -> Model:
    """conv -> relu -> add(residual via a 1x1 conv) -> mul(constant), on a flexible image-sized array."""
    b = ModelBuilder("convnet", version="1")
    if sizes:
        x = b.array_input("x", (3, *sizes[0]), shapes=[(3, *s) for s in sizes])
    else:
        x = b.array_input("x", (3, 8, 8), ranges=[(3, 3), (4, 64), (4, 64)])
    h = b.node("Relu", [b.node("Conv", [x, b.weight("w1", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32))],
                                pads=[1, 1, 1, 1])])
    skip = b.node("Conv", [x, b.weight("w2", RNG.standard_normal((4, 3, 1, 1)).astype(np.float32))])
    y = b.node("Mul", [b.node("Add", [h, skip]), b.weight("k", np.float32(0.5) * np.ones((4, 1, 1), np.float32))])
    b.array_output(y, name="y")
    return b.build()


class CountingOptimize:
    """Wraps the real optimizer to count how often compile() runs the passes."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = compiler.optimize

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingOptimize:
    spy = CountingOptimize()
    monkeypatch.setattr(compiler, "optimize", spy)
    return spy


def test_compiled_model_round_trips_through_the_cache_without_recompiling(tmp_path: Path,
                                                                          counting: CountingOptimize) -> None:
    model = conv_model(sizes=[(8, 8), (12, 10)])
    first = compile(model, cache_dir=tmp_path)
    assert not first.from_cache and counting.calls == 1
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and files[0] == entry_path(tmp_path, digest(model), "numpy", "cpu")

    second = compile(model, cache_dir=tmp_path)
    assert second.from_cache and counting.calls == 1  # loaded, not compiled
    assert second.stats["load_seconds"] >= 0 and "compile_seconds" in second.stats
    # the plans recorded at compile time came back too: nothing to plan on first use
    assert set(second.executor.plans) == set(first.executor.plans) and len(second.executor.plans) == 2
    assert [n.op_type for n in second.executor.nodes] == [n.op_type for n in first.executor.nodes]
    x = RNG.standard_normal((2, 3, 12, 10)).astype(np.float32)
    np.testing.assert_array_equal(second.run({"x": x})["y"], first.run({"x": x})["y"])
    assert second.description.inputs[0].shape.enumerated == model.description.inputs[0].shape.enumerated


def test_corrupt_cache_entry_is_logged_and_rebuilt(tmp_path: Path, counting: CountingOptimize,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    model = conv_model()
    compile(model, cache_dir=tmp_path)
    path = entry_path(tmp_path, digest(model), "numpy", "cpu")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="engine.compiler"):
        rebuilt = compile(model, cache_dir=tmp_path)
    assert not rebuilt.from_cache and counting.calls == 2
    assert any("unreadable" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    again = compile(model, cache_dir=tmp_path)  # the rebuilt entry is good
    assert again.from_cache and counting.calls == 2


def _rewrite_header(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    with np.load(path, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
    header = json.loads(bytes(stored[HEADER]).decode())
    edit(header)
    stored[HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **stored)


@pytest.mark.parametrize("edit, reason", [
    (lambda h: h.update(digest="0" * 64), "stale"),
    (lambda h: h.update(engine_version="0.0.0-old"), "stale"),
    (lambda h: h["nodes"][0].update(inputs=["nowhere"]), "corrupt"),
    (lambda h: h["nodes"][0].update(op_type="os.system"), "corrupt"),
    (lambda h: h["description"]["inputs"][0].update(shape="oops"), "corrupt"),
])
def test_tampered_or_stale_entries_are_rejected_and_rebuilt(tmp_path: Path, counting: CountingOptimize,
                                                             caplog: pytest.LogCaptureFixture, edit, reason) -> None:  # type: ignore[no-untyped-def]
    model = conv_model()
    reference = compile(model, cache_dir=tmp_path)
    path = entry_path(tmp_path, digest(model), "numpy", "cpu")
    _rewrite_header(path, edit)
    with caplog.at_level(logging.WARNING, logger="engine.compiler"):
        rebuilt = compile(model, cache_dir=tmp_path)
    assert not rebuilt.from_cache and counting.calls == 2
    assert any(reason in r.getMessage() for r in caplog.records)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.run({"x": x})["y"], reference.run({"x": x})["y"])


PICKLE_CALLS: list[str] = []


def _record_unpickling() -> str:
    PICKLE_CALLS.append("ran")
    return "payload"


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_record_unpickling, ())


def test_a_pickle_in_the_cache_never_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = conv_model()
    compile(model, cache_dir=tmp_path)
    path = entry_path(tmp_path, digest(model), "numpy", "cpu")
    with np.load(path, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
    stored["const/0"] = np.array([_Payload()], dtype=object)
    with open(path, "wb") as fh:
        np.savez(fh, **stored)  # numpy pickles object arrays
    with caplog.at_level(logging.WARNING, logger="engine.compiler"):
        rebuilt = compile(model, cache_dir=tmp_path)
    assert PICKLE_CALLS == [] and not rebuilt.from_cache
    assert any(str(path) in r.getMessage() for r in caplog.records)


def test_cache_key_covers_backend_device_options_and_package() -> None:
    keys = {cache_key("a" * 64, "numpy", "cpu"), cache_key("b" * 64, "numpy", "cpu"),
            cache_key("a" * 64, "torch", "cpu"), cache_key("a" * 64, "numpy", "cuda:0"),
            cache_key("a" * 64, "numpy", "cpu", "fuse_norm")}
    assert len(keys) == 5


def test_skipped_passes_get_their_own_cache_entry(tmp_path: Path) -> None:
    model = conv_model()
    compile(model, cache_dir=tmp_path)
    unfused = compile(model, cache_dir=tmp_path, skip_passes=["fuse_activations"])
    assert not unfused.from_cache and "Relu" in [n.op_type for n in unfused.executor.nodes]
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_unwritable_cache_dir_still_compiles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="engine.compiler"):
        compiled = compile(conv_model(), cache_dir=blocker / "cache")
    assert not compiled.from_cache
    assert any("cannot write" in r.getMessage() for r in caplog.records)


def test_default_cache_dir_is_under_the_given_home(tmp_path: Path) -> None:
    assert default_cache_dir(tmp_path) == tmp_path / ".cache" / "corral" / "compiled"


def test_enumerated_shapes_are_planned_at_compile_time_and_ranges_on_first_use() -> None:
    enumerated = compile(conv_model(sizes=[(8, 8), (16, 12), (6, 6)]))
    assert {sig[0][1] for sig in enumerated.executor.plans} == {(1, 3, 8, 8), (1, 3, 16, 12), (1, 3, 6, 6)}
    assert enumerated.stats["plans_ahead"] == 3

    ranged = compile(conv_model())
    assert len(ranged.executor.plans) == 0
    ranged.predict({"x": RNG.standard_normal((3, 20, 9)).astype(np.float32)})
    assert [sig[0][1] for sig in ranged.executor.plans] == [(1, 3, 20, 9)]


def test_plan_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    compiled = compile(conv_model(), max_plans=2)
    executor = compiled.executor
    shapes = [(3, 8, 8), (3, 10, 8), (3, 12, 8)]
    for shape in shapes:
        compiled.predict({"x": np.zeros(shape, np.float32)})
    assert len(executor.plans) == 2 and executor.plans_recorded == 3
    assert [sig[0][1][1:] for sig in executor.plans] == shapes[1:]
    compiled.predict({"x": np.zeros(shapes[1], np.float32)})  # a hit: refreshed, not re-recorded
    assert executor.plans_recorded == 3
    compiled.predict({"x": np.zeros(shapes[0], np.float32)})  # evicts shapes[2], the least recently used
    assert [sig[0][1][1:] for sig in executor.plans] == [shapes[1], shapes[0]]


def test_planned_runs_reuse_dying_buffers_and_match_the_recording_run() -> None:
    compiled = compile(conv_model())
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    x_before = x.copy()
    recorded = compiled.run({"x": x})["y"]
    plan = next(iter(compiled.executor.plans.values()))
    in_place_ops = {compiled.executor.nodes[i].op_type for i in plan.inplace}
    assert in_place_ops == {"Add", "Mul"}
    assert plan.shapes["y"] == (2, 4, 8, 8)
    planned = compiled.run({"x": x})["y"]
    np.testing.assert_array_equal(planned, recorded)
    np.testing.assert_array_equal(x, x_before)  # the caller's feed is never a scratch buffer
    np.testing.assert_array_equal(compiled.executor.constants["k"], np.full((4, 1, 1), 0.5, np.float32))


def test_in_place_never_writes_into_a_feed_or_a_weight() -> None:
    b = ModelBuilder("feeds")
    x = b.array_input("x", (4,))
    w = b.weight("w", np.arange(4, dtype=np.float32))
    y = b.node("Relu", [b.node("Add", [b.node("Identity", [x]), b.node("Identity", [w])])])
    b.array_output(y, name="y")
    model = b.build()
    compiled = compile(model)
    x_val = np.array([[-3, 1, -1, 2]], np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(compiled.run({"x": x_val})["y"], [[0, 2, 1, 5]])
    np.testing.assert_array_equal(x_val, [[-3, 1, -1, 2]])
    np.testing.assert_array_equal(model.graph.initializers["w"], [0, 1, 2, 3])
    for weight in compiled.executor.constants.values():
        assert not weight.flags.writeable


def test_shapes_outside_the_declared_ranges_are_a_clear_input_error() -> None:
    compiled = compile(conv_model())
    with pytest.raises(InputError, match=r"input 'x': shape \[3, 100, 8\] is not allowed"):
        compiled.predict({"x": np.zeros((3, 100, 8), np.float32)})
    enumerated = compile(conv_model(sizes=[(8, 8)]))
    with pytest.raises(InputError, match="one of 3×8×8"):
        enumerated.predict({"x": np.zeros((3, 9, 8), np.float32)})


def test_style_network_compiles_to_fused_kernels_and_matches_onnxruntime(multistyle26_onnx: Path,
                                                                          tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from engine.importers.onnx import OnnxImportOptions, import_onnx

    model = import_onnx(multistyle26_onnx, OnnxImportOptions(image_inputs=["image"], image_outputs=["stylized"]))
    compiled = compile(model, cache_dir=tmp_path)
    ops = [n.op_type for n in compiled.executor.nodes]
    # every conditional instance norm became one kernel; every Relu/Sigmoid joined its producer
    assert ops.count("FusedMeanVarianceNorm") == 18 and "Relu" not in ops and "Sigmoid" not in ops
    assert compiled.stats["weights_prepacked"] == ops.count("Conv") == 18
    reloaded = compile(model, cache_dir=tmp_path)
    assert reloaded.from_cache
    session = ort.InferenceSession(str(multistyle26_onnx), providers=["CPUExecutionProvider"])
    image = RNG.random((1, 3, 72, 56), dtype=np.float32)
    for style_index in (0, 7, 25):
        style = np.zeros(26, np.float32)
        style[style_index] = 1.0
        want = session.run(None, {"image": image, "style_weights": style})[0]
        got = reloaded.run({"image": image, "style_weights": style})["stylized"]
        np.testing.assert_allclose(got, want, atol=1e-4)
