"""Constant: a tensor from exactly one of ``value``, ``value_float(s)`` or ``value_int(s)``."""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op

_UNSUPPORTED = ("sparse_value", "value_string", "value_strings")


class Constant(Op):
    op_type = "Constant"
    min_inputs = 0
    max_inputs = 0

    def setup(self, node: Node) -> None:
        given = [k for k in node.attrs if k in ("value", "value_float", "value_floats", "value_int", "value_ints")
                 or k in _UNSUPPORTED]
        if len(given) != 1:
            raise ValueError(f"needs exactly one value attribute, got {given or 'none'}")
        key = given[0]
        if key in _UNSUPPORTED:
            raise ValueError(f"{key} is not supported: corral stores numeric dense tensors only")
        raw = node.attrs[key]
        if key == "value":
            value = np.asarray(raw)
            if value.dtype.kind not in "biuf":
                raise ValueError(f"value has dtype {value.dtype}, which corral cannot hold")
        elif key in ("value_float", "value_floats"):
            value = np.asarray(raw, dtype=np.float32)
        else:
            value = np.asarray(raw, dtype=np.int64)
        # A read-only view: shared by every run, so nothing may write into it
        # (a view leaves the caller's array as it was).
        self.value = value.view()
        self.value.flags.writeable = False

    def run(self) -> Array:
        return self.value
