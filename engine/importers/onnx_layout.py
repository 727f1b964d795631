"""Channel-last image tensors: which axis holds an image's channels, and the graph rewrite that lets corral map
images to ``[N, C, H, W]`` for every model.

An NHWC image input (TensorFlow and Keras export them) is fed from a new
NCHW input of the same name through a Transpose; an NHWC image output is
transposed back the same way. The model's own tensors are untouched, and
everything after import (batching, decoding, output images) sees NCHW.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from engine.exceptions import ModelImportError
from engine.graph import Graph, Node
from engine.importers.onnx_features import TensorInfo

TensorLayout = Literal["NCHW", "NHWC"]
TENSOR_LAYOUTS: tuple[TensorLayout, ...] = ("NCHW", "NHWC")
IMAGE_CHANNELS = (1, 3)
NHWC_SUFFIX = "__nhwc"  # the model's own name for a rewritten image tensor


def tensor_layout(info: TensorInfo, requested: TensorLayout | None, where: str) -> TensorLayout:
    """Whether an image tensor is ``[N, C, H, W]`` or ``[N, H, W, C]``: as ``requested``, else read from the shape.

    The shape decides when exactly one of axes 1 and 3 can hold an image's 1 or
    3 channels (a symbolic axis can, a fixed one only if it is 1 or 3) and the
    other is not fixed at 1 or 3. Any other shape is refused with the choice to
    make, never guessed.
    """
    if info.dims is None or len(info.dims) != 4:
        shape = "unknown rank" if info.dims is None else f"shape {info.dims}"
        raise ModelImportError(f"{where}: an image tensor must be [N, C, H, W] or [N, H, W, C], the file declares "
                               f"{shape}")
    first, last = info.dims[1], info.dims[3]
    if requested is not None:
        if requested not in TENSOR_LAYOUTS:
            raise ModelImportError(f"{where}: image layout {requested!r}; choose NCHW or NHWC")
        axis, channels = (1, first) if requested == "NCHW" else (3, last)
        if channels is not None and channels not in IMAGE_CHANNELS:
            raise ModelImportError(f"{where}: as {requested}, axis {axis} of {info.dims} holds the channels, and "
                                   f"{channels} channels are not an image (it needs 1, GRAY, or 3, RGB/BGR)")
        return requested
    first_fits, last_fits = first is None or first in IMAGE_CHANNELS, last is None or last in IMAGE_CHANNELS
    if first_fits and not (last in IMAGE_CHANNELS or (last is None and first is None)):
        return "NCHW"
    if last_fits and not (first in IMAGE_CHANNELS or (first is None and last is None)):
        return "NHWC"
    if not first_fits and not last_fits:
        raise ModelImportError(f"{where}: shape {info.dims} has no axis for an image's channels (axis 1 for "
                               "NCHW or axis 3 for NHWC must be 1, GRAY, or 3, RGB/BGR)")
    raise ModelImportError(f"{where}: shape {info.dims} could be NCHW or NHWC; say which with --image-layout "
                           "NCHW or --image-layout NHWC (OnnxImportOptions.image_layout)")


def channels_first(info: TensorInfo, layout: TensorLayout) -> TensorInfo:
    """``info`` as the ``[N, C, H, W]`` tensor corral maps images to (an NHWC tensor's dims reordered)."""
    if layout == "NCHW" or info.dims is None:
        return info
    n, h, w, c = info.dims
    return TensorInfo(info.name, info.dtype, [n, c, h, w])


def channels_first_graph(graph: Graph, inputs: Collection[str], outputs: Collection[str]) -> Graph:
    """``graph`` reading the NHWC image ``inputs`` from NCHW tensors of the same names, and giving its NHWC
    image ``outputs`` as NCHW tensors of the same names (one Transpose each)."""
    if not inputs and not outputs:
        return graph
    produced = {o for n in graph.nodes for o in n.outputs}
    renamed_in = {name: name + NHWC_SUFFIX for name in inputs}
    renamed_out = {name: name + NHWC_SUFFIX for name in outputs if name in produced}
    nodes = [Node("Transpose", [name], [inner], name=inner + "_from_nchw", attrs={"perm": [0, 2, 3, 1]})
             for name, inner in renamed_in.items()]  # [N, C, H, W] -> [N, H, W, C]
    for n in graph.nodes:
        nodes.append(Node(n.op_type, [renamed_in.get(i, i) for i in n.inputs], [renamed_out.get(o, o) for o in n.outputs],
                          name=n.name, attrs=dict(n.attrs), domain=n.domain))
    for name in outputs:
        source = renamed_out.get(name) or renamed_in.get(name, name)
        nodes.append(Node("Transpose", [source], [name], name=name + "_to_nchw",
                          attrs={"perm": [0, 3, 1, 2]}))  # [N, H, W, C] -> [N, C, H, W]
    return Graph(nodes=nodes, initializers=dict(graph.initializers))


def image_like(info: TensorInfo) -> TensorLayout | None:
    """The layout of a tensor that is plainly an image batch: float, ``[N, 1|3, H, W]`` or ``[N, H, W, 1|3]`` with
    N of 1 or symbolic, and only one axis that could hold the channels. None for anything else."""
    if info.dtype.kind != "f" or info.dims is None or len(info.dims) != 4 or info.dims[0] not in (1, None):
        return None
    try:
        layout = tensor_layout(info, None, "")
    except ModelImportError:
        return None
    spatial = info.dims[2:] if layout == "NCHW" else info.dims[1:3]
    return layout if all(d is None or d > 3 for d in spatial) else None
