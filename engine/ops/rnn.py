"""RNN: a simple recurrent layer over a sequence, in one or both directions.

Per step ``Ht = f(Xt Wi' + Ht-1 Ri' + Wbi + Rbi)`` (f defaults to Tanh;
``clip`` bounds its input). Outputs Y (every step's H) and Y_h (the last H);
see :mod:`engine.ops.recurrent` for layouts, directions and ``sequence_lens``.
"""

from __future__ import annotations

import numpy as np

from engine.ops.base import Array
from engine.ops.recurrent import Activation, Cell, RecurrentOp, clipped


class RNN(RecurrentOp):
    op_type = "RNN"
    gates = 1
    default_activations = ("Tanh",)

    def run(self, x: Array, w: Array, r: Array, b: Array | None = None, sequence_lens: Array | None = None,
            initial_h: Array | None = None) -> tuple[Array, Array]:
        return self.hidden_only(x, w, r, b, sequence_lens, initial_h, self.cell)

    def cell(self, acts: list[Activation], r: Array, wb: Array | None, rb: Array | None) -> Cell:
        (f,) = acts
        clip = self.clip
        r_t = r.T  # [hidden, hidden]
        bias = None if wb is None or rb is None else wb + rb

        def step(x_t: Array, read: Array, states: tuple[Array, ...]) -> tuple[Array, ...]:
            pre = x_t + np.matmul(states[0], r_t)  # [batch, hidden]
            return (f(clipped(pre if bias is None else pre + bias, clip)),)

        return step
