"""The graph executor: runs an ordered node list over numpy values (or a device backend's tensors), with plans."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.backends.base import Kernel
from engine.exceptions import InputError
from engine.graph import Node

log = logging.getLogger(__name__)

# (input name, item-with-batch shape, dtype) for every fed input, in feed order
Signature = tuple[tuple[str, tuple[int, ...], str], ...]

# Execution plans kept per executor; the least recently used goes first.
MAX_PLANS = 16

def _relu_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.maximum(x, x.dtype.type(0), out=out)


# Elementwise float ops the executor may run into a dying input's buffer
# instead of a new array. Each writes exactly what the op's kernel returns
# (checked bit for bit on the run that records the plan).
INPLACE_KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Relu": _relu_into,
    "Neg": np.negative,
    "Abs": np.absolute,
    "Sqrt": np.sqrt,
    "Exp": np.exp,
    "Tanh": np.tanh,
}


@dataclass
class Step:
    """One kernel call: reads ``inputs`` slots, writes ``outputs`` slots, then frees the ``frees`` slots."""

    kernel: Kernel
    inputs: list[str]
    outputs: list[str]
    frees: list[str] = field(default_factory=list)
    inplace: Callable[..., np.ndarray] | None = None


@dataclass
class Plan:
    """What the executor learned running one input-shape signature.

    ``shapes`` holds every value's shape; ``inplace`` maps a step index to the
    position of the input whose (dying, unshared) buffer receives the step's
    result. Plans are hints: each in-place write is re-checked when it runs.
    """

    signature: Signature
    shapes: dict[str, tuple[int, ...]]
    inplace: dict[int, int]

    def to_json(self) -> dict[str, Any]:
        return {"signature": [[n, list(s), d] for n, s, d in self.signature],
                "shapes": {k: list(v) for k, v in self.shapes.items()},
                "inplace": [[i, j] for i, j in sorted(self.inplace.items())]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        signature = tuple((str(n), tuple(int(d) for d in s), str(t)) for n, s, t in data["signature"])
        shapes = {str(k): tuple(int(d) for d in v) for k, v in data["shapes"].items()}
        return cls(signature, shapes, {int(i): int(j) for i, j in data["inplace"]})


def _is_device_value(value: Any) -> bool:
    """A device backend's tensor (anything array-like with a shape that is not a numpy array)."""
    return not isinstance(value, (np.ndarray, np.generic)) and hasattr(value, "shape") and hasattr(value, "dtype") \
        and not isinstance(value, (list, tuple))


def _shape_dtype(value: Any) -> tuple[tuple[int, ...], str]:
    """(shape, numpy dtype string) of a numpy value or a device tensor, without moving the tensor."""
    if _is_device_value(value):
        name = str(value.dtype).rpartition(".")[2]  # torch.float32 -> float32
        try:
            return tuple(int(d) for d in value.shape), np.dtype(name).str
        except TypeError:
            return tuple(int(d) for d in value.shape), name
    return tuple(np.shape(value)), np.asarray(value).dtype.str


def _read_only(value: Any) -> np.ndarray:
    """A read-only view: the executor never writes into it (nor into views of it)."""
    view = np.asarray(value).view()
    view.flags.writeable = False
    return view


class Executor:
    """Runs an ordered node list over numpy values.

    Each value is dropped after its last use. The first run at a new
    input-shape signature records a :class:`Plan` (value shapes and in-place
    opportunities); later runs at that signature reuse it. At most
    ``max_plans`` plans are kept, least recently used evicted first.
    """

    def __init__(self, nodes: Sequence[Node], kernels: Sequence[Kernel], constants: Mapping[str, np.ndarray],
                 outputs: Sequence[str], *, max_plans: int = MAX_PLANS,
                 to_device: Callable[[Any], Any] | None = None,
                 to_host: Callable[[Any], np.ndarray] | None = None,
                 run_context: Callable[[], contextlib.AbstractContextManager[Any]] | None = None) -> None:
        self.nodes = list(nodes)
        # Weights are read-only views, so that no in-place write can reach them.
        self.constants = {name: _read_only(value) for name, value in constants.items()}
        # A device backend's boundary hooks: weights and feeds go to the device
        # once, outputs come back to numpy (None: values stay numpy throughout).
        self.to_device = to_device
        self.to_host = to_host
        # entered around each run: the torch backend's inference mode (no autograd bookkeeping)
        self.run_context: Callable[[], contextlib.AbstractContextManager[Any]] = run_context or contextlib.nullcontext
        if to_device is not None:
            self.constants = {name: to_device(value) for name, value in self.constants.items()}
        self.outputs = list(outputs)
        self.max_plans = max(1, int(max_plans))
        self.plans: OrderedDict[Signature, Plan] = OrderedDict()
        self.plans_recorded = 0
        self._lock = threading.Lock()
        last_use: dict[str, int] = {}
        for idx, node in enumerate(nodes):
            for name in node.inputs:
                if name:
                    last_use[name] = idx
        keep = set(self.outputs) | set(self.constants)
        self.steps: list[Step] = []
        for idx, (node, kernel) in enumerate(zip(nodes, kernels)):
            frees = [n for n in dict.fromkeys(node.inputs) if n and last_use.get(n) == idx and n not in keep]
            inplace = INPLACE_KERNELS.get(node.op_type) if not node.domain and len(node.outputs) == 1 else None
            self.steps.append(Step(kernel, list(node.inputs), list(node.outputs), frees, inplace))

    # ------------------------------------------------------------------ plans
    @staticmethod
    def signature(feeds: Mapping[str, Any]) -> Signature:
        return tuple((name,) + _shape_dtype(v) for name, v in feeds.items())

    def plan_for(self, signature: Signature) -> Plan | None:
        with self._lock:
            plan = self.plans.get(signature)
            if plan is not None:
                self.plans.move_to_end(signature)
            return plan

    def add_plan(self, plan: Plan) -> None:
        with self._lock:
            self.plans[plan.signature] = plan
            self.plans.move_to_end(plan.signature)
            while len(self.plans) > self.max_plans:
                self.plans.popitem(last=False)

    # ------------------------------------------------------------------ running
    def run(self, feeds: Mapping[str, Any], keep_on_device: bool = False) -> dict[str, Any]:
        """The graph's outputs for ``feeds`` (numpy arrays, or a device backend's tensors).

        ``keep_on_device=True`` (device backends) returns the outputs as the
        backend's tensors, still on the device and in its precision, without
        waiting for the device: the caller downloads them when it wants
        (see :mod:`engine.pipeline`). Without a device backend it changes nothing.
        """
        live: dict[str, Any] = {name: value if _is_device_value(value) else _read_only(value)
                                for name, value in feeds.items()}
        signature = self.signature(live)
        if self.to_device is not None:
            live = {name: self.to_device(value) for name, value in live.items()}
        elif any(_is_device_value(v) for v in live.values()):
            raise InputError("this model runs on numpy arrays; got a device tensor as input "
                             "(compile with --backend torch to feed tensors)")
        with self.run_context():
            return self._run(live, signature, keep_on_device and self.to_host is not None)

    def _run(self, live: dict[str, Any], signature: Signature, keep: bool) -> dict[str, Any]:
        plan = self.plan_for(signature)
        if plan is None:
            outputs, plan = self._record(live, signature, keep)
            self.plans_recorded += 1
            self.add_plan(plan)
            return outputs
        constants = self.constants
        for idx, step in enumerate(self.steps):
            args = [(live[n] if n in live else constants[n]) if n else None for n in step.inputs]
            slot = plan.inplace.get(idx)
            if slot is not None and self._writable(step, slot, args, live, plan):
                results = [self._run_inplace(step, args, slot)]
            else:
                results = step.kernel(args)
            self._store(step, results, live)
        return self._collect(live, keep)

    def _record(self, live: dict[str, Any], signature: Signature, keep: bool = False) -> tuple[dict[str, Any], Plan]:
        shapes = {name: tuple(v.shape) for name, v in live.items()}
        inplace: dict[int, int] = {}
        constants = self.constants
        for idx, step in enumerate(self.steps):
            args = [(live[n] if n in live else constants[n]) if n else None for n in step.inputs]
            results = step.kernel(args)
            for name, value in zip(step.outputs, results):
                if name:
                    shapes[name] = tuple(np.shape(value))
            if step.inplace is not None and len(results) == 1:
                slot = self._inplace_slot(step, args, results[0], live)
                if slot is not None:
                    inplace[idx] = slot
            self._store(step, results, live)
        return self._collect(live, keep), Plan(signature, shapes, inplace)

    def _inplace_slot(self, step: Step, args: list[Any], result: Any, live: dict[str, np.ndarray]) -> int | None:
        """The input position whose buffer could have held ``result``, verified on this run's values."""
        if not isinstance(result, np.ndarray) or result.dtype.kind != "f":
            return None
        if any(not isinstance(a, np.ndarray) or a.dtype != result.dtype for a in args):
            return None
        for slot, name in enumerate(step.inputs):
            buf = args[slot]
            if name not in step.frees or buf.shape != result.shape:
                continue
            if not self._unshared(buf, name, live):
                continue
            trial = np.empty_like(result)
            trial[...] = buf
            trial_args = [trial if n == name else a for n, a in zip(step.inputs, args)]
            assert step.inplace is not None
            with np.errstate(all="ignore"):
                step.inplace(*trial_args, out=trial)
            if np.array_equal(trial, result, equal_nan=True):
                return slot
        return None

    @staticmethod
    def _unshared(buf: np.ndarray, name: str, live: Mapping[str, np.ndarray]) -> bool:
        if not (buf.flags.writeable and buf.flags.c_contiguous):
            return False
        return not any(k != name and isinstance(other, np.ndarray) and np.may_share_memory(buf, other)
                       for k, other in live.items())

    def _writable(self, step: Step, slot: int, args: list[Any], live: Mapping[str, np.ndarray], plan: Plan) -> bool:
        buf = args[slot]
        name = step.inputs[slot]
        if not isinstance(buf, np.ndarray) or buf.shape != plan.shapes.get(step.outputs[0]):
            return False
        if any(not isinstance(a, np.ndarray) or a.dtype != buf.dtype for a in args):
            return False
        return buf.dtype.kind == "f" and self._unshared(buf, name, live)

    @staticmethod
    def _run_inplace(step: Step, args: list[Any], slot: int) -> np.ndarray:
        assert step.inplace is not None
        with np.errstate(all="ignore"):
            return step.inplace(*args, out=args[slot])

    @staticmethod
    def _store(step: Step, results: Sequence[np.ndarray], live: dict[str, np.ndarray]) -> None:
        for name, value in zip(step.outputs, results):
            if name:
                live[name] = value
        for name in step.frees:
            live.pop(name, None)

    def _collect(self, live: Mapping[str, Any], keep: bool = False) -> dict[str, Any]:
        out = {}
        for name in self.outputs:
            value = live[name] if name in live else self.constants[name]
            if keep:
                # a device value as it is; a weight is cloned so the caller cannot write into it
                out[name] = value.clone() if name in self.constants and hasattr(value, "clone") else value
                continue
            if self.to_host is not None:
                value = self.to_host(value)
            # never hand back a weight or the caller's own feed
            out[name] = value if value.flags.writeable else np.array(value)
        return out
