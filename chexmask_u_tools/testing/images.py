"""Synthetic stand-in images for tests, tutorials and benchmarks (no patient data, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import polars as pl

from chexmask_u_tools._atomic import atomic_path
from chexmask_u_tools.images.resolver import PathLike, check_image_id
from chexmask_u_tools.sources import REGISTRY, canonical_source

__all__ = [
    "demo_image_path",
    "synthetic_xray",
    "write_demo_images",
]




def demo_image_path(source: str, image_id: str) -> str:
    """Where a database's own distribution would put an image, relative to its root.

    MIMIC gets made-up (but stable) subject / study folders, since the rows do
    not carry them; ChestX-ray8 goes to ``images_001/images/``, Padchest to a
    numbered folder, VinDr-CXR to ``train/<id>.png`` (PNG, as DICOM writing
    would need pydicom).
    """
    check_image_id(image_id)
    known = canonical_source(source)
    if known is None:
        return image_id if PurePosixPath(image_id).suffix else image_id + ".png"
    return REGISTRY[known].demo_image_path(image_id)


def write_demo_images(
    table: pl.DataFrame,
    root: PathLike,
    *,
    shapes: Sequence[tuple[int, int]] = ((256, 256), (240, 300), (300, 240)),
    seed: int = 0,
) -> dict[str, Path]:
    """Write a synthetic stand-in image for every row, in each source's layout.

    For tests, tutorials and benchmarks (no patient data, no network).  Row
    ``i`` gets an image of size ``shapes[i % len(shapes)]`` (height, width) in
    the original frame: a smooth body, dark lungs and a bright heart drawn from
    the row's 1024-frame landmarks (preprocessed rows) and mapped back through
    the centred-square padding, plus noise.  Rows in the original frame use
    their own Height/Width instead.

    Returns
    -------
    Source -> its root folder (``root/<source>``), ready for :class:`ImageResolver`.
    """
    from PIL import Image

    from chexmask_u_tools.masks.raster import rasterize_organs

    root = Path(root)
    rng = np.random.default_rng(seed)
    roots: dict[str, Path] = {}
    columns = table.select("source", "image_id", "frame", "height", "width", "landmarks")
    for i, (source, image_id, frame, height, width, landmarks) in enumerate(columns.iter_rows()):
        source = canonical_source(source) or source
        points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
        if frame == "original" and height and width:
            h, w = int(height), int(width)
            side = 256
            points = points * (side / max(h, w))
            top, left = (side - round(h * side / max(h, w))) // 2, (side - round(w * side / max(h, w))) // 2
            points = points + (left, top)
        else:
            h, w = shapes[i % len(shapes)]
            side = 256
            points = points * (side / 1024.0)
            top, left = (side - round(h * side / max(h, w))) // 2, (side - round(w * side / max(h, w))) // 2
        masks = rasterize_organs(points, side, side)
        yy, xx = np.mgrid[0:side, 0:side] / side
        canvas = 150 + 60 * np.exp(-((xx - 0.5) ** 2) / 0.08) - 40 * yy
        canvas = np.where(masks[0] | masks[1], canvas - 100, canvas)
        canvas = np.where(masks[2], canvas + 70, canvas)
        inner_h, inner_w = side - 2 * top, side - 2 * left
        crop = np.clip(canvas[top : top + inner_h, left : left + inner_w], 0, 255).astype(np.uint8)
        image = np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), dtype=np.float64)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        target = root / source / demo_image_path(source, image_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, fsync=False) as temporary:
            Image.fromarray(image).save(temporary, format="JPEG" if target.suffix == ".jpg" else "PNG", quality=92)
        roots[source] = root / source
    return roots


def synthetic_xray(
    landmarks: np.ndarray, height: int = 1024, width: int = 1024, seed: int | np.random.Generator | None = 0
) -> np.ndarray:
    """A chest-X-ray-like (H, W) uint8 picture drawn from (120, 2) landmarks, for offline demos.

    Dark lungs and a bright heart inside a bright elliptical body on a dark
    background, blurred (sigma 1% of the width) with mild noise (std 4).  Not a
    radiograph: it only gives models and plots something shaped like one.
    Landmarks are pixels of the (height, width) frame.
    """
    from chexmask_u_tools.analysis.corruptions import gaussian_blur
    from chexmask_u_tools.masks.raster import label_map

    labels = label_map(np.asarray(landmarks, dtype=np.float64), height, width)
    rows, cols = np.mgrid[0:height, 0:width]
    body = ((cols - width / 2) / (0.47 * width)) ** 2 + ((rows - 0.55 * height) / (0.6 * height)) ** 2 <= 1.0
    picture = np.where(body, 165.0, 25.0)
    # Lungs get darker towards their centre line, like the air-filled fields of a real film.
    lung_shade = 75.0 + 25.0 * np.abs(rows / height - 0.5)
    picture = np.where((labels == 1) | (labels == 2), lung_shade, picture)
    picture = np.where(labels == 3, 190.0, picture)
    picture = gaussian_blur(picture, 0.01 * width)
    picture += np.random.default_rng(seed).normal(0.0, 4.0, size=picture.shape)
    return np.clip(np.rint(picture), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
