"""Identity: the input itself (ops never write into their inputs, so sharing is safe)."""

from __future__ import annotations

from engine.ops.base import Array, Op


class Identity(Op):
    op_type = "Identity"

    def run(self, x: Array) -> Array:
        return x
