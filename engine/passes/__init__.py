"""Graph passes the compiler runs, one small module per pass.

Every pass works on a :class:`PassContext`: a private copy of a model's graph
whose initializers are plain float arrays. Passes rewrite the copy in place
and return how many rewrites they made; the caller's :class:`Model` is never
touched.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.graph import Model
from engine.passes.activation_fusion import fuse_activations
from engine.passes.base import Pass, PassContext
from engine.passes.batchnorm_folding import fold_batchnorm
from engine.passes.constant_folding import fold_constants
from engine.passes.dead_nodes import drop_dead_nodes
from engine.passes.dequantize_weights import dequantize_weights
from engine.passes.identity_elimination import drop_identities
from engine.passes.norm_fusion import fuse_mean_variance_norm
from engine.passes.quantized_activations import match_dynamic_quantization

__all__ = ["PASS_NAMES", "Pass", "PassContext", "default_pipeline", "optimize"]

_PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("dequantize_weights", dequantize_weights),
    ("fold_constants", fold_constants),
    ("drop_dead_nodes", drop_dead_nodes),
    ("drop_identities", drop_identities),
    ("fold_batchnorm", fold_batchnorm),
    ("fuse_norm", fuse_mean_variance_norm),
    ("match_dynamic_quantization", match_dynamic_quantization),
    ("fuse_activations", fuse_activations),
    ("drop_dead_nodes", drop_dead_nodes),
)

# Each pass once, in the order it first runs: what ``optimize``'s ``skip`` may name.
PASS_NAMES: tuple[str, ...] = tuple(dict.fromkeys(name for name, _ in _PIPELINE))


def default_pipeline() -> list[tuple[str, Pass]]:
    """The passes ``compile`` runs, in order, as ``(name, pass)`` pairs; ``stats`` counts by name."""
    return list(_PIPELINE)


def optimize(model: Model, skip: Iterable[str] = ()) -> PassContext:
    """Run the default pipeline, less the passes named in ``skip``, on a copy of ``model``'s graph."""
    skip = set(skip)
    unknown = skip - set(PASS_NAMES)
    if unknown:
        raise ValueError(f"unknown passes {sorted(unknown)}; the passes are {list(PASS_NAMES)}")
    ctx = PassContext.from_model(model)
    ctx.stats["nodes_before"] = len(ctx.nodes)
    for name, run in default_pipeline():
        if name not in skip:
            ctx.count(name, run(ctx))
    ctx.stats["nodes_after"] = len(ctx.nodes)
    return ctx
