"""CUDA-only checks of the torch backend (marked ``gpu``: skipped cleanly where torch sees no CUDA device).

The same code paths run on the CPU in test_torch_backend.py, test_pipeline.py
and the torch column of test_onnx_conformance.py.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine import compile
from engine.importers.onnx import OnnxImportOptions, import_onnx

pytestmark = pytest.mark.gpu

# One conformance case per op family, run on cuda:0 (the full suite runs on the CPU).
CONFORMANCE_SUBSET = ["test_conv_with_strides_padding", "test_convtranspose", "test_instancenorm_example",
                      "test_batchnorm_example", "test_maxpool_2d_pads", "test_averagepool_2d_pads",
                      "test_resize_upsample_scales_nearest", "test_resize_downsample_scales_linear",
                      "test_gemm_default_no_bias", "test_matmul_4d", "test_softmax_axis_1",
                      "test_reflect_pad", "test_add_bcast", "test_relu", "test_reduce_mean_keepdims_example"]


@pytest.mark.parametrize("name", CONFORMANCE_SUBSET)
def test_conformance_subset_on_cuda(name: str) -> None:
    from tests.engine import test_onnx_conformance as conf

    cases = {c.name: c for c in conf.RUNNABLE}
    if name not in cases:
        pytest.fail(f"conformance case {name} is not among the runnable cases of this onnx version")
    case = cases[name]
    model = import_onnx(case.model, OnnxImportOptions(name=case.name, flexible_batch=False))
    compiled = compile(model, "torch", "cuda:0")
    weights = {t.name for t in case.model.graph.initializer}
    input_names = [vi.name for vi in case.model.graph.input if vi.name not in weights]
    output_names = [vi.name for vi in case.model.graph.output]
    for inputs, expected in case.data_sets:
        got = compiled.run({n: conf._array(v) for n, v in zip(input_names, inputs)})
        for out, want in zip(output_names, expected):
            conf._compare(out, got[out], conf._array(want), case)


def test_multistyle26_cuda_matches_numpy_and_reports_fp16(multistyle26_onnx, photo_paths) -> None:
    model = import_onnx(multistyle26_onnx, OnnxImportOptions(image_inputs=["image"], image_outputs=["stylized"],
                                                             image_scale=1 / 255))
    reference, fp32 = compile(model, "numpy"), compile(model, "torch", "cuda:0")
    fp16 = compile(model, "torch", "cuda:0", precision="fp16")
    worst16 = 0.0
    for path, style in zip(photo_paths[:3], (0, 11, 25)):
        weights = np.zeros(26, np.float32)
        weights[style] = 1.0
        item = {"image": str(path), "style_weights": weights}
        want = reference.predict(item)["stylized"]
        assert float(np.abs(fp32.predict(item)["stylized"] - want).max()) <= 1e-4, (path.name, style)
        worst16 = max(worst16, float(np.abs(fp16.predict(item)["stylized"] - want).max()))
    print(f"\nmultistyle26 fp16 on {torch.cuda.get_device_name(0)}: max abs diff from float {worst16:.3g}")
    assert worst16 < 0.05  # half precision of a 0..1 image: visible only past a few percent
