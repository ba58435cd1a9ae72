"""The canonical CheXmask-U table: one typed layout for every released file variant.

Every reader in the package (``read_table``, ``scan_table``, the Hub loaders, the
parquet cache, ``predict``) produces exactly these columns, in this order, with
these dtypes.  Coordinates are pixels in the row's ``frame``: x = column,
y = row, origin at the top-left pixel's centre.

Landmarks and masks of a ``preprocessed`` row always live on the 1024 x 1024
grid; its ``height``/``width`` hold the original image size when the file
carries one (anything but 1024 x 1024), which is what mapping the row to the
original frame needs.  Use :func:`mask_shape` (or :func:`mask_shape_exprs`)
to size a row's masks rather than reading ``height``/``width`` directly.

================  =============================  ==========================================
column            dtype                          meaning
================  =============================  ==========================================
source            String                         ``MIMIC-CXR-JPG``, ``CheXpert``, ``ChestX-ray8``,
                                                 ``Padchest``, ``VinDr-CXR`` (or a user label)
image_id          String                         the source's image id, as released
frame             String                         ``preprocessed`` (1024x1024) or ``original``
height, width     Int32 (nullable)               original frame: the image size (= mask grid);
                                                 preprocessed frame: the original image size when
                                                 the file carries it, else 1024 (see mask_shape)
dice_rca_mean     Float64 (nullable)             ``Dice RCA (Mean)`` quality estimate
dice_rca_max      Float64 (nullable)             ``Dice RCA (Max)`` quality estimate
landmarks         Array(Float32, (120, 2))       mean landmarks, x then y
landmarks_std     Array(Float32, (120, 2))       per-node std of x and y (null: no std)
latent_sigma      Array(Float32, 64)             posterior sigmas (null: not released)
rle_right_lung    String (nullable)              released RLE mask, 1-based row-major runs
rle_left_lung     String (nullable)
rle_heart         String (nullable)
node_sigma_mean   Float32 (nullable)             mean over nodes of (std_x + std_y) / 2
node_sigma_max    Float32 (nullable)             max over nodes of the same
sigma_right_lung  Float32 (nullable)             mean node sigma over the organ's nodes
sigma_left_lung   Float32 (nullable)
sigma_heart       Float32 (nullable)
latent_sigma_mean Float32 (nullable)             mean of the 64 latent sigmas
================  =============================  ==========================================
"""

from __future__ import annotations

import numpy as np
import polars as pl

from chexmask_u_tools.layout import N_LATENT, N_NODES, ORGANS
from chexmask_u_tools.sources import SOURCES as SOURCES  # re-exported: the canonical names of the source column

FRAMES: tuple[str, ...] = ("preprocessed", "original")
"""``preprocessed``: the 1024x1024 padded square the model saw; ``original``: the image's own pixels."""

PREPROCESSED_SIZE: int = 1024

MAX_MASK_PIXELS: int = 2**28
"""Largest mask (``height * width``, 256 Mi pixels, e.g. 16384 x 16384) the readers and decoders accept.

Real CheXmask masks are at most a few thousand pixels a side; a larger size in
a file is corruption, and decoding it would allocate gigabytes.  Bounding every
size by this limit also keeps all run arithmetic far from int64 overflow.
"""

LANDMARKS_DTYPE = pl.Array(pl.Float32, (N_NODES, 2))
LATENT_DTYPE = pl.Array(pl.Float32, N_LATENT)

RLE_COLUMNS: dict[str, str] = {organ: f"rle_{organ}" for organ in ORGANS}
"""Organ name -> canonical RLE column."""

ORGAN_SIGMA_COLUMNS: dict[str, str] = {organ: f"sigma_{organ}" for organ in ORGANS}
"""Organ name -> canonical per-organ mean node sigma column."""

BASE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "image_id": pl.String(),
    "frame": pl.String(),
    "height": pl.Int32(),
    "width": pl.Int32(),
    "dice_rca_mean": pl.Float64(),
    "dice_rca_max": pl.Float64(),
    "landmarks": LANDMARKS_DTYPE,
    "landmarks_std": LANDMARKS_DTYPE,
    "latent_sigma": LATENT_DTYPE,
    **{column: pl.String() for column in RLE_COLUMNS.values()},
}
"""The stored columns, before the derived uncertainty summaries."""

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "node_sigma_mean": pl.Float32(),
    "node_sigma_max": pl.Float32(),
    **{column: pl.Float32() for column in ORGAN_SIGMA_COLUMNS.values()},
    "latent_sigma_mean": pl.Float32(),
}
"""Derived uncertainty summaries (see :mod:`chexmask_u_tools.select.uncertainty`)."""

CANONICAL_SCHEMA: pl.Schema = pl.Schema({**BASE_SCHEMA, **SUMMARY_SCHEMA})
"""Column name -> dtype of the canonical table, in column order."""


def empty_table() -> pl.DataFrame:
    """A zero-row canonical table.

    Examples
    --------
    >>> table = empty_table()
    >>> table.shape, table.schema["landmarks"]
    ((0, 19), Array(Float32, shape=(120, 2)))
    """
    return pl.DataFrame(schema=CANONICAL_SCHEMA)


def mask_shape(frame: str, height: int | None, width: int | None) -> tuple[int, int]:
    """``(rows, cols)`` of the pixel grid a row's landmarks and masks live on.

    In the ``preprocessed`` frame that is always 1024 x 1024, whatever
    ``height``/``width`` say (they may carry the original image size); in the
    ``original`` frame it is ``(height, width)``.

    Raises
    ------
    InputError
        An unknown ``frame``, or an ``original`` row without a size.

    Examples
    --------
    >>> mask_shape("preprocessed", 2048, 2500)  # the size of the original image is not the grid
    (1024, 1024)
    >>> mask_shape("original", 2048, 2500)
    (2048, 2500)
    """
    if frame == "preprocessed":
        return PREPROCESSED_SIZE, PREPROCESSED_SIZE
    if frame != "original":
        from chexmask_u_tools.errors import InputError

        raise InputError(f"frame must be one of {FRAMES}, got {frame!r}")
    if height is None or width is None:
        from chexmask_u_tools.errors import InputError

        raise InputError("an original-frame row needs its height and width to size its masks")
    return int(height), int(width)


def mask_shape_exprs() -> tuple[pl.Expr, pl.Expr]:
    """Polars form of :func:`mask_shape`: Int32 expressions named ``mask_rows``, ``mask_cols``.

    Examples
    --------
    >>> table = pl.DataFrame({"frame": ["preprocessed", "original"], "height": [2048, 900], "width": [2500, 1200]})
    >>> table.with_columns(*mask_shape_exprs()).select("mask_rows", "mask_cols").rows()
    [(1024, 1024), (900, 1200)]
    """
    preprocessed = pl.col("frame") == "preprocessed"
    rows = pl.when(preprocessed).then(pl.lit(PREPROCESSED_SIZE)).otherwise(pl.col("height")).cast(pl.Int32).alias("mask_rows")
    cols = pl.when(preprocessed).then(pl.lit(PREPROCESSED_SIZE)).otherwise(pl.col("width")).cast(pl.Int32).alias("mask_cols")
    return rows, cols


def check_mask_size(
    height: object, width: object, limit: int | None = None, *, max_pixels: int | None = None
) -> tuple[int, int]:
    """Validate a mask size and return it as two Python ints.

    Integers (and integral floats such as ``1024.0``) are accepted; bools,
    fractional floats, strings and values below 1 (or above ``limit``) raise
    :class:`~chexmask_u_tools.errors.InputError`, so that no size is silently
    truncated.  ``max_pixels`` also bounds ``height * width`` (the decoders
    pass :data:`MAX_MASK_PIXELS`).

    Examples
    --------
    >>> check_mask_size(1024.0, 512)
    (1024, 512)
    >>> check_mask_size(2**15, 2**15, max_pixels=MAX_MASK_PIXELS)
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: mask size 32768 x 32768 = 1073741824 pixels exceeds the limit of 268435456 pixels (MAX_MASK_PIXELS)
    """
    from chexmask_u_tools.errors import InputError

    out = []
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            else:
                raise InputError(f"{name} must be an integer, got {value!r}")
        value = int(value)
        if value < 1 or (limit is not None and value > limit):
            bound = f"1..{limit}" if limit is not None else "at least 1"
            raise InputError(f"{name} must be {bound}, got {value}")
        out.append(value)
    if max_pixels is not None and out[0] * out[1] > max_pixels:
        raise InputError(
            f"mask size {out[0]} x {out[1]} = {out[0] * out[1]} pixels exceeds the limit of "
            f"{max_pixels} pixels (MAX_MASK_PIXELS)"
        )
    return out[0], out[1]


def nearest_indices(from_size: int, to_size: int) -> np.ndarray:
    """Nearest-neighbour sample positions: for each of ``to_size`` pixels, the index among ``from_size``.

    Pixel ``j`` of the new grid sits at coordinate ``j * from_size / to_size``
    of the old one (origin at the top-left pixel centre, no half-pixel offset:
    the inverse of ``masks.raster.scale_points``), and takes the nearest old
    pixel, ties rounding up, clipped to the grid.  Exact integer arithmetic.

    Returns
    -------
    ``(to_size,)`` int64, non-decreasing.

    Examples
    --------
    >>> nearest_indices(4, 2).tolist(), nearest_indices(3, 5).tolist()
    ([0, 2], [0, 1, 1, 2, 2])
    """
    j = np.arange(int(to_size), dtype=np.int64)
    return np.minimum((2 * j * int(from_size) + int(to_size)) // (2 * int(to_size)), int(from_size) - 1)


ARRAY_COLUMNS: dict[str, tuple[int, ...]] = {
    "landmarks": (N_NODES, 2),
    "landmarks_std": (N_NODES, 2),
    "latent_sigma": (N_LATENT,),
}
"""Canonical array column -> the shape of one cell."""


def is_pandas_frame(table: object) -> bool:
    """Whether ``table`` is a pandas DataFrame, decided without importing pandas.

    Examples
    --------
    >>> is_pandas_frame(empty_table()), is_pandas_frame(empty_table().to_pandas())
    (False, True)
    """
    kind = type(table)
    return kind.__module__.startswith("pandas") and kind.__name__ == "DataFrame"


def _array_series(name: str, cells: object, argument: str) -> pl.Series:
    """One canonical array column from pandas cells: numpy arrays or nested lists, None (or NaN) for null."""
    from chexmask_u_tools.errors import SchemaError

    shape = ARRAY_COLUMNS[name]
    cells = list(cells)
    values = np.zeros((len(cells), *shape), dtype=np.float32)
    valid = np.ones(len(cells), dtype=bool)
    for row, cell in enumerate(cells):
        if cell is None or (isinstance(cell, float) and np.isnan(cell)):
            valid[row] = False
            continue
        try:
            array = np.asarray(cell, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise SchemaError(f"{argument}[{name!r}] row {row}: not a numeric {shape} array ({error})") from None
        if array.shape != shape:
            raise SchemaError(f"{argument}[{name!r}] row {row}: a cell must have shape {shape}, got {array.shape}")
        values[row] = array
    series = pl.Series(name, values, dtype=CANONICAL_SCHEMA[name])
    if valid.all():
        return series
    return pl.select(pl.when(pl.Series(valid)).then(series).otherwise(None).alias(name)).to_series()


def as_polars(table: object, *, argument: str = "table") -> pl.DataFrame | pl.LazyFrame:
    """``table`` as polars: a polars frame unchanged, a pandas DataFrame converted to the canonical table.

    A pandas DataFrame must hold every canonical column (see
    :data:`CANONICAL_SCHEMA`); ``landmarks``/``landmarks_std`` cells are
    ``(120, 2)`` numpy arrays or nested lists, ``latent_sigma`` cells ``(64,)``,
    and None (or NaN) marks a missing value.  The result has exactly the
    canonical dtypes, in canonical order, followed by any extra columns as
    ``pl.from_pandas`` reads them; the pandas index is dropped.  pandas is only
    imported when the object is a pandas DataFrame.

    Parameters
    ----------
    table:
        A ``pl.DataFrame``, ``pl.LazyFrame`` or ``pandas.DataFrame``.
    argument:
        The caller's argument name, used in error messages.

    Returns
    -------
    The polars frame itself, or a ``pl.DataFrame`` converted from pandas.

    Raises
    ------
    SchemaError
        A pandas DataFrame lacks canonical columns (all are named), or a cell
        or column cannot take its canonical dtype.
    InputError
        ``table`` is neither a polars nor a pandas DataFrame.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample()
    >>> as_polars(table) is table
    True
    >>> as_polars(cxu.to_pandas(table)).equals(table)
    True
    >>> as_polars(cxu.to_pandas(table).drop(columns=["landmarks", "frame"]), argument="df")
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.SchemaError: df (a pandas DataFrame) lacks the canonical columns 'frame', 'landmarks'; add them (None where a value is missing) or build the table with cxu.table_from_arrays
    """
    if isinstance(table, (pl.DataFrame, pl.LazyFrame)):
        return table
    from chexmask_u_tools.errors import InputError, SchemaError

    if not is_pandas_frame(table):
        raise InputError(
            f"{argument} must be a polars DataFrame/LazyFrame or a pandas DataFrame, got {type(table).__name__}"
        )
    columns = [str(column) for column in table.columns]
    missing = [name for name in CANONICAL_SCHEMA if name not in columns]
    if missing:
        raise SchemaError(
            f"{argument} (a pandas DataFrame) lacks the canonical columns "
            f"{', '.join(repr(name) for name in missing)}; add them (None where a value is missing) "
            "or build the table with cxu.table_from_arrays"
        )
    if len(set(columns)) != len(columns):
        raise SchemaError(f"{argument} (a pandas DataFrame) has duplicate column names")
    table = table.reset_index(drop=True)
    table.columns = columns
    scalar_names = [name for name in columns if name not in ARRAY_COLUMNS]
    scalars = pl.from_pandas(table[scalar_names]) if scalar_names else pl.DataFrame()
    out: dict[str, pl.Series] = {}
    for name, dtype in CANONICAL_SCHEMA.items():
        if name in ARRAY_COLUMNS:
            out[name] = _array_series(name, table[name], argument)
            continue
        try:
            out[name] = scalars[name].cast(dtype)
        except pl.exceptions.PolarsError as error:
            raise SchemaError(
                f"{argument}[{name!r}] cannot be read as {dtype} (its pandas dtype is {table[name].dtype}): {error}"
            ) from None
    extras = [name for name in columns if name not in CANONICAL_SCHEMA]
    return pl.DataFrame([*out.values(), *(scalars[name] for name in extras)])
