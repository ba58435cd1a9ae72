"""Soft-mask band kernel: the closed form of :mod:`chexmask_u_tools.masks.soft`, band pixels only.

One :func:`soft_band` call draws one contour.  Rows are visited once, top to
bottom; in each row

1. the inside test of the shifted mean polygon gives the row's interior runs
   (even-odd, half-open rows, the same float64 crossings as
   ``masks.soft.inside_centres``), written as certain pixels where the output
   keeps them;
2. every segment whose *visit* capsule (radius ``VISIT``, see
   :func:`visit_radii`) meets the row contributes its exact span of that row,
   and each pixel of the spans keeps its nearest segment: float32 distances in
   the numpy reference's operation order, so the same segment wins (among exact
   ties the last one within its reach, as there);
3. each pixel whose nearest segment lies within that segment's band reach gets
   the closed form once: signed distance, the normal std interpolated along the
   segment, ``Phi`` of the standardized margin and, near a sharp convex vertex,
   the two-edge (bivariate normal) probability where it is lower.

Pixels outside the spans are never read or written.  The caller validates
every input (finite coordinates within ``+-2**20`` px, finite std within
``2**20`` px, a real grid) and builds the tables from ``masks.soft``'s contour
model; the kernel clips every index it derives to the output, so no input can
write outside it.

Speed.  The per-pixel loops run over slices of row buffers with an index that
starts at 0 (numba then drops its negative-index wraparound), use
``np.divide`` (no zero-division check) and selects instead of branches, so
LLVM vectorizes them; ``exp`` is computed by :func:`exp_neg` for the same
reason (libm's is a call).  The closed form of a span runs only between its
segment's first and last pixel of the row.

Output modes (``mode``): ``PROB32`` float32 probability; ``PROB16`` float16
probability (round to nearest even, as ``numpy.astype``); ``PROB8`` uint8 ``rint(p * 255)``; ``BAND`` bool ``|z| < param0``
(the band of ``masks.soft.band_mask``, ``z`` lowered to ``Phi^-1`` of the
two-edge probability near sharp vertices); ``WEIGHT`` float32 ``param0 + (1 -
param0) * |2 p - 1| ** param1`` (``pixel_weight_map``; the caller fills the
certain value).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from chexmask_u_tools.kernels.jit import kernel

# Helpers of the per-pixel loops are inlined into them at numba's level (LLVM
# would leave the larger ones as calls, and a call keeps a loop from being
# vectorized); they compile as part of the kernels that use them, cached with
# those, so they need no cache of their own.
inline = numba.njit(inline="always", nogil=True)

__all__ = [
    "AX",
    "AY",
    "BAND",
    "CREACH",
    "HALF",
    "INV32",
    "LEN2",
    "LVX",
    "LVY",
    "NX",
    "NY",
    "PROB16",
    "PROB32",
    "PROB8",
    "REACH",
    "REACH2",
    "REACH2_END",
    "SEG32_ROWS",
    "SEG_ROWS",
    "SHARED",
    "VARX",
    "VARY",
    "VEND",
    "VISIT",
    "VSTART",
    "VX32",
    "VY32",
    "WEIGHT",
    "contour_tables",
    "corner_probability",
    "exp_neg",
    "norm_cdf32",
    "norm_cdf64",
    "soft_band",
    "visit_radii",
]

PROB32, PROB16, PROB8, BAND, WEIGHT = range(5)
_ITEMSIZE = (4, 2, 1, 1, 4)  # bytes per pixel of each mode's output

# Rows of the float64 per-segment table (each (N,)): shifted start point, outward
# unit normal, band reach, visit radius, and the two-edge model's line constants
# (direction, squared length, boundary half-width, normal variances of the two
# nodes, and per vertex the shared node's covariance along both normals).
AX, AY, NX, NY, REACH, VISIT, LVX, LVY, LEN2, HALF, VSTART, VEND, SHARED = range(13)
SEG_ROWS = 13
# Rows of the float32 per-segment table: direction, 1 / length^2, reach^2 of the
# segment's start half (t < 0.5) and end half, per-axis node variance, corner
# reach (float32 as the numpy reference uses them).
VX32, VY32, INV32, REACH2, REACH2_END, VARX, VARY, CREACH = range(8)
SEG32_ROWS = 8

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_BLOCK = 8  # the numpy reference's search block: its float32 pixel offsets start at the block origin
_LANES = 16  # pixel loops run whole multiples of this many columns: LLVM's vector loop takes 16 at a time


@kernel
def _lanes(lo, hi):
    """``hi`` moved up so that lo..hi is a whole number of ``_LANES`` (vector loop only, no scalar remainder).

    Spans grow so, at most ``_LANES - 1`` columns past their end (the row
    buffers are that much longer); the extra columns get true distances, and a
    pixel only becomes a band pixel of a segment within that segment's reach,
    where its nearest segment's exact span covers it.  Ranges of a segment's
    own pixels are rounded the same way, within its span, so that they never
    leave the columns initialized in the row.
    """
    if hi < lo:
        return hi
    return lo + ((hi - lo) // _LANES + 1) * _LANES - 1
_EXP_SQUARINGS = 7
_EXP_MAX = 81.0  # exp(-81) < 1e-35: the CDFs below are 0 or 1 to every digit that matters beyond it
_EXP_DEGREE = 12
_EXP_TAYLOR = np.array([1.0 / math.factorial(k) for k in range(_EXP_DEGREE + 1)])  # exp(u) = sum u^k / k!


@inline
def exp_neg(w):
    """``exp(-w)`` for float64 ``0 <= w <= 81`` (larger ``w`` is taken as 81), relative error below 1e-10.

    ``exp(-w) = exp(-w / 128) ** 128``: a degree-12 Taylor polynomial then
    seven squarings, plain arithmetic that vectorizes (libm's ``exp`` is a call).
    """
    u = -min(max(w, 0.0), _EXP_MAX) * (0.5**_EXP_SQUARINGS)
    e = _EXP_TAYLOR[_EXP_DEGREE]
    for k in range(_EXP_DEGREE - 1, -1, -1):  # Horner; a constant trip count, unrolled by LLVM
        e = e * u + _EXP_TAYLOR[k]
    for _ in range(_EXP_SQUARINGS):
        e = e * e
    return e


@inline
def norm_cdf32(z):
    """Standard normal CDF of float32 ``z`` in float32: the reference's Abramowitz & Stegun 7.1.26 formula.

    Same operations as ``masks.soft.norm_cdf`` in float32 except ``exp``
    (:func:`exp_neg`, float64); within ~1e-7 of it.
    """
    f32 = np.float32
    x = np.float32(min(abs(np.float64(z)) * _INV_SQRT2, 9.0))
    t = np.divide(f32(1.0), x * f32(0.3275911) + f32(1.0))
    poly = t * f32(1.061405429)
    poly = (poly + f32(-1.453152027)) * t
    poly = (poly + f32(1.421413741)) * t
    poly = (poly + f32(-0.284496736)) * t
    poly = (poly + f32(0.254829592)) * t
    q = poly * np.float32(exp_neg(np.float64(x * x))) * f32(0.5)
    return f32(1.0) - q if z >= f32(0.0) else q


@inline
def norm_cdf64(z):
    """The same CDF in float64 (the two-edge model's precision)."""
    x = min(abs(z) * _INV_SQRT2, 9.0)
    t = np.divide(1.0, x * 0.3275911 + 1.0)
    poly = t * 1.061405429
    poly = (poly - 1.453152027) * t
    poly = (poly + 1.421413741) * t
    poly = (poly - 0.284496736) * t
    poly = (poly + 0.254829592) * t
    q = poly * exp_neg(x * x) * 0.5
    return 1.0 - q if z >= 0 else q


@kernel
def _norm_ppf_clip(p):
    """Inverse normal CDF (Acklam, one Newton step), clipped to +-8: ``masks.soft.norm_ppf_clip`` for one value."""
    p = min(max(p, 1e-15), 1 - 1e-15)
    q = min(p, 1 - p)
    if q < 0.02425:
        r = math.sqrt(-2 * math.log(q))
        x = (((((-7.784894002430293e-03 * r - 3.223964580411365e-01) * r - 2.400758277161838e00) * r
               - 2.549732539343734e00) * r + 4.374664141464968e00) * r + 2.938163982698783e00) / (
            (((7.784695709041462e-03 * r + 3.224671290700398e-01) * r + 2.445134137142996e00) * r
             + 3.754408661907416e00) * r + 1)
    else:
        u = q - 0.5
        w = u * u
        x = (((((-3.969683028665376e01 * w + 2.209460984245205e02) * w - 2.759285104469687e02) * w
               + 1.383577518672690e02) * w - 3.066479806614716e01) * w + 2.506628277459239e00) * u / (
            ((((-5.447609879822406e01 * w + 1.615858368580409e02) * w - 1.556989798598866e02) * w
              + 6.680131188771972e01) * w - 1.328068155288572e01) * w + 1)
    x = x - (norm_cdf64(x) - q) * math.sqrt(2 * math.pi) * math.exp(0.5 * x * x)
    if p > 0.5:
        x = -x
    return min(max(x, -8.0), 8.0)


@inline
def _line(seg, s):
    """Segment ``s``'s constants for :func:`_line_z`, as a tuple (a value: nothing is allocated)."""
    return (seg[AX, s], seg[AY, s], seg[LVX, s], seg[LVY, s], seg[LEN2, s], seg[NX, s], seg[NY, s], seg[HALF, s],
            seg[VSTART, s], seg[VEND, s])


@inline
def _line_z(qx, qy, line):
    """Standardized margin of pixel centre (qx, qy) to the LINE of a segment, its std, and its parameter t.

    ``line``: :func:`_line`, i.e. start, direction, squared length, outward
    unit normal, boundary half-width and the normal variances of its two nodes.
    """
    ax, ay, vx, vy, length2, nx, ny, half, var_start, var_end = line
    rx = qx - ax
    ry = qy - ay
    t = min(max(np.divide(rx * vx + ry * vy, length2), 0.0), 1.0)
    margin = half - (rx * nx + ry * ny)
    sigma = math.sqrt(max((1 - t) * (1 - t) * var_start + t * t * var_end, 1e-12))
    return np.divide(margin, sigma), sigma, t


@inline
def corner_probability(zj, sj, wj, zk, sk, wk, shared):
    """P(inside both lines) from each line's standardized margin, std and shared-node weight (Mendell-Elston).

    ``shared``: the shared node's covariance along both normals.  As
    ``masks.soft``: conditions on the more binding threshold,
    ``Phi(h) * Phi((k + rho L) / sqrt(1 - rho^2 L (L + h)))``, ``L = phi(h) / Phi(h)``.
    """
    rho = min(max(np.divide(wj * wk * shared, max(sj * sk, 1e-12)), -0.999), 0.999)
    lo = min(max(min(zj, zk), -8.0), 8.0)
    hi = min(max(max(zj, zk), -8.0), 8.0)
    cdf = max(norm_cdf64(lo), 1e-300)
    lam = np.divide(exp_neg(0.5 * lo * lo) * _INV_SQRT_2PI, cdf)
    var = max(1.0 - rho * rho * lam * (lam + lo), 1e-9)
    return cdf * norm_cdf64(np.divide(hi + rho * lam, math.sqrt(var)))


@kernel
def _corner_at(qx, qy, s, other, vertex, seg):
    """Two-edge probability of pixel (qx, qy) for segments ``s`` and ``other`` meeting at ``vertex`` (table lookups)."""
    zj, sj, tj = _line_z(qx, qy, _line(seg, s))
    zk, sk, tk = _line_z(qx, qy, _line(seg, other))
    wj = 1 - tj if vertex == s else tj
    wk = 1 - tk if vertex == other else tk
    return corner_probability(zj, sj, wj, zk, sk, wk, seg[SHARED, vertex])


@kernel
def _segment_distance(ax, ay, bx, by, cx, cy, dx, dy):
    """Distance between segments ab and cd (0 when they cross or touch, and when collinear and overlapping)."""
    d1 = (dx - cx) * (ay - cy) - (dy - cy) * (ax - cx)
    d2 = (dx - cx) * (by - cy) - (dy - cy) * (bx - cx)
    d3 = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    d4 = (bx - ax) * (dy - ay) - (by - ay) * (dx - ax)
    if ((d1 <= 0 and d2 >= 0) or (d1 >= 0 and d2 <= 0)) and ((d3 <= 0 and d4 >= 0) or (d3 >= 0 and d4 <= 0)):
        return 0.0
    best = math.inf
    for px, py, sx, sy, ex, ey in (
        (ax, ay, cx, cy, dx, dy),
        (bx, by, cx, cy, dx, dy),
        (cx, cy, ax, ay, bx, by),
        (dx, dy, ax, ay, bx, by),
    ):
        vx = ex - sx
        vy = ey - sy
        length2 = vx * vx + vy * vy
        t = 0.0
        if length2 > 0:
            t = min(max(((px - sx) * vx + (py - sy) * vy) / length2, 0.0), 1.0)
        ox = px - sx - t * vx
        oy = py - sy - t * vy
        best = min(best, math.sqrt(ox * ox + oy * oy))
    return best


@kernel
def visit_radii(a, nxt, reach, slack, out):
    """Per segment k, how far from it its row spans must reach (written to ``out[k]``).

    At least ``reach[k]``, and ``reach[j]`` of every segment j that may have a
    pixel within its reach that segment k is nearer to: such a pixel is within
    ``2 reach[j]`` of both segments, so j counts when the segments are at most
    that far apart.  Otherwise a farther segment could claim a pixel whose
    nearest segment never visited it.  ``slack`` (px, added) covers float32
    rounding.  ``a``: (N, 2) float64 starts (segment k ends at ``a[nxt[k]]``);
    ``reach``: (N,) float64; ``out``: (N,) float64.
    """
    n = a.shape[0]
    for k in range(n):
        radius = reach[k]
        bk = nxt[k]
        for j in range(n):
            if reach[j] <= radius:
                continue
            bj = nxt[j]
            limit = 2 * reach[j] + 2 * slack
            # bounding boxes farther apart than the limit: the segments are too (cheap test first)
            if (max(a[k, 0], a[bk, 0]) + limit < min(a[j, 0], a[bj, 0])
                    or max(a[j, 0], a[bj, 0]) + limit < min(a[k, 0], a[bk, 0])
                    or max(a[k, 1], a[bk, 1]) + limit < min(a[j, 1], a[bj, 1])
                    or max(a[j, 1], a[bj, 1]) + limit < min(a[k, 1], a[bk, 1])):
                continue
            gap = _segment_distance(a[k, 0], a[k, 1], a[bk, 0], a[bk, 1], a[j, 0], a[j, 1], a[bj, 0], a[bj, 1])
            if gap <= limit:
                radius = reach[j]
        out[k] = radius + slack


@kernel
def _capsule_span(seg, a, b_index, s, y, width):
    """Columns [x0, x1] (clipped to the grid; x0 > x1 when empty) of row ``y`` within ``VISIT`` of segment ``s``.

    The capsule is the convex hull of the end discs: its row section spans the
    discs' sections and the crossings of its two long edges.
    """
    ax = a[s, 0]
    ay = a[s, 1]
    bx = a[b_index, 0]
    by = a[b_index, 1]
    radius = seg[VISIT, s]
    lo = math.inf
    hi = -math.inf
    for px, py in ((ax, ay), (bx, by)):
        dy = y - py
        if abs(dy) <= radius:
            h = math.sqrt(radius * radius - dy * dy)
            lo = min(lo, px - h)
            hi = max(hi, px + h)
    vx = bx - ax
    vy = by - ay
    length = math.sqrt(vx * vx + vy * vy)
    if length > 0:
        ox = -vy / length * radius
        oy = vx / length * radius
        for sign in (-1.0, 1.0):
            y0 = ay + sign * oy
            y1 = by + sign * oy
            if y0 != y1 and ((y0 <= y <= y1) or (y1 <= y <= y0)):
                x = ax + sign * ox + (y - y0) * (bx - ax) / (y1 - y0)
                lo = min(lo, x)
                hi = max(hi, x)
    if not lo <= hi:
        return 0, -1
    # a hundredth of a pixel more on each side: extra pixels only add true distances
    lo = max(lo - 0.01, -1.0)
    hi = min(hi + 0.01, width + 0.0)
    return max(int(math.ceil(lo)), 0), min(int(math.floor(hi)), width - 1)


@kernel
def _nearest_in_span(best, sel, lo, hi, segment, ax, ry, vx, vy, inv, reach2, reach2_end):
    """Fold segment ``segment`` into the nearest-segment buffers of columns lo..hi of one row.

    float32 distances in the numpy reference's operation order (offsets from
    the ``_BLOCK`` origin); ``sel`` keeps, among exact ties, the last segment
    within its reach (``reach2`` squared for pixels nearer its start,
    ``reach2_end`` nearer its end), and -1 where the nearest segment's reach
    misses the pixel.
    """
    zero32 = np.float32(0.0)
    one32 = np.float32(1.0)
    seg_id = np.int32(segment)
    best_v = best[lo : hi + 1]
    sel_v = sel[lo : hi + 1]
    for i in range(hi + 1 - lo):
        x = lo + i
        block_x = x & -_BLOCK
        rx = np.float32(block_x - ax) + np.float32(x - block_x)
        t = min(max((rx * vx + ry * vy) * inv, zero32), one32)
        ox = rx - t * vx
        oy = ry - t * vy
        d2 = ox * ox + oy * oy
        held = best_v[i]
        within = d2 <= (reach2 if t < np.float32(0.5) else reach2_end)
        take = (d2 < held) | ((d2 == held) & within)
        old = sel_v[i]
        new = np.int32(within) * (seg_id + np.int32(1)) - np.int32(1)
        sel_v[i] = old + np.int32(take) * (new - old)
        best_v[i] = min(held, d2)


@kernel
def _own_range(sel, lo, hi, segment):
    """First and last column of lo..hi whose nearest segment is ``segment`` (first > last when none)."""
    seg_id = np.int32(segment)
    count = hi + 1 - lo
    if count <= 0:
        return lo, lo - 1
    sel_v = sel[lo : hi + 1]
    first = count
    last = -1
    for i in range(count):
        own = sel_v[i] == seg_id
        first = min(first, i if own else count)
        last = max(last, i if own else -1)
    return lo + first, lo + last


@kernel
def _segment_constants(y, block_y, segment, after, a, seg, seg32, convex):
    """Per-row scalars of segment ``segment`` for :func:`_margin` (read once, before a span's pixel loop: loads
    inside the loop would need alias checks that stop LLVM from vectorizing it)."""
    f32 = np.float32
    ry = f32(block_y - a[segment, 1]) + f32(y - block_y)
    return (a[segment, 0], ry, seg32[VX32, segment], seg32[VY32, segment], seg32[INV32, segment],
            seg32[VARX, segment], seg32[VARY, segment], seg32[VARX, after], seg32[VARY, after],
            f32(seg[NX, segment]), f32(seg[NY, segment]), seg32[CREACH, segment], convex[segment], convex[after])


@inline
def _margin(x, dist, ins, constants):
    """float32 (t, z, p, certain, corner) of pixel column ``x`` for its nearest segment, in the numpy reference's
    operations.

    ``dist``: the pixel's float32 distance to the segment; ``ins``: whether its
    centre is inside the shifted polygon; ``constants``: :func:`_segment_constants`.
    ``z`` (float64) is the standardized margin (``+-inf`` where certain),
    ``p = Phi(z)`` (exact 0 / 1 where certain); ``corner``: the two-edge model applies.
    """
    ax, ry, vx, vy, inv, var_x0, var_y0, var_x1, var_y1, on_nx, on_ny, corner_reach, convex_start, convex_end = (
        constants
    )
    f32 = np.float32
    zero32 = f32(0.0)
    one32 = f32(1.0)
    block_x = x & -_BLOCK
    rx = f32(block_x - ax) + f32(x - block_x)
    t = min(max((rx * vx + ry * vy) * inv, zero32), one32)
    ox = rx - t * vx
    oy = ry - t * vy
    on = dist < f32(1e-6)
    # ox / dist exactly as numpy (not times a reciprocal): with a tiny std, an ulp of the margin moves P a lot
    safe = one32 if on else dist
    nx = np.divide(ox, safe)
    ny = np.divide(oy, safe)
    nx = on_nx if on else (-nx if ins else nx)
    ny = on_ny if on else (-ny if ins else ny)
    nx2 = nx * nx
    ny2 = ny * ny
    tail = one32 - t
    sigma2 = (nx2 * var_x0 + ny2 * var_y0) * (tail * tail) + (t * t) * (nx2 * var_x1 + ny2 * var_y1)
    margin = (dist if ins else -dist) + max(abs(nx), abs(ny)) * f32(0.5)
    certain = sigma2 <= zero32
    z = np.divide(margin, np.sqrt(sigma2 if sigma2 > zero32 else one32))  # certain ones are replaced below
    p = norm_cdf32(z)
    p = (one32 if margin >= zero32 else zero32) if certain else p
    zz = (math.inf if margin >= zero32 else -math.inf) if certain else np.float64(z)
    corner = (convex_start if t < f32(0.5) else convex_end) & (not certain) & (dist <= corner_reach)
    return t, zz, p, corner


@kernel
def _closed_form_span(best, sel, inside, prob, zval, flag, lo, hi, segment, constants):
    """The closed form for the pixels of columns lo..hi of a row whose nearest segment is ``segment``.

    Writes ``prob`` (float32 ``Phi(z)``), ``zval`` (float64 ``z``) and ``flag``
    (1 where the two-edge corner model applies, left to the caller) for those
    pixels; returns how many were flagged.  ``constants``: :func:`_segment_constants`.
    """
    seg_id = np.int32(segment)
    best_v = best[lo : hi + 1]
    sel_v = sel[lo : hi + 1]
    inside_v = inside[lo : hi + 1]
    prob_v = prob[lo : hi + 1]
    z_v = zval[lo : hi + 1]
    flag_v = flag[lo : hi + 1]
    corners = 0
    for i in range(hi + 1 - lo):
        t, z, p, corner = _margin(lo + i, np.sqrt(best_v[i]), inside_v[i] != 0, constants)
        own = sel_v[i] == seg_id
        if own:
            prob_v[i] = p
            z_v[i] = z
            flag_v[i] = np.uint8(corner)
        corners += np.int64(own & corner)
    return corners


@kernel
def _closed_form_corner_span(best, sel, inside, prob, lo, hi, y, segment, constants, line, before_line, after_line,
                             shared_start, shared_end):
    """:func:`_closed_form_span` for a segment that meets a sharp convex vertex: ``prob`` gets ``min(Phi(z),
    two-edge probability)`` where the corner model applies (float64 lines, as ``masks.soft``).

    ``line``, ``before_line``, ``after_line``: :func:`_line` of this segment and
    its two neighbours; ``shared_*``: the shared node's covariance at its start
    and end vertex.
    """
    seg_id = np.int32(segment)
    qy = np.float64(y)
    best_v = best[lo : hi + 1]
    sel_v = sel[lo : hi + 1]
    inside_v = inside[lo : hi + 1]
    prob_v = prob[lo : hi + 1]
    for i in range(hi + 1 - lo):
        x = lo + i
        t, z, p, corner = _margin(x, np.sqrt(best_v[i]), inside_v[i] != 0, constants)
        start_side = t < np.float32(0.5)
        # this segment's line, and its neighbour's at the nearer vertex (weights: that vertex's share)
        qx = np.float64(x)
        zj, sj, tj = _line_z(qx, qy, line)
        zk, sk, tk = _line_z(qx, qy, before_line if start_side else after_line)
        both = corner_probability(zj, sj, 1 - tj if start_side else tj, zk, sk, tk if start_side else 1 - tk,
                                  shared_start if start_side else shared_end)
        if sel_v[i] == seg_id:
            prob_v[i] = min(p, np.float32(both)) if corner else p


@kernel
def _store_span(out_row, sel, prob, zval, lo, hi, segment, mode, param0, param1):
    """Write the pixels of columns lo..hi whose nearest segment is ``segment`` from the row buffers, in the
    output's form; ``out_row``: the row's bytes."""
    seg_id = np.int32(segment)
    sel_v = sel[lo : hi + 1]
    prob_v = prob[lo : hi + 1]
    count = hi + 1 - lo
    if mode == PROB32:
        out_v = out_row.view(np.float32)[lo : hi + 1]
        for i in range(count):
            if sel_v[i] == seg_id:
                out_v[i] = prob_v[i]
    elif mode == PROB8:
        out_v = out_row[lo : hi + 1]
        for i in range(count):
            if sel_v[i] == seg_id:
                out_v[i] = np.uint8(np.rint(prob_v[i] * np.float32(255.0)))
    elif mode == PROB16:
        out_v = out_row.view(np.uint16)[lo : hi + 1]
        bits_v = prob_v.view(np.uint32)
        for i in range(count):
            # IEEE half of p in [0, 1], round to nearest even; below 2**-14 a multiple of 2**-24
            bits = np.int64(bits_v[i])
            exponent = bits >> 23
            normal = ((exponent - 112) << 10) | ((bits & 0x7FFFFF) >> 13)
            rest = bits & 0x1FFF
            normal += np.int64((rest > 0x1000) | ((rest == 0x1000) & ((normal & 1) == 1)))
            subnormal = np.int64(np.rint(prob_v[i] * np.float32(2.0**24)))
            if sel_v[i] == seg_id:
                out_v[i] = np.uint16(subnormal if exponent < 113 else normal)
    elif mode == BAND:
        out_v = out_row[lo : hi + 1]
        z_v = zval[lo : hi + 1]
        for i in range(count):
            if sel_v[i] == seg_id:
                out_v[i] = np.uint8(abs(z_v[i]) < param0)
    else:
        out_v = out_row.view(np.float32)[lo : hi + 1]
        w0 = np.float32(param0)
        w1 = np.float32(1.0 - param0)
        power = np.float32(param1)
        for i in range(count):
            if sel_v[i] == seg_id:
                out_v[i] = w0 + w1 * abs(np.float32(2.0) * prob_v[i] - np.float32(1.0)) ** power


@kernel
def _fill_run(out_row, mode, left, right):
    """The certain-inside value on columns left..right of a row (bytes); nothing for BAND and WEIGHT."""
    if mode == PROB32:
        out_row.view(np.float32)[left : right + 1] = 1.0
    elif mode == PROB16:
        out_row.view(np.uint16)[left : right + 1] = 0x3C00  # float16 1.0
    elif mode == PROB8:
        out_row[left : right + 1] = 255


@inline
def _row_buffer(length, dtype):
    """A zeroed row buffer (1-D, C-contiguous)."""
    return np.zeros(length, dtype=dtype)


@kernel
def soft_band(out, mode, param0, param1, a, nxt, convex, seg, seg32):
    """Draw one contour's closed form into ``out``, band pixels only (see the module docstring).

    ``out``: the (H, W) output's bytes, a C-contiguous uint8 (H, W * itemsize)
    view (one compiled kernel serves every output type); it must hold the
    certain value outside the polygon already (zeros, or the weight of a
    certain pixel), and the interior runs get the certain-inside value (modes
    ``PROB*``).  ``a``: (N, 2) float64 shifted polygon;
    ``nxt``: (N,) int64 next node; ``convex``: (N,) bool sharp convex vertices;
    ``seg``: (SEG_ROWS, N) float64 and ``seg32``: (SEG32_ROWS, N) float32 tables.
    ``param0``, ``param1``: ``k`` for ``BAND``; ``floor``, ``power`` for ``WEIGHT``.
    """
    height = out.shape[0]
    width = out.shape[1] // _ITEMSIZE[mode]
    n = a.shape[0]
    # row buffers, _LANES columns longer: pixel loops run whole multiples of _LANES (see _lanes).  Zeroed,
    # not left empty: a read of a column not initialized in its row would then misbehave the same way on
    # every run (segment 0 at distance 0), so the tests see it
    padded = width + _LANES
    best = _row_buffer(padded, np.float32)  # separate 1-D arrays: numba knows they are contiguous
    prob = _row_buffer(padded, np.float32)
    sel = _row_buffer(padded, np.int32)
    inside = _row_buffer(padded, np.uint8)
    flag = _row_buffer(padded, np.uint8)
    zval = _row_buffer(padded, np.float64)
    crossings = np.empty(n + 1, dtype=np.float64)
    # per run of a row, per span of a row, per segment
    run_left, run_right = np.empty((2, n), dtype=np.int64)
    span_seg, span_lo, span_hi, own_lo, own_hi, span_corners = np.empty((6, n), dtype=np.int64)
    row_lo, row_hi, edge_lo, edge_hi = np.empty((4, n), dtype=np.int64)
    corner_side = np.empty(n, dtype=np.bool_)  # the segment meets a sharp convex vertex
    top = height
    bottom = -1
    for s in range(n):
        b = nxt[s]
        corner_side[s] = convex[s] or convex[b]
        ylo = min(a[s, 1], a[b, 1])
        yhi = max(a[s, 1], a[b, 1])
        radius = seg[VISIT, s]
        row_lo[s] = max(int(math.ceil(max(ylo - radius - 0.01, -1.0))), 0)
        row_hi[s] = min(int(math.floor(min(yhi + radius + 0.01, height + 0.0))), height - 1)
        top = min(top, row_lo[s])
        bottom = max(bottom, row_hi[s])
        # the inside test's crossings: rows ceil(ylo) <= r < ceil(yhi)
        edge_lo[s] = int(math.ceil(min(max(ylo, -1.0), height + 0.0)))
        edge_hi[s] = int(math.ceil(min(max(yhi, -1.0), height + 0.0)))
    cleared_lo = 0
    cleared_hi = -1
    for y in range(top, bottom + 1):
        out_row = out[y]
        # 1. interior runs of the shifted polygon (numpy's inside_centres, row y)
        count = 0
        for s in range(n):
            if edge_lo[s] <= y < edge_hi[s]:
                b = nxt[s]
                x = a[s, 0] + (y - a[s, 1]) * (a[b, 0] - a[s, 0]) / (a[b, 1] - a[s, 1])
                crossings[count] = min(max(x, -1.0), width + 1.0)
                count += 1
        for i in range(1, count):  # insertion sort: a handful of crossings per row
            value = crossings[i]
            j = i - 1
            while j >= 0 and crossings[j] > value:
                crossings[j + 1] = crossings[j]
                j -= 1
            crossings[j + 1] = value
        runs = 0
        for r in range(count // 2):
            left = max(int(math.ceil(crossings[2 * r])), 0)
            right = min(int(math.ceil(crossings[2 * r + 1])) - 1, width - 1)
            if left <= right:
                run_left[runs] = left
                run_right[runs] = right
                runs += 1
                _fill_run(out_row, mode, left, right)
        # 2. spans of the segments' visit capsules in this row
        spans = 0
        used_lo = width
        used_hi = -1
        for s in range(n):
            if row_lo[s] <= y <= row_hi[s]:
                x0, x1 = _capsule_span(seg, a, nxt[s], s, y, width)
                if x0 <= x1:
                    span_seg[spans] = s
                    span_lo[spans] = x0
                    span_hi[spans] = _lanes(x0, x1)
                    spans += 1
                    used_lo = min(used_lo, x0)
                    used_hi = max(used_hi, x1)
        if spans == 0:
            continue
        # inside flags over the spans' columns
        if cleared_lo <= cleared_hi:
            inside[cleared_lo : cleared_hi + 1] = 0
        for r in range(runs):
            left = max(run_left[r], used_lo)
            right = min(run_right[r], used_hi)
            if left <= right:
                inside[left : right + 1] = 1
        cleared_lo = used_lo
        cleared_hi = used_hi
        # 3. nearest segment per pixel
        for i in range(spans):
            best[span_lo[i] : span_hi[i] + 1] = np.inf
            sel[span_lo[i] : span_hi[i] + 1] = -1
        block_y = (y // _BLOCK) * _BLOCK
        for i in range(spans):
            s = span_seg[i]
            ry = np.float32(block_y - a[s, 1]) + np.float32(y - block_y)
            _nearest_in_span(best, sel, span_lo[i], span_hi[i], s, a[s, 0], ry, seg32[VX32, s], seg32[VY32, s],
                             seg32[INV32, s], seg32[REACH2, s], seg32[REACH2_END, s])
        # 4. the closed form, once per band pixel (in the span of its nearest segment, between its first and
        # last pixel of the row)
        for i in range(spans):
            s = span_seg[i]
            first, last = _own_range(sel, span_lo[i], span_hi[i], s)
            # whole vectors from the first own pixel, moved left where they would leave the span (whose columns
            # are the ones initialized in this row; its length is a whole number of vectors too)
            own_hi[i] = _lanes(first, last)
            own_lo[i] = first - max(own_hi[i] - span_hi[i], 0)
            own_hi[i] = min(own_hi[i], span_hi[i])
            span_corners[i] = 0
            if own_lo[i] > own_hi[i]:
                continue
            constants = _segment_constants(y, block_y, s, nxt[s], a, seg, seg32, convex)
            if corner_side[s] and mode != BAND:
                prev = (s - 1) % n
                _closed_form_corner_span(best, sel, inside, prob, own_lo[i], own_hi[i], y, s, constants,
                                         _line(seg, s), _line(seg, prev), _line(seg, nxt[s]), seg[SHARED, s],
                                         seg[SHARED, nxt[s]])
            else:
                span_corners[i] = _closed_form_span(best, sel, inside, prob, zval, flag, own_lo[i], own_hi[i], s,
                                                    constants)
        # 5. band_mask near a sharp convex vertex: z lowered to Phi^-1 of the two-edge probability
        if mode == BAND:
            for i in range(spans):
                if span_corners[i] == 0:
                    continue
                s = span_seg[i]
                after = nxt[s]
                for x in range(own_lo[i], own_hi[i] + 1):
                    if sel[x] != s or flag[x] == 0:
                        continue
                    block_x = x & -_BLOCK
                    rx = np.float32(block_x - a[s, 0]) + np.float32(x - block_x)
                    ry = np.float32(block_y - a[s, 1]) + np.float32(y - block_y)
                    t = min(max((rx * seg32[VX32, s] + ry * seg32[VY32, s]) * seg32[INV32, s], np.float32(0.0)),
                            np.float32(1.0))
                    if t < np.float32(0.5):
                        both = _corner_at(float(x), float(y), s, (s - 1) % n, s, seg)
                    else:
                        both = _corner_at(float(x), float(y), s, after, after, seg)
                    zval[x] = min(zval[x], _norm_ppf_clip(both))
        # 6. write the band pixels
        for i in range(spans):
            if own_lo[i] <= own_hi[i]:
                _store_span(out_row, sel, prob, zval, own_lo[i], min(own_hi[i], width - 1), span_seg[i], mode, param0,
                            param1)


_FOURIER_TERMS = 24
_CORNER_SIN = math.sin(math.radians(20.0))
_BAND_Z = 5.0
_BAND_PAD = 1.0


@kernel
def contour_tables(points, std, z_cut, height, width, a, convex, nxt, seg, seg32):
    """The closed form's per-node and per-segment constants of one contour, straight into the kernel's tables.

    The compiled twin of ``masks.soft.contour_model`` followed by
    ``masks.soft.kernel_tables`` (the numpy reference; the tests compare the
    two): truncation moments from the sawtooth's Fourier series, the shifted
    polygon ``a`` (N, 2), outward normals, sharp convex vertices ``convex``
    (N,), the band reach (``z_cut`` sigma, at least ``BAND_Z`` on the half of
    a segment next to a sharp convex vertex; no whole grid: that is numpy's), the
    two-edge model's line constants and the visit radii, for float64 (N, 2)
    ``points`` and per-axis ``std``.  ``nxt`` (N,) int64 gets the next node.
    """
    n = points.shape[0]
    var = np.empty((n, 2))
    smallest = math.inf
    for j in range(n):
        for axis in range(2):
            if std[j, axis] > 0:
                smallest = min(smallest, std[j, axis])
    terms = 1
    if smallest < math.inf:
        terms = min(_FOURIER_TERMS, int(math.ceil(math.sqrt(41.5 / (2 * math.pi**2)) / smallest)))
    for j in range(n):
        nxt[j] = (j + 1) % n
        for axis in range(2):
            x = points[j, axis]
            sigma = std[j, axis]
            u = abs(x)
            if sigma == 0:
                mean = u - math.floor(u)
                trunc_var = 0.0
            else:
                total_sin = 0.0
                total = 0.0
                for k in range(1, terms + 1):
                    damp = math.exp(-2 * math.pi**2 * k**2 * sigma**2)
                    phase = 2 * math.pi * k * u
                    total_sin += damp * math.sin(phase) / (math.pi * k)
                    total += damp * (math.cos(phase) / (math.pi * k) ** 2 - math.sin(phase) / (math.pi * k))
                mean = 0.5 - total_sin
                trunc_var = min(max(1 / 3 + total - mean * mean, 0.0), 1 / 12 + 1e-3)
            a[j, axis] = x - mean if x >= 0 else x + mean
            var[j, axis] = sigma * sigma + trunc_var
    area2 = 0.0
    for j in range(n):
        b = nxt[j]
        area2 += a[j, 0] * a[b, 1] - a[b, 0] * a[j, 1]
    orientation = 1.0 if area2 >= 0 else -1.0
    span = max(width + 0.0, height + 0.0)
    for j in range(n):
        span = max(span, abs(a[j, 0]), abs(a[j, 1]))
    for j in range(n):
        b = nxt[j]
        vx = a[b, 0] - a[j, 0]
        vy = a[b, 1] - a[j, 1]
        length2 = vx * vx + vy * vy
        nx = vy * orientation
        ny = -vx * orientation
        norm = max(math.sqrt(nx * nx + ny * ny), 1e-12)
        seg[AX, j] = a[j, 0]
        seg[AY, j] = a[j, 1]
        seg[NX, j] = nx / norm
        seg[NY, j] = ny / norm
        seg[LVX, j] = vx
        seg[LVY, j] = vy
        seg[LEN2, j] = max(length2, 1e-12)
        seg32[VX32, j] = vx
        seg32[VY32, j] = vy
        seg32[INV32, j] = 1.0 / (length2 if length2 > 0 else 1.0)
        seg32[VARX, j] = var[j, 0]
        seg32[VARY, j] = var[j, 1]
    for j in range(n):
        b = nxt[j]
        prev = (j - 1) % n
        length = max(math.sqrt(seg[LVX, j] ** 2 + seg[LVY, j] ** 2), 1e-12)
        convex[j] = (seg[NX, prev] * seg[LVX, j] / length + seg[NY, prev] * seg[LVY, j] / length) < -_CORNER_SIN
        nx2 = seg[NX, j] * seg[NX, j]
        ny2 = seg[NY, j] * seg[NY, j]
        seg[HALF, j] = 0.5 * max(abs(seg[NX, j]), abs(seg[NY, j]))
        seg[VSTART, j] = nx2 * var[j, 0] + ny2 * var[j, 1]
        seg[VEND, j] = nx2 * var[b, 0] + ny2 * var[b, 1]
        seg[SHARED, j] = seg[NX, prev] * seg[NX, j] * var[j, 0] + seg[NY, prev] * seg[NY, j] * var[j, 1]
    for j in range(n):
        b = nxt[j]
        sigma_max = math.sqrt(max(var[j, 0], var[j, 1], var[b, 0], var[b, 1]))
        seg32[CREACH, j] = _BAND_Z * sigma_max + 0.5
        # the corner model applies on the half of a segment next to a sharp convex vertex
        start = min((max(z_cut, _BAND_Z) if convex[j] else z_cut) * sigma_max + _BAND_PAD, 2.0**22)
        end = min((max(z_cut, _BAND_Z) if convex[b] else z_cut) * sigma_max + _BAND_PAD, 2.0**22)
        seg[REACH, j] = max(start, end)  # 2**22: beyond any grid, keeps reach^2 finite in float32
        seg32[REACH2, j] = start * start
        seg32[REACH2_END, j] = end * end
    slack = 0.5 + 1e-6 * max(span, 0.0)
    visit_radii(a, nxt, seg[REACH], slack, seg[VISIT])
