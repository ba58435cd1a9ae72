"""The viewer's pictures as PNG bytes: a row's overlay and the histogram of a statistic.

Overlays are :func:`chexmask_u_tools.analysis.plots.plot_contours` (the three
contours, nodes coloured by per-node σ, colorbar and organ legend) or, with the
soft-mask toggle, :func:`~chexmask_u_tools.analysis.plots.plot_soft_mask`, drawn
over the row's image when its root was given and on a blank canvas otherwise.
The PNG has the size of the row's frame (1024 x 1024 for the preprocessed
frame, the image's height x width for the original one), scaled down to
:data:`MAX_OVERLAY_SIDE` on its longer side.  PNGs are written with zlib level
:data:`PNG_COMPRESS_LEVEL`: level 6 took four times as long on an X-ray overlay
for a 10% smaller file.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from chexmask_u_tools.errors import ImageError, InputError
from chexmask_u_tools.images.preprocess import crop_black_border, pad_to_square
from chexmask_u_tools.images.read import read_image, read_image_reduced
from chexmask_u_tools.images.resolver import ImageResolver, MissingImageError
from chexmask_u_tools.schema import PREPROCESSED_SIZE, mask_shape
from chexmask_u_tools.sources import REGISTRY, canonical_source

__all__ = [
    "MAX_OVERLAY_SIDE",
    "PNG_COMPRESS_LEVEL",
    "figure_png",
    "histogram_png",
    "overlay_png",
    "overlay_size",
    "row_image",
]

MAX_OVERLAY_SIDE = 2048
"""Longest side of an overlay PNG, pixels (an original-frame row of a larger image is drawn scaled down)."""

PNG_COMPRESS_LEVEL = 1

# Matplotlib's figures are separate objects, but its font and colormap caches are shared:
# the server's worker threads draw one picture at a time.
_DRAWING = threading.Lock()


def overlay_size(frame: str, height: int | None, width: int | None) -> tuple[int, int]:
    """``(rows, cols)`` of a row's overlay PNG: its frame's grid, scaled to at most :data:`MAX_OVERLAY_SIDE`.

    Examples
    --------
    >>> overlay_size("preprocessed", 2500, 2048)
    (1024, 1024)
    >>> overlay_size("original", 3000, 2500)
    (2048, 1707)
    """
    rows, cols = mask_shape(frame, height, width)
    scale = min(1.0, MAX_OVERLAY_SIDE / max(rows, cols))
    return max(16, round(rows * scale)), max(16, round(cols * scale))


def figure_png(fig: Any) -> bytes:
    """A Matplotlib figure as RGB PNG bytes of exactly its pixel size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


def _preprocessed_pixels(path: Any, source: str) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as the model saw it (1024 x 1024, uint8), and the image's own (H, W).

    Decoded at a reduced resolution when that still covers 1024 pixels
    (:func:`~chexmask_u_tools.images.read.read_image_reduced`), black borders
    cropped for the sources whose preprocessing did, zero-padded to a centred
    square and resized bilinearly: a picture for the eye, within a pixel or two
    of the model's input.
    """
    from PIL import Image

    pixels, _, full = read_image_reduced(path, PREPROCESSED_SIZE, square=True)
    known = canonical_source(source)
    if known is not None and REGISTRY[known].crop_border:
        pixels, _ = crop_black_border(pixels)
    square, _ = pad_to_square(pixels)
    resized = Image.fromarray(square).resize((PREPROCESSED_SIZE, PREPROCESSED_SIZE), Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8), full


def row_image(row: Mapping[str, Any], images: ImageResolver | None) -> tuple[np.ndarray | None, str | None]:
    """The row's image in its frame, or None and a note saying why there is none.

    Returns
    -------
    ``(pixels, note)``: (H, W) uint8 pixels of the row's frame (1024 x 1024 for
    the preprocessed frame) and None; or None and a one-line note (no root for
    the source, no file found, an unreadable file, or an image whose size is not
    the row's).  An unsafe id raises :class:`~chexmask_u_tools.errors.InputError`.
    """
    source, image_id, frame = row["source"], row["image_id"], row["frame"]
    if images is None or not images.roots_for(source) and images.resolver is None:
        return None, f"no image root for {source} (--images {source}=DIR): blank canvas"
    try:
        path = images.resolve(source, image_id)
        if frame == "preprocessed":
            pixels, full = _preprocessed_pixels(path, source)
            stated = (row.get("height"), row.get("width"))
            if None not in stated and stated != (PREPROCESSED_SIZE, PREPROCESSED_SIZE) and tuple(stated) != tuple(full):
                return None, f"{path.name} is {full[1]}x{full[0]} but the row says {stated[1]}x{stated[0]}: not drawn"
            return pixels, None
        pixels = read_image(path)
        expected = mask_shape(frame, row.get("height"), row.get("width"))
        if pixels.shape != expected:
            return None, f"{path.name} is {pixels.shape[1]}x{pixels.shape[0]} but the row says {expected[1]}x{expected[0]}: not drawn"
        return pixels, None
    except MissingImageError as error:
        return None, f"no file for this id under the {source} root ({len(error.tried)} paths tried): blank canvas"
    except ImageError as error:
        return None, f"unreadable image: {error}"


def overlay_png(
    row: Mapping[str, Any],
    *,
    image: np.ndarray | None = None,
    soft: bool = False,
    note: str | None = None,
) -> bytes:
    """The overlay of one row as PNG bytes of :func:`overlay_size`.

    Parameters
    ----------
    row:
        ``source``, ``image_id``, ``frame``, ``height``, ``width``, ``landmarks``
        (120, 2) and ``landmarks_std`` (120, 2) or None: pixels of the row's frame.
    image:
        (H, W) uint8 of the row's frame grid, or None for a blank canvas.
    soft:
        Draw the soft masks (per-pixel maximum over the organs) instead of the σ-coloured nodes.
    note:
        A second title line (why there is no image).

    Raises
    ------
    InputError
        ``soft`` for a row without per-node std.
    """
    from chexmask_u_tools.analysis.plots import plot_contours, plot_soft_mask

    size = mask_shape(row["frame"], row.get("height"), row.get("width"))
    rows, cols = overlay_size(row["frame"], row.get("height"), row.get("width"))
    std = row.get("landmarks_std")
    title = f"{row['source']}  {row['image_id']}"
    if len(title) > 90:
        title = title[:87] + "..."
    if note:
        title += f"\n{note}"
    # Fonts and markers are in points: a dpi growing with the picture keeps them as legible as at 640 px.
    dpi = max(100, round(100 * max(rows, cols) / 640))
    with _DRAWING:
        if soft:
            if std is None:
                raise InputError(f"row {row['image_id']!r} has no per-node std, so no soft mask: untick 'soft masks'")
            fig = plot_soft_mask(row["landmarks"], std, image=image, size=size, title=title, width_px=cols, height_px=rows, dpi=dpi)
        else:
            fig = plot_contours(row["landmarks"], std, image=image, size=size, title=title, width_px=cols, height_px=rows, dpi=dpi)
        return figure_png(fig)


def histogram_png(
    column: str,
    total: np.ndarray,
    kept: np.ndarray,
    thresholds: Sequence[float] = (),
    *,
    width_px: int = 720,
    height_px: int = 260,
) -> bytes:
    """Histogram of ``column`` over every row looked at (gray) and the kept rows (blue), thresholds dashed red.

    NaN values are left out; both histograms share 60 bins over the finite range of ``total``.
    """
    from matplotlib.figure import Figure

    total = np.asarray(total, dtype=np.float64)
    kept = np.asarray(kept, dtype=np.float64)
    total, kept = total[np.isfinite(total)], kept[np.isfinite(kept)]
    with _DRAWING:
        fig = Figure(figsize=(width_px / 100, height_px / 100), dpi=100)
        ax = fig.add_axes((0.08, 0.2, 0.9, 0.68))
        unit = " (px)" if column.startswith(("node_sigma", "sigma_")) else ""
        ax.set_xlabel(column.replace("_", " ") + unit, fontsize=9)
        ax.set_ylabel("rows", fontsize=9)
        if total.size:
            edges = np.histogram_bin_edges(total, bins=60)
            ax.stairs(np.histogram(total, edges)[0], edges, fill=True, color="0.82", label=f"rows looked at ({total.size:,} with a value)")
            ax.stairs(np.histogram(kept, edges)[0], edges, fill=True, color="#1f77b4", alpha=0.8, label=f"kept ({kept.size:,})")
        else:
            ax.text(0.5, 0.5, f"no row has a value of {column}", ha="center", va="center", transform=ax.transAxes)
        for k, value in enumerate(thresholds):
            ax.axvline(value, color="#d62728", ls="--", lw=1.5, label="threshold" if k == 0 else None)
        ax.tick_params(labelsize=8)
        if total.size or thresholds:
            ax.legend(fontsize=8, loc="upper right")
        return figure_png(fig)
