"""Results written into the following Pad's buffer (torch_ops.padded), the one-pass instance-norm statistics
and large convolutions into pooled buffers: the same numbers as the plain paths."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F

from engine import ModelBuilder, compile
from engine.backends.torch_ops import KernelOptions
from engine.backends.torch_ops.buffers import BufferPool
from engine.backends.torch_ops.norm_pool import instance_norm_nhwc
from engine.backends.torch_ops.padded import PadTarget, pad_in_place

RNG = np.random.default_rng(5)
OPTIONS = KernelOptions(True, BufferPool(1 << 30))


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def nhwc(*shape: int, offset: float = 0.0, spread: float = 1.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * spread + offset).contiguous(memory_format=torch.channels_last)


def placed(x: torch.Tensor, target: PadTarget) -> torch.Tensor:
    """``x`` copied the way a producer writes its result: into ``target``'s buffer."""
    out = target.empty(tuple(x.shape), x, OPTIONS)
    out.copy_(x)
    return out


@pytest.mark.parametrize("margins", [(1, 1, 1, 1), (4, 4, 4, 4), (2, 1, 0, 3)])
@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_pad_in_place_equals_padding(margins, mode) -> None:
    x = nhwc(2, 5, 9, 11)
    target = PadTarget()
    first = placed(x, target)
    assert pad_in_place(first, margins, mode) is None  # not placed yet: the producer is asked for the margins
    assert target.margins == margins
    y = pad_in_place(placed(x, target), margins, mode)
    t, b, left, r = margins
    want = F.pad(x, [left, r, t, b], mode="reflect" if mode == "reflect" else "replicate")
    assert y is not None and torch.equal(y, want)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_a_placed_value_serves_one_pad_and_conflicting_margins_stop_placement() -> None:
    x = nhwc(1, 4, 8, 8)
    target = PadTarget()
    target.ask((1, 1, 1, 1))
    value = placed(x, target)
    assert pad_in_place(value, (1, 1, 1, 1), "reflect") is not None
    assert pad_in_place(value, (1, 1, 1, 1), "reflect") is None  # a second Pad copies: no shared buffers
    assert pad_in_place(value, (2, 2, 2, 2), "reflect") is None
    assert target.refused and target.margins is None
    assert placed(x, target).is_contiguous(memory_format=torch.channels_last)
    assert pad_in_place(nhwc(1, 4, 8, 8), (1, 1, 1, 1), "reflect") is None  # an untagged tensor


def residual_model(size: int = 40):
    """Conv -> InstanceNorm -> reflect Pad -> Conv, + the first Conv's result -> edge Pad -> Conv: a norm
    and an Add each feed a Pad."""
    b = ModelBuilder("residual")
    x = b.array_input("x", (8, size, size))
    one = b.weight("one", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    two = b.weight("two", np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64))
    a = b.node("Conv", [x, b.weight("w0", rand(8, 8, 3, 3) * 0.3)], pads=[1, 1, 1, 1])
    y = b.node("InstanceNormalization", [a, b.weight("s", rand(8) ** 2 + 0.5), b.weight("t", rand(8))])
    y = b.node("Pad", [y, one], mode="reflect")
    y = b.node("Conv", [y, b.weight("w1", rand(8, 8, 3, 3) * 0.3)])
    y = b.node("Add", [y, a])
    y = b.node("Pad", [y, two], mode="edge")
    y = b.node("Conv", [y, b.weight("w2", rand(4, 8, 3, 3) * 0.3)])
    b.array_output(y, name="y")
    return b.build()


@pytest.mark.parametrize("offset", [0.0, 30.0])  # 30: far from zero, the norm's centred path
def test_placed_results_match_numpy_run_after_run(offset) -> None:
    model = residual_model()
    feeds = {"x": rand(2, 8, 40, 40) + offset}
    want = compile(model, "numpy").run(feeds)["y"]
    compiled = compile(model, "torch")
    for _ in range(3):  # the first run asks for the margins, later runs place
        np.testing.assert_allclose(compiled.run(feeds)["y"], want, rtol=1e-5, atol=1e-4)
    targets = [getattr(s.kernel.kernel, "pad_target", None) for s in compiled.executor.steps]
    assert {t.margins for t in targets if t is not None} >= {(1, 1, 1, 1), (2, 1, 1, 2)}  # norm's, Add's


@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (3.0, 1.0), (40.0, 0.5)])
def test_instance_norm_nhwc_one_pass_and_centred_paths_are_exact(offset, spread) -> None:
    """Near zero the statistics take one pass; far from it (mean^2 / var of 9 and 6400) the centred form."""
    x = nhwc(2, 16, 96, 80, offset=offset, spread=spread, seed=3)
    x64 = x.double()
    gen = torch.Generator().manual_seed(4)  # not the global generator: the values must not depend on test order
    scale = torch.rand(2, 16, 1, 1, dtype=torch.float64, generator=gen) + 0.5
    shift = torch.randn(1, 16, 1, 1, dtype=torch.float64, generator=gen)
    var, mean = torch.var_mean(x64, dim=(2, 3), correction=0, keepdim=True)
    want = torch.relu((x64 - mean) / torch.sqrt(var + 1e-5) * scale + shift)
    got = instance_norm_nhwc(x, scale.float(), shift.float(), 1e-5, "Relu", OPTIONS)
    assert got.is_contiguous(memory_format=torch.channels_last)
    # float32 rounding of x itself bounds what any float32 kernel can reach far from zero
    limit = 2e-6 if offset < 10 else 2e-5
    assert float((got.double() - want).abs().max()) < limit
    target = PadTarget()
    target.ask((1, 1, 1, 1))
    inner = instance_norm_nhwc(x, scale.float(), shift.float(), 1e-5, "Relu", OPTIONS, target)
    assert not inner.is_contiguous(memory_format=torch.channels_last)  # the interior of the Pad's buffer
    # the centred sums run over the padded buffer: the same values up to a few float32 roundings
    assert float((inner - got).abs().max()) <= 4 * torch.finfo(torch.float32).eps * float(got.abs().max())


def test_large_convolution_into_the_pool_matches_conv2d() -> None:
    b = ModelBuilder("wide")
    x = b.array_input("x", (4, 512, 512))
    y = b.node("Conv", [x, b.weight("w", rand(32, 4, 3, 3))], pads=[1, 1, 1, 1])  # [1, 32, 512, 512]: 32 MiB
    b.array_output(b.node("Relu", [y]), name="y")
    model = b.build()
    feeds = {"x": rand(1, 4, 512, 512)}
    want = compile(model, "torch", backend_options={"buffer_pool_mb": 0}).run(feeds)["y"]
    compiled = compile(model, "torch")
    for _ in range(2):
        np.testing.assert_allclose(compiled.run(feeds)["y"], want, rtol=1e-6, atol=1e-5)
    conv = next(s.kernel.kernel for s in compiled.executor.steps if s.kernel.op_type == "Conv")
    assert conv._into_pool  # oneDNN took the pooled path
    assert conv.options.pool is not None and conv.options.pool.held_bytes >= 32 << 20
