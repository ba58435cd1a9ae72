"""Masks for whole tables: rasterize every row's landmarks into its run-length mask columns.

:func:`chexmask_u_tools.io.arrays.table_from_arrays` sits below the rasterizer
and takes masks only as given strings; :func:`table_from_arrays` here adds
``with_masks=True``, which draws them from the landmarks with
:func:`~chexmask_u_tools.masks.raster.rasterize_organs` and encodes them with
:func:`~chexmask_u_tools.io.rle.rle_encode`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.io import arrays as io_arrays
from chexmask_u_tools.io.rle import rle_encode
from chexmask_u_tools.layout import ORGANS
from chexmask_u_tools.masks.raster import rasterize_organs
from chexmask_u_tools.schema import RLE_COLUMNS, as_polars, mask_shape

__all__ = ["add_masks", "table_from_arrays"]


def add_masks(table: pl.DataFrame | pl.LazyFrame, *, allow_empty: bool = False) -> pl.DataFrame:
    """Fill ``rle_right_lung``, ``rle_left_lung`` and ``rle_heart`` of every row from its landmarks.

    Each row's landmarks are rasterized on the row's own mask grid
    (:func:`~chexmask_u_tools.schema.mask_shape`: 1024 x 1024 in the
    ``preprocessed`` frame, ``height`` x ``width`` in the ``original`` frame)
    and run-length encoded; existing mask strings are replaced.  An organ whose
    mask is empty gets None, as in
    :func:`~chexmask_u_tools.io.arrays.table_from_arrays`.

    Parameters
    ----------
    table:
        A canonical table (polars, or a pandas DataFrame with the canonical columns).
    allow_empty:
        By default a row whose landmarks have no vertex on its grid raises
        (its landmarks are almost surely in another frame); True gives it
        empty (None) masks instead.

    Returns
    -------
    ``pl.DataFrame``: the table with its three RLE columns replaced, columns
    and order unchanged.

    Raises
    ------
    InputError
        A row without landmarks, an original-frame row without a size, or
        (unless ``allow_empty``) landmarks off the grid; the message names the
        row and its ``image_id``.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> sample = cxu.load_sample().head(2)
    >>> table = add_masks(sample.with_columns(rle_heart=None))
    >>> mask = cxu.rle_decode(table["rle_heart"][0], 1024, 1024)
    >>> bool(mask.any()), table.columns == sample.columns
    (True, True)
    """
    frame = as_polars(table)
    frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    encoded: dict[str, list[str | None]] = {RLE_COLUMNS[organ]: [] for organ in ORGANS}
    rows = frame.select("image_id", "frame", "height", "width", "landmarks").iter_rows()
    for row, (image_id, row_frame, height, width, landmarks) in enumerate(rows):
        where = f"row {row} (image_id {image_id!r})"
        if landmarks is None:
            raise InputError(f"{where} has no landmarks to draw its masks from")
        try:
            grid = mask_shape(row_frame, height, width)
            masks = rasterize_organs(np.asarray(landmarks, dtype=np.float32), *grid, allow_empty=allow_empty)
        except InputError as error:
            raise InputError(f"{where}: {error} (allow_empty=True gives such rows empty masks)") from None
        for organ, mask in zip(ORGANS, masks, strict=True):
            encoded[RLE_COLUMNS[organ]].append(rle_encode(mask) or None)
    return frame.with_columns(pl.Series(name, values, dtype=pl.String) for name, values in encoded.items())


def table_from_arrays(
    landmarks: np.ndarray,
    std: np.ndarray | None = None,
    latent_sigma: np.ndarray | None = None,
    image_ids: Sequence[str] | None = None,
    source: str = "private",
    frame: str = "preprocessed",
    height: int | Sequence[int] | None = None,
    width: int | Sequence[int] | None = None,
    dice_rca_mean: float | Sequence[float | None] | None = None,
    dice_rca_max: float | Sequence[float | None] | None = None,
    rle_right_lung: Sequence[str | None] | None = None,
    rle_left_lung: Sequence[str | None] | None = None,
    rle_heart: Sequence[str | None] | None = None,
    *,
    with_masks: bool = False,
) -> pl.DataFrame:
    """A validated canonical table from arrays, with masks drawn from the landmarks on request.

    Every argument but ``with_masks`` is that of
    :func:`chexmask_u_tools.io.arrays.table_from_arrays` (shapes ``(N, 120, 2)``
    for ``landmarks``/``std``, ``(N, 64)`` for ``latent_sigma``; pixels of
    ``frame``), which validates them and computes the uncertainty summaries.

    Parameters
    ----------
    with_masks:
        True rasterizes every row's landmarks on its mask grid and fills the
        three RLE columns (:func:`add_masks`); it cannot be combined with
        given ``rle_*`` strings.

    Returns
    -------
    ``pl.DataFrame`` with exactly :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA`.

    Raises
    ------
    InputError
        As :func:`chexmask_u_tools.io.arrays.table_from_arrays`; also
        ``with_masks=True`` together with ``rle_*`` strings, or landmarks off
        the mask grid.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> points = cxu.load_sample()["landmarks"].to_numpy()[:2]  # (2, 120, 2), 1024 frame
    >>> table = cxu.table_from_arrays(points, std=np.full((2, 120, 2), 2.0), with_masks=True)
    >>> table["rle_heart"].null_count(), table["node_sigma_mean"].to_list()
    (0, [2.0, 2.0])
    """
    given = {"rle_right_lung": rle_right_lung, "rle_left_lung": rle_left_lung, "rle_heart": rle_heart}
    if with_masks and any(value is not None for value in given.values()):
        named = ", ".join(f"{name}=" for name, value in given.items() if value is not None)
        raise InputError(f"with_masks=True draws the masks from the landmarks; drop {named} or with_masks=True")
    table = io_arrays.table_from_arrays(
        landmarks,
        std=std,
        latent_sigma=latent_sigma,
        image_ids=image_ids,
        source=source,
        frame=frame,
        height=height,
        width=width,
        dice_rca_mean=dice_rca_mean,
        dice_rca_max=dice_rca_max,
        **given,
    )
    return add_masks(table) if with_masks else table
