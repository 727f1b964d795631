"""Does a graph really allow batches? Run it and see.

A file may fix the leading dimension at 1 and still compute every item
independently — or an exporter may have baked that 1 into a Reshape, so a
batch of 2 would fail or mix items. Static analysis of every op's treatment
of axis 0 is fragile; instead the importer runs the model on two random
items one at a time and stacked, and compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from engine.graph import Model

# Batching may change the order of float sums (BLAS blocking); anything
# beyond these tolerances means items are mixed.
RTOL = 1e-3
ATOL = 1e-4


@dataclass
class BatchProbe:
    """``flexible``: batch 2 equals two batch-1 runs; ``batched_outputs``: the outputs that carry the batch,
    each with the axis it sits on (0 for most; 1 for a sequence model's ``[T, N, C]``). When not flexible,
    ``batched_outputs`` still names the axis each output's batch of 2 had by its shape alone (a model whose
    items depend on each other, such as dynamic quantization over the whole batch, runs them one at a time,
    but its outputs still carry the batch there)."""

    flexible: bool
    batched_outputs: dict[str, int] = field(default_factory=dict)


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    # Small non-negative integers: valid as indices and counts for most ops.
    return rng.integers(0, 2, shape).astype(dtype)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))
    return bool(np.array_equal(a, b))


def probe_batch(model: Model, shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, np.dtype],
                batched: set[str], backend: str = "numpy", seed: int = 0) -> BatchProbe | None:
    """Compare a batch of 2 against two runs of 1.

    ``shapes`` gives every input's graph shape at batch 1 (inputs in
    ``batched`` have a leading 1). Returns None when the model cannot run at
    batch 1 on random inputs, so nothing was learned.
    """
    from engine.compiler import compile

    rng = np.random.default_rng(seed)
    first = {name: _random(rng, shape, np.dtype(dtypes[name])) for name, shape in shapes.items()}
    second = {name: _random(rng, shapes[name], np.dtype(dtypes[name])) if name in batched else first[name]
              for name in shapes}
    try:
        compiled = compile(model, backend)
        out1 = compiled.run(first)
        out2 = compiled.run(second)
    except Exception:  # noqa: BLE001 - any failure here only means the probe learned nothing
        return None
    stacked = {name: np.concatenate([first[name], second[name]]) if name in batched else first[name]
               for name in shapes}
    try:
        both = compiled.run(stacked)
    except Exception:  # noqa: BLE001 - a batch of 2 that fails is the answer: not flexible
        return BatchProbe(flexible=False)
    batched_outputs: dict[str, int] = {}
    by_shape: dict[str, int] = {}
    flexible = True
    for name, a in out1.items():
        a, b, ab = np.asarray(a), np.asarray(out2[name]), np.asarray(both[name])
        shape_axes = [axis for axis in range(a.ndim)
                      if a.shape[axis] == 1 and ab.shape == (*a.shape[:axis], 2, *a.shape[axis + 1:])]
        if len(shape_axes) == 1:
            by_shape[name] = shape_axes[0]
        axis = _batch_axis(a, b, ab)
        if axis is not None:
            batched_outputs[name] = axis
        elif not (_close(ab, a) and _close(a, b)):  # depends on the batched inputs, and not item by item
            flexible = False
    return BatchProbe(flexible=True, batched_outputs=batched_outputs) if flexible else \
        BatchProbe(flexible=False, batched_outputs=by_shape)


def _batch_axis(a: np.ndarray, b: np.ndarray, ab: np.ndarray) -> int | None:
    """The axis along which ``ab`` (the run of two) stacks ``a`` and ``b`` (the runs of one), if any."""
    for axis in range(a.ndim):
        if a.shape[axis] != 1 or ab.shape != (*a.shape[:axis], 2, *a.shape[axis + 1:]):
            continue
        first, second = np.split(ab, 2, axis=axis)
        if _close(first, a) and _close(second, b):
            return axis
    return None
