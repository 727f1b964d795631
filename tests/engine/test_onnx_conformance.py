"""ONNX's own node test cases, through import + compile + run, on every backend.

Every case whose nodes all use op types in ``engine.ops.SUPPORTED_OPS`` runs,
except the cases that use an element type corral does not store, and the
two that pass a sequence or optional value instead of a tensor (each listed
with its reason in ``EXCLUDED``). Failures say which stage broke:
``[import]``, ``[compile]`` or ``[run]``/``[compare]`` (the op).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

from engine import compile
from engine.exceptions import EngineError
from engine.importers import OnnxImportOptions, import_onnx
from engine.importers.onnx_graph import DEFAULT_DOMAINS, ONNX_TO_NUMPY
from engine.op_table import MS_OPS
from engine.ops import SUPPORTED_OPS
from engine.tensors import DTYPE_TO_PROTO
from tests.engine.backend_names import BACKENDS

RTOL = 1e-3
ATOL = 1e-5

# The ONNX element types corral does not store. A case is excluded only for
# using one of these, or for passing a sequence/optional (not a tensor) value.
UNSTORED_TYPES = sorted(name for name, code in onnx.TensorProto.DataType.items()
                        if code not in ONNX_TO_NUMPY and name != "UNDEFINED")
NON_TENSOR_REASON = "non-tensor value (sequence/optional)"


def _type_codes(type_proto: Any) -> tuple[list[int], bool]:
    """Element type codes inside a TypeProto, and whether it is something other than a tensor."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return [type_proto.tensor_type.elem_type], False
    if kind == "sequence_type":
        return _type_codes(type_proto.sequence_type.elem_type)[0], True
    if kind == "optional_type":
        return _type_codes(type_proto.optional_type.elem_type)[0], True
    if kind == "sparse_tensor_type":
        return [type_proto.sparse_tensor_type.elem_type], True
    return [], kind is not None


def exclusion_reason(case: Any) -> str | None:
    """Why a case cannot run on corral (an unstored element type), or None."""
    graph = case.model.graph
    codes: list[int] = []
    non_tensor = False
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        found, other = _type_codes(vi.type)
        codes += found
        non_tensor |= other
    codes += [t.data_type for t in graph.initializer]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                codes.append(attr.t.data_type)
            if node.op_type in ("Cast", "CastLike") and attr.name == "to":
                codes.append(attr.i)
    unstored = sorted({onnx.TensorProto.DataType.Name(c) for c in codes if c and c not in ONNX_TO_NUMPY})
    if unstored:
        return "unstored dtype " + "/".join(unstored)
    if non_tensor:
        return NON_TENSOR_REASON
    return None


def _claimed(case: Any) -> bool:
    return all(n.domain in DEFAULT_DOMAINS and n.op_type in SUPPORTED_OPS for n in case.model.graph.node)


def _collect() -> tuple[list[Any], dict[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        cases = [c for c in collect_testcases() if c.kind == "node" and _claimed(c)]
    runnable, excluded = [], {}
    for case in cases:
        reason = exclusion_reason(case)
        if reason:
            excluded[case.name] = reason
        else:
            runnable.append(case)
    return runnable, excluded


RUNNABLE, EXCLUDED = _collect()


def _array(value: Any) -> np.ndarray:
    """Case data is numpy arrays, or TensorProtos where the exact bits matter (the Cast cases)."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def _compare(name: str, got: Any, want: np.ndarray, case: Any) -> None:
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"[compare] output {name!r}: shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"[compare] output {name!r}: dtype {got.dtype}, expected {want.dtype}"
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=max(RTOL, case.rtol), atol=max(ATOL, case.atol), equal_nan=True,
                                   err_msg=f"[compare] output {name!r}")
    else:
        np.testing.assert_array_equal(got, want, err_msg=f"[compare] output {name!r}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", RUNNABLE, ids=lambda c: c.name)
def test_node_case(case: Any, backend: str) -> None:
    try:
        # flexible_batch=False: run() takes the case's tensors as they are, no batching involved.
        model = import_onnx(case.model, OnnxImportOptions(name=case.name, flexible_batch=False))
    except EngineError as exc:
        pytest.fail(f"[import] {exc}")
    try:
        compiled = compile(model, backend)
    except EngineError as exc:
        pytest.fail(f"[compile] {exc}")
    weights = {t.name for t in case.model.graph.initializer}
    input_names = [vi.name for vi in case.model.graph.input if vi.name not in weights]
    output_names = [vi.name for vi in case.model.graph.output]
    for inputs, expected in case.data_sets:
        try:
            got = compiled.run({name: _array(value) for name, value in zip(input_names, inputs)})
        except EngineError as exc:
            pytest.fail(f"[run] {exc}")
        for name, want in zip(output_names, expected):
            _compare(name, got[name], _array(want), case)


def test_exclusions_are_only_unstored_types() -> None:
    counts = Counter(EXCLUDED.values())
    print(f"\n{len(RUNNABLE)} cases run, {len(EXCLUDED)} excluded:")
    for reason, count in counts.most_common():
        print(f"  {count:4d}  {reason}")
    for name, reason in EXCLUDED.items():
        if reason == NON_TENSOR_REASON:
            continue
        assert reason.startswith("unstored dtype "), f"{name}: unexpected exclusion reason {reason!r}"
        types = reason.removeprefix("unstored dtype ").split("/")
        assert set(types) <= set(UNSTORED_TYPES), f"{name}: excluded for stored types {types}"
    # The non-tensor exclusions are exactly Identity on a sequence and on an optional.
    assert sorted(n for n, r in EXCLUDED.items() if r == NON_TENSOR_REASON) == ["test_identity_opt",
                                                                               "test_identity_sequence"]


def test_only_types_corral_cannot_store_are_excluded() -> None:
    # Every dtype corral's format stores has its ONNX type imported, so no case is excluded for one of them.
    assert set(ONNX_TO_NUMPY.values()) == set(DTYPE_TO_PROTO)
    for name in UNSTORED_TYPES:
        assert name.startswith(("BFLOAT", "FLOAT8", "FLOAT6", "FLOAT4", "INT4", "UINT4", "INT2", "UINT2", "STRING",
                                "COMPLEX")), name


def test_every_supported_op_is_exercised() -> None:
    exercised = {n.op_type for case in RUNNABLE for n in case.model.graph.node}
    # onnxruntime's com.microsoft ops have no ONNX node cases; tests/engine/ops/test_recurrent.py checks them
    # against onnxruntime itself
    contrib = set(MS_OPS)
    assert sorted(set(SUPPORTED_OPS) - exercised - contrib) == []
