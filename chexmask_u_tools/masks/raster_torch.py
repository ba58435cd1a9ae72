"""Batched, device-agnostic rasterization in torch, pixel-identical to :mod:`~chexmask_u_tools.masks.raster`.

For a GPU training pipeline: many polygons (or many landmark sets) become one
bool tensor on the device, every mask exactly what
:func:`chexmask_u_tools.masks.raster.rasterize` (and therefore OpenCV's filled
``drawContours`` on truncated vertices) gives.

The torch kernel runs the same integer algorithm as the numpy one with torch
ops, all polygons at once: OpenCV's integer segment clipping, the 8-connected
Bresenham edge walk (scattered into the masks), and the 16.16 fixed-point
scanline crossings, sorted per row and paired into runs.  Runs are filled with
a +1/-1 difference image and a cumulative sum along rows, which suits GPUs.
On CPU tensors the default backend is the numpy kernel (same algorithm, but it
fills runs with memory-speed ``np.repeat`` blocks instead of a full-image
cumulative sum), writing straight into the returned tensor's memory.

This module imports torch; ``chexmask_u_tools.masks`` does not import it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.masks.raster import (
    MAX_COORDINATE,
    XY_SHIFT,
    check_size,
    draw_polygons,
    polygon_batch,
    require_on_grid,
)

__all__ = ["rasterize_organs_torch", "rasterize_torch", "require_on_grid_torch"]

_XY_ONE = 1 << XY_SHIFT
# Largest number of difference-image cells (int32) the torch kernel holds at
# once; larger batches are processed in chunks of polygons.
_CHUNK_CELLS = 1 << 25


def _validate(points: torch.Tensor, name: str) -> torch.Tensor:
    if points.dtype == torch.bool or points.is_complex():
        raise InputError(f"{name} must be a real numeric tensor, got {points.dtype}")
    if points.ndim < 2 or points.shape[-1] != 2 or points.shape[-2] < 1:
        raise InputError(f"{name} must have shape (..., N, 2) with N >= 1, got {tuple(points.shape)}")
    if points.numel() == 0:
        return points.to(torch.int64)
    if points.is_floating_point():
        if not bool(torch.isfinite(points).all()):
            raise InputError(f"{name} contains NaN or infinite coordinates")
        points = torch.trunc(points.double())
    if float(points.abs().max()) > MAX_COORDINATE:
        raise InputError(f"{name} has a coordinate beyond +-{MAX_COORDINATE} pixels")
    return points.to(torch.int64)


def _as_polygons(points, device) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(M, 2) int64 vertices, (P,) first-vertex indices, single-polygon flag, on ``device``."""
    if isinstance(points, torch.Tensor):
        dev = torch.device(device) if device is not None else points.device
        verts = _validate(points.to(dev), "points")
        if verts.ndim == 2:
            return verts, torch.zeros(1, dtype=torch.int64, device=dev), True
        if verts.ndim != 3:
            raise InputError(f"points must have shape (N, 2) or (B, N, 2), got {tuple(verts.shape)}")
        b, n = verts.shape[:2]
        return verts.reshape(b * n, 2), torch.arange(b, device=dev) * n, False
    if isinstance(points, (list, tuple)) and points and isinstance(points[0], torch.Tensor):
        dev = torch.device(device) if device is not None else points[0].device
        if any(not isinstance(p, torch.Tensor) or p.ndim != 2 or p.shape[-1] != 2 or len(p) < 1 for p in points):
            raise InputError("a list of polygons must hold (N_i, 2) tensors with N_i >= 1")
        # one validation of the concatenation: per-tensor torch calls cost more than the drawing
        verts = _validate(torch.cat([p.to(dev) for p in points]), "points")
        lengths = torch.tensor([len(p) for p in points], device=dev)
        return verts, torch.cumsum(lengths, 0) - lengths, False
    verts, first, single = polygon_batch(points)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.from_numpy(verts).to(dev), torch.from_numpy(first).to(dev), single


def _outcode(x, y, right: int, bottom: int):
    return (x < 0).long() + (x > right).long() * 2 + (y < 0).long() * 4 + (y > bottom).long() * 8


def _tdiv(num, den):
    return torch.div(num, den, rounding_mode="trunc")


def _clip_segments(x1, y1, x2, y2, width: int, height: int):
    """OpenCV's integer ``clipLine`` on tensors of segments (see ``raster._clip_segments``)."""
    right, bottom = width - 1, height - 1
    one = torch.ones_like(x1)
    c1 = _outcode(x1, y1, right, bottom)
    c2 = _outcode(x2, y2, right, bottom)
    work = ((c1 & c2) == 0) & ((c1 | c2) != 0)

    m = work & ((c1 & 12) != 0)
    a = torch.where(c1 < 8, 0, bottom)
    x1 = torch.where(m, x1 + _tdiv((a - y1) * (x2 - x1), torch.where(m, y2 - y1, one)), x1)
    y1 = torch.where(m, a, y1)
    c1 = torch.where(m, (x1 < 0).long() + (x1 > right).long() * 2, c1)
    m = work & ((c2 & 12) != 0)
    a = torch.where(c2 < 8, 0, bottom)
    x2 = torch.where(m, x2 + _tdiv((a - y2) * (x2 - x1), torch.where(m, y2 - y1, one)), x2)
    y2 = torch.where(m, a, y2)
    c2 = torch.where(m, (x2 < 0).long() + (x2 > right).long() * 2, c2)
    work = work & ((c1 & c2) == 0) & ((c1 | c2) != 0)
    m = work & (c1 != 0)
    a = torch.where(c1 == 1, 0, right)
    y1 = torch.where(m, y1 + _tdiv((a - x1) * (y2 - y1), torch.where(m, x2 - x1, one)), y1)
    x1 = torch.where(m, a, x1)
    c1 = torch.where(m, 0, c1)
    m = work & (c2 != 0)
    a = torch.where(c2 == 1, 0, right)
    y2 = torch.where(m, y2 + _tdiv((a - x2) * (y2 - y1), torch.where(m, x2 - x1, one)), y2)
    x2 = torch.where(m, a, x2)
    c2 = torch.where(m, 0, c2)
    return x1, y1, x2, y2, (c1 | c2) == 0


def _expand(start, major, a, b, c, minor, counts):
    """One value per step: ``start + i * major + ((a * i + b) // c) * minor`` (see ``raster._walk``)."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64, device=counts.device)
    params = torch.stack([start, major, a, b, c, minor, torch.cumsum(counts, 0) - counts])
    rep = torch.repeat_interleave(params, counts, dim=1, output_size=total)
    step = torch.arange(total, device=counts.device) - rep[6]
    val = torch.div(rep[2] * step + rep[3], rep[4], rounding_mode="floor") * rep[5]
    return val + rep[0] + step * rep[1]


def _torch_kernel(verts: torch.Tensor, first: torch.Tensor, out: torch.Tensor) -> None:
    """Draw P polygons into the zeroed bool ``out`` (P, H, W); all tensors on one device."""
    npoly, height, width = out.shape
    dev = verts.device
    m = len(verts)
    per_poly = torch.diff(first, append=torch.tensor([m], device=dev))
    prev = torch.arange(-1, m - 1, device=dev)
    prev[first] = first + per_poly - 1
    x2, y2 = verts[:, 0], verts[:, 1]
    x1, y1 = x2[prev], y2[prev]
    poly = torch.repeat_interleave(torch.arange(npoly, device=dev), per_poly, output_size=m)

    lx1, ly1, lx2, ly2, line_ok = _clip_segments(x1, y1, x2, y2, width, height)
    # Edge lines: 8-connected walk from the left end point (raster._line_params).
    dx, dy = lx2 - lx1, ly2 - ly1
    swap = dx < 0
    adx, ady = dx.abs(), dy.abs()
    ystep = torch.where((dy < 0) != swap, -width, width)
    vert = ady > adx
    major = torch.maximum(adx, ady)
    start = torch.where(swap, ly2 * width + lx2, ly1 * width + lx1) + poly * (height * width)
    lines = _expand(
        start,
        torch.where(vert, ystep, 1),
        2 * torch.minimum(adx, ady),
        (major - 1).clamp_min(0),
        (2 * major).clamp_min(1),
        torch.where(vert, 1, ystep),
        torch.where(line_ok, major + 1, 0),
    )

    # Fill edges, re-anchored on clipped end points unless clipping made them
    # horizontal (raster.rasterize_polygons).
    flat = ly1 == ly2
    fy1 = torch.where(flat, y1, ly1)
    fy2 = torch.where(flat, y2, ly2)
    fdy = fy2 - fy1
    slope = _tdiv((lx2 - lx1) << XY_SHIFT, torch.where(fdy == 0, 1, fdy))
    ytop = torch.minimum(y1, y2)
    xtop = torch.where(
        y1 < y2, (lx1 << XY_SHIFT) + (y1 - fy1) * slope, (lx2 << XY_SHIFT) + (y2 - fy2) * slope
    )
    lo = ytop.clamp_min(0)
    nrow = (torch.minimum(torch.maximum(y1, y2), torch.tensor(height, device=dev)) - lo).clamp_min(0)
    zeros, ones = torch.zeros_like(lo), torch.ones_like(lo)
    xs = _expand(xtop + (lo - ytop) * slope, slope, zeros, zeros, ones, zeros, nrow)
    rows = _expand(lo + poly * height, ones, zeros, zeros, ones, zeros, nrow)
    if len(xs):
        # Clamp one pixel outside either side (keeps every clipped span) so
        # (row, x) packs into one sortable int64 key.
        span = (width + 2) << XY_SHIFT
        keys, _ = torch.sort(rows * span + xs.clamp(-_XY_ONE, width << XY_SHIFT))
        k0, k1 = keys[0::2], keys[1::2]
        run_rows = torch.div(k0 + _XY_ONE, span, rounding_mode="floor")
        base = run_rows * span
        left = ((k0 - base + (_XY_ONE - 1)) >> XY_SHIFT).clamp_min(0)
        right = ((k1 - base) >> XY_SHIFT).clamp_max(width - 1)
        keep = left <= right
        run_rows, left, right = run_rows[keep], left[keep], right[keep]
        diff = torch.zeros(npoly * height * (width + 1), dtype=torch.int32, device=dev)
        ones32 = torch.ones(len(left), dtype=torch.int32, device=dev)
        diff.index_add_(0, run_rows * (width + 1) + left, ones32)
        diff.index_add_(0, run_rows * (width + 1) + right + 1, -ones32)
        filled = torch.cumsum(diff.view(npoly * height, width + 1), dim=1, dtype=torch.int32)[:, :width] > 0
        out.view(npoly * height, width).copy_(filled)
    out.view(-1)[lines] = True


def _run(verts, first, height: int, width: int, backend: str) -> torch.Tensor:
    dev = verts.device
    if backend == "auto":
        backend = "numpy" if dev.type == "cpu" else "torch"
    if backend not in ("numpy", "torch"):
        raise InputError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    if backend == "numpy" and dev.type != "cpu":
        raise InputError("the numpy backend needs CPU tensors")
    npoly = len(first)
    if backend == "numpy":
        # numpy's zeros come from calloc (pages zeroed lazily, on first touch);
        # torch.zeros writes every byte, which costs more than the drawing.
        masks = np.zeros((npoly, height, width), dtype=bool)
        if npoly:
            draw_polygons(verts.numpy(), first.numpy(), masks)  # the compiled fill kernel, as rasterize draws
        return torch.from_numpy(masks)
    out = torch.zeros((npoly, height, width), dtype=torch.bool, device=dev)
    if npoly == 0:
        return out
    chunk = max(1, _CHUNK_CELLS // (height * (width + 1)))
    bounds = torch.cat([first, torch.tensor([len(verts)], device=dev)]).tolist()
    for p0 in range(0, npoly, chunk):
        p1 = min(p0 + chunk, npoly)
        v0, v1 = bounds[p0], bounds[p1]
        _torch_kernel(verts[v0:v1], first[p0:p1] - v0, out[p0:p1])
    return out


def rasterize_torch(
    points: torch.Tensor | Sequence,
    height: int,
    width: int,
    device: torch.device | str | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Filled polygon masks as a bool tensor, identical to :func:`chexmask_u_tools.masks.raster.rasterize`.

    Parameters
    ----------
    points:
        (B, N, 2) tensor (or array) of B polygons, a list of B (N_i, 2)
        tensors/arrays of different lengths, or one (N, 2) polygon.  Pixels,
        x = column, y = row; floats are truncated toward zero.
    height, width:
        Mask size.
    device:
        Where to compute and return; default: the input tensor's device (CPU
        for arrays and lists of arrays).
    backend:
        ``"auto"`` (numpy kernel on CPU, torch kernel elsewhere), ``"torch"``
        (torch ops on any device) or ``"numpy"`` (CPU only).  All give the
        same masks.

    Returns
    -------
    bool tensor (B, H, W), or (H, W) for one (N, 2) polygon.

    Examples
    --------
    >>> import torch
    >>> import chexmask_u_tools as cxu
    >>> square = torch.tensor([[1.0, 1.0], [3.9, 1.0], [3.9, 3.0], [1.0, 3.0]])  # x, y; truncated to 1..3
    >>> mask = cxu.rasterize_torch(square, 5, 6)
    >>> mask.shape, mask.dtype
    (torch.Size([5, 6]), torch.bool)
    >>> mask.int().tolist()
    [[0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]]
    >>> triangle = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    >>> masks = cxu.rasterize_torch([square, triangle], 5, 6, backend="torch")  # polygons of different lengths
    >>> masks.shape, masks.sum(dim=(1, 2)).tolist()
    (torch.Size([2, 5, 6]), [9, 6])
    """
    height, width = check_size(height, width)
    verts, first, single = _as_polygons(points, device)
    out = _run(verts, first, height, width, backend)
    return out[0] if single else out


def rasterize_organs_torch(
    landmarks: torch.Tensor | np.ndarray,
    height: int,
    width: int,
    device: torch.device | str | None = None,
    *,
    from_size: tuple[int, int] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Organ masks of (B, 120, 2) landmarks as a bool tensor (B, 3, H, W).

    Same masks and organ order as :func:`chexmask_u_tools.masks.raster.rasterize_organs`
    ((120, 2) gives (3, H, W)).  ``from_size=(H0, W0)`` first scales the
    landmarks by ``x * width / W0``, ``y * height / H0``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> import chexmask_u_tools as cxu
    >>> landmarks = torch.as_tensor(np.stack([np.asarray(cxu.load_sample()["landmarks"][0])] * 2))  # 1024 frame
    >>> masks = cxu.rasterize_organs_torch(landmarks, 64, 64, from_size=(1024, 1024))
    >>> masks.shape, masks.dtype
    (torch.Size([2, 3, 64, 64]), torch.bool)
    >>> reference = cxu.rasterize_organs(landmarks[0].numpy(), 64, 64, from_size=(1024, 1024))
    >>> bool((masks[0].numpy() == reference).all())
    True
    """
    height, width = check_size(height, width)
    lm = landmarks if isinstance(landmarks, torch.Tensor) else torch.as_tensor(np.asarray(landmarks))
    if device is not None:
        lm = lm.to(device)
    if lm.ndim not in (2, 3) or lm.shape[-2:] != (N_NODES, 2):
        raise InputError(f"landmarks must have shape (120, 2) or (B, 120, 2), got {tuple(lm.shape)}")
    if from_size is not None:
        h0, w0 = check_size(*from_size)
        lm = lm.double() * torch.tensor([width / w0, height / h0], dtype=torch.float64, device=lm.device)
    verts = _validate(lm, "landmarks").reshape(-1, 2)
    nimg = len(verts) // N_NODES
    starts = torch.tensor([ORGAN_SLICES[o].start for o in ORGANS], device=verts.device)
    first = (torch.arange(nimg, device=verts.device)[:, None] * N_NODES + starts).reshape(-1)
    out = _run(verts, first, height, width, backend).reshape(nimg, len(ORGANS), height, width)
    return out[0] if lm.ndim == 2 else out


def require_on_grid_torch(landmarks: torch.Tensor, height: int, width: int, *, allow_partial: bool = False) -> None:
    """:func:`~chexmask_u_tools.masks.raster.require_on_grid` for a tensor, without copying the usual batch.

    ``landmarks``: (N, 2) or (B, N, 2) real tensor, pixels.  The tensor's
    device answers the usual case, where every vertex (truncated, as the
    rasterizer draws it) is a pixel of the ``(height, width)`` grid: nothing
    to refuse, and only one bool comes back to the host.  Any other batch is
    copied to the host and judged by ``require_on_grid`` itself (one rule, in
    one place), which raises :class:`~chexmask_u_tools.errors.InputError` for
    landmarks of another frame; ``allow_partial`` as there.

    Examples
    --------
    >>> import torch
    >>> require_on_grid_torch(torch.tensor([[[10.0, 20.0], [270.0, 10.0]]]), 256, 256)  # 14 px beyond: a border contour
    >>> require_on_grid_torch(torch.tensor([[600.0, 700.0], [900.0, 300.0]]), 256, 256, allow_partial=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: no vertex of the landmarks falls on the 256x256 grid ...
    """
    if landmarks.ndim < 2 or landmarks.shape[-1] != 2:
        raise InputError(f"landmarks must have shape (N, 2) or (B, N, 2), got {tuple(landmarks.shape)}")
    verts = landmarks.detach()
    if verts.is_floating_point():
        verts = torch.trunc(verts)  # NaN stays NaN: off the grid, judged on the host
    on = (verts[..., 0] >= 0) & (verts[..., 0] < width) & (verts[..., 1] >= 0) & (verts[..., 1] < height)
    if bool(on.all()):
        return
    host = landmarks.detach().cpu()
    require_on_grid((host.double() if host.is_floating_point() else host).numpy(), height, width, allow_partial=allow_partial)
