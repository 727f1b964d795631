"""Calibration sets: the model's own input tensors for a few representative images, kept as one ``.npz``.

An 8-bit compute variant (:mod:`engine.quantize.int8`) quantizes activations
with ranges measured on real inputs, so it is made from a calibration set.
The set is built from image files with the model's own preprocessing
(:meth:`engine.compiled_model.CompiledModel.prepare_item` rules: decode, colour,
scale and bias, resized to the model's default size), or from arrays for
array inputs, and saved with :meth:`CalibrationSet.save` (numpy's ``.npz``,
read back with ``allow_pickle=False``, so a stored set cannot run code).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.exceptions import InputError
from engine.graph import Model

# Images a set keeps at most: activation ranges need a few dozen representative inputs, and every one costs
# calibration time (one float run each) and bytes in the store.
DEFAULT_MAX_ITEMS = 32


@dataclass
class CalibrationSet:
    """``inputs``: per model input, the items stacked on a new leading axis (``[N, *item shape]``)."""

    inputs: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        counts = {len(v) for v in self.inputs.values()}
        if len(counts) != 1 or 0 in counts:
            raise InputError(f"a calibration set needs the same number (> 0) of items for every input, got "
                             f"{ {k: len(v) for k, v in self.inputs.items()} }")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def items(self) -> Iterator[dict[str, np.ndarray]]:
        """One item (input name -> item-shaped array) at a time."""
        for i in range(len(self)):
            yield {name: values[i] for name, values in self.inputs.items()}

    def check(self, model: Model) -> None:
        """Refuse a set that does not fit ``model``'s inputs, naming what differs."""
        for f in model.description.inputs:
            if f.name not in self.inputs:
                raise InputError(f"calibration set has no values for input {f.name!r} of {model.name!r}")
            shape = self.inputs[f.name].shape[1:]
            if not f.shape.allows(shape):
                raise InputError(f"calibration set: input {f.name!r} items are {list(shape)}; "
                                 f"{model.name!r} accepts {f.shape.describe()}")

    # ------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self.inputs)  # type: ignore[arg-type]  # numpy's stub: names as kwargs
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "calibration set") -> CalibrationSet:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return cls({name: npz[name] for name in npz.files})
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"{where}: not a calibration set ({exc})") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibrationSet:
        path = Path(path)
        return cls.from_bytes(path.read_bytes(), str(path))

    # ------------------------------------------------------------ building
    @classmethod
    def from_source(cls, model: Model, source: str | os.PathLike[str], inputs: Mapping[str, np.ndarray] | None = None,
                    max_items: int = DEFAULT_MAX_ITEMS) -> CalibrationSet:
        """A saved set (a ``.npz`` file), or one made from a directory of images (:meth:`from_images`)."""
        from engine.compare import image_files

        source = Path(source)
        if source.is_file():
            return cls.load(source)
        return cls.from_images(model, image_files(source), inputs, max_items)

    @classmethod
    def from_images(cls, model: Model, images: Sequence[str | os.PathLike[str]],
                    inputs: Mapping[str, np.ndarray] | None = None,
                    max_items: int = DEFAULT_MAX_ITEMS) -> CalibrationSet:
        """The model's input tensors for ``images`` (its first image input; others from ``inputs`` or their
        defaults), evenly picked when there are more than ``max_items``."""
        from engine.images import decode_image, image_to_tensor
        from engine.images.tensor import resize

        features = model.description.image_inputs
        if not features:
            raise InputError(f"model {model.name!r} has no image input to calibrate from images; give arrays "
                             "(@file.npy) for its inputs instead")
        feature = features[0]
        paths = list(images)
        if not paths:
            raise InputError("no calibration images given")
        if len(paths) > max_items:
            paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, max_items)]
        height, width = (int(d) for d in feature.shape.default[-2:])
        tensors = [image_to_tensor(resize(decode_image(p), (height, width), "fit"), feature) for p in paths]
        stacked = {feature.name: np.stack(tensors)}  # [N, C, H, W]
        given = dict(inputs or {})
        for f in model.description.inputs:
            if f.name == feature.name:
                continue
            value = given.get(f.name, f.default)
            if value is None:
                raise InputError(f"calibration: input {f.name!r} of {model.name!r} has no default; give its value")
            arr = np.asarray(value, np.dtype(f.dtype))
            stacked[f.name] = np.repeat(arr[None], len(tensors), axis=0)
        return cls(stacked)
