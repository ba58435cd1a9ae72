"""Uncertainty-aware masks: the probability that a pixel belongs to an organ.

Model.  Every landmark node moves independently with a Gaussian of its std
(CheXmask-U's per-node std, pixels), and the mask is then drawn exactly as the
released masks are (:func:`chexmask_u_tools.masks.raster.rasterize`: vertices
truncated toward zero, boundary pixels included).  :func:`soft_mask` gives
``P(pixel in mask)`` in closed form; :func:`sample_masks` /
:func:`sample_probability` are the Monte Carlo reference that draws perturbed
contours and rasterizes them with the exact rasterizer.

``std`` is accepted as (N, 2) per-axis stds ``(std_x, std_y)`` (the released
layout) or as (N,) per-node sigma, used for both axes.

Closed form.  For pixel centre ``q`` let ``c`` be the nearest point of the mean
contour, on segment ``(a, b)`` at parameter ``t``, with outward unit normal
``n``.  Moving the nodes by ``e_a``, ``e_b`` moves that boundary point along
``n`` by ``n . ((1 - t) e_a + t e_b)``, whose variance is
``(1 - t)^2 n'S_a n + t^2 n'S_b n`` (not the square of an interpolated std).
The released-mask convention is folded in:

* truncation: ``trunc(x + e)`` is ``x + e`` minus a fractional part; its mean
  (``~0.5`` px toward zero) shifts the contour and its variance (``~1/12``)
  adds to ``S`` (both computed per node from the Fourier series of the
  sawtooth smoothed by the node's Gaussian, so they tend to the exact
  truncation as std -> 0);
* boundary inclusion: the 8-connected edge lines add the pixels whose centre
  lies within half a pixel of the edge along its minor axis, i.e. within
  ``delta = 0.5 * max(|n_x|, |n_y|)`` of it along the normal.

So ``P = Phi((d + delta) / sigma_d)`` with ``d`` the signed distance (positive
inside) from ``q`` to the shifted mean contour.  Near a sharp convex vertex
(turning by more than 20 degrees) the pixel must be inside both adjacent edges'
half-planes, whose displacements are correlated through the shared node:
there ``P`` is the smaller of the above and the bivariate normal probability
``Phi2(z_j, z_k; rho)`` (Mendell-Elston approximation), for pixels within
``BAND_Z`` sigma of the edge (farther, the extended edge lines say nothing).

It is evaluated only in a band around each segment, ``z_tol`` sigma (plus one
pixel) wide with ``z_tol`` from the accuracy ``tol`` (:func:`band_z`:
``BAND_Z = 5`` at the default ``tol=1e-6``; the half of a segment next to a
sharp convex vertex keeps ``BAND_Z``, the reach of the corner model); elsewhere the pixel is
0 or 1 from the shifted mean polygon (the same inside test the closed form uses
for its sign), which is within ``tol`` of evaluating the closed form on the
whole grid (``band=False``, the reference).

Two implementations draw the band: a compiled kernel
(:mod:`chexmask_u_tools.kernels.soft`, ``method="kernel"``), which visits
each row's band pixels once, and numpy (``method="numpy"``, the reference the
tests and benchmarks compare against); ``method="auto"`` (the default) takes
the faster, :func:`soft_method`.  Both find the nearest segment and the
margin with the same float32 operations, so they agree within 2e-7.
With all stds zero the result is exactly the hard mask.  Against the Monte Carlo reference on real contours with node
stds of 2-8 px, the mean absolute difference over the boundary band is about
0.01 and its 99th percentile about 0.05; below about 1 px of std the pixel
grid dominates and the closed form is only approximate (zero is exact).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import shapely

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.kernels.dispatch import resolve_method
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.masks.raster import (
    MAX_COORDINATE,
    as_points,
    check_size,
    fill_runs,
    rasterize,
    require_on_grid,
    scale_points,
)

__all__ = [
    "BAND_Z",
    "DEFAULT_TOL",
    "SOFT_DTYPES",
    "band_mask",
    "band_z",
    "kernel_tables",
    "pixel_weight_map",
    "sample_masks",
    "sample_probability",
    "soft_mask",
    "soft_mask_organs",
    "soft_method",
    "uncertainty_band",
]

BAND_Z = 5.0
"""Standardized margin beyond which a pixel is filled from the inside test instead of the closed form.

The margin of a pixel at distance ``d`` from its nearest segment is ``z = (+-d +
delta) / sigma_d`` with ``delta <= 0.5`` px and ``sigma_d`` at most the segment's
largest per-node, per-axis std ``sigma_max`` (``(1 - t)^2 + t^2 <= 1``).  So past
``d = BAND_Z * sigma_max + 0.5`` every pixel has ``|z| >= BAND_Z`` and its
probability is within ``Phi(-5) = 2.9e-7`` (plus the CDF's 7.5e-8 error) of the
0 / 1 the fill gives: the band result equals the whole-grid one within 1e-6.
"""
_BAND_PAD = 0.5 + 0.5  # delta's bound, plus slack for the float32 pixel distances

DEFAULT_TOL = 1e-6
"""Default ``tol`` of the soft masks: the band of :data:`BAND_Z` sigma, today's accuracy against the whole grid."""
# Of tol, this much is kept for the arithmetic (the float32 CDF and its
# kernel twin, ~3e-7 together) and the rest bounds the band's truncation:
# 1e-6 - Phi(-BAND_Z), so that the default tol gives BAND_Z exactly.
_ARITHMETIC_SHARE = DEFAULT_TOL - 0.5 * math.erfc(BAND_Z / math.sqrt(2.0))

SOFT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8))
"""Output types of the soft masks: float32 (default), float16, or uint8 = ``rint(p * 255)``."""
SOFT_METHODS = ("auto", "kernel", "numpy")
_FOURIER_TERMS = 24
_CORNER_TURN = np.radians(20.0)  # vertices turning more than this get the two-edge model


def as_std(std: object, n: int) -> np.ndarray:
    """Per-axis std (N, 2) float64 from (N, 2) or (N,) input."""
    try:
        arr = np.asarray(std, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("std must be numeric") from None
    if arr.shape == (n,):
        arr = np.repeat(arr[:, None], 2, axis=1)
    elif arr.shape != (n, 2):
        raise InputError(f"std must have shape ({n}, 2) or ({n},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("std contains NaN or infinite values")
    if (arr < 0).any():
        raise InputError("std must be non-negative")
    if (arr > MAX_COORDINATE).any():
        raise InputError(f"std has a value beyond {MAX_COORDINATE} pixels")
    return arr


def _polygon(points: object) -> np.ndarray:
    arr = as_points(points).astype(np.float64)
    if arr.ndim != 2:
        raise InputError(f"points must have shape (N, 2) for one contour, got {arr.shape}")
    return arr


def _truncation_moments(x: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``trunc(x + e) - (x + e)``, ``e ~ N(0, sigma^2)``.

    For ``x >= 0`` this is ``-frac(x + e)``; the moments of ``frac`` come from
    the sawtooth's Fourier series with each harmonic damped by the Gaussian's
    characteristic function ``exp(-2 pi^2 k^2 sigma^2)`` (sigma = 0 gives the
    exact fractional part).  Negative ``x`` mirrors (truncation goes up).
    """
    sign = np.where(x < 0, -1.0, 1.0)
    u = np.abs(x)
    exact = sigma == 0
    # harmonics damped below 1e-18 by the smallest non-zero sigma change nothing: 2 pi^2 k^2 sigma^2 > 41.5
    smallest = sigma[~exact].min() if not exact.all() else 1.0
    # (compared as floats: a subnormal sigma makes the bound infinite, which int() refuses)
    with np.errstate(over="ignore"):
        terms = int(min(_FOURIER_TERMS, np.ceil(np.sqrt(41.5 / (2 * np.pi**2)) / smallest)))
    k = np.arange(1, terms + 1)
    damp = np.exp(-2 * np.pi**2 * k**2 * sigma[..., None] ** 2)
    phase = 2 * np.pi * k * u[..., None]
    mean = 0.5 - np.sum(damp * np.sin(phase) / (np.pi * k), axis=-1)
    second = 1 / 3 + np.sum(damp * (np.cos(phase) / (np.pi * k) ** 2 - np.sin(phase) / (np.pi * k)), axis=-1)
    frac = u - np.floor(u)
    mean = np.where(exact, frac, mean)
    var = np.where(exact, 0.0, np.clip(second - mean**2, 0.0, 1 / 12 + 1e-3))
    return -sign * mean, var


def norm_cdf(z: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, |error| < 1.5e-7), computed in ``dtype``.

    float32 (for the float32 masks) is several times faster than float64 and
    differs from it by a few float32 roundings (~1e-7).
    """
    z = np.asarray(z)
    if z.ndim == 0:  # in-place steps below need arrays, not scalars
        return norm_cdf(z.reshape(1), dtype).reshape(())
    x = np.abs(z, dtype=dtype)
    x /= np.sqrt(2.0)
    t = x * 0.3275911
    t += 1.0
    np.divide(1.0, t, out=t)
    poly = t * 1.061405429
    for coef in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += coef
        poly *= t
    np.multiply(x, x, out=x)
    np.negative(x, out=x)
    poly *= np.exp(x, out=x)  # erfc(|z| / sqrt 2)
    poly *= 0.5
    # 1 - poly where z >= 0, without a data-dependent branch per element
    upper = np.greater_equal(z, 0).astype(poly.dtype)
    x = np.multiply(upper, -2.0, out=x)
    x += 1.0
    poly *= x
    poly += upper
    return poly


def inside_centres(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (H, W): pixel centres inside the float polygon (even-odd, half-open rows)."""
    out = np.zeros((height, width), dtype=bool)
    a = poly
    b = np.roll(poly, -1, axis=0)
    ylo = np.minimum(a[:, 1], b[:, 1])
    yhi = np.maximum(a[:, 1], b[:, 1])
    r0 = np.clip(np.ceil(ylo), 0, height).astype(np.int64)
    r1 = np.clip(np.ceil(yhi), 0, height).astype(np.int64)
    counts = np.maximum(r1 - r0, 0)
    total = int(counts.sum())
    if total == 0:
        return out
    seg = np.repeat(np.arange(len(a)), counts)
    rows = r0[seg] + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    ay, by = a[seg, 1], b[seg, 1]
    x = a[seg, 0] + (rows - ay) * (b[seg, 0] - a[seg, 0]) / (by - ay)
    np.clip(x, -1.0, width + 1.0, out=x)
    order = np.lexsort((x, rows))
    rows, x = rows[order], x[order]
    left = np.ceil(x[0::2]).astype(np.int64)
    right = np.ceil(x[1::2]).astype(np.int64) - 1
    rows = rows[0::2]
    np.maximum(left, 0, out=left)
    np.minimum(right, width - 1, out=right)
    keep = left <= right
    if keep.any():
        fill_runs(out, rows[keep], left[keep], right[keep], height)
    return out


SEARCH_BLOCK = 8  # pixel block edge for the nearest-segment candidate search
_CHUNK = 1024  # candidate rows per pass: keeps each pass's per-pixel arrays in the CPU cache


def nearest_segments(a, v, length2, reach, height: int, width: int, half_reach=None):
    """Nearest segment of every pixel within reach of the contour.

    ``reach``: (N,) how far from each segment pixels count; ``half_reach``:
    optionally (N, 2) the reach of each segment's start half (``t < 0.5``)
    and end half, each at most ``reach`` (the band of a segment is then
    narrower where the corner model does not apply).

    Pixels are grouped in blocks of ``SEARCH_BLOCK`` x ``SEARCH_BLOCK``.  With ``d_j`` the
    distance from a block centre to segment ``j`` and ``h`` the half-diagonal
    from the centre to the block's pixel centres, a pixel's nearest segment is
    within ``min_j d_j + 2 h`` of the centre (distance is 1-Lipschitz), so only
    those candidate segments are measured for the block's pixels; blocks
    farther than every segment's reach are skipped (their pixels are certain).
    The block-level distances are float32 with a small slack, which can only
    add candidates.  Candidate (block, segment) rows come out grouped by block,
    so each block's per-pixel minimum is taken layer by layer.

    Yields, for successive groups of whole blocks (about ``_CHUNK`` candidate
    rows each), ``(segment, t, offset_x, offset_y, distance^2, flat pixel
    index)`` per pixel whose nearest segment is within that segment's reach (a
    pixel equidistant from several segments is listed once per segment).
    """
    f32 = np.float32
    ends = a + v
    lo = np.floor(np.minimum(a, ends).min(axis=0) - reach.max())
    hi = np.ceil(np.maximum(a, ends).max(axis=0) + reach.max())
    bx = np.arange(max(int(lo[0]), 0) // SEARCH_BLOCK, min(int(hi[0]) + 1, width) // SEARCH_BLOCK + 1)
    by = np.arange(max(int(lo[1]), 0) // SEARCH_BLOCK, min(int(hi[1]) + 1, height) // SEARCH_BLOCK + 1)
    bx = bx[bx * SEARCH_BLOCK < width] * SEARCH_BLOCK
    by = by[by * SEARCH_BLOCK < height] * SEARCH_BLOCK
    if not len(bx) or not len(by):
        return
    centre = (SEARCH_BLOCK - 1) / 2.0
    half = centre * np.sqrt(2.0)
    inv_len2 = 1.0 / np.where(length2 > 0, length2, 1.0)
    # Arrays are laid out (segments or block pixels, blocks or candidates) so
    # that numpy's inner loops run along the long axis.
    gx = np.tile(bx, len(by))
    gy = np.repeat(by, len(bx))
    rx = (gx + centre).astype(f32) - a[:, :1].astype(f32)
    ry = (gy + centre).astype(f32) - a[:, 1:].astype(f32)
    vx, vy = v[:, :1].astype(f32), v[:, 1:].astype(f32)
    t = rx * (vx * inv_len2[:, None]).astype(f32)
    t += ry * (vy * inv_len2[:, None]).astype(f32)
    np.clip(t, 0.0, 1.0, out=t)
    rx -= t * vx
    rx *= rx
    t *= vy
    ry -= t
    ry *= ry
    rx += ry
    dist = np.sqrt(rx, out=rx)  # (segments, blocks)
    slack = 1e-2 + 1e-5 * float(np.abs(hi).max())  # float32 rounding of the block-level distances
    useful = np.flatnonzero((dist - reach.astype(f32)[:, None]).min(axis=0) <= half + slack)
    if not len(useful):
        return
    dist = dist[:, useful]
    cand = dist <= dist.min(axis=0) + f32(2 * half + slack)
    block, seg = np.nonzero(cand.T)  # grouped by block, segments ascending
    per_block = np.count_nonzero(cand, axis=0)
    gx = gx[useful][block]
    gy = gy[useful][block]
    row_end = np.cumsum(per_block)
    closing = np.searchsorted(row_end, np.arange(_CHUNK, row_end[-1], _CHUNK))  # last block of each pass
    bounds = np.unique(np.r_[0, closing + 1, len(per_block)])
    for b0, b1 in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        rows = slice(int(row_end[b0] - per_block[b0]), int(row_end[b1 - 1]))
        yield _nearest_in_blocks(a, v, inv_len2, reach if half_reach is None else half_reach, seg[rows], gx[rows],
                                 gy[rows], per_block[b0:b1], height, width)


def _nearest_in_blocks(a, v, inv_len2, reach, seg, gx, gy, per_block, height: int, width: int):
    """Pixel-level step of :func:`nearest_segments` for candidate rows of whole blocks.

    ``seg``, ``gx``, ``gy``: (K,) candidate segment and block origin;
    ``per_block``: candidates per block, in order; ``reach``: (N,), or (N, 2)
    per half of each segment.
    """
    f32 = np.float32
    cells = np.arange(SEARCH_BLOCK * SEARCH_BLOCK)
    col = (cells % SEARCH_BLOCK)[:, None]
    row = (cells // SEARCH_BLOCK)[:, None]
    vx = v[seg, 0].astype(f32)
    vy = v[seg, 1].astype(f32)
    rx = (gx - a[seg, 0]).astype(f32) + col.astype(f32)  # (block pixels, candidates)
    ry = (gy - a[seg, 1]).astype(f32) + row.astype(f32)
    t = rx * vx
    t += ry * vy
    t *= inv_len2[seg].astype(f32)
    np.clip(t, 0.0, 1.0, out=t)
    rx -= t * vx
    ry -= t * vy
    d2 = rx * rx
    d2 += ry * ry
    if gx.max() + SEARCH_BLOCK > width or gy.max() + SEARCH_BLOCK > height:
        d2[(gx + col >= width) | (gy + row >= height)] = np.inf

    # per-block minimum, one candidate layer at a time (ufunc.reduceat is slow here)
    starts = np.cumsum(per_block) - per_block
    best = d2[:, starts]
    for layer in range(1, int(per_block.max())):
        more = np.flatnonzero(per_block > layer)
        best[:, more] = np.minimum(best[:, more], d2[:, starts[more] + layer])
    win = d2 == np.repeat(best, per_block, axis=1)
    own_reach = reach[seg] if reach.ndim == 1 else np.where(t < 0.5, reach[seg, 0], reach[seg, 1])
    win &= d2 <= (own_reach**2).astype(f32)
    # flat order keeps (block pixel, candidate) order: a pixel equidistant from
    # several segments is listed in segment order
    hit = np.flatnonzero(win)
    c, r = np.divmod(hit, len(seg))
    flat = np.take(gy * width + gx, r)
    flat += np.take((row * width + col).ravel(), c)
    out = [np.take(seg, r)] + [np.take(arr, hit) for arr in (t, rx, ry, d2)]
    return (*out, flat)


class ContourModel(NamedTuple):
    """Per-node and per-segment constants of the closed form for one contour (all (N, ...) numpy).

    Segment ``j`` runs from node ``j`` to node ``nxt[j]``: start ``a``,
    direction ``v``, squared length ``length2``, outward unit normal ``seg_n``;
    ``var`` is each node's per-axis variance (released std plus truncation),
    ``convex`` marks the sharp convex vertices (corner model), ``reach`` is how
    far from a segment pixels are evaluated (``half_reach``: (N, 2), for the
    pixels nearer its start and its end; ``reach`` is the larger) and
    ``corner_reach`` how far the corner model applies.  ``line`` holds
    :func:`_line_constants`.
    """

    a: np.ndarray
    v: np.ndarray
    length2: np.ndarray
    seg_n: np.ndarray
    var: np.ndarray
    convex: np.ndarray
    nxt: np.ndarray
    reach: np.ndarray
    corner_reach: np.ndarray
    line: tuple
    half_reach: np.ndarray


def contour_model(points: np.ndarray, std: np.ndarray, height: int, width: int, z_cut: float | None) -> ContourModel:
    """The closed form's constants for float64 (N, 2) ``points`` and per-axis (N, 2) ``std``.

    ``z_cut``: evaluate pixels up to ``z_cut * sigma_max + _BAND_PAD`` from
    their nearest segment (see :data:`BAND_Z`), and up to ``max(z_cut, BAND_Z)
    * sigma_max + _BAND_PAD`` on the half of a segment next to a sharp convex
    vertex (the corner model reaches ``BAND_Z`` sigma, and only there);
    ``None``: every pixel of the grid.  Shared by the numpy, kernel and torch
    soft masks.
    """
    shift, trunc_var = _truncation_moments(points, std)  # per axis, elementwise
    poly = points + shift
    var = std**2 + trunc_var  # (N, 2) per-axis variance
    n = len(poly)
    nxt = np.roll(np.arange(n), -1)
    a, b = poly, poly[nxt]
    v = b - a
    length2 = np.einsum("ij,ij->i", v, v)
    sigma_max = np.sqrt(np.maximum(var.max(axis=1), var[nxt].max(axis=1)))
    # The two-edge corner model extends each edge to its whole line, which far
    # from the vertex says nothing about the pixel: it applies only within
    # BAND_Z sigma of the nearest segment (strictly inside the band's reach).
    corner_reach = BAND_Z * sigma_max + 0.5
    # Outward normal: away from the contour on the outside, toward it inside;
    # on the contour itself, the segment's outward normal.
    area2 = np.sum(poly[:, 0] * poly[nxt, 1] - poly[nxt, 0] * poly[:, 1])
    seg_n = np.stack([v[:, 1], -v[:, 0]], axis=1) * (1.0 if area2 >= 0 else -1.0)
    seg_n /= np.maximum(np.linalg.norm(seg_n, axis=1, keepdims=True), 1e-12)
    # Near a sharp convex vertex a pixel is inside only if it is inside BOTH
    # edges' half-planes: P = Phi2(z_j, z_k; rho), the two edge displacements
    # being correlated through the shared node (used only where it lowers P).
    # "Sharp convex": the outgoing edge heads against the incoming edge's
    # outward normal by more than _CORNER_TURN; at flatter vertices the
    # perturbed vertex is often reflex and the nearest edge alone is better.
    unit_v = v / np.maximum(np.sqrt(length2), 1e-12)[:, None]
    convex = np.einsum("ij,ij->i", np.roll(seg_n, 1, axis=0), unit_v) < -np.sin(_CORNER_TURN)
    if z_cut is None:
        # farther than any pixel can be from any segment: the whole grid
        span = np.maximum(np.abs(poly).max(axis=0), [width, height])
        half_reach = np.full((n, 2), 2.0 * float(np.hypot(*span)) + 1.0)
    else:
        # the corner model applies on the half of a segment next to a sharp convex vertex
        wide = np.stack([convex, convex[nxt]], axis=1)
        half_reach = np.where(wide, max(z_cut, BAND_Z), z_cut) * sigma_max[:, None] + _BAND_PAD
    reach = half_reach.max(axis=1)
    line = _line_constants(a, v, seg_n, var, nxt)
    return ContourModel(a, v, length2, seg_n, var, convex, nxt, reach, corner_reach, line, half_reach)


def _closed_form(model: ContourModel, height: int, width: int):
    """Band pixels and their standardized margins (numpy).

    ``model``: :func:`contour_model` (its reach sets the band).  Returns
    ``(inside, passes)``: the bool (H, W) far-field inside mask and an iterator
    over groups of band pixels, each ``(flat, z, corner, both)``: flat pixel ids
    (int64; a pixel equidistant from several segments repeats within its group,
    the last one counts), float32 ``z`` of the nearest edge, and for the pixels
    ``flat[corner]`` near a sharp convex vertex the float64 two-edge
    probability ``both``; ``P = min(Phi(z), both)`` there.
    """
    inside = inside_centres(model.a, height, width)
    nearest = nearest_segments(model.a, model.v, model.length2, model.reach, height, width, model.half_reach)
    return inside, _band_passes(nearest, inside, model)


def _band_passes(nearest, inside, model: ContourModel):
    """Per pass of :func:`nearest_segments`: ``(flat, z, corner, both)`` (see :func:`_closed_form`)."""
    a, seg_n, var, convex, nxt, corner_reach, line = (
        model.a, model.seg_n, model.var, model.convex, model.nxt, model.corner_reach, model.line
    )
    f32 = np.float32
    n = len(a)
    width = inside.shape[1]
    inside = inside.reshape(-1)
    var32 = var.astype(f32).T.copy()
    for seg, t, ox, oy, d2, flat in nearest:
        ins = inside[flat]
        dist = np.sqrt(d2, out=d2)
        local = dist <= corner_reach[seg].astype(f32)
        on = np.flatnonzero(dist < 1e-6)
        safe = dist
        if len(on):
            safe = dist.copy()
            safe[on] = 1
        nx = np.divide(ox, safe, out=ox)
        ny = np.divide(oy, safe, out=oy)
        np.negative(nx, out=nx, where=ins)
        np.negative(ny, out=ny, where=ins)
        if len(on):
            nx[on] = seg_n[seg[on], 0]
            ny[on] = seg_n[seg[on], 1]
        after = nxt[seg]
        # normal variance: (1 - t)^2 n'S_a n + t^2 n'S_b n, per-axis S
        nx2, ny2 = nx * nx, ny * ny
        sigma2 = nx2 * var32[0][seg]
        sigma2 += ny2 * var32[1][seg]
        tail = 1 - t
        tail *= tail
        sigma2 *= tail
        nx2 *= var32[0][after]
        ny2 *= var32[1][after]
        nx2 += ny2
        tail = np.square(t, out=tail)
        tail *= nx2
        sigma2 += tail
        np.abs(nx, out=nx2)
        np.abs(ny, out=ny2)
        delta = np.maximum(nx2, ny2, out=nx2)
        delta *= 0.5
        margin = np.copysign(dist, np.where(ins, f32(1), f32(-1)), out=dist)
        margin += delta
        certain = sigma2 <= 0
        # certain pixels: inside when the margin is >= 0 (decided before the division overwrites it)
        certain_z = np.where(margin[certain] >= 0, np.inf, -np.inf) if certain.any() else None
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.divide(margin, np.sqrt(sigma2, out=ny2), out=margin)
        if certain_z is not None:
            z[certain] = certain_z

        nearer_start = t < 0.5
        corner = np.where(nearer_start, convex[seg], convex[after])
        corner &= ~certain
        corner &= local
        idx = np.flatnonzero(corner)
        j = seg[idx]
        start = nearer_start[idx]
        vertex = np.where(start, j, after[idx])
        other = np.where(start, (j - 1) % n, after[idx])
        cell = flat[idx]
        both = _corner_probability(cell % width, cell // width, j, other, vertex, line)
        yield flat, z, idx, both


def _line_constants(a, v, seg_n, var, nxt) -> tuple:
    """Per-segment (N,) float64 arrays for :func:`_line_z` and the shared-node covariance."""
    length2 = np.maximum(v[:, 0] ** 2 + v[:, 1] ** 2, 1e-12)
    half = 0.5 * np.maximum(np.abs(seg_n[:, 0]), np.abs(seg_n[:, 1]))
    n2 = seg_n * seg_n
    var_start = n2[:, 0] * var[:, 0] + n2[:, 1] * var[:, 1]
    var_end = n2[:, 0] * var[nxt, 0] + n2[:, 1] * var[nxt, 1]
    # the shared node's covariance along both adjacent normals, per vertex (symmetric in j, k)
    prev = np.roll(np.arange(len(a)), 1)
    shared = seg_n[prev, 0] * seg_n[:, 0] * var[:, 0] + seg_n[prev, 1] * seg_n[:, 1] * var[:, 1]
    return (a[:, 0], a[:, 1], v[:, 0], v[:, 1], length2, seg_n[:, 0], seg_n[:, 1], half, var_start, var_end), shared


def _corner_probability(qx, qy, j, k, vertex, line) -> np.ndarray:
    """``P(inside the LINES of segments j and k)`` per pixel, float64.

    ``qx``, ``qy``: pixel centres; ``j``, ``k``: the two segments meeting at
    ``vertex``; ``line``: :func:`_line_constants`.  Each line's standardized
    margin ``z``, std and the weight of the shared node come from
    :func:`_line_z`; their correlation is that of the shared node's
    displacement along both normals.
    """
    cols, shared = line
    zj, sj, wj = _line_z(qx, qy, j, vertex, *cols)
    zk, sk, wk = _line_z(qx, qy, k, vertex, *cols)
    cov = wj * wk * shared[vertex]
    rho = np.clip(cov / np.maximum(sj * sk, 1e-12), -0.999, 0.999)
    return _bivariate_cdf(zj, zk, rho)


def _line_z(qx, qy, s, vertex, ax, ay, vx, vy, length2, nx, ny, half, var_start, var_end):
    """Standardized margin of pixels to the LINE of segments ``s``; its std; weight of ``vertex``.

    The per-segment arrays are (N,) float64: start point, direction, squared
    length, outward unit normal, boundary half-width and the normal variances
    of the segment's two nodes.
    """
    rx = qx - ax[s]
    ry = qy - ay[s]
    nxs, nys = nx[s], ny[s]
    t = rx * vx[s]
    t += ry * vy[s]
    t /= length2[s]
    np.clip(t, 0.0, 1.0, out=t)
    rx *= nxs
    ry *= nys
    rx += ry
    margin = half[s] - rx
    u = 1 - t
    u *= u
    u *= var_start[s]
    weight = np.where(vertex == s, 1 - t, t)
    t *= t
    t *= var_end[s]
    u += t
    np.maximum(u, 1e-12, out=u)
    sigma = np.sqrt(u, out=u)
    margin /= sigma
    return margin, sigma, weight


def _bivariate_cdf(h: np.ndarray, k: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(X <= h, Y <= k) for standard normals with correlation rho (Mendell-Elston).

    Conditions on the more binding threshold: ``Phi(h) * Phi((k + rho L) /
    sqrt(1 - rho^2 L (L + h)))`` with ``L = phi(h) / Phi(h)``.
    """
    lo = np.clip(np.minimum(h, k), -8.0, 8.0)
    hi = np.clip(np.maximum(h, k), -8.0, 8.0)
    cdf = np.maximum(norm_cdf(lo), 1e-300)
    lam = np.exp(-0.5 * lo * lo) / np.sqrt(2 * np.pi) / cdf
    var = np.maximum(1.0 - rho * rho * lam * (lam + lo), 1e-9)
    return cdf * norm_cdf((hi + rho * lam) / np.sqrt(var))


def norm_ppf_clip(p: np.ndarray) -> np.ndarray:
    """Inverse normal CDF (Acklam's rational approximation, refined once), clipped to +-8."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    q = np.minimum(p, 1 - p)
    r = np.sqrt(-2 * np.log(q))
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    tail = (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / (
        (((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1
    )
    aa = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
          -3.066479806614716e01, 2.506628277459239e00)
    bb = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
          -1.328068155288572e01)
    u = q - 0.5
    w = u * u
    central = (((((aa[0] * w + aa[1]) * w + aa[2]) * w + aa[3]) * w + aa[4]) * w + aa[5]) * u / (
        ((((bb[0] * w + bb[1]) * w + bb[2]) * w + bb[3]) * w + bb[4]) * w + 1
    )
    x = np.where(q < 0.02425, tail, central)
    # one Newton step on Phi(x) = q for full precision
    x = x - (norm_cdf(x) - q) * np.sqrt(2 * np.pi) * np.exp(0.5 * x * x)
    x = np.where(p > 0.5, -x, x)
    return np.clip(x, -8.0, 8.0)


MIN_STD = 1e-12
"""Smallest non-zero std (pixels of the drawn grid) the closed form evaluates; a smaller one is drawn as this.

The closed form divides margins by the std in float32, which overflows below
about 1e-20 px (the numpy, kernel and torch paths then disagree); at 1e-12 px
they agree to float32 rounding, and the mask has long reached its small-std
limit.  A std of exactly 0 stays 0 (the hard mask).  Applied alike on every path."""


def points_in_frame(points, std, height: int, width: int, from_size) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 (N, 2) points and (N, 2) std, scaled from ``from_size`` to ``(height, width)``.

    Points scale like :func:`chexmask_u_tools.masks.raster.scale_points`; each
    axis's std scales with its coordinate (``std_x * W' / W``, ``std_y * H' / H``).
    A non-zero std below :data:`MIN_STD` once scaled is raised to it.
    """
    pts = _polygon(points)
    sd = as_std(std, len(pts))
    if from_size is not None:
        pts = scale_points(pts, from_size, (height, width))
        sd = sd * scale_points(np.ones((1, 2)), from_size, (height, width))
        if not (sd <= MAX_COORDINATE).all():
            raise InputError(f"std is beyond {MAX_COORDINATE} pixels once scaled from from_size={tuple(from_size)}")
    return pts, np.where((sd > 0) & (sd < MIN_STD), MIN_STD, sd)


def band_z(tol: float) -> float:
    """Half-width of the soft-mask band, in standard deviations, for accuracy ``tol``.

    Pixels farther than ``band_z(tol)`` sigma (plus a pixel) from their nearest
    segment are filled from the inside test; what that neglects is at most
    ``Phi(-band_z(tol))``, which leaves ``1e-6 - Phi(-BAND_Z)`` (7.1e-7) of
    ``tol`` to the float32 arithmetic, so the result stays within ``tol`` of the
    whole-grid evaluation.  ``tol`` is in ``[1e-6, 0.5)``; the default 1e-6
    gives :data:`BAND_Z`.  The half of a segment next to a sharp convex
    vertex keeps at least ``BAND_Z`` (:func:`contour_model`).

    Examples
    --------
    >>> band_z(1e-6), round(band_z(1e-3), 3), round(band_z(1e-2), 3)
    (5.0, 3.09, 2.326)
    """
    try:
        value = float(tol)
    except (TypeError, ValueError):
        raise InputError(f"tol must be a number, got {tol!r}") from None
    if not DEFAULT_TOL <= value < 0.5:
        raise InputError(
            f"tol must lie in [{DEFAULT_TOL:g}, 0.5), got {tol!r} (1e-6 is the float32 closed form's accuracy; "
            "band=False evaluates every pixel)"
        )
    if value == DEFAULT_TOL:
        return BAND_Z
    return float(-norm_ppf_clip(np.array(value - _ARITHMETIC_SHARE)))


def soft_method(height: int, width: int, band: bool = True) -> str:
    """The implementation ``method="auto"`` uses for a soft mask of this size: ``"kernel"`` or ``"numpy"``.

    The compiled band kernel, except for ``band=False`` (the whole-grid
    evaluation exists in numpy only: it is the reference) and where numba's
    JIT is disabled (``NUMBA_DISABLE_JIT=1``: the kernel would run as plain
    Python).  ``scripts/bench_soft.py`` prints both at every size; the kernel
    was faster at every size measured (16 to 2048 px).

    Examples
    --------
    >>> soft_method(512, 512), soft_method(512, 512, band=False)
    ('kernel', 'numpy')
    """
    check_size(height, width)
    if not band:
        return "numpy"
    return resolve_method("auto")  # numba loads here, at the first soft mask (not at import)


def _soft_options(tol, dtype, method: str, band: bool, height: int, width: int) -> tuple[float | None, np.dtype, str]:
    """Validated ``(z_cut, dtype, method)`` of a soft-mask call (``z_cut`` None: whole grid)."""
    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        out_dtype = None
    if out_dtype not in SOFT_DTYPES:
        raise InputError(f"dtype must be one of float32, float16, uint8 (probability x 255), got {dtype!r}")
    if method not in SOFT_METHODS:
        raise InputError(f"method must be one of {SOFT_METHODS}, got {method!r}")
    z_cut = band_z(tol)
    if not band:
        if method == "kernel":
            raise InputError("band=False evaluates the whole grid with numpy (the reference): pass method='auto' or 'numpy'")
        return None, out_dtype, "numpy"
    return z_cut, out_dtype, soft_method(height, width) if method == "auto" else method


def _framed_sets(points, std, height: int, width: int, from_size, nodes: int | None, name: str):
    """``(single, [(points, std), ...])``: validated, framed contours of one set (N, 2) or a batch (B, N, 2)."""
    pts = as_points(points, name)
    if pts.ndim not in (2, 3) or (nodes is not None and pts.shape[-2] != nodes):
        want = f"({nodes}, 2) or (B, {nodes}, 2)" if nodes else "(N, 2) or (B, N, 2)"
        raise InputError(f"{name} must have shape {want}, got {pts.shape}")
    if pts.ndim == 2:
        return True, [points_in_frame(pts, std, height, width, from_size)]
    try:
        sd = np.asarray(std, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("std must be numeric") from None
    if sd.ndim not in (2, 3) or len(sd) != len(pts):
        raise InputError(f"std must have shape (B, N) or (B, N, 2) for {name} of shape {pts.shape}, got {sd.shape}")
    return False, [points_in_frame(p, s, height, width, from_size) for p, s in zip(pts, sd)]


def _weights(p: np.ndarray, floor: float, power: float) -> np.ndarray:
    """``floor + (1 - floor) |2 p - 1| ** power`` of float32 ``p``, float32 (the formula of :func:`pixel_weight_map`)."""
    return (floor + (1.0 - floor) * np.abs(2.0 * p - 1.0) ** power).astype(np.float32)


def _to_dtype(p: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 probabilities in an output type of :data:`SOFT_DTYPES` (uint8: ``rint(p * 255)``)."""
    if dtype == np.uint8:
        return np.rint(p * np.float32(255.0)).astype(np.uint8)
    return p.astype(dtype, copy=False)


def kernel_tables(model: ContourModel, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The float64 and float32 per-segment tables of :func:`chexmask_u_tools.kernels.soft.soft_band`, from numpy.

    The reference of the kernel's own ``contour_tables`` (which the soft masks
    use: it builds them in a few microseconds); the rows are named in
    :mod:`chexmask_u_tools.kernels.soft`.
    """
    from chexmask_u_tools.kernels import soft as kernels

    n = len(model.a)
    cols, shared = model.line
    reach = np.minimum(model.reach, 2.0**22)  # beyond any grid: keeps reach^2 finite in float32
    seg = np.empty((kernels.SEG_ROWS, n))
    seg[kernels.AX], seg[kernels.AY] = model.a[:, 0], model.a[:, 1]
    seg[kernels.NX], seg[kernels.NY] = model.seg_n[:, 0], model.seg_n[:, 1]
    seg[kernels.REACH] = reach
    seg[kernels.LVX], seg[kernels.LVY], seg[kernels.LEN2] = cols[2], cols[3], cols[4]
    seg[kernels.HALF], seg[kernels.VSTART], seg[kernels.VEND] = cols[7], cols[8], cols[9]
    seg[kernels.SHARED] = shared
    # float32 distances of pixels up to 2**16 + 2**20 px from a vertex: 1e-6 relative covers their rounding
    slack = 0.5 + 1e-6 * max(float(np.abs(model.a).max()), height, width)
    kernels.visit_radii(model.a, model.nxt, reach, slack, seg[kernels.VISIT])
    seg32 = np.empty((kernels.SEG32_ROWS, n), dtype=np.float32)
    seg32[kernels.VX32], seg32[kernels.VY32] = model.v[:, 0], model.v[:, 1]
    seg32[kernels.INV32] = 1.0 / np.where(model.length2 > 0, model.length2, 1.0)
    half_reach = np.minimum(model.half_reach, 2.0**22)
    seg32[kernels.REACH2], seg32[kernels.REACH2_END] = half_reach[:, 0] ** 2, half_reach[:, 1] ** 2
    seg32[kernels.VARX], seg32[kernels.VARY] = model.var[:, 0], model.var[:, 1]
    seg32[kernels.CREACH] = model.corner_reach
    return seg, seg32


def _draw_kernel(out: np.ndarray, points: np.ndarray, std: np.ndarray, z_cut: float, mode: str,
                 param0: float = 0.0, param1: float = 0.0) -> None:
    """Draw the band of validated ``points`` / (N, 2) ``std`` into the C-contiguous (H, W) ``out`` with the
    compiled kernels (``mode``: a ``kernels.soft`` output mode name)."""
    from chexmask_u_tools.kernels import soft as kernels  # numba loads at the first soft mask, not at import

    height, width = out.shape
    n = len(points)
    a = np.empty((n, 2))
    convex = np.empty(n, dtype=bool)
    nxt = np.empty(n, dtype=np.int64)
    seg = np.empty((kernels.SEG_ROWS, n))
    seg32 = np.empty((kernels.SEG32_ROWS, n), dtype=np.float32)
    kernels.contour_tables(points, std, float(z_cut), height, width, a, convex, nxt, seg, seg32)
    kernels.soft_band(out.view(np.uint8), getattr(kernels, mode), float(param0), float(param1), a, nxt, convex,
                      seg, seg32)


_KERNEL_MODE = {np.dtype(np.float32): "PROB32", np.dtype(np.float16): "PROB16", np.dtype(np.uint8): "PROB8"}


def _draw_soft(out: np.ndarray, points: np.ndarray, std: np.ndarray, z_cut: float | None, method: str) -> None:
    """Draw :func:`soft_mask` of validated ``points`` / (N, 2) ``std`` into ``out``, a zeroed (H, W) view."""
    height, width = out.shape
    if not std.any():
        out[rasterize(points, height, width)] = 255 if out.dtype == np.uint8 else 1
        return
    if method == "kernel":
        _draw_kernel(out, points, std, z_cut, _KERNEL_MODE[out.dtype])
        return
    inside, passes = _closed_form(contour_model(points, std, height, width, z_cut), height, width)
    p = inside.astype(np.float32)
    for flat, z, corner, both in passes:
        band = norm_cdf(z, np.float32)
        band[corner] = np.minimum(band[corner], both)
        p.reshape(-1)[flat] = band
    out[...] = _to_dtype(p, out.dtype)


def soft_mask(
    points,
    std,
    height: int,
    width: int,
    *,
    from_size: tuple[int, int] | None = None,
    band: bool = True,
    tol: float = DEFAULT_TOL,
    dtype=np.float32,
    method: str = "auto",
) -> np.ndarray:
    """Probability that each pixel is in the organ's released-style mask.

    Parameters
    ----------
    points:
        (N, 2) mean contour (landmarks of one organ), pixels, x = column, y = row;
        or (B, N, 2) for B contours.
    std:
        (N, 2) per-axis std or (N,) per-node sigma, pixels, same frame ((B, N, 2)
        or (B, N) for B contours).
    height, width:
        Mask size.
    from_size:
        If given, ``(H0, W0)`` of the frame ``points`` and ``std`` are in; both
        are scaled to ``(height, width)`` first (std per axis, like its coordinate).
    band:
        True (default): evaluate the closed form only within a band around the
        contour (:func:`band_z`) and fill the rest from the inside test; False:
        evaluate it on every pixel (the numpy reference; ``tol`` does not apply).
    tol:
        Accuracy against the whole-grid evaluation, in ``[1e-6, 0.5)``: sets the
        band's width (default 1e-6, a band of 5 sigma; 1e-3 makes it about a
        third narrower and the mask faster, for training).
    dtype:
        Output type: ``float32`` (default), ``float16``, or ``uint8`` holding
        ``rint(p * 255)`` (a quarter of float32's bytes, for training inputs).
    method:
        ``"auto"`` (default: :func:`soft_method`), ``"kernel"`` (compiled band
        kernel) or ``"numpy"`` (the reference implementation); they agree within 2e-7.

    Returns
    -------
    (H, W) of ``dtype`` ((B, H, W) for B contours), probability in [0, 1];
    exactly the hard mask (x 255 for uint8) when every std is zero.  See the
    module docstring for the closed form.

    Raises
    ------
    InputError
        Bad shapes, NaN/inf, negative or huge std, bad size, ``tol``, ``dtype`` or ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])
    >>> p = soft_mask(square, np.full(4, 1.0), 20, 20)
    >>> p.shape, p.dtype, float(p[0, 0]), float(p[10, 10]) > 0.999, 0.1 < float(p[10, 4]) < 0.9
    ((20, 20), dtype('float32'), 0.0, True, True)
    >>> bool((soft_mask(square, np.zeros(4), 20, 20) == rasterize(square, 20, 20)).all())
    True
    >>> bool(np.abs(soft_mask(square, np.full(4, 1.0), 20, 20, method="numpy") - p).max() < 1e-6)
    True
    >>> q = soft_mask(square, np.full(4, 1.0), 20, 20, tol=1e-3, dtype=np.uint8)
    >>> q.dtype, int(q[10, 10]), bool(np.abs(q / 255.0 - p).max() <= 1e-3 + 0.5 / 255)
    (dtype('uint8'), 255, True)
    """
    height, width = check_size(height, width)
    z_cut, out_dtype, use = _soft_options(tol, dtype, method, band, height, width)
    single, contours = _framed_sets(points, std, height, width, from_size, None, "points")
    out = np.zeros((len(contours), height, width), dtype=out_dtype)
    for k, (pts, sd) in enumerate(contours):
        _draw_soft(out[k], pts, sd, z_cut, use)
    return out[0] if single else out


def soft_mask_organs(
    landmarks,
    std,
    height: int,
    width: int,
    *,
    from_size: tuple[int, int] | None = None,
    band: bool = True,
    allow_empty: bool = False,
    allow_partial: bool = False,
    tol: float = DEFAULT_TOL,
    dtype=np.float32,
    method: str = "auto",
) -> np.ndarray:
    """Soft masks of the three organs (right lung, left lung, heart): (3, H, W), or (B, 3, H, W) for a batch.

    ``landmarks`` (120, 2) or (B, 120, 2); ``std`` (120, 2) / (120,) or
    (B, 120, 2) / (B, 120).  ``from_size``, ``band``, ``tol``, ``dtype`` and
    ``method`` as in :func:`soft_mask`.  Raises :class:`InputError` for
    landmarks that do not belong to the grid (a node beyond it by more than
    :data:`~chexmask_u_tools.masks.raster.OFF_GRID_MARGIN` of its side, or none
    on it: landmarks of another frame, pass ``from_size=``); ``allow_partial``
    and ``allow_empty`` as in :func:`~chexmask_u_tools.masks.raster.rasterize_organs`.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> row = cxu.load_sample().row(0, named=True)
    >>> lm, sd = np.asarray(row["landmarks"]), np.asarray(row["landmarks_std"])
    >>> p = soft_mask_organs(lm, sd, 64, 64, from_size=(1024, 1024))
    >>> p.shape, p.dtype, float(p.min()) >= 0.0, float(p.max()) <= 1.0
    ((3, 64, 64), dtype('float32'), True, True)
    >>> soft_mask_organs(np.stack([lm, lm]), np.stack([sd, sd]), 64, 64, from_size=(1024, 1024), dtype="uint8").shape
    (2, 3, 64, 64)
    """
    height, width = check_size(height, width)
    z_cut, out_dtype, use = _soft_options(tol, dtype, method, band, height, width)
    single, sets = _framed_sets(landmarks, std, height, width, from_size, N_NODES, "landmarks")
    if not sets:  # an empty batch (B = 0)
        return np.zeros((0, len(ORGANS), height, width), dtype=out_dtype)
    lm = np.stack([pts for pts, _ in sets])
    if not allow_empty:
        require_on_grid(lm[0] if single else lm, height, width, allow_partial=allow_partial)
    out = np.zeros((len(sets), len(ORGANS), height, width), dtype=out_dtype)
    for b, (pts, sd) in enumerate(sets):
        for k, organ in enumerate(ORGANS):
            _draw_soft(out[b, k], pts[ORGAN_SLICES[organ]], sd[ORGAN_SLICES[organ]], z_cut, use)
    return out[0] if single else out


def _perturbed_contours(points, std, height, width, n, seed) -> tuple[int, int, np.ndarray]:
    """Validated size and ``n`` contours with every node moved by its Gaussian std: (n, N, 2)."""
    height, width = check_size(height, width)
    pts = _polygon(points)
    sd = as_std(std, len(pts))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    noisy = pts + rng.standard_normal((int(n),) + pts.shape) * sd
    return height, width, noisy


def sample_masks(points, std, height: int, width: int, n: int, seed=None) -> np.ndarray:
    """Monte Carlo reference: ``n`` exact masks of independently perturbed contours.

    Each node moves by an independent Gaussian with its per-axis std; each
    perturbed contour is rasterized with :func:`chexmask_u_tools.masks.raster.rasterize`
    (truncation + boundary pixels).  Returns bool (n, H, W).  ``seed``: anything
    ``numpy.random.default_rng`` accepts.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])  # x, y of 4 nodes
    >>> masks = sample_masks(square, np.full(4, 1.0), 20, 20, n=8, seed=0)  # std 1 px on x and y
    >>> masks.shape, masks.dtype, bool(masks[:, 10, 10].all()), bool(masks[:, 0, 0].any())
    ((8, 20, 20), dtype('bool'), True, False)
    """
    height, width, noisy = _perturbed_contours(points, std, height, width, n, seed)
    return rasterize(noisy, height, width)


def sample_probability(points, std, height: int, width: int, n: int, seed=None, chunk: int = 128) -> np.ndarray:
    """Monte Carlo estimate of :func:`soft_mask`: mean of ``n`` sampled masks, float32 (H, W).

    Draws the same contours as ``sample_masks(points, std, height, width, n, seed)``
    but holds only ``chunk`` masks at a time.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])  # x, y of 4 nodes
    >>> p = sample_probability(square, np.full(4, 1.0), 20, 20, n=200, seed=0)
    >>> p.shape, p.dtype, float(p[10, 10]), float(p[0, 0])
    ((20, 20), dtype('float32'), 1.0, 0.0)
    >>> bool(abs(p - soft_mask(square, np.full(4, 1.0), 20, 20)).max() < 0.1)  # the closed form agrees
    True
    """
    height, width, noisy = _perturbed_contours(points, std, height, width, n, seed)
    total = np.zeros((height, width), dtype=np.int32)
    for i in range(0, int(n), max(1, int(chunk))):
        total += rasterize(noisy[i : i + chunk], height, width).sum(axis=0, dtype=np.int32)
    return (total / n).astype(np.float32)


def _vertex_normals(poly: np.ndarray) -> np.ndarray:
    """Outward unit normals at vertices (mean of the two adjacent edge normals)."""
    nxt = np.roll(poly, -1, axis=0)
    v = nxt - poly
    area2 = np.sum(poly[:, 0] * nxt[:, 1] - nxt[:, 0] * poly[:, 1])
    edge_n = np.stack([v[:, 1], -v[:, 0]], axis=1) * (1.0 if area2 >= 0 else -1.0)
    edge_n /= np.maximum(np.linalg.norm(edge_n, axis=1, keepdims=True), 1e-12)
    vn = edge_n + np.roll(edge_n, 1, axis=0)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def uncertainty_band(points, std, k: float = 2.0):
    """Inner and outer contours at -k and +k sigma, as shapely geometries.

    Each node moves along its outward vertex normal ``n`` (mean of the adjacent
    edge normals) by ``k * sqrt(n' S n)``, ``S`` its per-axis covariance.  The
    moved rings are repaired with ``shapely.make_valid`` (an inner contour can
    fold where the organ is thinner than ``2 k sigma``; it may even vanish).

    Returns
    -------
    (inner, outer): shapely geometries (Polygon / MultiPolygon, possibly empty),
    pixels of the points' frame.  ``outer - inner`` is the band.

    Raises
    ------
    InputError
        A negative or infinite ``k``, a contour of fewer than 3 nodes, or
        ``std`` of the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])  # x, y of 4 nodes
    >>> inner, outer = uncertainty_band(square, np.full(4, 1.0), k=2.0)
    >>> inner.geom_type, [round(v, 2) for v in inner.bounds], [round(v, 2) for v in outer.bounds]
    ('Polygon', [6.41, 6.41, 12.59, 12.59], [3.59, 3.59, 15.41, 15.41])
    >>> round(outer.difference(inner).area, 1)  # the band, in px^2
    101.8
    """
    pts = _polygon(points)
    sd = as_std(std, len(pts))
    if not np.isfinite(k) or k < 0:
        raise InputError(f"k must be a non-negative number, got {k!r}")
    if len(pts) < 3:
        raise InputError("an uncertainty band needs a contour of at least 3 nodes")
    normals = _vertex_normals(pts)
    reach = k * np.sqrt(normals[:, 0] ** 2 * sd[:, 0] ** 2 + normals[:, 1] ** 2 * sd[:, 1] ** 2)
    shift = normals * reach[:, None]
    mean = shapely.make_valid(shapely.Polygon(pts))
    outer = shapely.union(shapely.make_valid(shapely.Polygon(pts + shift)), mean)
    inner = shapely.intersection(shapely.make_valid(shapely.Polygon(pts - shift)), mean)
    return inner, outer


def band_mask(
    points,
    std,
    height: int,
    width: int,
    k: float = 2.0,
    *,
    from_size: tuple[int, int] | None = None,
    band: bool = True,
    method: str = "auto",
) -> np.ndarray:
    """Bool (H, W): pixels whose mask membership is uncertain at ``k`` sigma.

    A pixel is in the band when its inside-probability (:func:`soft_mask`)
    lies strictly between ``Phi(-k)`` and ``Phi(k)``, i.e. the mean contour,
    shifted by the released-mask convention, passes within ``k`` standard
    deviations of the pixel centre.  Empty when every std is zero.
    ``from_size`` as in :func:`soft_mask`; ``band=False`` measures every pixel
    of the grid (the numpy reference) instead of those within ``k`` sigma plus a
    pixel of the contour (``BAND_Z`` near sharp convex vertices; same result);
    ``method`` as in :func:`soft_mask`.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])
    >>> b = band_mask(square, np.full(4, 1.0), 20, 20, k=2.0)
    >>> b.dtype, bool(b[10, 5]), bool(b[10, 10]), bool(b[0, 0])
    (dtype('bool'), True, False, False)
    """
    height, width = check_size(height, width)
    pts, sd = points_in_frame(points, std, height, width, from_size)
    if not np.isfinite(k) or k < 0:
        raise InputError(f"k must be a non-negative number, got {k!r}")
    _, _, use = _soft_options(DEFAULT_TOL, np.float32, method, band, height, width)
    out = np.zeros((height, width), dtype=bool)
    if not sd.any():
        return out
    # beyond k sigma (plus delta) of its nearest segment no edge gives |z| < k, and
    # the corner model, which can lower z, reaches BAND_Z sigma: the band covers both
    if use == "kernel":
        _draw_kernel(out, pts, sd, float(k), "BAND", float(k))
        return out
    for flat, z, corner, both in _closed_form(contour_model(pts, sd, height, width, float(k) if band else None),
                                              height, width)[1]:
        z = z.astype(np.float64)
        z[corner] = np.minimum(z[corner], norm_ppf_clip(both))
        out.reshape(-1)[flat] = np.abs(z) < k  # a pixel equidistant from segments: the last one counts, as in soft_mask
    return out


def pixel_weight_map(
    points,
    std,
    height: int,
    width: int,
    *,
    floor: float = 0.1,
    power: float = 1.0,
    from_size: tuple[int, int] | None = None,
    band: bool = True,
    tol: float = DEFAULT_TOL,
    method: str = "auto",
) -> np.ndarray:
    """Per-pixel loss weights that down-weight pixels of uncertain membership.

    ``w = floor + (1 - floor) * |2 p - 1| ** power`` with ``p`` the
    :func:`soft_mask` probability: 1 where the mask is certain (p = 0 or 1),
    ``floor`` on the mean contour (p = 0.5).  float32 (H, W).  With ``power``
    < 1 the weight recovers faster away from the contour.  ``from_size``,
    ``band``, ``tol`` and ``method`` as in :func:`soft_mask` (the kernel writes
    the weights of the band pixels directly).

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])
    >>> w = pixel_weight_map(square, np.full(4, 1.0), 20, 20, floor=0.2)
    >>> float(w.min()) >= 0.2, float(w[0, 0]), float(w[10, 10]) > 0.99
    (True, 1.0, True)
    """
    if not (0.0 <= floor <= 1.0):
        raise InputError(f"floor must be in [0, 1], got {floor!r}")
    if not np.isfinite(power) or power <= 0:
        raise InputError(f"power must be positive, got {power!r}")
    height, width = check_size(height, width)
    z_cut, _, use = _soft_options(tol, np.float32, method, band, height, width)
    if use == "numpy":
        return _weights(soft_mask(points, std, height, width, from_size=from_size, band=band, tol=tol, method="numpy"),
                        floor, power)
    pts, sd = points_in_frame(points, std, height, width, from_size)
    certain = _weights(np.zeros(1, dtype=np.float32), floor, power)[0]  # p = 0 and p = 1 weigh the same
    out = np.full((height, width), certain, dtype=np.float32)
    if sd.any():
        _draw_kernel(out, pts, sd, z_cut, "WEIGHT", floor, power)
    return out
