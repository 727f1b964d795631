"""What LSTM, GRU, RNN and DynamicQuantizeLSTM share: attributes, activations, layouts and the time loop.

Layouts: with ``layout`` 0 (the default) X is ``[seq, batch, input]``, Y
``[seq, num_directions, batch, hidden]`` and the states ``[num_directions,
batch, hidden]``; with ``layout`` 1 X is ``[batch, seq, input]``, Y ``[batch,
seq, num_directions, hidden]`` and the states ``[batch, num_directions,
hidden]``. The ops compute in layout 0 and convert at the edges.

``sequence_lens`` gives each batch row its own length: the reverse direction
reads a row's steps from its last valid one back, steps past a row's length
leave its state alone and write zeros to Y, and a row of length 0 ends with
zero states (as onnxruntime does).

Activation functions are named as ONNX lists them, case-insensitively;
``activation_alpha`` / ``activation_beta`` are consumed in order by the
functions that take them, the others fall back to their defaults
(onnxruntime's reading of the attributes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op

DIRECTIONS = ("forward", "reverse", "bidirectional")


class Shaped(Protocol):
    """An array or a tensor: :meth:`RecurrentOp.check` reads only shapes (the torch kernels share it)."""

    @property
    def shape(self) -> Sequence[int]: ...


def _sigmoid(x: Array, alpha: float, beta: float) -> Array:
    # the tanh form does not overflow for large |x|, unlike 1 / (1 + exp(-x))
    half = x.dtype.type(0.5)
    return half * np.tanh(half * x) + half


def _elu(x: Array, alpha: float, beta: float) -> Array:
    return np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0)))


# name -> (function, takes alpha, takes beta, default alpha, default beta)
ACTIVATIONS: dict[str, tuple[Callable[[Array, float, float], Array], bool, bool, float, float]] = {
    "sigmoid": (_sigmoid, False, False, 0.0, 0.0),
    "tanh": (lambda x, a, b: np.tanh(x), False, False, 0.0, 0.0),
    "relu": (lambda x, a, b: np.maximum(x, 0), False, False, 0.0, 0.0),
    "affine": (lambda x, a, b: a * x + b, True, True, 0.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), True, False, 0.01, 0.0),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), True, False, 0.0, 0.0),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), True, True, 0.0, 0.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), True, True, 0.2, 0.5),
    "elu": (_elu, True, False, 1.0, 0.0),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), False, False, 0.0, 0.0),
    "softplus": (lambda x, a, b: np.logaddexp(0, x), False, False, 0.0, 0.0),
}


@dataclass(frozen=True)
class Activation:
    """One activation function with its alpha and beta."""

    name: str
    alpha: float = 0.0
    beta: float = 0.0

    def __call__(self, x: Array) -> Array:
        fn = ACTIVATIONS[self.name][0]
        return np.asarray(fn(x, self.alpha, self.beta), dtype=x.dtype)


def _list_attr(node: Node, name: str) -> list[str | int | float]:
    value = node.attrs.get(name, [])
    if isinstance(value, int | float | str):
        raise TypeError(f"attribute {name!r} must be a list, got {value!r}")
    return list(value)


def parse_activations(node: Node, defaults: Sequence[str], directions: int) -> list[list[Activation]]:
    """The node's activation functions, one list of ``len(defaults)`` per direction."""
    names = [str(n) for n in _list_attr(node, "activations")] or list(defaults) * directions
    if directions == 2 and len(names) == len(defaults):
        names = names * 2  # one direction's list for both
    if len(names) != len(defaults) * directions:
        raise ValueError(f"expected {len(defaults) * directions} activations, got {names}")
    alphas = [float(a) for a in _list_attr(node, "activation_alpha")]
    betas = [float(b) for b in _list_attr(node, "activation_beta")]
    made: list[Activation] = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
        _, takes_alpha, takes_beta, alpha, beta = ACTIVATIONS[key]
        if takes_alpha and alphas:
            alpha = alphas.pop(0)
        if takes_beta and betas:
            beta = betas.pop(0)
        made.append(Activation(key, alpha, beta))
    n = len(defaults)
    return [made[d * n:(d + 1) * n] for d in range(directions)]


def step_order(seq: int, lengths: Array | None, reverse: bool) -> Array | None:
    """``[seq, batch]``: the time index each row reads at each step, None when that is plain order.

    Reverse rows read their own last valid step first; steps past a row's
    length keep their index. Each row's column is its own inverse, so the
    same gather puts the steps' outputs back in time order.
    """
    if not reverse:
        return None
    steps = np.arange(seq)[:, None]  # [seq, 1]
    if lengths is None:
        return np.broadcast_to(seq - 1 - steps, (seq, 1))
    return np.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)


def in_time_order(values: Array, order: Array | None) -> Array:
    """``values`` ``[seq, batch, ...]`` gathered by :func:`step_order`'s indices."""
    if order is None:
        return values
    if order.shape[1] == 1:
        return values[order[:, 0]]
    return values[order, np.arange(values.shape[1])[None, :]]


# One time step: (this step's projected input, the hidden state the recurrent product reads, the states)
# -> the new states, hidden state first.
Cell = Callable[[Array, Array, tuple[Array, ...]], tuple[Array, ...]]


def scan(cell: Cell, xs: Array, state0: tuple[Array, ...], lengths: Array | None, reverse: bool,
         product_reads_output: bool = False) -> tuple[Array, tuple[Array, ...]]:
    """Run one direction. ``xs`` ``[seq, batch, k]`` (the input projection), states ``[batch, hidden]``.

    Returns Y ``[seq, batch, hidden]`` in time order and the final states.
    ``product_reads_output``: the recurrent product of a step reads the
    previous step's Y row (zeros for rows already done) rather than the held
    state, as onnxruntime's LSTM does when Y is an output; it changes only
    what onnxruntime's dynamic quantization of that product sees.
    """
    seq, batch = xs.shape[:2]
    order = step_order(seq, lengths, reverse)
    xs = in_time_order(xs, order)
    hidden = state0[0].shape[-1]
    ys = np.zeros((seq, batch, hidden), dtype=state0[0].dtype)
    steps = seq if lengths is None else int(lengths.max(initial=0))
    states = state0
    read = state0[0]
    for s in range(steps):
        new = cell(xs[s], read, states)
        if lengths is None or bool((lengths > s).all()):
            states = new
            ys[s] = new[0]
        else:
            active = (lengths > s)[:, None]  # [batch, 1]
            states = tuple(np.where(active, n, o) for n, o in zip(new, states))
            ys[s] = np.where(active, new[0], 0)
        read = ys[s] if product_reads_output else states[0]
    if lengths is not None and bool((lengths == 0).any()):
        empty = (lengths == 0)[:, None]
        states = tuple(np.where(empty, 0, st).astype(st.dtype) for st in states)
    return in_time_order(ys, order), states


def clipped(x: Array, clip: float | None) -> Array:
    """The input of an activation, bounded to ``[-clip, clip]`` when the node sets ``clip``."""
    return x if clip is None else np.clip(x, -clip, clip)


class RecurrentOp(Op):
    """The part of LSTM, GRU and RNN that is the same: attributes, input checks, layouts and directions."""

    min_inputs = 3
    max_inputs = 6
    foldable = False  # a whole sequence model over constants is not worth doing at compile time
    gates: ClassVar[int] = 1
    default_activations: ClassVar[tuple[str, ...]] = ("Tanh",)

    def setup(self, node: Node) -> None:
        self.hidden_size = node.int_attr("hidden_size")
        self.direction = str(node.attrs.get("direction", "forward"))
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        self.directions = 2 if self.direction == "bidirectional" else 1
        self.layout = node.int_attr("layout", 0)
        if self.layout not in (0, 1):
            raise ValueError(f"layout must be 0 or 1, got {self.layout}")
        self.clip = node.float_attr("clip")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive, got {self.clip}")
        self.activations = parse_activations(node, self.default_activations, self.directions)
        # whether the node asks for Y (onnxruntime's quantized LSTM computes differently without it)
        self.want_y = bool(node.outputs and node.outputs[0])

    def reverse(self, d: int) -> bool:
        """Whether direction ``d`` runs backwards in time."""
        return self.direction == "reverse" or d == 1

    def seq_major(self, x: Array) -> Array:
        """X (or a state) as layout 0 has it."""
        if self.layout == 0:
            return x
        if x.ndim != 3:
            raise ValueError(f"expected a 3-D tensor, got shape {list(x.shape)}")
        return x.transpose(1, 0, 2)

    def output_layout(self, y: Array, *states: Array) -> tuple[Array, ...]:
        """Y ``[seq, dirs, batch, hidden]`` and the states ``[dirs, batch, hidden]`` in the node's layout."""
        if self.layout == 0:
            return (y, *states)
        return (np.ascontiguousarray(y.transpose(2, 0, 1, 3)),
                *(np.ascontiguousarray(s.transpose(1, 0, 2)) for s in states))

    def check(self, x: Shaped, w: Shaped, r: Shaped, b: Shaped | None, sequence_lens: Array | None,
              transposed: bool = False) -> tuple[int, Array | None]:
        """Check the shapes of the common inputs; (hidden size, the lengths as int64 or None: all full).

        ``transposed``: W is ``[dirs, input, gates*hidden]`` and R ``[dirs, hidden, gates*hidden]``.
        """
        if len(x.shape) != 3:
            raise ValueError(f"X must be 3-D, got shape {list(x.shape)}")
        hidden = self.hidden_size if self.hidden_size is not None else int(r.shape[-1])
        g = self.gates * hidden
        seq, batch, features = x.shape
        w_shape = (self.directions, features, g) if transposed else (self.directions, g, features)
        if tuple(w.shape) != w_shape:
            raise ValueError(f"W must have shape {list(w_shape)}, got {list(w.shape)}")
        r_shape = (self.directions, hidden, g) if transposed else (self.directions, g, hidden)
        if tuple(r.shape) != r_shape:
            raise ValueError(f"R must have shape {list(r_shape)}, got {list(r.shape)}")
        if b is not None and tuple(b.shape) != (self.directions, 2 * g):
            raise ValueError(f"B must have shape {[self.directions, 2 * g]}, got {list(b.shape)}")
        if sequence_lens is None:
            return hidden, None
        lengths = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
        if lengths.shape != (batch,):
            raise ValueError(f"sequence_lens must have shape [{batch}], got {list(np.shape(sequence_lens))}")
        if lengths.size and (lengths.min() < 0 or lengths.max() > seq):
            raise ValueError(f"sequence_lens must lie in 0..{seq}, got {lengths.tolist()}")
        return hidden, None if bool((lengths == seq).all()) else lengths

    def initial(self, state: Array | None, batch: int, hidden: int, dtype: np.dtype) -> Array:
        """An initial state in layout 0, zeros when the node gives none."""
        shape = (self.directions, batch, hidden)
        if state is None:
            return np.zeros(shape, dtype)
        state = self.seq_major(np.asarray(state)).astype(dtype, copy=False)
        if tuple(state.shape) != shape:
            raise ValueError(f"an initial state must have shape {list(shape)} in layout 0, "
                             f"got {list(state.shape)}")
        return state

    def hidden_only(self, x: Array, w: Array, r: Array, b: Array | None, sequence_lens: Array | None,
                    initial_h: Array | None, make_cell: CellMaker) -> tuple[Array, Array]:
        """(Y, Y_h) of a layer whose only state is H (GRU, RNN); ``make_cell`` builds each direction's step."""
        dtype = compute_dtype(x)
        xs = self.seq_major(x).astype(dtype, copy=False)  # [seq, batch, input]
        hidden, lengths = self.check(xs, w, r, b, sequence_lens)
        h0 = self.initial(initial_h, xs.shape[1], hidden, dtype)  # [dirs, batch, hidden]
        bias = None if b is None else b.astype(dtype, copy=False)
        ys, hs = [], []
        for d in range(self.directions):
            proj = np.matmul(xs, w[d].astype(dtype, copy=False).T)  # [seq, batch, gates*hidden]
            wb, rb = (None, None) if bias is None else np.split(bias[d], 2)
            cell = make_cell(self.activations[d], r[d].astype(dtype, copy=False), wb, rb)
            y, (h_n,) = scan(cell, proj, (h0[d],), lengths, self.reverse(d))
            ys.append(y)
            hs.append(h_n)
        y_out, h_out = self.output_layout(np.stack(ys, axis=1), np.stack(hs))
        return y_out.astype(x.dtype, copy=False), h_out.astype(x.dtype, copy=False)


# (a direction's activations, its R [gates*hidden, hidden], Wb and Rb [gates*hidden] or None) -> its step
CellMaker = Callable[[list[Activation], Array, Array | None, Array | None], Cell]


def compute_dtype(x: Array) -> np.dtype:
    """float64 stays float64; everything else computes in float32."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
