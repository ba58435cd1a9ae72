"""The canonical table as a Hugging Face ``datasets.Dataset`` with typed features, and back, exactly.

Features (:func:`hf_features`): ``landmarks`` and ``landmarks_std`` are
``Array2D((120, 2), "float32")``, ``latent_sigma`` a fixed-length float32 list
of 64, masks and ids strings, sizes int32, Dice RCA float64 and the sigma
summaries float32, so that ``with_format("numpy" | "torch")`` hands out
``(120, 2)`` arrays rather than nested lists.  Null stays null both ways.

Examples
--------
>>> import chexmask_u_tools as cxu
>>> table = cxu.load_sample().head(3)
>>> ds = to_hf_dataset(table)
>>> ds.features["landmarks"]
Array2D(shape=(120, 2), dtype='float32')
>>> ds.with_format("numpy")[0]["landmarks"].shape
(120, 2)
>>> from_hf_dataset(ds).equals(table)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from chexmask_u_tools.errors import InputError, SchemaError
from chexmask_u_tools.layout import N_LATENT, N_NODES
from chexmask_u_tools.schema import CANONICAL_SCHEMA

__all__ = ["from_hf_dataset", "hf_features", "to_hf_dataset"]

IMAGE_COLUMN = "image"
"""Name of the optional ``datasets.Image()`` column pointing at the user's image files."""


def _fixed_list(length: int) -> Any:
    import datasets

    if hasattr(datasets, "List"):  # datasets >= 4: List(feature, length) is the fixed-length list
        return datasets.List(datasets.Value("float32"), length=length)
    return datasets.Sequence(datasets.Value("float32"), length=length)


def hf_features(*, with_image: bool = False) -> Any:
    """The ``datasets.Features`` of the canonical table (plus an ``Image()`` column when asked).

    Examples
    --------
    >>> features = hf_features(with_image=True)
    >>> features["landmarks"], features["height"], "image" in features
    (Array2D(shape=(120, 2), dtype='float32'), Value('int32'), True)
    """
    import datasets

    value = {pl.String: "string", pl.Int32: "int32", pl.Float64: "float64", pl.Float32: "float32"}
    features = {}
    for name, dtype in CANONICAL_SCHEMA.items():
        if name in ("landmarks", "landmarks_std"):
            features[name] = datasets.Array2D((N_NODES, 2), "float32")
        elif name == "latent_sigma":
            features[name] = _fixed_list(N_LATENT)
        else:
            features[name] = datasets.Value(value[dtype])
    if with_image:
        features[IMAGE_COLUMN] = datasets.Image()
    return datasets.Features(features)


def _canonical_frame(table: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    frame = table.collect() if isinstance(table, pl.LazyFrame) else table
    missing = [name for name in CANONICAL_SCHEMA if name not in frame.columns]
    if missing:
        raise SchemaError(f"the table lacks canonical columns {missing}; read it with cxu.read_table or cxu.open_table")
    return frame.select(list(CANONICAL_SCHEMA)).cast(CANONICAL_SCHEMA)


def to_hf_dataset(table: pl.DataFrame | pl.LazyFrame, *, image_paths: Sequence[str | None] | None = None) -> Any:
    """A ``datasets.Dataset`` of the canonical columns with typed features (see the module docstring).

    Parameters
    ----------
    table:
        Canonical table (eager or lazy; extra columns are dropped).
    image_paths:
        One image file path per row (None where a row has no image): adds an
        ``image`` column of type ``datasets.Image()`` that points at the files
        (decoded lazily by ``datasets``).  ``cxu.to_hf_dataset(table, images=roots)``
        finds the paths for you.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(2)
    >>> ds = to_hf_dataset(table, image_paths=["/data/a.png", None])  # decoded only when read
    >>> ds.num_rows, type(ds.features["image"]).__name__
    (2, 'Image')
    >>> ds.with_format("numpy", columns=["landmarks_std"])[0]["landmarks_std"].shape
    (120, 2)
    """
    import datasets

    frame = _canonical_frame(table)
    arrow = frame.to_arrow()
    columns, fields = [], []
    features = hf_features(with_image=image_paths is not None)
    for name in CANONICAL_SCHEMA:
        column = arrow.column(name)
        if name in ("landmarks", "landmarks_std"):
            # Array2D stores (120, 2) as a list of 120 lists of 2.
            column = column.cast(_FIXED_POINTS)
        columns.append(column)
        fields.append(name)
    if image_paths is not None:
        paths = list(image_paths)
        if len(paths) != frame.height:
            raise InputError(f"image_paths has {len(paths)} entries for {frame.height} rows")
        columns.append(pa.array([None if p is None else {"bytes": None, "path": str(p)} for p in paths],
                                type=pa.struct({"bytes": pa.binary(), "path": pa.string()})))
        fields.append(IMAGE_COLUMN)
    table_arrow = pa.Table.from_arrays(columns, names=fields)
    return datasets.Dataset(table_arrow.cast(features.arrow_schema), info=datasets.DatasetInfo(features=features))


def from_hf_dataset(dataset: Any) -> pl.DataFrame:
    """The canonical table of a ``datasets.Dataset`` or ``IterableDataset`` made by :func:`to_hf_dataset`.

    Extra columns (an ``image`` column, labels) are dropped; the round trip
    ``from_hf_dataset(to_hf_dataset(t)).equals(t)`` holds exactly.

    Raises
    ------
    SchemaError
        The dataset lacks canonical columns (named in the message).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(3)
    >>> ds = cxu.to_hf_dataset(table).add_column("label", [0, 1, 0])
    >>> cxu.from_hf_dataset(ds).equals(table)  # the extra column is dropped
    True
    >>> cxu.from_hf_dataset(ds.to_iterable_dataset()).equals(table)
    True
    >>> cxu.from_hf_dataset(ds.remove_columns(["landmarks"]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.SchemaError: the dataset lacks canonical columns ['landmarks'] ...
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict | datasets.IterableDatasetDict):
        raise InputError(f"got a DatasetDict with splits {list(dataset)}; pass one split, e.g. ds['train']")
    if isinstance(dataset, datasets.IterableDataset):
        names = dataset.column_names
        if names is not None and any(name not in names for name in CANONICAL_SCHEMA):
            missing = [name for name in CANONICAL_SCHEMA if name not in names]
            raise SchemaError(f"the dataset lacks canonical columns {missing} (it has {names})")
        batches = [
            pl.from_arrow(_plain_storage(batch.select(list(CANONICAL_SCHEMA))))
            for batch in dataset.with_format("arrow").iter(batch_size=1024)
        ]
        frame = pl.concat(batches, how="vertical") if batches else pl.DataFrame(schema=CANONICAL_SCHEMA)
    elif isinstance(dataset, datasets.Dataset):
        names = dataset.column_names
        missing = [name for name in CANONICAL_SCHEMA if name not in names]
        if missing:
            raise SchemaError(f"the dataset lacks canonical columns {missing} (it has {names})")
        arrow = dataset.with_format("arrow")[:] if len(dataset) else dataset.data.table.slice(0, 0)
        arrow = arrow.select(list(CANONICAL_SCHEMA))
        frame = pl.from_arrow(_plain_storage(arrow))
    else:
        raise InputError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    missing = [name for name in CANONICAL_SCHEMA if name not in frame.columns]
    if missing:
        raise SchemaError(f"the dataset lacks canonical columns {missing} (it has {frame.columns})")
    return _from_nested(frame.select(list(CANONICAL_SCHEMA)))


_FIXED_POINTS = pa.list_(pa.list_(pa.float32(), 2), N_NODES)


def _plain_storage(table: pa.Table) -> pa.Table:
    """datasets' extension arrays (Array2D) and variable lists -> arrow fixed-size lists of the canonical shape.

    The cast happens in arrow, which skips the child values of null slots
    (parquet may store a null (120, 2) array with no children at all).
    """
    columns = []
    for name, column in zip(table.column_names, table.columns):
        if isinstance(column.type, pa.ExtensionType):
            column = pa.chunked_array([chunk.storage for chunk in column.chunks], type=column.type.storage_type)
        if name in ("landmarks", "landmarks_std"):
            column = column.cast(_FIXED_POINTS)
        elif name == "latent_sigma":
            column = column.cast(pa.list_(pa.float32(), N_LATENT))
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _from_nested(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested lists of the arrow storage -> the canonical fixed-size arrays and dtypes."""
    return frame.select(pl.col(name).cast(dtype) for name, dtype in CANONICAL_SCHEMA.items())
