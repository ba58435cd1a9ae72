"""The canonical table as a Hugging Face ``datasets.Dataset`` with typed features, and back, exactly.

Features (:func:`hf_features`): ``landmarks`` and ``landmarks_std`` are
``Array2D((120, 2), "float32")``, ``latent_sigma`` a fixed-length float32 list
of 64, masks and ids strings, sizes int32, Dice RCA float64 and the sigma
summaries float32, so that ``with_format("numpy" | "torch")`` hands out
``(120, 2)`` arrays rather than nested lists.  Null stays null both ways.

Out (:func:`to_hf_dataset`): the table is converted :data:`BATCH_ROWS` rows at a
time (:func:`hf_record_batches`) and written as Arrow record batches to a file
in the ``datasets`` cache, which the returned ``Dataset`` memory-maps, as
``datasets.load_dataset`` does: memory stays bounded by a batch whatever the
table's size, a lazy table is streamed, and DataLoader workers map the same
pages instead of receiving a pickled copy.  The file is named by the sha256 of
its bytes, so converting the same table again reuses the name.

Back (:func:`from_hf_dataset`): what a ``datasets`` object allows is checked --
the canonical columns, their features, the array shapes, finite values and that
the uncertainty summaries agree with ``landmarks_std`` and ``latent_sigma`` --
and a dataset read from data files by ``datasets`` (``load_dataset``) gets an
:class:`~chexmask_u_tools.errors.IntegrityWarning` saying what could not be
checked: a ``datasets`` object keeps no record of the files it came from.  A
folder written by :func:`~chexmask_u_tools.publish.save_hub_folder` records
each shard's rows and sha256; the toolkit's readers check them
(:mod:`chexmask_u_tools.io.hub_folder`).

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

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from chexmask_u_tools._atomic import remove_stale_temporaries, temporary_name
from chexmask_u_tools.errors import InputError, IntegrityWarning, RecordError, SchemaError
from chexmask_u_tools.layout import N_LATENT, N_NODES
from chexmask_u_tools.schema import CANONICAL_SCHEMA, SUMMARY_SCHEMA
from chexmask_u_tools.select.uncertainty import summary_expressions

__all__ = [
    "ARROW_CACHE_FOLDER",
    "BATCH_ROWS",
    "IMAGE_COLUMN",
    "READ_BATCH_ROWS",
    "arrow_cache_dir",
    "from_hf_dataset",
    "hf_features",
    "hf_record_batches",
    "plain_storage",
    "plain_storage_column",
    "scan_hf_dataset",
    "to_hf_dataset",
]

IMAGE_COLUMN = "image"
"""Name of the optional ``datasets.Image()`` column pointing at the user's image files."""

BATCH_ROWS = 1000
"""Rows per converted batch and per Arrow record batch (``datasets``' own writer batch size)."""

READ_BATCH_ROWS = 10 * BATCH_ROWS
"""Rows per batch read back from a ``datasets`` object (:func:`from_hf_dataset`, :func:`scan_hf_dataset`)."""

ARROW_CACHE_FOLDER = "chexmask_u_tools"
"""The folder under the ``datasets`` cache (``HF_DATASETS_CACHE``) holding :func:`to_hf_dataset`'s Arrow files."""

_ARRAY_COLUMNS = ("landmarks", "landmarks_std")
_FIXED_POINTS = pa.list_(pa.list_(pa.float32(), 2), N_NODES)
_FIXED_LATENT = pa.list_(pa.float32(), N_LATENT)


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
        if name in _ARRAY_COLUMNS:
            features[name] = datasets.Array2D((N_NODES, 2), "float32")
        elif name == "latent_sigma":
            features[name] = _fixed_list(N_LATENT)
        else:
            features[name] = datasets.Value(value[dtype])
    if with_image:
        features[IMAGE_COLUMN] = datasets.Image()
    return datasets.Features(features)


# ---------------------------------------------------------------------------- out: batches


def _canonical_lazy(table: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    lf = table.lazy()
    names = lf.collect_schema().names()
    missing = [name for name in CANONICAL_SCHEMA if name not in names]
    if missing:
        raise SchemaError(
            f"the table lacks canonical columns {missing}; read it with cxu.read_table or cxu.open_table"
        )
    return lf.select(pl.col(name).cast(dtype) for name, dtype in CANONICAL_SCHEMA.items())


def _polars_batches(table: pl.DataFrame | pl.LazyFrame, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The canonical columns of ``table`` in consecutive pieces of at most ``batch_rows`` rows, in order."""
    canonical = _canonical_lazy(table)
    if isinstance(table, pl.DataFrame):
        # Zero-copy slices of the collected table; the select/cast runs on one slice at a time.
        for piece in table.iter_slices(batch_rows):
            yield piece.lazy().pipe(_canonical_lazy).collect()
        return
    for piece in canonical.collect_batches(chunk_size=batch_rows, maintain_order=True):
        # The streaming engine may hand out larger chunks than asked for.
        for start in range(0, piece.height, batch_rows):
            yield piece.slice(start, batch_rows)


def _hf_batch(frame: pl.DataFrame, schema: pa.Schema, paths: Sequence[str | None] | None) -> pa.RecordBatch:
    arrow = frame.to_arrow()
    columns = [arrow.column(name).cast(schema.field(name).type) for name in CANONICAL_SCHEMA]
    if paths is not None:
        image = pa.array(
            [None if p is None else {"bytes": None, "path": str(p)} for p in paths],
            type=pa.struct({"bytes": pa.binary(), "path": pa.string()}),
        )
        columns.append(image.cast(schema.field(IMAGE_COLUMN).type))
    table = pa.Table.from_arrays(columns, schema=schema)
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=schema)


def hf_record_batches(
    table: pl.DataFrame | pl.LazyFrame,
    *,
    image_paths: Sequence[str | None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The canonical table as Arrow record batches of :func:`hf_features`' schema, ``batch_rows`` rows at a time.

    A ``LazyFrame`` is streamed (``collect_batches``), a ``DataFrame`` sliced
    without copying, so memory holds one batch.  Extra columns are dropped.

    Raises
    ------
    SchemaError
        The table lacks canonical columns (named).
    InputError
        ``image_paths`` does not have one entry per row (checked once every row is seen).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> batches = list(hf_record_batches(cxu.load_sample().head(5), batch_rows=2))
    >>> [batch.num_rows for batch in batches], batches[0].schema.field("landmarks").type.storage_type
    ([2, 2, 1], ListType(list<item: list<item: float>>))
    """
    if batch_rows < 1:
        raise InputError(f"batch_rows must be positive, got {batch_rows}")
    schema = hf_features(with_image=image_paths is not None).arrow_schema
    paths = None if image_paths is None else list(image_paths)
    if paths is not None and isinstance(table, pl.DataFrame) and len(paths) != table.height:
        raise InputError(f"image_paths has {len(paths)} entries for {table.height} rows")
    seen = 0
    for frame in _polars_batches(table, batch_rows):
        if paths is not None and seen + frame.height > len(paths):
            raise InputError(f"image_paths has {len(paths)} entries, fewer than the table's rows")
        yield _hf_batch(frame, schema, None if paths is None else paths[seen : seen + frame.height])
        seen += frame.height
    if paths is not None and seen != len(paths):
        raise InputError(f"image_paths has {len(paths)} entries for {seen} rows")


# ---------------------------------------------------------------------------- out: the Arrow file


def arrow_cache_dir() -> Path:
    """Where :func:`to_hf_dataset` writes by default: ``<HF_DATASETS_CACHE>/chexmask_u_tools``.

    Examples
    --------
    >>> arrow_cache_dir().name
    'chexmask_u_tools'
    """
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / ARROW_CACHE_FOLDER


class _HashingSink:
    """A binary file that hashes what is written through it (the IPC writer's sink)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self.closed = True


def _write_arrow_file(batches: Iterator[pa.RecordBatch], schema: pa.Schema, directory: Path, progress: Any) -> Path:
    """Stream record batches to ``directory/<sha256>.arrow`` (the IPC stream format ``datasets`` maps), atomically.

    The name is the sha256 of the bytes: a file of that name only ever holds
    that content, so one written again simply replaces it (a dataset already
    mapping the old file keeps its pages).
    """
    staging_name = directory / "to_hf_dataset.arrow"
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(staging_name)
    temporary = temporary_name(staging_name)
    try:
        with open(temporary, "wb") as handle:
            sink = _HashingSink(handle)
            with pa.ipc.new_stream(sink, schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    progress.update(batch.num_rows)
        target = directory / f"{sink.digest.hexdigest()}.arrow"
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def to_hf_dataset(
    table: pl.DataFrame | pl.LazyFrame,
    *,
    image_paths: Sequence[str | None] | None = None,
    cache_dir: str | os.PathLike | None = None,
    keep_in_memory: bool = False,
    progress: bool = False,
) -> Any:
    """A ``datasets.Dataset`` of the canonical columns with typed features (see the module docstring).

    Parameters
    ----------
    table:
        Canonical table (eager or lazy; extra columns are dropped).  A lazy
        table is streamed, never collected whole.
    image_paths:
        One image file path per row (None where a row has no image): adds an
        ``image`` column of type ``datasets.Image()`` that points at the files
        (decoded lazily by ``datasets``).  ``cxu.to_hf_dataset(table, images=roots)``
        finds the paths for you.
    cache_dir:
        Folder of the Arrow file the dataset maps (default
        :func:`arrow_cache_dir`, inside ``datasets``' cache).  The file is named
        by the sha256 of its content; delete the folder to reclaim the space.
    keep_in_memory:
        Hold the Arrow data in memory instead (as ``datasets.Dataset.from_dict``
        does): nothing is written, and memory grows with the table.
    progress:
        Show a tqdm bar of the rows written.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(2)
    >>> ds = to_hf_dataset(table, image_paths=["/data/a.png", None])  # decoded only when read
    >>> ds.num_rows, type(ds.features["image"]).__name__
    (2, 'Image')
    >>> ds.with_format("numpy", columns=["landmarks_std"])[0]["landmarks_std"].shape
    (120, 2)
    >>> [Path(file["filename"]).parent.name for file in ds.cache_files]  # memory-mapped from the datasets cache
    ['chexmask_u_tools']
    >>> to_hf_dataset(table, keep_in_memory=True).cache_files
    []
    """
    import datasets
    from tqdm.auto import tqdm

    features = hf_features(with_image=image_paths is not None)
    info = datasets.DatasetInfo(features=features)
    batches = hf_record_batches(table, image_paths=image_paths)
    total = table.height if isinstance(table, pl.DataFrame) else None
    with tqdm(total=total, desc="to_hf_dataset", unit="rows", unit_scale=True, disable=not progress) as bar:
        if keep_in_memory:
            collected = []
            for batch in batches:
                collected.append(batch)
                bar.update(batch.num_rows)
            return datasets.Dataset(pa.Table.from_batches(collected, schema=features.arrow_schema), info=info)
        directory = Path(cache_dir) if cache_dir is not None else arrow_cache_dir()
        path = _write_arrow_file(batches, features.arrow_schema, directory, bar)
    return datasets.Dataset.from_file(str(path), info=info)


# ---------------------------------------------------------------------------- back


_POLARS_FLOATS = {"float32": pl.Float32, "float64": pl.Float64}


def _stored(name: str, dtype: Any) -> pl.Expr:
    """One extension column as plain polars data: an ``Array2D`` as an ``Array`` of its shape, others as their storage."""
    storage = pl.col(name).ext.storage()
    if dtype.ext_name() != "datasets.features.features.Array2DExtensionType":
        return storage
    (rows, cols), value = json.loads(dtype.ext_metadata())
    inner = _POLARS_FLOATS.get(value)
    if inner is None:
        return storage
    # Two steps: polars refuses a one-step list-of-lists -> 2-D array cast when a row is null.
    return storage.cast(pl.List(pl.Array(inner, cols))).list.to_array(rows)


def plain_storage(frame: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame | pl.DataFrame:
    """The ``datasets`` extension columns of a frame (as polars reads a parquet ``datasets`` wrote) as plain columns.

    An ``Array2D`` column becomes a polars ``Array`` of its shape (null rows
    stay null), any other extension column its Arrow storage.  Raises polars'
    error on collection when a row has another shape.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> ds = to_hf_dataset(cxu.load_sample().head(1), keep_in_memory=True)
    >>> frame = pl.from_arrow(ds.data.table)
    >>> type(frame.schema["landmarks"]).__name__, plain_storage(frame).schema["landmarks"]
    ('Extension', Array(Float32, shape=(120, 2)))
    """
    schema = frame.collect_schema()
    extension = {name: dtype for name, dtype in schema.items() if isinstance(dtype, pl.Extension)}
    return frame.with_columns(_stored(name, dtype).alias(name) for name, dtype in extension.items()) if extension else frame


def plain_storage_column(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A ``datasets`` extension column (``Array2D``...) as its plain Arrow storage; other columns unchanged.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> ds = to_hf_dataset(cxu.load_sample().head(1), keep_in_memory=True)
    >>> plain_storage_column(ds.data.table.column("landmarks")).type
    ListType(list<item: list<item: float>>)
    """
    if not isinstance(column.type, pa.ExtensionType):
        return column
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([chunk.storage for chunk in column.chunks], type=column.type.storage_type)
    return column.storage


_FIX_BUILD = "make the dataset with cxu.to_hf_dataset(table), or load a folder written by cxu.save_hub_folder"


def _check_columns(names: list[str]) -> None:
    missing = [name for name in CANONICAL_SCHEMA if name not in names]
    if missing:
        raise SchemaError(f"the dataset lacks canonical columns {missing} (it has {names}); {_FIX_BUILD}")


def _leaf_type(kind: pa.DataType) -> pa.DataType:
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    return kind


_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())


def _check_types(schema: pa.Schema, features: Any) -> None:
    """Each canonical column must hold its canonical dtype (arrays: float32 lists), or the values would change on the way."""
    expected = hf_features().arrow_schema
    wrong = []
    for name in CANONICAL_SCHEMA:
        have = schema.field(name).type
        have = have.storage_type if isinstance(have, pa.ExtensionType) else have
        want = expected.field(name).type
        want = want.storage_type if isinstance(want, pa.ExtensionType) else want
        if name in (*_ARRAY_COLUMNS, "latent_sigma"):
            fits = _leaf_type(have) == pa.float32() and have != _leaf_type(have)
        elif want == pa.string():
            fits = have in _STRING_TYPES or pa.types.is_null(have)
        else:
            fits = have == want or pa.types.is_null(have)
        if not fits:
            shown = repr(features[name]) if features is not None and name in features else str(have)
            wrong.append((name, shown))
    if wrong:
        canonical = hf_features()
        details = "; ".join(f"{name!r} is {shown}, expected {canonical[name]!r}" for name, shown in wrong)
        name = wrong[0][0]
        raise SchemaError(
            f"the dataset's columns do not have the canonical dtypes: {details}. Cast them where the values fit "
            f"(ds = ds.cast_column({name!r}, hf_features()[{name!r}]), hf_features from chexmask_u_tools.io.hf), "
            f"or {_FIX_BUILD}"
        )


def _fixed_shape(table: pa.Table, offset: int) -> pa.Table:
    """Array columns -> Arrow fixed-size lists of the canonical shape; a row of another shape raises, named."""
    columns = []
    for name in table.column_names:
        column = plain_storage_column(table.column(name))
        target = _FIXED_POINTS if name in _ARRAY_COLUMNS else _FIXED_LATENT if name == "latent_sigma" else None
        if target is not None and column.type != target:
            try:
                # Arrow skips the child values of null slots (parquet may store a null array with no children).
                column = column.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                row = _first_misshapen_row(column, name)
                shape = f"({N_NODES}, 2)" if name in _ARRAY_COLUMNS else f"({N_LATENT},)"
                where = f"row {offset + row} (ds[{offset + row}])" if row is not None else "a row"
                image_id = table.column("image_id")[row].as_py() if row is not None else None
                raise SchemaError(
                    f"column {name!r} at {where}, image id {image_id!r}, is not of shape {shape} float32 ({error}); "
                    f"fix or drop that row (ds.filter / ds.select), or {_FIX_BUILD}"
                ) from None
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _first_misshapen_row(column: pa.ChunkedArray, name: str) -> int | None:
    import pyarrow.compute as pc

    flat = pa.concat_arrays(column.chunks) if isinstance(column, pa.ChunkedArray) else column
    outer = N_NODES if name in _ARRAY_COLUMNS else N_LATENT
    if not pa.types.is_list(flat.type) and not pa.types.is_large_list(flat.type) and not pa.types.is_fixed_size_list(flat.type):
        return 0 if len(flat) else None
    lengths = pc.fill_null(pc.list_value_length(flat), outer).to_numpy(zero_copy_only=False)
    bad = (lengths != outer).nonzero()[0]
    if bad.size:
        return int(bad[0])
    if name in _ARRAY_COLUMNS:
        inner = pc.list_value_length(pc.list_flatten(flat)).to_numpy(zero_copy_only=False)
        starts = pc.fill_null(pc.list_value_length(flat), 0).to_numpy(zero_copy_only=False).cumsum()
        wrong = (inner != 2).nonzero()[0]
        if wrong.size:
            return int((starts > wrong[0]).argmax())
    return None


_TOLERANCE = 1e-4
"""Relative difference allowed between a stored summary and the one recomputed from its array (float32 rounding)."""

_FIX_DAMAGED = "the dataset's files were damaged or edited"


def _bad_rows(column: pa.ChunkedArray, width: int, bad: Any) -> np.ndarray:
    """Indices of the non-null rows of a fixed-size list column (``width`` values each) where ``bad(values)`` holds."""
    import pyarrow.compute as pc

    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = pc.list_flatten(flat)  # null rows contribute no values
    while pa.types.is_fixed_size_list(values.type):
        values = pc.list_flatten(values)
    matrix = values.to_numpy(zero_copy_only=False).reshape(-1, width)
    valid = np.flatnonzero(flat.is_valid().to_numpy(zero_copy_only=False))
    return valid[bad(matrix).any(axis=1)]


_ARRAY_CHECKS = [
    ("landmarks", 2 * N_NODES, lambda v: ~np.isfinite(v), "non-finite values in landmarks"),
    ("landmarks_std", 2 * N_NODES, lambda v: ~(v >= 0), "non-finite or negative values in landmarks_std"),
    ("latent_sigma", N_LATENT, lambda v: ~np.isfinite(v), "non-finite values in latent_sigma"),
]


def _check_arrays(fixed: pa.Table, frame: pl.DataFrame, offset: int) -> None:
    """Finite arrays and non-negative std, for the array columns ``fixed`` holds (``frame`` holds ``image_id``)."""
    for name, width, bad, what in _ARRAY_CHECKS:
        if name not in fixed.column_names:
            continue
        rows = _bad_rows(fixed.column(name), width, bad)
        if rows.size:
            row = int(rows[0])
            raise RecordError(
                f"{what} ({_FIX_DAMAGED}); rebuild the dataset from its source table with "
                "cxu.to_hf_dataset(table), or drop the row (ds.filter)",
                row=offset + row,
                image_id=frame["image_id"][row],
                column=name,
            )


def _check_summaries(frame: pl.DataFrame, offset: int) -> None:
    """Stored summaries that match ``landmarks_std`` / ``latent_sigma`` (``frame``: every canonical column)."""
    recomputed = frame.select(summary_expressions())
    for name in SUMMARY_SCHEMA:
        stored, fresh = frame[name], recomputed[name]
        differs = (stored.is_null() != fresh.is_null()) | (
            (stored - fresh).abs() > _TOLERANCE * fresh.abs().clip(lower_bound=1.0)
        ).fill_null(False)
        if differs.any():
            row = int(differs.arg_max())
            source = "latent_sigma" if name == "latent_sigma_mean" else "landmarks_std"
            raise RecordError(
                f"{name} is {stored[row]!r} but {source} gives {fresh[row]!r}: the values disagree ({_FIX_DAMAGED}, "
                f"or {source} changed without its summaries). Rebuild the dataset from its source table with "
                f"cxu.to_hf_dataset(table); if {source} is right, recompute the summaries with cxu.add_summaries",
                row=offset + row,
                image_id=frame["image_id"][row],
                column=name,
            )


def _read_from_files(dataset: Any) -> bool:
    """Whether ``datasets`` built this object from data files (``load_dataset``), rather than from memory or our own Arrow file."""
    return getattr(dataset.info, "builder_name", None) is not None


def from_hf_dataset(dataset: Any) -> pl.DataFrame:
    """The canonical table of a ``datasets.Dataset`` or ``IterableDataset`` made by :func:`to_hf_dataset`.

    Extra columns (an ``image`` column, labels) are dropped; the round trip
    ``from_hf_dataset(to_hf_dataset(t)).equals(t)`` holds exactly.

    What is checked: every canonical column is present with its canonical
    feature (dtype and shape, :func:`hf_features`), each array has the shape
    ``(120, 2)`` / ``(64,)`` and finite values, standard deviations are not
    negative, and each stored uncertainty summary (``node_sigma_mean``...)
    agrees with the ``landmarks_std`` / ``latent_sigma`` it was computed from
    (a column dropped and refilled with nulls, or a damaged value, shows up
    there).  What cannot be checked on a ``datasets`` object is whether rows
    are missing or other values (landmarks, masks, ids) were changed in the
    files it was read from: for a dataset loaded from files an
    :class:`~chexmask_u_tools.errors.IntegrityWarning` says so.  A folder
    written by :func:`~chexmask_u_tools.publish.save_hub_folder` records each
    shard's rows and sha256: read it with ``cxu.open_table(folder)`` or
    ``cxu.read_table(folder)``, which check them.

    Raises
    ------
    SchemaError
        The dataset lacks canonical columns, a column has another feature, or
        an array another shape (named, with the row).
    RecordError
        Non-finite values, a negative std, or a summary that disagrees with
        its array (row, image id and column named).
    InputError
        Not a ``datasets`` object, or a ``DatasetDict`` (pass one split).

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
    _check_dataset_object(dataset, iterable=True)
    if dataset.column_names is not None:
        _check_columns(dataset.column_names)
    frames = []
    offset = 0
    for batch in dataset.with_format("arrow").iter(batch_size=READ_BATCH_ROWS):
        _check_columns(batch.column_names)
        _check_types(batch.schema, dataset.features)
        frame = _plain_batch(batch.select(list(CANONICAL_SCHEMA)), offset)
        _check_summaries(frame, offset)
        frames.append(frame)
        offset += frame.height
    _warn_unchecked_files(
        dataset, "from_hf_dataset checked the columns, features, shapes, finite values and the uncertainty summaries"
    )
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=CANONICAL_SCHEMA)


def scan_hf_dataset(dataset: Any) -> pl.LazyFrame:
    """A lazy canonical table over a ``datasets.Dataset`` that reads, batch by batch, only the columns a query needs.

    Nothing is read when scanned.  A query (``collect``, ``collect_batches``)
    reads :data:`READ_BATCH_ROWS` rows at a time of the columns it uses, in
    order: for a dataset backed by Arrow cache files (:func:`to_hf_dataset`,
    ``datasets.load_dataset``, ``load_from_disk``) each batch is a slice of
    the memory-mapped table, so a query over the whole dataset holds one
    converted batch of its columns in memory, never the dataset; an in-memory
    dataset is read the same way from its Arrow table.  ``Array2D`` columns
    become polars ``Array`` ``(120, 2)`` float32 (as :func:`from_hf_dataset`
    gives them), the canonical columns their canonical dtypes, and extra
    columns (labels, metadata) are kept, extension columns as their plain
    Arrow storage (:func:`plain_storage_column`).

    What is checked: when scanned, that every canonical column is present
    with its canonical feature; while read, that each array column read has
    the shape ``(120, 2)`` / ``(64,)`` and finite values (a non-negative
    std), the error naming the row and image id.  Unlike
    :func:`from_hf_dataset` the uncertainty summaries (``node_sigma_mean``...)
    are not recomputed from ``landmarks_std`` (a query reads them as stored;
    that would read every array): call :func:`from_hf_dataset` to check them.
    A dataset read from data files by ``datasets`` gets the same
    :class:`~chexmask_u_tools.errors.IntegrityWarning` as there.

    Raises
    ------
    SchemaError
        When scanned: a canonical column missing or of another feature.  When
        read: an array of another shape (row and image id named).
    RecordError
        When read: non-finite values in an array column, or a negative std.
    InputError
        Not a ``datasets.Dataset`` (an ``IterableDataset``: use
        :func:`from_hf_dataset`; a ``DatasetDict``: pass one split).

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(3)
    >>> view = scan_hf_dataset(to_hf_dataset(table).add_column("label", [0, 1, 0]))
    >>> view.select("image_id", "label").collect().equals(table.select("image_id").with_columns(label=pl.Series([0, 1, 0])))
    True
    >>> view.select(list(table.columns)).collect().equals(table)
    True
    """
    from polars.io.plugins import register_io_source

    _check_dataset_object(dataset, iterable=False)
    _check_columns(dataset.column_names)
    arrow_schema = dataset.data.schema
    _check_types(arrow_schema, dataset.features)
    schema = _plain_batch(arrow_schema.empty_table(), 0).schema
    _warn_unchecked_files(dataset, "scan_hf_dataset checks the columns, features, and the shapes and finite values of the arrays it reads")

    def read(with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, _batch_size: int | None) -> Iterator[pl.DataFrame]:
        wanted = list(schema) if with_columns is None else list(with_columns)
        needed = [*wanted, *(predicate.meta.root_names() if predicate is not None else [])]
        if any(name in (*_ARRAY_COLUMNS, "latent_sigma") for name in needed):
            needed.append("image_id")  # names the row in a shape or value error
        columns = list(dict.fromkeys(needed))
        offset = produced = 0
        for batch in dataset.with_format("arrow", columns=columns).iter(batch_size=READ_BATCH_ROWS):
            frame = _plain_batch(batch, offset)
            offset += batch.num_rows
            if predicate is not None:
                frame = frame.filter(predicate)
            frame = frame.select(wanted)
            if n_rows is not None:
                frame = frame.head(n_rows - produced)
            produced += frame.height
            yield frame
            if n_rows is not None and produced >= n_rows:
                return

    return register_io_source(read, schema=schema, explain_name="datasets.Dataset")


def _check_dataset_object(dataset: Any, *, iterable: bool) -> None:
    import datasets

    if isinstance(dataset, datasets.DatasetDict | datasets.IterableDatasetDict):
        raise InputError(f"got a DatasetDict with splits {list(dataset)}; pass one split, e.g. ds['train']")
    if iterable and isinstance(dataset, datasets.IterableDataset):
        return
    if isinstance(dataset, datasets.IterableDataset):
        raise InputError("scan_hf_dataset reads a datasets.Dataset, got an IterableDataset; use from_hf_dataset(dataset)")
    if not isinstance(dataset, datasets.Dataset):
        allowed = "a datasets.Dataset or IterableDataset" if iterable else "a datasets.Dataset"
        raise InputError(f"expected {allowed}, got {type(dataset).__name__}")


def _plain_batch(batch: pa.Table, offset: int) -> pl.DataFrame:
    """One batch of a dataset's columns as polars: arrays of the canonical shape (checked), canonical dtypes, finite arrays.

    ``offset`` is the batch's first row in the dataset (for the errors); a
    batch holding an array column must hold ``image_id`` too.
    """
    fixed = _fixed_shape(batch, offset)
    frame = pl.from_arrow(fixed)
    frame = frame.with_columns(pl.col(name).cast(dtype) for name, dtype in CANONICAL_SCHEMA.items() if name in frame.columns)
    _check_arrays(fixed, frame, offset)
    return frame


def _warn_unchecked_files(dataset: Any, checked: str) -> None:
    """The :class:`IntegrityWarning` for a dataset ``datasets`` read from data files, saying what ``checked`` covered."""
    if not _read_from_files(dataset):
        return
    warnings.warn(
        IntegrityWarning(
            f"{checked}; it could not check whether rows are missing or whether landmarks, masks or ids were "
            "changed in the data files this dataset was read from (a datasets object keeps no record of "
            "them). A folder written by cxu.save_hub_folder records each shard's rows and sha256: read it "
            "with cxu.open_table(folder) or cxu.read_table(folder) to check them"
        ),
        stacklevel=3,
    )
