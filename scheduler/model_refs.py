"""Resolving a ``--model`` reference to a model package a worker can load.

For now a reference is a path to a ``.corral`` package that producer and
workers both see. The model store plugs in here: a reference such as
``style:2@lut4`` will resolve through it.
"""

from __future__ import annotations

from pathlib import Path


class ModelRefError(ValueError):
    pass


def resolve_model(ref: str) -> str:
    """The absolute path of the package ``ref`` names; raises :class:`ModelRefError` saying what to do."""
    path = Path(ref).expanduser()
    if path.suffix != ".corral":
        raise ModelRefError(f"model {ref!r}: expected a .corral package; convert other formats first with "
                            "`corral model import MODEL -o MODEL.corral`")
    if not path.is_file():
        raise ModelRefError(f"model {ref!r}: no such file; check the path (workers must see it at the same path)")
    return str(path.resolve())
