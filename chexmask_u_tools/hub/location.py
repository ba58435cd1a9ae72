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
    (built on :func:`chexmask_u_tools.io.table.scan_table`), so that filters and
    column selections are pushed into the scans.  When a complete local cache
    of the same revision exists (:mod:`chexmask_u_tools.hub.cache`) the scan reads
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

import hashlib
import importlib
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO


from chexmask_u_tools.errors import FileReadError, HubError, InputError

__all__ = [
    "DEFAULT_REPO",
    "REPO_TYPE",
    "TRANSIENT_ERRORS",
    "DatasetLocation",
    "HubRepo",
    "LocalMirror",
    "RepoEntry",
    "RetryPolicy",
    "hub_offline",
    "open_location",
    "with_retries",
]

DEFAULT_REPO = "mcosarinsky/CheXmask-U"
"""The CheXmask-U dataset repo (a *dataset* repo; the model repo has the same id)."""

REPO_TYPE = "dataset"
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


TRANSIENT_ERRORS = _transient_errors()


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


def with_retries(what: str, call: Callable[[], Any], policy: RetryPolicy) -> Any:
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
        except TRANSIENT_ERRORS as error:
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

    is_remote: bool = False
    """True when reads go over the network (the Hub): offline mode and outages apply to it."""

    def cache_key(self) -> str:
        """A file-name-safe identity of the location (not of its revision): the folder of its caches."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(self.name).name) or "root"
        return f"local--{name}-{hashlib.sha1(self.name.encode()).hexdigest()[:10]}"


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
    is_remote = True

    def cache_key(self) -> str:
        return "datasets--" + self.repo_id.replace("/", "--")

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
            info = with_retries(
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
            tree = with_retries(
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
