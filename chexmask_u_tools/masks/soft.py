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

It is evaluated only in a band of ``BAND_Z = 5`` sigma (plus one pixel) around
each segment; elsewhere the pixel is 0 or 1 from the shifted mean polygon (the
same inside test the closed form uses for its sign), which is within 1e-6 of
evaluating the closed form on the whole grid (``band=False``, the reference).
With all stds zero the result is exactly the hard mask.  Against the Monte Carlo reference on real contours with node
stds of 2-8 px, the mean absolute difference over the boundary band is about
0.01 and its 99th percentile about 0.05; below about 1 px of std the pixel
grid dominates and the closed form is only approximate (zero is exact).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import shapely

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.masks.raster import as_points, check_size, fill_runs, rasterize, require_on_grid, scale_points

__all__ = [
    "BAND_Z",
    "band_mask",
    "pixel_weight_map",
    "sample_masks",
    "sample_probability",
    "soft_mask",
    "soft_mask_organs",
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
    k = np.arange(1, _FOURIER_TERMS + 1)
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


def nearest_segments(a, v, length2, reach, height: int, width: int):
    """Nearest segment of every pixel within reach of the contour.

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
        yield _nearest_in_blocks(a, v, inv_len2, reach, seg[rows], gx[rows], gy[rows], per_block[b0:b1], height, width)


def _nearest_in_blocks(a, v, inv_len2, reach, seg, gx, gy, per_block, height: int, width: int):
    """Pixel-level step of :func:`nearest_segments` for candidate rows of whole blocks.

    ``seg``, ``gx``, ``gy``: (K,) candidate segment and block origin;
    ``per_block``: candidates per block, in order.
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
    win &= d2 <= (reach[seg] ** 2).astype(f32)
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
    far from a segment pixels are evaluated and ``corner_reach`` how far the
    corner model applies.  ``line`` holds :func:`_line_constants`.
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


def contour_model(points: np.ndarray, std: np.ndarray, height: int, width: int, z_cut: float | None) -> ContourModel:
    """The closed form's constants for float64 (N, 2) ``points`` and per-axis (N, 2) ``std``.

    ``z_cut``: evaluate pixels up to ``max(z_cut, BAND_Z) * sigma_max +
    _BAND_PAD`` from their nearest segment (see :data:`BAND_Z`; the corner
    model reaches ``BAND_Z`` sigma, so no band may be narrower); ``None``:
    every pixel of the grid.  Shared by the numpy and torch soft masks.
    """
    mean_x, var_x = _truncation_moments(points[:, 0], std[:, 0])
    mean_y, var_y = _truncation_moments(points[:, 1], std[:, 1])
    poly = points + np.stack([mean_x, mean_y], axis=1)
    var = std**2 + np.stack([var_x, var_y], axis=1)  # (N, 2) per-axis variance
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
    if z_cut is None:
        # farther than any pixel can be from any segment: the whole grid
        span = np.maximum(np.abs(poly).max(axis=0), [width, height])
        reach = np.full(n, 2.0 * float(np.hypot(*span)) + 1.0)
    else:
        reach = max(z_cut, BAND_Z) * sigma_max + _BAND_PAD
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
    line = _line_constants(a, v, seg_n, var, nxt)
    return ContourModel(a, v, length2, seg_n, var, convex, nxt, reach, corner_reach, line)


def _closed_form(points: np.ndarray, std: np.ndarray, height: int, width: int, z_cut: float | None):
    """Band pixels and their standardized margins.

    ``z_cut`` as in :func:`contour_model`.  Returns ``(inside, passes)``: the
    bool (H, W) far-field inside mask and an iterator over groups of band
    pixels, each ``(flat, z, corner, both)``: flat pixel ids (int64; a pixel
    equidistant from several segments repeats within its group, the last one
    counts), float32 ``z`` of the nearest edge, and for the pixels
    ``flat[corner]`` near a sharp convex vertex the float64 two-edge
    probability ``both``; ``P = min(Phi(z), both)`` there.
    """
    model = contour_model(points, std, height, width, z_cut)
    inside = inside_centres(model.a, height, width)
    nearest = nearest_segments(model.a, model.v, model.length2, model.reach, height, width)
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
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.divide(margin, np.sqrt(sigma2, out=ny2), out=margin)
        if certain.any():
            z[certain] = np.where(margin[certain] >= 0, np.inf, -np.inf)

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


def points_in_frame(points, std, height: int, width: int, from_size) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 (N, 2) points and (N, 2) std, scaled from ``from_size`` to ``(height, width)``.

    Points scale like :func:`chexmask_u_tools.masks.raster.scale_points`; each
    axis's std scales with its coordinate (``std_x * W' / W``, ``std_y * H' / H``).
    """
    pts = _polygon(points)
    sd = as_std(std, len(pts))
    if from_size is not None:
        pts = scale_points(pts, from_size, (height, width))
        sd = sd * scale_points(np.ones((1, 2)), from_size, (height, width))
    return pts, sd


def soft_mask(
    points,
    std,
    height: int,
    width: int,
    *,
    from_size: tuple[int, int] | None = None,
    band: bool = True,
) -> np.ndarray:
    """Probability that each pixel is in the organ's released-style mask.

    Parameters
    ----------
    points:
        (N, 2) mean contour (landmarks of one organ), pixels, x = column, y = row.
    std:
        (N, 2) per-axis std or (N,) per-node sigma, pixels, same frame.
    height, width:
        Mask size.
    from_size:
        If given, ``(H0, W0)`` of the frame ``points`` and ``std`` are in; both
        are scaled to ``(height, width)`` first (std per axis, like its coordinate).
    band:
        True (default): evaluate the closed form only within :data:`BAND_Z`
        standard deviations of the contour and fill the rest from the inside
        test; False: evaluate it on every pixel (the reference; same result
        within 1e-6, slower).

    Returns
    -------
    float32 (H, W) in [0, 1]; exactly the hard mask when every std is zero.
    See the module docstring for the closed form.

    Raises
    ------
    InputError
        Bad shapes, NaN/inf, negative std, bad size.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.array([[5.0, 5.0], [14.0, 5.0], [14.0, 14.0], [5.0, 14.0]])
    >>> p = soft_mask(square, np.full(4, 1.0), 20, 20)
    >>> p.shape, p.dtype, float(p[0, 0]), float(p[10, 10]) > 0.999, 0.1 < float(p[10, 4]) < 0.9
    ((20, 20), dtype('float32'), 0.0, True, True)
    >>> bool((soft_mask(square, np.zeros(4), 20, 20) == rasterize(square, 20, 20)).all())
    True
    """
    height, width = check_size(height, width)
    pts, sd = points_in_frame(points, std, height, width, from_size)
    out = np.empty((height, width), dtype=np.float32)
    _soft_into(out, pts, sd, band)
    return out


def _soft_into(out: np.ndarray, points: np.ndarray, std: np.ndarray, band: bool = True) -> None:
    """Write :func:`soft_mask` of validated float64 ``points`` / (N, 2) ``std`` into float32 (H, W) ``out``."""
    height, width = out.shape
    if not std.any():
        out[...] = rasterize(points, height, width)
        return
    inside, passes = _closed_form(points, std, height, width, BAND_Z if band else None)
    out[...] = inside
    for flat, z, corner, both in passes:
        p = norm_cdf(z, np.float32)
        p[corner] = np.minimum(p[corner], both)
        out.reshape(-1)[flat] = p


def soft_mask_organs(
    landmarks,
    std,
    height: int,
    width: int,
    *,
    from_size: tuple[int, int] | None = None,
    band: bool = True,
    allow_empty: bool = False,
) -> np.ndarray:
    """float32 (3, H, W) soft masks of the three organs (right lung, left lung, heart).

    ``landmarks`` (120, 2); ``std`` (120, 2) or (120,).  ``from_size`` and
    ``band`` as in :func:`soft_mask`.  Raises :class:`InputError` when no
    landmark falls on the grid (landmarks of another frame: pass ``from_size=``),
    unless ``allow_empty=True``.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> row = cxu.load_sample().row(0, named=True)
    >>> lm, sd = np.asarray(row["landmarks"]), np.asarray(row["landmarks_std"])
    >>> p = soft_mask_organs(lm, sd, 64, 64, from_size=(1024, 1024))
    >>> p.shape, p.dtype, float(p.min()) >= 0.0, float(p.max()) <= 1.0
    ((3, 64, 64), dtype('float32'), True, True)
    """
    lm = as_points(landmarks, "landmarks")
    if lm.shape != (N_NODES, 2):
        raise InputError(f"landmarks must have shape (120, 2), got {lm.shape}")
    sd = as_std(std, N_NODES)
    height, width = check_size(height, width)
    lm, sd = points_in_frame(lm, sd, height, width, from_size)
    if not allow_empty:
        require_on_grid(lm, height, width)
    out = np.empty((len(ORGANS), height, width), dtype=np.float32)
    for k, organ in enumerate(ORGANS):
        _soft_into(out[k], lm[ORGAN_SLICES[organ]], sd[ORGAN_SLICES[organ]], band)
    return out


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
) -> np.ndarray:
    """Bool (H, W): pixels whose mask membership is uncertain at ``k`` sigma.

    A pixel is in the band when its inside-probability (:func:`soft_mask`)
    lies strictly between ``Phi(-k)`` and ``Phi(k)``, i.e. the mean contour,
    shifted by the released-mask convention, passes within ``k`` standard
    deviations of the pixel centre.  Empty when every std is zero.
    ``from_size`` as in :func:`soft_mask`; ``band=False`` measures every pixel
    of the grid (the reference) instead of those within ``max(k, BAND_Z)``
    sigma plus a pixel of the contour (same result).

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
    out = np.zeros((height, width), dtype=bool)
    if sd.any():
        # beyond k sigma (plus delta) of its nearest segment no edge gives |z| < k, and
        # the corner model, which can lower z, reaches BAND_Z sigma: the band covers both
        for flat, z, corner, both in _closed_form(pts, sd, height, width, float(k) if band else None)[1]:
            z = z.astype(np.float64)
            z[corner] = np.minimum(z[corner], norm_ppf_clip(both))
            out.reshape(-1)[flat[np.abs(z) < k]] = True
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
) -> np.ndarray:
    """Per-pixel loss weights that down-weight pixels of uncertain membership.

    ``w = floor + (1 - floor) * |2 p - 1| ** power`` with ``p`` the
    :func:`soft_mask` probability: 1 where the mask is certain (p = 0 or 1),
    ``floor`` on the mean contour (p = 0.5).  float32 (H, W).  With ``power``
    < 1 the weight recovers faster away from the contour.  ``from_size`` and
    ``band`` as in :func:`soft_mask`.

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
    p = soft_mask(points, std, height, width, from_size=from_size, band=band)
    return (floor + (1.0 - floor) * np.abs(2.0 * p - 1.0) ** power).astype(np.float32)
