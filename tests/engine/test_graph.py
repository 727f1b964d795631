"""Graph IR: stable topological order, structural errors, Model checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine.description import Feature, ModelDescription, ShapeSpec
from engine.exceptions import ModelFormatError, UnsupportedOpError
from engine.graph import Graph, Model, Node
from engine.tensors import QuantizedTensor, pack_bits


def _names(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes]


def _model(nodes: list[Node], inputs: tuple[str, ...] = ("x",), outputs: tuple[str, ...] = ("y",),
           **init: np.ndarray) -> Model:
    desc = ModelDescription(inputs=[Feature(name=i, shape=ShapeSpec((2,))) for i in inputs],
                            outputs=[Feature(name=o) for o in outputs])
    return Model(description=desc, graph=Graph(nodes=nodes, initializers=dict(init)))


# ------------------------------------------------------------------ toposort

def test_sorted_graph_keeps_its_stored_order() -> None:
    g = Graph(nodes=[Node("Relu", ["x"], ["a"], "n1"), Node("Relu", ["a"], ["b"], "n2"),
                     Node("Add", ["a", "b"], ["c"], "n3")])
    assert _names(g.toposort(["x"])) == ["n1", "n2", "n3"]


def test_unsorted_graph_is_ordered_and_ties_follow_stored_order() -> None:
    g = Graph(nodes=[
        Node("Add", ["p", "q"], ["y"], "join"),
        Node("Relu", ["x"], ["q"], "right"),
        Node("Relu", ["x"], ["p"], "left"),
        Node("Relu", ["w"], ["r"], "weight_only"),
    ], initializers={"w": np.zeros(1, np.float32)})
    # Among ready nodes the one stored first runs first.
    assert _names(g.toposort(["x"])) == ["right", "left", "join", "weight_only"]


def test_order_is_deterministic_across_calls() -> None:
    nodes = [Node("Relu", [f"v{i}" if i else "x"], [f"v{i + 1}"], f"n{i}") for i in range(30)]
    g = Graph(nodes=list(reversed(nodes)))
    first = _names(g.toposort(["x"]))
    assert first == [f"n{i}" for i in range(30)]
    assert _names(g.toposort(["x"])) == first


def test_empty_input_name_means_an_absent_optional_input() -> None:
    g = Graph(nodes=[Node("Clip", ["x", "", "hi"], ["y"], "clip")], initializers={"hi": np.ones(1)})
    assert _names(g.toposort(["x"])) == ["clip"]


def test_wide_graph_sorts_in_near_linear_time() -> None:
    # 50 000 independent nodes: a quadratic ready-queue would take minutes.
    g = Graph(nodes=[Node("Relu", ["x"], [f"y{i}"], f"n{i}") for i in range(50_000)])
    start = time.perf_counter()
    order = g.toposort(["x"])
    assert time.perf_counter() - start < 5.0
    assert order[0].name == "n0" and order[-1].name == "n49999"


def test_cycle_is_rejected_naming_the_nodes() -> None:
    g = Graph(nodes=[Node("Relu", ["x"], ["a"], "ok"), Node("Add", ["a", "c"], ["b"], "loop1"),
                     Node("Relu", ["b"], ["c"], "loop2")])
    with pytest.raises(ModelFormatError, match=r"m\.corral: graph has a cycle through nodes \['loop1', 'loop2'\]"):
        g.toposort(["x"], "m.corral")


def test_node_reading_its_own_output_is_a_cycle() -> None:
    g = Graph(nodes=[Node("Add", ["x", "a"], ["a"], "selfish")])
    with pytest.raises(ModelFormatError, match="cycle through nodes \\['selfish'\\]"):
        g.toposort(["x"])


def test_dangling_input_is_rejected() -> None:
    g = Graph(nodes=[Node("Add", ["x", "ghost"], ["y"], "adder")])
    with pytest.raises(ModelFormatError, match="node 'adder' \\(Add\\) reads 'ghost', which no input, weight or "
                                               "node provides"):
        g.toposort(["x"])


@pytest.mark.parametrize("nodes, inits", [
    ([Node("Relu", ["x"], ["y"], "a"), Node("Relu", ["x"], ["y"], "b")], {}),
    ([Node("Split", ["x"], ["y", "y"], "a")], {}),
    ([Node("Relu", ["x"], ["x"], "a")], {}),
    ([Node("Relu", ["x"], ["w"], "a")], {"w": np.zeros(1)}),
])
def test_value_produced_twice_is_rejected(nodes: list[Node], inits: dict) -> None:
    with pytest.raises(ModelFormatError, match="is produced more than once"):
        Graph(nodes=nodes, initializers=inits).toposort(["x"])


def test_producers_and_consumers() -> None:
    a, b = Node("Relu", ["x"], ["a"], "n1"), Node("Add", ["a", "a", ""], ["b"], "n2")
    g = Graph(nodes=[a, b])
    assert g.producers() == {"a": a, "b": b}
    assert g.consumers() == {"x": [a], "a": [b, b]}


def test_node_label_falls_back_to_output_then_op() -> None:
    assert Node("Relu", ["x"], ["y"], "named").label == "named"
    assert Node("Relu", ["x"], ["y"]).label == "y"
    assert Node("Relu", ["x"], []).label == "Relu"
    assert Node("Relu", ["x"], ["y"], attrs={"alpha": 0.5}).attr("alpha") == 0.5
    assert Node("Relu", ["x"], ["y"]).attr("alpha", 1.0) == 1.0


# --------------------------------------------------------------- Model checks

def test_valid_model_passes() -> None:
    _model([Node("Relu", ["x"], ["y"], "r")]).validate()


def test_unsupported_ops_are_listed_by_type_and_node() -> None:
    m = _model([Node("Frobnicate", ["x"], ["a"], "f1"), Node("Frobnicate", ["a"], ["b"], "f2"),
                Node("Conv", ["b"], ["c"], "c1", domain="com.vendor"), Node("Relu", ["c"], ["y"], "ok")])
    with pytest.raises(UnsupportedOpError) as err:
        m.validate("pkg.corral")
    assert err.value.unsupported == {"Frobnicate": ["f1", "f2"], "com.vendor:Conv": ["c1"]}
    assert "pkg.corral: unsupported op types: Frobnicate (nodes: f1, f2); com.vendor:Conv (nodes: c1)" \
        in str(err.value)


def test_custom_layers_are_not_unsupported() -> None:
    m = _model([Node("MyLayer", ["x"], ["y"], "c", domain="custom")])
    m.validate()
    assert m.custom_layers() == ["MyLayer"]
    assert m.unsupported_ops() == {}
    assert m.op_counts() == {"custom:MyLayer": 1}


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.description.inputs.clear(), "node 'r' \\(Relu\\) reads 'x', which no input"),
    (lambda m: m.description.outputs.clear(), "declares no outputs"),
    (lambda m: m.description.outputs.append(Feature(name="z")), "output 'z' is not produced by any node"),
    (lambda m: setattr(m.description, "class_labels_output", "probs"), "class labels refer to unknown output"),
    (lambda m: m.description.inputs.append(Feature(name="x", shape=ShapeSpec((2,)))),
     r"input names \['x'\] are declared more than once"),
    (lambda m: setattr(m.description.inputs[0], "shape", ShapeSpec((2,), ranges=[(3, 1)])), "invalid range"),
])
def test_model_validation_errors(mutate, message: str) -> None:
    m = _model([Node("Relu", ["x"], ["y"], "r")])
    mutate(m)
    with pytest.raises(ModelFormatError, match=message) as err:
        m.validate()
    assert str(err.value).startswith("model 'model'")


def test_output_may_be_an_input_or_weight_directly() -> None:
    _model([], outputs=("x", "w"), w=np.zeros(2, np.float32)).validate()


def test_custom_model_skips_the_graph() -> None:
    m = _model([Node("Nope", ["ghost"], ["y"])])
    m.description.custom_model = "MyWholeModel"
    m.validate()


def test_parameter_count_and_bytes_by_storage() -> None:
    q = QuantizedTensor(shape=(4, 2), bits=4, packed=pack_bits(np.zeros(8, np.uint8), 4), scheme="linear")
    m = _model([Node("Relu", ["x"], ["y"])], a=np.zeros((3, 3), np.float32), b=np.zeros(5, np.float16), q=q)
    m.graph.initializers["q"] = q
    assert m.parameter_count() == 9 + 5 + 8
    assert m.bytes_by_storage() == {"float16": 10, "float32": 36, "linear4": 4 + 8}
    assert m.name == "model"
