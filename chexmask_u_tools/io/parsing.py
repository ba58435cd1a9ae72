"""Parsing of the number strings stored in CheXmask(-U) files, without ``eval``.

Two layouts occur in released files (SPEC section 3), for landmarks, stds and
latent sigmas alike:

* a flat comma list ``"x0,y0,x1,y1,..."`` (ints in most files, ``363.0``-style
  floats in some);
* a numpy-printed array such as ``"[[ 512  300]\\n [ 498  310] ...]"``.

Both are handled by one tokenizer: every run of brackets, whitespace and commas
is a separator, and each remaining token must be a finite decimal number.  The
tokenizer is a polars expression (:func:`number_list_expr`), so a whole column
of strings is parsed in one vectorized, multi-threaded pass; the scalar
functions are the batch functions applied to one string.

The table readers parse whole columns with :func:`parse_number_column`: a
compiled kernel (:func:`~chexmask_u_tools.kernels.parse.parse_number_lists`)
reads the column's Arrow buffers (offsets plus bytes) straight into a float32
array and hands every string it cannot vouch for (an exponent, a long
mantissa, a wrong count, a stray character) to the polars expressions, which
decide and word the problem.  Both give the same values: the decimal's
correctly rounded float64, cast to float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from chexmask_u_tools import kernels  # kernels.parse (and numba) load at the first read, not at import
from chexmask_u_tools.errors import PointsParseError

_SEPARATORS = r"[\[\]\s,]+"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def number_list_expr(column: str | pl.Expr, *, numpy_printed: bool | None = True) -> pl.Expr:
    """Polars expression: a String column of number strings -> ``List(Float64)``.

    Missing and blank strings give null.  A token that is not a number gives a
    null *element* (detect it with :func:`number_list_problem_expr`).

    ``numpy_printed=False`` accepts only the flat comma layout (spaces
    allowed, and removed before splitting), which parses about four times
    faster; a numpy-printed string then shows up as a non-numeric value rather
    than being misread.  ``numpy_printed=None`` reads each string in its own
    layout: numpy-printed where it holds a ``[``, flat otherwise (the table
    readers' rule, the same whatever rows are read together).
    """
    expr = pl.col(column) if isinstance(column, str) else column
    if numpy_printed is None:
        return (
            pl.when(expr.str.contains("[", literal=True))
            .then(number_list_expr(expr, numpy_printed=True))
            .otherwise(number_list_expr(expr, numpy_printed=False))
        )
    if numpy_printed:
        tokens = expr.str.replace_all(_SEPARATORS, ",").str.strip_chars(",")
    else:
        tokens = expr.str.replace_all(" ", "", literal=True)
    return (
        pl.when(tokens.str.len_bytes() > 0)
        .then(tokens.str.split(",").cast(pl.List(pl.Float64), strict=False))
        .otherwise(None)
    )


def number_list_problem_expr(
    parsed: pl.Expr, *, expected_len: int | None, allow_negative: bool, what: str
) -> pl.Expr:
    """Polars expression describing what is wrong with a parsed number list.

    Parameters
    ----------
    parsed:
        An expression of dtype ``List(Float64)`` from :func:`number_list_expr`.
    expected_len:
        Required number of values, or ``None`` to require only an even count
        (points) -- pass ``0`` for "any length".
    allow_negative:
        Whether negative values are legal (landmarks may be slightly negative;
        stds, sigmas, run lengths may not).
    what:
        Name of the quantity, used in the message.

    Returns
    -------
    A String expression: null when the list is fine (or null), else the reason.
    """
    length = parsed.list.len()
    non_numeric = parsed.list.eval(pl.element().is_null()).list.any()
    # The canonical table stores float32: 1e300 or 3.5e38 would become inf there, so it is as bad as NaN.
    # (list.max/min skip NaN, which the element-wise test catches.)
    non_finite = (
        parsed.list.eval(~pl.element().is_finite()).list.any()
        | (parsed.list.max() > _FLOAT32_MAX)
        | (parsed.list.min() < -_FLOAT32_MAX)
    )
    negative = parsed.list.eval(pl.element() < 0).list.any()
    if expected_len is None:
        bad_length = (length % 2) == 1
        length_reason = pl.format("{} has an odd number of values ({})", pl.lit(what), length)
    elif expected_len == 0:
        bad_length = pl.lit(False)
        length_reason = pl.lit("")
    else:
        bad_length = length != expected_len
        length_reason = pl.format(
            "{} has {} numbers, expected {}", pl.lit(what), length, pl.lit(expected_len)
        )
    problem = (
        pl.when(parsed.is_null())
        .then(None)
        .when(non_numeric)
        .then(pl.lit(f"{what} contains a non-numeric value"))
        .when(non_finite)
        .then(pl.lit(f"{what} contains a non-finite value (NaN, inf, or beyond the float32 range of +-3.4e38)"))
        .when(bad_length)
        .then(length_reason)
    )
    if not allow_negative:
        problem = problem.when(negative).then(pl.lit(f"{what} contains a negative value"))
    return problem.otherwise(None)


def string_buffers(texts: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A String Series as Arrow lays it out: ``(offsets, data, valid)``.

    ``offsets`` is int64 ``(n + 1,)``, ``data`` the uint8 bytes, so that string
    ``i`` is ``data[offsets[i]:offsets[i + 1]]``; ``valid`` is bool ``(n,)``
    (False where null).  The offsets and bytes are views of one contiguous
    Arrow ``large_string`` array (a copy only when the Series is held in
    several chunks or as string views).

    Examples
    --------
    >>> offsets, data, valid = string_buffers(pl.Series(["ab", None, "c"]))
    >>> offsets.tolist(), bytes(data), valid.tolist()
    ([0, 2, 2, 3], b'abc', [True, False, True])
    """
    import pyarrow as pa

    array = texts.cast(pl.String).to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type != pa.large_string():
        array = array.cast(pa.large_string())
    _, offset_buffer, data_buffer = array.buffers()
    n = len(array)
    if offset_buffer is None:  # an empty array may come without buffers
        return np.zeros(n + 1, dtype=np.int64), np.empty(0, dtype=np.uint8), np.zeros(n, dtype=bool)
    offsets = np.frombuffer(offset_buffer, dtype=np.int64, count=n + 1, offset=array.offset * 8)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, dtype=np.uint8)
    valid = texts.is_not_null().to_numpy()
    return offsets, data, valid


def parse_number_column(
    texts: pl.Series, width: int, *, allow_negative: bool, what: str
) -> tuple[np.ndarray, np.ndarray, pl.Series]:
    """Parse a column of number strings holding ``width`` values each.

    Each string is read in its own layout: a numpy-printed array
    (``[[ 512  300]\\n [...]]``) where it holds a ``[``, else a flat comma list
    (``number_list_expr(..., numpy_printed=None)``), so that a row reads the
    same whatever rows it is read with.

    Parameters
    ----------
    texts:
        n strings (null or blank: missing).
    width:
        The required number of values (240 for landmarks and stds, 64 for latents).
    allow_negative:
        Whether negative values are legal.
    what:
        The quantity's name in problems (``"landmarks"``).

    Returns
    -------
    ``(values, present, problems)``: ``values`` float32 ``(n, width)``, defined
    where ``present`` (bool ``(n,)``) is True; ``problems`` a String Series of
    n reasons (as :func:`number_list_problem_expr` words them), null where the
    string is fine or missing.  A row is missing where it is neither present
    nor has a problem.

    Examples
    --------
    >>> values, present, problems = parse_number_column(
    ...     pl.Series(["1,2", "[[3 4]]", None, "1,x"]), 2, allow_negative=True, what="points"
    ... )
    >>> values[:2].tolist(), present.tolist(), problems.to_list()
    ([[1.0, 2.0], [3.0, 4.0]], [True, True, False, False], [None, None, None, 'points contains a non-numeric value'])
    """
    n = len(texts)
    values = np.empty((n, width), dtype=np.float32)
    offsets, data, valid = string_buffers(texts)
    status = kernels.parse.parse_number_lists(offsets, data, valid, width, allow_negative, values)
    problems = pl.Series(what, [None] * n, dtype=pl.String)
    unsure = np.flatnonzero(status == kernels.parse.LIST_UNSURE)
    if unsure.size:
        # The reference parser decides the strings the kernel could not vouch for, and words their problems.
        checked = pl.DataFrame({"text": texts.gather(unsure)}).select(
            parsed=number_list_expr("text", numpy_printed=None)
        ).with_columns(
            problem=number_list_problem_expr(
                pl.col("parsed"), expected_len=width, allow_negative=allow_negative, what=what
            )
        )
        fine = checked["problem"].is_null().to_numpy() & checked["parsed"].is_not_null().to_numpy()
        if fine.any():
            parsed = checked.filter(pl.Series(fine))["parsed"].list.to_array(width).to_numpy()
            values[unsure[fine]] = parsed.astype(np.float32)
        status[unsure[fine]] = kernels.parse.LIST_OK
        status[unsure[~fine & checked["parsed"].is_null().to_numpy()]] = kernels.parse.LIST_MISSING
        problems = problems.scatter(unsure, checked["problem"])
    return values, status == kernels.parse.LIST_OK, problems


def parse_numbers_many(
    texts: Sequence[str | None],
    *,
    expected_len: int | None = None,
    allow_negative: bool = True,
    what: str = "value list",
) -> list[np.ndarray | None]:
    """Parse many number strings into 1-D float64 arrays (``None`` for missing).

    Raises
    ------
    PointsParseError
        Naming the 0-based position (``row``) of the first malformed string.
    """
    frame = pl.DataFrame({"text": pl.Series(list(texts), dtype=pl.String)})
    frame = frame.with_columns(parsed=number_list_expr("text")).with_columns(
        problem=number_list_problem_expr(
            pl.col("parsed"), expected_len=expected_len, allow_negative=allow_negative, what=what
        )
    )
    problems = frame["problem"]
    if problems.null_count() < len(problems):
        row = int(problems.is_not_null().arg_max())
        raise PointsParseError(f"{problems[row]}: {_preview(frame['text'][row])}", row=row)
    return [None if values is None else values.to_numpy() for values in frame["parsed"]]


def parse_numbers(text: str, *, expected_len: int | None = None, allow_negative: bool = True) -> np.ndarray:
    """Parse one number string (either layout) into a 1-D float64 array.

    Raises
    ------
    PointsParseError
        If the string is missing or blank, holds a non-numeric or non-finite
        token (also one beyond the float32 range), has the wrong number of values, or (``allow_negative=False``) a
        negative value.
    """
    if text is None or not isinstance(text, str):
        raise PointsParseError(f"expected a string of numbers, got {type(text).__name__}")
    try:
        (values,) = parse_numbers_many(
            [text], expected_len=expected_len, allow_negative=allow_negative, what="value list"
        )
    except PointsParseError as error:
        raise PointsParseError(error.reason) from None
    if values is None:
        raise PointsParseError("empty number string")
    return values


def parse_points(text: str, n_nodes: int | None = None) -> np.ndarray:
    """Parse a landmark (or std) string into an ``(N, 2)`` float64 array of (x, y).

    Parameters
    ----------
    text:
        ``"x0,y0,x1,y1,..."`` or a numpy-printed ``(N, 2)`` array.
    n_nodes:
        If given, the required number of points (120 for CheXmask landmarks).

    Returns
    -------
    ``(N, 2)`` float64 array, x = column, y = row, in the file's pixel frame.

    Raises
    ------
    PointsParseError
        On a missing/blank string, a non-numeric or non-finite token, an odd
        number of values, or a point count other than ``n_nodes``.

    Examples
    --------
    >>> parse_points("512,300,498,310")
    array([[512., 300.],
           [498., 310.]])
    >>> parse_points("[[ 512  300]\\n [ 498  310]]").shape
    (2, 2)
    >>> parse_points("1,2,3,4", n_nodes=120)
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.PointsParseError: value list has 4 numbers, expected 240: '1,2,3,4'
    """
    values = parse_numbers(text, expected_len=None if n_nodes is None else 2 * n_nodes)
    if values.size % 2:
        raise PointsParseError(f"odd number of values ({values.size}): {_preview(text)}")
    return values.reshape(-1, 2)


def format_points(points: np.ndarray, decimals: int | None = None) -> str:
    """Inverse of :func:`parse_points` in the flat layout: ``(N, 2) -> "x0,y0,..."``.

    ``decimals=None`` writes integers when every value is integral (as the
    released landmark strings do) and shortest round-trip floats otherwise.
    """
    flat = np.asarray(points, dtype=np.float64).reshape(-1)
    if decimals is not None:
        return ",".join(f"{value:.{decimals}f}" for value in flat)
    if np.all(flat == np.round(flat)):
        return ",".join(str(int(value)) for value in flat)
    return ",".join(repr(float(value)) for value in flat)


def _preview(text: object, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
