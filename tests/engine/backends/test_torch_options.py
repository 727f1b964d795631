"""The torch backend's compile options (channels_last, buffer_pool_mb), its reused CPU buffers and its
channels-last instance norm."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine import ModelBuilder, compile
from engine.backends.torch_backend import TorchBackend
from engine.backends.torch_ops import KernelOptions
from engine.backends.torch_ops.buffers import BufferPool
from engine.backends.torch_ops.norm_pool import instance_norm_nhwc
from engine.exceptions import BackendError

RNG = np.random.default_rng(11)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def style_block_model(size: int = 48):
    """reflect Pad -> Conv -> InstanceNorm -> Relu, twice, with a residual Add: the style network's shape."""
    b = ModelBuilder("style_block")
    x = b.array_input("x", (8, size, size))
    pads = b.weight("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    y = x
    for i in range(2):
        y = b.node("Pad", [y, pads], mode="reflect")
        y = b.node("Conv", [y, b.weight(f"w{i}", rand(8, 8, 3, 3) * 0.3)])
        y = b.node("InstanceNormalization", [y, b.weight(f"s{i}", rand(8) ** 2 + 0.5), b.weight(f"t{i}", rand(8))])
        y = b.node("Relu", [y])
    y = b.node("Add", [y, x])
    b.array_output(y, name="y")
    return b.build()


@pytest.mark.parametrize("options", [{}, {"channels_last": True}, {"channels_last": False},
                                     {"channels_last": True, "buffer_pool_mb": 0}])
def test_options_match_numpy(options) -> None:
    model = style_block_model()
    feeds = {"x": rand(2, 8, 48, 48) * 3 + 2}  # far from zero: the statistics must not lose precision
    want = compile(model, "numpy").run(feeds)["y"]
    compiled = compile(model, "torch", backend_options=options)
    for _ in range(2):  # the second run reuses the pooled buffers
        np.testing.assert_allclose(compiled.run(feeds)["y"], want, rtol=1e-5, atol=2e-5)


def test_channels_last_default_is_on_for_the_cpu_and_reaches_the_kernels() -> None:
    assert TorchBackend("cpu").channels_last
    assert not TorchBackend.create("cpu", channels_last=False).kernel_options.channels_last
    assert TorchBackend.create("cpu", buffer_pool_mb=0).kernel_options.pool is None


def test_unknown_or_mistyped_options_are_refused() -> None:
    model = style_block_model(8)
    with pytest.raises(BackendError, match="no option 'channel_last'"):
        compile(model, "torch", backend_options={"channel_last": True})
    with pytest.raises(BackendError, match="expected bool"):
        compile(model, "torch", backend_options={"channels_last": "yes"})
    with pytest.raises(BackendError, match="takes no backend options"):
        compile(model, "numpy", backend_options={"channels_last": True})


def test_options_are_part_of_the_compiled_cache_key(tmp_path) -> None:
    model = style_block_model(8)
    first = compile(model, "torch", cache_dir=tmp_path, backend_options={"channels_last": False})
    other = compile(model, "torch", cache_dir=tmp_path, backend_options={"channels_last": True})
    again = compile(model, "torch", cache_dir=tmp_path, backend_options={"channels_last": False})
    assert not first.from_cache and not other.from_cache and again.from_cache


def test_outputs_kept_on_device_are_not_overwritten_by_the_next_run() -> None:
    model = style_block_model(192)  # large enough for pooled buffers
    compiled = compile(model, "torch")
    a, b = rand(1, 8, 192, 192), rand(1, 8, 192, 192)
    first = compiled.run({"x": a}, keep_on_device=True)["y"]
    kept = first.clone()
    compiled.run({"x": b}, keep_on_device=True)
    assert torch.equal(first, kept)


def test_pool_reuses_only_unreferenced_buffers() -> None:
    pool = BufferPool(64 << 20)
    shape = (1, 8, 256, 256)  # 2 MiB
    a = pool.empty(shape, torch.float32, torch.channels_last)
    assert a.is_contiguous(memory_format=torch.channels_last)
    ptr = a.data_ptr()
    view = a[:, :4]
    del a
    b = pool.empty(shape, torch.float32, torch.channels_last)
    assert b.data_ptr() != ptr  # a view of the first buffer is still alive
    del view, b
    c = pool.empty(shape, torch.float32, torch.channels_last)
    assert c.data_ptr() == ptr
    array = c.numpy()
    del c
    assert pool.empty(shape, torch.float32, torch.channels_last).data_ptr() != ptr  # the numpy array holds it
    del array


def test_pool_stays_within_its_budget() -> None:
    pool = BufferPool(5 << 20)
    kept = [pool.empty((1 << 20,), torch.float32) for _ in range(3)]  # 4 MiB each: only the first is pooled
    assert pool.held_bytes == 4 << 20
    del kept
    pool.empty((1 << 19,), torch.float32)  # another shape: the free 4 MiB buffer is evicted to make room
    assert pool.held_bytes == 2 << 20


def test_instance_norm_nhwc_is_exact_far_from_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 16, 96, 80, generator=gen) * 0.5 + 40.0).contiguous(memory_format=torch.channels_last)
    x64 = x.double()  # the reference sees the same float32 input
    scale = torch.rand(2, 16, 1, 1, dtype=torch.float64, generator=gen) + 0.5
    shift = torch.randn(1, 16, 1, 1, dtype=torch.float64, generator=gen)
    var, mean = torch.var_mean(x64, dim=(2, 3), correction=0, keepdim=True)
    want = torch.relu((x64 - mean) / torch.sqrt(var + 1e-5) * scale + shift)
    got = instance_norm_nhwc(x, scale.float(), shift.float(), 1e-5, "Relu", KernelOptions(True, BufferPool(1 << 30)))
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert float((got.double() - want).abs().max()) < 2e-5
