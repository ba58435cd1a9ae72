"""CheXmask's geometric preprocessing, shared by the model and the datasets (SPEC section 4).

Black-border crop, centred zero padding to a square, and the 8-bit bilinear
resize of the model input.  Arrays are ``(H, W)`` uint8, row = y, column = x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from chexmask_u_tools.errors import InputError

__all__ = [
    "crop_black_border",
    "pad_offsets",
    "pad_to_square",
    "resize_levels",
]

if TYPE_CHECKING:  # torch is an optional extra
    import torch


def crop_black_border(image: np.ndarray, threshold: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Remove uniform dark margins: keep the bounding box of pixels brighter than ``threshold``.

    Parameters
    ----------
    image:
        (H, W) array.
    threshold:
        Pixels ``<= threshold`` count as border (0: only pure black).

    Returns
    -------
    The cropped view and its box ``(top, left, height, width)`` in the input's
    pixels.  An image with no pixel above the threshold is returned whole.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"crop_black_border expects a 2-D image, got shape {image.shape}")
    bright = image > threshold
    rows, cols = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    if rows.size == 0:
        return image, (0, 0, image.shape[0], image.shape[1])
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return image[top:bottom, left:right], (top, left, bottom - top, right - left)


def pad_offsets(height: int, width: int) -> tuple[int, int, int]:
    """Side ``L = max(h, w)`` of the centred square and the top / left pad ``((L-h)//2, (L-w)//2)``."""
    side = max(int(height), int(width))
    return side, (side - int(height)) // 2, (side - int(width)) // 2


def pad_to_square(image: np.ndarray, value: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad an (H, W) image to a centred (L, L) square, ``L = max(H, W)`` (SPEC section 4).

    Returns
    -------
    The padded array (same dtype) and the ``(top, left)`` offset of the input inside it.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"pad_to_square expects a 2-D image, got shape {image.shape}")
    side, top, left = pad_offsets(*image.shape)
    out = np.full((side, side), value, dtype=image.dtype)
    out[top : top + image.shape[0], left : left + image.shape[1]] = image
    return out, (top, left)


def resize_levels(pixels: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    """Resize 8-bit gray levels ``(H, W)`` to ``size`` as the CheXmask-U pipeline did.

    Bilinear, ``align_corners=False``, no antialiasing (OpenCV ``INTER_LINEAR``'s
    geometry), clamped and rounded back to whole levels, because the authors
    resized a uint8 image.  Returns float32 levels in 0..255 on ``pixels``'
    device, shape ``size``.  Needs torch (the ``[torch]`` extra).
    """
    import torch
    import torch.nn.functional as F

    resized = F.interpolate(pixels[None, None].float(), size=size, mode="bilinear", align_corners=False, antialias=False)
    return torch.round(resized.clamp_(0.0, 255.0))[0, 0]
