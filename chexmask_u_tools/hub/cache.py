"""A local, sharded, canonical parquet cache of CheXmask-U, built once and reused.

:func:`build_cache` reads every selected data file of a location (Hub repo or
local mirror, see :mod:`chexmask_u_tools.hub`) with the streaming reader,
writes the canonical table (fixed-size array columns plus the uncertainty
summary columns) and records what it did in ``manifest.json``
(:class:`~chexmask_u_tools.hub.manifest.Manifest`).

Directory layout (``root`` is ``cache_dir`` or :func:`default_cache_dir`)::

    root/<location key>/refs/<requested revision>     commit sha a branch/tag resolved to
    root/<location key>/<revision>/.<selection>.lock  held while a build runs
    root/<location key>/<revision>/<selection>/manifest.json
    root/<location key>/<revision>/<selection>/shard-00000-of-00024.parquet ...
    root/<location key>/<revision>/<selection>/.verified.json   shards verified since their last change
    root/<location key>/<revision>/<selection>/.parts/   (only while building)

``<selection>`` is ``all`` or names the sources/frames kept, followed by
``__mean-masks`` for a cache of the masks drawn from the mean landmarks
(``masks="mean"``): each mask mode is cached, and found, on its own.

Build steps
-----------
1. *plan* (:func:`_plan`): discover the files, fix the options and decide what
   a resumed build still has to do;
2. *convert* (:func:`_convert`): each source file -> one Arrow part in
   ``.parts/`` (resumable per file; local files are hashed while they are read);
3. *shard* (:func:`_shard`): the concatenated parts -> equal-sized zstd parquet
   shards with page checksums (resumable per shard).

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
* Every file (part, shard, manifest, ref) is written to a temporary name and
  renamed into place, so an interrupted build leaves complete files only.
  Running :func:`build_cache` again resumes: parts and shards that the manifest
  records and that exist with the recorded size are not redone, and the
  temporaries and ``.parts/`` of a killed run are removed.
* One build per cache at a time: a file lock (``filelock``) beside the cache
  makes a second build wait (``lock_timeout=``), then find the finished cache.
* Every read path (:func:`shard_files`, :func:`open_cache`,
  :func:`iter_cache_batches`, and through them ``hub.scan`` / ``hub.load``)
  checks that the manifest lists exactly its shards, that their rows add up,
  and each shard's sha256 - once: a verified shard is stamped in
  ``.verified.json`` with its size, modification and change times and inode,
  and is hashed again only when one of them changes.  A shard damaged on disk
  without any of them changing (bit rot) is still caught by
  :func:`iter_cache_batches` (so ``hub.load`` over a cache), which verifies
  the parquet page checksums; polars and ``datasets`` do not.  Anything wrong
  raises :class:`~chexmask_u_tools.errors.FileReadError` naming the shard.
  Cost (``scripts/bench_hub.py``): the first read hashes every shard (about
  0.3 s per 130 MB on two shared cores); later reads only stat the shards.
* ``refs/<revision name>`` is written once a cache is complete, so offline
  (``HF_HUB_OFFLINE=1``) or while the Hub cannot be reached, the last complete
  cache of that name is found and reused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

import polars as pl

from chexmask_u_tools._atomic import (
    atomic_path,
    atomic_write_bytes,
    remove_stale_temporaries,
)
from chexmask_u_tools.errors import FileReadError, HubError, InputError
from chexmask_u_tools.hub.discovery import DataFile, Discovery, discover
from chexmask_u_tools.hub.location import (
    DatasetLocation,
    RepoEntry,
    RetryPolicy,
    hub_offline,
    open_location,
)
from chexmask_u_tools.hub.manifest import (
    DEFAULT_SHARD_MULTIPLE,
    DEFAULT_TARGET_SHARD_ROWS,
    MANIFEST,
    BuildOptions,
    FileRecord,
    Manifest,
    PartRecord,
    Selection,
    ShardRecord,
    cache_folder,
    read_manifest,
)
from chexmask_u_tools.hub.read import check_folder_listing
from chexmask_u_tools.hub.stream import iter_file_batches
from chexmask_u_tools.io.hub_folder import sha256_file
from chexmask_u_tools.schema import CANONICAL_SCHEMA, RLE_COLUMNS
from chexmask_u_tools.select.selection import (
    normalize_frames,
    normalize_sources,
    row_filter,
)

__all__ = [
    "MANIFEST",
    "Manifest",
    "build_cache",
    "default_cache_dir",
    "find_cache",
    "hub_unreachable",
    "iter_cache_batches",
    "iterable_dataset",
    "open_cache",
    "read_manifest",
    "shard_count",
    "shard_files",
]

STAMPS = ".verified.json"
_ROW_GROUP_ROWS = 1024
# CSV text parsed per step while converting: large enough that the per-batch
# overhead of canonicalizing is small (2 MiB blocks made the build about 15%
# slower), small enough to keep memory bounded (a build of the 20,000-row bench
# mirror with two workers peaked at about 530 MB RSS with 8 MiB, 430 MB with 2 MiB
# and 600 MB with 16 MiB blocks, whatever the file sizes).
_CONVERT_BLOCK_BYTES = 8 << 20

Event = Callable[[str, str], None]


def default_cache_dir() -> Path:
    """``$CHEXMASK_U_CACHE``, else ``$XDG_CACHE_HOME/chexmask-u-tools``, else ``~/.cache/chexmask-u-tools``."""
    explicit = os.environ.get("CHEXMASK_U_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "chexmask-u-tools"


def shard_count(rows: int, multiple: int = DEFAULT_SHARD_MULTIPLE, target_rows: int = DEFAULT_TARGET_SHARD_ROWS) -> int:
    """Number of shards for ``rows`` rows: the smallest multiple of ``multiple`` giving <= ``target_rows`` per shard.

    Examples
    --------
    >>> shard_count(1_000), shard_count(600_001)
    (24, 48)
    """
    if multiple < 1 or target_rows < 1:
        raise InputError(f"multiple and target_rows must be positive, got {multiple}, {target_rows}")
    return multiple * max(1, math.ceil(rows / (multiple * target_rows)))


# ---------------------------------------------------------------------------- finding a cache


def _ref_file(root: Path, place: DatasetLocation) -> Path | None:
    requested = place.requested_revision
    if requested is None:
        return None
    return root / place.cache_key() / "refs" / urllib.parse.quote(requested, safe="")


def hub_unreachable(error: BaseException) -> bool:
    """True when a :class:`HubError` means "the Hub could not answer" (offline, network, 5xx).

    False when the Hub answered and said no (unknown repo or revision, missing
    file, 4xx such as 401/403): serving a cache then would hide the answer.
    The exception's causes are searched.

    Examples
    --------
    >>> down, refused = HubError("listing failed"), HubError("listing failed")
    >>> down.__cause__, refused.__cause__ = ConnectionError("refused"), FileNotFoundError("no such revision")
    >>> hub_unreachable(down), hub_unreachable(refused)
    (True, False)
    """
    from huggingface_hub import errors as hf_errors

    refusals = (
        hf_errors.RepositoryNotFoundError,
        hf_errors.RevisionNotFoundError,
        hf_errors.EntryNotFoundError,
        hf_errors.GatedRepoError,
        FileNotFoundError,
    )
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, hf_errors.OfflineModeIsEnabled):
            return True
        if isinstance(current, refusals):
            return False
        status = getattr(current, "status", None)
        if not isinstance(status, int):
            status = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
            return False
        current = current.__cause__ or current.__context__
    return True


def _recorded_revision(root: Path, place: DatasetLocation) -> str | None:
    """The commit a revision name resolved to when a cache was last built (a commit sha names itself)."""
    if re.fullmatch(r"[0-9a-f]{40}", place.requested_revision or ""):
        return place.requested_revision
    ref = _ref_file(root, place)
    return ref.read_text().strip() if ref is not None and ref.is_file() else None


def _cached_revision(root: Path, place: DatasetLocation) -> str | None:
    """The revision to look for: resolved online when possible, else from the refs file."""
    if place.is_remote and hub_offline():
        return _recorded_revision(root, place)
    try:
        return place.revision
    except HubError as error:
        # The Hub is unreachable: fall back to what this revision name resolved to last time.
        recorded = _recorded_revision(root, place)
        if recorded is not None and hub_unreachable(error):
            return recorded
        raise


def _complete_cache_in(
    revision_dir: Path, want: Selection, columns: dict[str, str] | None = None, masks: str = "released"
) -> Path | None:
    """The complete cache under one revision folder covering ``want`` (``all`` first), or None.

    Only a cache built with the same column mapping ``columns`` and mask mode ``masks`` counts.

    A damaged manifest there raises rather than being passed over: the readers
    would otherwise quietly fall back to the source files, or to another cache.
    """
    if not revision_dir.is_dir():
        return None
    candidates = sorted((p for p in revision_dir.iterdir() if p.is_dir()), key=lambda p: (p.name != "all", p.name))
    for candidate in candidates:
        if not (candidate / MANIFEST).is_file():
            continue
        manifest = read_manifest(candidate)
        if (
            manifest.complete
            and manifest.selection.covers(want)
            and manifest.options.columns == dict(columns or {})
            and manifest.options.masks == masks
        ):
            return candidate
    return None


def find_cache(
    location: str | os.PathLike | DatasetLocation | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    sources: Sequence[str] | str | None = None,
    frames: Sequence[str] | str | None = None,
    revision: str | None = None,
    columns: dict[str, str] | None = None,
    masks: Literal["released", "mean"] = "released",
) -> Path | None:
    """The directory of a complete cache of ``location`` covering the selection, or None.

    Only a cache built with the column mapping ``columns`` (none by default)
    and the mask mode ``masks`` is returned: a cache of files read under
    another mapping holds other rows, and one of the other mask mode other masks.

    For a Hub repo under ``HF_HUB_OFFLINE=1``, or while the Hub cannot be
    reached, the revision name is looked up in the cache's ``refs`` (written by
    :func:`build_cache`), so nothing waits for the Hub.
    """
    place = open_location(location, revision=revision)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not (root / place.cache_key()).is_dir():
        return None
    sha = _cached_revision(root, place)
    if sha is None:
        return None
    if masks not in ("released", "mean"):
        raise InputError(f"masks must be 'released' or 'mean', got {masks!r}")
    return _complete_cache_in(root / place.cache_key() / sha, Selection.from_request(sources, frames), columns, masks)


# ---------------------------------------------------------------------------- integrity


def _stat_identity(stat: os.stat_result) -> dict[str, int]:
    """What changes when a file is rewritten, touched, replaced or copied (``ctime`` cannot be set back)."""
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
    }


# Shards verified by this process, for caches whose directory is read-only.
_VERIFIED_HERE: dict[tuple[str, str], dict[str, int]] = {}
_VERIFIED_LOCK = threading.Lock()


def _read_stamps(directory: Path) -> dict[str, dict]:
    try:
        stamps = json.loads((directory / STAMPS).read_bytes())
    except (OSError, ValueError):
        return {}
    return stamps.get("shards", {}) if isinstance(stamps, dict) else {}


def _write_stamps(directory: Path, stamps: dict[str, dict]) -> None:
    # A stamp only saves work: a lost or unwritable one means hashing again next time.
    with contextlib.suppress(OSError):
        atomic_write_bytes(directory / STAMPS, json.dumps({"version": 1, "shards": stamps}).encode(), fsync=False)


def _verify_shards(directory: Path, manifest: Manifest, mode: Literal["once", "always"]) -> list[str]:
    """Check every shard of a complete cache against the manifest; return their paths in order."""
    fix = "rebuild it with build_cache(..., force=True) / `chexmask-u cache --force`"
    on_disk = {p.name for p in directory.glob("shard-*.parquet")}
    expected = manifest.expected_shards()
    unlisted = sorted(on_disk - set(expected))
    if unlisted:
        raise FileReadError(
            f"the cache at {str(directory)!r} holds shards its manifest does not list: {', '.join(unlisted[:5])}; {fix}"
        )
    stamps = _read_stamps(directory)
    changed = False
    paths = []
    for name in expected:
        record = manifest.shards[name]
        shard = directory / name
        try:
            stat = shard.stat()
        except FileNotFoundError:
            raise FileReadError(f"cache shard missing: {str(shard)!r}; {fix}") from None
        if stat.st_size != record.bytes:
            raise FileReadError(
                f"cache shard {str(shard)!r} has {stat.st_size} bytes, the manifest says {record.bytes}; {fix}"
            )
        identity = {"sha256": record.sha256, **_stat_identity(stat)}
        key = (str(shard), record.sha256)
        if mode == "always" or (stamps.get(name) != identity and _VERIFIED_HERE.get(key) != identity):
            if sha256_file(shard) != record.sha256:
                raise FileReadError(
                    f"cache shard {str(shard)!r} does not match its sha256 in the manifest (damaged on disk); {fix}"
                )
            with _VERIFIED_LOCK:
                _VERIFIED_HERE[key] = identity
            if stamps.get(name) != identity:
                stamps[name] = identity
                changed = True
        paths.append(str(shard))
    if changed:
        _write_stamps(directory, stamps)
    return paths


def shard_files(path: str | os.PathLike, *, verify: Literal["once", "always"] | bool = "once") -> list[str]:
    """The shard paths of a complete cache, in order, after checking them.

    The manifest must be complete and list exactly ``n_shards`` shards whose
    rows add up; no other shard file may lie beside them; each shard must have
    its recorded size and sha256.

    Parameters
    ----------
    verify:
        ``"once"`` (default): hash a shard when it has not been verified since
        its size, modification / change time or inode last changed (stamps in
        ``.verified.json``, and in memory when the directory is read-only);
        ``"always"`` (or ``True``): hash every shard on every call.

    Raises
    ------
    FileReadError
        Incomplete cache, an inconsistent manifest, or a missing / truncated /
        damaged / unlisted shard (named).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from chexmask_u_tools.testing.mirror import build_mirror
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> cache = build_cache(build_mirror(work / "mirror"), work / "cache", n_shards=4, progress=False)
    >>> [pathlib.Path(p).name for p in shard_files(cache)][:2]
    ['shard-00000-of-00004.parquet', 'shard-00001-of-00004.parquet']
    """
    if verify is True:
        verify = "always"
    if verify not in ("once", "always"):
        raise InputError(f"verify must be 'once' or 'always', got {verify!r}")
    directory = Path(path)
    manifest = read_manifest(directory)
    if not manifest.complete:
        raise FileReadError(
            f"the cache at {str(directory)!r} is incomplete (status {manifest.status!r}); "
            "run build_cache / `chexmask-u cache` again to resume it"
        )
    return _verify_shards(directory, manifest, verify)


def open_cache(path: str | os.PathLike, *, verify: Literal["once", "always"] | bool = "once") -> pl.LazyFrame:
    """A ``LazyFrame`` with :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA` over a cache's shards.

    Filters on columns (``dice_rca_mean``, ``node_sigma_mean``, ``source``...)
    are pushed into the parquet scan and skip row groups by their statistics.
    See :func:`shard_files` for the checks and ``verify``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import polars as pl
    >>> from chexmask_u_tools.testing.mirror import build_mirror
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> cache = build_cache(build_mirror(work / "mirror"), work / "cache", n_shards=4, progress=False)
    >>> lf = open_cache(cache)
    >>> lf.filter(pl.col("source") == "Padchest").select(pl.len()).collect().item()
    40
    """
    return pl.scan_parquet(shard_files(path, verify=verify), schema=CANONICAL_SCHEMA)


def iter_cache_batches(path: str | os.PathLike, *, batch_size: int = 1024) -> Iterator[pl.DataFrame]:
    """Canonical batches of at most ``batch_size`` rows read shard by shard (bounded memory).

    The shards are checked as in :func:`shard_files`, and every parquet page's
    CRC is verified while reading (caches of manifest version 2).
    """
    import pyarrow.parquet as pq

    for shard in shard_files(path):
        try:
            handle = pq.ParquetFile(shard, page_checksum_verification=True)
            for batch in handle.iter_batches(batch_size=batch_size):
                yield pl.from_arrow(batch).cast(dict(CANONICAL_SCHEMA))
        except (OSError, ValueError, pl.exceptions.PolarsError) as error:
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


# ---------------------------------------------------------------------------- building: shared pieces


@functools.lru_cache(maxsize=1)
def _arrow_schema():
    return pl.DataFrame(schema=CANONICAL_SCHEMA).to_arrow().schema


def _progress(enabled: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, dynamic_ncols=True, **kwargs)


def _run_parallel(
    work: Callable[..., Any],
    keys: list[tuple],
    finish: Callable[[tuple, Any], None],
    workers: int,
    stop: threading.Event | None = None,
) -> None:
    """Run ``work(*key)`` for every key on ``workers`` threads, calling ``finish(key, result)`` here as each ends.

    On the first error (from ``work`` or ``finish``, or Ctrl-C) queued jobs are
    cancelled, ``stop`` is set (running jobs that watch it end early), running
    ones are awaited (each writes its own file atomically, so nothing is
    half-written) and the error propagates.
    """
    if workers <= 1 or len(keys) <= 1:
        for key in keys:
            finish(key, work(*key))
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(work, *key): key for key in keys}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    except BaseException:
        if stop is not None:
            stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _remove_debris(directory: Path) -> None:
    """Remove the temporaries that killed runs left in the cache and its ``.parts/`` (their writers are dead).

    Called with the build lock held, so no other build is writing here; a
    reader's temporary stamps file is kept while its process lives.
    """
    folders = [directory, directory / ".parts"]
    for folder in folders:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = re.fullmatch(r"\.(.+)\.tmp-\d+.*", entry.name)
            if match:
                remove_stale_temporaries(folder / match.group(1))


@contextlib.contextmanager
def _build_lock(directory: Path, timeout: float | None, notify: Event) -> Iterator[None]:
    """Hold the lock of one cache directory; a second builder waits here (or gives up after ``timeout`` s)."""
    from filelock import FileLock, Timeout

    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_file = directory.parent / f".{directory.name}.lock"
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        notify(
            "wait",
            f"another build of the cache {str(directory)!r} is running (lock {str(lock_file)!r}); waiting"
            + (f" up to {timeout:g} s" if timeout is not None else " for it to finish"),
        )
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise FileReadError(
                f"another build of the cache {str(directory)!r} is still running after {timeout:g} s "
                f"(lock {str(lock_file)!r}); wait for it to finish, or give a longer lock_timeout / --lock-timeout"
            ) from None
    try:
        yield
    finally:
        lock.release()


# ---------------------------------------------------------------------------- step 1: plan


@dataclass(frozen=True)
class _Plan:
    """What a build will produce: the cache directory and the manifest a fresh build starts from."""

    place: DatasetLocation
    chosen: tuple[DataFile, ...]
    directory: Path
    fresh: Manifest


def _plan(
    place: DatasetLocation,
    root: Path,
    discovery: Discovery,
    selection: Selection,
    options: BuildOptions,
    sources: Any,
    frames: Any,
) -> _Plan:
    """The cache directory and the fresh manifest of a build of the selected files."""
    chosen = discovery.select(sources, frames)
    if not chosen:
        raise InputError(f"no data file matches sources={sources!r} frames={frames!r}\n{discovery.report()}")
    directory = root / place.cache_key() / discovery.revision / cache_folder(selection, options)
    files = [
        # The listing's checksum when it has one (the Hub's); local files are hashed while converting.
        FileRecord(path=item.path, source=item.source, frame=item.frame, size=item.size, checksum=item.checksum)
        for item in chosen
    ]
    fresh = Manifest(
        location=place.describe(), revision=discovery.revision, selection=selection, options=options, files=files
    )
    return _Plan(place, tuple(chosen), directory, fresh)


def _resumable(existing: Manifest, fresh: Manifest) -> bool:
    """Same revision, selection, options and source files (a file's checksum counts when the listing has one).

    An unfinished build of an older manifest version is not resumed: its parts have another format.
    """
    if not existing.complete and existing.version != fresh.version:
        return False
    if (existing.revision, existing.selection, existing.options) != (fresh.revision, fresh.selection, fresh.options):
        return False
    if len(existing.files) != len(fresh.files):
        return False
    return all(
        old.path == new.path and old.size == new.size and (new.checksum is None or old.checksum == new.checksum)
        for old, new in zip(existing.files, fresh.files)
    )


def _starting_manifest(plan: _Plan, force: bool) -> Manifest:
    """The manifest to continue from: the existing one when it records the same build, else a fresh one."""
    directory = plan.directory
    existing = None
    if (directory / MANIFEST).is_file() and not force:
        try:
            existing = read_manifest(directory)
        except FileReadError:
            existing = None
    if existing is not None and _resumable(existing, plan.fresh):
        return existing
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    plan.fresh.write(directory)
    return plan.fresh


# ---------------------------------------------------------------------------- step 2: convert


class _HashingFile:
    """A file object that hashes what is read through it, as long as it is read from the start, in order."""

    def __init__(self, owner: _HashingLocation, handle: BinaryIO) -> None:
        self._owner = owner
        self._handle = handle
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._owner.feed(self._position, data)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._position = self._handle.seek(offset, whence)
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._handle.close()


class _HashingLocation:
    """A location stand-in for one file's conversion: opens through ``place`` and hashes the bytes read.

    Reading a local file once for the checksum and once for the rows doubled
    the disk reads; this computes the sha256 on the conversion's own pass.
    """

    def __init__(self, place: DatasetLocation) -> None:
        self._place = place
        self.retry = getattr(place, "retry", None)
        self._digest = hashlib.sha256()
        self._hashed = 0
        self._in_order = True

    def open(self, path: str) -> _HashingFile:
        return _HashingFile(self, self._place.open(path))

    def feed(self, position: int, data: bytes) -> None:
        if position == self._hashed:
            self._digest.update(data)
            self._hashed += len(data)
        elif position + len(data) > self._hashed:  # a jump forward (or overlap): the digest no longer covers the file
            self._in_order = False

    def checksum(self, item: DataFile) -> str:
        if self._in_order and item.size is not None and self._hashed == item.size:
            return f"sha256:{self._digest.hexdigest()}"
        return self._place.file_checksum(RepoEntry(item.path, item.size, item.checksum))


class _BuildStopped(Exception):
    """A conversion thread was told to stop (the build is being interrupted)."""


class _MeteredFile:
    """A file object that reports the bytes read through it, and stops the read once the build is stopping."""

    def __init__(self, owner: _MeteredLocation, handle: BinaryIO) -> None:
        self._owner = owner
        self._handle = handle

    def read(self, size: int = -1) -> bytes:
        if self._owner.stop.is_set():
            raise _BuildStopped("the build was interrupted")
        data = self._handle.read(size)
        self._owner.count(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()


class _MeteredLocation:
    """A location stand-in for one file's conversion that counts the file's bytes read (for the progress bar's
    total and ETA, which come from the listed file sizes) and lets an interrupted build stop its threads."""

    def __init__(self, place: Any, size: int | None, advance: Callable[[int], None], stop: threading.Event) -> None:
        self._place = place
        self.retry = getattr(place, "retry", None)
        self._size = size
        self._advance = advance
        self.stop = stop
        self.counted = 0

    def open(self, path: str) -> _MeteredFile:
        return _MeteredFile(self, self._place.open(path))

    def count(self, n: int) -> None:
        if self._size is not None:
            n = min(n, self._size - self.counted)  # a retried read may read bytes again: the bar never passes the size
        if n > 0:
            self.counted += n
            self._advance(n)

    def finish(self) -> None:
        """The file is converted: count what was not read through this location (a parquet footer read twice...)."""
        if self._size is not None:
            self.count(self._size - self.counted)


def _write_part(
    place: DatasetLocation,
    item: DataFile,
    target: Path,
    *,
    options: BuildOptions,
    retry: RetryPolicy | None,
    condition: pl.Expr | None,
    advance: Callable[[int], None],
    read_bytes: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> tuple[int, dict[str, int], str | None]:
    """Stream one source file into an Arrow part of fixed-size batches (atomically).

    Returns (rows, skipped rows per reason, sha256 checksum when the listing had none).
    Parts are uncompressed Arrow IPC files: written at disk speed and
    memory-mapped back without decoding or copying (compressing them cost as
    much as compressing the shards, where the canonical strings dominate), at
    the price of about the canonical table's size in temporary disk space.

    ``advance`` is told the rows converted, ``read_bytes`` the file's bytes read
    (summing to its listed size once it is done); once ``stop`` is set the next
    read raises, so an interrupted build does not wait for the whole file.
    """
    import pyarrow as pa

    hashing = _HashingLocation(place) if item.checksum is None else None
    source: Any = hashing or place
    metered = None
    if read_bytes is not None or stop is not None:
        metered = source = _MeteredLocation(source, item.size, read_bytes or (lambda n: None), stop or threading.Event())
    rows = 0
    skipped: dict[str, int] = {}
    schema = _arrow_schema()
    with (
        atomic_path(target, fsync=False) as temporary,
        pa.OSFile(str(temporary), "wb") as sink,
        pa.ipc.new_file(sink, schema) as writer,
    ):
        for batch in iter_file_batches(
            source,
            item,
            masks=options.masks,
            on_error=options.on_error,
            retry=retry,
            skipped=skipped,
            block_size=_CONVERT_BLOCK_BYTES,
            columns=options.columns,
        ):
            if condition is not None:
                # Files that name no source hold rows of several; keep the selected ones.
                batch = batch.filter(condition)
            if batch.height:
                table = batch.to_arrow()
                writer.write_table(table if table.schema == schema else table.cast(schema))
            rows += batch.height
            advance(batch.height)
    if metered is not None:
        metered.finish()
    checksum = hashing.checksum(item) if hashing is not None else None
    return rows, skipped, checksum


def _part_path(directory: Path, index: int) -> Path:
    return directory / ".parts" / f"part-{index:05d}.arrow"


def _part_done(directory: Path, record: FileRecord) -> bool:
    if record.part is None or record.rows is None:
        return False
    part = directory / ".parts" / record.part.file
    return part.is_file() and part.stat().st_size == record.part.bytes


def _convert(
    plan: _Plan,
    manifest: Manifest,
    *,
    retry: RetryPolicy | None,
    workers: int,
    progress: bool,
    notify: Event,
) -> Manifest:
    """Each source file not yet converted -> one part; the manifest is rewritten (from this thread) after each."""
    directory = plan.directory
    (directory / ".parts").mkdir(exist_ok=True)
    condition = row_filter(normalize_sources(manifest.selection.sources), normalize_frames(manifest.selection.frames))
    records = list(manifest.files)
    sizes = [item.size for item in plan.chosen]
    # The bar counts the files' bytes: their listed sizes give it a total, hence a rate and an ETA (rows
    # have no total until every file is read); the rows converted so far are shown beside it.
    total = None if any(size is None for size in sizes) else sum(sizes)
    stop = threading.Event()
    with _progress(
        progress, desc="converting", total=total, unit="B", unit_scale=True, unit_divisor=1024
    ) as bar:
        bar_lock = threading.Lock()
        converted = 0

        def advance(rows: int) -> None:
            nonlocal converted
            with bar_lock:
                converted += rows
                bar.set_postfix_str(f"{converted:,} rows", refresh=False)

        def read_bytes(n: int) -> None:
            with bar_lock:
                bar.update(n)

        todo = []
        for index, (item, record) in enumerate(zip(plan.chosen, records)):
            if _part_done(directory, record):
                advance(record.rows)
                read_bytes(item.size or 0)
            else:
                todo.append((index, item))

        def convert(index: int, item: DataFile) -> tuple[int, dict[str, int], str | None]:
            return _write_part(
                plan.place,
                item,
                _part_path(directory, index),
                options=manifest.options,
                retry=retry,
                condition=condition,
                advance=advance,
                read_bytes=read_bytes,
                stop=stop,
            )

        def finish(key: tuple[int, DataFile], result: tuple[int, dict[str, int], str | None]) -> None:
            nonlocal manifest
            (index, item), (rows, skipped, checksum) = key, result
            part = _part_path(directory, index)
            records[index] = replace(
                records[index],
                rows=rows,
                skipped=skipped,
                checksum=checksum or records[index].checksum,
                part=PartRecord(part.name, part.stat().st_size),
            )
            manifest = replace(manifest, files=list(records))
            manifest.write(directory)
            notify("part", item.path)

        _run_parallel(convert, todo, finish, workers, stop)
    return manifest


# ---------------------------------------------------------------------------- step 3: shard


def _statistics_columns() -> list[str]:
    """Columns worth min/max statistics (filter pushdown): the scalars, not the arrays or the mask strings."""
    return [
        name
        for name, dtype in CANONICAL_SCHEMA.items()
        if name not in RLE_COLUMNS.values() and not isinstance(dtype, (pl.Array, pl.List))
    ]


def _row_batches(parts: list[tuple[Path, int]], start: int, stop: int) -> Iterator[Any]:
    """Arrow record batches holding rows ``[start, stop)`` of the concatenated parts."""
    import pyarrow as pa

    offset = 0
    for part, rows in parts:
        low, offset = offset, offset + rows
        if offset <= start:
            continue
        if low >= stop:
            return
        # Not closed here: the yielded slices point into the map, which lives as long as they do.
        reader = pa.ipc.open_file(pa.memory_map(str(part)))
        batch_low = low
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)  # zero-copy: only its metadata is read here
            batch_high = batch_low + batch.num_rows
            if batch_high > start and batch_low < stop:
                first = max(start, batch_low)
                yield batch.slice(first - batch_low, min(stop, batch_high) - first)
            batch_low = batch_high
            if batch_low >= stop:
                break
        else:
            if batch_low != offset:
                raise FileReadError(
                    f"cache part {str(part)!r} holds {batch_low - low} rows, the manifest says {rows}; "
                    "rebuild with build_cache(..., force=True)"
                )


def _write_shard(parts: list[tuple[Path, int]], start: int, stop: int, target: Path) -> tuple[ShardRecord, dict]:
    """Write rows ``[start, stop)`` of the parts as one zstd parquet shard with page checksums, atomically.

    Returns the shard's record and its verification stamp (hashed while the file is hot in the page cache).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    with atomic_path(target) as temporary:
        # Dictionary pages stay on for every column: they fall back to plain pages on their own and
        # still made the shards 30% smaller on unique masks, for 20% more time.
        with pq.ParquetWriter(
            temporary,
            schema,
            compression="zstd",
            write_statistics=_statistics_columns(),
            write_page_checksum=True,
        ) as writer:
            # Zero-copy views into the memory-mapped parts, copied one row group at a time into
            # contiguous arrays: a row group written from several chunks compressed 1.5x worse.
            rows = pa.Table.from_batches(list(_row_batches(parts, start, stop)), schema)
            for first in range(0, rows.num_rows, _ROW_GROUP_ROWS):
                writer.write_table(rows.slice(first, _ROW_GROUP_ROWS).combine_chunks())
        record = ShardRecord(rows=stop - start, bytes=temporary.stat().st_size, sha256=sha256_file(temporary))
    return record, {"sha256": record.sha256, **_stat_identity(target.stat())}


def _shard(plan: _Plan, manifest: Manifest, *, workers: int, progress: bool, notify: Event) -> Manifest:
    """The parts -> ``n_shards`` equal shards (those not yet written); returns the complete manifest."""
    directory = plan.directory
    total = sum(record.rows for record in manifest.files)
    if manifest.n_shards is None:
        count = manifest.options.n_shards or shard_count(
            total, manifest.options.shard_multiple, manifest.options.target_shard_rows
        )
        manifest = replace(manifest, n_shards=count, rows=total)
        manifest.write(directory)
    count = manifest.n_shards
    shards = dict(manifest.shards)
    stamps = _read_stamps(directory)
    todo = []
    for k, name in enumerate(manifest.expected_shards()):
        done = shards.get(name)
        if done is None or not (directory / name).is_file() or (directory / name).stat().st_size != done.bytes:
            todo.append((k, name))
    with _progress(progress, desc="sharding", total=count, initial=count - len(todo), unit="shard") as bar:
        if todo:
            missing = [record.path for record in manifest.files if not _part_done(directory, record)]
            if missing:
                raise FileReadError(
                    f"cannot finish the cache {str(directory)!r}: the converted parts of {', '.join(missing[:3])} "
                    "are gone; rebuild it with build_cache(..., force=True) / `chexmask-u cache --force`"
                )
        parts = [(directory / ".parts" / record.part.file, record.rows) for record in manifest.files if record.part]

        def write(k: int, name: str) -> tuple[ShardRecord, dict]:
            return _write_shard(parts, k * total // count, (k + 1) * total // count, directory / name)

        def finish(key: tuple[int, str], result: tuple[ShardRecord, dict]) -> None:
            nonlocal manifest
            shards[key[1]], stamps[key[1]] = result
            manifest = replace(manifest, shards=dict(shards))
            manifest.write(directory)
            bar.update(1)
            notify("shard", key[1])

        _run_parallel(write, todo, finish, workers)
    complete = manifest.with_status("complete")
    complete.check_consistent(str(directory / MANIFEST))
    complete.write(directory)
    _write_stamps(directory, stamps)
    return complete


# ---------------------------------------------------------------------------- build_cache


def _finish_complete(directory: Path) -> Path:
    """A complete cache found by a build: clear a killed run's leftovers and check the shards (under the lock)."""
    _remove_debris(directory)
    shutil.rmtree(directory / ".parts", ignore_errors=True)
    shard_files(directory)
    return directory


def _write_ref(root: Path, place: DatasetLocation, revision: str) -> None:
    ref = _ref_file(root, place)
    if ref is not None:
        atomic_write_bytes(ref, revision.encode())


def _reuse_offline(
    place: DatasetLocation,
    root: Path,
    sources: Any,
    frames: Any,
    reason: str,
    lock_timeout: float | None,
    notify: Event,
    error: BaseException | None = None,
    columns: dict[str, str] | None = None,
    masks: str = "released",
) -> Path:
    """The Hub cannot be asked: a complete cache of the recorded revision is the answer, else a HubError."""
    recorded = _recorded_revision(root, place)
    want = Selection.from_request(sources, frames)
    directory = (
        None if recorded is None else _complete_cache_in(root / place.cache_key() / recorded, want, columns, masks)
    )
    if directory is None:
        raise HubError(
            f"{reason}, and no complete cache of {place.name!r} at revision {place.requested_revision!r} "
            f"covering sources={sources!r} frames={frames!r} masks={masks!r} exists under {str(root)!r}: run "
            "`chexmask-u cache` once while the Hub can be reached (or give --cache-dir where it was built)"
        ) from error
    with _build_lock(directory, lock_timeout, notify):
        _finish_complete(directory)
    manifest = read_manifest(directory)
    notify("reuse", f"{reason}: reusing the complete cache of revision {manifest.revision} at {str(directory)!r}")
    return directory


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
    lock_timeout: float | None = None,
    on_event: Event | None = None,
    columns: dict[str, str] | None = None,
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
        counted per file in the manifest.  Each mask mode is cached in its own
        folder, and the readers use a cache only for the mode they are asked for.
    force:
        Rebuild even when a complete cache exists.
    progress:
        Show tqdm progress bars (rows/s while converting, shards while sharding)
        and say on stderr when waiting for another build.
    workers:
        Files converted / shards written at the same time (threads; default
        ``min(2, cpu count)``).
    retry:
        Backoff for transient read errors.
    lock_timeout:
        Seconds to wait for another build of the same cache to finish before
        giving up with :class:`FileReadError` (default: wait as long as it runs).
    on_event:
        Called as ``on_event(kind, detail)``: ``"plan"`` (the discovery
        report), ``"wait"`` (another build holds the lock), ``"reuse"`` (the
        Hub is offline or unreachable and a complete cache is reused; says
        which), ``"part"`` (a source file converted, its path) and ``"shard"``
        (a shard written, its name).  An exception raised there interrupts the
        build like a crash would (used by tests).
    columns:
        ``{"their name": "known name"}`` for data files whose column names no
        reader knows (see :func:`~chexmask_u_tools.io.table.map_columns`).
        It is recorded in the manifest's options: a cache built under one
        mapping is rebuilt, not reused, for another, and the readers
        (:func:`~chexmask_u_tools.hub.read.scan` ``columns=``) read it only
        when asked for the same mapping.

    Returns
    -------
    The cache directory (holding ``manifest.json`` and the shards); read it
    with :func:`open_cache`.

    Raises
    ------
    HubError
        The Hub cannot be reached (or ``HF_HUB_OFFLINE=1``) and no complete
        cache of the recorded revision exists; or the Hub refuses the repo,
        revision or a file.
    FileReadError, SchemaError, RecordError
        From reading the source files (the manifest and finished parts are
        kept, so a later call resumes); another build still running after
        ``lock_timeout``; a damaged complete cache.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from chexmask_u_tools.testing.mirror import build_mirror
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> mirror = build_mirror(work / "mirror")
    >>> cache = build_cache(mirror, work / "cache", n_shards=4, progress=False)
    >>> manifest = read_manifest(cache)
    >>> manifest.status, manifest.n_shards, manifest.rows == open_cache(cache).collect().height
    ('complete', 4, True)
    >>> build_cache(mirror, work / "cache", n_shards=4, progress=False) == cache  # built once, then reused
    True
    """
    if n_shards is not None and n_shards < 1:
        raise InputError(f"n_shards must be positive, got {n_shards}")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be positive, got {workers}")
    if lock_timeout is not None and lock_timeout < 0:
        raise InputError(f"lock_timeout must be >= 0 seconds, got {lock_timeout}")
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)

    def notify(kind: str, detail: str) -> None:
        if progress and kind == "wait" and on_event is None:
            print(detail, file=sys.stderr, flush=True)
        if on_event is not None:
            on_event(kind, detail)

    place = open_location(location, revision=revision, api=api, token=token)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    selection = Selection.from_request(sources, frames)
    options = BuildOptions(
        masks=masks, on_error=on_error, n_shards=n_shards, shard_multiple=shard_multiple,
        target_shard_rows=target_shard_rows, columns=dict(columns or {}),
    )
    if place.is_remote and hub_offline() and not force:
        return _reuse_offline(
            place, root, sources, frames, "the Hub is offline (HF_HUB_OFFLINE=1)", lock_timeout, notify,
            columns=columns, masks=masks,
        )
    try:
        discovery = discover(place)
    except HubError as error:
        if force or not place.is_remote or not hub_unreachable(error):
            raise
        return _reuse_offline(
            place, root, sources, frames, f"the Hub could not be reached ({error})", lock_timeout, notify, error,
            columns=columns, masks=masks,
        )
    notify("plan", discovery.report())
    check_folder_listing(discovery)  # a folder written by save_hub_folder: exactly its recorded shards
    plan = _plan(place, root, discovery, selection, options, sources, frames)
    with _build_lock(plan.directory, lock_timeout, notify):
        manifest = _starting_manifest(plan, force)
        if not manifest.complete:
            _remove_debris(plan.directory)
            manifest = _convert(plan, manifest, retry=retry, workers=workers, progress=progress, notify=notify)
            _shard(plan, manifest, workers=workers, progress=progress, notify=notify)
        # Also checks the shards: those written now were stamped as they were hashed, so this reads no shard again.
        _finish_complete(plan.directory)
        _write_ref(root, place, discovery.revision)
    return plan.directory
