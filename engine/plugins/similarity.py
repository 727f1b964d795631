"""Image similarity: a custom model that embeds images with a small network and answers nearest neighbours.

This is Core ML 2's own example of what custom models are for: the work is
not one graph (an embedding network, then a search over a stored index),
so a class does it, and the model file carries only data — the network's
weights and the index — under these weight names:

* ``embed/<name>``     the embedding network's weights (architecture: :func:`embedder`)
* ``index/embeddings`` ``[K, D]`` float32, the indexed images' L2-normalized embeddings
* ``index/center``     ``[D]`` float32, subtracted from every raw embedding first (the
  index's mean: ReLU features all share a positive offset that would make
  every pair look alike)

The description's ``class_labels`` name the K indexed images, and
``metadata.user["k"]`` how many neighbours a query returns. Outputs per
item: ``neighbors`` ``[k]`` int64 (rows of the index, best first) and
``scores`` ``[k]`` float32 (cosine similarity).

The embedding network is a two-layer strided conv net with global average
pooling. :func:`build_similarity_model` fills it with seeded random filters
(random convolutional features, which already rank near-duplicates and
crops of one photo first); trained weights go in through its ``weights``
argument unchanged.

Use: ``compile(model, plugins=["engine.plugins.similarity"])`` (or
``--plugin engine.plugins.similarity``), or install corral, whose
``corral.models`` entry point declares ``ImageSimilarity``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.builder import ModelBuilder
from engine.custom import CustomModel, register_model
from engine.description import Feature, Metadata, ModelDescription, ShapeSpec
from engine.graph import Graph, Model

CLASS_NAME = "ImageSimilarity"
EMBED = "embed/"
INDEX = "index/embeddings"
CENTER = "index/center"
IMAGE_SIZE = (96, 96)
CHANNELS = (16, 32)  # conv widths; the embedding has CHANNELS[-1] dimensions


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-scaled random filters for :func:`embedder` (random convolutional features)."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    c_in = 3
    for i, c_out in enumerate(CHANNELS):
        fan_in = c_in * 9
        weights[f"conv{i}_w"] = (rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / fan_in)).astype(np.float32)
        weights[f"conv{i}_b"] = np.zeros(c_out, np.float32)
        c_in = c_out
    return weights


def embedder(weights: Mapping[str, np.ndarray], size: tuple[int, int] = IMAGE_SIZE) -> Model:
    """The embedding network: image ``[3, H, W]`` in 0..1 -> ``embedding`` ``[D]``."""
    b = ModelBuilder("similarity-embedder")
    x = b.image_input("image", size=size, scale=1 / 255)
    for i in range(len(CHANNELS)):
        w = b.weight(f"conv{i}_w", np.asarray(weights[f"conv{i}_w"], np.float32))
        bias = b.weight(f"conv{i}_b", np.asarray(weights[f"conv{i}_b"], np.float32))
        x = b.node("Conv", [x, w, bias], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # [N, C, H/2, W/2]
        x = b.node("Relu", [x])
    x = b.node("GlobalAveragePool", [x])  # [N, D, 1, 1]
    x = b.node("Flatten", [x], axis=1)    # [N, D]
    b.array_output(x, name="embedding", shape=(CHANNELS[-1],))
    return b.build()


def _normalize(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


@register_model(name=CLASS_NAME)
class ImageSimilarity(CustomModel):
    """``predict_batch`` embeds all items in one batched run, then scores them against the index in one GEMM."""

    def __init__(self, description: ModelDescription, weights: Mapping[str, np.ndarray], *,
                 backend: str = "numpy", device: str = "cpu") -> None:
        super().__init__(description, weights, backend=backend, device=device)
        from engine.compiler import compile

        if INDEX not in weights:
            raise ValueError(f"the model has no {INDEX!r} weight (the index to search)")
        image = description.input("image")
        net = {k[len(EMBED):]: v for k, v in weights.items() if k.startswith(EMBED)}
        _, height, width = image.shape.default  # an image feature's [C, H, W]
        self.net = compile(embedder(net, (height, width)), backend, device)
        self.index = _normalize(np.asarray(weights[INDEX], np.float32))  # [K, D]
        self.center = np.asarray(weights.get(CENTER, np.zeros(self.index.shape[1])), np.float32)  # [D]
        self.k = min(int(description.metadata.user.get("k", 5)), len(self.index))

    def embed(self, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``[B, D]`` normalized embeddings of the items' images (one batched run)."""
        out = self.net.predict_batch([{"image": item["image"]} for item in items])
        return _normalize(np.stack([o["embedding"] for o in out]) - self.center)

    def predict(self, item: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.predict_batch([item])[0]

    def predict_batch(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
        if not items:
            return []
        scores = self.embed(items) @ self.index.T                     # [B, K] cosine similarity
        order = np.argsort(-scores, axis=1, kind="stable")[:, :self.k]  # [B, k]
        return [{"neighbors": order[i].astype(np.int64), "scores": scores[i, order[i]].astype(np.float32)}
                for i in range(len(items))]


def build_similarity_model(images: Sequence[Any], labels: Sequence[str] | None = None, *, k: int = 5,
                           weights: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                           name: str = "image-similarity") -> Model:
    """A similarity model indexing ``images`` (paths, bytes or PIL images), labelled by ``labels``."""
    from engine.compiler import compile
    from engine.images import image_to_tensor

    net_weights = dict(weights) if weights is not None else random_weights(seed)
    net = compile(embedder(net_weights), "numpy")
    feature = net.description.input("image")
    tensors = [image_to_tensor(img, feature) for img in images]
    out = net.predict_batch([{"image": t} for t in tensors])
    raw = np.stack([o["embedding"] for o in out])  # [K, D]
    center = raw.mean(axis=0).astype(np.float32) if len(raw) > 1 else np.zeros(raw.shape[1], np.float32)
    index = _normalize(raw - center)
    labels = list(labels) if labels is not None else [f"item{i}" for i in range(len(index))]
    if len(labels) != len(index):
        raise ValueError(f"{len(labels)} labels for {len(index)} images")
    desc = ModelDescription(
        inputs=[Feature(name="image", kind="image", shape=ShapeSpec((3, *IMAGE_SIZE)), scale=(1 / 255,),
                        description="query image (resized to fit)")],
        outputs=[Feature(name="neighbors", kind="array", shape=ShapeSpec((min(k, len(index)),)), dtype="int64",
                         description="indexed images, most similar first (rows of class_labels)"),
                 Feature(name="scores", kind="array", shape=ShapeSpec((min(k, len(index)),)),
                         description="cosine similarity of each neighbour")],
        metadata=Metadata(name=name, description="nearest neighbours of an image in a stored index",
                          user={"k": str(k)}),
        class_labels=labels, custom_model=CLASS_NAME)
    graph = Graph(initializers={**{EMBED + n: np.asarray(v, np.float32) for n, v in net_weights.items()},
                                INDEX: index, CENTER: center})
    model = Model(description=desc, graph=graph)
    model.validate()
    return model
