"""Einsum (opset 12): numpy ``einsum`` over the node's inputs, per its ``equation`` attribute.

Subscripts are letters (a-z, A-Z) with at most one ``...`` per term; spaces
are ignored. A letter repeated within a term takes a diagonal; letters
missing from the output are summed. Without ``->`` (implicit mode) the
output is ``...`` (when any term has one) followed by the letters that occur
exactly once, sorted; the equation is made explicit once, in
:func:`parse_equation`, so every backend reads the same output.
Operands of mixed dtypes are computed in the largest operand's, as MatMul
does.
"""

from __future__ import annotations

import string
from collections import Counter

import numpy as np

from engine.graph import Node
from engine.ops.base import Array, Op

ELLIPSIS = "..."
LETTERS = frozenset(string.ascii_letters)


def _check_term(term: str, where: str) -> str:
    """The term's letters (ellipsis removed), after checking it is well formed."""
    letters = term.replace(ELLIPSIS, "", 1)
    if ELLIPSIS in letters or "." in letters:
        raise ValueError(f"{where} {term!r}: at most one '...' per term, and no other '.'")
    bad = sorted(set(letters) - LETTERS)
    if bad:
        raise ValueError(f"{where} {term!r}: subscripts must be letters, got {''.join(bad)!r}")
    return letters


def parse_equation(equation: str) -> tuple[list[str], str]:
    """(the input terms, the explicit output term) of an ONNX einsum equation."""
    text = "".join(equation.split())
    lhs, arrow, out = text.partition("->")
    if "->" in out or "-" in lhs or ">" in lhs:
        raise ValueError(f"equation {equation!r}: expected 'terms->output' or 'terms'")
    terms = lhs.split(",")
    counts: Counter[str] = Counter()
    for term in terms:
        counts.update(_check_term(term, "input term"))
    has_ellipsis = any(ELLIPSIS in t for t in terms)
    if not arrow:
        # implicit mode, as numpy: broadcast dims first, then the letters seen once, in sorted (ASCII) order
        out = (ELLIPSIS if has_ellipsis else "") + "".join(sorted(k for k, n in counts.items() if n == 1))
    out_letters = _check_term(out, "output term")
    if len(set(out_letters)) != len(out_letters):
        raise ValueError(f"equation {equation!r}: the output repeats a subscript")
    missing = sorted(set(out_letters) - set(counts))
    if missing:
        raise ValueError(f"equation {equation!r}: output subscripts {''.join(missing)!r} are in no input")
    if ELLIPSIS in out and not has_ellipsis:
        raise ValueError(f"equation {equation!r}: the output has '...' but no input does")
    return terms, out


def explicit_equation(equation: str) -> str:
    """The equation as ``terms->output``, without spaces."""
    terms, output = parse_equation(equation)
    return ",".join(terms) + "->" + output


class Einsum(Op):
    op_type = "Einsum"
    min_inputs = 1
    max_inputs = 2**31 - 1

    def setup(self, node: Node) -> None:
        raw = node.attrs.get("equation")
        if raw is None:
            raise ValueError("the equation attribute is required")
        equation = raw.decode() if isinstance(raw, bytes) else str(raw)
        self.terms, self.output = parse_equation(equation)
        self.equation = explicit_equation(equation)

    def check(self, shapes: list[tuple[int, ...]]) -> None:
        """Operand count and ranks against the equation's terms."""
        if len(shapes) != len(self.terms):
            raise ValueError(f"equation {self.equation!r} has {len(self.terms)} terms for {len(shapes)} inputs")
        for i, (term, shape) in enumerate(zip(self.terms, shapes)):
            letters = len(term.replace(ELLIPSIS, "", 1))
            if len(shape) != letters and not (ELLIPSIS in term and len(shape) >= letters):
                raise ValueError(f"input {i} has rank {len(shape)}, but its term {term!r} names {letters} axes")

    def run(self, *inputs: Array | None) -> Array:
        if any(x is None for x in inputs):
            raise ValueError("every input must be given; an empty input name is not allowed here")
        xs = [np.asarray(x) for x in inputs]
        self.check([x.shape for x in xs])
        dtype = max(xs, key=lambda x: x.size).dtype  # the first of the largest, as align_operands picks
        if dtype == np.float16:
            # numpy's optimized paths would accumulate float16 products in float16
            compute = [x.astype(np.float32) for x in xs]
        else:
            compute = [x if x.dtype == dtype else x.astype(dtype) for x in xs]
        # optimize: contract pairs through BLAS where it can (floats only; integer paths gain nothing)
        optimize = len(xs) > 1 and dtype.kind == "f"
        return np.asarray(np.einsum(self.equation, *compute, optimize=optimize)).astype(dtype, copy=False)
