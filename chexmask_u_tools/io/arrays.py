"""Canonical tables from a user's own arrays: their model's landmarks, manual annotations, predictions.

:func:`table_from_arrays` validates numpy arrays (and optional RLE strings) and
returns the canonical table every other function takes, with the uncertainty
summaries computed, so that a user never has to write a CSV with a fake id
column to get there.  Masks are taken as given (run-length strings); drawing
them from the landmarks is the rasterizer's job (``chexmask_u_tools.masks``),
which sits above this layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.io.rle import rle_problems
from chexmask_u_tools.layout import N_LATENT, N_NODES, ORGANS
from chexmask_u_tools.schema import (
    BASE_SCHEMA,
    CANONICAL_SCHEMA,
    FRAMES,
    MAX_MASK_PIXELS,
    PREPROCESSED_SIZE,
    RLE_COLUMNS,
    check_mask_size,
)
from chexmask_u_tools.select.uncertainty import summary_expressions
from chexmask_u_tools.sources import source_label

__all__ = ["table_from_arrays"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float_array(value: object, name: str, shape: tuple[int, ...], *, non_negative: bool) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be numeric, got {type(value).__name__}: {error}") from None
    if array.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {array.shape}")
    bad = ~np.isfinite(array) | (np.abs(array) > _FLOAT32_MAX)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{name}{list(index)} is {float(array[index])}: values must be finite float32 numbers")
    if non_negative and (array < 0).any():
        index = tuple(int(i) for i in np.argwhere(array < 0)[0])
        raise InputError(f"{name}{list(index)} is {float(array[index])}: values must be non-negative")
    return array.astype(np.float32)


def _per_row(value: object, name: str, n: int) -> np.ndarray:
    array = np.asarray(value, dtype=object)
    if array.ndim == 0:
        return np.full(n, array.item(), dtype=object)
    if array.shape != (n,):
        raise InputError(f"{name} must be one value or {n} values (one per row), got shape {array.shape}")
    return array


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
) -> pl.DataFrame:
    """A validated canonical table (with the uncertainty summaries) from arrays.

    Parameters
    ----------
    landmarks:
        ``(N, 120, 2)`` x, y pixels in ``frame`` (node order: right lung 0-43,
        left lung 44-93, heart 94-119).
    std:
        ``(N, 120, 2)`` per-node standard deviations (pixels, non-negative), or None.
    latent_sigma:
        ``(N, 64)`` posterior sigmas (non-negative), or None.
    image_ids:
        N ids; None numbers the rows ``"0"``, ``"1"`` ... (documented, not guessed).
    source:
        One of the five sources (any spelling) or a label for private data.
    frame:
        ``preprocessed`` (masks on the 1024 grid) or ``original`` (masks on
        ``height`` x ``width``; both then required).
    height, width:
        The image size, one for all rows or one per row; in the preprocessed
        frame, None means 1024 (the frame's own size).
    dice_rca_mean, dice_rca_max:
        Quality estimates, one for all or one per row (None: missing).
    rle_right_lung, rle_left_lung, rle_heart:
        N run-length strings (None/"" = empty), checked against each row's mask size.

    Returns
    -------
    A ``pl.DataFrame`` with exactly :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA`.

    Raises
    ------
    InputError
        A wrong shape, a non-finite or out-of-float32-range value, a negative
        std or sigma, a bad size, frame or source, or a malformed RLE string;
        the message names the argument (and the row).

    Examples
    --------
    >>> import numpy as np
    >>> points = np.random.default_rng(0).uniform(200, 800, size=(2, 120, 2))
    >>> table = table_from_arrays(points, std=np.full((2, 120, 2), 3.0), image_ids=["a.png", "b.png"])
    >>> table.select("source", "image_id", "frame", "height", "node_sigma_mean").rows()
    [('private', 'a.png', 'preprocessed', 1024, 3.0), ('private', 'b.png', 'preprocessed', 1024, 3.0)]
    """
    points = np.asarray(landmarks) if landmarks is not None else None
    if points is None or points.ndim != 3:
        shape = None if points is None else points.shape
        raise InputError(f"landmarks must have shape (N, {N_NODES}, 2), got {shape}")
    n = points.shape[0]
    points = _float_array(points, "landmarks", (n, N_NODES, 2), non_negative=False)
    std_values = None if std is None else _float_array(std, "std", (n, N_NODES, 2), non_negative=True)
    latents = None if latent_sigma is None else _float_array(latent_sigma, "latent_sigma", (n, N_LATENT), non_negative=True)
    if frame not in FRAMES:
        raise InputError(f"frame must be one of {FRAMES}, got {frame!r}")
    label = source_label(source)
    if image_ids is None:
        ids = [str(i) for i in range(n)]
    else:
        ids = list(image_ids)
        if len(ids) != n:
            raise InputError(f"image_ids has {len(ids)} values for {n} rows of landmarks")
        for row, value in enumerate(ids):
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"image_ids[{row}] must be a non-empty string, got {value!r}")

    if frame == "original" and (height is None or width is None):
        raise InputError("frame='original' needs height= and width= (the image size the landmarks live on)")
    heights = _per_row(PREPROCESSED_SIZE if height is None else height, "height", n)
    widths = _per_row(PREPROCESSED_SIZE if width is None else width, "width", n)
    sizes = []
    for row in range(n):
        try:
            sizes.append(check_mask_size(heights[row], widths[row], max_pixels=MAX_MASK_PIXELS))
        except InputError as error:
            raise InputError(f"row {row}: {error}") from None
    n_pixels = [
        PREPROCESSED_SIZE * PREPROCESSED_SIZE if frame == "preprocessed" else h * w for h, w in sizes
    ]

    def dice(value: object, name: str) -> list[float | None]:
        values = _per_row(value, name, n)
        out = []
        for row, item in enumerate(values):
            if item is None or (isinstance(item, float) and np.isnan(item)):
                out.append(None)
                continue
            if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, float, np.integer, np.floating)):
                raise InputError(f"{name}[{row}] must be a number or None, got {item!r}")
            if not np.isfinite(item):
                raise InputError(f"{name}[{row}] must be finite, got {item!r}")
            out.append(float(item))
        return out

    columns: dict[str, object] = {
        "source": [label] * n,
        "image_id": ids,
        "frame": [frame] * n,
        "height": [h for h, _ in sizes],
        "width": [w for _, w in sizes],
        "dice_rca_mean": dice(dice_rca_mean, "dice_rca_mean"),
        "dice_rca_max": dice(dice_rca_max, "dice_rca_max"),
        "landmarks": points,
        "landmarks_std": std_values if std_values is not None else [None] * n,
        "latent_sigma": latents if latents is not None else [None] * n,
    }
    for organ, given in zip(ORGANS, (rle_right_lung, rle_left_lung, rle_heart)):
        name = RLE_COLUMNS[organ]
        if given is None:
            columns[name] = [None] * n
            continue
        texts = list(given)
        if len(texts) != n:
            raise InputError(f"{name} has {len(texts)} values for {n} rows")
        for row, text in enumerate(texts):
            if text is not None and not isinstance(text, str):
                raise InputError(f"{name}[{row}] must be a run-length string or None, got {type(text).__name__}")
        problems = rle_problems(texts, pl.Series(n_pixels, dtype=pl.Int64))
        if problems.null_count() < n:
            row = int(problems.is_not_null().arg_max())
            raise InputError(f"{name}[{row}]: {problems[row]}")
        columns[name] = [None if t is None or not t.strip() else t for t in texts]
    table = pl.DataFrame(
        {name: pl.Series(name, values, dtype=BASE_SCHEMA[name]) for name, values in columns.items()}
    )
    return table.with_columns(summary_expressions()).select(
        pl.col(name).cast(dtype) for name, dtype in CANONICAL_SCHEMA.items()
    )
