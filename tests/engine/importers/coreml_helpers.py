"""Building, running and comparing the small Core ML models the import tests make with coremltools."""

from __future__ import annotations

import logging

import numpy as np
import pytest

logging.getLogger("coremltools").setLevel(logging.ERROR)
ct = pytest.importorskip("coremltools")
from coremltools.models import datatypes
from coremltools.models.neural_network import NeuralNetworkBuilder

from engine import compile
from engine.importers.coreml import import_coreml

RNG = np.random.default_rng(7)
C, H, W = 3, 7, 9
def rand(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def builder(shape: tuple[int, ...] = (C, H, W), out_shape: tuple[int, ...] | None = None,
            names: tuple[str, ...] = ("x",), mode: str | None = None) -> NeuralNetworkBuilder:
    out = datatypes.Array(*out_shape) if out_shape else None
    return NeuralNetworkBuilder([(n, datatypes.Array(*shape)) for n in names], [("y", out)], mode=mode)


def run(spec, **feeds: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Import, compile and run on batched tensors; returns output ``y``."""
    return compile(import_coreml(spec)).run(feeds)["y"]


def batch(shape: tuple[int, ...] = (C, H, W), n: int = 2) -> np.ndarray:
    return rand(n, *shape)


def close(got: np.ndarray, want: np.ndarray, tol: float = 1e-4) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)

