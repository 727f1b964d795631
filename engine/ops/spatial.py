"""Window arithmetic shared by Conv, ConvTranspose and the pools: attributes, padding, output sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.graph import Node

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_group(node: Node) -> int:
    """Conv/ConvTranspose ``group``: how many independent channel groups (1 = dense, C = depthwise)."""
    group = node.int_attr("group", 1)
    if group < 1:
        raise ValueError(f"group must be positive, got {group}")
    return group


@dataclass(frozen=True)
class WindowAttrs:
    """The window attributes of a Conv/Pool node, any of which may be left to their defaults.

    ``pads`` is ONNX's ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``.
    """

    kernel_shape: tuple[int, ...] | None
    strides: tuple[int, ...] | None
    dilations: tuple[int, ...] | None
    pads: tuple[int, ...] | None
    auto_pad: str

    @classmethod
    def parse(cls, node: Node) -> WindowAttrs:
        def ints(name: str) -> tuple[int, ...] | None:
            value = node.ints_attr(name)
            return None if value is None else tuple(value)

        auto_pad = _text(node.attrs.get("auto_pad", "NOTSET")) or "NOTSET"
        if auto_pad not in AUTO_PADS:
            raise ValueError(f"auto_pad must be one of {', '.join(AUTO_PADS)}, got {auto_pad!r}")
        attrs = cls(ints("kernel_shape"), ints("strides"), ints("dilations"), ints("pads"), auto_pad)
        for name in ("kernel_shape", "strides", "dilations"):
            value = getattr(attrs, name)
            if value is not None and any(v < 1 for v in value):
                raise ValueError(f"{name} must be positive, got {list(value)}")
        return attrs

    def per_axis(self, rank: int, kernel: Sequence[int] | None = None) -> Window:
        """Resolve defaults for ``rank`` spatial axes (``kernel`` from the weight when not an attribute)."""
        k = self.kernel_shape if self.kernel_shape is not None else (tuple(kernel) if kernel is not None else None)
        if k is None:
            raise ValueError("kernel_shape is required")
        strides = self.strides or (1,) * rank
        dilations = self.dilations or (1,) * rank
        pads = self.pads or (0,) * (2 * rank)
        for name, value, size in (("kernel_shape", k, rank), ("strides", strides, rank),
                                  ("dilations", dilations, rank), ("pads", pads, 2 * rank)):
            if len(value) != size:
                raise ValueError(f"{name} has {len(value)} entries; the input has {rank} spatial axes "
                                 f"so it needs {size}")
        if any(p < 0 for p in pads):
            raise ValueError(f"pads must not be negative, got {list(pads)}")
        return Window(tuple(k), tuple(strides), tuple(dilations),
                      tuple(zip(pads[:rank], pads[rank:])), self.auto_pad)


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]  # (begin, end) per spatial axis
    auto_pad: str

    def extent(self, axis: int) -> int:
        """Input span of one window along ``axis``."""
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1

    def resolve(self, spatial: Sequence[int], ceil_mode: bool = False) -> tuple[list[tuple[int, int]], list[int]]:
        """Padding and output size for an input of spatial size ``spatial``.

        With ``ceil_mode`` (pools) a last partial window is kept when it starts
        inside the input or its leading padding; the extra reach past the
        padded input is added to the end padding so callers can treat it as
        ordinary padding.
        """
        pads: list[tuple[int, int]] = []
        out: list[int] = []
        for axis, size in enumerate(spatial):
            ext, stride = self.extent(axis), self.strides[axis]
            if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                n = -(-size // stride)
                total = max(0, (n - 1) * stride + ext - size)
                small = total // 2
                begin, end = (small, total - small) if self.auto_pad == "SAME_UPPER" else (total - small, small)
            elif self.auto_pad == "VALID":
                begin, end = 0, 0
                n = (size - ext) // stride + 1
            else:
                begin, end = self.pads[axis]
                span = size + begin + end - ext
                if ceil_mode:
                    n = -(-span // stride) + 1
                    if (n - 1) * stride >= size + begin:
                        n -= 1
                else:
                    n = span // stride + 1
            if n < 1:
                raise ValueError(f"spatial axis {axis} of size {size} is too small for a window of {ext} "
                                 f"with padding {begin}+{end}")
            end = max(end, (n - 1) * stride + ext - size - begin)
            pads.append((begin, end))
            out.append(n)
        return pads, out
