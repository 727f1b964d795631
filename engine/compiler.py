"""``compile``: turn a model into a :class:`CompiledModel` for one backend and device."""

from __future__ import annotations

from engine.backends import backend_module
from engine.format import digest as model_digest
from engine.graph import Model
from engine.runtime import CompiledModel, Executor
from engine.tensors import to_float_array


def compile(model: Model, backend: str = "numpy", device: str = "cpu") -> CompiledModel:  # noqa: A001
    be = backend_module(backend)
    device = be.check_device(device)
    model.validate()
    desc = model.description
    nodes = model.graph.toposort([f.name for f in desc.inputs], model.name)
    constants = {name: to_float_array(w) for name, w in model.graph.initializers.items()}
    kernels = [be.build_kernel(n) for n in nodes]
    executor = Executor(nodes, kernels, constants, [f.name for f in desc.outputs])
    return CompiledModel(desc, executor, backend=be.NAME, device=device, digest=model_digest(model))
