"""CheXmask's geometric preprocessing, shared by the model and the datasets (SPEC section 4).

Black-border crop, centred zero padding to a square, and the 8-bit bilinear
resize of the model input.  Arrays are ``(H, W)`` uint8, row = y, column = x.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from chexmask_u_tools.errors import InputError

__all__ = [
    "bilinear_taps",
    "crop_black_border",
    "pad_offsets",
    "pad_to_square",
    "resample_reduced",
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

    Raises
    ------
    InputError
        ``image`` is not 2-D.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> image = np.zeros((5, 6), dtype=np.uint8)
    >>> image[1:4, 2:5] = 200  # a bright 3 x 3 block in a black frame
    >>> cropped, box = cxu.crop_black_border(image)
    >>> cropped.shape, box  # (top, left, height, width)
    ((3, 3), (1, 2, 3, 3))
    >>> cxu.crop_black_border(np.zeros((4, 4), dtype=np.uint8))[1]  # all black: kept whole
    (0, 0, 4, 4)
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
    """Side ``L = max(h, w)`` of the centred square and the top / left pad ``((L-h)//2, (L-w)//2)``.

    Examples
    --------
    >>> from chexmask_u_tools.images.preprocess import pad_offsets
    >>> pad_offsets(2048, 1024)  # (side, top, left)
    (2048, 0, 512)
    """
    side = max(int(height), int(width))
    return side, (side - int(height)) // 2, (side - int(width)) // 2


def pad_to_square(image: np.ndarray, value: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad an (H, W) image to a centred (L, L) square, ``L = max(H, W)`` (SPEC section 4).

    Returns
    -------
    The padded array (same dtype) and the ``(top, left)`` offset of the input inside it.

    Raises
    ------
    InputError
        ``image`` is not 2-D.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> square, offset = cxu.pad_to_square(np.full((2, 4), 7, dtype=np.uint8))
    >>> square
    array([[0, 0, 0, 0],
           [7, 7, 7, 7],
           [7, 7, 7, 7],
           [0, 0, 0, 0]], dtype=uint8)
    >>> offset  # (top, left)
    (1, 0)
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"pad_to_square expects a 2-D image, got shape {image.shape}")
    side, top, left = pad_offsets(*image.shape)
    out = np.full((side, side), value, dtype=image.dtype)
    out[top : top + image.shape[0], left : left + image.shape[1]] = image
    return out, (top, left)


def resize_levels(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize 8-bit gray levels ``(H, W)`` to ``size`` as the CheXmask-U pipeline did.

    Bilinear, ``align_corners=False``, no antialiasing (OpenCV ``INTER_LINEAR``'s
    geometry), clamped and rounded back to whole levels, because the authors
    resized a uint8 image.  Returns float32 levels in 0..255 on ``pixels``'
    device, shape ``size``.  Needs torch (the ``[torch]`` extra).

    Examples
    --------
    >>> import torch
    >>> from chexmask_u_tools.images.preprocess import resize_levels
    >>> levels = resize_levels(torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8), (4, 4))
    >>> levels.dtype, levels[0].tolist()
    (torch.float32, [0.0, 64.0, 191.0, 255.0])
    """
    import torch
    import torch.nn.functional as F

    resized = F.interpolate(pixels[None, None].float(), size=size, mode="bilinear", align_corners=False, antialias=False)
    return torch.round(resized.clamp_(0.0, 255.0))[0, 0]


def bilinear_taps(n_out: int, frame: int, offset: int, length: int, factor: int) -> tuple[np.ndarray, ...]:
    """Bilinear taps along one axis of a frame whose image is stored at ``1 / factor`` (for :func:`resample_reduced`).

    Output pixel ``X`` reads frame coordinate ``(X + 0.5) * frame / n_out - 0.5``
    clamped to ``[0, frame - 1]`` (half-pixel centres, the rule of OpenCV
    ``INTER_LINEAR`` and torch ``align_corners=False``).  The image covers frame
    pixels ``[offset, offset + length)`` at full resolution, zeros elsewhere, and
    is stored at ``1 / factor``: full-resolution ``u`` is stored ``(u + 0.5) / factor - 0.5``
    (the centre of a partial last block is its own).

    Returns
    -------
    ``(i0, i1, w0, w1)``: int64 indices into the stored axis (clipped to it)
    and float32 weights, zero for taps in the padding; each of length ``n_out``.

    Examples
    --------
    >>> i0, i1, w0, w1 = bilinear_taps(2, 4, 0, 4, 1)  # halve 4 pixels, stored in full
    >>> i0.tolist(), i1.tolist(), w0.tolist(), w1.tolist()
    ([0, 2], [1, 3], [0.5, 0.5], [0.5, 0.5])
    """
    stored = -(-length // factor)
    src = np.clip((np.arange(n_out) + 0.5) * (frame / n_out) - 0.5, 0.0, frame - 1.0)
    u = src - offset
    r = (u + 0.5) / factor - 0.5
    partial = length - (stored - 1) * factor  # pixels averaged into the last stored one
    if partial < factor and stored >= 2:
        # The last stored pixel is centred on its ``partial`` pixels, not on a
        # whole block: interpolate towards that centre, and fade into the
        # padding around the true edge ``length - 0.5``.
        before = (stored - 2) * factor + (factor - 1) / 2
        last = (stored - 1) * factor + (partial - 1) / 2
        r = np.where(u > before, stored - 2 + (u - before) / (last - before), r)
        r = np.where(u > last, stored - 1 + (u - last) / partial, r)
    # Where the image reaches the frame's edge the full-resolution path clamps
    # there; keep that instead of fading into padding that does not exist.
    if offset == 0:
        r = np.maximum(r, 0.0)
    if offset + length == frame:
        r = np.minimum(r, stored - 1.0)
    r0 = np.floor(r)
    lam = r - r0
    i0 = r0.astype(np.int64)
    i1 = i0 + 1
    w0 = np.where((i0 >= 0) & (i0 < stored), 1.0 - lam, 0.0).astype(np.float32)
    w1 = np.where((i1 >= 0) & (i1 < stored), lam, 0.0).astype(np.float32)
    return np.clip(i0, 0, stored - 1), np.clip(i1, 0, stored - 1), w0, w1


def resample_reduced(
    image: np.ndarray,
    factor: int,
    out: tuple[int, int],
    frame: tuple[int, int],
    offset: tuple[int, int],
    length: tuple[int, int],
) -> np.ndarray:
    """Bilinear resize of a (padded) image stored at ``1 / factor`` straight to the output.

    Parameters
    ----------
    image:
        uint8 ``(ceil(h / factor), ceil(w / factor))``: a full-resolution
        ``(h, w) = length`` image decoded at ``1 / factor``
        (:func:`~chexmask_u_tools.images.read.read_image_reduced`).
    factor:
        The reduction ``k`` (1: stored at full resolution).
    out:
        Output ``(height, width)`` in pixels.
    frame, offset:
        The zero frame ``(height, width)`` the image sits in, in full-resolution
        pixels (e.g. the centred square of :func:`pad_offsets`), and the image's
        ``(top, left)`` in it.

    Returns
    -------
    uint8 ``out`` array, rounded: the frame mapped onto the output as the
    full-resolution resize would (:func:`bilinear_taps`), without building the
    padded frame.  Needs torch (the ``[torch]`` extra).

    Examples
    --------
    >>> image = np.array([[0, 100], [100, 200]], dtype=np.uint8)
    >>> resample_reduced(image, 1, (1, 1), (2, 2), (0, 0), (2, 2)).tolist()
    [[100]]
    """
    import torch

    y0, y1, wy0, wy1 = (torch.from_numpy(a) for a in bilinear_taps(out[0], frame[0], offset[0], length[0], factor))
    x0, x1, wx0, wx1 = (torch.from_numpy(a) for a in bilinear_taps(out[1], frame[1], offset[1], length[1], factor))
    # Rows first (the output has fewer rows than the stored image), then columns;
    # torch's index_select gathers about twice as fast as numpy fancy indexing.
    stored = torch.from_numpy(np.ascontiguousarray(image))
    rows = stored.index_select(0, y0).float().mul_(wy0[:, None])
    rows.add_(stored.index_select(0, y1).float().mul_(wy1[:, None]))
    pixels = rows.index_select(1, x0).mul_(wx0)
    pixels.add_(rows.index_select(1, x1).mul_(wx1))
    return pixels.round_().to(torch.uint8).numpy()
