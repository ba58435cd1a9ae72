"""Run-length encoding of CheXmask masks.

Convention (SPEC section 3): a space-separated ``"start length start length ..."``
string; ``start`` is the 1-based index of the run's first pixel in the mask
flattened row-major (C order) as ``(height, width)``.  This is *not* COCO RLE
(column-major counts).  A missing or blank string is an empty mask.  Runs must
be in increasing order and must not overlap; every length is at least 1.

Decoding writes whole runs with ``np.repeat`` over alternating gap/run counts
(no per-run Python loop); the batch functions parse every string of a batch in
one vectorized polars pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl

from chexmask_u_tools.errors import InputError, RLEError
from chexmask_u_tools.schema import check_mask_size



def _is_missing(rle: object) -> bool:
    if rle is None:
        return True
    if isinstance(rle, float) and np.isnan(rle):
        return True
    return isinstance(rle, str) and not rle.strip()


def _run_counts(pairs: np.ndarray, n_pixels: int) -> np.ndarray:
    """Validate ``(R, 2)`` 1-based (start, length) runs; return gap/run counts for np.repeat.

    Raises a located-less RLEError; callers add file/row context.
    """
    starts = pairs[:, 0] - 1
    lengths = pairs[:, 1]
    if (starts < 0).any():
        raise RLEError(f"run start {int(pairs[np.argmax(starts < 0), 0])} is below 1")
    if (lengths < 1).any():
        raise RLEError(f"run length {int(lengths[np.argmax(lengths < 1)])} is below 1")
    ends = starts + lengths
    if ends[-1] > n_pixels or (ends > n_pixels).any():
        raise RLEError(f"run ends at pixel {int(ends.max())}, past the mask's {n_pixels} pixels")
    gaps = np.empty_like(starts)
    gaps[0] = starts[0]
    gaps[1:] = starts[1:] - ends[:-1]
    if (gaps < 0).any():
        raise RLEError("runs overlap or are not in increasing order")
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    counts[0:-1:2] = gaps
    counts[1::2] = lengths
    counts[-1] = n_pixels - ends[-1]
    return counts


def _parse_runs(rle: str) -> np.ndarray:
    # np.fromstring is the fastest exact integer tokenizer numpy has; its
    # "could not be read to its end" warning is promoted to an error so that a
    # malformed string can never decode to a silently truncated mask.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(rle, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            bad = next((t for t in rle.split() if not t.lstrip("-").isdigit()), rle[:20])
            raise RLEError(f"run-length string contains a non-integer value {bad!r}") from None
    if values.size % 2:
        raise RLEError(f"odd number of values ({values.size}) in run-length string")
    return values.reshape(-1, 2)


def _fill_runs(counts: np.ndarray) -> np.ndarray:
    """Expand alternating gap/run counts (gap first) into a flat bool array."""
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts)


def rle_decode(rle: str | None, height: int, width: int) -> np.ndarray:
    """Decode one run-length string into a boolean mask.

    Parameters
    ----------
    rle:
        ``"start length ..."`` with 1-based row-major starts; ``None``, NaN or a
        blank string decode to an empty mask.
    height, width:
        Mask size in pixels.

    Returns
    -------
    ``(height, width)`` bool array.

    Raises
    ------
    RLEError
        Non-integer tokens, an odd token count, a start below 1, a length
        below 1, overlapping or unordered runs, or a run past ``height * width``.
    InputError
        Non-positive size.
    """
    height, width = check_mask_size(height, width)
    n_pixels = height * width
    if _is_missing(rle):
        return np.zeros((height, width), dtype=bool)
    if not isinstance(rle, str):
        raise RLEError(f"run-length value must be a string, got {type(rle).__name__}")
    pairs = _parse_runs(rle)
    if len(pairs) == 0:
        return np.zeros((height, width), dtype=bool)
    counts = _run_counts(pairs, n_pixels)
    return _fill_runs(counts).reshape(height, width)


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = inside) as a CheXmask run-length string.

    Returns ``""`` for an empty mask.  ``rle_decode(rle_encode(m), *m.shape)``
    equals ``m != 0``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    flat = mask.reshape(-1) != 0
    padded = np.empty(flat.size + 2, dtype=np.int8)
    padded[0] = padded[-1] = 0
    padded[1:-1] = flat
    edges = np.flatnonzero(np.diff(padded))
    if edges.size == 0:
        return ""
    runs = edges.reshape(-1, 2)
    runs[:, 1] -= runs[:, 0]
    runs[:, 0] += 1
    return " ".join(map(str, runs.reshape(-1).tolist()))


def rle_decode_many(
    rles: Sequence[str | None],
    height: int | Sequence[int],
    width: int | Sequence[int],
) -> np.ndarray | list[np.ndarray]:
    """Decode many run-length strings at once.

    Parameters
    ----------
    rles:
        B strings (``None``/NaN/blank = empty mask).
    height, width:
        One size for all masks, or one per mask.

    Returns
    -------
    A ``(B, H, W)`` bool array when every mask has the same size, else a list
    of ``(H_b, W_b)`` bool arrays.

    Raises
    ------
    RLEError
        For the first malformed string, with ``row`` set to its position.
    """
    n = len(rles)
    heights = np.broadcast_to(np.asarray(height), (n,))
    widths = np.broadcast_to(np.asarray(width), (n,))
    for row in range(n):
        try:
            check_mask_size(heights[row], widths[row])
        except InputError as error:
            raise InputError(f"mask {row}: {error}") from None
    texts = pl.Series([None if _is_missing(r) else r for r in rles], dtype=pl.String)
    tokens = texts.str.strip_chars().str.split(" ")
    numbers = tokens.cast(pl.List(pl.Int64), strict=False)
    bad = numbers.list.eval(pl.element().is_null()).list.any().fill_null(False)
    if bad.any():
        # Let the scalar decoder produce the precise message for the first bad string.
        row = int(bad.arg_max())
        try:
            rle_decode(texts[row], heights[row], widths[row])
        except RLEError as error:
            raise error.located(row=row) from None
        raise RLEError("run-length string contains a non-integer value", row=row)
    same_size = n > 0 and (heights == heights[0]).all() and (widths == widths[0]).all()
    if same_size:
        return _decode_same_size(numbers, int(heights[0]), int(widths[0]))
    masks = []
    for row in range(n):
        try:
            masks.append(_decode_values(numbers[row], int(heights[row]), int(widths[row])))
        except RLEError as error:
            raise error.located(row=row) from None
    return masks


def _decode_values(values: pl.Series | None, height: int, width: int) -> np.ndarray:
    if values is None or len(values) == 0:
        return np.zeros((height, width), dtype=bool)
    array = values.to_numpy()
    if array.size % 2:
        raise RLEError(f"odd number of values ({array.size}) in run-length string")
    counts = _run_counts(array.reshape(-1, 2), height * width)
    return _fill_runs(counts).reshape(height, width)


def _decode_same_size(numbers: pl.Series, height: int, width: int) -> np.ndarray:
    """Decode B same-size masks as one long mask of B * H * W pixels."""
    n_pixels = height * width
    n = len(numbers)
    lengths = numbers.list.len().fill_null(0).to_numpy()
    odd = np.flatnonzero(lengths % 2)
    if odd.size:
        row = int(odd[0])
        raise RLEError(f"odd number of values ({int(lengths[row])}) in run-length string", row=row)
    flat = numbers.explode().drop_nulls().to_numpy().reshape(-1, 2)
    if flat.size == 0:
        return np.zeros((n, height, width), dtype=bool)
    owner = np.repeat(np.arange(n), lengths // 2)
    # Validate per mask (starts >= 1, lengths >= 1, inside the mask, increasing),
    # then shift every mask's runs to its own block of the long mask.
    starts, run_lengths = flat[:, 0], flat[:, 1]
    ends = starts - 1 + run_lengths
    problem = (starts < 1) | (run_lengths < 1) | (ends > n_pixels)
    first_of_mask = np.ones(len(flat), dtype=bool)
    first_of_mask[1:] = owner[1:] != owner[:-1]
    previous_end = np.empty_like(ends)
    previous_end[0] = 0
    previous_end[1:] = ends[:-1]
    problem |= ~first_of_mask & (starts - 1 < previous_end)
    if problem.any():
        row = int(owner[np.argmax(problem)])
        try:
            _decode_values(numbers[row], height, width)
        except RLEError as error:
            raise error.located(row=row) from None
    shifted = flat.copy()
    shifted[:, 0] += owner * n_pixels
    counts = _run_counts(shifted, n * n_pixels)
    return _fill_runs(counts).reshape(n, height, width)


def rle_encode_many(masks: np.ndarray | Sequence[np.ndarray]) -> list[str]:
    """Encode a ``(B, H, W)`` array (or a sequence of 2-D masks) into B strings."""
    if isinstance(masks, np.ndarray) and masks.ndim != 3:
        raise InputError(f"rle_encode_many expects (B, H, W) masks, got shape {masks.shape}")
    return [rle_encode(mask) for mask in masks]
