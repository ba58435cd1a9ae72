"""Discovery: list a location's files at one revision and classify the data files by source and frame."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import polars as pl

from chexmask_u_tools.hub.location import DatasetLocation, open_location
from chexmask_u_tools.select.selection import normalize_frames, normalize_sources
from chexmask_u_tools.io.table import infer_frame, infer_source

__all__ = [
    "DATA_FILE",
    "DataFile",
    "Discovery",
    "classify",
    "discover",
]

DATA_FILE = re.compile(r"\.(csv|csv\.gz|csv\.xz|csv\.zst|csv\.zstd|parquet)$", re.IGNORECASE)
"""The data files of a dataset repo: CSV (plain or compressed) and parquet."""


@dataclass(frozen=True)
class DataFile:
    """A data file found in a location.

    ``source`` is None when the path names no source (e.g. physician files whose
    rows carry a ``Dataset`` column); ``frame`` is None when the path names no
    frame (read as ``preprocessed``, see :func:`~chexmask_u_tools.io.table.detect_layout`).
    """

    path: str
    source: str | None
    frame: str | None
    format: str
    size: int | None
    checksum: str | None


def classify(path: str) -> tuple[str | None, str | None]:
    """(source, frame) named by a repo path: the innermost path part naming a source, and the frame words."""
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
        """One row per data file: path, source, frame, format, size, checksum."""
        return pl.DataFrame(
            [vars(item) for item in self.files],
            schema={
                "path": pl.String,
                "source": pl.String,
                "frame": pl.String,
                "format": pl.String,
                "size": pl.Int64,
                "checksum": pl.String,
            },
        )

    def report(self) -> str:
        """A short human-readable summary of the files found, by source and frame."""
        lines = [f"{self.location.name} @ {self.revision}: {len(self.files)} data file(s)"]
        total = 0
        for item in self.files:
            size = item.size or 0
            total += size
            lines.append(
                f"  {item.path:<60} source={item.source or '(per row)':<14} frame={item.frame or '(default)':<12} "
                f"{size / 1e6:10.1f} MB"
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
) -> Discovery:
    """List a location's files at one revision and classify the data files by source and frame.

    Data files are ``.csv``, ``.csv.gz``, ``.csv.xz``, ``.csv.zst`` and
    ``.parquet``; everything else (README, .gitattributes) is listed in
    ``other_files``.

    Raises
    ------
    HubError
        Unknown repo or revision, offline without a cache, repeated network failure.
    """
    place = open_location(location, revision=revision, api=api, token=token)
    sha = place.revision
    files, others = [], []
    for entry in place.list_files():
        match = DATA_FILE.search(entry.path)
        if match is None:
            others.append(entry.path)
            continue
        source, frame = classify(entry.path)
        files.append(DataFile(entry.path, source, frame, match.group(1).lower(), entry.size, entry.checksum))
    return Discovery(place, sha, tuple(files), tuple(others))
