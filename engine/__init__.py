"""corral's engine: model format, importers, compiler, backends and the batch prediction API."""

from __future__ import annotations

from engine.builder import ModelBuilder
from engine.compiled_model import CompiledModel
from engine.compiler import compile
from engine.description import Feature, Metadata, ModelDescription, ShapeSpec
from engine.format import load, loads, save
from engine.graph import Graph, Model, Node
from engine.memory import release_freed_memory, retain_freed_memory
from engine.tensors import QuantizedTensor

__all__ = [
    "CompiledModel", "Feature", "Graph", "Metadata", "Model", "ModelBuilder", "ModelDescription", "Node",
    "QuantizedTensor", "ShapeSpec", "compile", "load", "loads", "release_freed_memory", "retain_freed_memory", "save",
]
