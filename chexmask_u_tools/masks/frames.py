"""Mapping between the 1024x1024 preprocessed frame and the original image frame.

CheXmask-U's model saw each image zero-padded to a centred square and resized
to 1024x1024 (SPEC section 4).  For an original image of ``height`` x ``width``
pixels the mapping used by CheXmask-U is::

    s        = 1024 / max(height, width)
    pad_left = (1024 - round(width * s)) // 2
    pad_top  = (1024 - round(height * s)) // 2
    x_orig   = (x_1024 - pad_left) / s          y_orig = (y_1024 - pad_top) / s
    std_orig = std_1024 / s

and the original-frame landmarks are rounded and clipped to
``[0, width - 1] x [0, height - 1]``.  ``round`` is round-half-to-even
(Python's ``round`` and ``numpy.round``).  The inverse is ``x_1024 = x_orig * s
+ pad_left``.  The mapping ignores the black-border crop applied to MIMIC-CXR
and Padchest images before padding, as CheXmask-U does.

Broadcasting: ``points`` is (..., 2) with x then y in the last axis (a (120, 2)
landmark set, a (B, 120, 2) batch, or a (B, 2) set of single points).
``height`` and ``width`` are scalars or arrays over the LEADING axes of
``points`` (shape ``points.shape[:k]``); they are right-padded with length-1
axes, so ``height`` of shape (B,) goes with points of shape (B, 120, 2).
Std arrays follow the same rule, whether per-axis (..., 2) or per-node (...,).

In a table (:func:`convert_table_frame`), ``height``/``width`` of a row
always mean the ORIGINAL image size once a row is in the ``original`` frame.
A ``preprocessed`` row of the released data carries either the mask size
(1024 x 1024, parent dataset's 1024 files) or the original size
(``OriginalResolution`` files); a preprocessed row whose height and width are
both 1024 (or null) is therefore treated as NOT carrying its original size,
and the caller must pass it (``original_height`` / ``original_width``).  After
conversion in either direction ``height``/``width`` hold the original image
size, so the conversion can be undone; a preprocessed row's mask size is
:data:`~chexmask_u_tools.schema.PREPROCESSED_SIZE` by definition.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.schema import FRAMES, LANDMARKS_DTYPE, PREPROCESSED_SIZE, RLE_COLUMNS

__all__ = [
    "convert_table_frame",
    "frame_scale",
    "landmarks_on_image",
    "std_to_original_frame",
    "std_to_preprocessed_frame",
    "to_original_frame",
    "to_preprocessed_frame",
]

# Node-sigma summaries are linear in the std, so a frame change rescales them.
_SIGMA_SUMMARIES = ("node_sigma_mean", "node_sigma_max", "sigma_right_lung", "sigma_left_lung", "sigma_heart")

SizeArg = Union[None, int, str, Sequence[int], np.ndarray, pl.Series]


def _sizes(height, width) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(height)
    w = np.asarray(width)
    for name, v in (("height", h), ("width", w)):
        if v.dtype == object or not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
            raise InputError(f"{name} must be numeric, got dtype {v.dtype}")
        if not np.isfinite(v).all() or (v <= 0).any():
            raise InputError(f"{name} must be positive and finite")
        if np.issubdtype(v.dtype, np.floating) and (v != np.round(v)).any():
            raise InputError(f"{name} must be whole pixels")
    return h.astype(np.float64), w.astype(np.float64)


def frame_scale(height, width) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale and padding of the preprocessed frame for original size ``height`` x ``width``.

    Returns float64 arrays ``(s, pad_left, pad_top)`` of the broadcast shape of
    ``height`` and ``width``: ``s = 1024 / max(height, width)`` and the pads in
    1024-frame pixels (integers).

    Raises
    ------
    InputError
        A size that is not a positive whole number of pixels.

    Examples
    --------
    A 2048 x 1024 (height x width) image is halved and centred with 256 px of
    padding on the left and on the right:

    >>> s, pad_left, pad_top = frame_scale(2048, 1024)
    >>> float(s), float(pad_left), float(pad_top)
    (0.5, 256.0, 0.0)
    >>> frame_scale([2048, 1000], [1024, 1000])[0].tolist()  # one size per row
    [0.5, 1.024]
    """
    h, w = _sizes(height, width)
    s = PREPROCESSED_SIZE / np.maximum(h, w)
    pad_left = (PREPROCESSED_SIZE - np.round(w * s)) // 2
    pad_top = (PREPROCESSED_SIZE - np.round(h * s)) // 2
    return s, pad_left, pad_top


def _expand(value: np.ndarray, ndim: int, what: str) -> np.ndarray:
    if value.ndim > ndim:
        raise InputError(f"height/width have more axes ({value.ndim}) than the leading axes of {what}")
    return value.reshape(value.shape + (1,) * (ndim - value.ndim))


def _as_xy(points, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64) if not isinstance(points, np.ndarray) else points
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name} must be numeric")
    if arr.ndim < 1 or arr.shape[-1] != 2:
        raise InputError(f"{name} must have shape (..., 2), got {arr.shape}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise InputError(f"{name} contains NaN")
    return arr


def to_original_frame(points, height, width, round_clip: bool = True) -> np.ndarray:
    """Map (..., 2) points from the 1024 preprocessed frame to the original image frame.

    ``height``/``width``: the ORIGINAL image size (see the module docstring for
    broadcasting).  With ``round_clip`` (the SPEC/CheXmask-U behaviour) the
    result is rounded half-to-even and clipped to ``[0, width-1] x [0, height-1]``;
    otherwise exact floats.  Returns float64 (integral values when rounded).

    Examples
    --------
    A 2048 x 1024 (height x width) image is scaled by 0.5 and padded by 256 px
    on the left and right of the 1024 square:

    >>> to_original_frame([[512.0, 512.0], [100.0, 0.0]], 2048, 1024)
    array([[ 512., 1024.],
           [   0.,    0.]])
    >>> to_original_frame([[100.0, 0.0]], 2048, 1024, round_clip=False)
    array([[-312.,    0.]])
    """
    p = _as_xy(points, "points")
    s, pad_left, pad_top = frame_scale(height, width)
    lead = p.ndim - 1
    s, pad_left, pad_top = (_expand(v, lead, "points") for v in (s, pad_left, pad_top))
    x = (p[..., 0] - pad_left) / s
    y = (p[..., 1] - pad_top) / s
    out = np.stack(np.broadcast_arrays(x, y), axis=-1)
    if round_clip:
        h, w = _sizes(height, width)
        h, w = _expand(h, lead, "points"), _expand(w, lead, "points")
        np.round(out, out=out)
        out[..., 0] = np.clip(out[..., 0], 0, w - 1)
        out[..., 1] = np.clip(out[..., 1], 0, h - 1)
    return out


def to_preprocessed_frame(points, height, width) -> np.ndarray:
    """Map (..., 2) original-frame points to the 1024 preprocessed frame (float64).

    ``x_1024 = x * s + pad_left``, ``y_1024 = y * s + pad_top``; ``height`` and
    ``width`` are the original image size.  Exact inverse of
    ``to_original_frame(..., round_clip=False)``.

    Examples
    --------
    >>> to_preprocessed_frame([[512.0, 1024.0]], 2048, 1024)
    array([[512., 512.]])
    >>> to_original_frame(to_preprocessed_frame([[3.0, 7.0]], 2048, 1024), 2048, 1024, round_clip=False)
    array([[3., 7.]])
    """
    p = _as_xy(points, "points")
    s, pad_left, pad_top = frame_scale(height, width)
    lead = p.ndim - 1
    s, pad_left, pad_top = (_expand(v, lead, "points") for v in (s, pad_left, pad_top))
    x = p[..., 0] * s + pad_left
    y = p[..., 1] * s + pad_top
    return np.stack(np.broadcast_arrays(x, y), axis=-1)


def _as_std(std) -> np.ndarray:
    arr = np.asarray(std, dtype=np.float64)
    if np.isnan(arr).any():
        raise InputError("std contains NaN")
    if (arr < 0).any():
        raise InputError("std must be non-negative")
    return arr


def std_to_original_frame(std, height, width) -> np.ndarray:
    """Std in 1024-frame pixels -> original-frame pixels: ``std / s`` (float64).

    ``std`` is per-axis (..., 2) or per-node (...,); ``height``/``width``
    broadcast over its leading axes (both std_x and std_y scale alike).

    Examples
    --------
    >>> std_to_original_frame([[2.0, 3.0]], 2048, 1024)  # s = 0.5: a 1024-frame pixel is 2 original ones
    array([[4., 6.]])
    >>> std_to_original_frame(np.full((2, 120), 2.0), [2048, 512], [1024, 512])[:, 0].tolist()  # per-node sigmas, one size per row
    [4.0, 1.0]
    """
    arr = _as_std(std)
    s = frame_scale(height, width)[0]
    return arr / _expand(s, arr.ndim, "std")


def std_to_preprocessed_frame(std, height, width) -> np.ndarray:
    """Std in original-frame pixels -> 1024-frame pixels: ``std * s`` (float64).

    Examples
    --------
    >>> std_to_preprocessed_frame([[4.0, 6.0]], 2048, 1024)
    array([[2., 3.]])
    """
    arr = _as_std(std)
    s = frame_scale(height, width)[0]
    return arr * _expand(s, arr.ndim, "std")


def _column_values(df: pl.DataFrame, value: SizeArg, name: str) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value not in df.columns:
            raise InputError(f"{name}: no column {value!r} in the table")
        series = df[value]
    elif isinstance(value, pl.Series):
        series = value
    else:
        arr = np.asarray(value)
        if arr.ndim == 0:
            arr = np.full(df.height, arr)
        series = pl.Series(name, arr)
    if len(series) != df.height:
        raise InputError(f"{name} has {len(series)} values for {df.height} rows")
    if series.null_count():
        raise InputError(f"{name} has missing values")
    return series.cast(pl.Float64).to_numpy()


def convert_table_frame(
    df: pl.DataFrame,
    frame: str,
    *,
    original_height: SizeArg = None,
    original_width: SizeArg = None,
    round_clip: bool = True,
) -> pl.DataFrame:
    """Express every row of a canonical table in ``frame`` (``"original"`` or ``"preprocessed"``).

    Rows already in ``frame`` are left as they are.  For the others
    ``landmarks`` and ``landmarks_std`` are mapped with the SPEC section 4
    formulas, ``frame`` is set, ``height``/``width`` are set to the original
    image size, the node-sigma summaries (linear in the std) are rescaled, and
    the ``rle_*`` columns become null: the released masks belong to the old
    frame; re-rasterize with :func:`chexmask_u_tools.masks.raster.rasterize_organs`.

    Parameters
    ----------
    df:
        Canonical table (:data:`chexmask_u_tools.schema.CANONICAL_SCHEMA` columns;
        at least ``frame``, ``height``, ``width``, ``landmarks``).
    frame:
        Target frame.
    original_height, original_width:
        The original image size, needed for preprocessed rows that do not carry
        it (height and width both 1024 or null; see the module docstring).  An
        int, a column name, or one value per row.  When given, they take
        precedence over the row's height/width for preprocessed rows.
    round_clip:
        Round and clip original-frame landmarks as CheXmask-U does (default).

    Raises
    ------
    InputError
        Unknown frame, missing columns, or a preprocessed row without a known
        original size.

    Examples
    --------
    A preprocessed row of a 2048 x 1024 image, which carries its original size:

    >>> import numpy as np, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> landmarks = np.full((1, 120, 2), 512.0, dtype=np.float32)
    >>> landmarks[0, 0] = (300.0, 100.0)
    >>> table = pl.DataFrame(
    ...     {"frame": ["preprocessed"], "height": [2048], "width": [1024], "landmarks": landmarks},
    ...     schema_overrides={"height": pl.Int32, "width": pl.Int32},
    ... )
    >>> original = cxu.convert_table_frame(table, "original")
    >>> original.select("frame", "height", "width").row(0), original["landmarks"].to_numpy()[0, :2].tolist()
    (('original', 2048, 1024), [[88.0, 200.0], [512.0, 1024.0]])
    >>> cxu.convert_table_frame(original, "preprocessed")["landmarks"].to_numpy()[0, 0].tolist()
    [300.0, 100.0]

    A row of a 1024 file does not say its original size; pass it:

    >>> square = table.with_columns(height=pl.lit(1024, pl.Int32), width=pl.lit(1024, pl.Int32))
    >>> cxu.convert_table_frame(square, "original")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: 1 preprocessed row(s) do not carry their original image size ...
    >>> cxu.convert_table_frame(square, "original", original_height=2048, original_width=1024)["height"].to_list()
    [2048]
    """
    if frame not in FRAMES:
        raise InputError(f"frame must be one of {FRAMES}, got {frame!r}")
    missing = [c for c in ("frame", "height", "width", "landmarks") if c not in df.columns]
    if missing:
        raise InputError(f"table lacks columns {missing}")
    row_frames = df["frame"].to_numpy()
    bad = ~np.isin(row_frames, np.array(FRAMES, dtype=object))
    if bad.any():
        raise InputError(f"rows with unknown frame values: {sorted(set(row_frames[bad].astype(str)))}")
    todo = row_frames != frame
    if not todo.any():
        return df

    h = df["height"].cast(pl.Float64).to_numpy().copy()
    w = df["width"].cast(pl.Float64).to_numpy().copy()
    given_h = _column_values(df, original_height, "original_height")
    given_w = _column_values(df, original_width, "original_width")
    if (given_h is None) != (given_w is None):
        raise InputError("pass both original_height and original_width, or neither")
    pre = row_frames == "preprocessed"
    if given_h is not None:
        h = np.where(pre, given_h, h)
        w = np.where(pre, given_w, w)
    else:
        unknown = pre & todo & (np.isnan(h) | np.isnan(w) | ((h == PREPROCESSED_SIZE) & (w == PREPROCESSED_SIZE)))
        if unknown.any():
            raise InputError(
                f"{int(unknown.sum())} preprocessed row(s) do not carry their original image size "
                f"(height/width are {PREPROCESSED_SIZE} or null); pass original_height/original_width"
            )
    need = todo & (np.isnan(h) | np.isnan(w))
    if need.any():
        raise InputError(f"{int(need.sum())} row(s) lack height/width needed for the frame change")
    h = np.where(todo, h, 1.0)
    w = np.where(todo, w, 1.0)

    s = frame_scale(h, w)[0]
    factor = np.where(todo, 1.0 / s if frame == "original" else s, 1.0)

    def mapped_points(column: str) -> pl.Series:
        arr = df[column].to_numpy().astype(np.float64)
        if frame == "original":
            new = to_original_frame(np.nan_to_num(arr), h, w, round_clip=round_clip)
        else:
            new = to_preprocessed_frame(np.nan_to_num(arr), h, w)
        arr = np.where(todo[:, None, None], new, arr)
        return pl.Series(column, arr.astype(np.float32), dtype=LANDMARKS_DTYPE)

    updates: list[pl.Expr | pl.Series] = []
    cols = [mapped_points("landmarks")]
    if "landmarks_std" in df.columns:
        std = df["landmarks_std"].to_numpy().astype(np.float64)
        std = std * factor[:, None, None]
        cols.append(pl.Series("landmarks_std", std.astype(np.float32), dtype=LANDMARKS_DTYPE))
    out = df.with_columns(
        [
            pl.when(df[c.name].is_null()).then(None).otherwise(c).alias(c.name)
            for c in cols
        ]
    )
    todo_s = pl.Series("todo", todo)
    updates.append(pl.when(todo_s).then(pl.lit(frame)).otherwise(pl.col("frame")).alias("frame"))
    orig_h = pl.Series("h", np.where(todo, h, 0).astype(np.int32))
    orig_w = pl.Series("w", np.where(todo, w, 0).astype(np.int32))
    updates.append(pl.when(todo_s).then(orig_h).otherwise(pl.col("height")).cast(df.schema["height"]).alias("height"))
    updates.append(pl.when(todo_s).then(orig_w).otherwise(pl.col("width")).cast(df.schema["width"]).alias("width"))
    fac = pl.Series("factor", factor)
    for c in _SIGMA_SUMMARIES:
        if c in df.columns:
            updates.append((pl.col(c) * fac).cast(df.schema[c]).alias(c))
    for c in RLE_COLUMNS.values():
        if c in df.columns:
            updates.append(pl.when(todo_s).then(None).otherwise(pl.col(c)).cast(df.schema[c]).alias(c))
    return out.with_columns(updates)


# --------------------------------------------------------------------------- row geometry


def landmarks_on_image(
    landmarks: np.ndarray,
    std: np.ndarray | None,
    *,
    row_frame: str,
    original_size: tuple[int, int] | None,
    frame: str,
    size: int | None,
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """A row's landmarks and std on an output image of the chosen frame and size.

    Parameters
    ----------
    landmarks, std:
        (120, 2) in pixels of ``row_frame``; ``std`` may be None.
    row_frame:
        ``"preprocessed"`` (1024 frame) or ``"original"``.
    original_size:
        ``(height, width)`` of the original image; needed unless both frames
        are ``"preprocessed"``.
    frame:
        Output frame.  ``"preprocessed"``: the 1024 frame (rows in the original
        frame are mapped by :func:`~chexmask_u_tools.masks.frames.to_preprocessed_frame`),
        scaled by ``size / 1024``.  ``"original"``: the original image (rows in
        the 1024 frame are mapped by :func:`~chexmask_u_tools.masks.frames.to_original_frame`,
        exact, not rounded), then x scaled by ``size / width`` and y by
        ``size / height`` (``size=None``: native size).
    size:
        Output side ``S`` (None: 1024 for ``"preprocessed"``, native for ``"original"``).

    Returns
    -------
    ``(landmarks, std, (out_height, out_width))``: float64 (120, 2) arrays
    (``std`` None when not given) and the output image size.

    Examples
    --------
    A preprocessed row of a 2048 x 1024 image, drawn on the original image and
    on a 256 x 256 model input:

    >>> from chexmask_u_tools.masks.frames import landmarks_on_image
    >>> landmarks = np.full((120, 2), 512.0)
    >>> landmarks[0] = (300.0, 100.0)
    >>> std = np.full((120, 2), 2.0)
    >>> points, sigma, size = landmarks_on_image(
    ...     landmarks, std, row_frame="preprocessed", original_size=(2048, 1024), frame="original", size=None
    ... )
    >>> points[0].tolist(), sigma[0].tolist(), size
    ([88.0, 200.0], [4.0, 4.0], (2048, 1024))
    >>> points, _, size = landmarks_on_image(
    ...     landmarks, None, row_frame="preprocessed", original_size=None, frame="preprocessed", size=256
    ... )
    >>> points[0].tolist(), size
    ([75.0, 25.0], (256, 256))
    """
    if frame not in FRAMES or row_frame not in FRAMES:
        raise InputError(f"frames must be one of {FRAMES}, got frame={frame!r}, row_frame={row_frame!r}")
    landmarks = np.asarray(landmarks, dtype=np.float64)
    std = None if std is None else np.asarray(std, dtype=np.float64)
    if original_size is None and "original" in (frame, row_frame):
        raise InputError("the original image size is needed to move landmarks between the original and 1024 frames")
    if frame == "preprocessed":
        if row_frame == "original":
            oh, ow = original_size
            landmarks = to_preprocessed_frame(landmarks, oh, ow)
            std = None if std is None else std_to_preprocessed_frame(std, oh, ow)
        side = PREPROCESSED_SIZE if size is None else int(size)
        out = (side, side)
        factor = np.array([side / PREPROCESSED_SIZE] * 2)
    else:
        oh, ow = original_size
        if row_frame == "preprocessed":
            landmarks = to_original_frame(landmarks, oh, ow, round_clip=False)
            std = None if std is None else std_to_original_frame(std, oh, ow)
        out = (int(oh), int(ow)) if size is None else (int(size), int(size))
        factor = np.array([out[1] / ow, out[0] / oh])
    return landmarks * factor, None if std is None else std * factor, out
