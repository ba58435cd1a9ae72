from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu  # noqa: E402
from chexmask_u_tools.errors import InputError  # noqa: E402
from chexmask_u_tools.layout import ORGAN_SIZES, ORGAN_SLICES, ORGANS  # noqa: E402
from chexmask_u_tools.masks.soft import BAND_Z, band_z, contour_model, soft_mask, soft_mask_organs  # noqa: E402
from chexmask_u_tools.masks.soft_torch import (  # noqa: E402
    contour_model_torch,
    soft_mask_organs_torch,
    soft_mask_torch,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _stars(seed, count, n, size):
    """Random star-shaped contours of n nodes (some crossing the border), per-axis std 0..10 px."""
    rng = np.random.default_rng(seed)
    h, w = size
    angle = np.sort(rng.uniform(0, 2 * np.pi, (count, n)), axis=1)
    radius = rng.uniform(5, 40, (count, n))
    centre = rng.uniform(0.2, 0.8, (count, 1, 2)) * (w, h)
    pts = centre + np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    std = rng.uniform(0, 10, (count, n, 2)) * (rng.uniform(size=(count, n, 1)) < 0.8)
    std[0] = 0.0  # one contour with every std zero: the hard mask
    return pts, std


@pytest.mark.parametrize("device", DEVICES)
def test_soft_mask_torch_equals_numpy_on_random_contours(device):
    h, w = 70, 90
    pts, std = _stars(5, 6, 17, (h, w))
    for band in (True, False):
        got = soft_mask_torch(torch.from_numpy(pts).to(device), torch.from_numpy(std).to(device), h, w, band=band)
        assert got.dtype == torch.float32 and got.shape == (6, h, w) and got.device.type == device
        expected = np.stack([soft_mask(p, s, h, w, band=band) for p, s in zip(pts, std)])
        np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=0, atol=1e-5)
    # one contour, arrays in: a CPU (H, W) tensor
    single = soft_mask_torch(pts[1], std[1, :, 0], h, w)
    np.testing.assert_allclose(single.numpy(), soft_mask(pts[1], std[1, :, 0], h, w), rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_soft_mask_organs_torch_equals_numpy_on_the_sample(device):
    sample = cxu.load_sample()
    lm = np.stack(sample["landmarks"].to_numpy()[:3]).astype(np.float64)
    sd = np.stack(sample["landmarks_std"].to_numpy()[:3]).astype(np.float64)
    got = soft_mask_organs_torch(torch.from_numpy(lm).to(device), sd, 128, 96, from_size=(1024, 1024))
    assert got.shape == (3, 3, 128, 96) and got.device.type == device
    expected = np.stack([soft_mask_organs(a, b, 128, 96, from_size=(1024, 1024)) for a, b in zip(lm, sd)])
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=0, atol=1e-5)
    assert ((expected > 0.01) & (expected < 0.99)).sum() > 1000  # a real band was compared


def test_soft_mask_organs_torch_equals_numpy_on_real_contours(real_tables):
    rows = list(real_tables[0][1].head(2).iter_rows(named=True))
    lm = np.stack([np.asarray(r["landmarks"], dtype=np.float64) * [128 / r["width"], 128 / r["height"]] for r in rows])
    std = np.random.default_rng(1).uniform(0.25, 1.0, (2, 120, 2))  # 2-8 px at 1024
    got = soft_mask_organs_torch(lm, std, 128, 128)
    expected = np.stack([soft_mask_organs(a, b, 128, 128) for a, b in zip(lm, std)])
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)


def test_soft_torch_errors():
    pts, std = _stars(2, 2, 9, (40, 40))
    with pytest.raises(InputError):
        soft_mask_torch(pts, std[:1], 40, 40)
    with pytest.raises(InputError):
        soft_mask_torch(pts, std[:, :4], 40, 40)
    with pytest.raises(InputError, match="landmarks contains NaN"):
        soft_mask_organs_torch(torch.full((2, 120, 2), float("nan")), torch.ones(2, 120), 64, 64)
    with pytest.raises(InputError, match="std must be non-negative"):
        soft_mask_organs_torch(torch.ones(2, 120, 2), -torch.ones(2, 120), 64, 64)
    with pytest.raises(InputError, match="beyond"):
        soft_mask_organs_torch(np.ones((120, 2)), np.full(120, 2e5), 64, 64, from_size=(1, 1))
    assert soft_mask_organs_torch(np.zeros((0, 120, 2)), np.zeros((0, 120)), 64, 64).shape == (0, 3, 64, 64)
    lm = np.tile(np.array([[500.0, 500.0]]), (120, 1))
    with pytest.raises(InputError, match="from_size"):
        soft_mask_organs_torch(lm, np.ones(120), 64, 64)
    assert not soft_mask_organs_torch(lm, np.ones(120), 64, 64, allow_empty=True).any()


def test_torch_names_are_lazy():
    assert cxu.soft_mask_torch is soft_mask_torch and cxu.soft_mask_organs_torch is soft_mask_organs_torch
    code = "import sys, chexmask_u_tools, chexmask_u_tools.masks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# Random polygons (self-crossing, repeated and off-grid nodes included) on a 36 x 40 grid, with per-axis
# std of 0 (exact nodes), tiny (where a float32 ulp of a distance is a visible share of sigma) to 6 px.
_COORD = st.floats(-8.0, 48.0, allow_nan=False, allow_infinity=False)
_SIGMA = st.one_of(st.just(0.0), st.floats(1e-4, 0.05), st.floats(0.05, 6.0))


@st.composite
def _rings(draw, count=None, nodes=None):
    """(M, 2) points, (M, 2) std and the ring sizes of ``count`` (1..3) closed rings of ``nodes`` (3..9) nodes."""
    rings = draw(st.integers(1, 3) if count is None else st.just(count))
    sizes = [draw(st.integers(3, 9) if nodes is None else st.just(nodes)) for _ in range(rings)]
    total = sum(sizes)
    pts = np.array(draw(st.lists(st.tuples(_COORD, _COORD), min_size=total, max_size=total)))
    std = np.array(draw(st.lists(st.tuples(_SIGMA, _SIGMA), min_size=total, max_size=total)))
    return pts, std, tuple(sizes)


@settings(max_examples=40, deadline=None)
@given(_rings(), st.sampled_from([BAND_Z, band_z(1e-3), None]), st.one_of(st.just(0.0), st.floats(1e-3, 0.9)))
def test_batched_model_equals_contour_model(rings, z_cut, offset):
    """contour_model_torch: every quantity of masks.soft.contour_model, for each ring of each row."""
    pts, std, sizes = rings
    rows_pts = torch.as_tensor(np.stack([pts, pts + offset]))
    rows_std = torch.as_tensor(np.stack([std, std * offset]))
    model = contour_model_torch(rows_pts, rows_std, 36, 40, z_cut, sizes)
    starts = np.cumsum((0,) + sizes)
    for b in range(2):
        for r, (lo, hi) in enumerate(zip(starts[:-1], starts[1:])):
            expected = contour_model(rows_pts[b, lo:hi].numpy(), rows_std[b, lo:hi].numpy(), 36, 40, z_cut)
            assert (model.nxt[lo:hi].numpy() - lo).tolist() == expected.nxt.tolist()
            assert (model.prev[lo:hi].numpy() - lo).tolist() == np.roll(np.arange(hi - lo), 1).tolist()
            assert (model.ring[lo:hi].numpy() == r).all()
            assert model.convex[b, lo:hi].tolist() == expected.convex.tolist()
            for name in ("a", "v", "length2", "seg_n", "var", "reach", "corner_reach", "half_reach"):
                got = getattr(model, name)[b, lo:hi].numpy()
                np.testing.assert_allclose(got, getattr(expected, name), rtol=1e-12, atol=1e-9, err_msg=name)
            for got, want in zip(list(model.line[0]) + [model.line[1]], list(expected.line[0]) + [expected.line[1]]):
                np.testing.assert_allclose(got[b, lo:hi].numpy(), want, rtol=1e-12, atol=1e-9)


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(st.integers(3, 9).flatmap(lambda n: st.lists(_rings(1, n), min_size=1, max_size=3)), st.booleans())
def test_soft_mask_torch_equals_numpy_on_hypothesis_contours(contours, band):
    """Random contours of one length in one batch: each within 1e-5 of numpy's soft_mask (std 0 nodes and
    contours included: an all-zero std is exactly the hard mask)."""
    pts = np.stack([p for p, _, _ in contours])
    std = np.stack([s for _, s, _ in contours])
    got = soft_mask_torch(torch.as_tensor(pts), torch.as_tensor(std), 36, 40, band=band).numpy()
    for k, (p, s) in enumerate(zip(pts, std)):
        expected = soft_mask(p, s, 36, 40, band=band)
        np.testing.assert_allclose(got[k], expected, rtol=0, atol=1e-5)
        if not s.any():
            assert (got[k] == cxu.rasterize(p, 36, 40)).all()


def test_budgets_do_not_change_the_masks(monkeypatch):
    """Chunks of one contour, passes of a few blocks, one mask per cumulative sum: the same masks, bit for bit."""
    from chexmask_u_tools.masks import soft_torch

    pts, std = _stars(9, 4, 11, (60, 52))
    whole = soft_mask_torch(pts, std, 60, 52)
    for name in ("_PAIR_BUDGET", "_BLOCK_BUDGET", "_FILL_CELLS"):
        monkeypatch.setattr(soft_torch, name, 1)
    monkeypatch.setattr(soft_torch, "_PASS_CELLS", 64 * 12)  # about a dozen candidate rows per pass
    assert torch.equal(soft_mask_torch(pts, std, 60, 52), whole)


@pytest.mark.parametrize("device", DEVICES)
def test_organs_with_zero_std_and_sets_beyond_the_grid(device):
    """A set with every std zero (its hard masks), one with a zero-std organ, one partly off the grid."""
    sample = cxu.load_sample()
    lm = np.stack(sample["landmarks"].to_numpy()[:3]).astype(np.float64) / 8  # 1024 frame -> 128
    sd = np.stack(sample["landmarks_std"].to_numpy()[:3]).astype(np.float64) / 8
    sd[0] = 0.0
    sd[1, ORGAN_SLICES["heart"]] = 0.0
    lm[2, ORGAN_SLICES["left_lung"]] += 70.0  # the left lung leaves the grid on the right
    got = soft_mask_organs_torch(torch.as_tensor(lm, device=device), torch.as_tensor(sd, device=device), 128, 128, allow_partial=True)
    got = got.cpu().numpy()
    for row in range(3):
        np.testing.assert_allclose(got[row], soft_mask_organs(lm[row], sd[row], 128, 128, allow_partial=True), rtol=0, atol=1e-5)
    with pytest.raises(cxu.InputError, match="allow_partial=True"):
        soft_mask_organs_torch(torch.as_tensor(lm, device=device), torch.as_tensor(sd, device=device), 128, 128)
    hard = cxu.rasterize_organs(lm[:2], 128, 128)
    assert (got[0] == hard[0]).all() and (got[1, ORGANS.index("heart")] == hard[1, ORGANS.index("heart")]).all()
    assert sum(ORGAN_SIZES.values()) == lm.shape[1]


def test_tiny_std_keeps_float32_agreement():
    """std of 1e-4..1e-2 px: a pixel's margin cancels to a few ulps of its distance and is divided by that
    tiny sigma, so torch must round every float32 step as numpy does (its CPU sqrt alone is an ulp off for
    a fifth of the inputs: 6e-6 here); the masks then agree to the CDF's rounding, far below 1e-5."""
    rng = np.random.default_rng(3)
    angle = np.sort(rng.uniform(0, 2 * np.pi, (6, 40)), axis=1)
    radius = rng.uniform(30, 70, (6, 40))
    pts = 80.0 + np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    std = 10.0 ** rng.uniform(-4, -2, (6, 40, 2))
    got = soft_mask_torch(pts, std, 160, 160).numpy()
    for k in range(6):
        np.testing.assert_allclose(got[k], soft_mask(pts[k], std[k], 160, 160, method="numpy"), rtol=0, atol=1e-6)
