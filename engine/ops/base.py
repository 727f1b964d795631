"""The contract every op implements, and the checks and error wrapping it gets for free.

An op is built once from its node (attributes parsed and checked in
:meth:`Op.setup`) and then called with numpy arrays. Optional inputs that the
node leaves empty arrive as ``None``. Any failure surfaces as an
:class:`~engine.exceptions.OpError` naming the op, the node and the input
shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, overload

import numpy as np

from engine.exceptions import OpError
from engine.graph import AttrValue, Node

Array = np.ndarray


class Op:
    """One op type. Subclasses set ``op_type`` and the input/output arity and implement :meth:`run`."""

    op_type: ClassVar[str] = ""
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int] = 1
    # Ops whose result depends only on input shapes/values and carries no
    # state: constant folding may evaluate them at compile time.
    foldable: ClassVar[bool] = True

    def __init__(self, node: Node) -> None:
        self.node = node
        self.name = node.label
        try:
            self.setup(node)
        except OpError:
            raise
        except Exception as exc:
            raise OpError(self.op_type or node.op_type, self.name, f"bad attributes: {exc}") from exc

    # -- for subclasses --------------------------------------------------------
    def setup(self, node: Node) -> None:
        """Parse and check attributes once. Default: no attributes."""

    def run(self, *inputs: Any) -> Array | tuple[Array, ...]:
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------
    def fail(self, message: str) -> OpError:
        return OpError(self.op_type, self.name, message)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    # -- the call the runtime makes ------------------------------------------
    def __call__(self, inputs: Sequence[Array | None]) -> list[Array]:
        count = len(inputs)
        while count and inputs[count - 1] is None:
            count -= 1
        if count < self.min_inputs or count > self.max_inputs:
            raise OpError(self.op_type, self.name,
                          f"takes {self.min_inputs}..{self.max_inputs} inputs, got {count}")
        try:
            result = self.run(*inputs)
        except OpError:
            raise
        except Exception as exc:
            shapes = [None if x is None else list(np.shape(x)) for x in inputs]
            raise OpError(self.op_type, self.name, f"{type(exc).__name__}: {exc}", shapes) from exc
        if isinstance(result, tuple):
            return list(result)
        return [result]


class AxesOp(Op):
    """An op whose ``axes`` moved from an attribute (older opsets) to an optional second input."""

    min_inputs = 1
    max_inputs = 2

    def setup(self, node: Node) -> None:
        self.attr_axes = as_int_list(node.attrs.get("axes"))

    def axes(self, axes: Array | None) -> list[int] | None:
        """The input's axes when given, else the attribute's; None when neither is."""
        return as_int_list(axes) if axes is not None else self.attr_axes


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


@overload
def as_int_list(value: None) -> None: ...
@overload
def as_int_list(value: AttrValue | Sequence[int]) -> list[int]: ...
@overload
def as_int_list(value: AttrValue | Sequence[int] | None) -> list[int] | None: ...
def as_int_list(value: AttrValue | Sequence[int] | None) -> list[int] | None:
    if value is None:
        return None
    return [int(v) for v in np.asarray(value).reshape(-1)]
