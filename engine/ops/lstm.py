"""LSTM: a long short-term memory layer over a sequence, in one or both directions.

Per step, with gates in ONNX's order i, o, f, c along the ``4*hidden`` axis
(f, g, h default to Sigmoid, Tanh, Tanh; ``clip`` bounds every gate's input):

* ``i = f(Xt Wi' + Ht-1 Ri' + Pi . Ct-1 + Wbi + Rbi)``
* ``f = f(Xt Wf' + Ht-1 Rf' + Pf . Ct-1 + Wbf + Rbf)``, or ``1 - i`` with ``input_forget``
* ``c = g(Xt Wc' + Ht-1 Rc' + Wbc + Rbc)``, ``Ct = f . Ct-1 + i . c``
* ``o = f(Xt Wo' + Ht-1 Ro' + Po . Ct + Wbo + Rbo)``, ``Ht = o . h(Ct)``

Outputs Y (every step's H), Y_h (the last H) and Y_c (the last C); see
:mod:`engine.ops.recurrent` for layouts, directions and ``sequence_lens``.
The sums are formed in onnxruntime's order (the two products, then the
peephole term, then Wb + Rb added up front), which
:class:`~engine.ops.dynamic_quantize_lstm.DynamicQuantizeLSTM` (a subclass)
relies on to reproduce onnxruntime's rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.graph import Node
from engine.ops.base import Array
from engine.ops.recurrent import Activation, Cell, RecurrentOp, clipped, compute_dtype, scan

# (the hidden rows the recurrent product reads [batch, hidden], the step's input projection [batch, 4*hidden])
#   -> their sum [batch, 4*hidden], a fresh array
Product = Callable[[Array, Array], Array]


class LSTM(RecurrentOp):
    op_type = "LSTM"
    max_inputs = 8
    gates = 4
    default_activations = ("Sigmoid", "Tanh", "Tanh")
    # W [dirs, input, 4*hidden] and R [dirs, hidden, 4*hidden] instead of ONNX's [dirs, 4*hidden, ...]
    transposed_weights = False

    def setup(self, node: Node) -> None:
        super().setup(node)
        self.input_forget = bool(node.int_attr("input_forget", 0))

    def run(self, x: Array, w: Array, r: Array, b: Array | None = None, sequence_lens: Array | None = None,
            initial_h: Array | None = None, initial_c: Array | None = None, p: Array | None = None
            ) -> tuple[Array, Array, Array]:
        return self.compute(x, w, r, b, sequence_lens, initial_h, initial_c, p, ())

    def compute(self, x: Array, w: Array, r: Array, b: Array | None, sequence_lens: Array | None,
                initial_h: Array | None, initial_c: Array | None, p: Array | None,
                quantization: tuple[Array, ...]) -> tuple[Array, Array, Array]:
        """The layer; ``quantization`` holds the quantized subclass's extra inputs (empty here)."""
        dtype = compute_dtype(x)
        xs = self.seq_major(x).astype(dtype, copy=False)  # [seq, batch, input]
        hidden, lengths = self.check(xs, w, r, b, sequence_lens, self.transposed_weights)
        batch = xs.shape[1]
        h0 = self.initial(initial_h, batch, hidden, dtype)  # [dirs, batch, hidden]
        c0 = self.initial(initial_c, batch, hidden, dtype)
        bias = None if b is None else b.astype(dtype, copy=False)
        peep = None if p is None else np.asarray(p, dtype)
        if peep is not None and peep.shape != (self.directions, 3 * hidden):
            raise ValueError(f"P must have shape {[self.directions, 3 * hidden]}, got {list(peep.shape)}")
        ys, hs, cs = [], [], []
        for d in range(self.directions):
            # Wb + Rb as one bias [4*hidden], summed once
            fused = None if bias is None else bias[d, :4 * hidden] + bias[d, 4 * hidden:]
            proj = self.project(xs, w, d, lengths, quantization)  # [seq, batch, 4*hidden]
            cell = self.cell(self.product(r, d, dtype, quantization), fused,
                             None if peep is None else peep[d], self.activations[d])
            y, (h_n, c_n) = scan(cell, proj, (h0[d], c0[d]), lengths, self.reverse(d), self.want_y)
            ys.append(y)
            hs.append(h_n)
            cs.append(c_n)
        out = self.output_layout(np.stack(ys, axis=1), np.stack(hs), np.stack(cs))
        y_out, h_out, c_out = (o.astype(x.dtype, copy=False) for o in out)
        return y_out, h_out, c_out

    # -- the two matrix products, which the quantized subclass replaces -----------------------------
    def project(self, xs: Array, w: Array, d: int, lengths: Array | None,
                quantization: tuple[Array, ...]) -> Array:
        """Every step's input projection at once: ``[seq, batch, 4*hidden]``."""
        return np.matmul(xs, w[d].astype(xs.dtype, copy=False).T)

    def product(self, r: Array, d: int, dtype: np.dtype, quantization: tuple[Array, ...]) -> Product:
        r_t = r[d].astype(dtype, copy=False).T  # [hidden, 4*hidden]

        def add(h: Array, proj: Array) -> Array:
            return np.matmul(h, r_t) + proj

        return add

    def activation_functions(self, acts: list[Activation]) -> list[Callable[[Array], Array]]:
        return list(acts)

    # -- one step ----------------------------------------------------------------------------------
    def cell(self, product: Product, bias: Array | None, peep: Array | None, acts: list[Activation]) -> Cell:
        f, g, h_act = self.activation_functions(acts)
        clip = self.clip
        input_forget = self.input_forget

        def step(x_t: Array, read: Array, states: tuple[Array, ...]) -> tuple[Array, ...]:
            _, c_prev = states
            z = product(read, x_t)  # [batch, 4*hidden]
            zi, zo, zf, zc = np.split(z, 4, axis=1)
            bi = bo = bf = bc = None
            if bias is not None:
                bi, bo, bf, bc = np.split(bias, 4)
            pi = po = pf = None
            if peep is not None:
                pi, po, pf = np.split(peep, 3)
                zi = zi + c_prev * pi
            i = f(clipped(zi if bi is None else zi + bi, clip))
            if input_forget:
                forget = 1 - i
            else:
                if pf is not None:
                    zf = zf + c_prev * pf
                forget = f(clipped(zf if bf is None else zf + bf, clip))
            cand = g(clipped(zc if bc is None else zc + bc, clip))
            c = c_prev * forget + i * cand
            if po is not None:
                zo = zo + c * po
            o = f(clipped(zo if bo is None else zo + bo, clip))
            return h_act(c) * o, c

        return step
