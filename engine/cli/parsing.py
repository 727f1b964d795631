"""Parsing the ``corral model`` option values: numbers, sizes, ranges and ``--input NAME=VALUE``."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import NoReturn

import click
import numpy as np

from engine.description import ModelDescription
from engine.exceptions import EngineError


def _number(text: str) -> float:
    """A decimal, or a fraction of two decimals (``1/255``, ``2/255``, ``1/127.5``)."""
    numerator, slash, denominator = text.strip().partition("/")
    value = Fraction(numerator.strip())
    return float(value / Fraction(denominator.strip()) if slash else value)


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"S"`` or ``"S,S,S"``; each value a decimal or a fraction such as ``1/255`` or ``1/127.5``."""
    if text is None or text == "":
        return None
    try:
        return tuple(_number(part) for part in text.split(","))
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"{text!r}: give one number or three separated by commas (e.g. 1/255 or "
                                 "0.485,0.456,0.406)", param_hint=option) from None


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``"HxW"`` → (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give height x width, e.g. 384x512", param_hint=option) from None
    if h <= 0 or w <= 0:
        raise click.BadParameter(f"{text!r}: sizes must be positive", param_hint=option)
    return h, w


def parse_range(text: str | None, option: str) -> tuple[int, int | None] | None:
    """``"LO:HI"`` inclusive; ``"LO:"`` for no upper bound."""
    if not text:
        return None
    lo_text, sep, hi_text = text.partition(":")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if hi_text.strip() else None
    except ValueError:
        lo, hi, sep = -1, None, ""
    if not sep or lo < 1 or (hi is not None and hi < lo):
        raise click.BadParameter(f"{text!r}: give LO:HI with 1 <= LO <= HI, or LO: for no upper bound",
                                 param_hint=option)
    return lo, hi


def parse_input_value(spec: str, description: ModelDescription) -> tuple[str, np.ndarray]:
    """``NAME=VALUE``: VALUE is a JSON number or list, or ``@file.npy``."""
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{spec!r}: give NAME=VALUE (a JSON number or list, or @file.npy)",
                                 param_hint="--input")
    try:
        feature = description.input(name)
    except EngineError as exc:
        raise click.BadParameter(str(exc), param_hint="--input") from None
    if value.startswith("@"):
        path = value[1:]
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"{name}: cannot read {path} as a .npy array ({exc})",
                                     param_hint="--input") from None
    else:
        try:
            arr = np.asarray(json.loads(value))
        except (json.JSONDecodeError, ValueError):
            raise click.BadParameter(f"{name}: {value!r} is neither a JSON number or list nor @file.npy",
                                     param_hint="--input") from None
    if feature.kind == "array":
        arr = arr.astype(np.dtype(feature.dtype), copy=False)
    else:
        arr = arr.astype(np.float32, copy=False)
    rank = len(feature.shape.default)
    if arr.ndim == rank + 1 and arr.shape[0] == 1:  # a leading batch dimension of 1
        arr = arr[0]
    return name, arr


def batch_count(given: dict[str, np.ndarray], description: ModelDescription) -> int | None:
    """N when the arrays given for batched inputs carry a leading batch dimension of N items (what the model's
    own file takes, and onnxruntime is fed); None when they are single items. They must agree."""
    counts = {name: int(arr.shape[0]) for name, arr in given.items()
              if description.input(name).batched and arr.ndim == len(description.input(name).shape.default) + 1}
    if not counts:
        return None
    if len(set(counts.values())) > 1:
        raise click.BadParameter(f"the arrays carry different batch sizes {counts}; give every batched input the "
                                 "same number of items", param_hint="--input")
    unbatched = [n for n in given if n not in counts and description.input(n).batched]
    if unbatched:
        raise click.BadParameter(f"{sorted(counts)} carry a batch of {next(iter(counts.values()))} items but "
                                 f"{unbatched} are single items; give all with the batch dimension or none",
                                 param_hint="--input")
    return next(iter(counts.values()))


def fail(message: str) -> NoReturn:
    """Stop the command with ``message`` on stderr and exit status 1."""
    raise click.ClickException(message)
