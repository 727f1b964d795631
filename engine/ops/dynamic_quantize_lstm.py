"""DynamicQuantizeLSTM (onnxruntime's contrib op, domain com.microsoft): an LSTM with 8-bit weights.

Inputs: X, W ``[dirs, input, 4*hidden]`` and R ``[dirs, hidden, 4*hidden]``
(int8 or uint8 codes, transposed against ONNX LSTM's W and R), B,
sequence_lens, initial_h, initial_c, P (as LSTM), then W_scale,
W_zero_point, R_scale, R_zero_point: one per direction ``[dirs]`` or one per
column ``[dirs, 4*hidden]``. Attributes and outputs are LSTM's.

The result is what onnxruntime's CPU kernel computes, rounding for rounding
(bit-exact against onnxruntime 1.32 on an x86-64 CPU with FMA3 and
AVX512-VNNI, given the same input bits):

* Both products quantize their float operand to uint8 first: the input
  projection all of X's first ``max(sequence_lens)`` steps at once, the
  recurrent product the previous step's hidden rows. Scale
  ``(max(A, 0) - min(A, 0)) / 255`` (1 when A is all zeros), zero point
  ``round-half-even(-min(A, 0) / scale)``, codes
  ``clip(round-half-even(A / scale) + zero_point, 0, 255)``; all in float32.
* The integer sums of ``(a - a_zero) * (w - w_zero)`` are exact; each
  becomes ``float32(sum) * (a_scale * w_scale[column])``, and the recurrent
  product's is added to the input projection's before the bias.
* Sigmoid and Tanh are MLAS's rational approximations evaluated with fused
  multiply-adds, as its FMA3 kernels do (the other activations are exact).
* With more than 4 batch rows, or 2..4 rows and a hidden size up to 256,
  onnxruntime splits the rows over its intra-op threads and quantizes each
  share of the recurrent product separately, so its result depends on its
  thread count. This op splits the same way over the engine's thread count
  (:func:`engine.ops.threads.num_threads`, which corral's onnxruntime
  backend gives its sessions); with one row or one thread nothing is split.
* Rows already past their length feed the recurrent quantization zeros when
  Y is an output, else their held state. (Without Y, onnxruntime feeds a
  zero-length row's uninitialized memory there; this op its initial state.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.graph import Node
from engine.ops import threads
from engine.ops.base import Array
from engine.ops.lstm import LSTM, Product
from engine.ops.mlas import mlas_logistic, mlas_tanh
from engine.ops.recurrent import Activation

F32 = np.float32

def quantize(a: Array) -> tuple[Array, F32]:
    """``a`` as onnxruntime's dynamic uint8 quantization has it: (codes less the zero point, as float32; scale)."""
    lo = F32(a.min(initial=0))  # the range always includes 0
    hi = F32(a.max(initial=0))
    scale = F32(1) if hi == lo else F32((hi - lo) / F32(255))
    zero = np.rint(np.clip(F32(0) - lo / scale, F32(0), F32(255)))
    codes = np.clip(np.rint(a / scale) + zero, F32(0), F32(255))
    return codes - zero, scale


def prepared_weight(codes: Array, zero_point: int) -> Array:
    """Weight codes [K, N] less their zero point, as floats in which every product sum is an exact integer.

    A sum of K products of |a - zero| <= 255 and |w - zero| stays below
    2**24 (float32 integers are exact to there, whatever the summation
    order) when K * 255 * max|w - zero| does; otherwise float64, exact far
    beyond any K.
    """
    wide = codes.astype(np.float64) - np.float64(zero_point)
    bound = codes.shape[0] * 255 * float(np.abs(wide).max(initial=0))
    return wide.astype(F32) if bound < 2 ** 24 else wide


def quantized_product(a: Array, w: Array, w_scale: Array) -> Array:
    """``a`` [M, K] (float32) times the :func:`prepared_weight` ``w`` [K, N] -> [M, N], as onnxruntime's int8 GEMM."""
    codes, scale = quantize(a)
    sums = np.matmul(codes.astype(w.dtype, copy=False), w)  # integers, exact (see prepared_weight)
    return sums.astype(F32) * (scale * w_scale)


def batch_parallel(batch: int, hidden: int) -> bool:
    """Whether onnxruntime splits the batch rows over its threads (UniDirectionalLstm::SetNumThreads)."""
    return batch > 4 or (batch >= 2 and hidden <= 256)


class DynamicQuantizeLSTM(LSTM):
    op_type = "DynamicQuantizeLSTM"
    min_inputs = 12
    max_inputs = 12
    transposed_weights = True

    def setup(self, node: Node) -> None:
        super().setup(node)
        # (the weight array, direction) -> (that array, its prepared_weight)
        self._prepared: dict[tuple[int, int], tuple[Array, Array]] = {}

    def run(self, x: Array, w: Array, r: Array, b: Array | None = None,
            sequence_lens: Array | None = None, initial_h: Array | None = None, initial_c: Array | None = None,
            p: Array | None = None, w_scale: Array | None = None, w_zero_point: Array | None = None,
            r_scale: Array | None = None, r_zero_point: Array | None = None) -> tuple[Array, Array, Array]:
        if x.dtype != np.float32:
            raise ValueError(f"X must be float32, got {x.dtype}")
        for name, v in (("W", w), ("R", r)):
            if v.dtype not in (np.int8, np.uint8):
                raise ValueError(f"{name} must be int8 or uint8, got {v.dtype}")
        quantization = (w_scale, w_zero_point, r_scale, r_zero_point)
        if any(q is None for q in quantization):
            raise ValueError("W_scale, W_zero_point, R_scale and R_zero_point are all required")
        return self.compute(x, w, r, b, sequence_lens, initial_h, initial_c, p,
                            tuple(np.asarray(q) for q in quantization if q is not None))

    def _weights(self, codes: Array, scale: Array, zero_point: Array, d: int, name: str) -> tuple[Array, Array]:
        """Direction ``d``'s (:func:`prepared_weight` [K, 4*hidden], scales [1 or 4*hidden] as float32)."""
        columns = codes.shape[2]
        per_direction: list[Array] = []
        for what, v in (("scale", scale), ("zero point", zero_point)):
            if v.shape not in ((self.directions,), (self.directions, columns)):
                raise ValueError(f"{name} {what} must have shape [{self.directions}] or "
                                 f"[{self.directions}, {columns}], got {list(v.shape)}")
            per_direction.append(v[d].reshape(-1))
        scales, zeros = per_direction
        if zeros.dtype != codes.dtype:
            raise ValueError(f"{name} zero point must be {codes.dtype} like {name}, got {zeros.dtype}")
        # onnxruntime's kernel takes one zero point per direction: zero for int8, the same everywhere for uint8
        if codes.dtype == np.int8 and zero_point.ndim == 2 and zeros.any():
            raise ValueError(f"{name}'s int8 per-column zero points must be zero")
        if (zeros != zeros[0]).any():
            raise ValueError(f"{name}'s zero points must be one value per direction")
        key = (id(codes), d)
        kept = self._prepared.get(key)
        if kept is None or kept[0] is not codes:
            kept = (codes, prepared_weight(codes[d], int(zeros[0])))
            self._prepared[key] = kept
        return kept[1], scales.astype(F32)

    def project(self, xs: Array, w: Array, d: int, lengths: Array | None,
                quantization: tuple[Array, ...]) -> Array:
        codes, scales = self._weights(w, quantization[0], quantization[1], d, "W")
        seq, batch, features = xs.shape
        steps = seq if lengths is None else int(lengths.max(initial=0))
        proj = np.zeros((seq, batch, codes.shape[1]), F32)  # [seq, batch, 4*hidden]
        if steps:
            # onnxruntime quantizes all the steps it runs as one matrix (reversing a row does not change the set)
            proj[:steps] = quantized_product(xs[:steps].reshape(steps * batch, features), codes, scales).reshape(
                steps, batch, -1)
        return proj

    def product(self, r: Array, d: int, dtype: np.dtype, quantization: tuple[Array, ...]) -> Product:
        codes, scales = self._weights(r, quantization[2], quantization[3], d, "R")
        hidden = codes.shape[0]
        share = 0  # rows per thread when onnxruntime splits the batch; 0: one matrix

        def add(h: Array, proj: Array) -> Array:
            nonlocal share
            batch = h.shape[0]
            if not share:
                share = -(-batch // max(1, threads.num_threads())) if batch_parallel(batch, hidden) else batch
            if share >= batch:
                return quantized_product(h, codes, scales) + proj
            return np.concatenate([quantized_product(h[i:i + share], codes, scales) for i in range(0, batch, share)]
                                  ) + proj

        return add

    def activation_functions(self, acts: list[Activation]) -> list[Callable[[Array], Array]]:
        mlas: dict[str, Callable[[Array], Array]] = {"sigmoid": mlas_logistic, "tanh": mlas_tanh}
        return [mlas.get(a.name, a) for a in acts]
