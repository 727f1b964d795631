"""Results written straight into the buffer of the reflect / edge Pad that reads them.

In the style networks every instance norm (and residual Add, and upsample)
is followed by a reflect Pad of one to four pixels, which copies the whole
activation once more only to add a thin border. A producer kernel holding a
:class:`PadTarget` instead writes its [N, C, H, W] result into the interior
of a pooled [N, C, H+t+b, W+l+r] buffer; the Pad then only fills the border
in place (:func:`pad_in_place`), reading the interior, and returns the buffer.

The handshake needs no graph analysis: the producer tags each result with an
:class:`Interior` (a Python attribute on the tensor object); a Pad that
meets a tagged input asks its producer for those margins (:meth:`PadTarget.ask`),
and from the next run on finds its input already placed. A producer read by
Pads that want different margins stops offering (one layout cannot serve
both), and a second Pad of the same placed value copies as usual, so no two
values ever share a buffer. The tag describes the tensor object it is set
on, so views and reshapes (new objects) never carry it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.backends.torch_ops import KernelOptions

# The attribute that holds a result's Interior.
TAG = "_corral_interior"

Margins = tuple[int, int, int, int]  # top, bottom, left, right


@dataclass
class Interior:
    """A producer's result: the interior of ``full`` at ``margins`` (or placed alone when ``full`` is None)."""

    target: PadTarget
    full: torch.Tensor | None = None
    margins: Margins | None = None
    claimed: bool = False  # a Pad already returned ``full``


class PadTarget:
    """A producer kernel's end of the handshake: the margins its one Pad consumer wants."""

    def __init__(self) -> None:
        self.margins: Margins | None = None
        self.refused = False  # Pads asked for different margins: results are placed alone

    def ask(self, margins: Margins) -> None:
        if self.refused or self.margins == margins:
            return
        if self.margins is None:
            self.margins = margins
        else:
            self.margins, self.refused = None, True

    def empty(self, shape: tuple[int, int, int, int], like: torch.Tensor, options: KernelOptions) -> torch.Tensor:
        """An uninitialized channels-last [N, C, H, W] result on ``like``'s device, tagged; inside a padded
        buffer when a Pad asked (both from ``options``' pool when it has one)."""
        n, c, h, w = shape
        if self.margins is None:
            out = options.empty(shape, like, torch.channels_last)
            setattr(out, TAG, Interior(self))
            return out
        t, b, left, r = self.margins
        full = options.empty((n, c, h + t + b, w + left + r), like, torch.channels_last)
        out = full[:, :, t:t + h, left:left + w]  # [N, C, H, W], NHWC strides of the padded buffer
        setattr(out, TAG, Interior(self, full, self.margins))
        return out


def pad_in_place(x: torch.Tensor, margins: Margins, mode: str) -> torch.Tensor | None:
    """``x`` padded (``reflect`` or ``edge``) by filling the border of the buffer it was written into;
    None when ``x`` was not placed for these margins (its producer is asked for them next time)."""
    tag = getattr(x, TAG, None)
    if not isinstance(tag, Interior) or x.ndim != 4:
        return None
    if tag.full is None or tag.margins != margins:
        tag.target.ask(margins)
        return None
    full = tag.full
    t, b, left, r = margins
    h, w = int(x.shape[2]), int(x.shape[3])
    if tag.claimed or full.shape[2] != h + t + b or full.shape[3] != w + left + r:
        return None
    inner = full[:, :, t:t + h, left:left + w]
    if inner.data_ptr() != x.data_ptr() or inner.stride() != x.stride() or inner.shape != x.shape:
        return None
    tag.claimed = True
    reflect = mode == "reflect"
    # rows above and below, over the interior columns; then columns left and right over the full height,
    # which fills the corners from the rows just written (the 2-D padding is separable)
    cols = full[:, :, :, left:left + w]
    for i in range(1, t + 1):
        cols[:, :, t - i].copy_(cols[:, :, t + i if reflect else t])
    for i in range(1, b + 1):
        last = t + h - 1
        cols[:, :, last + i].copy_(cols[:, :, last - i if reflect else last])
    for j in range(1, left + 1):
        full[:, :, :, left - j].copy_(full[:, :, :, left + j if reflect else left])
    for j in range(1, r + 1):
        last = left + w - 1
        full[:, :, :, last + j].copy_(full[:, :, :, last - j if reflect else last])
    return full
