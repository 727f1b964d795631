"""Recurrent layers on tensors (mirrors engine.ops.lstm, gru and rnn; DynamicQuantizeLSTM runs on the host).

A layer with its default activations, no ``clip``, no peepholes, no
``input_forget`` and every batch row of full length (GRU: with
``linear_before_reset``, torch's form) is one ``torch.lstm`` / ``torch.gru``
/ ``torch.rnn_tanh`` / ``torch.rnn_relu`` call: cuDNN on CUDA, torch's
fused CPU kernels otherwise. Its weights are reordered into torch's gate
order once per weight tensor. Everything else runs the step loop below, the
numpy op's equations on tensors.

DynamicQuantizeLSTM reproduces onnxruntime's integer arithmetic rounding for
rounding on the host (:mod:`engine.ops.dynamic_quantize_lstm`); its kernel
always falls back to that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from engine.backends.torch_ops import DEFAULT_OPTIONS, Fallback, KernelOptions, TorchKernel, floats, host_ints
from engine.ops.dynamic_quantize_lstm import DynamicQuantizeLSTM as DynamicQuantizeLSTMOp
from engine.ops.gru import GRU as GRUOp
from engine.ops.lstm import LSTM as LSTMOp
from engine.ops.recurrent import Activation, RecurrentOp, step_order
from engine.ops.rnn import RNN as RNNOp

Tensor = torch.Tensor
RecT = TypeVar("RecT", bound=RecurrentOp)
Step = Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]]

TORCH_ACTIVATIONS: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "sigmoid": lambda x, a, b: torch.sigmoid(x),
    "tanh": lambda x, a, b: torch.tanh(x),
    "relu": lambda x, a, b: torch.relu(x),
    "affine": lambda x, a, b: a * x + b,
    "leakyrelu": lambda x, a, b: F.leaky_relu(x, a),
    "thresholdedrelu": lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)),
    "scaledtanh": lambda x, a, b: a * torch.tanh(b * x),
    "hardsigmoid": lambda x, a, b: torch.clamp(a * x + b, 0, 1),
    "elu": lambda x, a, b: F.elu(x, a),
    "softsign": lambda x, a, b: F.softsign(x),
    "softplus": lambda x, a, b: torch.logaddexp(x, torch.zeros_like(x)),
}


def activation(act: Activation) -> Callable[[Tensor], Tensor]:
    fn = TORCH_ACTIVATIONS[act.name]
    return lambda x: fn(x, act.alpha, act.beta)


def clipped(x: Tensor, clip: float | None) -> Tensor:
    return x if clip is None else torch.clamp(x, -clip, clip)


def gate_blocks(t: Tensor, order: Sequence[int]) -> Tensor:
    """``t``'s gate blocks (first axis, equal parts) in ``order``: ONNX's gate order to torch's."""
    return torch.cat([t.chunk(len(order))[i] for i in order])


class _Recurrent(TorchKernel[RecT]):
    """The common part: layouts, lengths, torch's fused layers, and the step loop one direction at a time."""

    # which gate blocks of ONNX's order make torch's order
    torch_order: tuple[int, ...] = (0,)

    def __init__(self, op: RecT, options: KernelOptions = DEFAULT_OPTIONS) -> None:
        super().__init__(op, options)
        # (the W, R, B tensors, torch's parameter list made from them)
        self._params: tuple[tuple[Any, ...], list[Tensor]] | None = None

    def prepare(self, x: Tensor, w: Tensor, r: Tensor, b: Tensor | None,
                sequence_lens: Any) -> tuple[Tensor, int, np.ndarray | None]:
        """(X in layout 0, the hidden size, the row lengths on the host or None: all full), shapes checked."""
        xs = x if self.op.layout == 0 else x.transpose(0, 1)
        lens = None if sequence_lens is None else np.asarray(host_ints(sequence_lens), np.int64)
        hidden, lengths = self.op.check(xs, w, r, b, lens)
        return xs, hidden, lengths

    def params(self, w: Tensor, r: Tensor, b: Tensor | None) -> list[Tensor]:
        """torch's per-direction parameter list ``[w_ih, w_hh, (b_ih, b_hh)] * dirs``, made once per weight."""
        kept = self._params
        if kept is not None and all(a is k for a, k in zip((w, r, b), kept[0])):
            return kept[1]
        order = self.torch_order
        made: list[Tensor] = []
        for d in range(w.shape[0]):
            made += [gate_blocks(w[d], order).contiguous(), gate_blocks(r[d], order).contiguous()]
            if b is not None:
                wb, rb = b[d].chunk(2)
                made += [gate_blocks(wb, order).contiguous(), gate_blocks(rb, order).contiguous()]
        self._params = ((w, r, b), made)
        return made

    def fused(self, call: Callable[..., tuple[Tensor, ...]], x: Tensor, hx: Any, w: Tensor, r: Tensor,
              b: Tensor | None) -> tuple[Tensor, ...]:
        """One torch call over the whole layer: (Y in the node's layout, the final states in its layout)."""
        rec = self.op
        batch_first = rec.layout == 1
        time = 1 if batch_first else 0
        backwards = rec.direction == "reverse"
        if backwards:
            x = x.flip(time)
        out, *states = call(x, hx, self.params(w, r, b), b is not None, 1, 0.0, False, rec.directions == 2,
                            batch_first)
        if backwards:
            out = out.flip(time)
        # [seq, batch, dirs*hidden] -> [seq, dirs, batch, hidden]; batch-first: [batch, seq, dirs, hidden]
        y = out.unflatten(-1, (rec.directions, -1))
        if batch_first:
            states = [s.transpose(0, 1) for s in states]  # [dirs, batch, hidden] -> [batch, dirs, hidden]
        else:
            y = y.transpose(1, 2)
        return (y.contiguous(), *(s.contiguous() for s in states))

    def initial(self, state: Tensor | None, xs: Tensor, hidden: int) -> Tensor:
        """An initial state ``[dirs, batch, hidden]`` (layout 0), zeros when the node gives none."""
        if state is None:
            return xs.new_zeros((self.op.directions, xs.shape[1], hidden))
        s = state if self.op.layout == 0 else state.transpose(0, 1)
        if tuple(s.shape) != (self.op.directions, xs.shape[1], hidden):
            raise Fallback  # the numpy op reports it
        return s.to(xs.dtype).contiguous()

    def looped(self, xs: Tensor, steps: list[Step], state0: list[tuple[Tensor, ...]],
               lengths: np.ndarray | None) -> tuple[Tensor, ...]:
        """Each direction through the step loop; (Y, final states) in the node's layout."""
        rec = self.op
        ys, finals = [], []
        for d, step in enumerate(steps):
            y, states = scan(step, xs[d], state0[d], lengths, rec.reverse(d))
            ys.append(y)
            finals.append(states)
        y_all = torch.stack(ys, dim=1)  # [seq, dirs, batch, hidden]
        out = [torch.stack([f[k] for f in finals]) for k in range(len(finals[0]))]  # [dirs, batch, hidden]
        if rec.layout == 1:
            return (y_all.permute(2, 0, 1, 3).contiguous(), *(s.transpose(0, 1).contiguous() for s in out))
        return (y_all, *out)


def scan(step: Step, xs: Tensor, state0: tuple[Tensor, ...], lengths: np.ndarray | None,
         reverse: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One direction, as :func:`engine.ops.recurrent.scan`: Y ``[seq, batch, hidden]`` and the final states."""
    seq, batch = xs.shape[:2]
    order = step_order(seq, lengths, reverse)
    index = None if order is None else torch.as_tensor(np.array(order), device=xs.device)
    rows = torch.arange(batch, device=xs.device)
    if index is not None:
        xs = xs[index[:, 0]] if index.shape[1] == 1 else xs[index, rows]
    ys = xs.new_zeros((seq, batch, state0[0].shape[-1]))
    steps = seq if lengths is None else int(lengths.max(initial=0))
    active = None if lengths is None else torch.as_tensor(
        np.arange(seq)[:, None] < lengths[None, :], device=xs.device).unsqueeze(-1)  # [seq, batch, 1]
    states = state0
    for s in range(steps):
        new = step(xs[s], states)
        if active is None:
            states = new
            ys[s] = new[0]
        else:
            states = tuple(torch.where(active[s], n, o) for n, o in zip(new, states))
            ys[s] = torch.where(active[s], new[0], torch.zeros_like(new[0]))
    if lengths is not None and bool((lengths == 0).any()):
        empty = torch.as_tensor(lengths == 0, device=xs.device).unsqueeze(-1)
        states = tuple(torch.where(empty, torch.zeros_like(st), st) for st in states)
    if index is not None:
        ys = ys[index[:, 0]] if index.shape[1] == 1 else ys[index, rows]
    return ys, states


def projections(xs: Tensor, w: Tensor) -> Tensor:
    """Every direction's input projection: ``[dirs, seq, batch, gates*hidden]``."""
    return torch.matmul(xs.unsqueeze(0), w.to(xs.dtype).transpose(1, 2).unsqueeze(1))


class LSTM(_Recurrent[LSTMOp]):
    torch_order = (0, 2, 3, 1)  # ONNX i, o, f, c -> torch i, f, g, o

    def run(self, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None, initial_h: Any = None,
            initial_c: Any = None, p: Any = None) -> tuple[Tensor, ...]:
        floats(x, w, r, b, initial_h, initial_c, p)
        op = self.op
        xs, hidden, lengths = self.prepare(x, w, r, b, sequence_lens)
        h0 = self.initial(initial_h, xs, hidden)
        c0 = self.initial(initial_c, xs, hidden)
        plain = all(a.name == n for acts in op.activations for a, n in zip(acts, ("sigmoid", "tanh", "tanh")))
        if plain and op.clip is None and not op.input_forget and p is None and lengths is None:
            return self.fused(torch.lstm, x, (h0, c0), w.to(x.dtype), r.to(x.dtype),
                              None if b is None else b.to(x.dtype))
        proj = projections(xs, w)
        steps = [self.step(r[d].to(xs.dtype), None if b is None else b[d].to(xs.dtype),
                           None if p is None else p[d].to(xs.dtype), op.activations[d]) for d in range(op.directions)]
        return self.looped(proj, steps, [(h0[d], c0[d]) for d in range(op.directions)], lengths)

    def step(self, r: Tensor, b: Tensor | None, p: Tensor | None, acts: list[Activation]) -> Step:
        f, g, h_act = (activation(a) for a in acts)
        clip, input_forget = self.op.clip, self.op.input_forget
        r_t = r.t()
        bias = None if b is None else b.chunk(2)[0] + b.chunk(2)[1]
        pi, po, pf = (None, None, None) if p is None else p.chunk(3)

        def one(x_t: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            h_prev, c_prev = states
            z = torch.addmm(x_t, h_prev, r_t)
            if bias is not None:
                z = z + bias
            zi, zo, zf, zc = z.chunk(4, dim=1)
            if pi is not None and pf is not None:
                zi = zi + c_prev * pi
                zf = zf + c_prev * pf
            i = f(clipped(zi, clip))
            forget = 1 - i if input_forget else f(clipped(zf, clip))
            c = c_prev * forget + i * g(clipped(zc, clip))
            if po is not None:
                zo = zo + c * po
            return h_act(c) * f(clipped(zo, clip)), c

        return one


class GRU(_Recurrent[GRUOp]):
    torch_order = (1, 0, 2)  # ONNX z, r, h -> torch r, z, n

    def run(self, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None,
            initial_h: Any = None) -> tuple[Tensor, ...]:
        floats(x, w, r, b, initial_h)
        op = self.op
        xs, hidden, lengths = self.prepare(x, w, r, b, sequence_lens)
        h0 = self.initial(initial_h, xs, hidden)
        plain = all(a.name == n for acts in op.activations for a, n in zip(acts, ("sigmoid", "tanh")))
        if plain and op.linear_before_reset and op.clip is None and lengths is None:
            return self.fused(torch.gru, x, h0, w.to(x.dtype), r.to(x.dtype), None if b is None else b.to(x.dtype))
        proj = projections(xs, w)
        steps = [self.step(r[d].to(xs.dtype), None if b is None else b[d].to(xs.dtype), op.activations[d])
                 for d in range(op.directions)]
        return self.looped(proj, steps, [(h0[d],) for d in range(op.directions)], lengths)

    def step(self, r: Tensor, b: Tensor | None, acts: list[Activation]) -> Step:
        f, g = (activation(a) for a in acts)
        clip, lbr = self.op.clip, self.op.linear_before_reset
        hidden = r.shape[1]
        r_zr, r_h = r[:2 * hidden].t(), r[2 * hidden:].t()
        wb, rb = (None, None) if b is None else b.chunk(2)

        def one(x_t: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            (h_prev,) = states
            zr = torch.addmm(x_t[:, :2 * hidden], h_prev, r_zr)
            if wb is not None and rb is not None:
                zr = zr + (wb[:2 * hidden] + rb[:2 * hidden])
            z, reset = f(clipped(zr, clip)).chunk(2, dim=1)
            if lbr:
                hr = h_prev @ r_h if rb is None else torch.addmm(rb[2 * hidden:], h_prev, r_h)
                pre = x_t[:, 2 * hidden:] + reset * hr
            else:
                pre = x_t[:, 2 * hidden:] + (reset * h_prev) @ r_h
                if rb is not None:
                    pre = pre + rb[2 * hidden:]
            if wb is not None:
                pre = pre + wb[2 * hidden:]
            cand = g(clipped(pre, clip))
            return ((1 - z) * cand + z * h_prev,)

        return one


class RNN(_Recurrent[RNNOp]):
    def run(self, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None,
            initial_h: Any = None) -> tuple[Tensor, ...]:
        floats(x, w, r, b, initial_h)
        op = self.op
        xs, hidden, lengths = self.prepare(x, w, r, b, sequence_lens)
        h0 = self.initial(initial_h, xs, hidden)
        names = {a.name for acts in op.activations for a in acts}
        if names in ({"tanh"}, {"relu"}) and op.clip is None and lengths is None:
            call = torch.rnn_tanh if names == {"tanh"} else torch.rnn_relu
            return self.fused(call, x, h0, w.to(x.dtype), r.to(x.dtype), None if b is None else b.to(x.dtype))
        proj = projections(xs, w)
        steps = [self.step(r[d].to(xs.dtype), None if b is None else b[d].to(xs.dtype), op.activations[d])
                 for d in range(op.directions)]
        return self.looped(proj, steps, [(h0[d],) for d in range(op.directions)], lengths)

    def step(self, r: Tensor, b: Tensor | None, acts: list[Activation]) -> Step:
        f = activation(acts[0])
        clip = self.op.clip
        r_t = r.t()
        bias = None if b is None else b.chunk(2)[0] + b.chunk(2)[1]

        def one(x_t: Tensor, states: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            pre = torch.addmm(x_t, states[0], r_t)
            return (f(clipped(pre if bias is None else pre + bias, clip)),)

        return one


class DynamicQuantizeLSTM(TorchKernel[DynamicQuantizeLSTMOp]):
    def run(self, *inputs: Any) -> tuple[Tensor, ...]:
        # onnxruntime's int8 arithmetic is reproduced exactly by the numpy op; torch has no cheaper way to it
        raise Fallback
