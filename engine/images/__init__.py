"""Images in and out of models: decoding files, and mapping pixels to tensors and back.

Decoding (:func:`decode_image`) always gives an 8-bit ``L`` (gray) or ``RGB``
Pillow image, upright (EXIF orientation applied), from any mode Pillow reads:

==========================  ==========================================================
Decoded mode                 Converted to
==========================  ==========================================================
``RGB``                      kept
``L`` (8-bit gray)           kept as ``L``; a 3-channel feature replicates it to R=G=B
``1`` (bilevel)              ``L``: black 0, white 255
``LA``, ``La``               composited on white, then ``L``
``RGBA``, ``RGBa``, ``PA``   composited on white (out = a·colour + (1−a)·255), then ``RGB``
``P`` with transparency      palette expanded to ``RGBA``, composited on white, ``RGB``
``P``                        palette expanded to ``RGB``
``CMYK``                     ``RGB``: R = (255−C)(255−K)/255 (Pillow's; ICC profiles ignored)
``YCbCr``, ``LAB``, ``HSV``  ``RGB`` by Pillow's conversion
``I;16`` (16-bit, any        ``L``: v8 = round(v16 · 255 / 65535)
endianness)
``I`` (32-bit integer)       Pillow's container for 16-bit PNG/TIFF gray: clipped to
                             0..65535, then as ``I;16``
``F`` (32-bit float)         taken as 0.0..1.0: clipped, v8 = round(v · 255)
==========================  ==========================================================

Multi-frame files (GIF, TIFF) give their first frame. Rounding is half to
even (numpy's ``rint``).

Mapping to a tensor (:func:`image_to_tensor`) then picks a size the feature
allows (see :func:`target_size`), resizes by a policy — ``fit`` (stretch to
the size), ``fill`` (scale to cover, centre-crop), ``pad`` (scale to fit
inside, centre, pad with black), ``reject`` or ``none`` (the size must
already be allowed) — converts to the feature's colour layout (``GRAY`` uses
luma L = 0.299 R + 0.587 G + 0.114 B) and computes
``tensor[c] = pixel[c] * scale[c] + bias[c]`` as float32 ``[C, H, W]``.
Resizing is bilinear with Pillow's antialiasing. :func:`tensor_to_pixels`
(and :func:`tensor_to_image`) inverts the mapping for image outputs:
``pixel = (tensor - bias) / scale``, clipped to 0..255 and rounded; image
outputs are written by :func:`encode_png`.
"""

from __future__ import annotations

from engine.images.decode import DEFAULT_MAX_PIXELS, decode_image, normalize_mode
from engine.images.png import encode_png
from engine.images.tensor import (
    RESIZE_POLICIES,
    ResizePolicy,
    image_to_tensor,
    resize,
    resize_policy,
    target_size,
    tensor_to_image,
    tensor_to_pixels,
)

__all__ = [
    "DEFAULT_MAX_PIXELS", "RESIZE_POLICIES", "ResizePolicy", "decode_image", "encode_png", "image_to_tensor",
    "normalize_mode", "resize", "resize_policy", "target_size", "tensor_to_image", "tensor_to_pixels",
]
