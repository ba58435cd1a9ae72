"""Write canonical tables back in the released CheXmask(-U) column layouts.

The inverse of :func:`chexmask_u_tools.read_table`: used to export predictions
in the layout other CheXmask-U code expects, and to build fixtures of every
released variant.  Variants (SPEC section 2):

``chexmask-u``
    ``<id>, Dice RCA (Mean), Dice RCA (Max), Landmarks (Mean), Landmarks (Std),
    latents, Right Lung, Left Lung, Heart, Height, Width``
``short``
    as ``chexmask-u`` with ``Mean``/``Std`` instead of ``Landmarks (Mean)``/``(Std)``
``chexmask``
    the parent dataset: ``Landmarks`` only, no std, no latents
``physician``
    ``ImageID`` plus a ``Dataset`` column naming each row's source

Landmarks are written as integers when integral (as released), stds with 2
decimals and latents with 4; ``points_format="numpy"`` writes numpy-printed
``(120, 2)`` arrays instead of flat comma lists.
"""

from __future__ import annotations

import gzip
import lzma
import os
from typing import Literal

import numpy as np
import polars as pl

from chexmask_u_tools._atomic import atomic_path
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.layout import N_NODES
from chexmask_u_tools.schema import RLE_COLUMNS
from chexmask_u_tools.sources import REGISTRY

Variant = Literal["chexmask-u", "short", "chexmask", "physician"]

ID_COLUMN_OF_SOURCE: dict[str, str] = {name: info.id_column for name, info in REGISTRY.items()}
MASK_COLUMN_OF_ORGAN = {"right_lung": "Right Lung", "left_lung": "Left Lung", "heart": "Heart"}


def _flat_text(column: str, decimals: int | None, width: int) -> pl.Expr:
    flat = pl.col(column).reshape((-1, width)) if width == 2 * N_NODES else pl.col(column)
    values = flat.arr.to_list()
    if decimals is None:
        all_integral = values.list.eval((pl.element() == pl.element().round(0)).all()).list.first()
        as_int = values.list.eval(pl.element().cast(pl.Int64).cast(pl.String)).list.join(",")
        as_float = values.list.eval(pl.element().cast(pl.Float64).cast(pl.String)).list.join(",")
        return pl.when(all_integral).then(as_int).otherwise(as_float)
    return values.list.eval(pl.element().cast(pl.Float64).round(decimals).cast(pl.String)).list.join(",")


def _numpy_text(series: pl.Series, decimals: int | None) -> pl.Series:
    texts = []
    for value in series:
        if value is None:
            texts.append(None)
            continue
        array = np.asarray(value.to_numpy() if isinstance(value, pl.Series) else value, dtype=np.float64)
        if decimals is None and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        elif decimals is not None:
            array = np.round(array, decimals)
        texts.append(np.array2string(array, threshold=10**6, max_line_width=80))
    return pl.Series(series.name, texts, dtype=pl.String)


def to_released(
    table: pl.DataFrame,
    variant: Variant = "chexmask-u",
    *,
    points_format: Literal["flat", "numpy"] = "flat",
    id_column: str | None = None,
    dataset_column: bool = False,
) -> pl.DataFrame:
    """Canonical table -> DataFrame of strings in a released column layout.

    Parameters
    ----------
    table:
        Canonical table (only its base columns are used).
    variant:
        See the module docstring.
    points_format:
        ``flat`` (``x0,y0,...``) or ``numpy`` (numpy-printed arrays).
    id_column:
        Override the id column name (default: the one of the table's single
        source; ``ImageID`` for ``physician``).
    dataset_column:
        Also write each row's source in a ``Dataset`` column after the id
        (as the ``physician`` variant does), so that
        :func:`~chexmask_u_tools.io.table.read_table` reads the rows back with
        their source and without ``source=``: for rows of a source that is not
        one of the registry's (such as predictions labelled ``"private"``),
        whose id column proves nothing.

    Raises
    ------
    InputError
        When the table mixes sources and the variant needs one id column.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(2).with_columns(source=pl.lit("private"))
    >>> to_released(table, id_column="Image ID", dataset_column=True).columns[:3]
    ['Image ID', 'Dataset', 'Dice RCA (Mean)']
    """
    if variant not in ("chexmask-u", "short", "chexmask", "physician"):
        raise InputError(f"unknown variant {variant!r}")
    if id_column is None:
        if variant == "physician":
            id_column = "ImageID"
        else:
            sources = table["source"].unique().to_list()
            if len(sources) != 1 or sources[0] not in ID_COLUMN_OF_SOURCE:
                raise InputError(
                    f"variant {variant!r} names its id column after one source; the table has {sources}. "
                    "Write one file per source or pass id_column="
                )
            id_column = ID_COLUMN_OF_SOURCE[sources[0]]
    landmark_name, std_name = {
        "chexmask-u": ("Landmarks (Mean)", "Landmarks (Std)"),
        "short": ("Mean", "Std"),
        "chexmask": ("Landmarks", None),
        "physician": ("Landmarks", None),
    }[variant]
    columns: list[pl.Expr] = [pl.col("image_id").alias(id_column)]
    with_dataset = variant == "physician" or dataset_column
    if with_dataset:
        columns.append(pl.col("source").alias("Dataset"))
    columns += [
        pl.col("dice_rca_mean").alias("Dice RCA (Mean)"),
        pl.col("dice_rca_max").alias("Dice RCA (Max)"),
    ]
    if points_format == "flat":
        columns.append(_flat_text("landmarks", None, 2 * N_NODES).alias(landmark_name))
        if std_name:
            columns.append(_flat_text("landmarks_std", 2, 2 * N_NODES).alias(std_name))
            columns.append(_flat_text("latent_sigma", 4, 64).alias("latents"))
    columns += [pl.col(RLE_COLUMNS[organ]).alias(name) for organ, name in MASK_COLUMN_OF_ORGAN.items()]
    columns += [pl.col("height").alias("Height"), pl.col("width").alias("Width")]
    out = table.select(columns)
    if points_format == "numpy":
        out = out.insert_column(3 + with_dataset, _numpy_text(table["landmarks"], None).alias(landmark_name))
        if std_name:
            position = out.columns.index(landmark_name) + 1
            out = out.insert_column(position, _numpy_text(table["landmarks_std"], 2).alias(std_name))
            out = out.insert_column(position + 1, _numpy_text(table["latent_sigma"], 4).alias("latents"))
    elif points_format != "flat":
        raise InputError(f"points_format must be 'flat' or 'numpy', got {points_format!r}")
    return out


def write_released(
    table: pl.DataFrame,
    path: str | os.PathLike,
    variant: Variant = "chexmask-u",
    *,
    provenance: dict[str, str] | None = None,
    **kwargs,
) -> None:
    """Write :func:`to_released` to ``.csv``, ``.csv.gz``, ``.csv.xz`` or ``.parquet`` atomically (temp file, then rename).

    ``provenance`` (predictions: :mod:`chexmask_u_tools.io.provenance`) goes
    into a last ``Provenance`` column of a CSV, or the parquet file's metadata.
    """
    from chexmask_u_tools.io.provenance import PROVENANCE_COLUMN, PROVENANCE_KEY, provenance_text

    out = to_released(table, variant, **kwargs)
    if provenance is not None and not os.fspath(path).endswith(".parquet"):
        out = out.with_columns(pl.lit(provenance_text(provenance)).alias(PROVENANCE_COLUMN))
    path = os.fspath(path)
    if not path.endswith((".parquet", ".csv.gz", ".csv.xz", ".csv")):
        raise InputError(f"unsupported output type {path!r}: use .csv, .csv.gz, .csv.xz or .parquet")
    with atomic_path(path) as temporary:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            arrow = out.to_arrow()
            if provenance is not None:
                arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), PROVENANCE_KEY: provenance_text(provenance)})
            pq.write_table(arrow, temporary, compression="zstd")
        elif path.endswith((".csv.gz", ".csv.xz")):
            opener = gzip.open if path.endswith(".gz") else lzma.open
            with opener(temporary, "wb") as handle:
                out.write_csv(handle)
        else:
            out.write_csv(temporary)
