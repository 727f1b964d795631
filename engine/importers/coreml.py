"""Core ML import: ``import_coreml(path_or_spec, options) -> Model``.

Reads NeuralNetwork models (``neuralNetwork``, ``neuralNetworkClassifier``,
``neuralNetworkRegressor``; specification versions up to 4, with Core ML's
rank-5 blob semantics, and newer files that keep that form) through the protobuf classes that ``coremltools``
ships. Layers become corral's ONNX-style ops on ``[N, C, H, W]`` tensors (see
:mod:`engine.importers.coreml_layers`); weights keep their storage, quantized
ones included (:mod:`engine.importers.coreml_weights`).

The model description follows the file: image inputs keep their colour
layout and the NeuralNetworkPreprocessing scaler as corral's per-channel
scale and bias (a mean image becomes a subtraction in the graph); flexible
sizes (enumeratedSizes, imageSizeRange, enumeratedShapes, shapeRange) become
:class:`ShapeSpec`; a classifier's probabilities output carries its class
labels. Every input and output is batched, as in Core ML. Array features of
shape ``[C]`` are ``[N, C]`` outside and ``[N, C, 1, 1]`` inside the graph.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.description import ColorLayout, Feature, Metadata, ModelDescription, ShapeSpec
from engine.exceptions import EngineError, ModelImportError
from engine.graph import Graph, Model, Node
from engine.importers.coreml_layers import LayerConverter

INSTALL_HINT = "pip install 'corral[coreml]'"
MAX_SPEC_VERSION = 4
NN_KINDS = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
# ImageFeatureType.ColorSpace
COLOR_SPACES: dict[int, ColorLayout] = {10: "GRAY", 20: "RGB", 30: "BGR"}


@dataclass
class CoreMLImportOptions:
    """Overrides for what the file's own metadata says (empty: keep the file's)."""

    name: str = ""
    author: str = ""
    license: str = ""
    version: str = ""
    description: str = ""


def _model_pb2() -> Any:
    try:
        # coremltools warns at import that its macOS-only runtime is missing; corral only reads protobufs
        log = logging.getLogger("coremltools")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            from coremltools.proto import Model_pb2
        finally:
            log.setLevel(level)
    except ImportError:
        raise ModelImportError(f"importing Core ML models needs the coremltools package: {INSTALL_HINT}") from None
    return Model_pb2


def _load(source: Any) -> tuple[Any, str, str]:
    """(Model spec, source label for messages, file stem)."""
    model_pb2 = _model_pb2()
    if isinstance(source, model_pb2.Model):
        return source, "Core ML model", ""
    path = Path(source)
    if not path.is_file():
        raise ModelImportError(f"{path}: no such Core ML file")
    spec = model_pb2.Model()
    try:
        spec.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError, or worse for hostile bytes
        raise ModelImportError(f"{path}: not a readable Core ML model ({type(exc).__name__}: {exc})") from exc
    return spec, str(path), path.stem


def import_coreml(source: str | os.PathLike[str] | Any, options: CoreMLImportOptions | None = None) -> Model:
    """Convert a Core ML ``.mlmodel`` file (or a ``Model_pb2.Model`` spec) into a corral :class:`Model`."""
    opts = options or CoreMLImportOptions()
    spec, where, stem = _load(source)
    kind = spec.WhichOneof("Type")
    if kind not in NN_KINDS:
        raise ModelImportError(f"{where}: holds a {kind or 'empty'} model; corral imports Core ML NeuralNetwork "
                               f"models ({', '.join(NN_KINDS)})")
    nn = getattr(spec, kind)
    # Versions up to 4 hold rank-5 networks; a newer file (e.g. version 5 for the
    # upsample align-corners modes) is read when it still maps inputs to rank 5,
    # and its ND-only layers are refused by name like any other unknown layer.
    if nn.arrayInputShapeMapping != 0:
        raise ModelImportError(f"{where}: specification version {spec.specificationVersion} network with "
                               "exact-rank array inputs (EXACT_ARRAY_MAPPING); corral imports the rank-5 "
                               "[Seq, Batch, C, H, W] NeuralNetwork form of specification versions up to "
                               f"{MAX_SPEC_VERSION}")
    try:
        return _Importer(spec, nn, kind, where, stem, opts).run()
    except ModelImportError:
        raise
    except EngineError as exc:  # e.g. an inconsistent flexible shape found while describing
        raise ModelImportError(f"{where}: {exc}") from exc


class _Importer:
    def __init__(self, spec: Any, nn: Any, kind: str, where: str, stem: str, opts: CoreMLImportOptions) -> None:
        self.spec, self.nn, self.kind, self.where, self.stem, self.opts = spec, nn, kind, where, stem, opts
        self.graph = Graph()
        self.layers = LayerConverter(self.graph, where)
        # Core ML blob name -> the corral value currently holding it
        self.current: dict[str, str] = {}
        self.versions: Counter[str] = Counter()
        self.reserved: set[str] = set()

    def run(self) -> Model:
        desc = self.spec.description
        inputs = [self._input(f) for f in desc.input]
        preprocessing = {p.featureName or (desc.input[0].name if len(desc.input) == 1 else ""): p
                         for p in self.nn.preprocessing}
        for feature in inputs:
            self._feed(feature, preprocessing.pop(feature.name, None))
        if preprocessing:
            raise ModelImportError(f"{self.where}: preprocessing for {sorted(preprocessing)}, which are not inputs")
        outputs, post = self._outputs()
        writes = Counter(o for layer in self.nn.layers for o in layer.output)
        for f in outputs:  # an output blob written twice: the last write is the output
            if f.name not in post and writes[f.name] > 1:
                post[f.name] = ("Identity", f.name)
        self.reserved = set(post)  # names only the final nodes write
        for layer in self.nn.layers:
            ins = []
            for blob in layer.input:
                if blob not in self.current:
                    raise ModelImportError(f"{self.where}: layer {layer.name!r} reads {blob!r}, which no input or "
                                           "earlier layer provides")
                ins.append(self.current[blob])
            outs = [self._target(blob) for blob in layer.output]
            self.layers.convert(layer, ins, outs)
        for name, (op, source) in post.items():
            value = self.current.get(source)
            if value is None:
                raise ModelImportError(f"{self.where}: output {name!r} ({source!r}) is produced by no layer")
            if op == "Flatten":
                self.graph.nodes.append(Node("Flatten", [value], [name], name=f"{name}/flatten", attrs={"axis": 1}))
            else:
                self.graph.nodes.append(Node("Identity", [value], [name], name=f"{name}/identity"))
        description = ModelDescription(inputs=inputs, outputs=outputs, metadata=self._metadata())
        self._class_labels(description)
        model = Model(description=description, graph=self.graph)
        model.validate(self.where)
        return model

    def _target(self, blob: str) -> str:
        """The value name a layer writes ``blob`` to: a fresh one when the name is taken or reserved."""
        name = blob
        if blob in self.reserved or blob in self.current:
            self.versions[blob] += 1
            name = f"{blob}/v{self.versions[blob]}"
        self.current[blob] = name
        return name

    # ------------------------------------------------------------ inputs
    def _input(self, f: Any) -> Feature:
        where = f"{self.where}: input {f.name!r}"
        t = f.type
        which = t.WhichOneof("Type")
        if which == "imageType":
            im = t.imageType
            layout = COLOR_SPACES.get(im.colorSpace)
            if layout is None:
                raise ModelImportError(f"{where}: unknown image colour space {im.colorSpace}")
            channels = 1 if layout == "GRAY" else 3
            shape = ShapeSpec(default=(channels, int(im.height), int(im.width)))
            size_kind = im.WhichOneof("SizeFlexibility")
            if size_kind == "enumeratedSizes":
                shape.enumerated = [(channels, int(s.height), int(s.width)) for s in im.enumeratedSizes.sizes]
            elif size_kind == "imageSizeRange":
                r = im.imageSizeRange
                shape.ranges = [(channels, channels), _bounds(r.heightRange), _bounds(r.widthRange)]
            return Feature(name=f.name, kind="image", shape=shape, color_layout=layout, scale=(1.0,),
                           bias=(0.0,) * channels, description=f.shortDescription)
        if which != "multiArrayType":
            raise ModelImportError(f"{where}: is a {which} input; corral imports image and multi-array inputs")
        arr = t.multiArrayType
        default = tuple(int(d) for d in arr.shape)
        shape = ShapeSpec(default=default)
        flex = arr.WhichOneof("ShapeFlexibility")
        if flex == "enumeratedShapes":
            shape.enumerated = [tuple(int(d) for d in s.shape) for s in arr.enumeratedShapes.shapes]
            if not default and shape.enumerated:
                shape.default = shape.enumerated[0]
        elif flex == "shapeRange":
            shape.ranges = [_bounds(r) for r in arr.shapeRange.sizeRanges]
            if not default:
                shape.default = tuple(lo for lo, _ in shape.ranges)
        if len(shape.default) not in (1, 3):
            raise ModelImportError(f"{where}: shape {list(shape.default)} has rank {len(shape.default)}; "
                                   "NeuralNetwork array inputs are [C] or [C, H, W]")
        # Core ML computes in float whatever the declared array type; so does the graph
        return Feature(name=f.name, kind="array", shape=shape, dtype="float32", description=f.shortDescription)

    def _feed(self, feature: Feature, pre: Any) -> None:
        """Make the graph value layers read for ``feature``: rank-4, mean image subtracted."""
        value = feature.name
        if feature.kind == "array" and len(feature.shape.default) == 1:  # [N, C] -> [N, C, 1, 1]
            axes = self.layers.const(f"{value}/axes", np.array([2, 3], np.int64))
            value = self.layers.node("Unsqueeze", [value, axes], f"{value}/nchw", name=f"{value}/nchw")
        if pre is not None:
            where = f"{self.where}: preprocessing of {feature.name!r}"
            which = pre.WhichOneof("preprocessor")
            if feature.kind != "image":
                raise ModelImportError(f"{where}: the input is not an image")
            if which == "scaler":
                s = pre.scaler
                biases = {"RGB": (s.redBias, s.greenBias, s.blueBias), "BGR": (s.blueBias, s.greenBias, s.redBias),
                          "GRAY": (s.grayBias,)}[feature.color_layout]
                feature.scale = (float(np.float32(s.channelScale)),)
                feature.bias = tuple(float(np.float32(b)) for b in biases)
            elif which == "meanImage":
                mean = np.asarray(pre.meanImage.meanImage, np.float32)
                c, h, w = feature.shape.default
                if mean.size != c * h * w:
                    raise ModelImportError(f"{where}: mean image holds {mean.size} values, a {c}×{h}×{w} image "
                                           f"needs {c * h * w}")
                m = self.layers.const(f"{feature.name}/mean_image", mean.reshape(1, c, h, w))
                value = self.layers.node("Sub", [value, m], f"{feature.name}/centred", name=f"{feature.name}/mean")
        self.current[feature.name] = value

    # ------------------------------------------------------------ outputs
    def _outputs(self) -> tuple[list[Feature], dict[str, tuple[str, str]]]:
        """Output features, and the final node (op, source blob) of those that need one."""
        desc = self.spec.description
        classifier = self.kind == "neuralNetworkClassifier"
        probs = desc.predictedProbabilitiesName if classifier else ""
        features: list[Feature] = []
        post: dict[str, tuple[str, str]] = {}
        for f in desc.output:
            which = f.type.WhichOneof("Type")
            if classifier and f.name == desc.predictedFeatureName and which in ("stringType", "int64Type"):
                continue  # the top label: corral reports it from the probabilities and class labels
            if which == "imageType":
                im = f.type.imageType
                layout = COLOR_SPACES.get(im.colorSpace, "RGB")
                channels = 1 if layout == "GRAY" else 3
                features.append(Feature(name=f.name, kind="image", color_layout=layout, scale=(1.0,), bias=(0.0,),
                                        shape=ShapeSpec((channels, int(im.height), int(im.width))),
                                        description=f.shortDescription))
                continue
            if which == "dictionaryType" and classifier:
                blob = self.nn.labelProbabilityLayerName or (self.nn.layers[-1].output[0] if self.nn.layers else "")
                features.append(Feature(name=f.name, shape=ShapeSpec((len(_labels(self.nn)),)),
                                        description=f.shortDescription))
                post[f.name] = ("Flatten", blob)
                continue
            if which != "multiArrayType":
                raise ModelImportError(f"{self.where}: output {f.name!r} is a {which}; corral imports image and "
                                       "multi-array outputs (and a classifier's probabilities)")
            dims = tuple(int(d) for d in f.type.multiArrayType.shape)
            features.append(Feature(name=f.name, shape=ShapeSpec(dims), description=f.shortDescription))
            if len(dims) == 1:  # [N, C, 1, 1] -> [N, C], the declared vector
                post[f.name] = ("Flatten", f.name)
        if classifier and not probs:
            blob = self.nn.labelProbabilityLayerName or self.nn.layers[-1].output[0]
            if blob not in {f.name for f in features}:
                features.append(Feature(name=blob, shape=ShapeSpec((len(_labels(self.nn)),))))
                post[blob] = ("Flatten", blob)
        return features, post

    def _class_labels(self, desc: ModelDescription) -> None:
        if self.kind != "neuralNetworkClassifier":
            return
        labels = _labels(self.nn)
        if not labels:
            raise ModelImportError(f"{self.where}: the classifier declares no class labels")
        target = self.spec.description.predictedProbabilitiesName or (
            self.nn.labelProbabilityLayerName or self.nn.layers[-1].output[0])
        desc.class_labels = labels
        desc.class_labels_output = target
        desc.metadata.user["coreml_predicted_feature_name"] = self.spec.description.predictedFeatureName

    def _metadata(self) -> Metadata:
        o, meta = self.opts, self.spec.description.metadata
        user = dict(meta.userDefined)
        user["coreml_specification_version"] = str(self.spec.specificationVersion)
        user["coreml_model_type"] = self.kind
        return Metadata(name=o.name or self.stem or "model", version=o.version or meta.versionString,
                        author=o.author or meta.author, license=o.license or meta.license,
                        description=o.description or meta.shortDescription, user=user)


def _bounds(r: Any) -> tuple[int, int | None]:
    """A Core ML SizeRange: upperBound -1 means unbounded."""
    return int(r.lowerBound), None if r.upperBound < 0 else int(r.upperBound)


def _labels(nn: Any) -> list[str]:
    which = nn.WhichOneof("ClassLabels")
    if which is None:
        return []
    return [str(v) for v in getattr(nn, which).vector]
