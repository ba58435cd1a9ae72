"""Batched soft (uncertainty) masks in torch, on CPU or CUDA, equal to :mod:`~chexmask_u_tools.masks.soft`.

The per-node model (truncation moments, normals, corner flags, band reach) is
the numpy one (:func:`chexmask_u_tools.masks.soft.contour_model`, a few
hundred numbers per contour); the per-pixel work runs in torch for all
contours of a batch at once:

* the inside test of the shifted mean polygon (crossings per row scattered
  into a count image, parity of its cumulative sum: the same even-odd,
  half-open rule as numpy's scanline fill);
* the nearest segment of every pixel in the blocks near the contour (the same
  ``SEARCH_BLOCK`` blocks and float32 operations as numpy, so the same segment
  wins, ties going to the last one);
* the closed form there, ``P = Phi(z)`` and, near sharp convex vertices, the
  two-edge probability.

Pixels beyond the band are filled from the inside test, as in numpy.  The
result equals numpy's :func:`~chexmask_u_tools.masks.soft.soft_mask` within
1e-5 (the CDF's float32 ``exp`` may differ by an ulp).

This module imports torch; ``chexmask_u_tools.masks`` does not import it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.masks.raster import as_points, check_size, rasterize, require_on_grid
from chexmask_u_tools.masks.soft import BAND_Z, SEARCH_BLOCK, as_std, contour_model, points_in_frame

__all__ = ["soft_mask_organs_torch", "soft_mask_torch"]

# Pixels per pass of the nearest-segment loop (times the batch's contours):
# bounds the float32 temporaries to a few hundred MB.
_PASS_PIXELS = 1 << 22
# Cells (contours x segments x blocks) per chunk of the block test: float32 temporaries of tens of MB.
_BLOCK_TEST_CELLS = 1 << 23


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex():
            raise InputError(f"expected a real numeric tensor, got {x.dtype}")
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x)


def _device(device, *inputs) -> torch.device:
    if device is not None:
        return torch.device(device)
    for x in inputs:
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")


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
    pts = as_points(_to_numpy(points))
    sd_in = _to_numpy(std)
    single = pts.ndim == 2
    if pts.ndim not in (2, 3):
        raise InputError(f"points must have shape (N, 2) or (B, N, 2), got {pts.shape}")
    batch_pts = pts[None] if single else pts
    batch_sd = sd_in[None] if single else sd_in
    if len(batch_sd) != len(batch_pts):
        raise InputError(f"std must have one entry per contour: {len(batch_sd)} for {len(batch_pts)} contours")
    contours = [points_in_frame(p, s, height, width, from_size) for p, s in zip(batch_pts, batch_sd)]
    out = torch.empty((len(contours), height, width), dtype=torch.float32, device=dev)
    _soft_batch(out, contours, band)
    return out[0] if single else out


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
) -> torch.Tensor:
    """Soft masks of the three organs of many landmark sets: float32 (B, 3, H, W) ((3, H, W) for one set).

    ``landmarks`` (120, 2) or (B, 120, 2); ``std`` (120,) / (120, 2) or
    (B, 120) / (B, 120, 2).  Same masks as
    :func:`~chexmask_u_tools.masks.soft.soft_mask_organs` (within 1e-5),
    computed for every organ of the batch at once on ``device`` (default: the
    landmarks' device).  ``from_size``, ``band`` and ``allow_empty`` as there.

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
    lm = as_points(_to_numpy(landmarks), "landmarks")
    if lm.ndim not in (2, 3) or lm.shape[-2:] != (N_NODES, 2):
        raise InputError(f"landmarks must have shape (120, 2) or (B, 120, 2), got {lm.shape}")
    single = lm.ndim == 2
    batch_lm = lm[None] if single else lm
    sd_in = _to_numpy(std)
    batch_sd = sd_in[None] if single else sd_in
    if len(batch_sd) != len(batch_lm):
        raise InputError(f"std must have one entry per landmark set: {len(batch_sd)} for {len(batch_lm)}")
    framed = [points_in_frame(p, as_std(s, N_NODES), height, width, from_size) for p, s in zip(batch_lm, batch_sd)]
    if not allow_empty:
        require_on_grid(np.stack([p for p, _ in framed]), height, width)
    out = torch.empty((len(framed), len(ORGANS), height, width), dtype=torch.float32, device=dev)
    for k, organ in enumerate(ORGANS):
        sl = ORGAN_SLICES[organ]
        _soft_batch(out[:, k], [(p[sl], s[sl]) for p, s in framed], band)
    return out[0] if single else out


def _soft_batch(out: torch.Tensor, contours: list, band: bool) -> None:
    """Fill float32 (B, H, W) ``out`` with the soft masks of B validated (points, std) pairs of equal length."""
    nb, height, width = out.shape
    dev = out.device
    hard = [k for k, (_, s) in enumerate(contours) if not s.any()]
    if hard:  # all stds zero: exactly the hard mask, as in numpy
        masks = np.stack([rasterize(contours[k][0], height, width) for k in hard])
        out[hard] = torch.from_numpy(masks).to(dev, torch.float32)
    soft = [k for k in range(nb) if k not in set(hard)]
    if not soft:
        return
    models = [contour_model(contours[k][0], contours[k][1], height, width, BAND_Z if band else None) for k in soft]
    if len({len(m.a) for m in models}) > 1:
        raise InputError("a batch of contours must have the same number of nodes")
    const = _Constants(models, dev)
    result = _inside(const.a, height, width).to(torch.float32)
    _closed_form(result, const, height, width)
    out[soft] = result


class _Constants:
    """The numpy :class:`~chexmask_u_tools.masks.soft.ContourModel` of B contours, stacked on the device."""

    def __init__(self, models: list, dev: torch.device) -> None:
        def stack(get, dtype=torch.float64):
            return torch.as_tensor(np.stack([get(m) for m in models]), dtype=dtype, device=dev)

        self.a = stack(lambda m: m.a)  # (B, N, 2)
        self.v = stack(lambda m: m.v)
        self.seg_n = stack(lambda m: m.seg_n)
        self.var32 = stack(lambda m: m.var, torch.float32)
        self.convex = stack(lambda m: m.convex, torch.bool)
        self.nxt = torch.as_tensor(models[0].nxt, device=dev)
        inv_len2 = [1.0 / np.where(m.length2 > 0, m.length2, 1.0) for m in models]
        self.inv_len2_32 = torch.as_tensor(np.stack(inv_len2), dtype=torch.float32, device=dev)
        # per segment: float64 start; float32 direction and 1 / length^2, as numpy's pixel step uses them
        self.start = self.a
        table = [np.column_stack([m.v, inv]).astype(np.float32) for m, inv in zip(models, inv_len2)]
        self.direction = torch.as_tensor(np.stack(table), device=dev)  # (B, N, 3)
        self.reach = stack(lambda m: m.reach)
        self.reach2_32 = stack(lambda m: m.reach**2, torch.float32)
        self.corner_reach32 = stack(lambda m: m.corner_reach, torch.float32)
        self.line = [stack(lambda m, i=i: m.line[0][i]) for i in range(10)]
        self.shared = stack(lambda m: m.line[1])


def _inside(poly: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bool (B, H, W): pixel centres inside the float polygons (even-odd, half-open rows), as numpy's fill."""
    nb = poly.shape[0]
    a = poly
    b = torch.roll(poly, -1, dims=1)
    ay, by, ax, bx = a[..., 1:2], b[..., 1:2], a[..., 0:1], b[..., 0:1]
    ylo = torch.minimum(ay, by).transpose(1, 2)  # (B, 1, N)
    yhi = torch.maximum(ay, by).transpose(1, 2)
    rows = torch.arange(height, device=poly.device, dtype=torch.float64)[None, :, None]  # (1, H, 1)
    active = (rows >= ylo) & (rows < yhi)  # integer rows: ceil(ylo) <= r < ceil(yhi)
    dy = torch.where(active, (by - ay).transpose(1, 2), torch.ones_like(ylo))
    x = ax.transpose(1, 2) + (rows - ay.transpose(1, 2)) * (bx - ax).transpose(1, 2) / dy
    x = torch.clamp(x, -1.0, width + 1.0)
    # a pixel c is inside when an odd number of crossings has ceil(x) <= c
    col = torch.where(active, torch.ceil(x), torch.full_like(x, width)).clamp_(0, width).to(torch.int64)
    out = torch.empty((nb, height, width), dtype=torch.bool, device=poly.device)
    per = max(1, (1 << 25) // (height * (width + 1)))
    for b0 in range(0, nb, per):
        chunk = col[b0 : b0 + per]
        counts = torch.zeros(chunk.shape[:2] + (width + 1,), dtype=torch.int32, device=poly.device)
        counts.scatter_add_(2, chunk, torch.ones_like(chunk, dtype=torch.int32))
        out[b0 : b0 + per] = (torch.cumsum(counts, dim=2, dtype=torch.int32)[..., :width] & 1).bool()
    return out


def _band_pixels(const: _Constants, height: int, width: int):
    """(B, block origin x, block origin y) of the blocks any segment's reach may cover, as numpy's block test.

    All contours at once (in chunks bounding the (contours, segments, blocks)
    temporaries), so that a GPU batch costs a few kernel launches, not a few
    per contour; the same float32 operations as numpy's block test.
    """
    dev = const.a.device
    f32 = torch.float32
    nbx = -(-width // SEARCH_BLOCK)
    nby = -(-height // SEARCH_BLOCK)
    centre = (SEARCH_BLOCK - 1) / 2.0
    half = centre * math.sqrt(2.0)
    gx = (torch.arange(nbx, device=dev) * SEARCH_BLOCK).repeat(nby)
    gy = (torch.arange(nby, device=dev) * SEARCH_BLOCK).repeat_interleave(nbx)
    cx = (gx + centre).to(f32)[None, None]  # (1, 1, G)
    cy = (gy + centre).to(f32)[None, None]
    nb, n = const.a.shape[:2]
    # generous slack: this only selects blocks, the pixel test decides; compared in float32, as a Python float would be
    ends = torch.cat([const.a, const.a + const.v], dim=1)
    threshold = (half + (1.0 + 1e-5 * ends.abs().amax(dim=(1, 2)))).to(f32)  # (B,)
    per = max(1, _BLOCK_TEST_CELLS // (n * len(gx)))
    keep = []
    for b0 in range(0, nb, per):
        a, v = const.a[b0 : b0 + per].to(f32), const.v[b0 : b0 + per].to(f32)  # (b, N, 2)
        inv = const.inv_len2_32[b0 : b0 + per][..., None]
        rx = cx - a[..., :1]  # (b, N, G)
        ry = cy - a[..., 1:]
        vx, vy = v[..., :1], v[..., 1:]
        t = torch.clamp((rx * vx + ry * vy) * inv, 0.0, 1.0)
        dist = torch.sqrt((rx - t * vx) ** 2 + (ry - t * vy) ** 2)
        gap = (dist - const.reach[b0 : b0 + per].to(f32)[..., None]).amin(dim=1)  # (b, G)
        rows, blocks = (gap <= threshold[b0 : b0 + per, None]).nonzero(as_tuple=True)
        keep.append(torch.stack([rows + b0, gx[blocks], gy[blocks]], dim=1))
    return torch.cat(keep)


def _closed_form(out: torch.Tensor, const: _Constants, height: int, width: int) -> None:
    """Overwrite ``out`` (B, H, W), holding the inside test, with the closed form on the band pixels."""
    dev = out.device
    f32 = torch.float32
    blocks = _band_pixels(const, height, width)
    cells = torch.arange(SEARCH_BLOCK * SEARCH_BLOCK, device=dev)
    col, row = cells % SEARCH_BLOCK, cells // SEARCH_BLOCK
    per_pass = max(1, _PASS_PIXELS // len(cells))
    for k0 in range(0, len(blocks), per_pass):
        blk = blocks[k0 : k0 + per_pass]
        bidx = blk[:, 0:1].expand(-1, len(cells)).reshape(-1)
        gx = blk[:, 1:2].expand(-1, len(cells)).reshape(-1)
        gy = blk[:, 2:3].expand(-1, len(cells)).reshape(-1)
        cx = col.repeat(len(blk))
        cy = row.repeat(len(blk))
        ok = (gx + cx < width) & (gy + cy < height)
        bidx, gx, gy, cx, cy = bidx[ok], gx[ok], gy[ok], cx[ok], cy[ok]
        _pixels(out, const, bidx, gx, gy, cx.to(f32), cy.to(f32), width)


def _offsets(start: torch.Tensor, direction: torch.Tensor, gx, gy, cxf, cyf):
    """float32 (t, offset x, offset y, d^2) of pixels to segments, in numpy's exact operation order.

    Per pixel, its segment's float64 (P, 2) ``start`` and float32 (P, 3)
    ``direction`` x, y and inverse squared length.
    """
    f32 = torch.float32
    vx, vy, inv = direction[:, 0], direction[:, 1], direction[:, 2]
    rx = (gx - start[:, 0]).to(f32) + cxf
    ry = (gy - start[:, 1]).to(f32) + cyf
    t = rx * vx
    t = t + ry * vy
    t = t * inv
    t = torch.clamp(t, 0.0, 1.0)
    rx = rx - t * vx
    ry = ry - t * vy
    d2 = rx * rx
    d2 = d2 + ry * ry
    return t, rx, ry, d2


def _pixels(out, const: _Constants, bidx, gx, gy, cxf, cyf, width: int) -> None:
    """Nearest segment (last among exact ties, within its reach) and the closed form of the given pixels."""
    f32 = torch.float32
    n = const.a.shape[1]
    best = torch.full(bidx.shape, math.inf, dtype=f32, device=out.device)
    sel = torch.full(bidx.shape, -1, dtype=torch.int64, device=out.device)
    for j in range(n):
        start = const.start[:, j].index_select(0, bidx)
        d2 = _offsets(start, const.direction[:, j].index_select(0, bidx), gx, gy, cxf, cyf)[3]
        within = d2 <= const.reach2_32[:, j].index_select(0, bidx)
        pick = torch.where(within, j, -1)
        sel = torch.where(d2 < best, pick, torch.where((d2 == best) & within, j, sel))
        best = torch.minimum(best, d2)
    hit = (sel >= 0).nonzero()[:, 0]
    if not len(hit):
        return
    bidx, seg = bidx[hit], sel[hit]
    qx, qy = gx[hit] + cxf[hit].long(), gy[hit] + cyf[hit].long()
    t, ox, oy, d2 = _offsets(const.start[bidx, seg], const.direction[bidx, seg], gx[hit], gy[hit], cxf[hit], cyf[hit])
    flat = (qy * width + qx)
    ins = out.view(out.shape[0], -1)[bidx, flat] > 0.5

    dist = torch.sqrt(d2)
    local = dist <= const.corner_reach32[bidx, seg]
    on = dist < 1e-6
    safe = torch.where(on, torch.ones_like(dist), dist)
    nx, ny = ox / safe, oy / safe
    nx = torch.where(ins, -nx, nx)
    ny = torch.where(ins, -ny, ny)
    seg_n = const.seg_n[bidx, seg].to(f32)
    nx = torch.where(on, seg_n[:, 0], nx)
    ny = torch.where(on, seg_n[:, 1], ny)
    after = const.nxt[seg]
    var_a, var_b = const.var32[bidx, seg], const.var32[bidx, after]
    nx2, ny2 = nx * nx, ny * ny
    sigma2 = (nx2 * var_a[:, 0] + ny2 * var_a[:, 1]) * ((1 - t) * (1 - t))
    sigma2 = sigma2 + (t * t) * (nx2 * var_b[:, 0] + ny2 * var_b[:, 1])
    delta = torch.maximum(nx.abs(), ny.abs()) * 0.5
    margin = torch.where(ins, dist, -dist) + delta
    certain = sigma2 <= 0
    z = margin / torch.sqrt(sigma2)
    z = torch.where(certain, torch.where(margin >= 0, math.inf, -math.inf), z)
    p = _norm_cdf(z)

    nearer_start = t < 0.5
    corner = torch.where(nearer_start, const.convex[bidx, seg], const.convex[bidx, after]) & ~certain & local
    idx = corner.nonzero()[:, 0]
    if len(idx):
        j = seg[idx]
        start = nearer_start[idx]
        vertex = torch.where(start, j, after[idx])
        other = torch.where(start, (j - 1) % n, after[idx])
        both = _corner_probability(const, bidx[idx], qx[idx].double(), qy[idx].double(), j, other, vertex)
        p[idx] = torch.minimum(p[idx].double(), both).to(f32)
    out.view(out.shape[0], -1)[bidx, flat] = p


def _norm_cdf(z: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF, the same Abramowitz & Stegun 7.1.26 formula as numpy's, in z's dtype."""
    x = z.abs() / math.sqrt(2.0)
    t = 1.0 / (x * 0.3275911 + 1.0)
    poly = t * 1.061405429
    for coef in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly = (poly + coef) * t
    poly = poly * torch.exp(-(x * x)) * 0.5
    return torch.where(z >= 0, 1.0 - poly, poly)


def _line_z(const: _Constants, bidx, qx, qy, s, vertex):
    """Standardized margin to the LINE of segments ``s``, its std and the weight of ``vertex`` (float64)."""
    ax, ay, vx, vy, length2, nx, ny, half, var_start, var_end = (c[bidx, s] for c in const.line)
    rx = qx - ax
    ry = qy - ay
    t = torch.clamp((rx * vx + ry * vy) / length2, 0.0, 1.0)
    margin = half - (rx * nx + ry * ny)
    sigma = torch.sqrt(torch.clamp((1 - t) ** 2 * var_start + t * t * var_end, min=1e-12))
    weight = torch.where(vertex == s, 1 - t, t)
    return margin / sigma, sigma, weight


def _corner_probability(const: _Constants, bidx, qx, qy, j, k, vertex) -> torch.Tensor:
    """P(inside the lines of segments j and k), the bivariate normal of numpy's corner model (float64)."""
    zj, sj, wj = _line_z(const, bidx, qx, qy, j, vertex)
    zk, sk, wk = _line_z(const, bidx, qx, qy, k, vertex)
    cov = wj * wk * const.shared[bidx, vertex]
    rho = torch.clamp(cov / torch.clamp(sj * sk, min=1e-12), -0.999, 0.999)
    lo = torch.clamp(torch.minimum(zj, zk), -8.0, 8.0)
    hi = torch.clamp(torch.maximum(zj, zk), -8.0, 8.0)
    cdf = torch.clamp(_norm_cdf(lo), min=1e-300)
    lam = torch.exp(-0.5 * lo * lo) / math.sqrt(2 * math.pi) / cdf
    var = torch.clamp(1.0 - rho * rho * lam * (lam + lo), min=1e-9)
    return cdf * _norm_cdf((hi + rho * lam) / torch.sqrt(var))
