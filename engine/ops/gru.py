"""GRU: a gated recurrent unit layer over a sequence, in one or both directions.

Per step, with gates in ONNX's order z, r, h along the ``3*hidden`` axis
(f, g default to Sigmoid, Tanh; ``clip`` bounds every gate's input):

* ``z = f(Xt Wz' + Ht-1 Rz' + Wbz + Rbz)``, ``r = f(Xt Wr' + Ht-1 Rr' + Wbr + Rbr)``
* ``h = g(Xt Wh' + (r . Ht-1) Rh' + Rbh + Wbh)``, or with ``linear_before_reset``
  ``h = g(Xt Wh' + r . (Ht-1 Rh' + Rbh) + Wbh)``
* ``Ht = (1 - z) . h + z . Ht-1``

Outputs Y (every step's H) and Y_h (the last H); see
:mod:`engine.ops.recurrent` for layouts, directions and ``sequence_lens``.
"""

from __future__ import annotations

import numpy as np

from engine.graph import Node
from engine.ops.base import Array
from engine.ops.recurrent import Activation, Cell, RecurrentOp, clipped


class GRU(RecurrentOp):
    op_type = "GRU"
    gates = 3
    default_activations = ("Sigmoid", "Tanh")

    def setup(self, node: Node) -> None:
        super().setup(node)
        self.linear_before_reset = bool(node.int_attr("linear_before_reset", 0))

    def run(self, x: Array, w: Array, r: Array, b: Array | None = None, sequence_lens: Array | None = None,
            initial_h: Array | None = None) -> tuple[Array, Array]:
        return self.hidden_only(x, w, r, b, sequence_lens, initial_h, self.cell)

    def cell(self, acts: list[Activation], r: Array, wb: Array | None, rb: Array | None) -> Cell:
        f, g = acts
        clip = self.clip
        hidden = r.shape[1]
        r_zr = r[:2 * hidden].T  # [hidden, 2*hidden]
        r_h = r[2 * hidden:].T  # [hidden, hidden]
        b_zr = None if wb is None or rb is None else wb[:2 * hidden] + rb[:2 * hidden]
        wb_h = None if wb is None else wb[2 * hidden:]
        rb_h = None if rb is None else rb[2 * hidden:]
        linear_before_reset = self.linear_before_reset

        def step(x_t: Array, read: Array, states: tuple[Array, ...]) -> tuple[Array, ...]:
            (h_prev,) = states
            zr = x_t[:, :2 * hidden] + np.matmul(h_prev, r_zr)  # [batch, 2*hidden]
            if b_zr is not None:
                zr = zr + b_zr
            gates = f(clipped(zr, clip))
            z, reset = gates[:, :hidden], gates[:, hidden:]
            if linear_before_reset:
                hr = np.matmul(h_prev, r_h)
                if rb_h is not None:
                    hr = hr + rb_h
                pre = x_t[:, 2 * hidden:] + reset * hr
            else:
                pre = x_t[:, 2 * hidden:] + np.matmul(reset * h_prev, r_h)
                if rb_h is not None:
                    pre = pre + rb_h
            if wb_h is not None:
                pre = pre + wb_h
            cand = g(clipped(pre, clip))
            return ((1 - z) * cand + z * h_prev,)

        return step
