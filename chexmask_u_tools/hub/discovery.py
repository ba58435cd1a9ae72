"""Discovery: list a location's files at one revision and classify the data files by source and frame.

Two repo layouts are understood:

* the released layout: ``Preprocessed/...`` and ``OriginalResolution/...``
  folders, the source named by a path part (e.g. ``Preprocessed/CheXpert.csv``);
* the Hub's automatic parquet conversion (``revision="refs/convert/parquet"``):
  ``<config>/<split>/NNNN.parquet`` (``<config>/partial-<split>/...`` for a
  partial conversion), the source and frame named by the config, the split kept
  in :attr:`DataFile.split`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import polars as pl

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.hub.location import (
    PARQUET_CONVERSION_REVISION,
    DatasetLocation,
    RetryPolicy,
    open_location,
)
from chexmask_u_tools.io.table import DATA_FILE_PATTERN, infer_frame, infer_source
from chexmask_u_tools.select.selection import normalize_frames, normalize_sources

__all__ = [
    "CONVERTED_PARQUET",
    "DATA_FILE",
    "DataFile",
    "Discovery",
    "classify",
    "discover",
]

DATA_FILE = re.compile(DATA_FILE_PATTERN, re.IGNORECASE)
"""The data files of a dataset repo: the files every reader takes, CSV (plain or compressed) and parquet.

One pattern for every reader (:data:`~chexmask_u_tools.io.table.DATA_FILE_PATTERN`,
which ``read_table`` uses for a folder); its group 1 is the file's format
(``csv``, ``csv.gz``, ``csv.bz2``, ``parquet`` ...)."""

_DATA_SUFFIXES = ", ".join(
    "." + alternative.replace("\\.", ".") for alternative in re.search(r"\((.*)\)", DATA_FILE_PATTERN).group(1).split("|")
)
"""The data files' suffixes as messages list them (``.csv, .csv.gz, ..., .parquet``)."""

CONVERTED_PARQUET = re.compile(r"^(?P<config>[^/]+)/(?:partial-)?(?P<split>[^/]+)/\d{4,5}\.parquet$")
"""A file of the Hub's parquet conversion: ``<config>/<split>/NNNN.parquet``."""

_LISTED_IN_ERRORS = 20


@dataclass(frozen=True)
class DataFile:
    """A data file found in a location.

    ``source`` is None when the path names no source (e.g. physician files whose
    rows carry a ``Dataset`` column); ``frame`` is None when the path names no
    frame (read as ``preprocessed``, see :func:`~chexmask_u_tools.io.table.detect_layout`);
    ``split`` is the split of a parquet-conversion file (``train``...), else None.
    """

    path: str
    source: str | None
    frame: str | None
    format: str
    size: int | None
    checksum: str | None
    split: str | None = None


def classify(path: str, *, converted: bool = False) -> tuple[str | None, str | None]:
    """(source, frame) named by a repo path: the innermost path part naming a source, and the frame words.

    With ``converted=True`` the path is a parquet-conversion file
    (``<config>/<split>/NNNN.parquet``) and both come from the config name only.

    Examples
    --------
    >>> from chexmask_u_tools.hub import classify
    >>> classify("OriginalResolution/VinDr-CXR.csv")
    ('VinDr-CXR', 'original')
    >>> classify("CheXpert/train/0000.parquet", converted=True)
    ('CheXpert', None)
    """
    if converted:
        config = path.split("/", 1)[0]
        return infer_source(config), infer_frame(config)
    source = None
    for part in reversed(PurePosixPath(path).parts):
        source = infer_source(part)
        if source is not None:
            break
    return source, infer_frame(path)


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found at one revision of a location."""

    location: DatasetLocation
    revision: str
    files: tuple[DataFile, ...]
    other_files: tuple[str, ...] = field(default=())
    layout: str = "released"
    """``released`` (``Preprocessed/``, ``OriginalResolution/``) or ``parquet-conversion``."""

    def select(
        self, sources: Sequence[str] | str | None = None, frames: Sequence[str] | str | None = None
    ) -> list[DataFile]:
        """Files that may hold rows of the given sources / frames.

        Files whose path names no source are always kept (their rows say their
        source); files whose path names no frame count as ``preprocessed``.
        """
        wanted_sources = normalize_sources(sources)
        wanted_frames = normalize_frames(frames)
        chosen = []
        for item in self.files:
            if wanted_sources is not None and item.source is not None and item.source not in wanted_sources:
                continue
            if wanted_frames is not None and (item.frame or "preprocessed") not in wanted_frames:
                continue
            chosen.append(item)
        return chosen

    def to_frame(self) -> pl.DataFrame:
        """One row per data file: path, source, frame, format, size, checksum, split."""
        return pl.DataFrame(
            [vars(item) for item in self.files],
            schema={
                "path": pl.String,
                "source": pl.String,
                "frame": pl.String,
                "format": pl.String,
                "size": pl.Int64,
                "checksum": pl.String,
                "split": pl.String,
            },
        )

    def report(self) -> str:
        """A short human-readable summary of the files found, by source and frame."""
        lines = [f"{self.location.name} @ {self.revision}: {len(self.files)} data file(s), {self.layout} layout"]
        total = 0
        for item in self.files:
            size = item.size or 0
            total += size
            split = f" split={item.split}" if item.split else ""
            lines.append(
                f"  {item.path:<60} source={item.source or '(per row)':<14} frame={item.frame or '(default)':<12} "
                f"{size / 1e6:10.1f} MB{split}"
            )
        lines.append(f"  total {total / 1e6:.1f} MB")
        if self.other_files:
            lines.append(f"  ignored {len(self.other_files)} non-data file(s): {', '.join(self.other_files[:5])}")
        unclassified = [item.path for item in self.files if item.source is None]
        if unclassified:
            lines.append(f"  {len(unclassified)} file(s) name no source; their rows must carry a Dataset column")
        return "\n".join(lines)


def discover(
    location: str | os.PathLike | DatasetLocation | None = None,
    *,
    revision: str | None = None,
    api: Any = None,
    token: str | None = None,
    retry: RetryPolicy | None = None,
) -> Discovery:
    """List a location's files at one revision and classify the data files by source and frame.

    Data files are ``.csv`` (plain, or ``.gz``, ``.xz``, ``.zst``, ``.bz2``)
    and ``.parquet`` (:data:`DATA_FILE`); everything else (README, .gitattributes) is listed in
    ``other_files``.  A location at ``revision="refs/convert/parquet"``, or
    whose data files are all ``<config>/<split>/NNNN.parquet``, is read as the
    Hub's parquet conversion (sources and frames from the config names).

    Raises
    ------
    InputError
        No data file at all: the message lists up to 20 of the files found
        (with sizes) and the ways forward.
    HubError
        Unknown repo or revision, offline without a cache, repeated network failure.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from chexmask_u_tools.hub import discover
    >>> from chexmask_u_tools.testing.mirror import build_mirror
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     found = discover(build_mirror(Path(tmp), rows_per_source=2))
    ...     [(item.path, item.source, item.frame) for item in found.select(sources="Padchest")]
    [('Physician/annotations.csv', None, None), ('Preprocessed/Padchest.csv.gz', 'Padchest', 'preprocessed')]
    """
    place = open_location(location, revision=revision, api=api, token=token, retry=retry)
    sha = place.revision
    entries = place.list_files()
    data = [(entry, DATA_FILE.search(entry.path)) for entry in entries]
    data = [(entry, match) for entry, match in data if match is not None]
    if not data:
        raise InputError(_no_data_message(place, sha, entries))
    converted = place.requested_revision == PARQUET_CONVERSION_REVISION or all(
        CONVERTED_PARQUET.match(entry.path) for entry, _ in data
    )
    files = []
    for entry, match in data:
        shape = CONVERTED_PARQUET.match(entry.path) if converted else None
        source, frame = classify(entry.path, converted=shape is not None)
        split = shape.group("split") if shape is not None else None
        files.append(DataFile(entry.path, source, frame, match.group(1).lower(), entry.size, entry.checksum, split))
    data_paths = {item.path for item in files}
    others = [entry.path for entry in entries if entry.path not in data_paths]
    return Discovery(place, sha, tuple(files), tuple(others), "parquet-conversion" if converted else "released")


def _no_data_message(place: DatasetLocation, sha: str, entries: list) -> str:
    lines = [
        f"no data file ({_DATA_SUFFIXES}) in {place.name} @ {sha}; "
        f"it holds {len(entries)} file(s)" + (":" if entries else ".")
    ]
    for entry in entries[:_LISTED_IN_ERRORS]:
        size = "?" if entry.size is None else f"{entry.size:,} B"
        lines.append(f"  {entry.path}  ({size})")
    if len(entries) > _LISTED_IN_ERRORS:
        lines.append(f"  ... and {len(entries) - _LISTED_IN_ERRORS} more")
    conversion = (
        f"{place.name}@{PARQUET_CONVERSION_REVISION}" if place.kind == "hub" else "the Hub repo's parquet conversion"
    )
    lines.append(
        "Ways forward: read the Hub's automatic parquet conversion with "
        f"revision={PARQUET_CONVERSION_REVISION!r} (or {conversion}); convert the files to CSV or parquet; "
        "read one file directly with read_table(path, source=..., frame=...), mapping unknown column names with "
        "columns={'their name': 'canonical name'} (CLI: --column THEIRS=CANONICAL, --source, --frame)."
    )
    return "\n".join(lines)
