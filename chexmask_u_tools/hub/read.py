"""Cache-first readers over a location: lazy :func:`scan`, per-file :func:`scan_parts` and streaming :func:`load`.

They prefer a complete local cache of the same revision (:mod:`chexmask_u_tools.hub.cache`)
and otherwise read the location's data files: local files with
:func:`~chexmask_u_tools.io.table.scan_table`, Hub files through the streaming
reader (:func:`~chexmask_u_tools.hub.stream.iter_file_batches`, wrapped as a
polars IO source), so that every remote read -- lazy, eager and streaming --
goes to ``HF_ENDPOINT`` through ``huggingface_hub`` under one
:class:`~chexmask_u_tools.hub.location.RetryPolicy`, and supports the same
formats (csv, csv.gz, csv.xz, csv.zst, csv.bz2, parquet) as ``read_table``.

A local folder written by :func:`~chexmask_u_tools.publish.save_hub_folder`
(it holds ``chexmask-u.json``) is read through its record instead: every
shard is checked (:func:`~chexmask_u_tools.io.hub_folder.verify_hub_folder`)
and read as the canonical table it holds.  Uploaded to the Hub, such a folder
is read like any repo, after :func:`check_folder_listing` compared the
listing (paths, sizes, sha256) with the record.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl

from chexmask_u_tools.errors import FileReadError, InputError, SkippedRowsWarning
from chexmask_u_tools.hub.discovery import DataFile, Discovery, discover
from chexmask_u_tools.hub.location import DatasetLocation, LocalMirror, RetryPolicy, open_location
from chexmask_u_tools.hub.stream import iter_file_batches
from chexmask_u_tools.io.hub_folder import (
    FOLDER_RECORD,
    REWRITE,
    FolderRecord,
    is_hub_folder,
    iter_hub_folder_batches,
    scan_hub_folder,
    verify_hub_folder,
)
from chexmask_u_tools.io.table import scan_table
from chexmask_u_tools.schema import CANONICAL_SCHEMA
from chexmask_u_tools.select.selection import (
    normalize_frames,
    normalize_sources,
    row_filter,
)

__all__ = [
    "check_folder_listing",
    "load",
    "remote_scan",
    "scan",
    "scan_parts",
]


def remote_scan(
    place: DatasetLocation,
    item: DataFile,
    *,
    masks: Literal["released", "mean"] = "released",
    on_error: Literal["raise", "skip"] = "raise",
    retry: RetryPolicy | None = None,
    columns: dict[str, str] | None = None,
) -> pl.LazyFrame:
    """A lazy canonical table of one data file read through the streaming reader (no polars remote client).

    Nothing is read until the frame is collected; filters, column selections
    and ``head`` are applied batch by batch while the file streams, and a
    ``head`` stops the download early.  Errors (``HubError``,
    ``SchemaError``, ``RecordError``, ``FileReadError``) surface from
    ``collect`` unchanged.
    """
    from polars.io.plugins import register_io_source

    def batches(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        remaining = n_rows
        for batch in iter_file_batches(place, item, masks=masks, on_error=on_error, retry=retry, columns=columns):
            if predicate is not None:
                batch = batch.filter(predicate)
            if with_columns is not None:
                batch = batch.select(with_columns)
            if remaining is not None:
                batch = batch.head(remaining)
                remaining -= batch.height
            if batch.height:
                yield batch
            if remaining == 0:
                return

    return register_io_source(
        batches, schema=CANONICAL_SCHEMA, explain_name="chexmask-u hub file", explain_detail=item.path
    )


def check_folder_listing(found: Discovery) -> None:
    """A location holding a ``save_hub_folder`` record (a folder uploaded to the Hub) must list exactly its shards.

    Each shard must be listed with its recorded size, and with its recorded
    sha256 where the listing gives one (the Hub does for LFS files); no other
    data file may be listed.  A local folder is checked in full
    (:func:`~chexmask_u_tools.io.hub_folder.verify_hub_folder`).  Nothing to do
    for a location without a record.

    Raises
    ------
    FileReadError
        A shard missing, added, of another size or another sha256 (named, with the fix).
    """
    if FOLDER_RECORD not in found.other_files:
        return
    place = found.location
    if isinstance(place, LocalMirror):
        verify_hub_folder(place.root)
        return
    where = f"{place.name}@{found.revision}"
    with place.open(FOLDER_RECORD) as handle:
        record = FolderRecord.from_json(handle.read(), where=f"{where}/{FOLDER_RECORD}")
    listed = {item.path: item for item in found.files}
    unlisted = sorted(set(listed) - {shard.path for shard in record.shards})
    if unlisted:
        raise FileReadError(
            f"{where} holds data files its record ({FOLDER_RECORD}) does not list: {', '.join(unlisted[:5])}; "
            f"they would add rows: remove them from the repo, or {REWRITE} and upload it again"
        )
    for shard in record.shards:
        what = f"shard {shard.path!r} of {where} ({shard.rows} of the {record.splits[shard.split]} rows of split {shard.split!r})"
        item = listed.get(shard.path)
        if item is None:
            raise FileReadError(f"{what} is missing; upload the whole folder again, or {REWRITE}")
        if item.size is not None and item.size != shard.bytes:
            raise FileReadError(f"{what} has {item.size} bytes, its record says {shard.bytes}; upload the folder again")
        if (item.checksum or "").startswith("sha256:") and item.checksum != f"sha256:{shard.sha256}":
            raise FileReadError(
                f"{what} does not match its sha256 in {FOLDER_RECORD} (changed or damaged); upload the folder again"
            )


def _hub_folder(location: str | os.PathLike | DatasetLocation | None, columns: dict[str, str] | None) -> Path | None:
    """The local folder ``location`` names when ``save_hub_folder`` wrote it (read through its record), else None."""
    if isinstance(location, LocalMirror):
        root = location.root
    elif isinstance(location, (str, os.PathLike)) and os.path.isdir(location):
        root = Path(location)
    else:
        return None
    if not is_hub_folder(root):
        return None
    if columns:
        raise InputError(
            f"columns= (--column) renames the columns of data files, but {str(root)!r} is a folder written by "
            "save_hub_folder, already in the canonical layout; drop it"
        )
    return root



def scan(
    location: str | os.PathLike | DatasetLocation | None = None,
    *,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    revision: str | None = None,
    masks: Literal["released", "mean"] = "released",
    on_error: Literal["raise", "skip"] = "raise",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    retry: RetryPolicy | None = None,
    api: Any = None,
    token: str | None = None,
    columns: dict[str, str] | None = None,
) -> pl.LazyFrame:
    """A lazy canonical table over a location's data files (or over its local cache).

    Parameters
    ----------
    location:
        Repo id, ``hf://datasets/...`` URL, local mirror directory or
        :class:`DatasetLocation`; default the CheXmask-U dataset repo.
    sources, frames:
        Keep only these sources (any spelling) / frames.  Files are chosen by
        their paths and rows are filtered by their ``source``/``frame`` columns.
    revision:
        Branch, tag or commit of a Hub repo.
    masks, on_error:
        See :func:`~chexmask_u_tools.io.table.scan_table`.
    cache_dir, use_cache:
        When ``use_cache`` and a complete cache of this revision covering the
        selection, built with the same ``masks`` (and ``columns``), exists under ``cache_dir`` (default
        :func:`~chexmask_u_tools.hub.cache.default_cache_dir`), read it instead of
        the source files; this also works offline (``HF_HUB_OFFLINE=1``).
    retry:
        Attempts, backoff and time budget for transient Hub errors (default
        :class:`~chexmask_u_tools.hub.location.RetryPolicy`, or the location's own).
    api, token:
        See :class:`HubRepo`.
    columns:
        ``{"their name": "known name"}`` for data files whose column names no
        reader knows (see :func:`~chexmask_u_tools.io.table.map_columns`),
        applied to every file read.  Only a cache built with the same mapping
        (:func:`~chexmask_u_tools.hub.cache.build_cache` ``columns=``) is read
        instead of the files.

    Returns
    -------
    ``LazyFrame`` with :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA`.
    Local files are checked when the scan is built (an unknown column variant
    raises ``SchemaError`` here); Hub files are read, and checked, when the
    frame is collected: nothing is downloaded before.
    """
    folder = _hub_folder(location, columns)
    if folder is not None:
        condition = row_filter(normalize_sources(sources), normalize_frames(frames))
        lf = scan_hub_folder(folder, with_split=False)
        return lf if condition is None else lf.filter(condition)
    place = open_location(location, revision=revision, api=api, token=token, retry=retry)
    if use_cache:
        from chexmask_u_tools.hub.cache import find_cache, open_cache

        found = find_cache(place, cache_dir, sources=sources, frames=frames, columns=columns, masks=masks)
        if found is not None:
            condition = row_filter(normalize_sources(sources), normalize_frames(frames))
            lf = open_cache(found)
            return lf if condition is None else lf.filter(condition)
    parts = scan_parts(
        place,
        sources=sources,
        frames=frames,
        masks=masks,
        on_error=on_error,
        use_cache=False,
        retry=retry,
        columns=columns,
    )
    return pl.concat([lf for _, lf in parts], how="vertical")


def scan_parts(
    location: str | os.PathLike | DatasetLocation | None = None,
    *,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    revision: str | None = None,
    masks: Literal["released", "mean"] = "released",
    on_error: Literal["raise", "skip"] = "raise",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    retry: RetryPolicy | None = None,
    api: Any = None,
    token: str | None = None,
    columns: dict[str, str] | None = None,
) -> list[tuple[str, pl.LazyFrame]]:
    """:func:`scan` as one ``(name, LazyFrame)`` per cache shard or data file, for per-piece progress.

    Concatenating the frames in order gives :func:`scan`'s result (``columns``
    as there).
    """
    condition = row_filter(normalize_sources(sources), normalize_frames(frames))
    folder = _hub_folder(location, columns)
    if folder is not None:
        parts = [(shard.path, scan_table(path).select(*CANONICAL_SCHEMA)) for shard, path in verify_hub_folder(folder)]
        return [(name, lf if condition is None else lf.filter(condition)) for name, lf in parts]
    place = open_location(location, revision=revision, api=api, token=token, retry=retry)
    if use_cache:
        from chexmask_u_tools.hub.cache import find_cache, shard_files

        found = find_cache(place, cache_dir, sources=sources, frames=frames, columns=columns, masks=masks)
        if found is not None:
            parts = [(shard, pl.scan_parquet(shard, schema=CANONICAL_SCHEMA)) for shard in shard_files(found)]
            return [(name, lf if condition is None else lf.filter(condition)) for name, lf in parts]
    found_files = discover(place)
    check_folder_listing(found_files)
    chosen = found_files.select(sources, frames)
    if not chosen:
        raise InputError(f"no data file matches sources={sources!r} frames={frames!r}\n{found_files.report()}")
    parts = []
    for item in chosen:
        local = place.local_path(item.path)
        if local is not None and item.format != "csv.zst":
            lf = scan_table(
                local, source=item.source, frame=item.frame, masks=masks, on_error=on_error, columns=columns
            ).select(*CANONICAL_SCHEMA)  # a canonical file's extra columns: not in every file, nor in the cache
        else:
            lf = remote_scan(place, item, masks=masks, on_error=on_error, retry=retry, columns=columns)
        parts.append((item.path, lf if condition is None else lf.filter(condition)))
    return parts


def load(
    location: str | os.PathLike | DatasetLocation | None = None,
    *,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    streaming: bool = True,
    batch_size: int = 1024,
    rows: bool = False,
    revision: str | None = None,
    masks: Literal["released", "mean"] = "released",
    on_error: Literal["raise", "skip"] = "raise",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    retry: RetryPolicy | None = None,
    api: Any = None,
    token: str | None = None,
    columns: dict[str, str] | None = None,
) -> Iterator[pl.DataFrame] | Iterator[dict] | pl.DataFrame:
    """Canonical rows of a location, streamed with bounded memory.

    Parameters
    ----------
    streaming:
        True: return an iterator (nothing is read until it is consumed);
        False: return one collected ``DataFrame`` (``scan(...).collect()``).
    batch_size:
        Rows per yielded batch (at most; a batch never spans two files).
    rows:
        Yield one ``dict`` per row (column -> Python value; arrays as nested
        lists) instead of ``DataFrame`` batches.
    cache_dir, use_cache:
        Read a complete local cache of the same revision when one exists
        (see :func:`scan`).
    retry:
        Backoff for transient read errors (default :class:`RetryPolicy`).
    sources, frames, revision, masks, on_error, api, token, columns:
        As in :func:`scan`.

    Yields
    ------
    ``polars.DataFrame`` with :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA`
    and at most ``batch_size`` rows, or ``dict`` rows with ``rows=True``.
    Under ``on_error="skip"`` a :class:`SkippedRowsWarning` per file reports
    the dropped rows once the file is finished.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    if not streaming:
        return scan(
            location,
            sources=sources,
            frames=frames,
            revision=revision,
            masks=masks,
            on_error=on_error,
            cache_dir=cache_dir,
            use_cache=use_cache,
            api=api,
            retry=retry,
            token=token,
            columns=columns,
        ).collect()
    folder = _hub_folder(location, columns)
    if folder is not None:
        batches = _stream_folder(folder, sources, frames, batch_size)
    else:
        place = open_location(location, revision=revision, api=api, token=token, retry=retry)
        batches = _stream(place, sources, frames, batch_size, masks, on_error, cache_dir, use_cache, retry, columns)
    if rows:
        return (row for batch in batches for row in batch.iter_rows(named=True))
    return batches


def _stream_folder(
    folder: Path, sources: Sequence[str] | str | None, frames: Sequence[str] | str | None, batch_size: int
) -> Iterator[pl.DataFrame]:
    condition = row_filter(normalize_sources(sources), normalize_frames(frames))
    for batch in iter_hub_folder_batches(folder, batch_size=batch_size):
        batch = batch if condition is None else batch.filter(condition)
        if batch.height:
            yield batch


def _stream(
    place: DatasetLocation,
    sources: Sequence[str] | str | None,
    frames: Sequence[str] | str | None,
    batch_size: int,
    masks: Literal["released", "mean"],
    on_error: Literal["raise", "skip"],
    cache_dir: str | os.PathLike | None,
    use_cache: bool,
    retry: RetryPolicy | None,
    columns: dict[str, str] | None = None,
) -> Iterator[pl.DataFrame]:
    condition = row_filter(normalize_sources(sources), normalize_frames(frames))
    if use_cache:
        from chexmask_u_tools.hub.cache import find_cache, iter_cache_batches

        found = find_cache(place, cache_dir, sources=sources, frames=frames, columns=columns, masks=masks)
        if found is not None:
            for batch in iter_cache_batches(found, batch_size=batch_size):
                batch = batch if condition is None else batch.filter(condition)
                if batch.height:
                    yield batch
            return
    found_files = discover(place)
    check_folder_listing(found_files)
    chosen = found_files.select(sources, frames)
    if not chosen:
        raise InputError(f"no data file matches sources={sources!r} frames={frames!r}\n{found_files.report()}")
    for item in chosen:
        skipped: dict[str, int] = {}
        total = 0
        pending: list[pl.DataFrame] = []
        pending_rows = 0
        for batch in iter_file_batches(
            place, item, masks=masks, on_error=on_error, retry=retry, skipped=skipped, columns=columns
        ):
            if condition is not None:
                batch = batch.filter(condition)
            total += batch.height
            pending.append(batch)
            pending_rows += batch.height
            while pending_rows >= batch_size:
                merged = pl.concat(pending) if len(pending) > 1 else pending[0]
                yield merged.slice(0, batch_size)
                rest = merged.slice(batch_size)
                pending, pending_rows = ([rest], rest.height) if rest.height else ([], 0)
        if pending_rows:
            yield pl.concat(pending) if len(pending) > 1 else pending[0]
        if skipped:
            warnings.warn(SkippedRowsWarning(item.path, total + sum(skipped.values()), skipped), stacklevel=2)
