"""The backends every shared suite runs on: each one installed here (numpy always, onnxruntime, torch)."""

from __future__ import annotations

from engine.backends import available_backends

BACKENDS = available_backends()
