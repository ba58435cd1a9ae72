"""Run-length encoding of CheXmask masks.

Convention (SPEC section 3): a whitespace-separated ``"start length start length ..."``
string; ``start`` is the 1-based index of the run's first pixel in the mask
flattened row-major (C order) as ``(height, width)``.  This is *not* COCO RLE
(column-major counts).  A missing or blank string is an empty mask.  Runs must
be in increasing order and must not overlap; every length is at least 1.

Validation comes before any arithmetic: every start and length is compared
with ``height * width`` (itself at most :data:`~chexmask_u_tools.schema.MAX_MASK_PIXELS`)
before ends are computed, so no value can wrap around int64, and every decoder
(:func:`rle_decode`, :func:`rle_decode_many`, the readers' ``check_masks``)
applies the same rule through :func:`rle_problems`.

Two implementations decode and encode, chosen by ``method=``
(:func:`rle_method`; ``"auto"`` takes the faster):

* ``"kernel"`` (compiled, :mod:`chexmask_u_tools.kernels.rle`): one pass over
  the string's bytes reads and checks the runs, and a second writes every byte
  of the mask once, straight into the caller's buffer (``out=``) or to the
  ``shape=`` grid; encoding scans the mask eight bytes at a time and writes the
  digits itself.  A string that is not in the plain form (ASCII digits, spaces,
  tabs, line breaks) or holds a bad run goes to the numpy reference, so every
  error is the reference's, with its message, raised before anything is written.
* ``"numpy"`` (the reference): ``np.fromstring`` tokenizes, :func:`rle_problems`'
  rule checks, and ``np.repeat`` over alternating gap/run counts writes whole
  runs (no per-run Python loop).

Both give the same masks and strings bit for bit (the tests pin it on
generated strings and the released masks).  :func:`rle_problems` checks a
whole column of strings in one vectorized polars pass (the readers'
``check_masks``).  Writing into a buffer the caller reuses (``out=``) avoids
fresh pages for every mask, which is most of a fresh decode's cost.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from chexmask_u_tools import kernels  # kernels.rle (and numba) load at the first call, not at import
from chexmask_u_tools.errors import InputError, RLEError
from chexmask_u_tools.kernels.dispatch import METHODS, resolve_method
from chexmask_u_tools.schema import MAX_MASK_PIXELS, check_mask_size, nearest_indices

__all__ = [
    "RLE_METHODS",
    "rle_decode",
    "rle_decode_many",
    "rle_encode",
    "rle_encode_many",
    "rle_method",
    "rle_problems",
]

RLE_METHODS = METHODS
"""Values of the ``method=`` argument of the decoders and encoders."""

_OK, _START_BELOW_1, _LENGTH_BELOW_1, _PAST_END, _OVERLAP = range(5)


def _is_missing(rle: object) -> bool:
    if rle is None:
        return True
    if isinstance(rle, float) and np.isnan(rle):
        return True
    return isinstance(rle, str) and not rle.strip()


def _check_size(height: object, width: object) -> tuple[int, int]:
    if type(height) is int and type(width) is int and 0 < height and 0 < width and height * width <= MAX_MASK_PIXELS:
        return height, width  # the common case without the general checks' cost (a mask decodes in ~20 us)
    return check_mask_size(height, width, max_pixels=MAX_MASK_PIXELS)


def _run_codes(
    starts: np.ndarray, lengths: np.ndarray, n_pixels: np.ndarray | int, first_of_mask: np.ndarray
) -> np.ndarray:
    """Per-run problem code (``_OK`` ...) of 1-based runs; only the first code of a mask is meaningful.

    Starts and lengths are bounded by ``n_pixels`` before ``start - 1 + length``
    is formed, so the sum cannot overflow whatever the input integers are.
    """
    too_big = (starts > n_pixels) | (lengths > n_pixels)
    safe_starts = np.where(too_big, 1, starts)
    ends = safe_starts - 1 + np.where(too_big, 1, lengths)
    previous_end = np.empty_like(ends)
    if len(ends):
        previous_end[0] = 0
        previous_end[1:] = ends[:-1]
    overlap = ~first_of_mask & (safe_starts - 1 < previous_end)
    return np.select(
        [starts < 1, lengths < 1, too_big | (ends > n_pixels), overlap],
        [_START_BELOW_1, _LENGTH_BELOW_1, _PAST_END, _OVERLAP],
        _OK,
    ).astype(np.int8)


def _message(code: int, start: int, length: int, n_pixels: int) -> str:
    if code == _START_BELOW_1:
        return f"run start {start} is below 1"
    if code == _LENGTH_BELOW_1:
        return f"run length {length} is below 1"
    if code == _PAST_END:
        return f"run ends at pixel {start - 1 + length}, past the mask's {n_pixels} pixels"
    return "runs overlap or are not in increasing order"


def rle_problems(rles: pl.Series | Sequence[str | None], n_pixels: pl.Series | Sequence[int | None] | int) -> pl.Series:
    """What is wrong with each run-length string, checked against its mask's pixel count.

    The one validation rule of every decoder: integer tokens only, an even
    count, starts and lengths at least 1, runs inside ``n_pixels``, increasing
    and not overlapping.

    Parameters
    ----------
    rles:
        B strings (null/blank: an empty mask, always fine).
    n_pixels:
        ``height * width`` per string, or one value for all (null: unknown, only
        the token checks apply).

    Returns
    -------
    A String Series of B reasons, null where the string is fine.

    Examples
    --------
    >>> rle_problems(["1 4", "3 2 4 1", "1 99999999999", None], 12).to_list()
    [None, 'runs overlap or are not in increasing order', "run ends at pixel 99999999999, past the mask's 12 pixels", None]
    """
    texts = pl.Series(rles, dtype=pl.String) if not isinstance(rles, pl.Series) else rles.cast(pl.String)
    n = len(texts)
    if isinstance(n_pixels, (int, np.integer)):
        sizes = np.full(n, int(n_pixels), dtype=np.int64)
        known = np.ones(n, dtype=bool)
    else:
        size_series = pl.Series(n_pixels, dtype=pl.Int64) if not isinstance(n_pixels, pl.Series) else n_pixels.cast(pl.Int64)
        known = size_series.is_not_null().to_numpy()
        sizes = size_series.fill_null(0).to_numpy().astype(np.int64)
    tokens = texts.str.extract_all(r"\S+")
    numbers = tokens.cast(pl.List(pl.Int64), strict=False)
    problems: list[str | None] = [None] * n
    non_int = numbers.list.eval(pl.element().is_null()).list.any().fill_null(False).to_numpy()
    counts = numbers.list.len().fill_null(0).to_numpy()
    for row in np.flatnonzero(non_int):
        bad = next(t for t, v in zip(tokens[int(row)], numbers[int(row)]) if v is None)
        problems[row] = f"run-length string contains a non-integer or out-of-range value {bad[:30]!r}"
    for row in np.flatnonzero(~non_int & (counts % 2 == 1)):
        problems[row] = f"odd number of values ({int(counts[row])}) in run-length string"
    usable = ~non_int & (counts % 2 == 0) & known & (counts > 0)
    if usable.any():
        rows = np.flatnonzero(usable)
        flat = numbers.filter(pl.Series(usable)).explode().to_numpy().astype(np.int64).reshape(-1, 2)
        owner = np.repeat(rows, counts[rows] // 2)
        first_of_mask = np.ones(len(flat), dtype=bool)
        first_of_mask[1:] = owner[1:] != owner[:-1]
        codes = _run_codes(flat[:, 0], flat[:, 1], sizes[owner], first_of_mask)
        bad_runs = np.flatnonzero(codes)
        if bad_runs.size:
            first_bad_rows, first_bad = np.unique(owner[bad_runs], return_index=True)
            for row, run in zip(first_bad_rows.tolist(), bad_runs[first_bad].tolist()):
                problems[row] = _message(int(codes[run]), int(flat[run, 0]), int(flat[run, 1]), int(sizes[row]))
    return pl.Series(problems, dtype=pl.String)


def _parse_runs(rle: str) -> np.ndarray:
    # np.fromstring is the fastest exact integer tokenizer numpy has (any
    # whitespace separates); its "could not be read to its end" warning is
    # promoted to an error so that a malformed string can never decode to a
    # silently truncated mask.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(rle, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            bad = next((t for t in rle.split() if not t.lstrip("+-").isdigit()), rle[:20])
            raise RLEError(f"run-length string contains a non-integer value {bad[:30]!r}") from None
    if values.size % 2:
        raise RLEError(f"odd number of values ({values.size}) in run-length string")
    return values.reshape(-1, 2)


def _validate(pairs: np.ndarray, n_pixels: int, text: str | None = None) -> None:
    """Raise RLEError (without location) for the first bad run of one mask."""
    if len(pairs) == 0:
        return
    starts, lengths = pairs[:, 0], pairs[:, 1]
    # Fast path, a few reductions: every value in 1..n_pixels first (so the sums below cannot wrap),
    # then runs increasing, not overlapping and inside the mask.
    if starts.min() >= 1 and lengths.min() >= 1 and starts.max() <= n_pixels and lengths.max() <= n_pixels:
        ends = starts - 1 + lengths
        if ends.max() <= n_pixels and (len(pairs) == 1 or (starts[1:] > ends[:-1]).all()):
            return
    first = np.zeros(len(pairs), dtype=bool)
    first[:1] = True
    codes = _run_codes(pairs[:, 0], pairs[:, 1], n_pixels, first)
    bad = np.flatnonzero(codes)
    if bad.size:
        run = int(bad[0])
        start, length = int(pairs[run, 0]), int(pairs[run, 1])
        if text is not None and (abs(start) >= 2**62 or abs(length) >= 2**62):
            # np.fromstring saturates huge tokens at the int64 limits: quote the text instead.
            token = text.split()[2 * run + (abs(start) < 2**62)]
            raise RLEError(f"run-length value {token[:30]!r} is out of range for a mask of {n_pixels} pixels")
        raise RLEError(_message(int(codes[run]), start, length, n_pixels))


def _checked_runs(rle: object, n_pixels: int) -> np.ndarray:
    """(n, 2) int64 (start, length) of one mask string, validated; empty for a missing mask."""
    if _is_missing(rle):
        return np.empty((0, 2), dtype=np.int64)
    if not isinstance(rle, str):
        raise RLEError(f"run-length value must be a string, got {type(rle).__name__}")
    pairs = _parse_runs(rle)
    _validate(pairs, n_pixels, rle)
    return pairs


def rle_method(height: int, width: int) -> str:
    """The implementation ``method="auto"`` uses for masks of this size: ``"kernel"`` or ``"numpy"``.

    The compiled kernels, except where numba's JIT is disabled
    (``NUMBA_DISABLE_JIT=1``: they would run as plain Python).
    ``scripts/bench_io.py`` prints both; the kernels were faster at every size
    measured (8 x 8 to 2048 x 2048), decoding, decoding to a ``shape=`` and encoding.

    Examples
    --------
    >>> rle_method(1024, 1024)
    'kernel'
    """
    _check_size(height, width)
    return _use("auto")


def _use(method: str) -> str:
    """The implementation a ``method=`` argument names."""
    use = resolve_method(method)
    if use is None:
        raise InputError(f"method must be one of {RLE_METHODS}, got {method!r}")
    return use


def _kernel_runs(rle: object, n_pixels: int) -> np.ndarray:
    """:func:`_checked_runs` by the compiled reader; strings it does not read go to the reference (its errors)."""
    if _is_missing(rle) or type(rle) is not str or not rle.isascii():
        return _checked_runs(rle, n_pixels)
    text = rle.encode("ascii")
    pairs = np.empty((kernels.rle.pair_capacity(len(text)), 2), dtype=np.int64)
    count = kernels.rle.parse_runs(text, n_pixels, pairs)
    if count < 0:
        return _checked_runs(rle, n_pixels)  # raises the reference's error, or reads a rare valid form ("+3")
    return pairs[:count]


def _destination(out: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, Any]:
    """(array, what the kernels write, torch tensor to copy into afterwards or None) for a caller's ``out``.

    The kernels write C-contiguous bool / uint8 arrays in place: the array
    itself when it is one, else a uint8 scratch array copied in afterwards.
    """
    if out is None:
        array = np.empty(shape, dtype=bool)
        return array, array, None
    if (type(out) is np.ndarray and out.shape == shape and out.dtype.char in "?B" and out.flags.c_contiguous
            and out.flags.writeable):
        return out, out, None  # the common case, without the general checks' cost
    array, tensor = _as_writable(out, shape)
    return array, (array if array.flags.c_contiguous else np.empty(shape, dtype=np.uint8)), tensor


def _delivered(array: np.ndarray, written: np.ndarray, tensor: Any, out: Any) -> Any:
    """``out`` (or the fresh array) once the kernels wrote ``written``: copied in where they could not write in place."""
    if written is not array:
        np.copyto(array, written, casting="unsafe")
    if tensor is not None:
        import torch

        tensor.copy_(torch.from_numpy(array))
    return array if out is None else out


def _kernel_fill(pairs: np.ndarray, height: int, width: int, into: np.ndarray) -> None:
    """Write checked runs of a ``(height, width)`` mask, sampled to ``into``'s (h, w), into ``into``."""
    if into.shape == (height, width):
        kernels.rle.fill_runs(pairs, len(pairs), into)
    else:
        rows, cols = nearest_indices(height, into.shape[0]), nearest_indices(width, into.shape[1])
        kernels.rle.fill_runs_resampled(pairs, len(pairs), width, rows, cols, into)


def _kernel_decode(rle: object, height: int, width: int, target: tuple[int, int], out: Any) -> Any:
    """:func:`rle_decode` by the kernels: a plain string at full size in one call (read, checked, then written)."""
    array, written, tensor = _destination(out, target)
    if target == (height, width) and type(rle) is str and rle.isascii():
        if kernels.rle.decode_runs(rle.encode("ascii"), height * width, written) >= 0:
            return _delivered(array, written, tensor, out)
    _kernel_fill(_kernel_runs(rle, height * width), height, width, written)
    return _delivered(array, written, tensor, out)


def _gap_counts(starts0: np.ndarray, lengths: np.ndarray, n_pixels: int) -> np.ndarray:
    """Alternating gap/run counts (gap first) of valid 0-based runs, for np.repeat."""
    ends = starts0 + lengths
    counts = np.empty(2 * len(starts0) + 1, dtype=np.int64)
    counts[0] = starts0[0]
    counts[2:-1:2] = starts0[1:] - ends[:-1]
    counts[1:-1:2] = lengths
    counts[-1] = n_pixels - ends[-1]
    return counts


def _fill(starts0: np.ndarray, lengths: np.ndarray, n_pixels: int) -> np.ndarray:
    """Flat bool array of ``n_pixels`` with the valid 0-based runs set."""
    if len(starts0) == 0:
        return np.zeros(n_pixels, dtype=bool)
    values = np.zeros(2 * len(starts0) + 1, dtype=bool)
    values[1::2] = True
    return np.repeat(values, _gap_counts(starts0, lengths, n_pixels))


def _row_segments(starts0: np.ndarray, lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split valid 0-based runs at row ends: (row, first column, end column) per piece."""
    ends = starts0 + lengths
    first_row = starts0 // width
    pieces = (ends - 1) // width - first_row + 1
    owner = np.repeat(np.arange(len(starts0)), pieces)
    offset = np.arange(owner.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    rows = first_row[owner] + offset
    col0 = np.maximum(starts0[owner] - rows * width, 0)
    col1 = np.minimum(ends[owner] - rows * width, width)
    return rows, col0, col1


def _fill_resampled(
    starts0: np.ndarray, lengths: np.ndarray, height: int, width: int, shape: tuple[int, int]
) -> np.ndarray:
    """Flat bool ``shape`` mask equal to the full mask sampled at :func:`nearest_indices`, without building it."""
    out_h, out_w = shape
    row_index = nearest_indices(height, out_h)
    col_index = nearest_indices(width, out_w)
    if len(starts0) == 0:
        return np.zeros(out_h * out_w, dtype=bool)
    rows, col0, col1 = _row_segments(starts0, lengths, width)
    # Every new row sampling a full row, every new column inside a piece.
    first_new_row = np.searchsorted(row_index, rows, "left")
    n_new_rows = np.searchsorted(row_index, rows, "right") - first_new_row
    new_col0 = np.searchsorted(col_index, col0, "left")
    new_col1 = np.searchsorted(col_index, col1, "left")
    keep = (n_new_rows > 0) & (new_col1 > new_col0)
    piece = np.repeat(np.flatnonzero(keep), n_new_rows[keep])
    new_row = first_new_row[piece] + (
        np.arange(piece.size) - np.repeat(np.cumsum(n_new_rows[keep]) - n_new_rows[keep], n_new_rows[keep])
    )
    new_starts = new_row * out_w + new_col0[piece]
    new_lengths = new_col1[piece] - new_col0[piece]
    order = np.argsort(new_starts, kind="stable")
    return _fill(new_starts[order], new_lengths[order], out_h * out_w)


def _check_shape(shape: object) -> tuple[int, int]:
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise InputError(f"shape must be a (height, width) pair, got {shape!r}")
    return _check_size(*shape)


def _as_writable(out: Any, shape: tuple[int, ...], argument: str = "out") -> tuple[np.ndarray, Any]:
    """(numpy view to write, torch tensor to copy into afterwards or None) of a caller's buffer."""
    if isinstance(out, np.ndarray):
        array, tensor = out, None
    elif type(out).__module__.startswith("torch"):
        import torch

        if not isinstance(out, torch.Tensor):
            raise InputError(f"{argument} must be a numpy array or a torch tensor, got {type(out).__name__}")
        tensor = out
        if out.dtype not in (torch.bool, torch.uint8):
            raise InputError(f"{argument} must have dtype bool or uint8, got {out.dtype}")
        if out.device.type == "cpu" and out.is_contiguous() and not out.requires_grad:
            array, tensor = out.numpy(), None
        else:
            array = np.empty(tuple(out.shape), dtype=bool if out.dtype == torch.bool else np.uint8)
    else:
        raise InputError(f"{argument} must be a numpy array or a torch tensor, got {type(out).__name__}")
    if tuple(array.shape) != tuple(shape):
        raise InputError(f"{argument} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    if array.dtype not in (np.bool_, np.uint8):
        raise InputError(f"{argument} must have dtype bool or uint8, got {array.dtype}")
    if not array.flags.writeable:
        raise InputError(f"{argument} is read-only")
    return array, tensor


def _deliver(flat: np.ndarray, shape: tuple[int, ...], out: Any) -> Any:
    if out is None:
        return flat.reshape(shape)
    array, tensor = _as_writable(out, shape)
    np.copyto(array, flat.reshape(shape), casting="unsafe")
    if tensor is not None:
        import torch

        tensor.copy_(torch.from_numpy(array))
    return out


def rle_decode(
    rle: str | None,
    height: int,
    width: int,
    *,
    shape: tuple[int, int] | None = None,
    out: Any = None,
    method: str = "auto",
) -> np.ndarray:
    """Decode one run-length string into a boolean mask.

    Parameters
    ----------
    rle:
        ``"start length ..."`` with 1-based row-major starts, separated by any
        whitespace; ``None``, NaN or a blank string decode to an empty mask.
    height, width:
        Mask size in pixels; ``height * width`` at most
        :data:`~chexmask_u_tools.schema.MAX_MASK_PIXELS`.
    shape:
        Decode straight to a ``(h, w)`` grid: the result equals the full mask
        sampled at :func:`~chexmask_u_tools.schema.nearest_indices` rows and
        columns (the nearest-neighbour rule matching ``rasterize(..., from_size=)``),
        without allocating the full mask.
    out:
        A caller's ``(H, W)`` buffer (numpy array or torch tensor, bool or
        uint8; ``(h, w)`` with ``shape``) to fill instead of allocating; it is
        overwritten entirely and returned.
    method:
        ``"auto"`` (default: :func:`rle_method`), ``"kernel"`` (compiled: reads
        the string's bytes and writes the mask in place) or ``"numpy"`` (the
        reference); the same mask and the same errors.

    Returns
    -------
    ``(height, width)`` (or ``shape``) bool array, or ``out``.

    Raises
    ------
    RLEError
        Non-integer tokens, an odd token count, a start below 1, a length
        below 1, overlapping or unordered runs, or a run past ``height * width``
        (found before anything is written to ``out``).
    InputError
        Non-positive or too large size, a bad ``out`` or ``method``.

    Examples
    --------
    >>> rle_decode("2 3 7 1", 2, 4).astype(int)
    array([[0, 1, 1, 1],
           [0, 0, 1, 0]])
    >>> rle_decode("1 2 5 2", 4, 4, shape=(2, 2)).astype(int)
    array([[1, 0],
           [0, 0]])
    >>> buffer = np.empty((2, 4), dtype=np.uint8)
    >>> rle_decode("3 2", 2, 4, out=buffer) is buffer, buffer.tolist()
    (True, [[0, 0, 1, 1], [0, 0, 0, 0]])
    """
    height, width = _check_size(height, width)
    n_pixels = height * width
    target = (height, width) if shape is None else _check_shape(shape)
    if _use(method) == "kernel":
        return _kernel_decode(rle, height, width, target, out)
    if out is not None:
        _as_writable(out, target)  # the caller's buffer is checked before the string, as by the kernels
    pairs = _checked_runs(rle, n_pixels)
    if target == (height, width):
        flat = _fill(pairs[:, 0] - 1, pairs[:, 1], n_pixels)
    else:
        flat = _fill_resampled(pairs[:, 0] - 1, pairs[:, 1], height, width, target)
    return _deliver(flat, target, out)


def rle_encode(mask: np.ndarray, *, method: str = "auto") -> str:
    """Encode a 2-D mask (nonzero = inside) as a CheXmask run-length string.

    Returns ``""`` for an empty mask.  ``rle_decode(rle_encode(m), *m.shape)``
    equals ``m != 0``.  ``method``: ``"auto"`` (:func:`rle_method`),
    ``"kernel"`` (compiled: scans the mask eight bytes at a time and writes the
    digits) or ``"numpy"`` (the reference); the same string.

    Examples
    --------
    >>> rle_encode(np.array([[0, 1, 1], [1, 0, 0]]))
    '2 3'
    >>> rle_encode(np.zeros((2, 2)))
    ''
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    if _use(method) == "kernel":
        return _kernel_encode(mask)
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


def _kernel_encode(mask: np.ndarray) -> str:
    """:func:`rle_encode` of a 2-D array by the compiled encoder."""
    if mask.dtype in (np.bool_, np.uint8, np.int8):
        flat = np.ascontiguousarray(mask).reshape(-1).view(np.uint8)
    else:
        flat = (mask != 0).reshape(-1).view(np.uint8)
    words = flat[: flat.size - flat.size % 8].view(np.uint64)
    if not words.flags.aligned:
        words = np.empty(0, dtype=np.uint64)  # byte by byte
    return kernels.rle.encode_runs(flat, words).tobytes().decode("ascii")


def rle_decode_many(
    rles: Sequence[str | None],
    height: int | Sequence[int],
    width: int | Sequence[int],
    *,
    out: Any = None,
    method: str = "auto",
) -> np.ndarray | list[np.ndarray]:
    """Decode many run-length strings at once.

    Parameters
    ----------
    rles:
        B strings (``None``/NaN/blank = empty mask), any whitespace between tokens.
    height, width:
        One size for all masks, or one per mask.
    out:
        A caller's ``(B, H, W)`` buffer (numpy array or torch tensor, bool or
        uint8) to fill instead of allocating; all masks must share one size.
    method:
        As in :func:`rle_decode`.

    Returns
    -------
    A ``(B, H, W)`` bool array (or ``out``) when every mask has the same size,
    else a list of ``(H_b, W_b)`` bool arrays.

    Raises
    ------
    RLEError
        For the first malformed string, with ``row`` set to its position.

    Examples
    --------
    >>> rle_decode_many(["1 2", None, "3\\t1"], 1, 3).astype(int).tolist()
    [[[1, 1, 0]], [[0, 0, 0]], [[0, 0, 1]]]
    """
    n = len(rles)
    heights = np.broadcast_to(np.asarray(height), (n,))
    widths = np.broadcast_to(np.asarray(width), (n,))
    sizes = []
    for row in range(n):
        try:
            sizes.append(_check_size(heights[row], widths[row]))
        except InputError as error:
            raise InputError(f"mask {row}: {error}") from None
    use = _use(method)
    read = _kernel_runs if use == "kernel" else _checked_runs
    runs = []
    for row, rle in enumerate(rles):
        # One validation rule for every decoder: the reference's (the kernels' reader defers to it).
        try:
            pairs = read(rle, sizes[row][0] * sizes[row][1])
        except RLEError as error:
            raise error.located(row=row) from None
        runs.append(pairs)
    same_size = n > 0 and len(set(sizes)) == 1
    if not same_size:
        if out is not None:
            raise InputError("out= needs masks of one size; these masks differ in height or width")
        if use == "kernel":
            masks = [np.empty((h, w), dtype=bool) for h, w in sizes]
            for pairs, (h, w), mask in zip(runs, sizes, masks):
                _kernel_fill(pairs, h, w, mask)
            return masks
        return [
            _fill(pairs[:, 0] - 1, pairs[:, 1], h * w).reshape(h, w) for pairs, (h, w) in zip(runs, sizes)
        ]
    height, width = sizes[0]
    if use == "kernel":
        array, written, tensor = _destination(out, (n, height, width))
        for row, pairs in enumerate(runs):
            _kernel_fill(pairs, height, width, written[row])
        return _delivered(array, written, tensor, out)
    if out is not None:
        # Mask by mask: a one-mask scratch array is recycled by the allocator, a B-mask one is fresh pages.
        array, tensor = _as_writable(out, (n, height, width))
        for row, pairs in enumerate(runs):
            np.copyto(array[row].reshape(-1), _fill(pairs[:, 0] - 1, pairs[:, 1], height * width), casting="unsafe")
        if tensor is not None:
            import torch

            tensor.copy_(torch.from_numpy(array))
        return out
    # All B masks as one long mask of B * H * W pixels: each mask's runs shifted to its block.
    flat = np.concatenate(runs) if runs else np.empty((0, 2), dtype=np.int64)
    owner = np.repeat(np.arange(n), [len(pairs) for pairs in runs])
    starts0 = flat[:, 0] - 1 + owner * (height * width)
    return _fill(starts0, flat[:, 1], n * height * width).reshape(n, height, width)


def rle_encode_many(masks: np.ndarray | Sequence[np.ndarray], *, method: str = "auto") -> list[str]:
    """Encode a ``(B, H, W)`` array (or a sequence of 2-D masks) into B strings (``method`` as in :func:`rle_encode`)."""
    if isinstance(masks, np.ndarray) and masks.ndim != 3:
        raise InputError(f"rle_encode_many expects (B, H, W) masks, got shape {masks.shape}")
    return [rle_encode(mask, method=method) for mask in masks]
