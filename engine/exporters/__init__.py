"""Exporters: corral models out to other formats (ONNX)."""
