"""predict_batch: one result per item, equal to predict on each, same-shape items stacked into one run."""

from __future__ import annotations

import numpy as np
import pytest

from engine import ModelBuilder, compile
from engine.backends import base
from engine.backends.base import RunLayout
from engine.compiled_model import CompiledModel
from engine.graph import Model
from tests.engine.backend_names import BACKENDS

RNG = np.random.default_rng(3)


def elementwise_model() -> Model:
    """relu(x * gain + offset) * style_scale: a flexible image-like input plus an unbatched style input."""
    b = ModelBuilder("elementwise")
    x = b.array_input("x", (3, 4, 4), ranges=[(3, 3), (1, 32), (1, 32)])
    style = b.array_input("style", (1,), batched=False, default=np.array([1.0], np.float32))
    gain = b.weight("gain", RNG.standard_normal((3, 1, 1)).astype(np.float32))
    offset = b.weight("offset", RNG.standard_normal((3, 1, 1)).astype(np.float32))
    y = b.node("Relu", [b.node("Add", [b.node("Mul", [x, gain]), offset])])
    b.array_output(b.node("Mul", [y, style]), name="y")
    b.array_output(b.node("Sub", [x, offset]), name="centred")
    return b.build()


def conv_model() -> Model:
    """Conv -> Relu -> Conv + residual Add, the shape of a style network's residual block."""
    b = ModelBuilder("residual")
    x = b.array_input("x", (4, 10, 10), ranges=[(4, 4), (3, 40), (3, 40)])
    w1 = b.weight("w1", RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3)
    w2 = b.weight("w2", RNG.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3)
    bias = b.weight("bias", RNG.standard_normal(4).astype(np.float32))
    h = b.node("Relu", [b.node("Conv", [x, w1, bias], pads=[1, 1, 1, 1])])
    h = b.node("Conv", [h, w2], pads=[1, 1, 1, 1])
    b.array_output(b.node("Add", [h, x]), name="y")
    return b.build()


def assert_same_results(compiled: CompiledModel, items: list[dict], exact: bool) -> None:
    batched = compiled.predict_batch(items)
    assert len(batched) == len(items)
    for item, got in zip(items, batched):
        want = compiled.predict(item)
        assert set(got) == set(want)
        for name in want:
            assert got[name].shape == want[name].shape
            if exact:
                np.testing.assert_array_equal(got[name], want[name])
            else:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_elementwise_batch_equals_a_predict_loop_exactly(backend: str) -> None:
    compiled = compile(elementwise_model(), backend)
    items = [{"x": RNG.standard_normal((3, 4, 4)).astype(np.float32)} for _ in range(5)]
    items += [{"x": RNG.standard_normal((3, 7, 5)).astype(np.float32)} for _ in range(2)]
    items += [{"x": RNG.standard_normal((3, 4, 4)).astype(np.float32), "style": np.array([2.5], np.float32)}]
    assert_same_results(compiled, items, exact=True)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "onnxruntime"])  # its layouts are tuned
def test_same_shape_items_are_stacked_into_one_run_and_others_run_apart(backend: str) -> None:
    compiled = compile(elementwise_model(), backend)
    items = [{"x": RNG.standard_normal((3, 4, 4)).astype(np.float32)} for _ in range(4)]
    items.append({"x": RNG.standard_normal((3, 6, 6)).astype(np.float32)})
    items.append({"x": RNG.standard_normal((3, 4, 4)).astype(np.float32), "style": np.array([3.0], np.float32)})
    compiled.predict_batch(items)
    batch_sizes = sorted((sig[0][1][0], sig[0][1][2:]) for sig in compiled.executor.plans)
    # four 4x4 items with the default style in one run; the 6x6 item and the other style on their own
    assert batch_sizes == [(1, (4, 4)), (1, (6, 6)), (4, (4, 4))]
    assert compiled.executor.plans_recorded == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input_values_decide_grouping_and_results(backend: str) -> None:
    compiled = compile(elementwise_model(), backend)
    x = RNG.standard_normal((3, 4, 4)).astype(np.float32)
    results = compiled.predict_batch([{"x": x, "style": np.array([s], np.float32)} for s in (0.0, 1.0, 2.0)])
    np.testing.assert_array_equal(results[0]["y"], np.zeros_like(results[0]["y"]))
    np.testing.assert_allclose(results[2]["y"], 2 * results[1]["y"])
    np.testing.assert_array_equal(results[0]["centred"], results[2]["centred"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_batch_equals_a_predict_loop(backend: str) -> None:
    compiled = compile(conv_model(), backend)
    items = [{"x": RNG.standard_normal((4, 10, 10)).astype(np.float32)} for _ in range(6)]
    items += [{"x": RNG.standard_normal((4, 13, 9)).astype(np.float32)} for _ in range(3)]
    assert_same_results(compiled, items, exact=False)


@pytest.mark.parametrize("max_batch", [1, 2, 4])
def test_max_batch_splits_a_group_without_changing_results(max_batch: int) -> None:
    compiled = compile(conv_model(), "numpy")
    items = [{"x": RNG.standard_normal((4, 10, 10)).astype(np.float32)} for _ in range(5)]
    whole = compiled.predict_batch(items)
    split = compiled.predict_batch(items, max_batch=max_batch)
    for a, b in zip(whole, split):
        np.testing.assert_allclose(a["y"], b["y"], rtol=1e-5, atol=1e-5)
    assert max(sig[0][1][0] for sig in compiled.executor.plans) == 5


def test_on_a_cpu_large_items_run_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stacked batch whose intermediates outgrow the caches runs slower than a loop: runs stay under
    CPU_RUN_ELEMENTS (here three 4x40x40 items), results unchanged; small items still share one run."""
    monkeypatch.setattr(base, "CPU_RUN_ELEMENTS", 3 * 4 * 40 * 40)
    compiled = compile(conv_model(), "numpy")
    items = [{"x": RNG.standard_normal((4, 40, 40)).astype(np.float32)} for _ in range(7)]
    items += [{"x": RNG.standard_normal((4, 10, 10)).astype(np.float32)} for _ in range(6)]
    assert_same_results(compiled, items, exact=False)
    stacked = sorted((sig[0][1][0], sig[0][1][2:]) for sig in compiled.executor.plans)
    assert stacked == [(1, (10, 10)), (1, (40, 40)), (3, (40, 40)), (6, (10, 10))]  # (1, ...) from predict


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_are_independent_copies(backend: str) -> None:
    compiled = compile(elementwise_model(), backend)
    items = [{"x": RNG.standard_normal((3, 4, 4)).astype(np.float32)} for _ in range(2)]
    first, second = compiled.predict_batch(items)
    keep = second["y"].copy()
    first["y"][...] = 123.0
    np.testing.assert_array_equal(second["y"], keep)
    assert first["y"].flags.writeable and first["y"].base is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_gives_no_results(backend: str) -> None:
    assert compile(elementwise_model(), backend).predict_batch([]) == []


class FixedLayouts:
    """A backend stand-in offering given layouts (the real one's kernels stay)."""

    def __init__(self, real, layouts):
        self.real = real
        self.layouts = layouts

    def run_layouts(self, items, item_elements):
        return self.layouts if items > 1 else [RunLayout()]


@pytest.mark.parametrize("layout", [RunLayout(1, None), RunLayout(1, 1), RunLayout(2, None), RunLayout(2, 1),
                                    RunLayout(3, 2)])
def test_every_run_layout_gives_the_same_results(layout: RunLayout) -> None:
    """Lanes side by side and runs of any size only change how the group is cut, never the results."""
    compiled = compile(conv_model(), "onnxruntime")
    items = [{"x": RNG.standard_normal((4, 10, 10)).astype(np.float32)} for _ in range(7)]
    reference = [compiled.predict(item) for item in items]
    compiled.backend_context = FixedLayouts(compiled.backend_context, [layout])
    got = compiled.predict_batch(items)
    for a, b in zip(reference, got):
        np.testing.assert_allclose(b["y"], a["y"], rtol=1e-5, atol=1e-5)
    runs = sorted(sig[0][1][0] for sig in compiled.executor.plans)
    assert max(runs) == (layout.per_run or -(-7 // layout.lanes))


def test_lanes_run_side_by_side_each_on_its_share_of_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from engine.ops import threads

    monkeypatch.setattr(threads, "_override", 4)
    compiled = compile(conv_model(), "onnxruntime")
    compiled.backend_context = FixedLayouts(compiled.backend_context, [RunLayout(2, None)])
    seen: list[tuple[str, int]] = []
    real_run = compiled.run

    def spy(feeds, keep_on_device=False):
        seen.append((threading.current_thread().name, threads.num_threads()))
        return real_run(feeds, keep_on_device)

    monkeypatch.setattr(compiled, "run", spy)
    compiled.predict_batch([{"x": RNG.standard_normal((4, 10, 10)).astype(np.float32)} for _ in range(6)])
    assert len(seen) == 2 and len({name for name, _ in seen}) == 2  # two threads
    assert [count for _, count in seen] == [2, 2]  # 4 threads shared by 2 lanes
    assert threads.num_threads() == 4  # the budget ends with the lanes
