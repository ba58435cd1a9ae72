from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import ORGAN_SLICES
from chexmask_u_tools.masks.raster import rasterize
from chexmask_u_tools.masks.soft import norm_cdf as _norm_cdf, norm_ppf_clip as _norm_ppf_clip, band_mask, pixel_weight_map, sample_masks, sample_probability, soft_mask, soft_mask_organs, uncertainty_band


def _circle(cx, cy, r, n=40):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[cx + r * np.cos(a), cy + r * np.sin(a)]


def test_std_zero_is_exactly_the_hard_mask():
    pts = _circle(30.3, 25.8, 17.2, 23)
    for std in (np.zeros(23), np.zeros((23, 2))):
        soft = soft_mask(pts, std, 60, 64)
        assert soft.dtype == np.float32
        np.testing.assert_array_equal(soft, rasterize(pts, 60, 64).astype(np.float32))
    np.testing.assert_array_equal(sample_masks(pts, np.zeros(23), 60, 64, 3, seed=0)[2], rasterize(pts, 60, 64))


def _contours(real_tables):
    """The organ contours of the first real row, in the 1024 frame whatever the file's frame."""
    row = real_tables[0][1].row(0, named=True)
    lm = np.asarray(row["landmarks"], dtype=np.float64) * [1024 / row["width"], 1024 / row["height"]]
    return [lm[ORGAN_SLICES[o]] for o in ("right_lung", "left_lung", "heart")]


def test_closed_form_matches_monte_carlo_on_real_contours(real_tables):
    rng = np.random.default_rng(2024)
    contours = _contours(real_tables)
    stds = [
        rng.uniform(2, 8, len(contours[0])),  # per-node sigma
        rng.uniform(2, 8, (len(contours[1]), 2)),  # per-axis std
        np.full(len(contours[2]), 6.5),
    ]
    for pts, std in zip(contours, stds):
        # same truncation on a tight canvas: shift by whole pixels, keep coordinates positive
        margin = 52
        shifted = pts - np.floor(pts.min(axis=0)) + margin
        h = int(shifted[:, 1].max()) + margin
        w = int(shifted[:, 0].max()) + margin
        soft = soft_mask(shifted, std, h, w)
        mc = sample_probability(shifted, std, h, w, 2000, seed=7)
        band = (mc >= 0.02) & (mc <= 0.98)
        err = np.abs(soft - mc)[band]
        assert band.sum() > 5000
        assert err.mean() <= 0.02, err.mean()
        assert np.percentile(err, 99) <= 0.10, np.percentile(err, 99)
        # far from the contour the probability is exactly certain
        assert soft[0, 0] == 0.0


def test_soft_mask_properties():
    pts = _circle(50, 50, 30)
    soft = soft_mask(pts, np.full(40, 3.0), 100, 100)
    assert soft.min() >= 0 and soft.max() <= 1
    assert soft[50, 50] == 1.0 and soft[2, 2] == 0.0
    # probability falls along a ray from the centre through the contour
    ray = soft[50, 50:100]
    assert np.all(np.diff(ray) <= 1e-6)
    # the 0.5 level sits near the contour, shifted by the mask convention (< 1 px)
    crossing = 50 + np.argmin(np.abs(ray - 0.5))
    assert abs(crossing - 80) <= 1
    wider = soft_mask(pts, np.full(40, 6.0), 100, 100)
    assert ((wider > 0.01) & (wider < 0.99)).sum() > ((soft > 0.01) & (soft < 0.99)).sum()


def test_soft_mask_organs_shape():
    lm = np.concatenate([_circle(30, 40, 15, 44), _circle(70, 40, 15, 50), _circle(50, 60, 10, 26)])
    out = soft_mask_organs(lm, np.full((120, 2), 2.0), 100, 100)
    assert out.shape == (3, 100, 100) and out.dtype == np.float32
    np.testing.assert_array_equal(out[2], soft_mask(lm[94:], np.full((26, 2), 2.0), 100, 100))


def test_sampling_is_reproducible_and_consistent():
    pts = _circle(20, 20, 10, 12)
    a = sample_masks(pts, np.full(12, 2.0), 40, 40, 16, seed=3)
    b = sample_masks(pts, np.full(12, 2.0), 40, 40, 16, seed=3)
    assert a.shape == (16, 40, 40) and a.dtype == bool
    np.testing.assert_array_equal(a, b)
    p = sample_probability(pts, np.full(12, 2.0), 40, 40, 16, seed=3, chunk=5)
    np.testing.assert_allclose(p, a.mean(axis=0), atol=1e-6)


def test_band_mask_and_weights():
    pts = _circle(50, 50, 30)
    std = np.full(40, 3.0)
    soft = soft_mask(pts, std, 100, 100)
    band = band_mask(pts, std, 100, 100, k=2.0)
    lo, hi = _norm_cdf(np.array(-2.0)), _norm_cdf(np.array(2.0))
    np.testing.assert_array_equal(band, (soft > lo + 1e-6) & (soft < hi - 1e-6))
    assert band_mask(pts, std, 100, 100, k=3.0).sum() > band.sum()
    assert not band_mask(pts, np.zeros(40), 100, 100).any()
    weights = pixel_weight_map(pts, std, 100, 100, floor=0.2)
    np.testing.assert_allclose(weights, 0.2 + 0.8 * np.abs(2 * soft - 1), atol=1e-6)
    assert weights[50, 50] == pytest.approx(1.0) and weights.min() >= 0.2


def test_uncertainty_band_geometry():
    pts = _circle(100, 100, 50, 60)
    inner, outer = uncertainty_band(pts, np.full(60, 4.0), k=2.0)
    mean = shapely.Polygon(pts)
    assert inner.within(mean.buffer(1e-6)) and mean.within(outer.buffer(1e-6))
    # band area ~ perimeter * 2 k sigma
    band_area = outer.area - inner.area
    assert band_area == pytest.approx(mean.length * 2 * 2.0 * 4.0, rel=0.05)
    # per-axis std: only x uncertainty -> band wide at left/right, thin at top/bottom
    inner_x, outer_x = uncertainty_band(pts, np.c_[np.full(60, 4.0), np.zeros(60)], k=1.0)
    assert outer_x.bounds[2] == pytest.approx(154, abs=0.1) and outer_x.bounds[3] == pytest.approx(150, abs=0.5)


def test_normal_helpers():
    z = np.linspace(-7, 7, 57)
    exact = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z])
    np.testing.assert_allclose(_norm_cdf(z), exact, atol=2e-7)
    p = np.array([1e-9, 0.01, 0.3, 0.5, 0.8, 0.999])
    np.testing.assert_allclose(_norm_cdf(_norm_ppf_clip(p)), p, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    "call",
    [
        lambda: soft_mask(np.zeros((5, 2)), np.ones(4), 10, 10),
        lambda: soft_mask(np.zeros((5, 2)), np.ones((5, 3)), 10, 10),
        lambda: soft_mask(np.zeros((5, 2)), -np.ones(5), 10, 10),
        lambda: soft_mask(np.zeros((5, 2)), np.full(5, np.nan), 10, 10),
        lambda: soft_mask(np.full((5, 2), np.nan), np.ones(5), 10, 10),
        lambda: soft_mask(np.zeros((2, 5, 2)), np.ones(5), 10, 10),
        lambda: soft_mask(np.zeros((5, 2)), np.ones(5), 0, 10),
        lambda: sample_masks(np.zeros((5, 2)), np.ones(5), 10, 10, 0),
        lambda: uncertainty_band(np.zeros((5, 2)), np.ones(5), k=-1),
        lambda: pixel_weight_map(np.zeros((5, 2)), np.ones(5), 10, 10, floor=2),
        lambda: soft_mask_organs(np.zeros((120, 2)), np.ones(119), 10, 10),
    ],
)
def test_bad_input(call):
    with pytest.raises(InputError):
        call()


@pytest.mark.parametrize("chunk", [8, 1024])
def test_nearest_segment_search_matches_brute_force(monkeypatch, chunk):
    # The blocked candidate search must agree with measuring every pixel
    # against every segment: same band, nearest distances, listed segments;
    # also when the blocks are processed in many small passes.
    from chexmask_u_tools.masks import soft
    from chexmask_u_tools.masks.soft import nearest_segments as _nearest_segments

    monkeypatch.setattr(soft, "_CHUNK", chunk)
    rng = np.random.default_rng(11)
    h, w = 70, 90
    ys, xs = np.mgrid[0:h, 0:w]
    q = np.c_[xs.ravel(), ys.ravel()].astype(np.float64)
    for _ in range(6):
        n = int(rng.integers(3, 25))
        angle = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(10, 45, n)
        pts = np.c_[45 + radius * np.cos(angle), 35 + radius * np.sin(angle)] + rng.normal(0, 0.3, (n, 2))
        v = np.roll(pts, -1, axis=0) - pts
        length2 = np.einsum("ij,ij->i", v, v)
        reach = rng.uniform(2, 15, n)
        passes = list(_nearest_segments(pts, v, length2, reach, h, w))
        assert len(passes) > (5 if chunk == 8 else 0)
        seg, t, ox, oy, d2, flat = (np.concatenate(col) for col in zip(*passes))
        rel = q[:, None, :] - pts[None]
        tt = np.clip(np.einsum("pij,ij->pi", rel, v) / length2, 0, 1)
        dist2 = ((rel - tt[..., None] * v) ** 2).sum(axis=-1)
        near = dist2.min(axis=1)
        np.testing.assert_allclose(d2, near[flat], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(dist2[flat, seg], near[flat], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(ox**2 + oy**2, d2, rtol=1e-4, atol=1e-3)
        assert (d2 <= reach[seg] ** 2 + 1e-3).all()
        # every pixel clearly within the reach of all its (near-)nearest segments is in the band
        tied_reach = np.where(dist2 <= near[:, None] + 1e-2, reach, np.inf).min(axis=1)
        clear = near < (tied_reach - 0.01) ** 2
        assert set(np.flatnonzero(clear)) <= set(flat.tolist())


def test_soft_mask_does_not_depend_on_pass_size(monkeypatch):
    from chexmask_u_tools.masks import soft

    rng = np.random.default_rng(5)
    pts = _circle(60.4, 47.9, 35.3, 31) + rng.normal(0, 1.5, (31, 2))
    std = rng.uniform(0.5, 6.0, (31, 2))
    ref, ref_band = soft_mask(pts, std, 100, 120), band_mask(pts, std, 100, 120, k=1.5)
    monkeypatch.setattr(soft, "_CHUNK", 8)
    np.testing.assert_array_equal(soft_mask(pts, std, 100, 120), ref)
    np.testing.assert_array_equal(band_mask(pts, std, 100, 120, k=1.5), ref_band)


def _star_polygons(seed, count, size=(90, 100)):
    """Random star-shaped contours (some crossing the border) with per-axis std 0..10 px, some nodes exactly 0."""
    rng = np.random.default_rng(seed)
    h, w = size
    for _ in range(count):
        n = int(rng.integers(3, 40))
        angle = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(5, 55, n)
        centre = rng.uniform(0.2, 0.8, 2) * (w, h)
        pts = centre + np.c_[radius * np.cos(angle), radius * np.sin(angle)] + rng.normal(0, 1, (n, 2))
        std = rng.uniform(0, 10, (n, 2)) * (rng.uniform(size=(n, 1)) < 0.8)
        yield pts, std


def test_narrow_band_equals_whole_grid_on_random_contours():
    h, w = 90, 100
    for pts, std in _star_polygons(21, 40, (h, w)):
        reference = soft_mask(pts, std, h, w, band=False)
        np.testing.assert_allclose(soft_mask(pts, std, h, w), reference, rtol=0, atol=1e-6)
        for k in (1.0, 2.5):
            np.testing.assert_array_equal(band_mask(pts, std, h, w, k=k), band_mask(pts, std, h, w, k=k, band=False))
        np.testing.assert_allclose(
            pixel_weight_map(pts, std, h, w), pixel_weight_map(pts, std, h, w, band=False), rtol=0, atol=2e-6
        )


def test_narrow_band_equals_whole_grid_on_real_contours(real_tables):
    rng = np.random.default_rng(3)
    for pts in _contours(real_tables):
        small = pts / 4  # the 256 frame keeps the whole-grid reference quick
        for std in (rng.uniform(0.5, 2, len(small)), rng.uniform(2, 8, (len(small), 2)), np.full(len(small), 10.0)):
            reference = soft_mask(small, std, 256, 256, band=False)
            banded = soft_mask(small, std, 256, 256)
            np.testing.assert_allclose(banded, reference, rtol=0, atol=1e-6)
            # the band really is narrow: most of the grid comes from the inside test
            assert 0 < ((banded > 0) & (banded < 1)).mean() < 0.6
            np.testing.assert_array_equal(band_mask(small, std, 256, 256), band_mask(small, std, 256, 256, band=False))


def test_zero_std_is_the_hard_mask_on_both_paths():
    for pts, std in _star_polygons(4, 10):
        hard = rasterize(pts, 90, 100).astype(np.float32)
        for band in (True, False):
            np.testing.assert_array_equal(soft_mask(pts, np.zeros_like(std), 90, 100, band=band), hard)
            assert not band_mask(pts, np.zeros(len(pts)), 90, 100, band=band).any()


def test_band_mask_wider_than_the_soft_cut():
    # k above BAND_Z still finds every pixel within k sigma (the band follows k)
    from chexmask_u_tools.masks.soft import BAND_Z

    pts = _circle(50, 50, 25)
    std = np.full(40, 2.0)
    k = BAND_Z + 1.5
    np.testing.assert_array_equal(band_mask(pts, std, 100, 100, k=k), band_mask(pts, std, 100, 100, k=k, band=False))
    assert band_mask(pts, std, 100, 100, k=k).sum() > band_mask(pts, std, 100, 100, k=BAND_Z).sum()


def test_soft_masks_from_size_scale_points_and_std():
    pts = _circle(400.0, 520.0, 180.0, 30)
    std = np.c_[np.full(30, 8.0), np.full(30, 4.0)]
    # square frame: points and std scale by the same factor
    np.testing.assert_array_equal(
        soft_mask(pts, std, 256, 256, from_size=(1024, 1024)), soft_mask(pts / 4, std / 4, 256, 256)
    )
    # non-square target: each axis (and its std) with its own factor; per-node sigma becomes per-axis
    factor = np.array([128 / 1024, 256 / 1024])
    np.testing.assert_array_equal(
        soft_mask(pts, np.full(30, 8.0), 256, 128, from_size=(1024, 1024)),
        soft_mask(pts * factor, np.full((30, 2), 8.0) * factor, 256, 128),
    )
    np.testing.assert_array_equal(
        band_mask(pts, std, 256, 256, from_size=(1024, 1024)), band_mask(pts / 4, std / 4, 256, 256)
    )
    np.testing.assert_array_equal(
        pixel_weight_map(pts, std, 256, 256, from_size=(1024, 1024)), pixel_weight_map(pts / 4, std / 4, 256, 256)
    )


def test_soft_mask_organs_from_size_and_off_grid_landmarks():
    lm = np.concatenate([_circle(300, 400, 150, 44), _circle(700, 400, 150, 50), _circle(500, 600, 100, 26)])
    std = np.full((120, 2), 8.0)
    small = soft_mask_organs(lm, std, 256, 256, from_size=(1024, 1024))
    np.testing.assert_array_equal(small, soft_mask_organs(lm / 4, std / 4, 256, 256))
    # 1024-frame landmarks drawn at 64 without from_size: no vertex on the grid
    with pytest.raises(InputError, match="from_size"):
        soft_mask_organs(lm, std, 64, 64)
    empty = soft_mask_organs(lm, std, 64, 64, allow_empty=True)
    assert empty.shape == (3, 64, 64) and not empty.any()
