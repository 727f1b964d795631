"""CUDA-only checks of the onnxruntime backend (marked ``gpu``; skipped cleanly without onnxruntime-gpu's CUDA
provider and a device). The same code runs on the CPU in test_onnxruntime_backend.py."""

from __future__ import annotations

import numpy as np
import pytest

from engine import compile
from engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from engine.pipeline import run_pipelined
from tests.engine.backends.test_torch_backend import classifier_model, decoder_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not OnnxRuntimeBackend.has_cuda(),
                                 reason="needs onnxruntime-gpu with its CUDA execution provider")]

RNG = np.random.default_rng(23)


@pytest.mark.parametrize("make, feeds", [
    (classifier_model, lambda: {"image": RNG.random((4, 3, 48, 40), dtype=np.float32)}),
    (decoder_model, lambda: {"x": RNG.standard_normal((2, 4, 9, 7)).astype(np.float32)}),
])
def test_cuda_fp32_matches_numpy_and_fp16_is_close(make, feeds) -> None:
    model, x = make(), feeds()
    want = compile(model, "numpy").run(x)
    got = compile(model, "onnxruntime", "cuda:0").run(x)
    half = compile(model, "onnxruntime", "cuda:0", precision="fp16").run(x)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-4)
        assert half[name].dtype == np.float32  # float32 in and out, half precision inside
        np.testing.assert_allclose(half[name], want[name], rtol=2e-2, atol=2e-2)


def test_pipelined_batches_overlap_and_come_back_in_order() -> None:
    compiled = compile(decoder_model(), "onnxruntime", "cuda:0")
    batches = [{"x": RNG.standard_normal((8, 4, 9, 7)).astype(np.float32)} for _ in range(6)]
    for feeds, out in zip(batches, run_pipelined(compiled, iter(batches))):
        np.testing.assert_allclose(out["out"], compiled.run(feeds)["out"], rtol=1e-5, atol=1e-6)


def test_lanes_are_a_cpu_affair() -> None:
    be = compile(classifier_model(), "onnxruntime", "cuda:0").backend_context
    assert len(be.run_layouts(16, 1000)) == 1
