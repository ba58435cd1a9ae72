from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu  # noqa: E402
from chexmask_u_tools.errors import InputError  # noqa: E402
from chexmask_u_tools.masks.soft import soft_mask, soft_mask_organs  # noqa: E402
from chexmask_u_tools.masks.soft_torch import soft_mask_organs_torch, soft_mask_torch  # noqa: E402

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
    lm = np.tile(np.array([[500.0, 500.0]]), (120, 1))
    with pytest.raises(InputError, match="from_size"):
        soft_mask_organs_torch(lm, np.ones(120), 64, 64)
    assert not soft_mask_organs_torch(lm, np.ones(120), 64, 64, allow_empty=True).any()


def test_torch_names_are_lazy():
    assert cxu.soft_mask_torch is soft_mask_torch and cxu.soft_mask_organs_torch is soft_mask_organs_torch
    code = "import sys, chexmask_u_tools, chexmask_u_tools.masks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
