"""Batched soft (uncertainty) masks in torch, on CPU or CUDA, equal to :mod:`~chexmask_u_tools.masks.soft`.

Every step runs on the batch's device, for all contours of the batch at once
(B landmark sets x 3 organs, or B contours): tensor operations per chunk of
contours, no Python loop per contour, per organ or per segment, and nothing
copied to the host but a few counts (the sizes of the next tensors).

1. The closed form's model, :func:`contour_model_torch`: the batched twin of
   :func:`~chexmask_u_tools.masks.soft.contour_model` (truncation moments,
   shifted polygon, outward normals, sharp convex vertices, per-axis variances,
   the band reach of each half segment, the two-edge model's line constants).
2. The inside test of the shifted mean polygons: each edge's crossings of the
   pixel rows are scattered into the masks, and the parity of their
   cumulative sum along the row is the even-odd, half-open rule of numpy's
   scanline fill.
3. The band pixels.  The grid is cut into ``SEARCH_BLOCK`` x ``SEARCH_BLOCK``
   blocks.  Each segment lists the blocks of a box around it as wide as its
   contour's band reach (plus the block's half-diagonal and slack), and each
   block keeps the candidate segments that can be nearest to one of its
   pixels (numpy's block test: within ``min distance + 2 * half-diagonal`` of
   the block centre), and only if one of them reaches the block.  Each pixel
   of a block measures its block's few candidates only, with numpy's float32
   operations in numpy's order, so the same segment wins (among exact ties,
   the last one within its reach); its minimum is a scatter over the block's
   candidate rows.  Pixels beyond every band keep the inside test.
4. The closed form on the band pixels: ``P = Phi(z)`` and, near sharp convex
   vertices, the two-edge (bivariate normal) probability where it is lower.

Memory is bounded: contours are taken in chunks of at most ``_PAIR_BUDGET``
(segment, block) pairs, the candidate pixels in passes of about
``_PASS_CELLS`` distances (both ``_CUDA_SCALE`` times more on CUDA), the
inside test's sums in ``_FILL_CELLS`` pixels.
A contour whose std is all zero is exactly its hard mask, drawn by the torch
rasterizer (:mod:`~chexmask_u_tools.masks.raster_torch`), as in numpy.  The
result equals numpy's :func:`~chexmask_u_tools.masks.soft.soft_mask` within
1e-5 (the CDF's float32 ``exp`` may differ by an ulp; measured: 3e-7).

This module imports torch; ``chexmask_u_tools.masks`` does not import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGAN_SIZES, ORGANS
from chexmask_u_tools.masks.raster import MAX_COORDINATE, as_points, check_size, scale_points
from chexmask_u_tools.masks.raster_torch import rasterize_organs_torch, rasterize_torch, require_on_grid_torch
from chexmask_u_tools.masks.soft import BAND_Z, MIN_STD, SEARCH_BLOCK, points_in_frame

__all__ = ["ContourModels", "contour_model_torch", "soft_mask_organs_torch", "soft_mask_torch"]

# The model's constants as masks.soft.contour_model uses them (the tests pin the two models equal):
_BAND_PAD = 1.0  # the band's reach beyond z_cut sigma: delta's bound (0.5 px) plus float32 slack
_CORNER_SIN = float(np.sin(np.radians(20.0)))  # vertices turning more than 20 degrees get the two-edge model
_FOURIER_TERMS = 24  # harmonics of the truncation moments

# (segment, block) pairs per chunk of contours: a few int64 / float32 arrays of this length.
_PAIR_BUDGET = 1 << 22
# (contour, block) cells per chunk of contours: the per-block minima.
_BLOCK_BUDGET = 1 << 24
# Candidate pixel distances per pass (candidate rows x SEARCH_BLOCK^2): ~10 float32/int64 arrays of this size.
_PASS_CELLS = 1 << 23
# Pixels per cumulative sum of the inside test (float32 temporaries of this size).
_FILL_CELLS = 1 << 26
# On CUDA, chunks and passes this many times larger: each costs ~150 kernel launches whose host time
# would otherwise rival the GPU's (a few GB of temporaries in all).
_CUDA_SCALE = 4
_ORGAN_RINGS = tuple(ORGAN_SIZES[organ] for organ in ORGANS)


def _device(device, *inputs) -> torch.device:
    if device is not None:
        return torch.device(device)
    for x in inputs:
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")


def _real_points(points, name: str, dev: torch.device) -> torch.Tensor:
    """``points`` as a float64 tensor on ``dev`` (integer or real input; values are checked later)."""
    if isinstance(points, torch.Tensor):
        if points.dtype == torch.bool or points.is_complex():
            raise InputError(f"{name} must be a real numeric tensor, got {points.dtype}")
        return points.detach().to(dev, torch.float64)
    try:
        arr = np.asarray(points)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} is not a numeric array: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return torch.as_tensor(arr.astype(np.float64), device=dev)


def _real_std(std, dev: torch.device) -> torch.Tensor:
    if isinstance(std, torch.Tensor):
        if std.dtype == torch.bool or std.is_complex():
            raise InputError(f"std must be a real numeric tensor, got {std.dtype}")
        return std.detach().to(dev, torch.float64)
    try:
        return torch.as_tensor(np.asarray(std, dtype=np.float64), device=dev)
    except (TypeError, ValueError):
        raise InputError("std must be numeric") from None


def _host(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _framed(points, std, single: bool, pts: torch.Tensor, height: int, width: int, from_size, what: str,
            name: str):
    """Validated float64 (B, M, 2) points and per-axis std on the device, scaled from ``from_size``.

    ``pts``: the (B, M, 2) points as float64; ``points`` and ``std``: the
    caller's inputs, ``name`` the points' argument name.  The value checks run on the device (one bool comes
    back); inputs that fail are checked again on the host by
    :func:`~chexmask_u_tools.masks.soft.points_in_frame`, which words the error.
    """
    batch, nodes = pts.shape[:2]
    sd = _real_std(std, pts.device)
    if single:
        sd = sd[None]
    if sd.ndim not in (2, 3) or len(sd) != batch:
        raise InputError(f"std must have one entry per {what}: {len(sd) if sd.ndim else 0} for {batch} {what}s")
    if sd.shape[1:] == (nodes,):
        sd = sd[..., None].expand(batch, nodes, 2)
    elif sd.shape[1:] != (nodes, 2):
        raise InputError(f"std must have shape ({nodes}, 2) or ({nodes},) per {what}, got {tuple(sd.shape[1:])}")
    ok = torch.isfinite(pts).all() & (pts.abs() <= MAX_COORDINATE).all()
    ok &= torch.isfinite(sd).all() & (sd >= 0).all() & (sd <= MAX_COORDINATE).all()
    if from_size is not None:
        factor = torch.as_tensor(scale_points(np.ones((1, 2)), from_size, (height, width))[0], device=pts.device)
        pts, sd = pts * factor, sd * factor
        ok &= (sd <= MAX_COORDINATE).all()
    if not bool(ok):
        host_pts, host_sd = as_points(_host(points), name), _host(std)
        if single:
            host_pts, host_sd = host_pts[None], host_sd[None]
        for p, s in zip(host_pts, host_sd):
            points_in_frame(p, s, height, width, from_size)  # raises the numpy path's error
        raise InputError("points or std hold values the soft masks cannot use (NaN, infinite or beyond 2**20 px)")
    return pts, torch.where((sd > 0) & (sd < MIN_STD), torch.full((), MIN_STD, dtype=sd.dtype, device=sd.device), sd)


def soft_mask_torch(
    points,
    std,
    height: int,
    width: int,
    device: torch.device | str | None = None,
    *,
    from_size: tuple[int, int] | None = None,
    band: bool = True,
) -> torch.Tensor:
    """Soft masks of one or many contours as a float32 tensor, like :func:`~chexmask_u_tools.masks.soft.soft_mask`.

    Parameters
    ----------
    points:
        (N, 2) or (B, N, 2) mean contours (tensor or array), pixels, x = column.
    std:
        Per-node std of the same leading shape: (N,) / (N, 2) or (B, N) / (B, N, 2).
    height, width:
        Mask size.
    device:
        Where to compute and return; default: the first input tensor's device (CPU for arrays).
    from_size, band:
        As in :func:`~chexmask_u_tools.masks.soft.soft_mask`.

    Returns
    -------
    float32 tensor (H, W) or (B, H, W) on ``device``; within 1e-5 of numpy.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])
    >>> p = soft_mask_torch(square, np.full(4, 1.0), 20, 20)
    >>> p.shape, p.dtype, float(p[0, 0]), float(p[10, 10]) > 0.999
    (torch.Size([20, 20]), torch.float32, 0.0, True)
    """
    height, width = check_size(height, width)
    dev = _device(device, points, std)
    pts = _real_points(points, "points", dev)
    if pts.ndim not in (2, 3) or pts.shape[-1] != 2 or pts.shape[-2] < 1:
        raise InputError(f"points must have shape (N, 2) or (B, N, 2), got {tuple(pts.shape)}")
    single = pts.ndim == 2
    pts, sd = _framed(points, std, single, pts[None] if single else pts, height, width, from_size, "contour", "points")
    out = torch.empty((len(pts), 1, height, width), dtype=torch.float32, device=dev)
    _draw(out, pts, sd, (pts.shape[1],), band, lambda p: rasterize_torch(p, height, width)[:, None])
    return out[0, 0] if single else out[:, 0]


def soft_mask_organs_torch(
    landmarks,
    std,
    height: int,
    width: int,
    device: torch.device | str | None = None,
    *,
    from_size: tuple[int, int] | None = None,
    band: bool = True,
    allow_empty: bool = False,
    allow_partial: bool = False,
) -> torch.Tensor:
    """Soft masks of the three organs of many landmark sets: float32 (B, 3, H, W) ((3, H, W) for one set).

    ``landmarks`` (120, 2) or (B, 120, 2); ``std`` (120,) / (120, 2) or
    (B, 120) / (B, 120, 2).  Same masks as
    :func:`~chexmask_u_tools.masks.soft.soft_mask_organs` (within 1e-5),
    computed for every organ of the batch at once on ``device`` (default: the
    landmarks' device).  ``from_size``, ``band``, ``allow_empty`` and ``allow_partial`` as there.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> sample = cxu.load_sample()
    >>> lm = np.stack(sample["landmarks"].to_numpy()[:2])
    >>> sd = np.stack(sample["landmarks_std"].to_numpy()[:2])
    >>> p = soft_mask_organs_torch(lm, sd, 64, 64, from_size=(1024, 1024))
    >>> tuple(p.shape), p.dtype
    ((2, 3, 64, 64), torch.float32)
    """
    height, width = check_size(height, width)
    dev = _device(device, landmarks, std)
    lm = _real_points(landmarks, "landmarks", dev)
    if lm.ndim not in (2, 3) or lm.shape[-2:] != (N_NODES, 2):
        raise InputError(f"landmarks must have shape (120, 2) or (B, 120, 2), got {tuple(lm.shape)}")
    single = lm.ndim == 2
    lm, sd = _framed(landmarks, std, single, lm[None] if single else lm, height, width, from_size, "landmark set",
                     "landmarks")
    if not allow_empty:
        require_on_grid_torch(lm[0] if single else lm, height, width, allow_partial=allow_partial)
    out = torch.empty((len(lm), len(ORGANS), height, width), dtype=torch.float32, device=dev)
    _draw(out, lm, sd, _ORGAN_RINGS, band, lambda p: rasterize_organs_torch(p, height, width))
    return out[0] if single else out


# ----------------------------------------------------------------------------
# the model


class ContourModels(NamedTuple):
    """The closed form's constants of many contours on their device (:func:`contour_model_torch`).

    The fields of :class:`~chexmask_u_tools.masks.soft.ContourModel` with a
    leading batch axis: B rows of M nodes, each row made of closed rings of
    consecutive nodes (one contour each).  Per node / segment ``j`` (from node
    ``j`` to ``nxt[j]``): ``a``, ``v``, ``seg_n``, ``var`` (B, M, 2) float64;
    ``length2``, ``reach``, ``corner_reach`` (B, M) float64; ``convex`` (B, M)
    bool; ``half_reach`` (B, M, 2); ``line``: the ten (B, M) line constants
    and the (B, M) shared-node covariance.  ``nxt``, ``prev`` (M,) int64: the
    next and previous node of each node in its ring; ``ring`` (M,) int64: its ring.
    """

    a: torch.Tensor
    v: torch.Tensor
    length2: torch.Tensor
    seg_n: torch.Tensor
    var: torch.Tensor
    convex: torch.Tensor
    nxt: torch.Tensor
    reach: torch.Tensor
    corner_reach: torch.Tensor
    line: tuple
    half_reach: torch.Tensor
    prev: torch.Tensor
    ring: torch.Tensor


def _ring_tables(sizes: tuple[int, ...], dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M,) ring, next node and previous node of each node of consecutive closed rings of ``sizes`` nodes."""
    counts = torch.as_tensor(sizes, device=dev)
    ring = torch.repeat_interleave(torch.arange(len(sizes), device=dev), counts)
    first = (torch.cumsum(counts, 0) - counts)[ring]
    size = counts[ring]
    local = torch.arange(len(ring), device=dev) - first
    return ring, first + (local + 1) % size, first + (local - 1) % size


def _per_ring(values: torch.Tensor, ring: torch.Tensor, nrings: int, reduce: str) -> torch.Tensor:
    """(B, R): ``reduce`` ("sum", "amin", "amax") of (B, M) or (B, M, K) ``values`` over each ring's nodes."""
    batch = values.shape[0]
    index = ring if values.ndim == 2 else ring[:, None].expand(values.shape[1:])
    flat = values.reshape(batch, -1)
    out = torch.zeros((batch, nrings), dtype=values.dtype, device=values.device)
    return out.scatter_reduce(1, index.reshape(1, -1).expand(batch, -1), flat, reduce, include_self=False)


def _truncation_moments(x: torch.Tensor, sigma: torch.Tensor, ring: torch.Tensor, nrings: int):
    """Mean and variance of ``trunc(x + e) - (x + e)``, ``e ~ N(0, sigma^2)``, per axis of (B, M, 2) nodes.

    numpy's sawtooth Fourier series, with each contour's number of harmonics
    (set by its smallest non-zero std, as numpy sets it per call).
    """
    sign = torch.where(x < 0, -1.0, 1.0)
    u = x.abs()
    exact = sigma == 0
    smallest = _per_ring(torch.where(exact, math.inf, sigma), ring, nrings, "amin")
    smallest = torch.where(torch.isinf(smallest), 1.0, smallest)
    terms = torch.clamp(torch.ceil(math.sqrt(41.5 / (2 * math.pi**2)) / smallest), max=_FOURIER_TERMS)
    # harmonics up to the batch's largest count (typically 1-3 for real stds: the work drops 10-fold)
    k = torch.arange(1, int(terms.max()) + 1 if terms.numel() else 1, dtype=torch.float64, device=x.device)
    terms = terms[:, ring]
    damp = torch.exp((-2 * math.pi**2) * k**2 * sigma[..., None] ** 2)
    damp = torch.where(k <= terms[..., None, None], damp, 0.0)
    phase = (2 * math.pi) * k * u[..., None]
    pik = math.pi * k
    sin = torch.sin(phase)
    mean = 0.5 - torch.sum(damp * sin / pik, dim=-1)
    second = 1 / 3 + torch.sum(damp * (torch.cos(phase) / pik**2 - sin / pik), dim=-1)
    mean = torch.where(exact, u - torch.floor(u), mean)
    var = torch.where(exact, 0.0, torch.clamp(second - mean**2, 0.0, 1 / 12 + 1e-3))
    return -sign * mean, var


def contour_model_torch(
    points: torch.Tensor,
    std: torch.Tensor,
    height: int,
    width: int,
    z_cut: float | None,
    ring_sizes: tuple[int, ...] | None = None,
) -> ContourModels:
    """The closed form's constants of many contours at once, on their device.

    The batched twin of :func:`~chexmask_u_tools.masks.soft.contour_model`
    (same quantities, same float64 formulas; the tests compare them).

    Parameters
    ----------
    points, std:
        float64 (B, M, 2) tensors: validated mean contours in the mask's
        pixels and their per-axis std (pixels, non-negative).
    height, width:
        Mask size.
    z_cut:
        Band half-width in sigma (:func:`~chexmask_u_tools.masks.soft.band_z`),
        or None for the whole grid.
    ring_sizes:
        Each row's contours as consecutive closed rings of these many nodes
        (default: one ring of M nodes; ``(44, 50, 26)`` for the organs).

    Returns
    -------
    :class:`ContourModels` on the points' device.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from chexmask_u_tools.masks.soft import BAND_Z, contour_model
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])
    >>> rows = torch.as_tensor(np.stack([square, square + 3]))  # two contours of 4 nodes
    >>> model = contour_model_torch(rows, torch.ones(2, 4, 2, dtype=torch.float64), 20, 20, BAND_Z)
    >>> tuple(model.half_reach.shape), model.convex.tolist()[0]
    ((2, 4, 2), [True, True, True, True])
    >>> bool(np.allclose(model.a[1].numpy(), contour_model(square + 3, np.ones((4, 2)), 20, 20, BAND_Z).a))
    True
    """
    if points.ndim != 3 or points.shape[-1] != 2 or std.shape != points.shape:
        raise InputError(f"points and std must both have shape (B, M, 2), got {tuple(points.shape)} and {tuple(std.shape)}")
    batch, nodes = points.shape[:2]
    sizes = (nodes,) if ring_sizes is None else tuple(int(s) for s in ring_sizes)
    if sum(sizes) != nodes or min(sizes, default=0) < 1:
        raise InputError(f"ring_sizes must be positive and add up to the {nodes} nodes per row, got {sizes}")
    ring, nxt, prev = _ring_tables(sizes, points.device)
    nrings = len(sizes)
    shift, trunc_var = _truncation_moments(points, std, ring, nrings)
    a = points + shift
    var = std**2 + trunc_var
    after = a[:, nxt]
    v = after - a
    length2 = v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]
    node_var = var.amax(dim=-1)
    sigma_max = torch.sqrt(torch.maximum(node_var, node_var[:, nxt]))
    corner_reach = BAND_Z * sigma_max + 0.5
    area2 = _per_ring(a[..., 0] * after[..., 1] - after[..., 0] * a[..., 1], ring, nrings, "sum")
    seg_n = torch.stack([v[..., 1], -v[..., 0]], dim=-1) * torch.where(area2 >= 0, 1.0, -1.0)[:, ring, None]
    seg_n = seg_n / torch.clamp(torch.sqrt(seg_n[..., 0] ** 2 + seg_n[..., 1] ** 2), min=1e-12)[..., None]
    unit_v = v / torch.clamp(torch.sqrt(length2), min=1e-12)[..., None]
    before = seg_n[:, prev]
    convex = before[..., 0] * unit_v[..., 0] + before[..., 1] * unit_v[..., 1] < -_CORNER_SIN
    f64 = {"dtype": torch.float64, "device": points.device}
    if z_cut is None:
        # farther than any pixel can be from any segment: the whole grid
        span_x = torch.clamp(_per_ring(a[..., 0].abs(), ring, nrings, "amax"), min=float(width))
        span_y = torch.clamp(_per_ring(a[..., 1].abs(), ring, nrings, "amax"), min=float(height))
        half_reach = (2.0 * torch.hypot(span_x, span_y) + 1.0)[:, ring, None].expand(batch, nodes, 2)
    else:
        # the corner model applies on the half of a segment next to a sharp convex vertex
        wide = torch.stack([convex, convex[:, nxt]], dim=-1)
        z = torch.where(wide, torch.tensor(max(z_cut, BAND_Z), **f64), torch.tensor(float(z_cut), **f64))
        half_reach = z * sigma_max[..., None] + _BAND_PAD
    reach = half_reach.amax(dim=-1)
    n2 = seg_n * seg_n
    line = (
        a[..., 0], a[..., 1], v[..., 0], v[..., 1],
        torch.clamp(v[..., 0] ** 2 + v[..., 1] ** 2, min=1e-12),
        seg_n[..., 0], seg_n[..., 1],
        0.5 * torch.maximum(seg_n[..., 0].abs(), seg_n[..., 1].abs()),
        n2[..., 0] * var[..., 0] + n2[..., 1] * var[..., 1],
        n2[..., 0] * var[:, nxt, 0] + n2[..., 1] * var[:, nxt, 1],
    )
    # the shared node's covariance along both adjacent normals, per vertex
    shared = before[..., 0] * seg_n[..., 0] * var[..., 0] + before[..., 1] * seg_n[..., 1] * var[..., 1]
    return ContourModels(a, v, length2, seg_n, var, convex, nxt, reach, corner_reach, (line, shared), half_reach,
                         prev, ring)


class _Segments:
    """The model's per-segment tables flat over the batch's S = B * M segments, as the pixel passes read them.

    Segment ``s`` of row ``b`` and node ``j`` is ``b * M + j``; its contour
    (the mask it draws) is ``b * R + ring[j]``, so each contour's segments are
    consecutive.  float32 columns are those numpy's pixel step uses in float32.
    """

    def __init__(self, model: ContourModels, soft: torch.Tensor) -> None:
        batch, nodes = model.a.shape[:2]
        nrings = soft.shape[1]
        dev = model.a.device
        rows = torch.arange(batch, device=dev)[:, None]

        def flat(x):
            return x.reshape(batch * nodes, *x.shape[2:])

        self.a = flat(model.a)
        self.nxt = (rows * nodes + model.nxt).reshape(-1)
        self.prev = (rows * nodes + model.prev).reshape(-1)
        self.contour = (rows * nrings + model.ring).reshape(-1)
        self.v32 = flat(model.v).to(torch.float32)
        self.inv32 = flat(1.0 / torch.where(model.length2 > 0, model.length2, 1.0)).to(torch.float32)
        self.reach2_32 = flat(model.half_reach**2).to(torch.float32)  # (S, 2): start half, end half
        self.reach = flat(model.reach)
        self.contour_reach = flat(_per_ring(model.reach, model.ring, nrings, "amax")[:, model.ring])
        self.corner_reach32 = flat(model.corner_reach).to(torch.float32)
        self.seg_n32 = flat(model.seg_n).to(torch.float32)
        self.var32 = flat(model.var).to(torch.float32)
        self.convex = flat(model.convex)
        self.line = [flat(c) for c in model.line[0]]
        self.shared = flat(model.line[1])
        self.soft = soft.reshape(-1)[self.contour]


# ----------------------------------------------------------------------------
# drawing


def _draw(out: torch.Tensor, points: torch.Tensor, std: torch.Tensor, ring_sizes: tuple[int, ...], band: bool,
          rasterize_rows: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Fill float32 ``out`` (B, R, H, W) with the soft masks of validated (B, M, 2) ``points`` / per-axis ``std``.

    Row ``b``'s ring ``r`` of ``ring_sizes`` draws ``out[b, r]``;
    ``rasterize_rows`` draws the hard masks (B', R, H, W) of some rows, for
    the contours whose std is all zero.
    """
    batch, nrings, height, width = out.shape
    if batch == 0:
        return
    model = contour_model_torch(points, std, height, width, BAND_Z if band else None, ring_sizes)
    hard = _per_ring(std.amax(dim=-1), model.ring, nrings, "amax") == 0  # (B, R): every std zero
    segments = _Segments(model, ~hard)
    masks = out.view(batch * nrings, height, width)
    _fill_inside(masks, segments)
    _fill_band(masks, segments, ring_sizes)
    if bool(hard.any()):  # exactly the hard masks, as in numpy
        rows = hard.any(dim=1).nonzero()[:, 0]
        drawn = rasterize_rows(points[rows]).to(torch.float32)
        out[rows] = torch.where(hard[rows][:, :, None, None], drawn, out[rows])


def _fill_inside(masks: torch.Tensor, seg: _Segments) -> None:
    """Write 1.0 / 0.0 into ``masks`` (C, H, W): pixel centres inside each shifted polygon (even-odd, half-open rows).

    Each edge crosses the rows ``ceil(min y) <= r < ceil(max y)`` at numpy's
    float64 ``x``; a pixel is inside when an odd number of crossings has
    ``ceil(x) <= column`` (numpy pairs the sorted crossings into runs: the
    same pixels).
    """
    ncontours, height, width = masks.shape
    dev = masks.device
    a, b = seg.a, seg.a[seg.nxt]
    ay, by = a[:, 1], b[:, 1]
    r0 = torch.clamp(torch.ceil(torch.minimum(ay, by)), 0, height).to(torch.int64)
    r1 = torch.clamp(torch.ceil(torch.maximum(ay, by)), 0, height).to(torch.int64)
    counts = torch.clamp(r1 - r0, min=0)
    total = int(counts.sum())
    masks.zero_()
    if total:
        s = torch.repeat_interleave(torch.arange(len(counts), device=dev), counts, output_size=total)
        rows = r0[s] + (torch.arange(total, device=dev) - (torch.cumsum(counts, 0) - counts)[s])
        ax, ay_s = a[s, 0], ay[s]
        x = torch.clamp(ax + (rows - ay_s) * (b[s, 0] - ax) / (by[s] - ay_s), -1.0, width + 1.0)
        col = torch.clamp(torch.ceil(x), 0, width).to(torch.int64)
        beyond = col == width  # a crossing right of the last column flips no pixel: it adds 0
        cell = (seg.contour[s] * height + rows) * width + torch.where(beyond, 0, col)
        masks.view(-1).index_put_((cell,), (~beyond).to(torch.float32), accumulate=True)
    per = max(1, _FILL_CELLS // (height * width))
    for c0 in range(0, ncontours, per):
        chunk = masks[c0 : c0 + per]
        torch.remainder(torch.cumsum(chunk, dim=2), 2.0, out=chunk)


def _fill_band(masks: torch.Tensor, seg: _Segments, ring_sizes: tuple[int, ...]) -> None:
    """Overwrite the band pixels of ``masks`` (C, H, W), holding the inside test, with the closed form."""
    ncontours, height, width = masks.shape
    dev = masks.device
    nbx, nby = -(-width // SEARCH_BLOCK), -(-height // SEARCH_BLOCK)
    blocks = nbx * nby
    centre = (SEARCH_BLOCK - 1) / 2.0
    half = centre * math.sqrt(2.0)  # block centre to its farthest pixel centre
    a, b = seg.a, seg.a[seg.nxt]
    # Twice numpy's block-test slack (float32 rounding of block-level distances): a wider test only adds
    # candidates that lose, and blocks whose pixels are all beyond reach.
    extent = torch.maximum((a.abs().amax(dim=1) + seg.reach).amax(), torch.tensor(float(max(height, width)), device=dev))
    slack = 2.0 * (1e-2 + 1e-5 * extent)
    # Blocks whose centre may lie within a candidate's distance of the segment: its contour's largest reach
    # (the nearest segment of a useful block), then two half-diagonals and the slack.
    margin = seg.contour_reach + (3.0 * half + 1.0) + 3.0 * slack
    lo = torch.minimum(a, b) - margin[:, None]
    hi = torch.maximum(a, b) + margin[:, None]
    limit = torch.tensor([nbx, nby], dtype=torch.float64, device=dev)
    first = torch.clamp(torch.ceil((lo - centre) / SEARCH_BLOCK), min=0.0)
    last = torch.minimum(torch.floor((hi - centre) / SEARCH_BLOCK), limit - 1)
    span = torch.clamp(last - first + 1, min=0.0)
    first = torch.minimum(first, limit).to(torch.int64)
    span_x = span[:, 0].to(torch.int64)
    counts = torch.where(seg.soft, span_x * span[:, 1].to(torch.int64), 0)

    # chunks of consecutive contours: at most _PAIR_BUDGET pairs (one contour at least) and _BLOCK_BUDGET cells
    per_contour = torch.zeros(ncontours, dtype=torch.int64, device=dev).index_add_(0, seg.contour, counts).cpu().numpy()
    pair_end = np.cumsum(per_contour)
    nodes = sum(ring_sizes)
    ring_first = np.cumsum((0,) + tuple(ring_sizes))[:-1]
    seg_first = np.append((np.arange(ncontours // len(ring_sizes))[:, None] * nodes + ring_first).ravel(), len(seg.a))
    most = max(1, _BLOCK_BUDGET // blocks)
    pairs = _PAIR_BUDGET * (_CUDA_SCALE if dev.type == "cuda" else 1)
    c0 = 0
    while c0 < ncontours:
        done = pair_end[c0 - 1] if c0 else 0
        c1 = int(np.searchsorted(pair_end, done + pairs, side="right"))
        c1 = min(max(c1, c0 + 1), c0 + most, ncontours)
        total = int(pair_end[c1 - 1] - done)
        if total:
            s0, s1 = int(seg_first[c0]), int(seg_first[c1])
            _chunk(masks, seg, s0, s1, c0, c1, counts[s0:s1], total, first[s0:s1], span_x[s0:s1], half, slack, nbx,
                   blocks)
        c0 = c1


def _chunk(masks, seg: _Segments, s0: int, s1: int, c0: int, c1: int, counts, total: int, first, span_x,
           half: float, slack: torch.Tensor, nbx: int, blocks: int) -> None:
    """The band pixels of contours ``c0:c1`` (segments ``s0:s1``): block test, candidates, passes."""
    dev = masks.device
    f32 = torch.float32
    # every (segment, block) pair of each segment's box
    local_seg = torch.repeat_interleave(torch.arange(s1 - s0, device=dev), counts, output_size=total)
    step = torch.arange(total, device=dev) - (torch.cumsum(counts, 0) - counts)[local_seg]
    width_of = span_x[local_seg]
    bx = first[local_seg, 0] + step % width_of
    by = first[local_seg, 1] + torch.div(step, width_of, rounding_mode="floor")
    sid = local_seg + s0
    key = (seg.contour[sid] - c0) * blocks + by * nbx + bx
    # distance from each block's centre to the segment, float32 (the block test only selects)
    centre = (SEARCH_BLOCK - 1) / 2.0
    start = seg.a[sid].to(f32)
    rx = (bx * SEARCH_BLOCK + centre).to(f32) - start[:, 0]
    ry = (by * SEARCH_BLOCK + centre).to(f32) - start[:, 1]
    vx, vy = seg.v32[sid, 0], seg.v32[sid, 1]
    t = torch.clamp((rx * vx + ry * vy) * seg.inv32[sid], 0.0, 1.0)
    dist = torch.sqrt((rx - t * vx) ** 2 + (ry - t * vy) ** 2)
    cells = (c1 - c0) * blocks
    nearest = torch.full((cells,), math.inf, dtype=f32, device=dev).scatter_reduce_(0, key, dist, "amin")
    gap = torch.full((cells,), math.inf, dtype=f32, device=dev)
    gap.scatter_reduce_(0, key, dist - seg.reach[sid].to(f32), "amin")
    slack32 = slack.to(f32)
    keep = (gap[key] <= half + slack32) & (dist <= nearest[key] + (2.0 * half + slack32))
    cand = keep.nonzero()[:, 0]
    if not len(cand):
        return
    sid, key, bx, by = sid[cand], key[cand], bx[cand], by[cand]
    # the useful blocks, numbered 0..U-1; candidate rows grouped by block, segments ascending within a block
    used = torch.zeros(cells, dtype=torch.bool, device=dev)
    used[key] = True
    rank = torch.cumsum(used, 0) - 1
    block = rank[key]
    nblocks = int(rank[-1]) + 1
    order = torch.argsort(block, stable=True)
    row_end = torch.cumsum(torch.bincount(block, minlength=nblocks), 0)
    # passes of whole blocks, about _PASS_CELLS distances each
    rows_per_pass = max(1, _PASS_CELLS * (_CUDA_SCALE if dev.type == "cuda" else 1) // SEARCH_BLOCK**2)
    targets = torch.arange(1, -(-len(cand) // rows_per_pass), device=dev) * rows_per_pass
    cuts = torch.searchsorted(row_end, targets, right=True)
    bounds = torch.unique(torch.cat([cuts, torch.tensor([nblocks], device=dev)]))
    bounds = bounds[bounds > 0]
    u0 = r0 = 0
    for u1, r1 in torch.stack([bounds, row_end[bounds - 1]], dim=1).tolist():
        rows = order[r0:r1]
        _pass(masks, seg, sid[rows], bx[rows], by[rows], block[rows] - u0, u1 - u0)
        u0, r0 = u1, r1


def _pass(masks, seg: _Segments, sid, bx, by, block, nblocks: int) -> None:
    """Nearest candidate segment of every pixel of ``nblocks`` blocks, then the closed form of the band pixels.

    ``sid``, ``bx``, ``by``, ``block``: (K,) candidate rows (segment, block
    column and row, block number 0..nblocks-1), grouped by block with
    segments ascending.  Per-pixel minima are scatters of the (K, pixels)
    distances onto the (blocks, pixels) grid along the rows (an expanded
    index: nothing per pixel but the distances is stored).
    """
    height, width = masks.shape[1:]
    dev = masks.device
    f32 = torch.float32
    area = SEARCH_BLOCK * SEARCH_BLOCK
    cells = torch.arange(area, device=dev)
    col, row = cells % SEARCH_BLOCK, torch.div(cells, SEARCH_BLOCK, rounding_mode="floor")
    gx, gy = bx * SEARCH_BLOCK, by * SEARCH_BLOCK
    # float32 offsets, in numpy's operation order: the same distances, so the same segment wins
    start = seg.a[sid]
    rx = (gx - start[:, 0]).to(f32)[:, None] + col.to(f32)
    ry = (gy - start[:, 1]).to(f32)[:, None] + row.to(f32)
    vx, vy = seg.v32[sid, 0:1], seg.v32[sid, 1:2]
    t = rx * vx
    t += ry * vy
    t *= seg.inv32[sid, None]
    t.clamp_(0.0, 1.0)
    rx -= t * vx
    ry -= t * vy
    d2 = rx * rx
    d2 += ry * ry
    if width % SEARCH_BLOCK or height % SEARCH_BLOCK:  # blocks of the last column or row reach past the grid
        d2.masked_fill_((gx[:, None] + col >= width) | (gy[:, None] + row >= height), math.inf)
    rows = block[:, None].expand_as(d2)
    best = torch.full((nblocks, area), math.inf, dtype=f32, device=dev).scatter_reduce_(0, rows, d2, "amin")
    reach2 = torch.where(t < 0.5, seg.reach2_32[sid, 0:1], seg.reach2_32[sid, 1:2])
    win = (d2 == best.index_select(0, block)) & (d2 <= reach2)
    # among exact ties the last segment within its reach, as numpy: the highest candidate row of the block
    candidate = torch.arange(len(sid), dtype=torch.int32, device=dev)[:, None]
    choice = torch.full((nblocks, area), -1, dtype=torch.int32, device=dev)
    choice.scatter_reduce_(0, rows, torch.where(win, candidate, -1), "amax")
    band = (choice.view(-1) >= 0).nonzero()[:, 0]
    if not len(band):
        return
    k = choice.view(-1)[band].to(torch.int64)
    cell = band % area
    pick = k * area + cell
    s = sid[k]
    qx, qy = gx[k] + col[cell], gy[k] + row[cell]
    pix = (seg.contour[s] * height + qy) * width + qx
    _closed_form(masks.view(-1), seg, pix, s, t.view(-1)[pick], rx.view(-1)[pick], ry.view(-1)[pick],
                 d2.view(-1)[pick], qx, qy)


def _closed_form(flat_masks, seg: _Segments, pix, s, t, ox, oy, d2, qx, qy) -> None:
    """Overwrite the pixels ``pix`` of ``flat_masks`` (holding the inside test) with ``P`` of their segment ``s``.

    ``t``, ``ox``, ``oy``, ``d2``: float32 parameter, offset and squared
    distance of each pixel to its nearest segment; ``qx``, ``qy``: its column and row.
    """
    f32 = torch.float32
    ins = flat_masks[pix] > 0.5
    dist = _sqrt32(d2)
    local = dist <= seg.corner_reach32[s]
    on = dist < 1e-6
    safe = torch.where(on, torch.ones_like(dist), dist)
    nx, ny = ox / safe, oy / safe
    nx = torch.where(ins, -nx, nx)
    ny = torch.where(ins, -ny, ny)
    seg_n = seg.seg_n32[s]
    nx = torch.where(on, seg_n[:, 0], nx)
    ny = torch.where(on, seg_n[:, 1], ny)
    after = seg.nxt[s]
    var_a, var_b = seg.var32[s], seg.var32[after]
    nx2, ny2 = nx * nx, ny * ny
    sigma2 = (nx2 * var_a[:, 0] + ny2 * var_a[:, 1]) * ((1 - t) * (1 - t))
    sigma2 = sigma2 + (t * t) * (nx2 * var_b[:, 0] + ny2 * var_b[:, 1])
    delta = torch.maximum(nx.abs(), ny.abs()) * 0.5
    margin = torch.where(ins, dist, -dist) + delta
    certain = sigma2 <= 0
    z = margin / _sqrt32(sigma2)
    z = torch.where(certain, torch.where(margin >= 0, math.inf, -math.inf), z)
    p = _norm_cdf(z)

    nearer_start = t < 0.5
    corner = torch.where(nearer_start, seg.convex[s], seg.convex[after]) & ~certain & local
    idx = corner.nonzero()[:, 0]
    if len(idx):
        j = s[idx]
        start = nearer_start[idx]
        vertex = torch.where(start, j, after[idx])
        other = torch.where(start, seg.prev[j], after[idx])
        both = _corner_probability(seg, qx[idx].double(), qy[idx].double(), j, other, vertex)
        p[idx] = torch.minimum(p[idx].double(), both).to(f32)
    flat_masks[pix] = p


def _sqrt32(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root of float32 ``x``, as numpy's.

    torch's vectorized float32 ``sqrt`` on CPU is an ulp off for about a fifth
    of the inputs; the margin ``delta - dist`` of a pixel near the contour
    cancels to a few ulps of ``dist``, and a tiny sigma (0.001 px) would turn
    that ulp into 1e-5 of probability.  float64's root rounds to float32
    exactly.
    """
    return torch.sqrt(x.to(torch.float64)).to(torch.float32)


def _norm_cdf(z: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF, the same Abramowitz & Stegun 7.1.26 formula as numpy's, in z's dtype."""
    x = z.abs() / math.sqrt(2.0)
    t = 1.0 / (x * 0.3275911 + 1.0)
    poly = t * 1.061405429
    for coef in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly = (poly + coef) * t
    poly = poly * torch.exp(-(x * x)) * 0.5
    return torch.where(z >= 0, 1.0 - poly, poly)


def _line_z(seg: _Segments, qx, qy, s, vertex):
    """Standardized margin to the LINE of segments ``s``, its std and the weight of ``vertex`` (float64)."""
    ax, ay, vx, vy, length2, nx, ny, half, var_start, var_end = (c[s] for c in seg.line)
    rx = qx - ax
    ry = qy - ay
    t = torch.clamp((rx * vx + ry * vy) / length2, 0.0, 1.0)
    margin = half - (rx * nx + ry * ny)
    sigma = torch.sqrt(torch.clamp((1 - t) ** 2 * var_start + t * t * var_end, min=1e-12))
    weight = torch.where(vertex == s, 1 - t, t)
    return margin / sigma, sigma, weight


def _corner_probability(seg: _Segments, qx, qy, j, k, vertex) -> torch.Tensor:
    """P(inside the lines of segments j and k), the bivariate normal of numpy's corner model (float64)."""
    zj, sj, wj = _line_z(seg, qx, qy, j, vertex)
    zk, sk, wk = _line_z(seg, qx, qy, k, vertex)
    cov = wj * wk * seg.shared[vertex]
    rho = torch.clamp(cov / torch.clamp(sj * sk, min=1e-12), -0.999, 0.999)
    lo = torch.clamp(torch.minimum(zj, zk), -8.0, 8.0)
    hi = torch.clamp(torch.maximum(zj, zk), -8.0, 8.0)
    cdf = torch.clamp(_norm_cdf(lo), min=1e-300)
    lam = torch.exp(-0.5 * lo * lo) / math.sqrt(2 * math.pi) / cdf
    var = torch.clamp(1.0 - rho * rho * lam * (lam + lo), min=1e-9)
    return cdf * _norm_cdf((hi + rho * lam) / torch.sqrt(var))
