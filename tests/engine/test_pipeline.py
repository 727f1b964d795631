"""engine.pipeline.run_pipelined and keep_on_device: the CPU runs exercise the same loop the CUDA runs use."""

from __future__ import annotations

import numpy as np
import pytest

from engine import ModelBuilder, compile
from engine.exceptions import EngineError
from engine.pipeline import run_pipelined

RNG = np.random.default_rng(11)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)


def conv_model():
    b = ModelBuilder("pipe")
    x = b.array_input("x", (3, 12, 10))
    y = b.node("Pad", [x, b.weight("p", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], mode="reflect")
    y = b.node("Conv", [y, b.weight("w", W), b.weight("b", B)])
    y = b.node("InstanceNormalization", [y, b.weight("s", np.linspace(0.5, 2, 4, dtype=np.float32)),
                                         b.weight("t", np.linspace(-1, 1, 4, dtype=np.float32))])
    y = b.node("Relu", [y])
    b.array_output(y, name="out", shape=(4, 12, 10))
    return b.build()


def batches(count: int, size: int = 3) -> list[dict[str, np.ndarray]]:
    return [{"x": RNG.random((size, 3, 12, 10), dtype=np.float32)} for _ in range(count)]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_pipelined_results_equal_runs_in_order(backend: str) -> None:
    pytest.importorskip(backend)
    compiled = compile(conv_model(), backend)
    feeds = batches(5)
    got = list(run_pipelined(compiled, iter(feeds)))
    assert len(got) == 5
    for g, f in zip(got, feeds):
        np.testing.assert_allclose(g["out"], compiled.run(f)["out"], rtol=1e-5, atol=1e-5)
        assert isinstance(g["out"], np.ndarray) and g["out"].flags.c_contiguous


def test_reader_errors_surface_at_their_batch_and_early_stop_ends_the_reader() -> None:
    compiled = compile(conv_model(), "numpy")
    feeds = batches(2)

    def source():
        yield from feeds
        raise OSError("photo 3 is truncated")

    it = run_pipelined(compiled, source())
    assert len([next(it), next(it)]) == 2
    with pytest.raises(OSError, match="truncated"):
        next(it)
    endless = run_pipelined(compiled, iter(lambda: feeds[0], None))
    next(endless)
    endless.close()  # the reader thread stops; nothing hangs
    with pytest.raises(EngineError, match="not a mapping"):
        list(run_pipelined(compiled, [[1, 2]]))


def test_keep_on_device_returns_tensors_and_accepts_them() -> None:
    torch = pytest.importorskip("torch")
    compiled = compile(conv_model(), "torch", "cpu")
    feed = batches(1)[0]
    kept = compiled.run(feed, keep_on_device=True)["out"]
    assert isinstance(kept, torch.Tensor) and kept.device.type == "cpu"
    again = compiled.run({"x": torch.from_numpy(feed["x"])}, keep_on_device=True)["out"]
    host = compiled.run({"x": torch.from_numpy(feed["x"])})["out"]
    assert isinstance(host, np.ndarray)
    np.testing.assert_allclose(kept.numpy(), again.numpy(), rtol=1e-6)
    np.testing.assert_allclose(host, compile(conv_model(), "numpy").run(feed)["out"], rtol=1e-4, atol=1e-5)
    with pytest.raises(EngineError, match="device tensor"):
        compile(conv_model(), "numpy").run({"x": torch.from_numpy(feed["x"])})


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_pipelined_on_cuda_equals_numpy(precision: str) -> None:
    torch = pytest.importorskip("torch")
    compiled = compile(conv_model(), "torch", "cuda:0", precision=precision)
    reference = compile(conv_model(), "numpy")
    feeds = batches(6, size=4)
    got = list(run_pipelined(compiled, feeds))
    kept = compiled.run(feeds[0], keep_on_device=True)["out"]
    assert kept.device.type == "cuda"
    tol = 1e-4 if precision == "fp32" else 2e-2
    for g, f in zip(got, feeds):
        assert g["out"].dtype == np.float32
        np.testing.assert_allclose(g["out"], reference.run(f)["out"], atol=tol, rtol=tol)
    torch.cuda.synchronize()


def test_batches_side_by_side_come_back_in_order() -> None:
    """The onnxruntime CUDA path's overlap (two batches in flight), exercised on the CPU."""
    import threading
    import time

    from engine.pipeline import run_side_by_side

    in_flight, most = [0], [0]
    lock = threading.Lock()

    def run(feeds):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.02 * (feeds["i"] % 3))  # out-of-order finishes
        with lock:
            in_flight[0] -= 1
        return {"y": feeds["i"] * 2}

    got = [out["y"] for out in run_side_by_side(run, iter([{"i": i} for i in range(9)]), 2)]
    assert got == [i * 2 for i in range(9)] and most[0] == 2
