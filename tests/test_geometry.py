from __future__ import annotations

import numpy as np
import pytest
import shapely

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.masks.geometry import heart_lung_overlap, organ_areas, organ_polygons, organ_validity


def _ring(x0, y0, x1, y1, n):
    """Axis-aligned rectangle as an n-node ring (extra nodes on the left side)."""
    extra = [(x0, y1 - (y1 - y0) * (i + 1) / (n - 3)) for i in range(n - 4)]
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)] + extra, dtype=float)


def _landmarks(heart_shift=0.0):
    return np.concatenate(
        [_ring(0, 0, 10, 20, 44), _ring(20, 0, 30, 20, 50), _ring(8 + heart_shift, 10, 22 + heart_shift, 16, 26)]
    )


def test_polygons_areas_and_overlap():
    lm = _landmarks()
    polys = organ_polygons(lm)
    assert set(polys) == {"right_lung", "left_lung", "heart"}
    assert isinstance(polys["heart"], shapely.Polygon)
    np.testing.assert_allclose(organ_areas(lm), [200, 200, 84])
    # heart [8, 22] x [10, 16] overlaps right lung [0, 10] by 2x6, left lung [20, 30] by 2x6
    np.testing.assert_allclose(heart_lung_overlap(lm), [12, 12])
    np.testing.assert_allclose(heart_lung_overlap(lm, relative=True), [12 / 84, 12 / 84])
    assert organ_validity(lm).all()


def test_vectorized_over_rows():
    lm = np.stack([_landmarks(0), _landmarks(1), _landmarks(-3)])
    areas = organ_areas(lm)
    assert areas.shape == (3, 3)
    overlap = heart_lung_overlap(lm)
    np.testing.assert_allclose(overlap, [[12, 12], [6, 18], [30, 0]])
    polys = organ_polygons(lm)
    assert polys["left_lung"].shape == (3,)
    assert organ_validity(lm).shape == (3, 3)


def test_self_intersection_detected_and_repaired():
    lm = _landmarks()
    # swap two heart corners: a bow tie
    lm[[94, 95]] = lm[[95, 94]]
    valid = organ_validity(lm)
    assert valid.tolist() == [True, True, False]
    assert organ_areas(lm)[2] > 0  # repaired: lobes do not cancel


@pytest.mark.parametrize("bad", [np.zeros((100, 2)), np.zeros((120, 3)), np.full((120, 2), np.nan)])
def test_bad_input(bad):
    with pytest.raises(InputError):
        organ_areas(bad)
