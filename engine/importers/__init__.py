"""Importers from other model formats. Each imports its format's package lazily (an optional extra)."""

from __future__ import annotations

from engine.importers.coreml import CoreMLImportOptions, import_coreml
from engine.importers.onnx import OnnxImportOptions, import_onnx

__all__ = ["CoreMLImportOptions", "OnnxImportOptions", "import_coreml", "import_onnx"]
