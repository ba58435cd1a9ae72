"""Joining CheXmask-U rows to their source database's metadata.

Ids are compared in a normalised form, on both sides, per source: backslashes
become ``/``, a leading ``./`` or ``/`` goes, the source's distribution
prefixes (CheXpert's ``CheXpert-v1.0/`` and ``CheXpert-v1.0-small/``, from
the registry) go, and a trailing image suffix (``.png``, ``.jpg``, ``.jpeg``,
``.dcm``, ``.dicom``, any case) goes.  So ``CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg``
matches the CheXmask ``train/patient1/study1/view1_frontal`` and
``00000001_000.png`` matches ``00000001_000``.

:func:`attach_metadata` returns the joined table; with ``return_report=True``
it returns ``(table, JoinReport)``: rows matched per source and the rows whose
original image size disagrees with the metadata's.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import polars as pl

from chexmask_u_tools.cohorts.metadata import MetadataWarning
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.schema import PREPROCESSED_SIZE, as_polars
from chexmask_u_tools.sources import REGISTRY

__all__ = ["JoinReport", "attach_metadata", "metadata_key"]

_SUFFIX = r"(?i)\.(png|jpe?g|dcm|dicom)$"
_KEY = "__key"
MAX_EXAMPLES = 5


def metadata_key(image_id: str | pl.Expr = "image_id", source: str | pl.Expr = "source") -> pl.Expr:
    """The normalised id both sides of :func:`attach_metadata` are joined on (module docstring).

    Examples
    --------
    >>> import polars as pl
    >>> frame = pl.DataFrame({"source": ["CheXpert", "ChestX-ray8"],
    ...                       "image_id": ["CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg", "00000001_000.png"]})
    >>> frame.select(metadata_key()).to_series().to_list()
    ['train/patient1/study1/view1_frontal', '00000001_000']
    """
    image_id = pl.col(image_id) if isinstance(image_id, str) else image_id
    source = pl.col(source) if isinstance(source, str) else source
    key = image_id.str.strip_chars().str.replace_all("\\\\", "/").str.replace(r"^(\./|/)+", "")
    prefixed = [(info.name, info.image_layout.strip_prefixes) for info in REGISTRY.values() if info.image_layout.strip_prefixes]
    for name, prefixes in prefixed:
        pattern = "^(" + "|".join(re.escape(prefix) for prefix in prefixes) + ")"
        key = pl.when(source == name).then(key.str.replace(pattern, "")).otherwise(key)
    return key.str.replace(_SUFFIX, "").alias(_KEY)


@dataclass(frozen=True)
class JoinReport:
    """What :func:`attach_metadata` matched.

    Attributes
    ----------
    per_source:
        ``source``, ``rows`` (table rows), ``matched`` (rows that found metadata), ``unmatched``.
    size_mismatches:
        Rows whose ``height``/``width`` disagree with the metadata's
        ``original_height``/``original_width`` (``source``, ``image_id``,
        ``height``, ``width``, ``original_height``, ``original_width``); only
        rows that carry their original size are compared (original frame, or
        preprocessed rows whose size is not the 1024 default).

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = pl.DataFrame({"source": ["ChestX-ray8"] * 3,
    ...                       "image_id": ["00000001_000.png", "00000001_001.png", "00000099_000.png"]})
    >>> meta = pl.DataFrame({"source": "ChestX-ray8", "image_id": ["00000001_000.png", "00000001_001.png"],
    ...                      "patient_id": ["1", "1"]})
    >>> joined, report = cxu.attach_metadata(table, meta, return_report=True)
    >>> report.matched, report.per_source.rows(), report.size_mismatches.height
    (2, [('ChestX-ray8', 3, 2, 1)], 0)
    >>> print(report)
    ChestX-ray8: 2 of 3 rows matched
    """

    per_source: pl.DataFrame
    size_mismatches: pl.DataFrame

    @property
    def matched(self) -> int:
        """Rows that found their metadata."""
        return int(self.per_source["matched"].sum())

    def __str__(self) -> str:
        lines = [f"{r['source']}: {r['matched']} of {r['rows']} rows matched" for r in self.per_source.iter_rows(named=True)]
        if self.size_mismatches.height:
            lines.append(f"{self.size_mismatches.height} rows disagree with the metadata's original image size")
        return "\n".join(lines)


def _metadata_frame(metadata) -> pl.DataFrame:
    if isinstance(metadata, pl.LazyFrame):
        metadata = metadata.collect()
    if isinstance(metadata, (list, tuple)):
        if not metadata:
            raise InputError("metadata is an empty list")
        metadata = pl.concat([m.collect() if isinstance(m, pl.LazyFrame) else m for m in metadata], how="diagonal_relaxed")
    if not isinstance(metadata, pl.DataFrame):
        raise InputError(f"metadata must be a polars DataFrame (read_metadata) or a list of them, got {type(metadata).__name__}")
    missing = [c for c in ("source", "image_id") if c not in metadata.columns]
    if missing:
        raise InputError(f"metadata lacks the columns {missing}; read it with read_metadata")
    return metadata


def attach_metadata(
    table: pl.DataFrame | pl.LazyFrame,
    metadata: pl.DataFrame | pl.LazyFrame | list[pl.DataFrame],
    *,
    how: str = "left",
    return_report: bool = False,
) -> pl.DataFrame | pl.LazyFrame | tuple[pl.DataFrame | pl.LazyFrame, JoinReport]:
    """Join each row to its metadata on (source, normalised image id); the table's own columns are unchanged.

    Parameters
    ----------
    table:
        Canonical table, eager or lazy (a lazy table stays lazy; only its
        ``source``/``image_id``/``frame``/``height``/``width`` columns are
        read to check the join).
    metadata:
        :func:`~chexmask_u_tools.cohorts.metadata.read_metadata` tables (one,
        or a list for several sources).
    how:
        ``"left"`` keeps every row (metadata columns null where unmatched),
        ``"inner"`` keeps matched rows only.
    return_report:
        Also return a :class:`JoinReport`.

    Returns
    -------
    The table plus the metadata columns; the metadata's ``split`` arrives as
    ``official_split`` (``split`` is the working split column, written by
    :func:`~chexmask_u_tools.cohorts.splits.patient_split`).  Rows whose
    original size disagrees with the metadata raise nothing but warn
    (:class:`~chexmask_u_tools.cohorts.metadata.MetadataWarning`) and are
    listed in the report.

    Raises
    ------
    InputError
        When no row matches (a path-prefix or release mismatch), naming an id
        from each side; when the metadata holds an id twice; when a metadata
        column would overwrite a table column.

    Examples
    --------
    >>> import polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample().filter(pl.col("source") == "ChestX-ray8").head(3)
    >>> meta = pl.DataFrame({"source": "ChestX-ray8", "image_id": table["image_id"].str.replace(".png", ""),
    ...                      "patient_id": ["1", "1", "2"], "split": ["train", "train", "test"]})
    >>> joined, report = cxu.attach_metadata(table, meta, return_report=True)
    >>> joined.select("patient_id", "official_split").rows()
    [('1', 'train'), ('1', 'train'), ('2', 'test')]
    >>> print(report)
    ChestX-ray8: 3 of 3 rows matched
    """
    table = as_polars(table, argument="table")
    if how not in ("left", "inner"):
        raise InputError(f"how must be 'left' or 'inner', got {how!r}")
    metadata = _metadata_frame(metadata)
    meta = metadata.rename({"split": "official_split"}) if "split" in metadata.columns else metadata
    meta = meta.with_columns(metadata_key()).drop("image_id")
    duplicated = meta.select(pl.struct("source", _KEY).is_duplicated()).to_series()
    if duplicated.any():
        first = meta.filter(duplicated).row(0, named=True)
        raise InputError(
            f"the metadata holds {int(duplicated.sum())} rows with a repeated (source, image id), e.g. "
            f"{first['source']} {first[_KEY]!r}; read it with read_metadata(..., duplicates='first') or drop them"
        )
    lazy = isinstance(table, pl.LazyFrame)
    names = table.collect_schema().names()
    clash = [c for c in meta.columns if c in names and c not in ("source", _KEY)]
    if clash:
        raise InputError(f"the table already has the metadata columns {clash}; drop them before attach_metadata")
    size_columns = [c for c in ("frame", "height", "width") if c in names]
    keys = table.lazy().select("source", "image_id", *size_columns).with_columns(metadata_key()).collect()
    sizes = [c for c in ("original_height", "original_width") if c in meta.columns]
    hits = meta.select("source", _KEY, *sizes, pl.lit(True).alias("__hit"))
    probe = keys.join(hits, on=["source", _KEY], how="left", maintain_order="left").with_columns(pl.col("__hit").fill_null(False))
    per_source = (
        probe.group_by("source", maintain_order=True)
        .agg(pl.len().cast(pl.Int64).alias("rows"), pl.col("__hit").sum().cast(pl.Int64).alias("matched"))
        .with_columns((pl.col("rows") - pl.col("matched")).alias("unmatched"))
    )
    if keys.height and per_source["matched"].sum() == 0:
        table_id = keys.row(0, named=True)
        meta_id = meta.row(0, named=True) if meta.height else None
        sources = sorted(set(meta["source"].drop_nulls()))
        hint = f"; metadata e.g. {meta_id['source']} {meta_id[_KEY]!r}" if meta_id else "; the metadata is empty"
        raise InputError(
            f"no row matched the metadata (metadata sources {sources}): table e.g. {table_id['source']} "
            f"{table_id['image_id']!r} (normalised {table_id[_KEY]!r}){hint}. Check the source and the release the files come from"
        )
    mismatches = _size_mismatches(probe)
    if mismatches.height:
        warnings.warn(
            MetadataWarning(
                f"{mismatches.height} rows disagree with the metadata's original image size, e.g. "
                f"{mismatches['source'][0]} {mismatches['image_id'][0]!r}: table {mismatches['height'][0]}x{mismatches['width'][0]}, "
                f"metadata {mismatches['original_height'][0]}x{mismatches['original_width'][0]} (see return_report=True)"
            ),
            stacklevel=2,
        )
    joined = table.lazy().with_columns(metadata_key()).join(meta.lazy(), on=["source", _KEY], how=how, maintain_order="left").drop(_KEY)
    result = joined if lazy else joined.collect()
    report = JoinReport(per_source=per_source, size_mismatches=mismatches)
    return (result, report) if return_report else result


def _size_mismatches(probe: pl.DataFrame) -> pl.DataFrame:
    columns = ["source", "image_id", "height", "width", "original_height", "original_width"]
    if not all(c in probe.columns for c in columns):
        return pl.DataFrame(
            schema={
                "source": pl.String,
                "image_id": pl.String,
                "height": pl.Int32,
                "width": pl.Int32,
                "original_height": pl.Int32,
                "original_width": pl.Int32,
            }
        )
    carries_size = pl.lit(True)
    if "frame" in probe.columns:
        default = (pl.col("height") == PREPROCESSED_SIZE) & (pl.col("width") == PREPROCESSED_SIZE)
        carries_size = (pl.col("frame") != "preprocessed") | ~default
    differs = (pl.col("height") != pl.col("original_height")) | (pl.col("width") != pl.col("original_width"))
    return probe.filter(carries_size & differs.fill_null(False)).select(
        "source", "image_id", *(pl.col(c).cast(pl.Int32) for c in columns[2:])
    )
