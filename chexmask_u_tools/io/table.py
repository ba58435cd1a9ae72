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

import numpy as np
import polars as pl

from chexmask_u_tools import kernels  # kernels.parse (and numba) load at the first read, not at import
from chexmask_u_tools.errors import (
    CheXmaskUError,
    ColumnNameWarning,
    FileReadError,
    InputError,
    RecordError,
    SKIP_FIX,
    SchemaError,
    SkippedRowsWarning,
)
from chexmask_u_tools.io.csvstream import CsvFile, group_batches, prefetched
from chexmask_u_tools.io.hf import plain_storage
from chexmask_u_tools.io.hub_folder import is_hub_folder, scan_hub_folder
from chexmask_u_tools.io.parsing import parse_number_column, string_buffers
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
            f"no image id column{where}: expected one of {list(ID_COLUMNS)}; columns are {columns}. "
            + _mapping_hint(columns, list(ID_COLUMNS), "image_id")
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
            f"no landmark column{where}: expected one of {list(LANDMARK_COLUMNS)}; columns are {columns}. "
            + _mapping_hint(columns, list(LANDMARK_COLUMNS), "landmarks")
        )
    std_column = next((c for c in STD_COLUMNS if c in present), None)
    has_second_pair = f"{landmarks_column}.1" in present
    if frame == "original" and has_second_pair and infer_frame(file_name) != "original":
        landmarks_column = f"{landmarks_column}.1"
        std_column = f"{std_column}.1" if std_column and f"{std_column}.1" in present else None
    mask_names = RELEASED_MASK_COLUMNS if masks == "released" else MEAN_MASK_COLUMNS
    if masks not in ("released", "mean"):
        raise SchemaError(f"masks must be 'released' or 'mean', got {masks!r}")
    layout = Layout(
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
    _warn_near_misses(columns, layout, file_name, mask_names)
    return layout


def _mapping_hint(columns: list[str], wanted: list[str], canonical: str) -> str:
    """How to read a column under the name a reader expects: ``columns={...}``, with the closest column if any."""
    import difflib

    lowered = {name.lower(): name for name in columns}
    close = [lowered[name] for name in difflib.get_close_matches(wanted[0].lower(), list(lowered), n=1, cutoff=0.6)]
    for name in wanted[1:]:
        if close:
            break
        close = [lowered[match] for match in difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)]
    theirs = close[0] if close else "their name"
    guess = f" ({theirs!r} is the closest)" if close else ""
    return f"If the file names it otherwise{guess}, pass columns={{{theirs!r}: {canonical!r}}}"


def _warn_near_misses(columns: list[str], layout: Layout, file_name: str, mask_names: dict[str, str]) -> None:
    """Warn about each unread column that nearly spells a known name whose field the layout left empty.

    Only exact names are read, so ``Landmark (Std)`` beside ``Landmarks
    (Mean)`` would otherwise leave the file's uncertainty out without a word.
    """
    import difflib

    if layout.canonical:
        return
    unfilled: dict[str, str] = {}  # known name, lower case -> as spelled
    targets = {}  # known name -> the canonical name a mapping reads it as
    roles = [
        (layout.std_column, STD_COLUMNS, "landmarks_std"),
        (layout.latents_column, LATENT_COLUMNS, "latent_sigma"),
        (layout.dice_mean_column, ("Dice RCA (Mean)",), "dice_rca_mean"),
        (layout.dice_max_column, ("Dice RCA (Max)",), "dice_rca_max"),
        (layout.height_column, ("Height",), "height"),
        (layout.width_column, ("Width",), "width"),
        *((layout.mask_columns.get(organ), (name,), RLE_COLUMNS[organ]) for organ, name in mask_names.items()),
    ]
    for used, names, canonical in roles:
        if used is None:
            for name in names:
                unfilled.setdefault(name.lower(), name)  # the first spelling listed (released files use it)
                targets[name] = canonical
    if not unfilled:
        return
    known = set(known_column_names())
    present = set(columns)
    for column in columns:
        duplicate = re.fullmatch(r"(.*)\.\d+", column)
        if column in known or is_index_column(column) or (duplicate and duplicate.group(1) in present):
            continue
        match = difflib.get_close_matches(column.lower(), list(unfilled), n=1, cutoff=0.8)
        if not match:
            continue
        closest = unfilled[match[0]]
        where = f" of {file_name!r}" if file_name else ""
        warnings.warn(
            ColumnNameWarning(
                f"column {column!r}{where} is not read: it is no known name, and the file has no {closest!r}; "
                f"if it is {closest!r}, pass columns={{{column!r}: {targets[closest]!r}}}",
                file=file_name,
                column=column,
                closest=closest,
            ),
            stacklevel=3,
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

    def header_name(self, column: str) -> str:
        """The CSV header's own name of a column of :attr:`columns` (before fix-ups and the user's mapping)."""
        kept = [name for name in self.csv.columns if name not in self.drop]
        return kept[self.columns.index(column)]

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


def _number(column: str | None, schema: pl.Schema, what: str) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(Float64 value, bad flag, problem) for a scalar numeric column given as text or number.

    The flag is cheap (no text formatted); the problem is worded only for
    the rows a caller found flagged.
    """
    if column is None:
        return pl.lit(None, dtype=pl.Float64), pl.lit(False), pl.lit(None, dtype=pl.String)
    text = _as_text(column, schema).str.strip_chars()
    value = text.cast(pl.Float64, strict=False)  # blank: null, a missing value
    bad = ((text.str.len_bytes() > 0) & (value.is_null() | ~value.is_finite())).fill_null(False)
    problem = pl.when(bad).then(pl.format("{} is not a number: {}", pl.lit(what), text.str.slice(0, 30)))
    return value, bad, problem


def _size(
    column: str | None, schema: pl.Schema, what: str, default: int | None
) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(Int32 size, bad flag, problem) for Height or Width (see :func:`_number`)."""
    value, bad, problem = _number(column, schema, what)
    out_of_range = (value.is_not_null() & ((value <= 0) | (value != value.round(0)) | (value > 2**31 - 1))).fill_null(False)
    problem = pl.coalesce(
        problem, pl.when(out_of_range).then(pl.format("{} must be a positive integer, got {}", pl.lit(what), value))
    )
    size = pl.when(out_of_range).then(None).otherwise(value).cast(pl.Int32)
    if default is not None:
        size = size.fill_null(default)
    return size, bad | out_of_range, problem


_MASK_TAIL = 64


def _mask_column(
    texts: pl.Series, column: str, n_pixels: np.ndarray, known: np.ndarray, full: bool
) -> tuple[pl.Series, pl.Series]:
    """(RLE strings with blanks as null, problem per row) of one mask column.

    The rule is :func:`~chexmask_u_tools.io.rle.rle_problems`, the decoders'
    own: it decides every string a compiled pass flags, and words the problem.
    By default the pass reads only the end of each string
    (:func:`~chexmask_u_tools.kernels.parse.rle_tail_status`: the last run, the
    farthest one since runs increase, must be a plain pair inside ``height *
    width``); ``full`` checks every run of every string
    (:func:`~chexmask_u_tools.kernels.parse.rle_status`), a pass over all mask
    text, most of a CheXmask file.  Decoding validates every run in any case.
    """
    # Only the last 64 characters of each string are handed to the kernel (a released mask string is ~10 kB).
    ends = texts.str.slice(-_MASK_TAIL)
    whole = (texts.str.len_bytes() <= _MASK_TAIL).fill_null(True).to_numpy()
    offsets, data, valid = string_buffers(ends)
    status = kernels.parse.rle_tail_status(offsets, data, valid, whole, n_pixels, known)
    flagged = status == kernels.parse.RLE_CHECK
    if full:
        flagged |= kernels.parse.rle_status(*string_buffers(texts), n_pixels, known) != 0
    blank = status == kernels.parse.RLE_BLANK
    problems = pl.Series(column, [None] * len(texts), dtype=pl.String)
    rows = np.flatnonzero(flagged)
    if rows.size:
        suspects = texts.gather(rows)
        sizes = pl.select(pl.when(pl.Series(known[rows])).then(pl.Series(n_pixels[rows]))).to_series()
        found = pl.DataFrame({"problem": rle_problems(suspects, sizes)})
        problems = problems.scatter(
            rows, found.select(pl.format("mask {}: {}", pl.lit(repr(column)), pl.col("problem"))).to_series()
        )
        blank[rows] = ~suspects.str.contains(r"\S").fill_null(False).to_numpy()  # Unicode whitespace too
    if blank.any():
        texts = texts.scatter(np.flatnonzero(blank), None)
    return texts, problems


def _point_column(values: np.ndarray, present: np.ndarray, name: str, shape: tuple[int, ...]) -> pl.Series:
    """Parsed values as the canonical Array column, null where ``present`` is False."""
    column = pl.Series(name, values.reshape(len(values), *shape))
    if present.all():
        return column
    return pl.select(pl.when(pl.Series(present)).then(column)).to_series().alias(name)


def _scalar_columns(raw: pl.DataFrame, layout: Layout, source: pl.Expr) -> tuple[pl.DataFrame, pl.Series, pl.Series]:
    """(source, image_id, frame, height, width, Dice columns; id problem; size and Dice problem) of a batch.

    A quick query casts each number as written and takes it where it is a
    clean value; the rows where it is not (text that needs stripping, a bad
    number, a size out of range, a missing id) are read again with the exact
    rules (:func:`_number`, :func:`_size`), which also word their problems.
    """
    schema = raw.schema
    n = raw.height
    # Byte for byte: file names may begin or end with spaces.  An id of spaces only is no id (missing).
    image_id = _as_text(layout.id_column, schema)
    default_size = PREPROCESSED_SIZE if layout.frame == "preprocessed" else None
    named = {
        "height": layout.height_column,
        "width": layout.width_column,
        "dice_a": layout.dice_mean_column,
        "dice_b": layout.dice_max_column,
    }
    quick = {name: (_as_text(column, schema).cast(pl.Float64, strict=False) if column else pl.lit(None, dtype=pl.Float64)) for name, column in named.items()}
    written = {f"{name}_written": (pl.col(column).is_not_null() if column else pl.lit(False)) for name, column in named.items()}

    def clean_size(name: str) -> pl.Expr:
        value = pl.col(name)
        return value.is_finite() & (value > 0) & (value == value.round(0)) & (value <= 2**31 - 1)

    def size(name: str) -> pl.Expr:
        value = pl.when(pl.col(f"{name}_clean")).then(pl.col(name)).cast(pl.Int32)
        return value.fill_null(default_size) if default_size is not None else value

    dice_a, dice_b = pl.col("dice_a"), pl.col("dice_b")
    both = dice_a.is_not_null() & dice_b.is_not_null()
    scalars = (
        raw.lazy()
        .select(source=source, image_id=image_id, **quick, **written)
        .with_columns(height_clean=clean_size("height").fill_null(False), width_clean=clean_size("width").fill_null(False))
        .with_columns(height=size("height"), width=size("width"))
        .select(
            "source",
            "image_id",
            frame=pl.lit(layout.frame, dtype=pl.String),
            height="height",
            width="width",
            # The swap fix-up needs both values; a missing one stays missing (never filled from the other column).
            dice_rca_mean=pl.when(both).then(pl.min_horizontal(dice_a, dice_b)).otherwise(dice_a),
            dice_rca_max=pl.when(both).then(pl.max_horizontal(dice_a, dice_b)).otherwise(dice_b),
            flagged=pl.any_horizontal(
                ~pl.col("image_id").str.contains(r"\S").fill_null(False),  # missing or blank
                pl.col("height_written") & ~pl.col("height_clean"),
                pl.col("width_written") & ~pl.col("width_clean"),
                pl.col("dice_a_written") & ~dice_a.is_finite().fill_null(False),
                pl.col("dice_b_written") & ~dice_b.is_finite().fill_null(False),
                pl.col("height").cast(pl.Int64) * pl.col("width").cast(pl.Int64) > MAX_MASK_PIXELS,
            ).fill_null(False),
        )
        .collect()
    )
    id_problem = pl.Series("id", [None] * n, dtype=pl.String)
    scalar_problem = pl.Series("scalar", [None] * n, dtype=pl.String)
    flagged = scalars["flagged"].to_numpy()
    scalars = scalars.drop("flagged")
    if not flagged.any():
        return scalars, id_problem, scalar_problem
    height, _, height_problem = _size(layout.height_column, schema, "Height", default_size)
    width, _, width_problem = _size(layout.width_column, schema, "Width", default_size)
    dice_a, _, dice_a_problem = _number(layout.dice_mean_column, schema, "Dice RCA (Mean)")
    dice_b, _, dice_b_problem = _number(layout.dice_max_column, schema, "Dice RCA (Max)")
    both = dice_a.is_not_null() & dice_b.is_not_null()
    too_large = height.cast(pl.Int64) * width.cast(pl.Int64) > MAX_MASK_PIXELS
    exact = raw.filter(pl.Series(flagged)).lazy().select(
        height=height,
        width=width,
        dice_rca_mean=pl.when(both).then(pl.min_horizontal(dice_a, dice_b)).otherwise(dice_a),
        dice_rca_max=pl.when(both).then(pl.max_horizontal(dice_a, dice_b)).otherwise(dice_b),
        id=pl.when(~image_id.str.contains(r"\S").fill_null(False)).then(pl.lit("missing image id")),
        scalar=pl.coalesce(
            height_problem,
            width_problem,
            pl.when(too_large).then(
                pl.format(
                    "Height x Width = {} x {} exceeds the limit of {} pixels (MAX_MASK_PIXELS)",
                    height,
                    width,
                    pl.lit(MAX_MASK_PIXELS),
                )
            ),
            dice_a_problem,
            dice_b_problem,
        ),
    ).collect()
    rows = np.flatnonzero(flagged)
    scalars = scalars.with_columns(
        scalars[name].scatter(rows, exact[name]) for name in ("height", "width", "dice_rca_mean", "dice_rca_max")
    )
    return scalars, id_problem.scatter(rows, exact["id"]), scalar_problem.scatter(rows, exact["scalar"])


def _parse_rows(raw: pl.DataFrame, layout: Layout, check_masks: bool) -> tuple[pl.DataFrame, pl.Series]:
    """A batch's raw columns -> (canonical base columns of every row, the first problem of each row or null).

    The number lists and the masks go through compiled passes over their
    Arrow buffers (:func:`~chexmask_u_tools.io.parsing.parse_number_column`,
    :func:`_mask_column`); the scalar columns through polars expressions.
    Problems are taken in a fixed order: id, landmarks, std, latents, sizes,
    Dice, masks.  Bad rows keep undefined values: the caller drops them.
    """
    schema = raw.schema
    n = raw.height
    if layout.dataset_column is not None:
        dataset = _as_text(layout.dataset_column, schema).str.strip_chars()
        source = dataset.str.to_lowercase().replace_strict(dict(_SOURCE_PATTERNS), default=dataset)
        if layout.source is not None:
            source = source.fill_null(layout.source)
    else:
        source = pl.lit(layout.source, dtype=pl.String)
    scalars, id_problem, scalar_problem = _scalar_columns(raw, layout, source)

    def texts(column: str) -> pl.Series:
        return raw.select(_as_text(column, schema)).to_series()

    landmark_texts = texts(layout.landmarks_column)
    landmarks, landmarks_present, landmarks_problem = parse_number_column(
        landmark_texts, 2 * N_NODES, allow_negative=True, what="landmarks"
    )
    missing = ~landmarks_present & landmarks_problem.is_null().to_numpy()
    missing_landmarks = pl.select(
        pl.when(pl.Series(missing)).then(pl.lit(f"missing landmarks ({layout.landmarks_column!r})"))
    ).to_series()
    problems = [id_problem, missing_landmarks, landmarks_problem]
    columns = {"landmarks": _point_column(landmarks, landmarks_present, "landmarks", (N_NODES, 2))}
    for name, column, width, what in (
        ("landmarks_std", layout.std_column, 2 * N_NODES, "landmark std"),
        ("latent_sigma", layout.latents_column, N_LATENT, "latent sigmas"),
    ):
        if column is None:
            columns[name] = pl.Series(name, [None] * n, dtype=CANONICAL_SCHEMA[name])
            continue
        values, present, problem = parse_number_column(
            texts(column), width, allow_negative=False, what=what
        )
        shape = (N_NODES, 2) if name == "landmarks_std" else (N_LATENT,)
        columns[name] = _point_column(values, present, name, shape)
        problems.append(problem)
    problems.append(scalar_problem)
    if layout.frame == "preprocessed":
        n_pixels = np.full(n, PREPROCESSED_SIZE * PREPROCESSED_SIZE, dtype=np.int64)
        known = np.ones(n, dtype=bool)
    else:
        pixels = (scalars["height"].cast(pl.Int64) * scalars["width"].cast(pl.Int64))
        known = pixels.is_not_null().to_numpy()
        n_pixels = pixels.fill_null(0).to_numpy().astype(np.int64)
    for organ in ORGANS:
        name, column = RLE_COLUMNS[organ], layout.mask_columns.get(organ)
        if column is None:
            columns[name] = pl.Series(name, [None] * n, dtype=pl.String)
            continue
        columns[name], problem = _mask_column(texts(column), column, n_pixels, known, check_masks)
        problems.append(problem)
    base = scalars.with_columns(pl.Series(name, values) for name, values in columns.items())
    problem = pl.DataFrame(problems, schema=[f"p{i}" for i in range(len(problems))]).select(
        pl.coalesce(pl.all())
    ).to_series()
    return base.select(*BASE_SCHEMA), problem


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


def _raw_batches(raw: _Raw, layout: Layout) -> Iterator[pl.DataFrame]:
    """A released file's raw columns (header fix-ups applied), about 4,096 rows at a time.

    CSV blocks are read by a background thread (:func:`~chexmask_u_tools.io.csvstream.prefetched`,
    stopped and joined when the caller stops) and grouped; a parquet file is
    read in slices of its scan.
    """
    if raw.csv is not None:
        blocks = raw.csv.batches(id_column=raw.header_name(layout.id_column))
        # Grouped by the reading thread: it reads the next group while this one is canonicalized.
        for group in prefetched(group_batches(blocks, CANONICAL_CHUNK_BYTES, CANONICAL_CHUNK_ROWS), depth=1):
            yield raw.tidy(group)
        return
    lf = raw.tidy(raw.lf)
    offset = 0
    while True:
        batch = _collect(lf.slice(offset, CANONICAL_CHUNK_ROWS), raw.file)
        if batch.height == 0:
            return
        yield batch
        offset += batch.height


def _canonical_batches(
    raw: _Raw, layout: Layout, on_error: OnError, check_masks: bool, skipped: dict[str, int] | None = None
) -> Iterator[pl.DataFrame]:
    """A released file's canonical rows, a batch at a time; bad rows raise at their batch (or are counted into ``skipped``)."""
    offset = 0
    for batch in _raw_batches(raw, layout):
        canonical, counts = canonicalize_batch(
            batch, layout, file=raw.file, row_offset=offset, on_error=on_error, check_masks=check_masks
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
"""Rows canonicalized per step: up to 64 MiB of text or 4,096 rows, whichever comes first.

CSV blocks are read 8 MiB (about 400 rows) at a time and grouped
(:func:`~chexmask_u_tools.io.csvstream.group_batches`): each step costs a few
milliseconds of fixed work (polars queries, kernel calls) whatever its size,
which groups of 400 rows would feel; the row cap bounds the per-row work of a
file of many tiny junk rows."""


def _scan_released(raw: _Raw, layout: Layout, on_error: OnError, check_masks: bool) -> pl.LazyFrame:
    """A released file as a lazy canonical table whose source reads one batch at a time (memory: a batch + the result)."""
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

    return register_io_source(source, schema=CANONICAL_SCHEMA, explain_name="chexmask canonical table")


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
    if layout.canonical and raw.lf is not None:
        return _canonical_passthrough(raw.tidy(raw.lf), keep_extra=True)
    return _scan_released(raw, layout, on_error, check_masks)


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
    if layout.canonical and raw.lf is not None:
        return _collect(_canonical_passthrough(raw.tidy(raw.lf), keep_extra=True), raw.file)
    skipped: dict[str, int] = {}
    table = pl.concat([empty_table(), *_canonical_batches(raw, layout, on_error, check_masks, skipped)])
    total = skipped.pop(_ROWS_READ, 0)
    if skipped:
        counts = dict(sorted(skipped.items(), key=lambda item: -item[1]))
        warnings.warn(SkippedRowsWarning(raw.file, total, counts), stacklevel=2)
    return table


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
    parsed, problem = _parse_rows(raw, layout, check_masks)
    bad = problem.is_not_null()
    counts: dict[str, int] = {}
    if bad.any():
        if on_error == "raise":
            index = int(bad.arg_max())
            raise RecordError(
                problem[index], file=file, row=row_offset + index, image_id=parsed["image_id"][index], fix=SKIP_FIX
            )
        counts = dict(pl.DataFrame({"problem": problem.filter(bad)}).group_by("problem").len().iter_rows())
        parsed = parsed.filter(~bad)
    return parsed.with_columns(summary_expressions()), counts

