"""Resolving a ``--model`` reference to what workers load, and saying what the model needs to run.

A reference is either a store reference ``name[:version][@variant]``
(:mod:`store.refs`), pinned here to a concrete version so that every chunk
of a job runs the same model even if a new version is pushed meanwhile, or
the path of a ``.corral`` package that producer and workers both see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.exceptions import ModelRefError
from store.exceptions import NotFoundError, StoreError
from store.fetch import ModelFetcher, default_fetcher, is_store_ref


def resolve_model(ref: str, fetcher: ModelFetcher | None = None) -> str:
    """A store reference pinned to its version (``style:2@lut4``), or the absolute path of a package.

    ``fetcher`` (default: this process's :func:`store.fetch.default_fetcher`) answers store references.
    Raises :class:`ModelRefError` saying what to do.
    """
    if is_store_ref(ref):
        try:
            return (fetcher or default_fetcher()).pin(ref)
        except ModelRefError:
            raise
        except (NotFoundError, StoreError) as exc:
            raise ModelRefError(f"model {ref!r}: {exc}") from None
    path = Path(ref).expanduser()
    if path.suffix != ".corral":
        raise ModelRefError(f"model {ref!r}: expected a store reference name[:version][@variant] or a .corral "
                            "package; convert other formats first with `corral model import MODEL -o MODEL.corral`")
    if not path.is_file():
        raise ModelRefError(f"model {ref!r}: no such file; check the path (workers must see it at the same path)")
    return str(path.resolve())


@dataclass(frozen=True)
class ModelNeeds:
    """What a worker must support to run a model: engine op types and custom layer/model classes."""

    ops: frozenset[str] = field(default_factory=frozenset)
    custom_layers: frozenset[str] = field(default_factory=frozenset)
    custom_model: str = ""

    @classmethod
    def from_manifest(cls, model: dict[str, Any]) -> ModelNeeds:
        return cls(frozenset(model.get("ops", ())), frozenset(model.get("custom_layers", ())),
                   model.get("custom_model", "") or "")


def model_needs(resolved: str, fetcher: ModelFetcher | None = None) -> ModelNeeds:
    """The needs of a resolved reference: from the store's manifest (no download) or the package file."""
    if is_store_ref(resolved):
        try:
            return ModelNeeds.from_manifest((fetcher or default_fetcher()).describe(resolved))
        except (NotFoundError, StoreError) as exc:
            raise ModelRefError(f"model {resolved!r}: {exc}") from None
    import engine

    model = engine.load(resolved)
    return ModelNeeds(frozenset(n.op_type for n in model.graph.nodes if not n.domain),
                      frozenset(model.custom_layers()), model.description.custom_model or "")
