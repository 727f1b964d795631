"""The torch backend against the numpy reference: builder models, the real style network, batches, devices.

ONNX's node conformance cases run through torch in tests/engine/test_onnx_conformance.py
(its BACKENDS list includes "torch" when torch is installed).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine import ModelBuilder, compile
from engine.backends import available_backends, resolve_backend
from engine.backends.torch_backend import TorchBackend, check_device, fallback_counts
from engine.exceptions import BackendError

RNG = np.random.default_rng(7)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def fallbacks(compiled) -> dict[str, int]:
    return fallback_counts([step.kernel for step in compiled.executor.steps])


def classifier_model():
    """Conv + BatchNorm (folded) + Relu, pools, Gemm, Softmax: the shape of an image classifier."""
    b = ModelBuilder("classifier")
    x = b.image_input("image", size=(32, 32), sizes=[(32, 32), (48, 40)])
    y = b.node("Conv", [x, b.weight("w1", rand(8, 3, 3, 3)), b.weight("b1", rand(8))], pads=[1, 0, 2, 1],
               strides=[1, 2])
    y = b.node("BatchNormalization", [y, b.weight("g", rand(8) ** 2 + 0.5), b.weight("be", rand(8)),
                                      b.weight("m", rand(8)), b.weight("v", rand(8) ** 2 + 0.5)])
    y = b.node("Relu", [y])
    y = b.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = b.node("Conv", [y, b.weight("w2", rand(16, 2, 3, 3))], group=4, dilations=[2, 2], auto_pad="SAME_UPPER")
    y = b.node("AveragePool", [y], kernel_shape=[2, 2], ceil_mode=1, count_include_pad=0)
    y = b.node("GlobalAveragePool", [y])
    y = b.node("Flatten", [y])
    y = b.node("Gemm", [y, b.weight("fc", rand(5, 16)), b.weight("fcb", rand(5))], transB=1)
    y = b.node("Softmax", [y], axis=-1)
    b.classifier_output(y, ["a", "b", "c", "d", "e"], name="probs")
    return b.build()


def decoder_model():
    """ConvTranspose, Resize (linear), reflect Pad, InstanceNorm, Concat, Split, Sigmoid: a decoder's shape."""
    b = ModelBuilder("decoder")
    x = b.array_input("x", (4, 9, 7))
    y = b.node("ConvTranspose", [x, b.weight("wt", rand(4, 6, 3, 3)), b.weight("bt", rand(6))], strides=[2, 2],
               pads=[1, 1, 0, 0], output_padding=[1, 0])
    y = b.node("InstanceNormalization", [y, b.weight("s", rand(6)), b.weight("t", rand(6))])
    y = b.node("LeakyRelu", [y], alpha=0.2)
    scales = b.weight("scales", np.array([1, 1, 1.5, 2], np.float32))
    roi = b.weight("roi", np.zeros(0, np.float32))
    y = b.node("Resize", [y, roi, scales], mode="linear", coordinate_transformation_mode="half_pixel")
    y = b.node("Pad", [y, b.weight("pads", np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64))], mode="reflect")
    a, c = b.node("Split", [y, b.weight("split", np.array([2, 4], np.int64))], axis=1, outputs=2)
    y = b.node("Concat", [b.node("Tanh", [c]), a], axis=1)
    y = b.node("Transpose", [y], perm=[0, 2, 3, 1])
    y = b.node("Sigmoid", [y])
    b.array_output(y, name="out")
    return b.build()


@pytest.mark.parametrize("make, feeds", [
    (classifier_model, {"image": RNG.random((3, 3, 32, 32), dtype=np.float32)}),
    (classifier_model, {"image": RNG.random((2, 3, 48, 40), dtype=np.float32)}),
    (decoder_model, {"x": RNG.standard_normal((2, 4, 9, 7)).astype(np.float32)}),
])
def test_builder_models_match_numpy_without_host_fallbacks(make, feeds) -> None:
    model = make()
    want = compile(model, "numpy").run(feeds)
    compiled = compile(model, "torch")
    got = compiled.run(feeds)
    assert compiled.backend == "torch" and compiled.device == "cpu"
    for name in want:
        assert isinstance(got[name], np.ndarray) and got[name].dtype == want[name].dtype
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
    assert fallbacks(compiled) == {}  # every float op ran as a torch kernel


def test_shape_arithmetic_runs_on_host_and_floats_stay_on_device() -> None:
    b = ModelBuilder("shapes")
    x = b.array_input("x", (6, 4))
    shape = b.node("Shape", [x])                                                  # int64 [3]
    n = b.node("Gather", [shape, b.weight("zero", np.array(0, np.int64))], axis=0)
    target = b.node("Concat", [b.node("Unsqueeze", [n, b.weight("ax", np.array([0], np.int64))]),
                               b.weight("minus1", np.array([-1], np.int64))], axis=0)
    y = b.node("Reshape", [b.node("Exp", [x]), target])                           # [N, 24]
    b.array_output(y, name="y")
    model = b.build()
    feeds = {"x": rand(3, 6, 4)}
    compiled = compile(model, "torch", skip_passes=["fold_constants"])
    got = compiled.run(feeds)["y"]
    np.testing.assert_allclose(got, np.exp(feeds["x"]).reshape(3, 24), rtol=1e-6)
    counts = fallbacks(compiled)
    assert counts.get("Gather") == 1 and counts.get("Concat") == 1   # int64 shape arithmetic: numpy, host
    assert "Shape" not in counts and "Exp" not in counts and "Reshape" not in counts


def test_boundary_hooks_keep_integers_on_host() -> None:
    ctx = TorchBackend("cpu")
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    weights.flags.writeable = False
    t = ctx.to_device(weights)
    assert isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dtype == torch.float32
    ints = ctx.to_device(np.array([1, 2], np.int64))
    assert isinstance(ints, np.ndarray)
    out = ctx.to_host(t)
    out[0, 0] = 99.0  # the caller owns its copy: the weight is untouched
    assert weights[0, 0] == 0.0 and float(t[0, 0]) == 0.0


def test_predict_batch_equals_predict_on_torch() -> None:
    compiled = compile(classifier_model(), "torch")
    items = [{"image": RNG.random((3, 32, 32), dtype=np.float32)} for _ in range(3)]
    items.append({"image": RNG.random((3, 48, 40), dtype=np.float32)})
    batch = compiled.predict_batch(items)
    for item, result in zip(items, batch):
        np.testing.assert_allclose(result["probs"], compiled.predict(item)["probs"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_multistyle26_torch_matches_numpy(multistyle26_onnx, photo_paths) -> None:
    from engine.importers.onnx import OnnxImportOptions, import_onnx

    model = import_onnx(multistyle26_onnx, OnnxImportOptions(image_inputs=["image"], image_outputs=["stylized"],
                                                             image_scale=1 / 255))
    reference = compile(model, "numpy")
    compiled = compile(model, "torch")
    for path, style in zip(photo_paths[:3], (0, 11, 25)):
        weights = np.zeros(26, np.float32)
        weights[style] = 1.0
        item = {"image": str(path), "style_weights": weights}
        want, got = reference.predict(item)["stylized"], compiled.predict(item)["stylized"]
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) <= 1e-4, (path.name, style)
    assert fallbacks(compiled) == {}


def test_compiled_cache_roundtrip_on_torch(tmp_path) -> None:
    model = decoder_model()
    feeds = {"x": rand(1, 4, 9, 7)}
    first = compile(model, "torch", cache_dir=tmp_path)
    again = compile(model, "torch", cache_dir=tmp_path)
    assert not first.from_cache and again.from_cache
    np.testing.assert_array_equal(again.run(feeds)["out"], first.run(feeds)["out"])


def test_precision_fp16_is_cuda_only() -> None:
    with pytest.raises(BackendError, match="fp16 needs a CUDA device"):
        compile(classifier_model(), "torch", "cpu", precision="fp16")
    with pytest.raises(BackendError, match="float32 only"):
        compile(classifier_model(), "numpy", precision="fp16")
    with pytest.raises(BackendError, match="unknown"):
        compile(classifier_model(), "torch", precision="int3")


def test_device_names() -> None:
    assert check_device("cpu") == "cpu"
    assert check_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BackendError, match="cpu, cuda, cuda:N or auto"):
        check_device("tpu")
    with pytest.raises(BackendError, match="numpy backend runs on the CPU only"):
        compile(classifier_model(), "numpy", "cuda:0")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="sees no CUDA device"):
            check_device("cuda:0")


def test_auto_backend_picks_torch_when_onnxruntime_is_missing(monkeypatch) -> None:
    from engine import backends

    assert "torch" in available_backends()
    monkeypatch.setattr(backends, "installed", lambda name: name != "onnxruntime")
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("numpy", "cpu") == "numpy"
    assert compile(classifier_model(), "auto").backend == "torch"


@pytest.mark.gpu
def test_cuda_fp32_matches_numpy_and_fp16_is_close() -> None:
    model = classifier_model()
    feeds = {"image": RNG.random((4, 3, 32, 32), dtype=np.float32)}
    want = compile(model, "numpy").run(feeds)["probs"]
    fp32 = compile(model, "torch", "cuda:0")
    assert fp32.device == "cuda:0"
    np.testing.assert_allclose(fp32.run(feeds)["probs"], want, rtol=1e-3, atol=1e-4)
    fp16 = compile(model, "torch", "cuda", precision="fp16").run(feeds)["probs"]
    assert fp16.dtype == np.float32
    np.testing.assert_allclose(fp16, want, atol=5e-3)
