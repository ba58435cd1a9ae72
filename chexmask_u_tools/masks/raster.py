"""Pixel-exact CheXmask masks from landmark polygons, without OpenCV.

The released CheXmask(-U) masks are OpenCV's filled contour
(``cv2.drawContours(mask, [pts.astype(np.int32)], -1, 1, thickness=-1)``, i.e.
``fillPoly`` with 8-connected edges) of each organ's landmarks after truncating
the coordinates toward zero.  :func:`rasterize` reproduces that routine pixel for
pixel without OpenCV, including its corner cases:

* every polygon edge is drawn with the 8-connected Bresenham line walked from
  its left end point (after clipping the segment to the image with OpenCV's
  integer ``clipLine``), so boundary pixels are always part of the mask;
* the interior is filled scanline by scanline between consecutive crossings of
  the non-horizontal edges, in 16.16 fixed point: an edge is active on rows
  ``y0 <= y < y1``; crossing x advances by the truncated slope
  ``dx = trunc((x1 - x0) * 2**16 / (y1 - y0))``; each pair of crossings fills
  columns ``ceil(xl) .. floor(xr)``; edges that leave the image are re-anchored
  on their clipped end points (as current OpenCV does; verified against 5.0);
* polygons that leave the image, touch its border, self-intersect (even-odd
  rule over crossings), repeat vertices or degenerate to a segment or a point
  give what OpenCV gives.

Verified against OpenCV on thousands of random polygons (pinned in the tests)
and on every organ of the real CheXmask rows at hand (zero differing pixels).

Two implementations draw the same pixels, chosen by ``method=``
(:func:`raster_method`; ``"auto"`` takes the faster): a compiled kernel
(:mod:`chexmask_u_tools.kernels.fill`, ``"kernel"``) that walks each polygon's
edges and fills its rows in place, and the vectorized numpy code of this
module (``"numpy"``, the reference the tests and benchmarks compare against).
The kernel paints a label map directly (organs in order).  Inputs are
validated here, before either runs.

Coordinates are pixels, x = column, y = row, origin at the centre of the
top-left pixel (the CheXmask convention).  Pixel ``(r, c)`` of the mask is
``mask[r, c]``.

Rasterizing at another size: :func:`scale_points` maps landmarks from a
``(H, W)`` frame to ``(H', W')`` by ``x' = x * W' / W`` and ``y' = y * H' / H``
(no half-pixel offset: the landmark frame's origin is the top-left pixel
centre, as in the dataset).  The scaled floats are then truncated like the
released ones, so ``rasterize(scale_points(p, (1024, 1024), (256, 256)), 256,
256)`` is what the released pipeline would have drawn on a 256x256 canvas, not
a resized 1024 mask.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from chexmask_u_tools import kernels  # kernels.fill (and numba) load at the first call, not at import
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.kernels.dispatch import METHODS, resolve_method
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.schema import check_mask_size

__all__ = [
    "MAX_COORDINATE",
    "MAX_SIZE",
    "OFF_GRID_MARGIN",
    "RASTER_METHODS",
    "label_map",
    "raster_method",
    "rasterize",
    "rasterize_organs",
    "require_on_grid",
    "scale_points",
    "truncate_points",
]

XY_SHIFT = 16
"""Fixed-point fraction bits of OpenCV's polygon filler."""
_XY_ONE = 1 << XY_SHIFT

MAX_COORDINATE = 2**20
"""Largest accepted ``|x|`` or ``|y|``; keeps the 16.16 fixed-point arithmetic inside int64."""

MAX_SIZE = 2**16
"""Largest accepted mask height or width."""

RASTER_METHODS = METHODS
"""Values of the ``method=`` argument of :func:`rasterize`, :func:`rasterize_organs` and :func:`label_map`."""

# ----------------------------------------------------------------------------
# validation


def check_size(height: object, width: object) -> tuple[int, int]:
    if type(height) is int and type(width) is int and 0 < height <= MAX_SIZE and 0 < width <= MAX_SIZE:
        return height, width  # the common case without the general checks' cost (a mask draws in ~10 us)
    return check_mask_size(height, width, limit=MAX_SIZE)


def as_points(points: object, name: str = "points") -> np.ndarray:
    """``points`` as a float64 or int64 array ending in ``(N, 2)``, finite, in range."""
    try:
        arr = np.asarray(points)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} is not a numeric array: {exc}") from None
    kind = arr.dtype.kind  # integer (signed/unsigned) or real float only
    if kind not in "iuf":
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim < 2 or arr.shape[-1] != 2 or arr.shape[-2] < 1:
        raise InputError(f"{name} must have shape (..., N, 2) with N >= 1, got {arr.shape}")
    if kind == "u" and arr.size and arr.max() > MAX_COORDINATE:  # before a wrapping cast
        raise InputError(f"{name} has a coordinate beyond +-{MAX_COORDINATE} pixels")
    floating = kind == "f"
    arr = arr.astype(np.float64 if floating else np.int64, copy=False)
    if arr.size:
        largest = np.abs(arr).max()
        if not largest <= MAX_COORDINATE:  # also catches NaN
            if floating and not np.isfinite(arr).all():
                raise InputError(f"{name} contains NaN or infinite coordinates")
            raise InputError(f"{name} has a coordinate beyond +-{MAX_COORDINATE} pixels")
    return arr


def truncate_points(points: np.ndarray) -> np.ndarray:
    """Integer vertices the way the dataset pipeline made them: truncation toward zero.

    ``points``: (..., N, 2) numbers.  Returns int64 of the same shape
    (``-0.7 -> 0``, ``-1.2 -> -1``, ``3.9 -> 3``), like ``numpy.astype(int)``.

    Examples
    --------
    >>> truncate_points([[-0.7, 3.9], [-1.2, 10.5]])
    array([[ 0,  3],
           [-1, 10]])
    """
    arr = as_points(points)
    # float -> int casts truncate toward zero, like numpy's astype(int)
    return arr if arr.dtype == np.int64 else arr.astype(np.int64)


def scale_points(
    points: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]
) -> np.ndarray:
    """Scale (..., N, 2) points from a ``(height, width)`` frame to another.

    ``x' = x * W' / W`` and ``y' = y * H' / H`` in float64 (origin: top-left
    pixel centre, no half-pixel offset).  Rasterize the result at ``to_size`` to
    get the mask the released pipeline would have drawn at that size.

    Examples
    --------
    From the 1024 x 1024 frame to a 256-row, 512-column grid:

    >>> scale_points([[512.0, 256.0], [1023.0, 0.0]], (1024, 1024), (256, 512))
    array([[256. ,  64. ],
           [511.5,   0. ]])
    """
    arr = as_points(points).astype(np.float64)
    for size in (from_size, to_size):
        if len(tuple(size)) != 2:
            raise InputError(f"sizes are (height, width) pairs, got {size!r}")
    h0, w0 = check_size(*from_size)
    h1, w1 = check_size(*to_size)
    return arr * np.array([w1 / w0, h1 / h0])


# ----------------------------------------------------------------------------
# OpenCV-compatible integer primitives (vectorized over segments)


def _tdiv(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """C integer division (truncation toward zero) for int64 arrays."""
    q = np.abs(num) // np.abs(den)
    return np.where((num < 0) != (den < 0), -q, q)


def _outcode(x: np.ndarray, y: np.ndarray, right: int, bottom: int) -> np.ndarray:
    return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8


def _clip_segments(x1, y1, x2, y2, width: int, height: int):
    """OpenCV's integer ``clipLine`` on arrays of segments.

    Returns the (possibly partly) clipped end points and whether the segment
    has a part inside the image.  Partial updates on rejected segments are kept
    on purpose: the polygon filler uses them.
    """
    right, bottom = width - 1, height - 1
    c1 = _outcode(x1, y1, right, bottom)
    c2 = _outcode(x2, y2, right, bottom)
    work = ((c1 & c2) == 0) & ((c1 | c2) != 0)
    if not work.any():
        return x1, y1, x2, y2, (c1 | c2) == 0

    m = work & ((c1 & 12) != 0)
    if m.any():
        a = np.where(c1 < 8, 0, bottom)
        x1 = np.where(m, x1 + _tdiv((a - y1) * (x2 - x1), np.where(m, y2 - y1, 1)), x1)
        y1 = np.where(m, a, y1)
        c1 = np.where(m, (x1 < 0) + (x1 > right) * 2, c1)
    m = work & ((c2 & 12) != 0)
    if m.any():
        a = np.where(c2 < 8, 0, bottom)
        x2 = np.where(m, x2 + _tdiv((a - y2) * (x2 - x1), np.where(m, y2 - y1, 1)), x2)
        y2 = np.where(m, a, y2)
        c2 = np.where(m, (x2 < 0) + (x2 > right) * 2, c2)
    work = work & ((c1 & c2) == 0) & ((c1 | c2) != 0)
    m = work & (c1 != 0)
    if m.any():
        a = np.where(c1 == 1, 0, right)
        y1 = np.where(m, y1 + _tdiv((a - x1) * (y2 - y1), np.where(m, x2 - x1, 1)), y1)
        x1 = np.where(m, a, x1)
        c1 = np.where(m, 0, c1)
    m = work & (c2 != 0)
    if m.any():
        a = np.where(c2 == 1, 0, right)
        y2 = np.where(m, y2 + _tdiv((a - x2) * (y2 - y1), np.where(m, x2 - x1, 1)), y2)
        x2 = np.where(m, a, x2)
        c2 = np.where(m, 0, c2)
    return x1, y1, x2, y2, (c1 | c2) == 0


# Rows of the (7, segments) parameter table expanded by ``_walk``: the element
# at step ``i`` of a segment is ``start + i * major + ((a * i + b) // c) * minor``.
_START, _MAJOR, _A, _B, _C, _MINOR, _FIRST = range(7)


def _line_params(x1, y1, x2, y2, width: int, params: np.ndarray) -> np.ndarray:
    """Fill the (7, E) ``params`` with OpenCV's 8-connected line walk of each segment.

    End points must already be clipped inside the image.  The walk starts at
    the left end point; every step moves one pixel along the major axis, and
    the minor offset after ``i`` steps is ``ceil(i * d / D - 1/2)`` (Bresenham
    with OpenCV's initial error ``D - 2d``), i.e. ``(2 d i + D - 1) // (2 D)``.
    Pixels are flat indices ``y * width + x``.  Returns the pixel counts.
    """
    dx = x2 - x1
    dy = y2 - y1
    swap = dx < 0
    adx = np.abs(dx)
    ady = np.abs(dy)
    ystep = np.where((dy < 0) != swap, -width, width)
    vert = ady > adx
    major = np.maximum(adx, ady)
    params[_START] = np.where(swap, y2 * width + x2, y1 * width + x1)
    params[_MAJOR] = np.where(vert, ystep, 1)
    np.minimum(adx, ady, out=params[_A])
    params[_A] *= 2
    np.subtract(major, 1, out=params[_B])
    np.maximum(params[_B], 0, out=params[_B])
    np.multiply(major, 2, out=params[_C])
    np.maximum(params[_C], 1, out=params[_C])
    params[_MINOR] = np.where(vert, 1, ystep)
    return major + 1


def _walk(params: np.ndarray, counts: np.ndarray, nbent: int) -> np.ndarray:
    """Expand segment parameters (rows ``_START``...) into one int64 value per step.

    Only the first ``nbent`` values (the line pixels) carry the Bresenham term;
    the rest are plain arithmetic progressions.  The floor division is done in
    float64, which is exact here: numerator and denominator are integers below
    2**45, and a non-integer quotient is at least ``1 / c`` (``c < 2**22``)
    away from the next integer, far more than float64's rounding error.
    """
    ends = np.cumsum(counts)
    np.subtract(ends, counts, out=params[_FIRST])
    rep = np.repeat(params, counts, axis=1)
    step = np.arange(int(ends[-1]))
    step -= rep[_FIRST]
    val = rep[_MAJOR] * step
    val += rep[_START]
    if nbent:
        bent = rep[_A, :nbent] * step[:nbent]
        bent += rep[_B, :nbent]
        quotient = bent.astype(np.float64)
        quotient /= rep[_C, :nbent]
        bent = quotient.astype(np.int64)
        bent *= rep[_MINOR, :nbent]
        val[:nbent] += bent
    return val


_PATTERN = np.zeros(2, dtype=bool)


def _alternating(n: int) -> np.ndarray:
    """``[False, True, False, True, ...]`` of length ``n`` (a view of a cached array)."""
    global _PATTERN
    pattern = _PATTERN
    if len(pattern) < n:
        pattern = np.zeros(2 * n, dtype=bool)
        pattern[1::2] = True
        pattern.flags.writeable = False
        _PATTERN = pattern
    return pattern[:n]


def _fill_block(out: np.ndarray, rows, left, right) -> None:
    """``fill_runs`` for runs of a single polygon: one bounding block, one ``np.repeat``.

    Runs may also be empty (``left == right + 1``) as long as one is not.
    """
    c0 = int(left.min())
    w = int(right.max()) + 1 - c0
    r0 = int(rows[0])
    n = int(rows[-1]) - r0 + 1
    base = rows - r0
    base *= w
    base -= c0
    begin = base + left
    base += right
    base += 1
    end = base
    np.maximum(begin[1:], end[:-1], out=begin[1:])
    lengths = np.empty(2 * len(rows) + 1, dtype=np.int64)
    lengths[0] = begin[0]
    np.subtract(end, begin, out=lengths[1::2])
    np.subtract(begin[1:], end[:-1], out=lengths[2:-1:2])
    lengths[-1] = n * w - end[-1]
    out[r0 : r0 + n, c0 : c0 + w] = np.repeat(_alternating(len(lengths)), lengths).reshape(n, w)


def fill_runs(out: np.ndarray, rows, left, right, height: int) -> None:
    """Set ``out[rows[i], left[i]:right[i] + 1] = True`` on the (P * H, W) ``out``.

    Runs are nonempty, inside ``out``, sorted by row then column, and may touch
    the previous run of their row by one pixel (two crossings at the same
    integer x).  Each polygon's bounding block is written from one
    ``np.repeat`` of alternating zero / one runs, so filling costs one pass
    over the block instead of per-pixel index work.
    """
    nrun = len(rows)
    if rows[0] // height == rows[-1] // height:
        _fill_block(out, rows, left, right)
        return
    new = np.empty(nrun, dtype=bool)
    new[0] = True
    poly = rows // height
    np.not_equal(poly[1:], poly[:-1], out=new[1:])
    first = np.flatnonzero(new)
    last = np.append(first[1:], nrun) - 1
    group = np.cumsum(new) - 1
    c0 = np.minimum.reduceat(left, first)
    width = np.maximum.reduceat(right, first) + 1 - c0
    r0 = rows[first]
    nrows = rows[last] - r0 + 1
    begin = (rows - r0[group]) * width[group]
    begin -= c0[group]
    end = begin + right + 1
    begin += left
    # Overlaps are at most one pixel with the previous run of the same
    # polygon: start after it.  Block starts are relative to their own block.
    block_begin = begin[first]
    np.maximum(begin[1:], end[:-1], out=begin[1:])
    begin[first] = block_begin
    gap = np.empty(nrun, dtype=np.int64)
    np.subtract(begin[1:], end[:-1], out=gap[1:])
    gap[first] = block_begin
    # Per run: [zeros before, ones]; per polygon one trailing zeros slot.
    slot = 2 * np.arange(nrun) + group
    lengths = np.empty(2 * nrun + len(first), dtype=np.int64)
    lengths[slot] = gap
    lengths[slot + 1] = end - begin
    tail = slot[last] + 2
    lengths[tail] = nrows * width - end[last]
    pattern = np.zeros(len(lengths), dtype=bool)
    pattern[slot + 1] = True
    for s, e, r, n, c, w in zip(
        slot[first].tolist(), (tail + 1).tolist(), r0.tolist(), nrows.tolist(), c0.tolist(), width.tolist()
    ):
        out[r : r + n, c : c + w] = np.repeat(pattern[s:e], lengths[s:e]).reshape(n, w)


@functools.lru_cache(maxsize=64)
def _previous_index(m: int) -> np.ndarray:
    """``[m - 1, 0, 1, ..., m - 2]``: each vertex's predecessor in a closed ring (read-only)."""
    index = np.arange(-1, m - 1)
    index[0] = m - 1
    index.flags.writeable = False
    return index


def rasterize_polygons(verts: np.ndarray, first: np.ndarray, out: np.ndarray) -> None:
    """Draw P polygons into the zeroed bool ``out`` of shape (P, H, W).

    ``verts``: (M, 2) int64 vertices of all polygons, concatenated; ``first``:
    (P,) ascending index of each polygon's first vertex (``first[0] == 0``,
    every polygon has at least one vertex).  All polygons go through every
    step together, so numpy's per-call overhead is paid once per batch.
    """
    npoly, height, width = out.shape
    m = len(verts)
    if npoly == 1:
        prev = _previous_index(m)
    else:
        counts_per_poly = np.empty_like(first)
        counts_per_poly[:-1] = first[1:] - first[:-1]
        counts_per_poly[-1] = m - first[-1]
        prev = np.arange(-1, m - 1)
        prev[first] = first + counts_per_poly - 1
    x2 = verts[:, 0]
    y2 = verts[:, 1]
    x1 = x2[prev]
    y1 = y2[prev]
    inside_all = bool(verts.min() >= 0 and x2.max() < width and y2.max() < height)
    if inside_all:
        lx1, ly1, lx2, ly2 = x1, y1, x2, y2
        fy1, fy2 = y1, y2
    else:
        lx1, ly1, lx2, ly2, line_ok = _clip_segments(x1, y1, x2, y2, width, height)
        # OpenCV re-anchors a fill edge on its clipped end points unless
        # clipping made it horizontal; x always comes from the clipped points.
        flat = ly1 == ly2
        fy1 = np.where(flat, y1, ly1)
        fy2 = np.where(flat, y2, ly2)

    # Segment table: line walks, then crossing x, then crossing rows (the last
    # two merge into one progression of packed keys when nothing is clipped).
    groups = 2 if inside_all else 3
    params = np.empty((7, groups * m), dtype=np.int64)
    counts = np.empty(groups * m, dtype=np.int64)
    lines, xs = params[:, :m], params[:, m : 2 * m]
    counts[:m] = _line_params(lx1, ly1, lx2, ly2, width, lines)
    if not inside_all:
        counts[:m] *= line_ok
    poly = 0
    if npoly > 1:
        poly = np.repeat(np.arange(npoly), counts_per_poly)
        lines[_START] += poly * (height * width)

    # Fill edges: active on rows ytop <= y < ybot, crossing x in 16.16 fixed
    # point starts at OpenCV's (re-anchored) edge.x and advances by the
    # truncated slope each row.  x carries a +1 pixel offset so that it is
    # never negative, and (row, x) packs into one int64 key, row in the high
    # bits and x in the low ``bits``: one sort orders crossings by row, then x.
    bits = ((width + 2) << XY_SHIFT).bit_length()
    ytop = np.minimum(y1, y2)
    if inside_all:
        # No clipping: plain end points, every row of the edge inside, and x
        # stays between the end points, so the key itself is a progression.
        dx = x2 - x1
        nrow = np.abs(y2 - y1)
        slope = (np.abs(dx) << XY_SHIFT) // np.maximum(nrow, 1)
        slope *= np.sign(dx * (y2 - y1))
        xtop = np.where(y1 < y2, x1, x2) << XY_SHIFT
        xtop += ((ytop + poly * height) << bits) + _XY_ONE
        counts[m:] = nrow
        xs[_START] = xtop
        xs[_MAJOR] = slope + (1 << bits)
    else:
        dy = fy2 - fy1
        slope = _tdiv((lx2 - lx1) << XY_SHIFT, np.where(dy == 0, 1, dy))
        xtop = np.where(y1 < y2, (lx1 << XY_SHIFT) + (y1 - fy1) * slope, (lx2 << XY_SHIFT) + (y2 - fy2) * slope)
        lo = np.maximum(ytop, 0)
        nrow = np.minimum(np.maximum(y1, y2), height) - lo
        np.maximum(nrow, 0, out=nrow)
        xtop += (lo - ytop) * slope + _XY_ONE
        counts[m : 2 * m] = nrow
        counts[2 * m :] = nrow
        xs[_START] = xtop
        xs[_MAJOR] = slope
        rows = params[:, 2 * m :]
        rows[_START] = lo + poly * height
        rows[_MAJOR] = 1
    nline = int(counts[:m].sum())
    val = _walk(params, counts, nline)
    ncross = int(nrow.sum())
    flat2d = out.reshape(npoly * height, width)
    if ncross:
        if inside_all:
            keys = val[nline:]
        else:
            # Clamping x to one pixel outside either side keeps every span's
            # clipped result.
            cross_x = val[nline : nline + ncross]
            np.clip(cross_x, 0, (width + 1) << XY_SHIFT, out=cross_x)
            keys = val[nline + ncross :] << bits
            keys += cross_x
        keys.sort()
        low = (1 << bits) - 1
        k0 = keys[0::2]
        run_rows = k0 >> bits
        left = k0 & low
        left -= 1
        left >>= XY_SHIFT  # ceil(x) = (x + 1px - 1) >> 16
        right = keys[1::2] & low
        right >>= XY_SHIFT
        right -= 1  # floor(x)
        if npoly == 1 and inside_all:
            # empty runs (left == right + 1) are harmless in a single block
            if right.max() >= left.min():
                _fill_block(flat2d, run_rows, left, right)
        else:
            if not inside_all:
                np.maximum(left, 0, out=left)
                np.minimum(right, width - 1, out=right)
            keep = left <= right
            if keep.any():
                fill_runs(flat2d, run_rows[keep], left[keep], right[keep], height)
    out.reshape(-1)[val[:nline]] = True


# ----------------------------------------------------------------------------
# public API


def polygon_batch(points: object) -> tuple[np.ndarray, np.ndarray, bool]:
    """Concatenated int64 vertices, first-vertex indices, and whether input was one polygon."""
    if isinstance(points, (list, tuple)) and points and not np.isscalar(points[0]):
        first_item = np.asarray(points[0])
        if first_item.ndim == 2:
            polys = [truncate_points(p) for p in points]
            if any(p.ndim != 2 for p in polys):
                raise InputError("a list of polygons must hold (N_i, 2) arrays")
            lengths = np.array([len(p) for p in polys])
            return np.concatenate(polys), np.cumsum(lengths) - lengths, False
    verts = truncate_points(points)
    if verts.ndim == 2:
        return verts, np.zeros(1, dtype=np.int64), True
    if verts.ndim != 3:
        raise InputError(f"points must have shape (N, 2) or (B, N, 2), got {verts.shape}")
    b, n = verts.shape[:2]
    return verts.reshape(b * n, 2), np.arange(b) * n, False


def _output_buffer(out, shape: tuple[int, ...]) -> np.ndarray:
    """Zeroed bool view of the caller's ``out`` (bool or uint8, C-contiguous, ``shape``), or a fresh array."""
    if out is None:
        return np.zeros(shape, dtype=bool)
    if not isinstance(out, np.ndarray):
        raise InputError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape:
        raise InputError(f"out must have shape {shape}, got {out.shape}")
    if out.dtype not in (np.bool_, np.uint8):
        raise InputError(f"out must be bool or uint8, got {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InputError("out must be a writeable C-contiguous array")
    out[...] = 0
    return out.view(bool)


def raster_method(height: int, width: int) -> str:
    """The implementation ``method="auto"`` uses for masks of this size: ``"kernel"`` or ``"numpy"``.

    The compiled kernel, except where numba's JIT is disabled
    (``NUMBA_DISABLE_JIT=1``: it would run as plain Python).
    ``scripts/bench_raster.py`` prints both; the kernel was faster at every
    size measured (16 to 2048 px), one polygon at a time and in batches.

    Examples
    --------
    >>> raster_method(1024, 1024)
    'kernel'
    """
    check_size(height, width)
    return _use("auto")


def _use(method: str) -> str:
    """The implementation a ``method=`` argument names."""
    use = resolve_method(method)
    if use is None:
        raise InputError(f"method must be one of {RASTER_METHODS}, got {method!r}")
    return use


@functools.lru_cache(maxsize=64)
def _kernel_tables(count: int, per_plane: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The plane (int64) and value (uint8) of each of ``count * per_plane`` polygons, ``per_plane`` per plane.

    Values count 1, 2, ... within a plane: ones for masks (one polygon per
    plane), the organ labels for a label map (read-only).
    """
    planes = np.repeat(np.arange(count, dtype=np.int64), per_plane)
    values = np.tile(np.arange(1, per_plane + 1, dtype=np.uint8), count)
    planes.flags.writeable = values.flags.writeable = False
    return planes, values


def draw_polygons(verts: np.ndarray, first: np.ndarray, out: np.ndarray, method: str = "auto", per_plane: int = 1) -> None:
    """Draw P polygons (as :func:`rasterize_polygons` takes them) into the zeroed ``out``, by ``method``.

    ``out``: bool (P, H, W), one mask per polygon; or, with ``per_plane > 1``
    (kernel only), uint8 (P / per_plane, H, W) with each plane's polygons
    painted 1, 2, ... in order (a label map).  ``method`` is one of
    :data:`RASTER_METHODS`; the compiled kernel and the numpy reference draw
    the same pixels.
    """
    if _use(method) == "numpy":
        rasterize_polygons(verts, first, out)
        return
    planes, values = _kernel_tables(len(first) // per_plane, per_plane)
    kernels.fill.fill_polygons(
        np.ascontiguousarray(verts, dtype=np.int64), np.ascontiguousarray(first, dtype=np.int64), planes, values,
        out.view(np.uint8),
    )


def rasterize(
    points: np.ndarray | Sequence,
    height: int,
    width: int,
    *,
    out: np.ndarray | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Filled polygon mask(s), pixel-identical to the released CheXmask masks.

    Parameters
    ----------
    points:
        (N, 2) vertices of one closed polygon; or (B, N, 2), or a list of B
        (N_i, 2) arrays, for B polygons.  Pixels, x = column, y = row.  Floats
        are truncated toward zero (as the dataset pipeline did); coordinates
        may lie outside the image.
    height, width:
        Mask size in pixels (1..``MAX_SIZE``).
    out:
        Optional caller buffer to draw into, reused across calls: (H, W) for
        one polygon or (B, H, W), bool or uint8 (0 / 1), C-contiguous.  It is
        overwritten entirely and returned.
    method:
        ``"auto"`` (default: :func:`raster_method`), ``"kernel"`` (compiled
        scanline fill) or ``"numpy"`` (the vectorized reference); the same pixels.

    Returns
    -------
    bool array (H, W), or (B, H, W) for several polygons (``out`` itself when
    given): exactly ``cv2.drawContours(zeros, [points.astype(np.int32)], -1, 1,
    thickness=-1)``.

    Raises
    ------
    InputError
        Wrong shape, non-numeric, NaN/inf or out-of-range coordinates,
        non-positive or non-integer size, ``out`` of the wrong shape or dtype,
        an unknown ``method``.

    Examples
    --------
    >>> import numpy as np
    >>> rasterize(np.array([[1.0, 1.0], [3.9, 1.0], [3.9, 3.0], [1.0, 3.0]]), 5, 6).astype(int)
    array([[0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 0, 0, 0, 0, 0]])
    >>> buffer = np.empty((5, 6), dtype=np.uint8)
    >>> rasterize([[0, 0], [2, 0], [0, 2]], 5, 6, out=buffer) is buffer, int(buffer.sum())
    (True, 6)
    """
    height, width = check_size(height, width)
    use = _use(method)
    verts, first, single = polygon_batch(points)
    shape = (height, width) if single else (len(first), height, width)
    mask = _output_buffer(out, shape)
    if len(first):
        draw_polygons(verts, first, mask.reshape(len(first), height, width), use)
    return mask if out is None else out


OFF_GRID_MARGIN = 0.125
"""How far (a fraction of the grid's longer side) a node may lie beyond the grid before it is refused.

Real contours in their own frame cross the border a little (the 1024 frame is
not clipped: up to about 4 % of the side in the data at hand); landmarks of
another frame overshoot by far more (1024-frame landmarks on a 512 grid: up
to 90 %)."""


def require_on_grid(landmarks: np.ndarray, height: int, width: int, *, allow_partial: bool = False) -> None:
    """Raise :class:`InputError` when landmarks (N, 2) / (B, N, 2) do not belong to a ``height x width`` grid.

    Two checks, both in the rasterizer's coordinates (truncated vertices):
    a node may lie beyond the grid by at most :data:`OFF_GRID_MARGIN` of its
    longer side (real contours cross the border a little, landmarks of another
    frame by far more: 1024-frame landmarks drawn at 512 without ``from_size``
    would lose the left lung and half the heart), and at least one vertex of
    each landmark set must fall on the grid.  ``allow_partial=True`` keeps
    only the second check.

    Examples
    --------
    >>> require_on_grid(np.array([[10.0, 20.0], [270.0, 10.0]]), 256, 256)  # 14 px beyond: a border contour
    >>> require_on_grid(np.array([[10.0, 20.0], [600.0, 10.0]]), 256, 256)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: 1 of 2 nodes of the landmarks lie beyond the 256x256 grid by more than 32 px ...
    >>> require_on_grid(np.array([[10.0, 20.0], [600.0, 10.0]]), 256, 256, allow_partial=True)
    >>> require_on_grid(np.array([[600.0, 700.0], [900.0, 300.0]]), 256, 256, allow_partial=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: no vertex of the landmarks falls on the 256x256 grid ...
    """
    verts = truncate_points(landmarks)
    sets = verts.reshape(-1, verts.shape[-2], 2)
    which = (lambda i: f"landmark set {i}") if verts.ndim == 3 else (lambda i: "the landmarks")
    if not allow_partial:
        margin = OFF_GRID_MARGIN * max(height, width)
        beyond = np.maximum(np.maximum(-sets[..., 0], sets[..., 0] - (width - 1)), np.maximum(-sets[..., 1], sets[..., 1] - (height - 1)))
        off = (beyond > margin).sum(axis=1)
        if off.any():
            bad = int(np.flatnonzero(off)[0])
            pts = sets[bad]
            raise InputError(
                f"{int(off[bad])} of {sets.shape[1]} nodes of {which(bad)} lie beyond the {height}x{width} grid by "
                f"more than {margin:g} px (x spans {pts[:, 0].min()}..{pts[:, 0].max()}, y spans "
                f"{pts[:, 1].min()}..{pts[:, 1].max()}): their masks would be cut; if the landmarks are in another "
                "frame pass from_size=(H0, W0) to scale them, or allow_partial=True to draw what falls on the grid"
            )
    on = (sets[..., 0] >= 0) & (sets[..., 0] < width) & (sets[..., 1] >= 0) & (sets[..., 1] < height)
    on = on.any(axis=1)
    if on.all():
        return
    bad = int(np.flatnonzero(~on)[0])
    pts = sets[bad]
    raise InputError(
        f"no vertex of {which(bad)} falls on the {height}x{width} grid (x spans {pts[:, 0].min()}..{pts[:, 0].max()}, "
        f"y spans {pts[:, 1].min()}..{pts[:, 1].max()}); if they are in another frame pass from_size=(H0, W0) "
        "to scale them, or allow_empty=True to accept empty masks"
    )


def _as_landmarks(landmarks: object, from_size, height: int, width: int, allow_empty: bool, allow_partial: bool) -> np.ndarray:
    arr = as_points(landmarks, "landmarks")
    if arr.ndim not in (2, 3) or arr.shape[-2] != N_NODES:
        raise InputError(f"landmarks must have shape (120, 2) or (B, 120, 2), got {arr.shape}")
    if from_size is not None:
        arr = scale_points(arr, from_size, (height, width))
    if not allow_empty:
        require_on_grid(arr, height, width, allow_partial=allow_partial)
    return arr


def rasterize_organs(
    landmarks: np.ndarray,
    height: int,
    width: int,
    *,
    from_size: tuple[int, int] | None = None,
    allow_empty: bool = False,
    allow_partial: bool = False,
    out: np.ndarray | None = None,
    method: str = "auto",
) -> np.ndarray:
    """The three organ masks of landmarks, in :data:`~chexmask_u_tools.layout.ORGANS` order.

    Parameters
    ----------
    landmarks:
        (120, 2) or (B, 120, 2) landmark coordinates, pixels of the target frame.
    height, width:
        Mask size.
    from_size:
        If given, ``(H0, W0)`` of the frame the landmarks are in; they are first
        scaled to ``(height, width)`` with :func:`scale_points` (e.g. 1024 -> 256).
    allow_empty, allow_partial:
        By default landmarks that do not belong to the grid raise
        :class:`InputError` (:func:`require_on_grid`: a node beyond it by more
        than :data:`OFF_GRID_MARGIN` of its side, or no vertex on it; almost
        always landmarks of another frame: pass ``from_size``).
        ``allow_partial=True`` draws what falls on the grid (still refusing
        landmarks with no vertex on it); ``allow_empty=True`` checks nothing
        and returns empty masks for landmarks off the grid.
    out:
        Optional caller buffer, (3, H, W) or (B, 3, H, W), bool or uint8,
        C-contiguous; overwritten entirely and returned.
    method:
        As in :func:`rasterize`.

    Returns
    -------
    bool (3, H, W) or (B, 3, H, W): right lung, left lung, heart; each its own
    released-style mask (they may overlap).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> landmarks = np.asarray(cxu.load_sample()["landmarks"][0])  # 1024 frame
    >>> masks = rasterize_organs(landmarks, 256, 256, from_size=(1024, 1024))
    >>> masks.shape, masks.dtype, bool(masks[0].any() and masks[2].any())
    ((3, 256, 256), dtype('bool'), True)
    >>> rasterize_organs(landmarks, 256, 256)  # 1024-frame landmarks without from_size
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: 117 of 120 nodes of the landmarks lie beyond the 256x256 grid by more than 32 px ...
    """
    height, width = check_size(height, width)
    use = _use(method)
    arr = _as_landmarks(landmarks, from_size, height, width, allow_empty, allow_partial)
    verts, first = _organ_polygons(arr)
    shape = arr.shape[:-2] + (len(ORGANS), height, width)
    mask = _output_buffer(out, shape)
    draw_polygons(verts, first, mask.reshape(len(first), height, width), use)
    return mask if out is None else out


def _organ_polygons(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truncated (B * 120, 2) vertices of validated (120, 2) / (B, 120, 2) landmarks, and each organ's first vertex."""
    verts = truncate_points(landmarks).reshape(-1, 2)
    nimg = len(verts) // N_NODES
    return verts, (np.arange(nimg)[:, None] * N_NODES + _ORGAN_STARTS).reshape(-1)


_ORGAN_STARTS = np.array([ORGAN_SLICES[o].start for o in ORGANS])


def label_map(
    landmarks: np.ndarray,
    height: int,
    width: int,
    *,
    from_size: tuple[int, int] | None = None,
    allow_empty: bool = False,
    allow_partial: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """uint8 label image: 0 background, 1 right lung, 2 left lung, 3 heart.

    Organs are painted in that order, so where masks overlap the later one
    wins: the heart is drawn over both lungs (as in the released figures), and
    the left lung over the right lung.  Shapes: (120, 2) -> (H, W); (B, 120, 2)
    -> (B, H, W).  ``from_size``, ``allow_empty``, ``allow_partial`` and
    ``method`` as in :func:`rasterize_organs` (the kernel paints the labels
    directly, numpy paints the organ masks).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> landmarks = np.asarray(cxu.load_sample()["landmarks"][0])
    >>> labels = label_map(landmarks, 128, 128, from_size=(1024, 1024))
    >>> labels.shape, labels.dtype, sorted(np.unique(labels).tolist())
    ((128, 128), dtype('uint8'), [0, 1, 2, 3])
    """
    height, width = check_size(height, width)
    if _use(method) == "kernel":
        arr = _as_landmarks(landmarks, from_size, height, width, allow_empty, allow_partial)
        verts, first = _organ_polygons(arr)
        labels = np.zeros((len(first) // len(ORGANS), height, width), dtype=np.uint8)
        draw_polygons(verts, first, labels, "kernel", per_plane=len(ORGANS))
        return labels[0] if arr.ndim == 2 else labels
    masks = rasterize_organs(
        landmarks, height, width, from_size=from_size, allow_empty=allow_empty, allow_partial=allow_partial,
        method="numpy",
    )
    organ_axis = masks.ndim - 3
    labels = np.zeros(masks.shape[:organ_axis] + masks.shape[organ_axis + 1 :], dtype=np.uint8)
    for k in range(len(ORGANS)):
        labels[np.take(masks, k, axis=organ_axis)] = k + 1
    return labels
