"""float16 storage: halves every float32 weight, refusing values it cannot hold."""

from __future__ import annotations

import numpy as np

from engine.exceptions import EngineError

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


class Float16RangeError(EngineError):
    """A weight holds values that float16 cannot represent."""


def to_float16(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as float16; raises :class:`Float16RangeError` naming ``name`` if any value overflows."""
    values = np.asarray(values)
    if values.size:
        bad = ~np.isfinite(values) | (np.abs(values) > FLOAT16_MAX)
        if bad.any():
            worst = values.reshape(-1)[np.argmax(bad.reshape(-1))]
            raise Float16RangeError(
                f"weight {name!r}: {int(bad.sum())} value(s) outside float16's range ±{FLOAT16_MAX:g} "
                f"(e.g. {float(worst):g}); exclude it (--exclude '{name}') or use --mode linear/lut")
    return values.astype(np.float16)
