"""Corruptions against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from chexmask_u_tools.analysis import corruptions as cx
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import ORGAN_SLICES


def test_noise_statistics_and_seed():
    image = np.full((256, 256), 128, dtype=np.uint8)
    noisy = cx.gaussian_noise(image, 20, seed=0)
    assert noisy.dtype == np.uint8 and noisy.shape == image.shape
    diff = noisy.astype(float) - 128
    # 65,536 draws: the sample mean's std is 20/256 ~ 0.08; rounding adds 1/12 to the variance.
    assert abs(diff.mean()) < 0.4
    assert np.sqrt(diff.var() - 1 / 12) == pytest.approx(20, rel=0.02)
    np.testing.assert_array_equal(noisy, cx.gaussian_noise(image, 20, seed=0))
    assert not np.array_equal(noisy, cx.gaussian_noise(image, 20, seed=1))
    np.testing.assert_array_equal(cx.gaussian_noise(image, 0, seed=0), image)


def test_noise_is_clipped_like_the_paper():
    image = np.array([[0, 255] * 5000], dtype=np.uint8).reshape(100, 100)
    noisy = cx.gaussian_noise(image, 190, seed=2)
    low = noisy[image == 0]
    # Half the draws are negative and clip to exactly 0.
    assert (low == 0).mean() == pytest.approx(0.5, abs=0.03)
    assert (noisy[image == 255] == 255).mean() == pytest.approx(0.5, abs=0.03)
    reference = np.clip(np.rint(image + np.random.default_rng(2).normal(0, 190, image.shape)), 0, 255)
    np.testing.assert_array_equal(noisy, reference)


def test_noise_bad_input():
    with pytest.raises(InputError, match="uint8"):
        cx.gaussian_noise(np.zeros((4, 4)), 1.0)
    with pytest.raises(InputError, match=">= 0"):
        cx.gaussian_noise(np.zeros((4, 4), np.uint8), -1)
    with pytest.raises(InputError, match="2-D"):
        cx.gaussian_noise(np.zeros((4, 4, 3), np.uint8), 1)


def landmarks_grid() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(20, 180, size=(120, 2))


def test_occluded_pixels_are_exactly_zero_and_only_those():
    image = np.full((200, 200), 200, dtype=np.uint8)
    points = landmarks_grid()
    out = cx.occlude(image, points, 10, nodes=[3, 50])
    expected = np.ones((200, 200), dtype=bool)
    for x, y in points[[3, 50]]:
        c0, r0 = int(np.ceil(x - 5)), int(np.ceil(y - 5))
        expected[r0 : r0 + 10, c0 : c0 + 10] = False
    np.testing.assert_array_equal(out == 0, ~expected)
    np.testing.assert_array_equal(out[expected], 200)
    # Each square is exactly size x size pixels when it is on the image.
    single = cx.occlude(image, points, 7, nodes=[3])
    assert (single == 0).sum() == 49
    assert image.min() == 200, "the input must not be modified"


def test_occlusion_node_choices():
    points = landmarks_grid()
    np.testing.assert_array_equal(cx.occlusion_nodes("heart"), np.arange(94, 120))
    np.testing.assert_array_equal(cx.occlusion_nodes(None), np.arange(120))
    chosen = cx.occlusion_nodes(5, seed=1)
    assert len(chosen) == 5 and len(set(chosen)) == 5
    np.testing.assert_array_equal(chosen, cx.occlusion_nodes(5, seed=1))
    image = np.full((200, 200), 9, dtype=np.uint8)
    by_organ = cx.occlude(image, points, 1, nodes="left_lung")
    zeros = np.argwhere(by_organ == 0)
    left = np.ceil(points[ORGAN_SLICES["left_lung"]] - 0.5).astype(int)  # nearest pixel centre
    assert {tuple(p) for p in zeros} == {(y, x) for x, y in left}
    # Squares off the image occlude nothing and do not fail.
    far = np.full((120, 2), -500.0)
    np.testing.assert_array_equal(cx.occlude(image, far, 30), image)
    with pytest.raises(InputError, match="organ"):
        cx.occlusion_nodes("liver")
    with pytest.raises(InputError, match="0..119"):
        cx.occlusion_nodes([0, 120])
    with pytest.raises(InputError, match="shape"):
        cx.occlude(image, points[:10], 4)


def test_blur_preserves_mean_and_constants():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, size=(64, 80))
    for sigma in (0.5, 2.0, 7.0, 30.0):  # 30 needs several reflections: still exact
        blurred = cx.gaussian_blur(image, sigma)
        assert blurred.shape == image.shape and blurred.dtype == image.dtype
        assert blurred.mean() == pytest.approx(image.mean(), rel=1e-12)
        assert blurred.std() < image.std()
    constant = np.full((30, 40), 77, dtype=np.uint8)
    np.testing.assert_array_equal(cx.gaussian_blur(constant, 3), constant)
    np.testing.assert_array_equal(cx.gaussian_blur(image, 0), image)


def test_blur_matches_direct_2d_convolution():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, size=(20, 24))
    sigma = 1.5
    kernel = cx.gaussian_kernel(sigma)
    assert kernel.sum() == pytest.approx(1.0) and len(kernel) == 2 * 6 + 1
    radius = len(kernel) // 2
    padded = np.pad(image, radius, mode="symmetric")
    k2 = np.outer(kernel, kernel)
    direct = np.array(
        [[(padded[r : r + 2 * radius + 1, c : c + 2 * radius + 1] * k2).sum() for c in range(24)] for r in range(20)]
    )
    np.testing.assert_allclose(cx.gaussian_blur(image, sigma), direct, atol=1e-12)


def test_blur_uint8_rounds_and_corrupt_dispatch():
    image = (np.arange(100 * 100) % 256).astype(np.uint8).reshape(100, 100)
    out = cx.gaussian_blur(image, 2)
    assert out.dtype == np.uint8
    assert abs(out.astype(float).mean() - image.mean()) < 0.5
    np.testing.assert_array_equal(cx.corrupt(image, "blur", 2), out)
    np.testing.assert_array_equal(cx.corrupt(image, "noise", 10, seed=4), cx.gaussian_noise(image, 10, seed=4))
    with pytest.raises(InputError, match="landmarks"):
        cx.corrupt(image, "occlusion", 10)
    with pytest.raises(InputError, match="unknown corruption"):
        cx.corrupt(image, "jpeg", 10)
