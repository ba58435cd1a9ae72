"""Read any CheXmask / CheXmask-U file into the canonical table.

The released files differ per source and pipeline (SPEC sections 1-3): the id
column is named after the source, landmarks are ``Landmarks (Mean)``, ``Mean``
or ``Landmarks``, std and latents are optional, a second ``Mean``/``Std`` pair
may carry the original-resolution copy, values are flat comma lists or
numpy-printed arrays.  :func:`detect_layout` finds every column by name (never
by position); :func:`scan_table` turns the file into a lazy canonical table and
:func:`read_table` collects it.

CSVs, plain or compressed, are read a block at a time
(:mod:`~chexmask_u_tools.io.csvstream`): memory is bounded by a block plus the
result, and malformed records (too few or too many fields, an unbalanced quote,
invalid UTF-8, a cut-off last line, a corrupt compressed stream) raise
:class:`~chexmask_u_tools.errors.RecordError` / ``FileReadError`` naming the
file and row under every policy.

Bad records
-----------
Each row is checked for: a missing image id; missing, non-numeric, non-finite
(also beyond the float32 range) or wrongly sized landmarks; a negative or
malformed std or latent list; non-positive or non-integer Height/Width, or a
size beyond :data:`~chexmask_u_tools.schema.MAX_MASK_PIXELS`; non-numeric Dice
RCA; run-length strings that do not end in an integer pair or whose last run
ends past ``height * width`` (``check_masks=True`` checks every run with the
decoders' own rule, :func:`~chexmask_u_tools.io.rle.rle_problems`; decoding
always validates every run).  With ``on_error="raise"`` (default) the first bad row
raises :class:`~chexmask_u_tools.errors.RecordError` naming the file, the
0-based row and the image id.  With ``on_error="skip"`` bad rows are dropped
and :class:`~chexmask_u_tools.errors.SkippedRowsWarning` reports how many were
dropped for each reason (eager :func:`read_table` only; a lazy scan cannot know
the count before it is collected, so ``scan_table`` drops them silently and
documents it here).  Malformed *records* (the CSV rules above) always raise.

Fix-ups (documented, deterministic)
-----------------------------------
* ``Dice RCA (Mean)`` and ``(Max)`` swapped (known in Padchest subsets): the
  canonical ``dice_rca_mean`` is the smaller and ``dice_rca_max`` the larger of
  the two, since a mean can never exceed its maximum.  This applies only where
  both are present: a missing value stays null, never filled from the other.
* Height/Width written as floats (``1024.0``) are read as integers; empty
  Height/Width in the preprocessed frame are 1024 (the frame's size).
* A leading unnamed index column (``Unnamed: 0`` or an empty name) is dropped.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from chexmask_u_tools.errors import (
    CheXmaskUError,
    FileReadError,
    InputError,
    RecordError,
    SKIP_FIX,
    SchemaError,
    SkippedRowsWarning,
)
from chexmask_u_tools.io.csvstream import CsvFile, prefetched
from chexmask_u_tools.io.hf import plain_storage
from chexmask_u_tools.io.hub_folder import is_hub_folder, scan_hub_folder
from chexmask_u_tools.io.parsing import number_list_expr, number_list_problem_expr
from chexmask_u_tools.io.rle import rle_problems
from chexmask_u_tools.layout import N_LATENT, N_NODES, ORGANS
from chexmask_u_tools.schema import (
    BASE_SCHEMA,
    CANONICAL_SCHEMA,
    FRAMES,
    MAX_MASK_PIXELS,
    PREPROCESSED_SIZE,
    RLE_COLUMNS,
    SOURCES,
    empty_table,
)
from chexmask_u_tools.select.uncertainty import summary_expressions
from chexmask_u_tools.sources import (  # canonical_source: re-exported, cli.export imports it from here
    REGISTRY,
    canonical_source,  # noqa: F401
    id_column_sources,
    source_label,
    sources_in_name,
)

__all__ = [
    "ID_COLUMNS",
    "Layout",
    "canonicalize_batch",
    "data_files",
    "detect_layout",
    "infer_frame",
    "infer_source",
    "is_index_column",
    "known_column_names",
    "map_columns",
    "read_table",
    "read_tables",
    "scan_table",
]

OnError = Literal["raise", "skip"]

#: id column -> the source it implies (None: generic, source must come from elsewhere).
ID_COLUMNS: dict[str, str | None] = {**id_column_sources(), "Image ID": None, "Image": None}
LANDMARK_COLUMNS = ("Landmarks (Mean)", "Mean", "Landmarks")
STD_COLUMNS = ("Landmarks (Std)", "Std")
LATENT_COLUMNS = ("latents", "Latents", "latent_sigma")
RELEASED_MASK_COLUMNS = {"right_lung": "Right Lung", "left_lung": "Left Lung", "heart": "Heart"}
MEAN_MASK_COLUMNS = {"right_lung": "RL_Mean", "left_lung": "LL_Mean", "heart": "H_Mean"}

# Longest names first so that "MIMIC-CXR-JPG" wins over "MIMIC" in a file name.
_SOURCE_PATTERNS = sorted(
    ((spelling, info.name) for info in REGISTRY.values() for spelling in (info.name.lower(), *info.aliases)),
    key=lambda pattern: -len(pattern[0]),
)
_POLARS_NATIVE_SCHEMES = {"s3", "s3a", "gs", "gcs", "gcp", "az", "azure", "abfs", "abfss", "adl", "http", "https", "hf"}
_TEMP = "__cxu_"


def _base_name(file_name: str) -> str:
    return re.split(r"[/\\]", str(file_name).rstrip("/\\"))[-1]


def infer_source(file_name: str) -> str | None:
    """The one source a file's own name spells out (see :func:`~chexmask_u_tools.sources.sources_in_name`), or None.

    Only the last path part counts, as a whole word; a name spelling several
    sources gives None here (:func:`detect_layout` reports it as ambiguous).

    Examples
    --------
    >>> infer_source("downloads/Preprocessed/MIMIC-CXR-JPG_part1.csv.gz"), infer_source("CANDID-PTX.csv")
    ('MIMIC-CXR-JPG', None)
    """
    named = sources_in_name(_base_name(file_name))
    return named[0] if len(named) == 1 else None


_FRAME_FOLDERS = (("preprocessed", "preprocessed"), ("originalresolution", "original"))
_FRAME_WORDS = {"preprocessed": "preprocessed", "original": "original", "originalresolution": "original"}


def _path_parts(file_name: str) -> list[str]:
    return re.split(r"[/\\]", str(file_name).rstrip("/\\"))


def _folder_frame(file_name: str) -> str | None:
    for folder in reversed(_path_parts(file_name)[:-1]):
        word = re.sub(r"[^a-z0-9]", "", folder.lower())
        if word == "original":
            return "original"
        for prefix, frame in _FRAME_FOLDERS:
            if word.startswith(prefix):
                return frame
    return None


def _name_frame(file_name: str) -> str | None:
    """A frame spelled as a whole word of the file's own name (``CheXpert_OriginalResolution.csv``)."""
    words = {_FRAME_WORDS[word] for word in re.split(r"[^a-z0-9]+", _path_parts(file_name)[-1].lower()) if word in _FRAME_WORDS}
    return words.pop() if len(words) == 1 else None


def infer_frame(file_name: str) -> str | None:
    """The frame a path names: its nearest frame folder (``Preprocessed``, ``OriginalResolution``), else its file name.

    Folders are read from the file outwards and the first one naming a frame
    decides (``downloads/original_data/Preprocessed/CheXpert.csv`` is
    preprocessed).  A folder names a frame when its name, lower-cased without
    separators, starts with ``preprocessed`` or ``originalresolution`` or is
    ``original``; words merely containing them (``original_data``,
    ``test_original0``) are not evidence.  Without such a folder, a whole word
    of the file name (``CheXpert_OriginalResolution.csv``) decides.
    :func:`detect_layout` refuses a folder and a file name that disagree.

    Examples
    --------
    >>> infer_frame("downloads/original_data/Preprocessed/CheXpert.csv")
    'preprocessed'
    >>> infer_frame("OriginalResolution/VinDr-CXR.csv"), infer_frame("original_data/VinDr-CXR.csv")
    ('original', None)
    >>> infer_frame("CheXpert_OriginalResolution.csv.gz")
    'original'
    """
    return _folder_frame(file_name) or _name_frame(file_name)


def _layout_source(file_name: str, id_column: str, has_dataset_column: bool) -> str | None:
    """The file's source from its name, else from a source-specific id column (SPEC section 1).

    None when the rows carry their own source (a ``Dataset`` column).  Raises
    :class:`SchemaError` asking for ``source=`` when the evidence is weak or
    disagrees.
    """
    where = f" of {file_name!r}" if file_name else ""
    named = sources_in_name(_base_name(file_name)) if file_name else ()
    if len(named) > 1:
        raise SchemaError(
            f"the file name{where} names several sources {list(named)}; pass source= (CLI: --source)"
        )
    id_source = ID_COLUMNS.get(id_column)
    proves = id_source is not None and REGISTRY[id_source].id_column_proves_source and not has_dataset_column
    if named:
        if proves and id_source != named[0]:
            raise SchemaError(
                f"the file name{where} says {named[0]} but its id column {id_column!r} is {id_source}'s; "
                "pass source= (CLI: --source) to say which"
            )
        return named[0]
    if has_dataset_column:
        return None
    if proves:
        return id_source
    shared = f", which {id_source} shares with other files," if id_source else ""
    raise SchemaError(
        f"cannot tell the source{where}: its name names none of {SOURCES} and its id column "
        f"{id_column!r}{shared} does not prove one; pass source= (CLI: --source)"
    )


@dataclass(frozen=True)
class Layout:
    """Where each canonical field lives in one file (column names), and the file's constants."""

    id_column: str
    source: str | None
    dataset_column: str | None
    frame: str
    landmarks_column: str
    std_column: str | None
    latents_column: str | None
    mask_columns: dict[str, str | None] = field(default_factory=dict)
    dice_mean_column: str | None = None
    dice_max_column: str | None = None
    height_column: str | None = None
    width_column: str | None = None
    canonical: bool = False


def detect_layout(
    columns: list[str],
    *,
    file_name: str = "",
    source: str | None = None,
    frame: str | None = None,
    masks: Literal["released", "mean"] = "released",
) -> Layout:
    """Find the canonical fields among a file's column names.

    Parameters
    ----------
    columns:
        The file's column names (duplicates already renamed ``X``, ``X.1``).
    file_name:
        Used to infer source and frame when they are not given.
    source:
        Any spelling of a known source, or a label unlike all of them for
        private data (see :func:`~chexmask_u_tools.sources.source_label`; a
        near-miss such as ``"Chexpurt"`` raises :class:`InputError`).  When
        None, the evidence decides, strongest first (SPEC section 1): the
        file's own name spelling one source wins; else a ``Dataset`` column
        gives each row's source; else an id column only one source uses
        (``dicom_id``, ``Path``, ``Image Index``).  ``ImageID`` (Padchest, but
        also physician files and CheXmask v0.1's ``CANDID-PTX.csv``) and
        ``image_id`` prove nothing alone.
    frame:
        ``preprocessed`` or ``original``; when None, the nearest folder naming
        a frame decides (:func:`infer_frame`), else ``preprocessed``.  In a
        file with a second ``Mean.1``/``Std.1`` pair, ``original`` selects
        that pair.
    masks:
        ``released`` reads ``Right Lung``/``Left Lung``/``Heart``; ``mean``
        reads the masks drawn from the mean landmarks (``RL_Mean``...).

    Raises
    ------
    SchemaError
        When no id or landmark column is present, or the source evidence is
        weak or disagrees (a name spelling two sources, a name contradicting a
        source-specific id column, no name and a shared id column): pass
        ``source=`` (CLI ``--source``).
    InputError
        ``source`` is a near-miss of a known name.
    """
    present = set(columns)
    if frame is not None and frame not in FRAMES:
        raise SchemaError(f"frame must be one of {FRAMES}, got {frame!r}")
    if set(BASE_SCHEMA) <= present:
        return Layout(
            id_column="image_id",
            source=None,
            dataset_column="source",
            frame=frame or "preprocessed",
            landmarks_column="landmarks",
            std_column="landmarks_std",
            latents_column="latent_sigma",
            canonical=True,
        )
    where = f" in {file_name!r}" if file_name else ""
    id_column = next((c for c in ID_COLUMNS if c in present), None)
    if id_column is None:
        raise SchemaError(
            f"no image id column{where}: expected one of {list(ID_COLUMNS)}; columns are {columns}"
        )
    dataset_column = "Dataset" if "Dataset" in present else None
    if source is not None:
        resolved = source_label(source)
    else:
        resolved = _layout_source(file_name, id_column, dataset_column is not None)
    if frame is None and file_name:
        folder, named = _folder_frame(file_name), _name_frame(file_name)
        if folder and named and folder != named:
            raise SchemaError(
                f"{file_name!r}: its folder says {folder} but its name says {named}; "
                "pass frame= (CLI: --frame) to say which"
            )
    frame = frame or (infer_frame(file_name) if file_name else None) or "preprocessed"

    landmarks_column = next((c for c in LANDMARK_COLUMNS if c in present), None)
    if landmarks_column is None:
        raise SchemaError(
            f"no landmark column{where}: expected one of {list(LANDMARK_COLUMNS)}; columns are {columns}"
        )
    std_column = next((c for c in STD_COLUMNS if c in present), None)
    has_second_pair = f"{landmarks_column}.1" in present
    if frame == "original" and has_second_pair and infer_frame(file_name) != "original":
        landmarks_column = f"{landmarks_column}.1"
        std_column = f"{std_column}.1" if std_column and f"{std_column}.1" in present else None
    mask_names = RELEASED_MASK_COLUMNS if masks == "released" else MEAN_MASK_COLUMNS
    if masks not in ("released", "mean"):
        raise SchemaError(f"masks must be 'released' or 'mean', got {masks!r}")
    return Layout(
        id_column=id_column,
        source=resolved,
        dataset_column=dataset_column if source is None else None,
        frame=frame,
        landmarks_column=landmarks_column,
        std_column=std_column,
        latents_column=next((c for c in LATENT_COLUMNS if c in present), None),
        mask_columns={organ: (name if name in present else None) for organ, name in mask_names.items()},
        dice_mean_column="Dice RCA (Mean)" if "Dice RCA (Mean)" in present else None,
        dice_max_column="Dice RCA (Max)" if "Dice RCA (Max)" in present else None,
        height_column="Height" if "Height" in present else None,
        width_column="Width" if "Width" in present else None,
    )


def _pandas_style_duplicates(columns: list[str]) -> dict[str, str]:
    """polars names a repeated header ``X_duplicated_0``; pandas (and SPEC) say ``X.1``."""
    renames = {}
    for name in columns:
        match = re.fullmatch(r"(.*)_duplicated_(\d+)", name)
        if match and match.group(1) in columns:
            renames[name] = f"{match.group(1)}.{int(match.group(2)) + 1}"
    return renames


def _is_url(path: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path) is not None and not path.startswith("file://")


@dataclass(frozen=True)
class _Raw:
    """An opened data file: a CSV read in blocks (``csv``) or a lazy parquet scan (``lf``)."""

    file: str
    columns: list[str]
    csv: CsvFile | None = None
    lf: pl.LazyFrame | None = None
    renames: dict[str, str] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)

    def tidy(self, frame):
        """Apply the header fix-ups (pandas-style duplicate names, index columns dropped).

        A CSV batch is fixed up by position (a nameless column has no name to drop by).
        """
        if isinstance(frame, pl.DataFrame):
            keep = [i for i, name in enumerate(self.csv.columns) if name not in self.drop]
            if len(keep) < frame.width:
                frame = frame.select(pl.nth(keep))
            frame.columns = self.columns
            return frame
        if self.renames:
            frame = frame.rename(self.renames)
        if self.drop:
            frame = frame.drop(self.drop)
        return frame.rename(self.mapping) if self.mapping else frame

    def with_mapping(self, mapping: dict[str, str]) -> _Raw:
        """The same file with the user's column mapping applied (see :func:`map_columns`)."""
        if not mapping:
            return self
        renamed = map_columns(self.columns, mapping, file=self.file)
        translated = {old: new for old, new in zip(self.columns, renamed) if old != new}
        return _Raw(self.file, renamed, self.csv, self.lf, self.renames, self.drop, translated)


def _open_raw(path: str | os.PathLike, storage_options: dict | None) -> _Raw:
    """Open a data file's raw columns (CSV: every column a String).

    Every CSV, plain or compressed, local or remote, is read incrementally by
    :class:`~chexmask_u_tools.io.csvstream.CsvFile` (bounded memory, one set of
    integrity rules); parquet is scanned by polars.
    """
    text = os.fspath(path).removeprefix("file://")
    lower = text.lower()
    is_parquet = lower.endswith((".parquet", ".pq"))
    is_csv = re.search(r"\.csv(\.(gz|xz|zst|zstd|bz2))?$", lower) is not None
    remote = _is_url(text)
    if not remote and not os.path.exists(text):
        raise FileReadError(f"file not found: {text!r}")
    if not is_parquet and not is_csv:
        raise FileReadError(
            f"unsupported file type {text!r}: expected .csv (optionally .gz, .xz, .zst, .bz2) or .parquet"
        )
    csv_file, lf = None, None
    try:
        if is_csv:
            opener = None
            if remote:
                import fsspec

                def opener():
                    return fsspec.open(text, "rb", **(storage_options or {})).open()

            csv_file = CsvFile(text, opener=opener)
            columns = csv_file.columns
        else:
            if remote and text.split("://", 1)[0].lower() not in _POLARS_NATIVE_SCHEMES:
                lf = _read_parquet_with_fsspec(text, storage_options)
            else:
                lf = pl.scan_parquet(text, storage_options=storage_options)
            columns = lf.collect_schema().names()
    except FileNotFoundError as error:
        raise FileReadError(f"file not found: {text!r}") from error
    except CheXmaskUError:
        raise
    except (pl.exceptions.PolarsError, OSError, ValueError, EOFError) as error:
        raise FileReadError(f"cannot read {text!r}: {error}") from error
    renames = _pandas_style_duplicates(columns)
    drop = [c for c in columns if is_index_column(c)]
    columns = [renames.get(c, c) for c in columns if c not in drop]
    return _Raw(file=text, columns=columns, csv=csv_file, lf=lf, renames=renames, drop=drop)


def is_index_column(name: str) -> bool:
    """Whether a column is a written-out row index (``Unnamed: 0``, pandas' ``__index_level_0__``, a nameless column).

    Examples
    --------
    >>> [is_index_column(n) for n in ("Unnamed: 0", "", "Path")]
    [True, True, False]
    """
    return name == "" or re.fullmatch(r"Unnamed: \d+|__index_level_\d+__", name) is not None


def _read_parquet_with_fsspec(url: str, storage_options: dict | None) -> pl.LazyFrame:
    import fsspec

    with fsspec.open(url, "rb", **(storage_options or {})) as handle:
        return pl.read_parquet(handle.read()).lazy()


def _as_text(column: str, schema: pl.Schema) -> pl.Expr:
    dtype = schema[column]
    if dtype == pl.String:
        return pl.col(column)
    if dtype.is_numeric() or dtype == pl.Null:
        return pl.col(column).cast(pl.String)
    raise SchemaError(f"column {column!r} has dtype {dtype}; expected a string column")


def _number(column: str | None, schema: pl.Schema, what: str) -> tuple[pl.Expr, pl.Expr]:
    """(Float64 value, problem) for a scalar numeric column given as text or number."""
    if column is None:
        return pl.lit(None, dtype=pl.Float64), pl.lit(None, dtype=pl.String)
    raw = _as_text(column, schema).str.strip_chars()
    raw = pl.when(raw.str.len_bytes() > 0).then(raw)
    value = raw.cast(pl.Float64, strict=False)
    problem = (
        pl.when(raw.is_not_null() & (value.is_null() | ~value.is_finite()))
        .then(pl.format("{} is not a number: {}", pl.lit(what), raw.str.slice(0, 30)))
        .otherwise(None)
    )
    return value, problem


def _size(column: str | None, schema: pl.Schema, what: str, default: int | None) -> tuple[pl.Expr, pl.Expr]:
    value, problem = _number(column, schema, what)
    bad = value.is_not_null() & ((value <= 0) | (value != value.round(0)) | (value > 2**31 - 1))
    problem = pl.coalesce(
        problem, pl.when(bad).then(pl.format("{} must be a positive integer, got {}", pl.lit(what), value))
    )
    size = pl.when(bad).then(None).otherwise(value).cast(pl.Int32)
    if default is not None:
        size = size.fill_null(default)
    return size, problem


def _rle_checks(column: str, schema: pl.Schema, n_pixels: pl.Expr, full: bool) -> tuple[pl.Expr, pl.Expr]:
    """(cleaned RLE string, problem) for one mask column.

    Always checked: the string ends in an integer pair and its last run ends
    inside ``height * width`` (runs increase, so the last run is the farthest);
    start and length are each bounded by ``height * width`` before they are
    added, so no value can wrap.  That reads only the tail of each string.
    ``full`` checks every run with :func:`~chexmask_u_tools.io.rle.rle_problems`
    (the decoders' own rule), which costs a pass over all mask text (most of a
    CheXmask file); decoding validates every run in any case.
    """
    raw = _as_text(column, schema)
    text = pl.when(raw.str.contains(r"\S")).then(raw)  # blank = missing; finds the first non-space, copies nothing
    # Only the last 64 characters are searched (a released mask string is ~10 kB).  When the string is
    # longer, the slice may start inside a token, so the start token must follow whitespace inside it;
    # a short string gets a leading space instead.  Tokens of at most 18 digits reach the Int64 cast
    # (longer ones are out of range, reported below); a leading "+" is accepted as every decoder does.
    tail = (
        pl.when(text.str.len_bytes() <= 64).then(pl.lit(" ") + text).otherwise(text.str.slice(-64))
    )
    last_pair = tail.str.extract_groups(r"\s\+?([0-9]{1,18})\s+\+?([0-9]{1,18})\s*$")
    last_start = last_pair.struct.field("1").cast(pl.Int64, strict=False)
    last_length = last_pair.struct.field("2").cast(pl.Int64, strict=False)
    not_rle = pl.lit(f"mask {column!r} is not a run-length string of non-negative integers")
    past = pl.format("mask {} runs past the mask's {} pixels", pl.lit(repr(column)), n_pixels)
    problem = pl.when(text.is_null()).then(None)
    if full:
        checked = pl.struct(text=text, n_pixels=n_pixels).map_batches(
            lambda batch: rle_problems(batch.struct.field("text"), batch.struct.field("n_pixels")),
            return_dtype=pl.String,
        )
        problem = problem.when(checked.is_not_null()).then(pl.format("mask {}: {}", pl.lit(repr(column)), checked))
    huge = tail.str.contains(r"[0-9]{19}\s*(?:\+?[0-9]+\s*)?$")
    problem = (
        problem.when(huge & n_pixels.is_not_null())
        .then(past)
        .when(last_start.is_null() | last_length.is_null())
        .then(not_rle)
        .when(n_pixels.is_not_null() & ((last_start > n_pixels) | (last_length > n_pixels)))
        .then(past)
        .when(n_pixels.is_not_null() & (last_start + last_length - 1 > n_pixels))
        .then(
            pl.format(
                "mask {} runs to pixel {}, past the mask's {} pixels",
                pl.lit(repr(column)),
                last_start + last_length - 1,
                n_pixels,
            )
        )
    )
    return text, problem.otherwise(None)


def _numpy_printed_columns(lf: pl.LazyFrame, columns: list[str], schema: pl.Schema) -> set[str]:
    """Columns whose first non-null values are numpy-printed arrays (sniffed from 64 rows)."""
    if not columns:
        return set()
    head = lf.head(64).select(_as_text(c, schema) for c in columns).collect()
    return {c for c in columns if head[c].str.contains("[", literal=True).any()}


def _parsed_frame(lf: pl.LazyFrame, layout: Layout, file: str, check_masks: bool = False) -> pl.LazyFrame:
    """Raw columns -> parsed intermediate columns plus one ``problem`` column per row."""
    schema = lf.collect_schema()
    point_columns = [c for c in (layout.landmarks_column, layout.std_column, layout.latents_column) if c]
    numpy_printed = _numpy_printed_columns(lf, point_columns, schema)

    def numbers(column: str) -> pl.Expr:
        return number_list_expr(_as_text(column, schema), numpy_printed=column in numpy_printed)

    row = f"{_TEMP}row"
    lf = lf.with_row_index(row)
    image_id = _as_text(layout.id_column, schema).str.strip_chars()
    if layout.dataset_column is not None:
        dataset = _as_text(layout.dataset_column, schema).str.strip_chars()
        mapping = dict(_SOURCE_PATTERNS)
        source = dataset.str.to_lowercase().replace_strict(mapping, default=dataset)
        if layout.source is not None:
            source = source.fill_null(layout.source)
    else:
        source = pl.lit(layout.source, dtype=pl.String)

    landmarks = numbers(layout.landmarks_column)
    problems = [
        pl.when(pl.col("image_id").is_null() | (pl.col("image_id").str.len_bytes() == 0)).then(
            pl.lit("missing image id")
        ),
        pl.when(pl.col(f"{_TEMP}landmarks").is_null()).then(
            pl.lit(f"missing landmarks ({layout.landmarks_column!r})")
        ),
        number_list_problem_expr(
            pl.col(f"{_TEMP}landmarks"), expected_len=2 * N_NODES, allow_negative=True, what="landmarks"
        ),
    ]
    columns = {
        "source": source,
        "image_id": image_id,
        f"{_TEMP}landmarks": landmarks,
    }
    if layout.std_column is not None:
        columns[f"{_TEMP}std"] = numbers(layout.std_column)
        problems.append(
            number_list_problem_expr(
                pl.col(f"{_TEMP}std"), expected_len=2 * N_NODES, allow_negative=False, what="landmark std"
            )
        )
    if layout.latents_column is not None:
        columns[f"{_TEMP}latent"] = numbers(layout.latents_column)
        problems.append(
            number_list_problem_expr(
                pl.col(f"{_TEMP}latent"), expected_len=N_LATENT, allow_negative=False, what="latent sigmas"
            )
        )
    default_size = PREPROCESSED_SIZE if layout.frame == "preprocessed" else None
    height, height_problem = _size(layout.height_column, schema, "Height", default_size)
    width, width_problem = _size(layout.width_column, schema, "Width", default_size)
    columns["height"], columns["width"] = height, width
    too_large = height.cast(pl.Int64) * width.cast(pl.Int64) > MAX_MASK_PIXELS
    problems += [
        height_problem,
        width_problem,
        pl.when(too_large).then(
            pl.format("Height x Width = {} x {} exceeds the limit of {} pixels (MAX_MASK_PIXELS)", height, width, pl.lit(MAX_MASK_PIXELS))
        ),
    ]
    dice_a, dice_a_problem = _number(layout.dice_mean_column, schema, "Dice RCA (Mean)")
    dice_b, dice_b_problem = _number(layout.dice_max_column, schema, "Dice RCA (Max)")
    # The swap fix-up needs both values; a missing one stays missing (never filled from the other column).
    both = dice_a.is_not_null() & dice_b.is_not_null()
    columns["dice_rca_mean"] = pl.when(both).then(pl.min_horizontal(dice_a, dice_b)).otherwise(dice_a)
    columns["dice_rca_max"] = pl.when(both).then(pl.max_horizontal(dice_a, dice_b)).otherwise(dice_b)
    problems += [dice_a_problem, dice_b_problem]
    if layout.frame == "preprocessed":
        n_pixels = pl.lit(PREPROCESSED_SIZE * PREPROCESSED_SIZE, dtype=pl.Int64)
    else:
        n_pixels = pl.col("height").cast(pl.Int64) * pl.col("width").cast(pl.Int64)
    for organ in ORGANS:
        column = layout.mask_columns.get(organ)
        if column is None:
            columns[RLE_COLUMNS[organ]] = pl.lit(None, dtype=pl.String)
            continue
        text, problem = _rle_checks(column, schema, n_pixels, check_masks)
        columns[RLE_COLUMNS[organ]] = text
        problems.append(problem)

    lf = lf.with_columns(**columns)
    return lf.with_columns(pl.coalesce(problems).alias(f"{_TEMP}problem"))


def _finish(lf: pl.LazyFrame, layout: Layout) -> pl.LazyFrame:
    """Parsed intermediate columns (all rows valid) -> the canonical table."""
    names = lf.collect_schema().names()

    def points(name: str) -> pl.Expr:
        if name not in names:
            return pl.lit(None, dtype=CANONICAL_SCHEMA["landmarks"])
        return pl.col(name).list.to_array(2 * N_NODES).reshape((-1, N_NODES, 2)).cast(CANONICAL_SCHEMA["landmarks"])

    latent = (
        pl.col(f"{_TEMP}latent").list.to_array(N_LATENT).cast(CANONICAL_SCHEMA["latent_sigma"])
        if f"{_TEMP}latent" in names
        else pl.lit(None, dtype=CANONICAL_SCHEMA["latent_sigma"])
    )
    return lf.select(
        pl.col("source"),
        pl.col("image_id"),
        pl.lit(layout.frame, dtype=pl.String).alias("frame"),
        pl.col("height"),
        pl.col("width"),
        pl.col("dice_rca_mean"),
        pl.col("dice_rca_max"),
        points(f"{_TEMP}landmarks").alias("landmarks"),
        points(f"{_TEMP}std").alias("landmarks_std"),
        latent.alias("latent_sigma"),
        *(pl.col(column) for column in RLE_COLUMNS.values()),
    ).with_columns(summary_expressions())


def _canonical_passthrough(lf: pl.LazyFrame, keep_extra: bool = False) -> pl.LazyFrame:
    """A file already in the canonical layout (e.g. our parquet cache): select and cast.

    With ``keep_extra``, the file's other columns (an export's ``mask_png``,
    ``sample_weight``...) follow the canonical ones, as stored.
    """
    lf = plain_storage(lf)  # a parquet written by datasets (save_hub_folder) stores the arrays as Array2D
    names = lf.collect_schema().names()
    extra = [name for name in names if name not in CANONICAL_SCHEMA] if keep_extra else []
    if all(name in names for name in CANONICAL_SCHEMA):
        canonical = [pl.col(name).cast(dtype) for name, dtype in CANONICAL_SCHEMA.items()]
        return lf.select(*canonical, *extra)
    base = lf.select(*(pl.col(name).cast(dtype) for name, dtype in BASE_SCHEMA.items()), *extra)
    return base.with_columns(summary_expressions()).select(*CANONICAL_SCHEMA, *extra)


def _raise_first_problem(file: str):
    def check(batch: pl.Series) -> pl.Series:
        problems = batch.struct.field("problem")
        if problems.null_count() == len(problems):
            return problems
        index = int(problems.is_not_null().arg_max())
        raise RecordError(
            problems[index],
            file=file,
            row=int(batch.struct.field("row")[index]),
            image_id=batch.struct.field("image_id")[index],
            fix=SKIP_FIX,
        )

    return check


CANONICAL_TO_RELEASED: dict[str, str] = {
    "image_id": "Image ID",
    "source": "Dataset",
    "landmarks": "Landmarks (Mean)",
    "landmarks_std": "Landmarks (Std)",
    "latent_sigma": "latents",
    "height": "Height",
    "width": "Width",
    "dice_rca_mean": "Dice RCA (Mean)",
    "dice_rca_max": "Dice RCA (Max)",
    **{RLE_COLUMNS[organ]: name for organ, name in RELEASED_MASK_COLUMNS.items()},
}
"""Canonical column name -> the released column name it stands for in ``columns=`` mappings.

``image_id`` maps to the generic ``Image ID`` (it proves no source: the file's
name or ``source=`` must say it)."""


def known_column_names() -> list[str]:
    """Every column name :func:`detect_layout` knows, then the canonical names ``columns=`` also accepts."""
    released = [
        *ID_COLUMNS,
        "Dataset",
        *LANDMARK_COLUMNS,
        *STD_COLUMNS,
        *LATENT_COLUMNS,
        *RELEASED_MASK_COLUMNS.values(),
        *MEAN_MASK_COLUMNS.values(),
        "Dice RCA (Mean)",
        "Dice RCA (Max)",
        "Height",
        "Width",
    ]
    return list(dict.fromkeys([*released, *CANONICAL_TO_RELEASED]))


def map_columns(columns: list[str], mapping: dict[str, str], *, file: str = "") -> list[str]:
    """Rename a file's columns by a user mapping ``{"their name": "known name"}``.

    A target is a name :func:`detect_layout` knows (a released name such as
    ``"Landmarks (Mean)"``) or a canonical one (``"landmarks"``, ``"image_id"``,
    see :data:`CANONICAL_TO_RELEASED`), which stands for its released name.
    Only the mapped columns change; the rest keep their names.

    Raises
    ------
    SchemaError
        A key that is not a column of the file (with the closest column), or a
        mapping that leaves two columns with one name.
    InputError
        A target no reader knows (with the closest known name).

    Examples
    --------
    >>> map_columns(["img", "lm", "Heart"], {"img": "image_id", "lm": "Landmarks (Mean)"})
    ['Image ID', 'Landmarks (Mean)', 'Heart']
    """
    import difflib

    where = f" of {file!r}" if file else ""
    if not isinstance(mapping, dict):
        raise InputError(f"columns= must be a dict {{'their name': 'known name'}}, got {type(mapping).__name__}")
    known = known_column_names()
    targets = {}
    for theirs, ours in mapping.items():
        if theirs not in columns:
            close = difflib.get_close_matches(str(theirs), columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SchemaError(f"columns=: {theirs!r} is not a column{where}{hint}; its columns are {columns}")
        if ours not in known:
            close = difflib.get_close_matches(str(ours), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"columns=: unknown target {ours!r} for {theirs!r}{hint}; known names are {known}")
        targets[theirs] = CANONICAL_TO_RELEASED.get(ours, ours)
    renamed = [targets.get(name, name) for name in columns]
    duplicates = sorted({name for name in renamed if renamed.count(name) > 1})
    if duplicates:
        raise SchemaError(f"columns=: the mapping leaves several columns named {duplicates}{where}")
    return renamed


def _open(path, source, frame, masks, on_error, storage_options, columns=None) -> tuple[_Raw, Layout]:
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    raw = _open_raw(path, storage_options).with_mapping(columns or {})
    layout = detect_layout(raw.columns, file_name=raw.file, source=source, frame=frame, masks=masks)
    return raw, layout


def _canonical_batches(
    raw: _Raw, layout: Layout, on_error: OnError, check_masks: bool, skipped: dict[str, int] | None = None
) -> Iterator[pl.DataFrame]:
    """A CSV's canonical rows, one block at a time; bad rows raise at their block (or are counted into ``skipped``)."""
    offset = 0
    for batch in _grouped(prefetched(raw.csv.batches()), CANONICAL_CHUNK_BYTES, CANONICAL_CHUNK_ROWS):
        canonical, counts = canonicalize_batch(
            raw.tidy(batch), layout, file=raw.file, row_offset=offset, on_error=on_error, check_masks=check_masks
        )
        offset += batch.height
        if skipped is not None:
            for reason, count in counts.items():
                skipped[reason] = skipped.get(reason, 0) + count
        if canonical.height:
            yield canonical
    if skipped is not None:
        skipped[_ROWS_READ] = offset


_ROWS_READ = f"{_TEMP}rows"

CANONICAL_CHUNK_BYTES = 64 << 20
CANONICAL_CHUNK_ROWS = 4096
"""CSV text canonicalized per polars query: up to 64 MiB or 4,096 rows, whichever comes first.

Blocks are read 8 MiB at a time and grouped: each query costs a few
milliseconds of planning whatever its size, so 400-row queries would spend most
of their time planning; the row cap bounds the per-row work (problem strings,
parsed lists) of a file of many tiny junk rows."""


def _grouped(batches: Iterator[pl.DataFrame], max_bytes: int, max_rows: int) -> Iterator[pl.DataFrame]:
    """Consecutive batches concatenated up to about ``max_bytes`` or ``max_rows`` each."""
    group: list[pl.DataFrame] = []
    size = rows = 0
    for batch in batches:
        for start in range(0, max(batch.height, 1), max_rows):  # a block of many tiny rows is split
            piece = batch.slice(start, max_rows)
            group.append(piece)
            size += piece.estimated_size()
            rows += piece.height
            if size >= max_bytes or rows >= max_rows:
                yield pl.concat(group, rechunk=False)
                group, size, rows = [], 0, 0
    if group:
        yield pl.concat(group, rechunk=False)


def _scan_csv(raw: _Raw, layout: Layout, on_error: OnError, check_masks: bool) -> pl.LazyFrame:
    """A CSV as a lazy canonical table whose source parses one block at a time (memory: one block + the result)."""
    from polars.io.plugins import register_io_source

    def source(with_columns, predicate, n_rows, batch_size) -> Iterator[pl.DataFrame]:
        taken = 0
        for frame in _canonical_batches(raw, layout, on_error, check_masks):
            if predicate is not None:
                frame = frame.filter(predicate)
            if n_rows is not None:
                frame = frame.head(n_rows - taken)
            taken += frame.height
            if with_columns is not None:
                frame = frame.select(with_columns)
            yield frame
            if n_rows is not None and taken >= n_rows:
                return

    return register_io_source(source, schema=CANONICAL_SCHEMA, explain_name="chexmask canonical CSV")


def scan_table(
    path: str | os.PathLike,
    source: str | None = None,
    *,
    frame: Literal["preprocessed", "original"] | None = None,
    masks: Literal["released", "mean"] = "released",
    on_error: OnError = "raise",
    check_masks: bool = False,
    columns: dict[str, str] | None = None,
    storage_options: dict | None = None,
) -> pl.LazyFrame:
    """Lazily read a CheXmask(-U) file as the canonical table.

    Parameters
    ----------
    path:
        A local path or an fsspec/polars URL (``hf://datasets/...``,
        ``s3://...``, ``memory://...``) of a ``.csv`` (plain, ``.gz``,
        ``.xz``, ``.zst`` or ``.bz2``) or ``.parquet`` file, in any released
        column variant or in the canonical layout; or a local directory, whose
        data files (:func:`data_files`) are all read.  CSVs are read
        incrementally, compressed ones decompressed as a stream, so memory is
        bounded by a block of text (:mod:`~chexmask_u_tools.io.csvstream`),
        never by the decompressed size.
    source:
        The parent database (a known spelling, or a label for private data);
        inferred as :func:`detect_layout` describes when None.  A near-miss
        such as ``"Chexpurt"`` raises :class:`InputError`.
    frame, masks:
        See :func:`detect_layout`.
    on_error:
        ``raise``: collecting raises :class:`RecordError` for the first bad row;
        ``skip``: bad rows are dropped (use :func:`read_table` to get counts).
    check_masks:
        Also check every character and the token count of each run-length
        string (a pass over all mask text, most of a file).  By default only
        each mask's last run is checked against ``height * width``; decoding
        always validates every run.
    columns:
        ``{"their name": "known name"}`` for a file whose column names no
        reader knows: each key, a column of the file, is read as the known
        column named by its value, a released name (``"Landmarks (Mean)"``,
        ``"Dice RCA (Mean)"``) or a canonical one (``"landmarks"``,
        ``"image_id"``); see :func:`map_columns`.  Unmapped columns keep their
        names.
    storage_options:
        Passed to polars / fsspec for remote paths.

    Returns
    -------
    A ``LazyFrame`` with :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA`,
    in that order.  A parquet file already in the canonical layout (our
    cache, an export's ``subset.parquet``) keeps its other columns
    (``mask_png``, ``sample_weight``, ``rule_weight``, ``mask_valid_<organ>``
    ...) after the canonical ones, with their stored dtypes; reading a
    directory, a file without one of them gets nulls there.  Released files
    give exactly the canonical columns.  Column selections and ``head`` are
    pushed into the scan.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> path = cxu.sample_files()[0]
    >>> path.name
    'CheXpert.csv.xz'
    >>> cxu.scan_table(path).select("source", "image_id").head(2).collect().shape
    (2, 2)
    """
    if _is_local_dir(path) and is_hub_folder(path):
        return scan_hub_folder(path)  # checked against its record of shards; keeps a saved split column
    if _is_local_dir(path):
        options = {
            "source": source,
            "frame": frame,
            "masks": masks,
            "on_error": on_error,
            "check_masks": check_masks,
            "columns": columns,
        }
        return pl.concat([scan_table(file, **options) for file in _directory_files(path)], how="diagonal_relaxed")
    raw, layout = _open(path, source, frame, masks, on_error, storage_options, columns)
    if raw.csv is not None:
        return _scan_csv(raw, layout, on_error, check_masks)
    lf, file = raw.tidy(raw.lf), raw.file
    if layout.canonical:
        return _canonical_passthrough(lf, keep_extra=True)
    parsed = _parsed_frame(lf, layout, file, check_masks)
    problem = f"{_TEMP}problem"
    if on_error == "skip":
        checked = parsed.filter(pl.col(problem).is_null())
    else:
        # A filter (not a column) so that projection pushdown cannot prune the check.
        checked = parsed.filter(
            pl.struct(problem=pl.col(problem), row=pl.col(f"{_TEMP}row"), image_id=pl.col("image_id"))
            .map_batches(_raise_first_problem(file), return_dtype=pl.String)
            .is_null()
        )
    return _finish(checked, layout)


def read_table(
    path: str | os.PathLike,
    source: str | None = None,
    *,
    frame: Literal["preprocessed", "original"] | None = None,
    masks: Literal["released", "mean"] = "released",
    on_error: OnError = "raise",
    check_masks: bool = False,
    columns: dict[str, str] | None = None,
    storage_options: dict | None = None,
) -> pl.DataFrame:
    """Read a CheXmask(-U) file into the canonical table (see :func:`scan_table`).

    A canonical parquet file keeps its extra columns after the canonical ones
    (see :func:`scan_table`'s Returns).

    With ``on_error="skip"``, dropped rows are reported by a
    :class:`~chexmask_u_tools.errors.SkippedRowsWarning` whose ``counts``
    maps each reason to its number of rows.

    Raises
    ------
    FileReadError
        Missing ("not found"), unreadable, truncated or unsupported file.
    SchemaError
        No known column variant, or weak source evidence (pass ``source=``).
    RecordError
        A bad row (``on_error="raise"``) or a malformed record, naming file,
        row and image id.
    InputError
        A bad argument, such as a misspelled ``source``.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.read_table(cxu.sample_files()[0])
    >>> table["source"][0], table["landmarks"].to_numpy().shape[1:]
    ('CheXpert', (120, 2))
    >>> cxu.read_table(cxu.sample_dir()).height == cxu.load_sample().height
    True
    """
    if _is_local_dir(path) and is_hub_folder(path):
        return _collect(scan_hub_folder(path), os.fspath(path))
    if _is_local_dir(path):
        options = {
            "source": source,
            "frame": frame,
            "masks": masks,
            "on_error": on_error,
            "check_masks": check_masks,
            "columns": columns,
        }
        return read_tables(_directory_files(path), **options)
    raw, layout = _open(path, source, frame, masks, on_error, storage_options, columns)
    if raw.csv is not None:
        skipped: dict[str, int] = {}
        table = pl.concat([empty_table(), *_canonical_batches(raw, layout, on_error, check_masks, skipped)])
        total = skipped.pop(_ROWS_READ, 0)
        if skipped:
            counts = dict(sorted(skipped.items(), key=lambda item: -item[1]))
            warnings.warn(SkippedRowsWarning(raw.file, total, counts), stacklevel=2)
        return table
    lf, file = raw.tidy(raw.lf), raw.file
    if layout.canonical:
        return _collect(_canonical_passthrough(lf, keep_extra=True), file)
    parsed = _collect(_parsed_frame(lf, layout, file, check_masks), file)
    problem = parsed[f"{_TEMP}problem"]
    bad = problem.is_not_null()
    if bad.any():
        if on_error == "raise":
            index = int(bad.arg_max())
            raise RecordError(
                problem[index], file=file, row=int(parsed[f"{_TEMP}row"][index]), image_id=parsed["image_id"][index], fix=SKIP_FIX
            )
        counts = dict(
            parsed.filter(bad).group_by(f"{_TEMP}problem").len().sort("len", descending=True).iter_rows()
        )
        warnings.warn(SkippedRowsWarning(file, len(parsed), counts), stacklevel=2)
        parsed = parsed.filter(~bad)
    return _finish(parsed.lazy(), layout).collect()


def _collect(lf: pl.LazyFrame, file: str) -> pl.DataFrame:
    try:
        return lf.collect()
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as error:
        raise FileReadError(f"cannot read {file!r}: {error}") from error


def read_tables(paths: list[str | os.PathLike], **kwargs) -> pl.DataFrame:
    """Read several files (any variants) and concatenate their canonical tables.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.read_tables(cxu.sample_files()[:2])
    >>> sorted(table["source"].unique())
    ['CheXpert', 'ChestX-ray8']
    """
    return pl.concat([empty_table(), *(read_table(path, **kwargs) for path in paths)], how="diagonal_relaxed")


DATA_FILE_PATTERN = r"\.(csv|csv\.gz|csv\.xz|csv\.zst|csv\.zstd|csv\.bz2|parquet)$"
"""File names the directory readers take as data files (case-insensitive)."""


def data_files(directory: str | os.PathLike) -> list[Path]:
    """The CheXmask(-U) tables (csv, csv.gz, csv.xz, csv.zst, csv.bz2, parquet) under a directory, sorted."""
    root = Path(directory)
    if not root.is_dir():
        raise FileReadError(f"not a directory: {str(root)!r}" if root.exists() else f"not found: {str(root)!r}")
    return sorted(p for p in root.rglob("*") if p.is_file() and re.search(DATA_FILE_PATTERN, p.name.lower()))


def _is_local_dir(path: object) -> bool:
    return isinstance(path, (str, os.PathLike)) and not _is_url(os.fspath(path)) and os.path.isdir(path)


def _directory_files(path: str | os.PathLike) -> list[Path]:
    files = data_files(path)
    if not files:
        raise FileReadError(f"no data files (.csv, .csv.gz, .csv.xz, .csv.zst, .parquet) under {os.fspath(path)!r}")
    return files


def canonicalize_batch(
    raw: pl.DataFrame,
    layout: Layout,
    *,
    file: str,
    row_offset: int = 0,
    on_error: Literal["raise", "skip"] = "raise",
    check_masks: bool = False,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """One in-memory batch of a released file's raw columns -> canonical rows.

    Parameters
    ----------
    raw:
        The batch's columns as read (strings or numbers), index columns dropped.
    layout:
        The file's :func:`~chexmask_u_tools.io.table.detect_layout`.
    file, row_offset:
        For error messages: the file name and the 0-based file row of the
        batch's first row.
    on_error:
        ``raise``: the first bad row raises :class:`RecordError`;
        ``skip``: bad rows are dropped and counted.
    check_masks:
        Check every run of every mask (see :func:`scan_table`).

    Returns
    -------
    (canonical DataFrame, {reason: rows dropped})
    """
    if layout.canonical:
        return _canonical_passthrough(raw.lazy()).collect(), {}
    parsed = _parsed_frame(raw.lazy(), layout, file, check_masks).collect()
    problem = parsed[f"{_TEMP}problem"]
    bad = problem.is_not_null()
    counts: dict[str, int] = {}
    if bad.any():
        if on_error == "raise":
            index = int(bad.arg_max())
            raise RecordError(
                problem[index],
                file=file,
                row=row_offset + int(parsed[f"{_TEMP}row"][index]),
                image_id=parsed["image_id"][index],
                fix=SKIP_FIX,
            )
        counts = dict(parsed.filter(bad).group_by(f"{_TEMP}problem").len().iter_rows())
        parsed = parsed.filter(~bad)
    return _finish(parsed.lazy(), layout).collect(), counts
