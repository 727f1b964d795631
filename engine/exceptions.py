"""Errors raised by the engine. Each names the model, file or node at fault."""

from __future__ import annotations


class EngineError(Exception):
    """Base class for every engine error."""


class ModelFormatError(EngineError):
    """A model package is malformed, truncated, hostile or inconsistent."""


class UnsupportedOpError(ModelFormatError):
    """A graph uses op types that corral does not implement."""

    def __init__(self, unsupported: dict[str, list[str]], source: str = "model") -> None:
        self.unsupported = unsupported
        listing = "; ".join(f"{op} (nodes: {', '.join(names[:5])}{' …' if len(names) > 5 else ''})"
                            for op, names in sorted(unsupported.items()))
        super().__init__(f"{source}: unsupported op types: {listing}. "
                         "Run `corral model inspect` for the full list, or provide a custom layer.")


class ModelImportError(EngineError):
    """Converting a model from another format failed."""


class OpError(EngineError):
    """An op failed while checking its inputs or running."""

    def __init__(self, op_type: str, node: str, message: str, shapes: list | None = None) -> None:
        self.op_type = op_type
        self.node = node
        detail = f" (input shapes {shapes})" if shapes is not None else ""
        super().__init__(f"{op_type} node {node!r}: {message}{detail}")


class InputError(EngineError):
    """A prediction input is missing, of the wrong shape or unusable."""


class ImageDecodeError(InputError):
    """A file could not be decoded as an image."""


class ExportError(EngineError):
    """The model cannot be expressed in ONNX."""


class BackendError(EngineError):
    """A backend is unknown, not installed, or cannot use the requested device."""


class CompiledCacheError(EngineError):
    """A compiled model on disk is stale, corrupt or for another engine."""
