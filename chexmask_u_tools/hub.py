"""Discover, stream and lazily scan CheXmask-U on the Hugging Face Hub or a local mirror of it.

The dataset repo's file list is not known in advance (SPEC section 1), so
nothing here names a file: a :class:`DatasetLocation` lists the files at one
immutable revision, :func:`discover` classifies them by source and frame from
their paths, and the readers detect each file's columns.

Two kinds of location share one code path:

* :class:`HubRepo` -- the dataset repo ``mcosarinsky/CheXmask-U``
  (``repo_type="dataset"`` always: the model repo has the same id), a
  requested revision (branch, tag or commit) resolved once to its commit sha,
  files opened through ``huggingface_hub.HfFileSystem`` and scanned by polars
  as ``hf://datasets/{repo}@{sha}/{path}``.
* :class:`LocalMirror` -- a directory laid out like the repo (what the tests
  use, and what users with a downloaded copy use).  Its revision is a
  fingerprint of the file listing (paths, sizes, modification times).

Readers
-------
:func:`scan`
    A polars ``LazyFrame`` of the canonical table over every selected file
    (built on :func:`chexmask_u_tools.table.scan_table`), so that filters and
    column selections are pushed into the scans.  When a complete local cache
    of the same revision exists (:mod:`chexmask_u_tools.cache`) the scan reads
    the cache instead.
:func:`load`
    Streams canonical rows with bounded memory: yields ``polars.DataFrame``
    batches of at most ``batch_size`` rows (or one ``dict`` per row with
    ``rows=True``).  CSV files are read with pyarrow's incremental CSV reader
    on a file object (``HfFileSystem`` for the Hub), one block at a time, and
    each block (2 MiB of CSV text) is canonicalized on its own, so memory
    depends on the block and batch size, not on the file size (about 300 MiB
    peak RSS for a 209 MB and an 836 MB file alike, see scripts/bench_hub.py).  This was chosen over polars'
    ``scan_csv(...).collect_batches()`` because it also streams ``.csv.xz``
    (polars cannot scan xz) and lets transient network errors be retried at
    the byte offset where they happened; and over ``datasets`` streaming
    because the ``datasets`` CSV builder infers column types per chunk with
    pandas, which cannot honour the per-file column variants.

Faults
------
A read that fails with a transient error (connection reset, timeout, HTTP
error) is retried by reopening the file at the same byte offset, with
exponential backoff (:class:`RetryPolicy`); when the attempts are used up a
:class:`~chexmask_u_tools.errors.HubError` names the file and the offset.  A
revision or repo that does not exist, and a Hub call in offline mode
(``HF_HUB_OFFLINE=1``) without a cache, raise ``HubError`` too.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib
import io
import lzma
import os
import re
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal

import polars as pl

from .errors import CheXmaskUError, FileReadError, HubError, InputError, RecordError, SkippedRowsWarning
from .schema import CANONICAL_SCHEMA, FRAMES, SOURCES
from .table import (
    _TEMP,
    Layout,
    _canonical_passthrough,
    _finish,
    _parsed_frame,
    canonical_source,
    detect_layout,
    infer_frame,
    infer_source,
    scan_table,
)

DEFAULT_REPO = "mcosarinsky/CheXmask-U"
"""The CheXmask-U dataset repo (a *dataset* repo; the model repo has the same id)."""

REPO_TYPE = "dataset"
_DATA_FILE = re.compile(r"\.(csv|csv\.gz|csv\.xz|csv\.zst|csv\.zstd|parquet)$", re.IGNORECASE)
_SHA = re.compile(r"^[0-9a-f]{40}$")


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Exception types worth retrying: OS-level I/O errors and the HTTP client's transport errors."""
    found: list[type[BaseException]] = [OSError, TimeoutError, EOFError]
    for module in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_TRANSIENT = _transient_errors()


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read at call time, not import time)."""
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for transient read errors.

    ``attempts`` reads are tried for one failing position; the wait before
    retry ``k`` (0-based) is ``min(max_delay, base_delay * 2**k)`` seconds.
    ``sleep`` is injectable so tests need not wait.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, retry: int) -> float:
        return min(self.max_delay, self.base_delay * 2.0**retry)


def _with_retries(what: str, call: Callable[[], Any], policy: RetryPolicy) -> Any:
    """Run a Hub request, retrying transient errors, mapping permanent ones to HubError."""
    from huggingface_hub import errors as hf_errors

    for attempt in range(policy.attempts):
        try:
            return call()
        except hf_errors.OfflineModeIsEnabled as error:
            raise HubError(f"{what}: the Hub is offline (HF_HUB_OFFLINE=1) and no local cache was found") from error
        except hf_errors.RevisionNotFoundError as error:
            raise HubError(f"{what}: revision not found ({error})") from error
        except hf_errors.RepositoryNotFoundError as error:
            raise HubError(f"{what}: repository not found or not accessible ({error})") from error
        except FileNotFoundError as error:
            raise HubError(f"{what}: not found ({error})") from error
        except _TRANSIENT as error:
            if attempt + 1 == policy.attempts:
                raise HubError(f"{what}: failed after {policy.attempts} attempts: {error}") from error
            policy.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class RepoEntry:
    """One file of a location: repo-relative POSIX path, size in bytes, and a checksum when known.

    ``checksum`` is ``sha256:<hex>`` (Hub LFS/xet files, or computed locally) or
    ``git-sha1:<blob id>`` (small Hub files stored in git).
    """

    path: str
    size: int | None
    checksum: str | None = None


class DatasetLocation(ABC):
    """Where the dataset's files live: a Hub dataset repo or a local directory laid out like it."""

    kind: str

    @property
    @abstractmethod
    def name(self) -> str:
        """Human-readable identity (repo id or directory)."""

    @property
    @abstractmethod
    def revision(self) -> str:
        """Immutable identity of the content: commit sha (Hub) or listing fingerprint (local)."""

    @property
    def requested_revision(self) -> str | None:
        """What the user asked for (``main``, a tag...), before resolution; None for local mirrors."""
        return None

    @abstractmethod
    def list_files(self) -> list[RepoEntry]:
        """Every file at :attr:`revision`, sorted by path."""

    @abstractmethod
    def url_for(self, path: str) -> str:
        """A URL (``hf://...@sha/...``) or local path that polars / fsspec can read."""

    @abstractmethod
    def open(self, path: str) -> BinaryIO:
        """A seekable binary file object for one file (raw bytes, not decompressed)."""

    @property
    def storage_options(self) -> dict | None:
        """Options for polars / fsspec when reading :meth:`url_for` URLs."""
        return None

    def file_checksum(self, entry: RepoEntry) -> str | None:
        """The entry's checksum; subclasses may compute it when the listing lacks one."""
        return entry.checksum

    def describe(self) -> dict:
        """JSON-serializable identity, recorded in cache manifests."""
        return {"kind": self.kind, "name": self.name}


class LocalMirror(DatasetLocation):
    """A local directory laid out like the Hub dataset repo.

    Parameters
    ----------
    root:
        The directory.
    fs:
        An fsspec filesystem used by :meth:`open` (default: the local one);
        injectable so tests can simulate flaky reads.
    """

    kind = "local"

    def __init__(self, root: str | os.PathLike, *, fs: Any = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileReadError(f"not a directory: {str(root)!r}")
        if fs is None:
            from fsspec.implementations.local import LocalFileSystem

            fs = LocalFileSystem()
        self._fs = fs
        self._checksums: dict[str, str] = {}

    @property
    def name(self) -> str:
        return str(self.root)

    def list_files(self) -> list[RepoEntry]:
        entries = []
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root).as_posix()
            if path.is_file() and not any(part.startswith(".") for part in PurePosixPath(relative).parts):
                entries.append(RepoEntry(relative, path.stat().st_size, None))
        return entries

    @property
    def revision(self) -> str:
        digest = hashlib.sha256()
        for entry in self.list_files():
            stat = (self.root / entry.path).stat()
            digest.update(f"{entry.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return f"local-{digest.hexdigest()[:20]}"

    def _local_path(self, path: str) -> Path:
        target = (self.root / path).resolve()
        if self.root not in target.parents:
            raise InputError(f"path {path!r} leaves the mirror directory {str(self.root)!r}")
        return target

    def url_for(self, path: str) -> str:
        return str(self._local_path(path))

    def open(self, path: str) -> BinaryIO:
        return self._fs.open(str(self._local_path(path)), "rb")

    def file_checksum(self, entry: RepoEntry) -> str:
        if entry.path not in self._checksums:
            digest = hashlib.sha256()
            with open(self._local_path(entry.path), "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            self._checksums[entry.path] = f"sha256:{digest.hexdigest()}"
        return self._checksums[entry.path]

    def describe(self) -> dict:
        return {"kind": self.kind, "root": str(self.root)}


class HubRepo(DatasetLocation):
    """A Hugging Face Hub dataset repo at a pinned revision.

    Parameters
    ----------
    repo_id:
        ``owner/name`` of the *dataset* repo (default :data:`DEFAULT_REPO`).
    revision:
        Branch, tag or commit; resolved once to the commit sha so that every
        later read sees the same files even if the branch moves.
    api:
        An ``huggingface_hub.HfApi``-like object (``repo_info``,
        ``list_repo_tree``); injectable for tests and custom endpoints.
    fs:
        An fsspec filesystem that understands
        ``datasets/{repo}@{sha}/{path}`` (default ``HfFileSystem``).
    token:
        Hub token for private or gated repos (default: the logged-in one).
    retry:
        Backoff for transient Hub errors.
    """

    kind = "hub"

    def __init__(
        self,
        repo_id: str = DEFAULT_REPO,
        revision: str | None = None,
        *,
        api: Any = None,
        fs: Any = None,
        token: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id):
            raise InputError(f"not a Hub repo id (owner/name): {repo_id!r}")
        self.repo_id = repo_id
        self._requested = revision or "main"
        self._token = token
        self._api = api
        self._fs = fs
        self.retry = retry or RetryPolicy()
        self._sha: str | None = None
        self._listing: list[RepoEntry] | None = None

    @property
    def name(self) -> str:
        return self.repo_id

    @property
    def requested_revision(self) -> str:
        return self._requested

    @property
    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(token=self._token)
        return self._api

    @property
    def fs(self) -> Any:
        if self._fs is None:
            from huggingface_hub import HfFileSystem

            self._fs = HfFileSystem(token=self._token)
        return self._fs

    @property
    def revision(self) -> str:
        if self._sha is None:
            if hub_offline():
                if _SHA.match(self._requested):
                    self._sha = self._requested
                    return self._sha
                raise HubError(
                    f"cannot resolve revision {self._requested!r} of dataset repo {self.repo_id!r}: "
                    "the Hub is offline (HF_HUB_OFFLINE=1) and no local cache records it"
                )
            info = _with_retries(
                f"dataset repo {self.repo_id!r} at revision {self._requested!r}",
                lambda: self.api.repo_info(self.repo_id, repo_type=REPO_TYPE, revision=self._requested),
                self.retry,
            )
            sha = getattr(info, "sha", None)
            if not sha:
                raise HubError(f"the Hub returned no commit sha for {self.repo_id!r}@{self._requested!r}")
            self._sha = sha
        return self._sha

    def list_files(self) -> list[RepoEntry]:
        if self._listing is None:
            sha = self.revision
            if hub_offline():
                raise HubError(
                    f"cannot list dataset repo {self.repo_id!r}: the Hub is offline (HF_HUB_OFFLINE=1) "
                    "and no local cache was found"
                )
            tree = _with_retries(
                f"listing dataset repo {self.repo_id!r}@{sha}",
                lambda: list(self.api.list_repo_tree(self.repo_id, recursive=True, repo_type=REPO_TYPE, revision=sha)),
                self.retry,
            )
            entries = []
            for item in tree:
                if not hasattr(item, "blob_id"):  # a folder
                    continue
                lfs = getattr(item, "lfs", None)
                lfs_sha = getattr(lfs, "sha256", None) if lfs is not None else None
                checksum = f"sha256:{lfs_sha}" if lfs_sha else f"git-sha1:{item.blob_id}"
                entries.append(RepoEntry(item.path, getattr(item, "size", None), checksum))
            self._listing = sorted(entries, key=lambda e: e.path)
        return list(self._listing)

    def _fs_path(self, path: str) -> str:
        if ".." in PurePosixPath(path).parts:
            raise InputError(f"path {path!r} leaves the repo")
        return f"datasets/{self.repo_id}@{self.revision}/{path}"

    def url_for(self, path: str) -> str:
        return f"hf://{self._fs_path(path)}"

    def open(self, path: str) -> BinaryIO:
        return self.fs.open(self._fs_path(path), "rb")

    @property
    def storage_options(self) -> dict | None:
        return {"token": self._token} if self._token else None

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "repo_id": self.repo_id,
            "repo_type": REPO_TYPE,
            "requested_revision": self._requested,
        }


def open_location(
    location: str | os.PathLike | DatasetLocation | None = None,
    *,
    revision: str | None = None,
    api: Any = None,
    token: str | None = None,
) -> DatasetLocation:
    """Turn a user's location into a :class:`DatasetLocation`.

    ``None`` is the CheXmask-U dataset repo; an existing directory is a
    :class:`LocalMirror` (a local directory wins over a repo id of the same
    spelling); ``owner/name``, ``hf://datasets/owner/name`` or
    ``hf://datasets/owner/name@rev`` is a :class:`HubRepo`.
    """
    if isinstance(location, DatasetLocation):
        return location
    if location is None:
        return HubRepo(DEFAULT_REPO, revision, api=api, token=token)
    text = os.fspath(location)
    if os.path.isdir(text):
        return LocalMirror(text)
    match = re.fullmatch(r"(?:hf://)?(?:datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@([^/]+))?/?", text)
    if match and not os.path.exists(text):
        if match.group(2) and revision and match.group(2) != revision:
            raise InputError(f"two revisions given: {match.group(2)!r} in {text!r} and revision={revision!r}")
        return HubRepo(match.group(1), revision or match.group(2), api=api, token=token)
    raise InputError(f"{text!r} is neither a directory nor a Hub dataset repo id (owner/name)")


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class DataFile:
    """A data file found in a location.

    ``source`` is None when the path names no source (e.g. physician files whose
    rows carry a ``Dataset`` column); ``frame`` is None when the path names no
    frame (read as ``preprocessed``, see :func:`~chexmask_u_tools.table.detect_layout`).
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
        wanted_sources = _normalize_sources(sources)
        wanted_frames = _normalize_frames(frames)
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


def _normalize_sources(sources: Sequence[str] | str | None) -> set[str] | None:
    if sources is None:
        return None
    if isinstance(sources, str):
        sources = [sources]
    names = set()
    for name in sources:
        canonical = canonical_source(name)
        if canonical is None:
            raise InputError(f"unknown source {name!r}; expected one of {SOURCES}")
        names.add(canonical)
    return names


def _normalize_frames(frames: Sequence[str] | str | None) -> set[str] | None:
    if frames is None:
        return None
    if isinstance(frames, str):
        frames = [frames]
    for frame in frames:
        if frame not in FRAMES:
            raise InputError(f"unknown frame {frame!r}; expected one of {FRAMES}")
    return set(frames)


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
        match = _DATA_FILE.search(entry.path)
        if match is None:
            others.append(entry.path)
            continue
        source, frame = classify(entry.path)
        files.append(DataFile(entry.path, source, frame, match.group(1).lower(), entry.size, entry.checksum))
    return Discovery(place, sha, tuple(files), tuple(others))


# --------------------------------------------------------------------------- lazy scan


def _row_filter(sources: set[str] | None, frames: set[str] | None) -> pl.Expr | None:
    conditions = []
    if sources is not None:
        conditions.append(pl.col("source").is_in(sorted(sources)))
    if frames is not None:
        conditions.append(pl.col("frame").is_in(sorted(frames)))
    if not conditions:
        return None
    return pl.all_horizontal(conditions)


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
    api: Any = None,
    token: str | None = None,
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
        See :func:`~chexmask_u_tools.table.scan_table`.
    cache_dir, use_cache:
        When ``use_cache`` and a complete cache of this revision covering the
        selection exists under ``cache_dir`` (default
        :func:`~chexmask_u_tools.cache.default_cache_dir`), read it instead of
        the source files; this also works offline (``HF_HUB_OFFLINE=1``).
    api, token:
        See :class:`HubRepo`.

    Returns
    -------
    ``LazyFrame`` with :data:`~chexmask_u_tools.schema.CANONICAL_SCHEMA`.
    """
    place = open_location(location, revision=revision, api=api, token=token)
    if use_cache:
        from .cache import find_cache, open_cache

        found = find_cache(place, cache_dir, sources=sources, frames=frames)
        if found is not None:
            condition = _row_filter(_normalize_sources(sources), _normalize_frames(frames))
            lf = open_cache(found)
            return lf if condition is None else lf.filter(condition)
    parts = scan_parts(
        place,
        sources=sources,
        frames=frames,
        masks=masks,
        on_error=on_error,
        use_cache=False,
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
    api: Any = None,
    token: str | None = None,
) -> list[tuple[str, pl.LazyFrame]]:
    """:func:`scan` as one ``(name, LazyFrame)`` per cache shard or data file, for per-piece progress.

    Concatenating the frames in order gives :func:`scan`'s result.
    """
    place = open_location(location, revision=revision, api=api, token=token)
    condition = _row_filter(_normalize_sources(sources), _normalize_frames(frames))
    if use_cache:
        from .cache import find_cache, shard_files

        found = find_cache(place, cache_dir, sources=sources, frames=frames)
        if found is not None:
            parts = [(shard, pl.scan_parquet(shard, schema=CANONICAL_SCHEMA)) for shard in shard_files(found)]
            return [(name, lf if condition is None else lf.filter(condition)) for name, lf in parts]
    found_files = discover(place)
    chosen = found_files.select(sources, frames)
    if not chosen:
        raise InputError(f"no data file matches sources={sources!r} frames={frames!r}\n{found_files.report()}")
    parts = []
    for item in chosen:
        lf = scan_table(
            place.url_for(item.path),
            source=item.source,
            frame=item.frame,
            masks=masks,
            on_error=on_error,
            storage_options=place.storage_options,
        )
        parts.append((item.path, lf if condition is None else lf.filter(condition)))
    return parts


# --------------------------------------------------------------------------- streaming


class RetryingReader(io.RawIOBase):
    """A read-only, seekable raw stream over ``opener()`` that survives transient errors.

    On a transient error the underlying file is closed, the policy's delay is
    slept, the file is reopened and positioned at the current offset, and the
    read is tried again; after ``policy.attempts`` consecutive failures at one
    offset :class:`HubError` names the file and the offset.
    """

    def __init__(self, opener: Callable[[], BinaryIO], name: str, policy: RetryPolicy | None = None) -> None:
        super().__init__()
        self._opener = opener
        self.name_in_repo = name
        self._policy = policy or RetryPolicy()
        self._handle: BinaryIO | None = None
        self._position = 0
        self._size: int | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _call(self, operation: Callable[[BinaryIO], Any]) -> Any:
        for attempt in range(self._policy.attempts):
            try:
                if self._handle is None:
                    self._handle = self._opener()
                    if self._position:
                        self._handle.seek(self._position)
                return operation(self._handle)
            except FileNotFoundError as error:
                raise FileReadError(f"file not found: {self.name_in_repo!r}") from error
            except _TRANSIENT as error:
                self._drop_handle()
                if attempt + 1 == self._policy.attempts:
                    raise HubError(
                        f"reading {self.name_in_repo!r} failed at byte {self._position} "
                        f"after {self._policy.attempts} attempts: {error}"
                    ) from error
                self._policy.sleep(self._policy.delay(attempt))
        raise AssertionError("unreachable")

    def _drop_handle(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except Exception:  # the connection is already broken; closing it may fail too
                pass
            self._handle = None

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._call(lambda handle: handle.read(len(view)))
        n = len(data)
        view[:n] = data
        self._position += n
        return n

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            if self._size is None:
                self._size = self._call(lambda handle: handle.seek(0, io.SEEK_END))
                self._drop_handle()
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target != self._position and self._handle is not None:
            self._handle.seek(target)
        self._position = target
        return target

    def close(self) -> None:
        self._drop_handle()
        super().close()


def _decompressed(raw: io.RawIOBase, path: str) -> BinaryIO:
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if lower.endswith(".xz"):
        return lzma.LZMAFile(buffered, mode="rb")
    if lower.endswith((".zst", ".zstd")):
        import pyarrow as pa

        return io.BufferedReader(_ArrowRaw(pa.CompressedInputStream(pa.PythonFile(buffered, mode="r"), "zstd")))
    return buffered


class _ArrowRaw(io.RawIOBase):
    """Python raw-stream view of a pyarrow input stream (which has no ``readline``)."""

    def __init__(self, native: Any) -> None:
        super().__init__()
        self._native = native

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._native.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._native.close()
        super().close()


def _header(stream: BinaryIO, path: str) -> list[str]:
    """Read the CSV header line and name columns pandas-style (duplicates ``X``, ``X.1``)."""
    line = stream.readline()
    if not line.strip():
        raise FileReadError(f"{path!r} is empty: no CSV header")
    try:
        names = next(csv.reader([line.decode("utf-8-sig").rstrip("\r\n")]))
    except (UnicodeDecodeError, csv.Error) as error:
        raise FileReadError(f"cannot read the header of {path!r}: {error}") from error
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}.{count}")
    return unique


def _is_index_column(name: str) -> bool:
    return name == "" or re.fullmatch(r"Unnamed: \d+|__index_level_\d+__", name) is not None


def canonicalize_batch(
    raw: pl.DataFrame,
    layout: Layout,
    *,
    file: str,
    row_offset: int = 0,
    on_error: Literal["raise", "skip"] = "raise",
) -> tuple[pl.DataFrame, dict[str, int]]:
    """One in-memory batch of a released file's raw columns -> canonical rows.

    Parameters
    ----------
    raw:
        The batch's columns as read (strings or numbers), index columns dropped.
    layout:
        The file's :func:`~chexmask_u_tools.table.detect_layout`.
    file, row_offset:
        For error messages: the file name and the 0-based file row of the
        batch's first row.
    on_error:
        ``raise``: the first bad row raises :class:`RecordError`;
        ``skip``: bad rows are dropped and counted.

    Returns
    -------
    (canonical DataFrame, {reason: rows dropped})
    """
    if layout.canonical:
        return _canonical_passthrough(raw.lazy()).collect(), {}
    parsed = _parsed_frame(raw.lazy(), layout, file).collect()
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
            )
        counts = dict(parsed.filter(bad).group_by(f"{_TEMP}problem").len().iter_rows())
        parsed = parsed.filter(~bad)
    return _finish(parsed.lazy(), layout).collect(), counts


def _csv_batches(stream: BinaryIO, names: list[str], path: str, block_size: int) -> Iterator[pl.DataFrame]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=names, block_size=block_size, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=[""],
        ),
    )
    for batch in reader:
        yield pl.from_arrow(batch)


def _parquet_batches(stream: BinaryIO, batch_rows: int) -> Iterator[pl.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(stream).iter_batches(batch_size=batch_rows):
        yield pl.from_arrow(batch)


def iter_file_batches(
    location: DatasetLocation,
    item: DataFile,
    *,
    masks: Literal["released", "mean"] = "released",
    on_error: Literal["raise", "skip"] = "raise",
    block_size: int = 2 << 20,
    retry: RetryPolicy | None = None,
    skipped: dict[str, int] | None = None,
) -> Iterator[pl.DataFrame]:
    """Canonical batches of one data file, read incrementally (one CSV block / parquet batch at a time).

    ``block_size`` is the CSV text (after decompression) parsed per step; the
    default 2 MiB keeps the process flat at about 250 MiB on 20 kB rows
    (8 MiB blocks are barely faster and let allocator caches grow).

    ``skipped`` (when given) accumulates {reason: count} of rows dropped under
    ``on_error="skip"``.

    Raises
    ------
    SchemaError
        The columns match no known variant.
    FileReadError
        Truncated, corrupt or undecodable file (named).
    HubError
        Repeated network failure while reading (named, with the byte offset).
    RecordError
        A bad row with ``on_error="raise"``.
    """
    import pyarrow as pa

    policy = retry or getattr(location, "retry", None) or RetryPolicy()
    raw = RetryingReader(lambda: location.open(item.path), item.path, policy)
    stream = _decompressed(raw, item.path)
    offset = 0
    try:
        if item.format == "parquet":
            batches = _parquet_batches(stream, max(1, block_size // 20_000))
            columns = None
        else:
            columns = _header(stream, item.path)
            batches = _csv_batches(stream, columns, item.path, block_size)
        layout = None
        for batch in batches:
            drop = [c for c in batch.columns if _is_index_column(c)]
            if drop:
                batch = batch.drop(drop)
            if layout is None:
                layout = detect_layout(
                    batch.columns, file_name=item.path, source=item.source, frame=item.frame, masks=masks
                )
            canonical, counts = canonicalize_batch(batch, layout, file=item.path, row_offset=offset, on_error=on_error)
            offset += batch.height
            if skipped is not None:
                for reason, count in counts.items():
                    skipped[reason] = skipped.get(reason, 0) + count
            if canonical.height:
                yield canonical
        if layout is None and columns is not None:
            # A header and no rows: still check the variant, then yield nothing.
            detect_layout(
                [c for c in columns if not _is_index_column(c)],
                file_name=item.path,
                source=item.source,
                frame=item.frame,
                masks=masks,
            )
    except CheXmaskUError:
        raise
    except (pa.ArrowInvalid, pa.ArrowException, EOFError, lzma.LZMAError, gzip.BadGzipFile, OSError, ValueError) as error:
        raise FileReadError(f"cannot read {item.path!r} after row {offset}: {error}") from error
    finally:
        stream.close()
        raw.close()


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
    others:
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
            token=token,
        ).collect()
    place = open_location(location, revision=revision, api=api, token=token)
    batches = _stream(place, sources, frames, batch_size, masks, on_error, cache_dir, use_cache, retry)
    if rows:
        return (row for batch in batches for row in batch.iter_rows(named=True))
    return batches


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
) -> Iterator[pl.DataFrame]:
    condition = _row_filter(_normalize_sources(sources), _normalize_frames(frames))
    if use_cache:
        from .cache import find_cache, iter_cache_batches

        found = find_cache(place, cache_dir, sources=sources, frames=frames)
        if found is not None:
            for batch in iter_cache_batches(found, batch_size=batch_size):
                batch = batch if condition is None else batch.filter(condition)
                if batch.height:
                    yield batch
            return
    found_files = discover(place)
    chosen = found_files.select(sources, frames)
    if not chosen:
        raise InputError(f"no data file matches sources={sources!r} frames={frames!r}\n{found_files.report()}")
    for item in chosen:
        skipped: dict[str, int] = {}
        total = 0
        pending: list[pl.DataFrame] = []
        pending_rows = 0
        for batch in iter_file_batches(place, item, masks=masks, on_error=on_error, retry=retry, skipped=skipped):
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


__all__ = [
    "DEFAULT_REPO",
    "DataFile",
    "DatasetLocation",
    "Discovery",
    "HubRepo",
    "LocalMirror",
    "RepoEntry",
    "RetryPolicy",
    "RetryingReader",
    "canonicalize_batch",
    "classify",
    "discover",
    "hub_offline",
    "iter_file_batches",
    "load",
    "open_location",
    "scan",
    "scan_parts",
]
