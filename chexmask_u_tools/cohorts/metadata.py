"""Readers for each source database's own public metadata files, into one normalised table.

CheXmask-U holds segmentations only; who the patient is, the view, sex, age,
the official split and the findings live in each database's own files.
:func:`read_metadata` reads them by column name (extra columns are fine,
``.csv`` and ``.csv.gz`` alike) and returns one polars table, one row per image:

=====================  ========  ===============================================================
column                 dtype     meaning
=====================  ========  ===============================================================
``source``             String    canonical source name
``image_id``           String    the image id as CheXmask-U writes it (CheXpert: the ``Path``
                                 without its ``CheXpert-v1.0[-small]/`` prefix)
``patient_id``         String    the database's patient id (see "Patients" below)
``study_id``           String    the study (MIMIC ``study_id``, CheXpert ``patientN/studyM``,
                                 Padchest ``StudyID``); null where the database has none
``view``               String    ``PA``, ``AP``, ``LATERAL``, ``LL`` or null
``view_raw``           String    the database's own spelling of the view (``AP AXIAL`` ...)
``sex``                String    ``F``, ``M`` or null
``age``                Float32   years (Padchest: study year minus birth year)
``split``              String    official split, normalised to ``train``/``val``/``test``
                                 (MIMIC ``validate`` and CheXpert ``valid`` are ``val``;
                                 ChestX-ray8 ``train_val_list.txt`` is ``train``); else null
``original_height``,   Int32     image size the database reports (MIMIC ``Rows``/``Columns``,
``original_width``               ChestX-ray8 ``OriginalImage[Width,Height]``, Padchest
                                 ``Rows_DICOM``/``Columns_DICOM``); else null
``label.<name>``       Float32   one column per finding in the database's own label set:
                                 1 positive, 0 negative, -1 uncertain, null not mentioned
=====================  ========  ===============================================================

Per source (file names and columns as published; the facts live in the
registry, :attr:`chexmask_u_tools.sources.SourceInfo.metadata`):

* **MIMIC-CXR-JPG**: ``mimic-cxr-2.0.0-metadata.csv(.gz)`` (image rows, view,
  size), ``mimic-cxr-2.0.0-split.csv(.gz)`` (split), and one labeler file,
  ``-chexpert`` or ``-negbio`` (labels per study, joined on
  ``(subject_id, study_id)``; with both present choose with ``labeler=``).
  Sex and age are not in MIMIC-CXR-JPG: null.
* **CheXpert**: ``train.csv``/``valid.csv`` (and a later ``test.csv`` with the
  same ``Path`` column).  The split is the path's first folder.
* **ChestX-ray8**: ``Data_Entry_2017.csv`` or ``Data_Entry_2017_v2020.csv``
  (``Finding Labels`` joined by ``|``; each label is 1 or 0, never -1 or
  null) and ``train_val_list.txt``/``test_list.txt`` for the split.
* **Padchest**: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)``;
  ``Labels`` is a Python-list-looking string, parsed as text (never
  evaluated).  The label columns are the names found in the file (1 listed,
  0 not listed; an empty or missing list gives null, since nothing was
  asserted).  No official split.
* **VinDr-CXR**: ``image_labels_train.csv``/``image_labels_test.csv``; the
  split comes from the file name.  Training images carry one row per
  radiologist (``rad_id``): ``readers="majority"`` (default) makes a label 1
  when more than half of the radiologists who gave a value marked it 1
  (a tie is 0), ``readers="any"`` when any did.

Patients: MIMIC ``subject_id``, ChestX-ray8 ``Patient ID``, Padchest
``PatientID``, CheXpert the ``patientNNNNN`` folder of the path.  VinDr-CXR
publishes no patient ids, so each image is its own patient (``patient_id`` =
``image_id``): a patient-level split of VinDr-CXR is an image-level split,
which :func:`~chexmask_u_tools.cohorts.splits.patient_split` makes only when
asked (``per_image=True``).  A
row whose patient id is missing falls back to its image id, with one
:class:`MetadataWarning` counting them.

Bad input: a file whose columns belong to another source is refused
(:class:`~chexmask_u_tools.errors.InputError` naming the file and the source
it looks like); a file matching no known layout raises
:class:`~chexmask_u_tools.errors.SchemaError` naming the missing columns (fix
column names with ``columns={"theirs": "published name"}``); a label value
other than 1, 0, -1 or blank raises
:class:`~chexmask_u_tools.errors.RecordError` with file, row (0-based, header
excluded), image id and column; duplicate image ids raise a ``RecordError``
unless ``duplicates="first"``.  A row with more or fewer fields than the
header (a lost or added comma would shift its values into other columns) and
a row whose id is empty raise a ``RecordError`` naming the file and the line.
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv

from chexmask_u_tools.errors import FileReadError, InputError, RecordError, SchemaError
from chexmask_u_tools.sources import REGISTRY, MetadataFormat, SourceInfo, require_source

__all__ = [
    "LABEL_PREFIX",
    "METADATA_SCHEMA",
    "MetadataWarning",
    "detect_metadata_source",
    "label_columns",
    "metadata_files",
    "read_metadata",
]

LABEL_PREFIX = "label."
"""Prefix of the label columns (``label.Cardiomegaly``)."""

METADATA_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String(),
    "image_id": pl.String(),
    "patient_id": pl.String(),
    "study_id": pl.String(),
    "view": pl.String(),
    "view_raw": pl.String(),
    "sex": pl.String(),
    "age": pl.Float32(),
    "split": pl.String(),
    "original_height": pl.Int32(),
    "original_width": pl.Int32(),
}
"""The columns every :func:`read_metadata` table starts with, in order (label columns follow)."""

_FILE = "__file"
_ROW = "__row"
_LABEL_VALUES = (1.0, 0.0, -1.0)
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([YMWD]?)\s*$", re.IGNORECASE)
_AGE_UNIT = {"": 1.0, "Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}
_LIST_ITEM = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)")\s*(?:,|$)""")


class MetadataWarning(UserWarning):
    """Something in a metadata file was handled by a documented fallback (counted in the message)."""


def label_columns(table: pl.DataFrame | pl.LazyFrame) -> list[str]:
    """The label columns of a metadata (or joined) table, in order.

    Examples
    --------
    >>> import polars as pl
    >>> label_columns(pl.DataFrame({"image_id": ["a"], "label.Edema": [1.0]}))
    ['label.Edema']
    """
    return [name for name in table.collect_schema().names() if name.startswith(LABEL_PREFIX)]


# ----------------------------------------------------------------------------
# files


def _matches(name: str, patterns) -> str | None:
    lower = name.lower()
    return next((pattern for pattern in patterns if fnmatch.fnmatch(lower, pattern)), None)


def metadata_files(source: str, folder: str | os.PathLike) -> list[Path]:
    """The files in ``folder`` (not its sub-folders) named like ``source``'s published metadata files.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("train.csv", "valid.csv", "notes.txt"):
    ...     _ = (folder / name).write_text("")
    >>> [p.name for p in metadata_files("chexpert", folder)]
    ['train.csv', 'valid.csv']
    """
    info = REGISTRY[require_source(source)]
    fmt = _format(info)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.is_file() and _matches(p.name, fmt.files))
    if not found:
        present = sorted(p.name for p in folder.iterdir())
        listing = ", ".join(present[:20]) + (f" ... ({len(present)} entries)" if len(present) > 20 else "")
        raise InputError(
            f"no {info.name} metadata file in {folder} (looked for {', '.join(fmt.files)}; found: {listing or 'nothing'}); "
            "pass the files themselves to read_metadata"
        )
    return found


def _format(info: SourceInfo) -> MetadataFormat:
    if info.metadata is None:
        raise InputError(f"the registry knows no metadata files for {info.name}")
    return info.metadata


def _read_csv(path: Path, columns: Mapping[str, str] | None) -> pl.DataFrame:
    if not path.is_file():
        raise FileReadError(f"metadata file not found: {path}")
    try:
        frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as error:
        raise FileReadError(f"cannot read metadata file {path}: {error}") from error
    _check_fields(path, frame.columns, frame.height)
    if columns:
        frame = frame.rename({theirs: ours for theirs, ours in columns.items() if theirs in frame.columns})
    return frame.with_columns(pl.lit(str(path)).alias(_FILE), pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW))


def _check_fields(path: Path, header: list[str], rows: int) -> None:
    """Refuse a row whose number of fields differs from the header's (RecordError with the line).

    polars pads a short row with nulls and cuts a long one, so a row that lost
    or gained a comma would be read shifted or half empty; pyarrow's parser
    reports each such row with its number.  One exception: when the header
    ends in unnamed columns (a trailing comma) and *no* row has them, the file
    is consistent and is read.
    """
    named = max((k + 1 for k, name in enumerate(header) if name.strip()), default=0)
    reported: list = []

    def invalid(row) -> str:
        reported.append((row.number, row.actual_columns, row.expected_columns, row.text[:80]))
        return "skip"

    try:
        pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False),  # rows are numbered only without threads
            parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
            convert_options=pa_csv.ConvertOptions(include_columns=[], include_missing_columns=False),
        )
    except (pa.ArrowInvalid, OSError) as error:
        raise FileReadError(f"cannot read metadata file {path}: {error}") from error
    if not reported:
        return
    if len(reported) == rows and all(named <= actual < expected for _, actual, expected, _ in reported):
        return  # the header's unnamed trailing columns are in no row
    number, actual, expected, text = reported[0]
    more = f" ({len(reported)} such rows)" if len(reported) > 1 else ""
    raise RecordError(
        f"line {number} has {actual} fields where the header has {expected}{more}: {text!r}; a comma was lost "
        "or added, so its values would land in the wrong columns. Repair the row (or restore the file as published)",
        file=path,
        row=number - 2,
    )


def _require_keys(frame: pl.DataFrame, path: Path, column: str) -> None:
    """Refuse rows whose key column (the image id, or MIMIC's ``subject_id`` in a label file) is empty."""
    empty = frame.filter(_text(column, frame).is_null())
    if empty.height:
        row = empty[_ROW][0]
        more = f" ({empty.height} such rows)" if empty.height > 1 else ""
        raise RecordError(
            f"line {row + 2} has an empty {column!r}{more}: a row without its key joins nothing, or the wrong image. "
            "Repair the row or delete it",
            file=path,
            row=row,
            column=column,
        )


def _roles(columns: set[str], fmt: MetadataFormat) -> list[str]:
    return [role for role, needed in fmt.roles.items() if all(_has(columns, c) for c in needed)]


def _has(columns: set[str], name: str) -> bool:
    return any(alternative in columns for alternative in name.split("|"))


def _pick(columns, name: str) -> str | None:
    return next((alternative for alternative in name.split("|") if alternative in columns), None)


def detect_metadata_source(path: str | os.PathLike) -> str:
    """The source whose published metadata layout a csv file has, from its columns (raises when none or several).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "entries.csv"
    >>> _ = path.write_text("Image Index,Finding Labels,Patient ID,View Position\\n00000001_000.png,Hernia,1,PA\\n")
    >>> detect_metadata_source(path)
    'ChestX-ray8'
    """
    path = Path(path)
    if path.suffix.lower() == ".txt":
        matches = [name for name, info in REGISTRY.items() if info.metadata and _matches(path.name, info.metadata.list_files)]
    else:
        columns = set(_read_csv(path, None).columns)
        matches = [name for name, info in REGISTRY.items() if info.metadata and _roles(columns, info.metadata)]
    if len(matches) != 1:
        what = "no known" if not matches else f"several ({', '.join(matches)})"
        raise InputError(f"{path}: {what} source's metadata layout matches this file; pass source= to read_metadata")
    return matches[0]


def _refuse(path: Path, columns: set[str], info: SourceInfo) -> None:
    for other in REGISTRY.values():
        if other.name != info.name and other.metadata is not None and _roles(columns, other.metadata):
            raise InputError(f"{path} has the columns of a {other.name} metadata file, not {info.name}; pass it with source={other.name!r}")
    fmt = _format(info)
    missing = {role: [c for c in needed if not _has(columns, c)] for role, needed in fmt.roles.items()}
    closest = min(missing.items(), key=lambda item: len(item[1]))
    raise SchemaError(
        f"{path} is not a {info.name} metadata file: a {closest[0]!r} file needs the columns {closest[1]} "
        f"(it has {sorted(columns - {_FILE, _ROW})[:20]}); rename yours with columns={{'theirs': 'published name'}}"
    )


# ----------------------------------------------------------------------------
# values


def _text(column: str | None, frame: pl.DataFrame) -> pl.Expr:
    """A trimmed text column, null where empty or absent."""
    if column is None or column not in frame.columns:
        return pl.lit(None, pl.String)
    value = pl.col(column).str.strip_chars()
    return pl.when(value == "").then(None).otherwise(value)


def _integer_text(column: str | None, frame: pl.DataFrame) -> pl.Expr:
    """Ids written as ``1`` or ``1.0`` read as ``"1"``; other text unchanged."""
    value = _text(column, frame)
    return value.str.replace(r"^(-?\d+)\.0+$", "${1}")


def _first_bad(frame: pl.DataFrame, bad: pl.Expr, id_column: str) -> dict | None:
    rows = frame.filter(bad).select(_FILE, _ROW, id_column).head(1)
    return rows.row(0, named=True) if rows.height else None


def _number(frame: pl.DataFrame, column: str | None, id_column: str, what: str) -> pl.Series:
    """A column parsed as Float64 (empty -> null); anything else non-empty raises RecordError."""
    if column is None or column not in frame.columns:
        return pl.Series(what, [None] * frame.height, pl.Float64)
    text = frame.select(_text(column, frame)).to_series()
    value = text.cast(pl.Float64, strict=False)
    bad = _first_bad(
        frame.with_columns(text.alias("__t"), value.alias("__v")), pl.col("__t").is_not_null() & pl.col("__v").is_null(), id_column
    )
    if bad is not None:
        raise RecordError(f"{what} is not a number", file=bad[_FILE], row=bad[_ROW], image_id=bad[id_column], column=column)
    return value.alias(what)


def _ages(frame: pl.DataFrame, column: str | None, id_column: str) -> pl.Series:
    """Ages as years: plain numbers, or DICOM-style ``058Y`` / ``8M`` / ``3W`` / ``10D``."""
    if column is None or column not in frame.columns:
        return pl.Series("age", [None] * frame.height, pl.Float32)
    text = frame.select(_text(column, frame)).to_series()
    parts = text.str.extract_groups(_AGE.pattern)
    number = parts.struct.field("1").cast(pl.Float64)
    unit = parts.struct.field("2").str.to_uppercase().replace_strict(_AGE_UNIT, default=None, return_dtype=pl.Float64)
    bad = _first_bad(
        frame.with_columns(text.alias("__t"), number.alias("__n")), pl.col("__t").is_not_null() & pl.col("__n").is_null(), id_column
    )
    if bad is not None:
        raise RecordError(
            "age is not a number of years (or 058Y / 8M / 3W / 10D)", file=bad[_FILE], row=bad[_ROW], image_id=bad[id_column], column=column
        )
    return (number * unit).cast(pl.Float32).alias("age")


def _mapped(frame: pl.DataFrame, column: str | None, mapping: Mapping[str, str]) -> tuple[pl.Expr, pl.Expr]:
    raw = _text(column, frame)
    return raw.replace_strict(dict(mapping), default=None, return_dtype=pl.String), raw


def _label_values(frame: pl.DataFrame, labels, id_column: str) -> list[pl.Series]:
    """Label columns as Float32 (1, 0, -1, null); other values raise RecordError."""
    out = []
    for label in labels:
        text = frame.select(_text(label, frame)).to_series()
        value = text.cast(pl.Float64, strict=False)
        ok = value.is_in(list(_LABEL_VALUES))
        bad = _first_bad(
            frame.with_columns(text.alias("__t"), ok.alias("__ok")),
            pl.col("__t").is_not_null() & ~pl.col("__ok").fill_null(False),
            id_column,
        )
        if bad is not None:
            found = frame.filter((pl.col(_FILE) == bad[_FILE]) & (pl.col(_ROW) == bad[_ROW]))[label][0]
            raise RecordError(
                f"label value {found!r} is not 1, 0, -1 or blank", file=bad[_FILE], row=bad[_ROW], image_id=bad[id_column], column=label
            )
        out.append(value.cast(pl.Float32).alias(LABEL_PREFIX + label))
    return out


def _check_duplicates(frame: pl.DataFrame, keys: list[str], policy: str, what: str, id_column: str) -> pl.DataFrame:
    duplicated = frame.select(pl.struct(keys).is_duplicated()).to_series()
    if not duplicated.any():
        return frame
    n_ids = frame.filter(duplicated).select(pl.struct(keys).n_unique()).item()
    if policy == "raise":
        first = frame.filter(pl.struct(keys).is_first_distinct().not_()).head(1).row(0, named=True)
        raise RecordError(
            f"{n_ids} {what} appear more than once ({int(duplicated.sum())} rows); pass duplicates='first' to keep the first",
            file=first[_FILE],
            row=first[_ROW],
            image_id=str(first[id_column]),
        )
    warnings.warn(MetadataWarning(f"{n_ids} {what} appear more than once; kept the first row of each"), stacklevel=4)
    return frame.unique(subset=keys, keep="first", maintain_order=True)


def _parse_list(text: str | None) -> list[str] | None:
    """``"['a', ' b']"`` -> ``["a", "b"]`` without evaluating anything; None when not list-shaped."""
    inner = text.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        return None
    inner = inner[1:-1].strip()
    items, position = [], 0
    while position < len(inner):
        match = _LIST_ITEM.match(inner, position)
        if match is None or match.end() == position:
            return None
        items.append((match.group(1) if match.group(1) is not None else match.group(2)).strip())
        position = match.end()
    return [item for item in items if item]


# ----------------------------------------------------------------------------
# per source


def _base(frame: pl.DataFrame, source: str, image_id: pl.Expr) -> pl.DataFrame:
    return frame.with_columns(pl.lit(source).alias("source"), image_id.alias("image_id"))


def _finish(frame: pl.DataFrame, labels: list[str]) -> pl.DataFrame:
    missing_patient = frame["patient_id"].is_null()
    if missing_patient.any():
        n = int(missing_patient.sum())
        warnings.warn(
            MetadataWarning(
                f"{n} of {frame.height} {frame['source'][0]} metadata rows have no patient id; each is its own patient (patient_id = image_id)"
            ),
            stacklevel=3,
        )
        frame = frame.with_columns(pl.coalesce("patient_id", "image_id").alias("patient_id"))
    columns = [
        pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name) for name, dtype in METADATA_SCHEMA.items()
    ]
    return frame.select(*columns, *(pl.col(LABEL_PREFIX + label) for label in labels))


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames, how="diagonal_relaxed")


def _read_mimic(info, files, duplicates, labeler, **_):
    fmt = info.metadata
    images = [f for f, role in files if role == "images"]
    splits = [f for f, role in files if role == "split"]
    label_files = [f for f, role in files if role == "labels"]
    kinds = {("negbio" if "negbio" in Path(f[_FILE][0]).name.lower() else "chexpert"): f for f in label_files}
    if len(kinds) < len(label_files):
        raise InputError(f"several {info.name} label files of one labeler: {[f[_FILE][0] for f in label_files]}; pass one")
    if labeler is None and len(kinds) > 1:
        raise InputError(
            f"{info.name}: both the chexpert and the negbio label files were given; choose with labeler='chexpert' or 'negbio'"
        )
    if labeler is not None:
        if labeler not in ("chexpert", "negbio"):
            raise InputError(f"labeler must be 'chexpert' or 'negbio', got {labeler!r}")
        if labeler not in kinds and kinds:
            raise InputError(f"labeler={labeler!r} but no {labeler} label file was given (found: {sorted(kinds)})")
        kinds = {labeler: kinds[labeler]} if labeler in kinds else {}
    if not images and not splits:
        raise InputError(
            f"{info.name} labels are per study: also pass mimic-cxr-2.0.0-metadata.csv(.gz) or -split.csv(.gz) to get one row per image"
        )
    keys = ["dicom_id"]
    if images:
        table = _check_duplicates(_concat(images), keys, duplicates, "dicom_id values", "dicom_id")
        if splits:
            split = _check_duplicates(_concat(splits), keys, duplicates, "dicom_id values of the split file", "dicom_id")
            table = table.join(split.select("dicom_id", pl.col("split").alias("__split")), on="dicom_id", how="left", maintain_order="left")
            table = table.with_columns(pl.col("__split").alias("split"))
    else:
        table = _check_duplicates(_concat(splits), keys, duplicates, "dicom_id values", "dicom_id")
    cols = fmt.columns
    view, view_raw = _mapped(table, cols["view"], fmt.views)
    split, split_raw = _mapped(table, cols["split"], fmt.splits)
    _unknown_split(table, split, split_raw, info.name, "dicom_id")
    table = table.with_columns(
        pl.lit(info.name).alias("source"),
        _text("dicom_id", table).alias("image_id"),
        _integer_text(cols["patient_id"], table).alias("patient_id"),
        _integer_text(cols["study_id"], table).alias("study_id"),
        view.alias("view"),
        view_raw.alias("view_raw"),
        split.alias("split"),
        _number(table, cols["original_height"], "dicom_id", "original_height"),
        _number(table, cols["original_width"], "dicom_id", "original_width"),
    )
    labels: list[str] = []
    if kinds:
        study = next(iter(kinds.values()))
        study = study.with_columns(_integer_text("subject_id", study).alias("__subject"), _integer_text("study_id", study).alias("__study"))
        study = _check_duplicates(study, ["__subject", "__study"], duplicates, "(subject_id, study_id) pairs", "__study")
        values = _label_values(study, fmt.labels, "__study")
        study = study.select("__subject", "__study").with_columns(values)
        table = table.join(study, left_on=["patient_id", "study_id"], right_on=["__subject", "__study"], how="left", maintain_order="left")
        labels = list(fmt.labels)
    return _finish(table, labels)


def _unknown_split(frame, split, raw, source, id_column):
    bad = _first_bad(
        frame.with_columns(split.alias("__s"), raw.alias("__r")), pl.col("__r").is_not_null() & pl.col("__s").is_null(), id_column
    )
    if bad is not None:
        raise RecordError(f"unknown {source} split value", file=bad[_FILE], row=bad[_ROW], image_id=bad[id_column], column="split")


def _chexpert_path(info: SourceInfo) -> pl.Expr:
    path = pl.col("Path").str.strip_chars().str.replace_all("\\\\", "/").str.replace(r"^(\./)+", "")
    for prefix in info.image_layout.strip_prefixes:
        path = path.str.strip_prefix(prefix)
    return path


def _read_chexpert(info, files, duplicates, **_):
    fmt = info.metadata
    table = _concat([f for f, _role in files])
    table = table.with_columns(_chexpert_path(info).alias("image_id"))
    table = _check_duplicates(table, ["image_id"], duplicates, "Path values", "image_id")
    cols = fmt.columns
    frontal = _text(cols["frontal_lateral"], table)
    view_raw = pl.when(frontal == "Lateral").then(pl.lit("Lateral")).otherwise(_text(cols["view"], table))
    sex, _sex_raw = _mapped(table, cols["sex"], fmt.sexes)
    top = pl.col("image_id").str.extract(r"^([^/]+)/", 1)
    table = table.with_columns(
        pl.lit(info.name).alias("source"),
        pl.col("image_id").str.extract(info.patient_in_id, 1).alias("patient_id"),
        pl.col("image_id").str.extract(r"(?:^|/)(patient\d+/study\d+)/", 1).alias("study_id"),
        view_raw.replace_strict(dict(fmt.views), default=None, return_dtype=pl.String).alias("view"),
        view_raw.alias("view_raw"),
        sex.alias("sex"),
        _ages(table, cols["age"], "image_id"),
        top.replace_strict(dict(fmt.splits), default=None, return_dtype=pl.String).alias("split"),
    )
    return _finish(table.with_columns(_label_values(table, fmt.labels, "image_id")), list(fmt.labels))


def _read_nih(info, files, duplicates, lists, **_):
    fmt = info.metadata
    entries = [f for f, _role in files]
    if not entries:
        raise InputError(f"{info.name}: train_val_list.txt / test_list.txt only give the split; also pass Data_Entry_2017(_v2020).csv")
    table = _concat(entries)
    table = table.with_columns(_text("Image Index", table).alias("image_id"))
    table = _check_duplicates(table, ["image_id"], duplicates, "Image Index values", "image_id")
    cols = fmt.columns
    view, view_raw = _mapped(table, cols["view"], fmt.views)
    sex, _ = _mapped(table, _pick(table.columns, cols["sex"]), fmt.sexes)
    split = _list_splits(lists, table)
    findings = table.select(_text("Finding Labels", table).str.split("|")).to_series()
    names = findings.explode().str.strip_chars().drop_nulls().unique()
    unknown = names.filter(~names.is_in(list(fmt.labels)))
    if unknown.len():
        bad = _first_bad(
            table.with_columns(findings.list.eval(pl.element().str.strip_chars().is_in(list(fmt.labels)).not_()).list.any().alias("__bad")),
            pl.col("__bad"),
            "image_id",
        )
        raise RecordError(
            f"unknown finding {unknown[0]!r} (the {info.name} labels are {list(fmt.labels)})",
            file=bad[_FILE],
            row=bad[_ROW],
            image_id=bad["image_id"],
            column="Finding Labels",
        )
    stripped = findings.list.eval(pl.element().str.strip_chars())
    labels = [
        pl.when(findings.is_null()).then(None).otherwise(stripped.list.contains(label)).cast(pl.Float32).alias(LABEL_PREFIX + label)
        for label in fmt.labels
    ]
    table = table.with_columns(
        pl.lit(info.name).alias("source"),
        _integer_text(cols["patient_id"], table).alias("patient_id"),
        view.alias("view"),
        view_raw.alias("view_raw"),
        sex.alias("sex"),
        _ages(table, cols["age"], "image_id"),
        split.alias("split"),
        _number(table, cols["original_height"], "image_id", "original_height"),
        _number(table, cols["original_width"], "image_id", "original_width"),
        *labels,
    )
    return _finish(table, list(fmt.labels))


def _list_splits(lists: list[tuple[Path, str]], table: pl.DataFrame) -> pl.Series:
    if not lists:
        return pl.Series("split", [None] * table.height, pl.String)
    frames = []
    for path, split in lists:
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        frames.append(pl.DataFrame({"image_id": ids, "__split": [split] * len(ids), "__list": [str(path)] * len(ids)}))
    listed = pl.concat(frames)
    twice = listed.filter(pl.col("image_id").is_duplicated())
    if twice.height:
        raise RecordError(
            f"image listed more than once across {sorted(set(twice['__list']))}", file=twice["__list"][0], image_id=twice["image_id"][0]
        )
    joined = table.select("image_id").join(listed, on="image_id", how="left", maintain_order="left")
    return joined["__split"].alias("split")


def _read_padchest(info, files, duplicates, **_):
    fmt = info.metadata
    table = _concat([f for f, _role in files])
    table = table.with_columns(_text("ImageID", table).alias("image_id"))
    table = _check_duplicates(table, ["image_id"], duplicates, "ImageID values", "image_id")
    cols = fmt.columns
    view, view_raw = _mapped(table, cols["view"], fmt.views)
    sex, _ = _mapped(table, cols["sex"], fmt.sexes)
    parsed = []
    for text, file, row, image_id in table.select(_text("Labels", table), _FILE, _ROW, "image_id").iter_rows():
        items = None if text is None else _parse_list(text)
        if text is not None and items is None:
            raise RecordError(f"Labels {text[:60]!r} is not a list of quoted names", file=file, row=row, image_id=image_id, column="Labels")
        parsed.append(items or None)
    found = pl.Series("__labels", parsed, pl.List(pl.String))
    names = sorted(found.explode().drop_nulls().unique().to_list())
    labels = [
        pl.when(found.is_null()).then(None).otherwise(found.list.contains(name)).cast(pl.Float32).alias(LABEL_PREFIX + name)
        for name in names
    ]
    birth = _number(table, cols["birth_year"], "image_id", "birth")
    study_date = table.select(_text(cols["study_date"], table)).to_series()
    study_year = study_date.str.slice(0, 4).cast(pl.Float64, strict=False)
    table = table.with_columns(
        pl.lit(info.name).alias("source"),
        _integer_text(cols["patient_id"], table).alias("patient_id"),
        _integer_text(cols["study_id"], table).alias("study_id"),
        view.alias("view"),
        view_raw.alias("view_raw"),
        sex.alias("sex"),
        (study_year - birth).cast(pl.Float32).alias("age"),
        _number(table, cols["original_height"], "image_id", "original_height"),
        _number(table, cols["original_width"], "image_id", "original_width"),
        *labels,
    )
    return _finish(table, names)


def _read_vindr(info, files, duplicates, readers, **_):
    fmt = info.metadata
    if readers not in ("majority", "any"):
        raise InputError(f"readers must be 'majority' or 'any', got {readers!r}")
    frames = []
    for frame, _role in files:
        name = Path(frame[_FILE][0]).name
        pattern = _matches(name, fmt.file_splits)
        frames.append(frame.with_columns(pl.lit(fmt.file_splits[pattern] if pattern else None, pl.String).alias("split")))
    table = _concat(frames)
    reader = fmt.columns["reader"]
    table = table.with_columns(_text("image_id", table).alias("image_id"), _text(reader, table).alias("__reader"))
    table = _check_duplicates(table, ["image_id", "__reader"], duplicates, "(image_id, rad_id) pairs", "image_id")
    values = _label_values(table, fmt.labels, "image_id")
    table = table.with_columns(values)
    splits = table.group_by("image_id").agg(pl.col("split").n_unique().alias("n"), pl.col(_FILE).first()).filter(pl.col("n") > 1)
    if splits.height:
        raise RecordError("image appears in files of different splits", file=splits[_FILE][0], image_id=splits["image_id"][0])
    label_cols = [LABEL_PREFIX + label for label in fmt.labels]
    if readers == "majority":
        votes = [
            pl.when(pl.col(c).is_not_null().sum() == 0)
            .then(None)
            .otherwise(((pl.col(c) == 1).sum() * 2 > pl.col(c).is_not_null().sum()).cast(pl.Float32))
            .alias(c)
            for c in label_cols
        ]
    else:
        votes = [pl.col(c).max().alias(c) for c in label_cols]
    table = table.group_by("image_id", maintain_order=True).agg(pl.col("split").first(), *votes)
    table = table.with_columns(pl.lit(info.name).alias("source"), pl.col("image_id").alias("patient_id"))
    return _finish(table, list(fmt.labels))


_READERS = {
    "MIMIC-CXR-JPG": _read_mimic,
    "CheXpert": _read_chexpert,
    "ChestX-ray8": _read_nih,
    "Padchest": _read_padchest,
    "VinDr-CXR": _read_vindr,
}


def read_metadata(
    source: str | None,
    *paths: str | os.PathLike,
    duplicates: str = "raise",
    readers: str = "majority",
    labeler: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Read one source's public metadata files into the normalised table (columns: module docstring).

    Parameters
    ----------
    source:
        Source name in any accepted spelling (``"mimic"``, ``"CheXpert"`` ...);
        None detects it from the files' columns (all must agree).
    *paths:
        Metadata files (``.csv``, ``.csv.gz``; ChestX-ray8 also its ``.txt``
        split lists) and/or folders holding them (their published names are
        looked for, sub-folders are not searched).
    duplicates:
        ``"raise"`` (default): an image id appearing twice raises
        :class:`~chexmask_u_tools.errors.RecordError`; ``"first"`` keeps the
        first and warns with the count.
    readers:
        VinDr-CXR training images: ``"majority"`` (default) or ``"any"``
        radiologist positive.
    labeler:
        MIMIC-CXR-JPG: ``"chexpert"`` or ``"negbio"``, needed when both label files are given.
    columns:
        ``{"their column": "published column"}`` renames applied before
        reading, for files whose headers were changed.

    Returns
    -------
    polars.DataFrame
        One row per image: :data:`METADATA_SCHEMA` then the ``label.<name>`` columns.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import chexmask_u_tools as cxu
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(cxu.sources.CHEXPERT_LABELS)
    >>> row = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0" + ",-1.0" + "," * 12
    >>> _ = (folder / "train.csv").write_text(header + "\\n" + row + "\\n")
    >>> meta = cxu.read_metadata("chexpert", folder)
    >>> meta.select("image_id", "patient_id", "view", "sex", "age", "split").row(0)
    ('train/patient00001/study1/view1_frontal.jpg', 'patient00001', 'AP', 'F', 68.0, 'train')
    >>> meta["label.No Finding"][0], meta["label.Enlarged Cardiomediastinum"][0], meta["label.Cardiomegaly"][0]
    (1.0, -1.0, None)
    """
    if duplicates not in ("raise", "first"):
        raise InputError(f"duplicates must be 'raise' or 'first', got {duplicates!r}")
    if not paths:
        raise InputError("read_metadata needs at least one metadata file or folder")
    if source is None:
        files = [f for p in paths for f in (_any_source_files(Path(p)) if Path(p).is_dir() else [Path(p)])]
        detected = sorted({detect_metadata_source(f) for f in files})
        if len(detected) != 1:
            raise InputError(f"the metadata files belong to several sources ({', '.join(detected)}); read each with its source=")
        source = detected[0]
    info = REGISTRY[require_source(source)]
    fmt = _format(info)
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(metadata_files(info.name, path) if path.is_dir() else [path])
    tables, lists = [], []
    for path in files:
        if not path.exists():
            raise FileReadError(f"metadata file not found: {path}")
        if path.suffix.lower() == ".txt":
            pattern = _matches(path.name, fmt.list_files)
            if pattern is None:
                raise InputError(f"{path}: {info.name} has no id-list file of this name (known: {list(fmt.list_files) or 'none'})")
            lists.append((path, fmt.list_files[pattern]))
            continue
        frame = _read_csv(path, columns)
        roles = _roles(set(frame.columns), fmt)
        if not roles:
            _refuse(path, set(frame.columns), info)
        _require_keys(frame, path, _pick(frame.columns, fmt.roles[roles[0]][0]))
        tables.append((frame, roles[0]))
    return _READERS[info.name](info, tables, duplicates=duplicates, readers=readers, labeler=labeler, lists=lists)


def _any_source_files(folder: Path) -> list[Path]:
    found = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and any(info.metadata and _matches(p.name, info.metadata.files) for info in REGISTRY.values())
    )
    if not found:
        raise InputError(f"no known metadata file in {folder}; pass source= and the files")
    return found
