"""Canonical tables as pandas DataFrames with real numpy arrays in the landmark cells.

:func:`to_pandas` is the way out; the way back in is
:func:`chexmask_u_tools.schema.as_polars`, which every function that takes a
table calls, so a pandas DataFrame from here can be passed anywhere a table is.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from chexmask_u_tools.schema import ARRAY_COLUMNS

__all__ = ["to_pandas"]


def _array_cells(series: pl.Series, shape: tuple[int, ...]) -> list[np.ndarray | None]:
    """One float32 numpy array of ``shape`` per row, None where the row is null."""
    valid = series.is_not_null().to_numpy()
    values = np.asarray(series.to_numpy(), dtype=np.float32).reshape(len(series), *shape)
    return [values[row].copy() if valid[row] else None for row in range(len(series))]


def to_pandas(table: pl.DataFrame | pl.LazyFrame):
    """A canonical table as a ``pandas.DataFrame`` with numpy arrays in the array columns.

    ``landmarks`` and ``landmarks_std`` cells are ``(120, 2)`` float32 numpy
    arrays (x, y pixels in the row's frame), ``latent_sigma`` cells ``(64,)``
    float32 arrays, and None where the value is missing.  The other columns
    keep their natural pandas dtypes, as ``polars.Series.to_pandas`` gives
    them (a missing string or float reads as NaN), except that an integer
    column with nulls takes pandas' nullable integer dtype (``Int32``), so
    that no image size becomes a float.
    :func:`~chexmask_u_tools.schema.as_polars` converts the result back exactly.

    Parameters
    ----------
    table:
        A canonical table (``pl.DataFrame`` or ``pl.LazyFrame``, collected here).

    Returns
    -------
    ``pandas.DataFrame`` with the same columns, in the same order, and a
    default ``RangeIndex``.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> df = cxu.to_pandas(cxu.load_sample())
    >>> df["landmarks"][0].shape, df["landmarks"][0].dtype, df["latent_sigma"][0].shape
    ((120, 2), dtype('float32'), (64,))
    >>> cxu.as_polars(df).equals(cxu.load_sample())
    True
    """
    import pandas as pd

    frame = table.collect() if isinstance(table, pl.LazyFrame) else table
    columns: dict[str, object] = {}
    for name in frame.columns:
        series = frame[name]
        if name in ARRAY_COLUMNS and isinstance(series.dtype, pl.Array):
            columns[name] = pd.Series(_array_cells(series, ARRAY_COLUMNS[name]), dtype=object)
        elif series.dtype.is_integer() and series.null_count() > 0:
            columns[name] = pd.Series(series.to_list(), dtype=str(series.dtype))
        else:
            columns[name] = series.to_pandas()
    return pd.DataFrame(columns, index=pd.RangeIndex(frame.height))
