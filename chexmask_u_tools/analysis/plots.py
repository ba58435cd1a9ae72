"""Figures of landmarks, uncertainty and dataset statistics (matplotlib, Agg backend).

Every function builds its own :class:`matplotlib.figure.Figure` (never pyplot,
so nothing leaks into a global figure registry and nothing needs a display),
returns it, and, when ``path`` is given, also writes it there (PNG, SVG or PDF
chosen by the suffix; written to a temporary file first, then moved in place).
The written image is exactly ``width_px x height_px`` pixels for raster formats.

Coordinates are pixels of the row's frame: x = column, y = row, origin at the
centre of the top-left pixel, which is also where ``imshow`` puts pixel
``(0, 0)``, so landmarks land on the pixels they name.  Node sigma is
``(std_x + std_y) / 2`` in pixels (SPEC section 5).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from chexmask_u_tools._atomic import atomic_path
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES, ORGAN_SLICES, ORGANS
from chexmask_u_tools.schema import PREPROCESSED_SIZE, RLE_COLUMNS, mask_shape
from chexmask_u_tools.select.uncertainty import node_sigma_array, node_sigma_mean

__all__ = [
    "ORGAN_COLORS",
    "find_row",
    "plot_band",
    "plot_contours",
    "plot_roc",
    "plot_sample_grid",
    "plot_sigma_by_source",
    "plot_sigma_vs_dice",
    "plot_soft_mask",
    "plot_uncertainty_vs_corruption",
    "row_arrays",
    "save_figure",
]

ORGAN_COLORS: dict[str, str] = {"right_lung": "#1f77b4", "left_lung": "#2ca02c", "heart": "#d62728"}
"""Line colour of each organ's contour."""

SIGMA_CMAP = "plasma"
"""Sequential colormap for node sigma (readable over a gray X-ray)."""

_SUFFIXES = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


# ----------------------------------------------------------------------------
# figure plumbing


def _figure(width_px: int, height_px: int, dpi: int) -> Any:
    from matplotlib.figure import Figure

    if width_px < 16 or height_px < 16 or dpi <= 0:
        raise InputError(f"figure size must be at least 16x16 px with dpi > 0, got {width_px}x{height_px} at {dpi}")
    return Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (``.png``, ``.svg`` or ``.pdf``) atomically; return the path.

    The figure's own size and dpi are used (no tight bounding box), so a PNG is
    exactly ``figsize * dpi`` pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell the image format of {path}: use a .png, .svg or .pdf name")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    with atomic_path(path) as temporary, open(temporary, "xb") as out:
        fig.savefig(out, format=fmt, dpi=fig.dpi)
    return path


def _finish(fig: Any, path: str | os.PathLike | None) -> Any:
    if path is not None:
        save_figure(fig, path)
    return fig


# ----------------------------------------------------------------------------
# rows and arrays


def find_row(table: pl.DataFrame, key: str | int, *, source: str | None = None, frame: str | None = None) -> dict[str, Any]:
    """One row of a canonical table, by image id or by 0-based row number.

    ``key`` is first looked up as an ``image_id``; a string of digits that is
    not an id (or an int) is taken as a row number.  ``source`` and ``frame``
    choose among rows sharing the id (the same image in both frames, or an id
    two sources share).

    Raises
    ------
    InputError
        The table is empty, no row has that id and it is no valid row number,
        or several rows have it (listed, with the arguments that choose one).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample()
    >>> find_row(table, 3)["image_id"] == table["image_id"][3]
    True
    >>> twice = pl.concat([table.head(1), table.head(1).with_columns(frame=pl.lit("original"))])
    >>> find_row(twice, twice["image_id"][0])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: 2 rows have image id ... pass source=... or frame=... to choose one, or give its row number
    >>> find_row(twice, twice["image_id"][0], frame="original")["frame"]
    'original'
    """
    if "image_id" not in table.columns:
        raise InputError("the table has no image_id column (is it a canonical table?)")
    if table.height == 0:
        raise InputError("the table is empty: no row to plot")
    text = str(key)
    indexed = table.with_row_index("__row")
    hits = indexed.filter(pl.col("image_id") == text)
    for name, wanted in (("source", source), ("frame", frame)):
        if wanted is not None and hits.height and name in hits.columns:
            hits = hits.filter(pl.col(name) == wanted)
    if hits.height > 1:
        listed = "; ".join(
            f"row {r['__row']}: source {r.get('source')!r}, frame {r.get('frame')!r}" for r in hits.head(5).iter_rows(named=True)
        )
        raise InputError(
            f"{hits.height} rows have image id {text!r} ({listed}); pass source=... or frame=... to choose one, "
            "or give its row number"
        )
    if hits.height:
        return hits.drop("__row").row(0, named=True)
    if isinstance(key, (int, np.integer)) or text.lstrip("-").isdigit():
        index = int(text)
        if -table.height <= index < table.height:
            return table.row(index, named=True)
        raise InputError(f"row {index} is out of range: the table has {table.height} rows")
    near = table.filter(pl.col("image_id").str.contains(text, literal=True))["image_id"].head(3).to_list()
    hint = f"; ids containing it: {near}" if near else ""
    raise InputError(f"image id {text!r} is not in the table ({table.height} rows){hint}")


def row_arrays(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """``(landmarks (120, 2) float64, std (120, 2) float64 or None, (rows, cols))`` of a table row.

    ``(rows, cols)`` is the pixel grid of the row's frame
    (:func:`chexmask_u_tools.schema.mask_shape`): 1024 x 1024 for the
    preprocessed frame (also when no frame is given), ``(height, width)`` for
    the original frame.
    """
    if row.get("landmarks") is None:
        raise InputError(f"row {row.get('image_id')!r} has no landmarks")
    landmarks = np.asarray(row["landmarks"], dtype=np.float64)
    std = None if row.get("landmarks_std") is None else np.asarray(row["landmarks_std"], dtype=np.float64)
    size = mask_shape(row.get("frame") or "preprocessed", row.get("height"), row.get("width"))
    return landmarks, std, size


def _check_landmarks(landmarks: object, name: str = "landmarks") -> np.ndarray:
    """(120, 2) float64; NaN is allowed in ``std`` (handled by the callers), not in landmarks."""
    arr = np.asarray(landmarks, dtype=np.float64)
    if arr.shape != (N_NODES, 2):
        raise InputError(f"{name} must have shape ({N_NODES}, 2), got {arr.shape}")
    if name == "landmarks" and not np.isfinite(arr).all():
        raise InputError("landmarks contain NaN or infinite coordinates")
    return arr


def _node_sigma(std: object | None) -> np.ndarray | None:
    """(120,) node sigma, NaN where unknown; warns when some are NaN; raises when all are."""
    if std is None:
        return None
    sigma = node_sigma_array(_check_landmarks(std, "std")).astype(np.float64)
    bad = ~np.isfinite(sigma)
    if bad.all():
        raise InputError("every node sigma is NaN: nothing to colour by (pass std=None to draw contours only)")
    if bad.any():
        warnings.warn(f"{int(bad.sum())} of {N_NODES} node sigmas are NaN; those nodes are drawn in gray", stacklevel=3)
    if (sigma[~bad] < 0).any():
        raise InputError("std contains negative values")
    return sigma


def _canvas(ax: Any, image: np.ndarray | None, size: tuple[int, int]) -> tuple[int, int]:
    """Draw the image (or a blank canvas of ``size``) with pixel centres on integers."""
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"image must be a 2-D grayscale array, got shape {image.shape}")
        ax.imshow(image, cmap="gray", interpolation="antialiased", vmin=0, vmax=255 if image.dtype == np.uint8 else None)
        height, width = image.shape
    else:
        height, width = size
        ax.imshow(np.full((2, 2), 0.93), cmap="gray", vmin=0, vmax=1, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    return height, width


def _draw_contours(ax: Any, landmarks: np.ndarray, sigma: np.ndarray | None, norm: Any, cmap: Any, marker_size: float) -> Any:
    """Closed organ rings plus nodes (coloured by sigma when given); returns the scatter artist."""
    artist = None
    for organ in ORGANS:
        ring = landmarks[ORGAN_SLICES[organ]]
        closed = np.vstack([ring, ring[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color=ORGAN_COLORS[organ], lw=1.2, alpha=0.9)
        if sigma is None:
            ax.scatter(ring[:, 0], ring[:, 1], s=marker_size, color=ORGAN_COLORS[organ], zorder=3)
    if sigma is not None:
        artist = ax.scatter(
            landmarks[:, 0], landmarks[:, 1], c=sigma, cmap=cmap, norm=norm, s=marker_size,
            edgecolors="black", linewidths=0.3, zorder=3, plotnonfinite=True,
        )
    return artist


def _organ_legend(ax: Any, fontsize: float = 7) -> None:
    """A legend naming each organ by its colour (right lung, left lung, heart)."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=ORGAN_COLORS[o], edgecolor="none", label=o.replace("_", " ")) for o in ORGANS]
    ax.legend(handles=handles, loc="lower right", fontsize=fontsize, framealpha=0.8)


def _sigma_cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="0.6")


def _sigma_norm(values: np.ndarray, vmin: float | None, vmax: float | None) -> Any:
    from matplotlib.colors import Normalize

    finite = values[np.isfinite(values)]
    low = float(finite.min()) if vmin is None else float(vmin)
    high = float(finite.max()) if vmax is None else float(vmax)
    if high <= low:
        high = low + 1e-6
    return Normalize(low, high)


# ----------------------------------------------------------------------------
# single-row pictures


def plot_contours(
    landmarks: np.ndarray,
    std: np.ndarray | None = None,
    *,
    image: np.ndarray | None = None,
    size: tuple[int, int] = (PREPROCESSED_SIZE, PREPROCESSED_SIZE),
    title: str | None = None,
    cmap: str = SIGMA_CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
    width_px: int = 640,
    height_px: int = 560,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
) -> Any:
    """The three organ contours over an image (or a blank canvas), nodes coloured by sigma.

    Parameters
    ----------
    landmarks:
        (120, 2) x, y in pixels of the image's frame.
    std:
        (120, 2) per-node std of x and y in the same pixels, or None to colour
        nodes by organ.  Nodes with a NaN sigma are drawn gray (with a warning).
    image:
        (H, W) grayscale image (uint8 shown on 0..255); None draws a blank
        canvas of ``size = (height, width)``.
    vmin, vmax:
        Colour range in pixels (default: the nodes' own range).
    width_px, height_px, dpi:
        Output size in pixels and resolution.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`; a colorbar labelled in px when ``std`` is given.
    """
    landmarks = _check_landmarks(landmarks)
    sigma = _node_sigma(std)
    fig = _figure(width_px, height_px, dpi)
    ax = fig.add_axes((0.02, 0.02, 0.78 if sigma is not None else 0.96, 0.9))
    _canvas(ax, image, size)
    cmap_obj = _sigma_cmap(cmap)
    norm = None if sigma is None else _sigma_norm(sigma, vmin, vmax)
    artist = _draw_contours(ax, landmarks, sigma, norm, cmap_obj, marker_size=14)
    _organ_legend(ax)
    if artist is not None:
        cax = fig.add_axes((0.83, 0.1, 0.035, 0.75))
        fig.colorbar(artist, cax=cax, label="node sigma (px)")
    ax.set_title(title if title is not None else "organ contours" + (" (nodes: sigma)" if sigma is not None else ""), fontsize=10)
    return _finish(fig, path)


def _geometry_patch(geometry: Any, **style: Any) -> Any:
    """A matplotlib patch of a shapely (Multi)Polygon, holes included."""
    import shapely
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    paths = []
    for part in shapely.get_parts(geometry):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        # Exterior counter-clockwise, holes clockwise: the non-zero fill rule then leaves holes open.
        part = shapely.geometry.polygon.orient(part, 1.0)
        for ring in (part.exterior, *part.interiors):
            paths.append(MplPath(np.asarray(ring.coords)[:, :2], closed=True))
    if not paths:
        return None
    return PathPatch(MplPath.make_compound_path(*paths), **style)


def plot_band(
    landmarks: np.ndarray,
    std: np.ndarray,
    k: float = 2.0,
    *,
    image: np.ndarray | None = None,
    size: tuple[int, int] = (PREPROCESSED_SIZE, PREPROCESSED_SIZE),
    title: str | None = None,
    width_px: int = 640,
    height_px: int = 560,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
) -> Any:
    """The ±k sigma uncertainty band of each organ, shaded over an image or blank canvas.

    The band lies between the inner and outer contours of
    :func:`chexmask_u_tools.masks.soft.uncertainty_band` (each node moved along its
    normal by ``k`` times its std in that direction); it is shaded in the
    organ's colour with the mean contour on top.  Shapes and units as in
    :func:`plot_contours`.
    """
    from chexmask_u_tools.masks.soft import uncertainty_band

    landmarks = _check_landmarks(landmarks)
    std = _check_landmarks(std, "std")
    if not np.isfinite(std).all():
        raise InputError("std contains NaN: the band needs every node's sigma")
    if not np.isfinite(k) or k <= 0:
        raise InputError(f"k must be a positive number of sigmas, got {k}")
    fig = _figure(width_px, height_px, dpi)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    _canvas(ax, image, size)
    for organ in ORGANS:
        part = ORGAN_SLICES[organ]
        inner, outer = uncertainty_band(landmarks[part], std[part], k)
        patch = _geometry_patch(outer.difference(inner), facecolor=ORGAN_COLORS[organ], alpha=0.4, lw=0)
        if patch is not None:
            ax.add_patch(patch)
        for edge in (inner, outer):
            line = _geometry_patch(edge, fill=False, edgecolor=ORGAN_COLORS[organ], lw=0.8, ls="--")
            if line is not None:
                ax.add_patch(line)
    _draw_contours(ax, landmarks, None, None, None, marker_size=3)
    _organ_legend(ax)
    ax.set_title(title if title is not None else f"mean contour and ±{k:g}σ band", fontsize=10)
    return _finish(fig, path)


def plot_soft_mask(
    landmarks: np.ndarray,
    std: np.ndarray,
    *,
    organ: str | None = None,
    image: np.ndarray | None = None,
    size: tuple[int, int] = (PREPROCESSED_SIZE, PREPROCESSED_SIZE),
    title: str | None = None,
    width_px: int = 640,
    height_px: int = 560,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
) -> Any:
    """The soft (probabilistic) mask from :func:`chexmask_u_tools.masks.soft.soft_mask_organs`, with a 0..1 colorbar.

    ``organ`` picks one organ; None shows the per-pixel maximum over the three.
    Over an image the soft mask is blended on top of it.
    """
    from chexmask_u_tools.masks.soft import soft_mask_organs

    landmarks = _check_landmarks(landmarks)
    std = _check_landmarks(std, "std")
    if not np.isfinite(std).all():
        raise InputError("std contains NaN: the soft mask needs every node's sigma")
    if organ is not None and organ not in ORGANS:
        raise InputError(f"unknown organ {organ!r}; expected one of {ORGANS}")
    fig = _figure(width_px, height_px, dpi)
    ax = fig.add_axes((0.02, 0.02, 0.78, 0.9))
    height, width = _canvas(ax, image, size)
    soft = soft_mask_organs(landmarks, std, height, width)
    shown = soft[ORGANS.index(organ)] if organ is not None else soft.max(axis=0)
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mapping = ScalarMappable(Normalize(0.0, 1.0), matplotlib.colormaps["magma"])
    rgba = mapping.to_rgba(shown)
    if image is not None:
        # Opacity grows with the probability, so the X-ray stays visible where the organ is surely absent.
        rgba[..., 3] = 0.8 * np.clip(3.0 * shown, 0.0, 1.0)
    ax.imshow(rgba, interpolation="antialiased")
    for name in ORGANS if organ is None else (organ,):
        ring = landmarks[ORGAN_SLICES[name]]
        closed = np.vstack([ring, ring[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color=ORGAN_COLORS[name], lw=0.8, alpha=0.9, label=name.replace("_", " "))
    ax.legend(loc="lower right", fontsize=7, framealpha=0.8, title="mean contour", title_fontsize=7)
    cax = fig.add_axes((0.83, 0.1, 0.035, 0.75))
    fig.colorbar(mapping, cax=cax, label="P(pixel inside organ)")
    name = organ.replace("_", " ") if organ else "all organs, per-pixel maximum"
    ax.set_title(title if title is not None else f"soft mask: {name}", fontsize=10)
    return _finish(fig, path)


# ----------------------------------------------------------------------------
# several rows


def _masks_of_row(row: Mapping[str, Any], landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 label image 0..3 (heart drawn last) from the row's RLE masks, else from its landmarks."""
    from chexmask_u_tools.masks.raster import rasterize_organs
    from chexmask_u_tools.io.rle import rle_decode

    height, width = size
    if all(row.get(RLE_COLUMNS[o]) is not None for o in ORGANS):
        masks = np.stack([rle_decode(row[RLE_COLUMNS[o]], height, width) for o in ORGANS])
    else:
        masks = rasterize_organs(landmarks, height, width)
    labels = np.zeros((height, width), dtype=np.uint8)
    for k in range(len(ORGANS)):
        labels[masks[k]] = k + 1
    return labels


def _spread_rows(table: pl.DataFrame, n: int) -> pl.DataFrame:
    """``n`` rows spread evenly over the range of mean node sigma (low to high)."""
    order = table.with_columns(node_sigma_mean().alias("__sigma")).sort("__sigma", nulls_last=True)
    picks = np.unique(np.linspace(0, order.height - 1, n).round().astype(int))
    return order[picks.tolist()].drop("__sigma")


GRID_COLUMNS = 5
"""Panels per row of :func:`plot_sample_grid`; more rows wrap onto further lines."""


def plot_sample_grid(
    table: pl.DataFrame,
    n: int = 4,
    path: str | os.PathLike | None = None,
    *,
    color_by: Literal["sigma", "organ"] = "sigma",
) -> Any:
    """A grid of ``n`` rows: their masks with landmarks, at most :data:`GRID_COLUMNS` panels per line.

    ``color_by="sigma"`` colours the nodes by node sigma (one shared colorbar
    in px) and chooses rows evenly along mean node sigma (lowest to highest),
    so the grid shows the table's range of uncertainty.  ``color_by="organ"``
    draws the contours in the organ colours and needs no uncertainty (rows of
    the parent CheXmask dataset); rows are then spread evenly over the table.
    Masks come from the rows' RLE columns when present, else are rasterized
    from the landmarks.  Each panel is 260 px square.

    Raises
    ------
    InputError
        Empty table, ``n < 1``, or (``color_by="sigma"``) no row with landmark std.
    """
    from matplotlib.colors import ListedColormap

    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    if table.height == 0:
        raise InputError("the table is empty: nothing to plot")
    if color_by not in ("sigma", "organ"):
        raise InputError(f"color_by must be 'sigma' or 'organ', got {color_by!r}")
    by_sigma = color_by == "sigma"
    if by_sigma:
        if "landmarks_std" not in table.columns or table["landmarks_std"].null_count() == table.height:
            raise InputError(
                "no row has landmark std: plot_sample_grid(color_by='sigma') needs CheXmask-U uncertainty columns; "
                "use color_by='organ' to draw the contours only"
            )
        rows = _spread_rows(table.filter(pl.col("landmarks_std").is_not_null()), n)
    else:
        rows = table[np.unique(np.linspace(0, table.height - 1, n).round().astype(int)).tolist()]
    parsed = [row_arrays(r) for r in rows.iter_rows(named=True)]
    sigmas = [_node_sigma(std) if by_sigma else None for _, std, _ in parsed]
    norm = _sigma_norm(np.concatenate(sigmas), None, None) if by_sigma else None
    cmap = _sigma_cmap(SIGMA_CMAP)
    count = len(parsed)
    columns = min(count, GRID_COLUMNS)
    lines = -(-count // columns)
    panel, header, colorbar_width = 260, 50, 110 if by_sigma else 10
    fig = _figure(panel * columns + colorbar_width, (panel + header) * lines, 100)
    width, height = fig.bbox.width, fig.bbox.height
    label_cmap = ListedColormap(["#f2f2f2", "#aec7e8", "#98df8a", "#ff9896"])
    artist = None
    for i, (row, (landmarks, _, size), sigma) in enumerate(zip(rows.iter_rows(named=True), parsed, sigmas)):
        line, column = divmod(i, columns)
        bottom = height - (line + 1) * (panel + header) + 0.03 * (panel + header)
        ax = fig.add_axes(((column * panel + 5) / width, bottom / height, (panel - 10) / width, 0.82 * (panel + header) / height))
        ax.imshow(_masks_of_row(row, landmarks, size), cmap=label_cmap, vmin=0, vmax=3, interpolation="nearest")
        artist = _draw_contours(ax, landmarks, sigma, norm, cmap, marker_size=6) or artist
        ax.set_xticks([])
        ax.set_yticks([])
        detail = f"mean sigma {np.nanmean(sigma):.1f} px" if sigma is not None else str(row.get("image_id", ""))[:28]
        ax.set_title(f"{row.get('source') or 'row'}\n{detail}", fontsize=8)
        if i == 0:
            _organ_legend(ax, fontsize=6)
    if by_sigma:
        cax = fig.add_axes(((panel * columns + 20) / width, 0.1, 18 / width, 0.72 if lines == 1 else 0.8))
        fig.colorbar(artist, cax=cax, label="node sigma (px)")
    return _finish(fig, path)


def _finite_column(table: pl.DataFrame, column: str) -> pl.DataFrame:
    if column not in table.columns:
        raise InputError(f"the table has no column {column!r}")
    kept = table.filter(pl.col(column).is_not_null() & pl.col(column).cast(pl.Float64).is_finite())
    if kept.height == 0:
        raise InputError(f"column {column!r} has no finite value ({table.height} rows, all null or NaN)")
    return kept


def plot_sigma_by_source(
    table: pl.DataFrame,
    column: str = "node_sigma_mean",
    *,
    kind: str = "violin",
    unit: str = "px",
    width_px: int = 720,
    height_px: int = 420,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
) -> Any:
    """Distribution of an image-level uncertainty per source: ``kind`` = ``"violin"``, ``"box"`` or ``"hist"``.

    Rows with a null or NaN value are left out; sources keep the table's order
    of first appearance.  ``unit`` labels the axis (use ``""`` for latent sigma).
    """
    if kind not in ("violin", "box", "hist"):
        raise InputError(f"kind must be 'violin', 'box' or 'hist', got {kind!r}")
    kept = _finite_column(table, column)
    if "source" in kept.columns:
        sources = kept["source"].fill_null("unknown").unique(maintain_order=True).to_list()
        by_source = kept.with_columns(pl.col("source").fill_null("unknown"))
        groups = [by_source.filter(pl.col("source") == s)[column].to_numpy().astype(np.float64) for s in sources]
    else:
        sources, groups = ["all rows"], [kept[column].to_numpy().astype(np.float64)]
    label = column.replace("_", " ") + (f" ({unit})" if unit else "")
    fig = _figure(width_px, height_px, dpi)
    ax = fig.add_subplot()
    if kind == "hist":
        bins = np.histogram_bin_edges(np.concatenate(groups), bins="auto")
        for source, values in zip(sources, groups):
            ax.hist(values, bins=bins, histtype="step", lw=1.5, label=f"{source} (n={len(values)})")
        ax.set_xlabel(label)
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
    else:
        positions = np.arange(1, len(sources) + 1)
        if kind == "violin":
            drawable = [g if len(g) > 1 else np.repeat(g, 2) for g in groups]
            ax.violinplot(drawable, positions=positions, showmedians=True)
        else:
            ax.boxplot(groups, positions=positions)
        ax.set_xticks(positions, [f"{s}\nn={len(g)}" for s, g in zip(sources, groups)], fontsize=8)
        ax.set_ylabel(label)
    ax.set_title(f"{column.replace('_', ' ')} per source", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.17, top=0.9)
    return _finish(fig, path)


HEXBIN_ROWS = 5000
"""Tables with more rows than this get a hexbin instead of a scatter in :func:`plot_sigma_vs_dice`."""


def plot_sigma_vs_dice(
    table: pl.DataFrame,
    sigma: str = "node_sigma_mean",
    dice: str = "dice_rca_max",
    *,
    threshold: float | None = 0.7,
    hexbin: bool | None = None,
    width_px: int = 600,
    height_px: int = 480,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
) -> Any:
    """Image-level sigma against a Dice RCA column; hexbin above :data:`HEXBIN_ROWS` rows.

    ``threshold`` draws the OOD line (the paper's ``Dice RCA (Max) < 0.7``);
    rows with a null/NaN in either column are left out.
    """
    kept = _finite_column(_finite_column(table, sigma), dice)
    x = kept[sigma].to_numpy().astype(np.float64)
    y = kept[dice].to_numpy().astype(np.float64)
    use_hexbin = kept.height > HEXBIN_ROWS if hexbin is None else bool(hexbin)
    fig = _figure(width_px, height_px, dpi)
    ax = fig.add_subplot()
    if use_hexbin:
        cells = ax.hexbin(x, y, gridsize=50, bins="log", cmap="viridis", mincnt=1)
        fig.colorbar(cells, ax=ax, label="images (log)")
    elif "source" in kept.columns:
        for source in kept["source"].unique(maintain_order=True).to_list():
            part = kept.filter(pl.col("source") == source)
            ax.scatter(part[sigma].to_numpy(), part[dice].to_numpy(), s=10, alpha=0.7, label=source)
        ax.legend(fontsize=8)
    else:
        ax.scatter(x, y, s=10, alpha=0.7)
    if threshold is not None:
        ax.axhline(threshold, color="black", ls="--", lw=1, label=f"Dice RCA = {threshold:g} (OOD below)")
        ax.legend(fontsize=8)
    ax.set_xlabel(sigma.replace("_", " ") + (" (px)" if sigma.startswith(("node_", "sigma_")) else ""))
    ax.set_ylabel(dice.replace("_", " "))
    ax.set_title(f"{sigma.replace('_', ' ')} vs {dice.replace('_', ' ')} (n={kept.height})", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.95, bottom=0.12, top=0.92)
    return _finish(fig, path)


CORRUPTION_UNITS: dict[str, str] = {
    "noise": "Gaussian noise std, gray levels of 0-255",
    "blur": "Gaussian blur sigma, px",
    "occlusion": "occluding square side, px",
}
"""Axis label of each corruption's severity (see :mod:`chexmask_u_tools.analysis.corruptions`)."""


def plot_uncertainty_vs_corruption(
    results: pl.DataFrame,
    *,
    measures: Sequence[str] = ("node_sigma_mean", "latent_sigma_mean"),
    random_weights: bool = False,
    width_px: int = 900,
    height_px: int = 400,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
) -> Any:
    """Box plots of each uncertainty measure per corruption severity (one panel per measure).

    ``results`` is the table of
    :func:`chexmask_u_tools.analysis.uncertainty_vs_corruption` (columns
    ``kind``, ``severity`` and the measures).  ``random_weights=True`` says in
    the title that the model had random weights (the figure then shows the
    pipeline, not the published model's behaviour).
    """
    for column in ("severity", *measures):
        if column not in results.columns:
            raise InputError(f"results have no column {column!r}")
    if results.height == 0:
        raise InputError("the results table is empty")
    kind = results["kind"][0] if "kind" in results.columns else "corruption"
    severities = sorted(results["severity"].unique().to_list())
    fig = _figure(width_px, height_px, dpi)
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    for ax, measure in zip(axes, measures):
        groups = [
            results.filter(pl.col("severity") == s)[measure].drop_nulls().to_numpy().astype(np.float64) for s in severities
        ]
        ax.boxplot(groups, positions=np.arange(len(severities)))
        ax.set_xticks(np.arange(len(severities)), [f"{s:g}" for s in severities], fontsize=8)
        ax.set_xlabel(f"{kind} severity ({CORRUPTION_UNITS.get(kind, 'as given')})")
        ax.set_ylabel(measure.replace("_", " ") + (" (px, 1024 frame)" if measure.startswith("node_") else " (unitless)"))
    suffix = " (model with RANDOM weights: illustration only)" if random_weights else ""
    fig.suptitle(f"uncertainty vs {kind}{suffix}", fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.88, wspace=0.3)
    return _finish(fig, path)


def plot_roc(
    labels: np.ndarray,
    scores: Mapping[str, np.ndarray],
    *,
    width_px: int = 480,
    height_px: int = 460,
    dpi: int = 100,
    path: str | os.PathLike | None = None,
) -> Any:
    """ROC curves of several scores against one boolean label (positive = True), AUC in the legend."""
    from chexmask_u_tools.analysis.stats import roc_auc, roc_curve

    if not scores:
        raise InputError("no scores to plot")
    fig = _figure(width_px, height_px, dpi)
    ax = fig.add_subplot()
    for name, values in scores.items():
        fpr, tpr = roc_curve(labels, values)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc(labels, values):.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="lower right")
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.95)
    return _finish(fig, path)
