"""A local, sharded, canonical parquet cache of CheXmask-U, built once and reused.

:func:`build_cache` reads every selected data file of a location (Hub repo or
local mirror, see :mod:`chexmask_u_tools.hub`) with the streaming reader,
writes the canonical table (fixed-size array columns plus the uncertainty
summary columns) and records what it did in ``manifest.json``.

Directory layout (``root`` is ``cache_dir`` or :func:`default_cache_dir`)::

    root/<location slug>/refs/<requested revision>     commit sha a branch/tag resolved to
    root/<location slug>/<revision>/<selection>/manifest.json
    root/<location slug>/<revision>/<selection>/shard-00000-of-00024.parquet ...
    root/<location slug>/<revision>/<selection>/.parts/   (only while building)

``<selection>`` is ``all`` or names the sources/frames kept.

Sharding rule
-------------
The rows (in file order, files sorted by path) are split into ``n`` shards of
equal size (+-1 row), ``n = multiple * max(1, ceil(rows / (multiple *
target_rows)))`` with ``multiple = 24`` by default, so that ``n`` is divisible
by 1, 2, 3, 4, 6, 8, 12 and 24 workers / ranks: ``datasets``'
``split_dataset_by_node`` then gives every rank whole shards (it falls back to
reading every shard and keeping one row in ``world_size`` otherwise), and
``DataLoader`` workers get equal shares.  ``n_shards=`` overrides the rule.

Safety
------
Every file (part, shard, manifest, ref) is written to a temporary name and
renamed into place, so an interrupted build leaves complete files only: the
manifest (status ``building``), finished per-file parts and finished shards.
Running :func:`build_cache` again resumes: parts and shards that the manifest
records and that exist with the recorded size are not redone.  After a
complete build the parts are deleted and the manifest's status is
``complete``; :func:`find_cache` then finds the cache for the same location,
revision and selection, also offline (``HF_HUB_OFFLINE=1``, through the
``refs`` file), and :func:`~chexmask_u_tools.hub.scan` /
:func:`~chexmask_u_tools.hub.load` use it automatically.

Manifest fields: ``format``, ``version``, ``status``, ``location`` (kind, repo
id and repo type, or root), ``revision`` (commit sha or local fingerprint),
``selection``, ``options``, ``files`` (per source file: path, source, frame,
size, checksum - the Hub's LFS sha256 / git blob id or a computed sha256 -,
rows, skipped rows per reason, part), ``n_shards``, ``shards`` (file, rows,
bytes, sha256), ``rows``, ``schema``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Literal

import polars as pl

from chexmask_u_tools.errors import FileReadError, HubError, InputError
from chexmask_u_tools.hub.discovery import DataFile, discover
from chexmask_u_tools.hub.location import DatasetLocation, HubRepo, RetryPolicy, hub_offline, open_location
from chexmask_u_tools.select.selection import normalize_frames, normalize_sources, row_filter
from chexmask_u_tools.hub.stream import iter_file_batches
from chexmask_u_tools.schema import CANONICAL_SCHEMA

MANIFEST = "manifest.json"
FORMAT = "chexmask-u-tools/cache"
VERSION = 1
DEFAULT_SHARD_MULTIPLE = 24
DEFAULT_TARGET_SHARD_ROWS = 25_000
_ROW_GROUP_ROWS = 1024


def default_cache_dir() -> Path:
    """``$CHEXMASK_U_CACHE``, else ``$XDG_CACHE_HOME/chexmask-u-tools``, else ``~/.cache/chexmask-u-tools``."""
    explicit = os.environ.get("CHEXMASK_U_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chexmask-u-tools"


def shard_count(rows: int, multiple: int = DEFAULT_SHARD_MULTIPLE, target_rows: int = DEFAULT_TARGET_SHARD_ROWS) -> int:
    """Number of shards for ``rows`` rows: the smallest multiple of ``multiple`` giving <= ``target_rows`` per shard."""
    if multiple < 1 or target_rows < 1:
        raise InputError(f"multiple and target_rows must be positive, got {multiple}, {target_rows}")
    return multiple * max(1, math.ceil(rows / (multiple * target_rows)))


def _slug(place: DatasetLocation) -> str:
    if isinstance(place, HubRepo):
        return "datasets--" + place.repo_id.replace("/", "--")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(place.name).name) or "root"
    return f"local--{name}-{hashlib.sha1(place.name.encode()).hexdigest()[:10]}"


def _selection(sources: Sequence[str] | str | None, frames: Sequence[str] | str | None) -> dict:
    wanted_sources, wanted_frames = normalize_sources(sources), normalize_frames(frames)
    return {
        "sources": sorted(wanted_sources) if wanted_sources is not None else None,
        "frames": sorted(wanted_frames) if wanted_frames is not None else None,
    }


def _selection_key(selection: dict) -> str:
    if selection["sources"] is None and selection["frames"] is None:
        return "all"
    sources = "+".join(selection["sources"]) if selection["sources"] is not None else "all-sources"
    frames = "+".join(selection["frames"]) if selection["frames"] is not None else "all-frames"
    return f"{sources}__{frames}"


def _covers(have: dict, want: dict) -> bool:
    for key in ("sources", "frames"):
        if have[key] is None:
            continue
        if want[key] is None or not set(want[key]) <= set(have[key]):
            return False
    return True


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _write_manifest(directory: Path, manifest: dict) -> None:
    _atomic_write_bytes(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a cache directory.

    Raises
    ------
    FileReadError
        No manifest, or one that is not a chexmask-u-tools cache manifest.
    """
    file = Path(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text())
    except FileNotFoundError as error:
        raise FileReadError(f"not a chexmask-u-tools cache (no {MANIFEST}): {str(path)!r}") from error
    except (OSError, ValueError) as error:
        raise FileReadError(f"unreadable cache manifest {str(file)!r}: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FileReadError(f"{str(file)!r} is not a chexmask-u-tools cache manifest")
    return manifest


def _ref_file(root: Path, place: DatasetLocation) -> Path | None:
    requested = place.requested_revision
    if requested is None:
        return None
    return root / _slug(place) / "refs" / urllib.parse.quote(requested, safe="")


def _cached_revision(root: Path, place: DatasetLocation) -> str | None:
    """The revision to look for: resolved online when possible, else from the refs file."""
    ref = _ref_file(root, place)
    if isinstance(place, HubRepo) and hub_offline():
        if re.fullmatch(r"[0-9a-f]{40}", place.requested_revision):
            return place.requested_revision
        return ref.read_text().strip() if ref is not None and ref.is_file() else None
    try:
        return place.revision
    except HubError:
        # The Hub is unreachable: fall back to what this revision name resolved to last time.
        if ref is not None and ref.is_file():
            return ref.read_text().strip()
        raise


def find_cache(
    location: str | os.PathLike | DatasetLocation | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    revision: str | None = None,
) -> Path | None:
    """The directory of a complete cache of ``location`` covering the selection, or None.

    For a Hub repo under ``HF_HUB_OFFLINE=1`` the revision name is looked up in
    the cache's ``refs`` (written by :func:`build_cache`), so nothing contacts the Hub.
    """
    place = open_location(location, revision=revision)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not (root / _slug(place)).is_dir():
        return None
    sha = _cached_revision(root, place)
    if sha is None:
        return None
    revision_dir = root / _slug(place) / sha
    if not revision_dir.is_dir():
        return None
    want = _selection(sources, frames)
    candidates = sorted(revision_dir.iterdir(), key=lambda p: (p.name != "all", p.name))
    for candidate in candidates:
        if not (candidate / MANIFEST).is_file():
            continue
        try:
            manifest = read_manifest(candidate)
        except FileReadError:
            continue
        if manifest.get("status") == "complete" and _covers(manifest["selection"], want):
            return candidate
    return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _arrow_schema():
    return pl.DataFrame(schema=CANONICAL_SCHEMA).to_arrow().schema


def _progress(enabled: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, dynamic_ncols=True, **kwargs)


def _write_part(
    place: DatasetLocation,
    item: DataFile,
    target: Path,
    *,
    masks: str,
    on_error: str,
    retry: RetryPolicy | None,
    condition: pl.Expr | None,
    advance: Callable[[int], None],
) -> tuple[int, dict[str, int]]:
    """Stream one source file into a canonical parquet part (atomically). Returns (rows, skipped)."""
    import pyarrow.parquet as pq

    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    rows = 0
    skipped: dict[str, int] = {}
    try:
        # Parts are temporary: lz4 writes faster than zstd; the shards are zstd.
        with pq.ParquetWriter(temporary, _arrow_schema(), compression="lz4") as writer:
            for batch in iter_file_batches(place, item, masks=masks, on_error=on_error, retry=retry, skipped=skipped):
                if condition is not None:
                    # Files that name no source hold rows of several; keep the selected ones.
                    batch = batch.filter(condition)
                writer.write_table(batch.to_arrow(), row_group_size=_ROW_GROUP_ROWS)
                rows += batch.height
                advance(batch.height)
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()
    return rows, skipped


def _row_range(parts: list[Path], start: int, stop: int) -> Iterator[Any]:
    """Arrow tables holding rows ``[start, stop)`` of the concatenated parts, reading only the row groups needed."""
    import pyarrow.parquet as pq

    offset = 0
    for part in parts:
        handle = pq.ParquetFile(part)
        for group in range(handle.num_row_groups):
            low = offset
            offset += handle.metadata.row_group(group).num_rows
            if offset <= start:
                continue
            if low >= stop:
                return
            table = handle.read_row_group(group)
            first = max(start, low)
            yield table.slice(first - low, min(stop, offset) - first)


def _write_shard(parts: list[Path], start: int, stop: int, target: Path) -> None:
    """Write rows ``[start, stop)`` of the parts as one shard (row groups of about ``_ROW_GROUP_ROWS``), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with pq.ParquetWriter(temporary, _arrow_schema(), compression="zstd") as writer:
            pending, pending_rows = [], 0
            for table in _row_range(parts, start, stop):
                pending.append(table)
                pending_rows += table.num_rows
                if pending_rows >= _ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=_ROW_GROUP_ROWS)
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=_ROW_GROUP_ROWS)
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def _run_parallel(
    work: Callable[..., Any], keys: list[tuple], finish: Callable[[tuple, Any], None], workers: int
) -> None:
    """Run ``work(*key)`` for every key on ``workers`` threads, calling ``finish(key, result)`` here as each ends.

    On the first error (from ``work`` or ``finish``) queued jobs are cancelled, running
    ones are awaited (each writes its own file atomically, so nothing is half-written)
    and the error propagates.
    """
    if workers <= 1:
        for key in keys:
            finish(key, work(*key))
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(work, *key): key for key in keys}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fresh_manifest(place: DatasetLocation, revision: str, selection: dict, options: dict, files: list[dict]) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "status": "building",
        "location": place.describe(),
        "revision": revision,
        "selection": selection,
        "options": options,
        "files": files,
        "n_shards": None,
        "shards": {},
        "rows": None,
        "schema": {name: str(dtype) for name, dtype in CANONICAL_SCHEMA.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _resumable(manifest: dict, fresh: dict) -> bool:
    keys = ("revision", "selection", "options")
    if any(manifest.get(key) != fresh[key] for key in keys):
        return False
    old = [(f["path"], f["checksum"]) for f in manifest.get("files", [])]
    return old == [(f["path"], f["checksum"]) for f in fresh["files"]]


def build_cache(
    location: str | os.PathLike | DatasetLocation | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    n_shards: int | None = None,
    shard_multiple: int = DEFAULT_SHARD_MULTIPLE,
    target_shard_rows: int = DEFAULT_TARGET_SHARD_ROWS,
    masks: Literal["released", "mean"] = "released",
    on_error: Literal["raise", "skip"] = "raise",
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
    retry: RetryPolicy | None = None,
    api: Any = None,
    token: str | None = None,
    on_event: Callable[[str, str], None] | None = None,
) -> Path:
    """Convert a location's data files once into a sharded canonical parquet cache.

    Parameters
    ----------
    location, revision, api, token:
        See :func:`~chexmask_u_tools.hub.open_location`.
    cache_dir:
        Cache root (default :func:`default_cache_dir`).
    sources, frames:
        Cache only these (the selection is part of the cache's directory name).
    n_shards, shard_multiple, target_shard_rows:
        See the module's sharding rule; ``n_shards`` overrides it.
    masks, on_error:
        See :func:`~chexmask_u_tools.io.table.scan_table`; skipped rows are
        counted per file in the manifest.
    force:
        Rebuild even when a complete cache exists.
    progress:
        Show tqdm progress bars (rows/s while converting, shards while sharding).
    workers:
        Files converted / shards written at the same time (threads; default
        ``min(4, cpu count)``).  Each stream holds its own bounded buffers.
    retry:
        Backoff for transient read errors.
    on_event:
        Called as ``on_event(kind, name)`` after each finished ``"part"``
        (one source file converted) and ``"shard"``; an exception raised
        there interrupts the build like a crash would (used by tests).

    Returns
    -------
    The cache directory (holding ``manifest.json`` and the shards); read it
    with :func:`open_cache`.

    Raises
    ------
    HubError, FileReadError, SchemaError, RecordError
        From reading the source files (the manifest and finished parts are
        kept, so a later call resumes).
    """
    if n_shards is not None and n_shards < 1:
        raise InputError(f"n_shards must be positive, got {n_shards}")
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    place = open_location(location, revision=revision, api=api, token=token)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    selection = _selection(sources, frames)
    if hub_offline() and not force:
        # Offline the Hub cannot be listed; a complete cache of this revision name is the answer.
        cached = find_cache(place, root, sources=sources, frames=frames)
        if cached is not None:
            return cached
    found = discover(place)
    chosen = found.select(sources, frames)
    if not chosen:
        raise InputError(f"no data file matches sources={sources!r} frames={frames!r}\n{found.report()}")
    directory = root / _slug(place) / found.revision / _selection_key(selection)
    directory.mkdir(parents=True, exist_ok=True)
    ref = _ref_file(root, place)
    if ref is not None:
        ref.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(ref, found.revision.encode())

    options = {
        "masks": masks,
        "on_error": on_error,
        "n_shards": n_shards,
        "shard_multiple": shard_multiple,
        "target_shard_rows": target_shard_rows,
    }
    entries = {entry.path: entry for entry in place.list_files()}
    files = [
        {
            "path": item.path,
            "source": item.source,
            "frame": item.frame,
            "size": item.size,
            "checksum": place.file_checksum(entries[item.path]),
            "rows": None,
            "skipped": {},
            "part": None,
        }
        for item in chosen
    ]
    fresh = _fresh_manifest(place, found.revision, selection, options, files)
    manifest = fresh
    if (directory / MANIFEST).is_file() and not force:
        try:
            existing = read_manifest(directory)
        except FileReadError:
            existing = None
        if existing is not None and existing.get("status") == "complete" and _resumable(existing, fresh):
            return directory
        if existing is not None and existing.get("status") == "building" and _resumable(existing, fresh):
            manifest = existing
    if manifest is fresh:
        for stale in directory.iterdir():
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        _write_manifest(directory, manifest)
    parts_dir = directory / ".parts"
    parts_dir.mkdir(exist_ok=True)
    condition = row_filter(normalize_sources(sources), normalize_frames(frames))

    # Phase 1: each source file -> one canonical part (resumable per file).  Files are
    # converted in parallel threads (polars and pyarrow release the GIL); the manifest is
    # only written from this thread, after a part is complete.
    with _progress(progress, desc="converting", unit="rows", unit_scale=True) as bar:
        lock = threading.Lock()

        def advance(rows: int) -> None:
            with lock:
                bar.update(rows)

        jobs = {}
        for index, (item, record) in enumerate(zip(chosen, manifest["files"])):
            part = parts_dir / f"part-{index:05d}.parquet"
            if record["part"] is not None and part.is_file() and part.stat().st_size == record["part"]["bytes"]:
                advance(record["rows"])
            else:
                jobs[(item, part)] = record

        def convert(item: DataFile, part: Path) -> tuple[int, dict[str, int]]:
            return _write_part(
                place, item, part, masks=masks, on_error=on_error, retry=retry, condition=condition, advance=advance
            )

        def finish_part(key: tuple[DataFile, Path], result: tuple[int, dict[str, int]]) -> None:
            (item, part), (rows, skipped) = key, result
            jobs[key].update(rows=rows, skipped=skipped, part={"file": part.name, "bytes": part.stat().st_size})
            _write_manifest(directory, manifest)
            if on_event is not None:
                on_event("part", item.path)

        _run_parallel(convert, list(jobs), finish_part, workers)

    # Phase 2: the concatenated parts -> equal-sized shards (resumable per shard).
    total = sum(record["rows"] for record in manifest["files"])
    if manifest["n_shards"] is None:
        manifest["n_shards"] = n_shards or shard_count(total, shard_multiple, target_shard_rows)
        manifest["rows"] = total
        _write_manifest(directory, manifest)
    count = manifest["n_shards"]
    parts = [parts_dir / record["part"]["file"] for record in manifest["files"]]
    with _progress(progress, desc="sharding", total=count, unit="shard") as bar:
        todo = []
        for k in range(count):
            name = f"shard-{k:05d}-of-{count:05d}.parquet"
            done = manifest["shards"].get(name)
            if done is not None and (directory / name).is_file() and (directory / name).stat().st_size == done["bytes"]:
                bar.update(1)
            else:
                todo.append((k, name))

        def write(k: int, name: str) -> dict:
            start, stop = k * total // count, (k + 1) * total // count
            _write_shard(parts, start, stop, directory / name)
            return {"rows": stop - start, "bytes": (directory / name).stat().st_size, "sha256": _sha256_file(directory / name)}

        def finish_shard(key: tuple[int, str], record: dict) -> None:
            manifest["shards"][key[1]] = record
            _write_manifest(directory, manifest)
            bar.update(1)
            if on_event is not None:
                on_event("shard", key[1])

        _run_parallel(write, todo, finish_shard, workers)

    manifest["status"] = "complete"
    manifest["completed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_manifest(directory, manifest)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return directory


def shard_files(path: str | os.PathLike, *, verify: bool = False) -> list[str]:
    """The shard paths of a complete cache, in order, after checking each one.

    Each shard must exist with the recorded size and a readable parquet footer
    holding the recorded number of rows; ``verify=True`` also compares its
    sha256 with the manifest.

    Raises
    ------
    FileReadError
        Incomplete cache, or a missing / truncated / corrupt shard (named).
    """
    import pyarrow.parquet as pq

    directory = Path(path)
    manifest = read_manifest(directory)
    if manifest.get("status") != "complete":
        raise FileReadError(
            f"the cache at {str(directory)!r} is incomplete (status {manifest.get('status')!r}); "
            "run build_cache / `chexmask-u cache` again to resume it"
        )
    paths = []
    for name, record in sorted(manifest["shards"].items()):
        shard = directory / name
        if not shard.is_file():
            raise FileReadError(f"cache shard missing: {str(shard)!r}")
        if shard.stat().st_size != record["bytes"]:
            raise FileReadError(
                f"cache shard {str(shard)!r} has {shard.stat().st_size} bytes, the manifest says {record['bytes']}"
            )
        try:
            rows = pq.read_metadata(shard).num_rows
        except Exception as error:  # pyarrow raises several types for a damaged footer
            raise FileReadError(f"unreadable cache shard {str(shard)!r}: {error}") from error
        if rows != record["rows"]:
            raise FileReadError(f"cache shard {str(shard)!r} has {rows} rows, the manifest says {record['rows']}")
        if verify and _sha256_file(shard) != record["sha256"]:
            raise FileReadError(f"cache shard {str(shard)!r} does not match its sha256 in the manifest")
        paths.append(str(shard))
    return paths


def open_cache(path: str | os.PathLike, *, verify: bool = False) -> pl.LazyFrame:
    """A ``LazyFrame`` with :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA` over a cache's shards.

    Filters on columns (``dice_rca_mean``, ``node_sigma_mean``, ``source``...)
    are pushed into the parquet scan and skip row groups by their statistics.
    See :func:`shard_files` for the checks and ``verify``.
    """
    return pl.scan_parquet(shard_files(path, verify=verify), schema=CANONICAL_SCHEMA)


def iter_cache_batches(path: str | os.PathLike, *, batch_size: int = 1024) -> Iterator[pl.DataFrame]:
    """Canonical batches of at most ``batch_size`` rows read shard by shard (bounded memory)."""
    import pyarrow.parquet as pq

    for shard in shard_files(path):
        try:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size):
                yield pl.from_arrow(batch).cast(dict(CANONICAL_SCHEMA))
        except (OSError, ValueError) as error:
            raise FileReadError(f"unreadable cache shard {shard!r}: {error}") from error


def iterable_dataset(
    path: str | os.PathLike,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    columns: Sequence[str] | None = None,
):
    """A ``datasets.IterableDataset`` streaming the cache's shards, optionally split for one node.

    ``datasets.load_dataset("parquet", data_files=shards, streaming=True)``
    followed by ``datasets.distributed.split_dataset_by_node(ds, rank,
    world_size)``.  When ``n_shards % world_size == 0`` every rank reads whole,
    distinct shards (equal row counts by the sharding rule); otherwise
    ``datasets`` makes every rank read all shards and keep one row in
    ``world_size``, which is correct but reads ``world_size`` times more.
    """
    import datasets
    from datasets.distributed import split_dataset_by_node

    if (rank is None) != (world_size is None):
        raise InputError("give both rank and world_size, or neither")
    dataset = datasets.load_dataset(
        "parquet",
        data_files={"train": shard_files(path)},
        split="train",
        streaming=True,
        columns=list(columns) if columns is not None else None,
    )
    if rank is not None:
        if not 0 <= rank < world_size:
            raise InputError(f"rank must lie in [0, {world_size}), got {rank}")
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return dataset


__all__ = [
    "build_cache",
    "default_cache_dir",
    "find_cache",
    "iter_cache_batches",
    "iterable_dataset",
    "open_cache",
    "read_manifest",
    "shard_count",
    "shard_files",
]
