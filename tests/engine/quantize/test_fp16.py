"""float16 storage refuses what it cannot hold."""

from __future__ import annotations

import numpy as np
import pytest

from engine.builder import ModelBuilder
from engine.quantize import Float16RangeError, QuantizeOptions, quantize_model
from engine.quantize.fp16 import to_float16


def test_halves_and_keeps_values() -> None:
    w = np.array([1.0, -65504.0, 1e-3, 0.0], np.float32)
    h = to_float16(w, "w")
    assert h.dtype == np.float16
    np.testing.assert_allclose(h.astype(np.float32), w, rtol=1e-3)


@pytest.mark.parametrize("bad", [70000.0, -1e6, np.inf, np.nan])
def test_out_of_range_names_the_tensor(bad: float) -> None:
    b = ModelBuilder("big")
    x = b.array_input("x", (4,))
    y = b.node("MatMul", [x, b.weight("huge.w", np.array([[1.0], [bad], [2.0], [3.0]], np.float32))])
    b.array_output(y)
    with pytest.raises(Float16RangeError, match=r"'huge.w'.*float16") as err:
        quantize_model(b.build(validate=False), QuantizeOptions(mode="fp16"))
    assert "--exclude" in str(err.value)
