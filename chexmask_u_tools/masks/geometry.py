"""Organ contours as shapely geometries: areas, validity, heart/lung overlap.

Everything is vectorized over rows with shapely 2's array functions: a
(120, 2) landmark set gives scalars (or single geometries), a (B, 120, 2)
batch gives arrays with a leading B axis.  Areas are in squared pixels of
the landmarks' frame and are those of the geometric polygons (through the
landmarks), not pixel counts of the released masks, which also include the
boundary pixels (see :mod:`chexmask_u_tools.masks.raster`).
"""

from __future__ import annotations

import numpy as np
import shapely

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.masks.raster import as_points

__all__ = ["heart_lung_overlap", "organ_areas", "organ_polygons", "organ_validity"]


def _landmarks(landmarks) -> np.ndarray:
    arr = as_points(landmarks, "landmarks").astype(np.float64)
    if arr.ndim not in (2, 3) or arr.shape[-2] != N_NODES:
        raise InputError(f"landmarks must have shape (120, 2) or (B, 120, 2), got {arr.shape}")
    return arr


def organ_polygons(landmarks, *, repair: bool = False) -> dict[str, object]:
    """Organ name -> shapely Polygon (for (120, 2)) or (B,) object array of Polygons.

    The ring of each organ is closed automatically.  ``repair=True`` passes
    the polygons through ``shapely.make_valid`` (self-intersecting contours
    become (Multi)Polygons or collections covering the same area).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> landmarks = np.asarray(cxu.load_sample()["landmarks"][0], dtype=float)
    >>> polygons = organ_polygons(landmarks)
    >>> sorted(polygons), polygons["heart"].geom_type, len(polygons["heart"].exterior.coords)
    (['heart', 'left_lung', 'right_lung'], 'Polygon', 27)
    >>> organ_polygons(np.stack([landmarks, landmarks]))["heart"].shape
    (2,)
    """
    arr = _landmarks(landmarks)
    out = {}
    for organ in ORGANS:
        polys = shapely.polygons(arr[..., ORGAN_SLICES[organ], :])
        if repair:
            polys = shapely.make_valid(polys)
        out[organ] = polys
    return out


def _stack(values: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(values[o]) for o in ORGANS], axis=-1)


def organ_areas(landmarks) -> np.ndarray:
    """float64 (..., 3): polygon area of right lung, left lung, heart, in pixels^2.

    Self-intersecting contours are repaired first, so a figure-eight counts
    both lobes instead of cancelling them.

    Examples
    --------
    Two lungs of radius 150 px and a heart of radius 120 px:

    >>> import numpy as np
    >>> import chexmask_u_tools as cxu
    >>> def ring(n, cx, cy, r):  # n nodes on a circle
    ...     t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ...     return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    >>> landmarks = np.concatenate([ring(44, 300, 500, 150), ring(50, 700, 500, 150), ring(26, 500, 600, 120)])
    >>> cxu.organ_areas(landmarks).round().tolist()  # right lung, left lung, heart
    [70446.0, 70500.0, 44800.0]
    >>> cxu.organ_areas(np.stack([landmarks] * 4)).shape
    (4, 3)
    """
    polys = organ_polygons(landmarks, repair=True)
    return _stack({o: shapely.area(p) for o, p in polys.items()})


def organ_validity(landmarks) -> np.ndarray:
    """bool (..., 3): whether each organ's ring is a valid simple polygon (no self-intersection).

    Examples
    --------
    >>> import numpy as np
    >>> import chexmask_u_tools as cxu
    >>> def ring(n, cx, cy, r):  # n nodes on a circle
    ...     t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ...     return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    >>> landmarks = np.concatenate([ring(44, 300, 500, 150), ring(50, 700, 500, 150), ring(26, 500, 600, 120)])
    >>> crossed = landmarks.copy()
    >>> crossed[[94, 100]] = crossed[[100, 94]]  # two heart nodes swapped: the contour crosses itself
    >>> cxu.organ_validity(np.stack([landmarks, crossed])).tolist()
    [[True, True, True], [True, True, False]]
    """
    polys = organ_polygons(landmarks)
    return _stack({o: shapely.is_valid(p) for o, p in polys.items()})


def heart_lung_overlap(landmarks, *, relative: bool = False) -> np.ndarray:
    """float64 (..., 2): area shared by the heart and the right lung, and by the heart and the left lung.

    Pixels^2 of the landmark frame, or, with ``relative=True``, as a fraction of
    the heart's area (0 when the heart is degenerate).  Contours are repaired
    before intersecting.

    Examples
    --------
    >>> import numpy as np
    >>> import chexmask_u_tools as cxu
    >>> def ring(n, cx, cy, r):  # n nodes on a circle
    ...     t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ...     return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    >>> landmarks = np.concatenate([ring(44, 300, 500, 150), ring(50, 700, 500, 150), ring(26, 500, 600, 120)])
    >>> cxu.heart_lung_overlap(landmarks).round().tolist()  # px^2 shared with the right, the left lung
    [4593.0, 4602.0]
    >>> cxu.heart_lung_overlap(landmarks, relative=True).round(3).tolist()  # fraction of the heart
    [0.103, 0.103]
    """
    polys = organ_polygons(landmarks, repair=True)
    heart = polys["heart"]
    overlap = np.stack(
        [
            np.asarray(shapely.area(shapely.intersection(heart, polys["right_lung"]))),
            np.asarray(shapely.area(shapely.intersection(heart, polys["left_lung"]))),
        ],
        axis=-1,
    )
    if relative:
        area = np.asarray(shapely.area(heart))[..., None]
        overlap = np.divide(overlap, area, out=np.zeros_like(overlap), where=area > 0)
    return overlap
