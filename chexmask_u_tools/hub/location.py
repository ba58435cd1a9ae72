"""Discover, stream and lazily scan CheXmask-U on the Hugging Face Hub or a local mirror of it.

The dataset repo's file list is not known in advance (SPEC section 1), so
nothing here names a file: a :class:`DatasetLocation` lists the files at one
immutable revision, :func:`discover` classifies them by source and frame from
their paths, and the readers detect each file's columns.

Two kinds of location share one code path:

* :class:`HubRepo` -- the dataset repo ``mcosarinsky/CheXmask-U``
  (``repo_type="dataset"`` always: the model repo has the same id), a
  requested revision (branch, tag or commit, or the Hub's parquet conversion
  ``refs/convert/parquet``) resolved once to its commit sha, files read over
  HTTP from ``HF_ENDPOINT`` at that sha (see *Transport*).
* :class:`LocalMirror` -- a directory laid out like the repo (what the tests
  use, and what users with a downloaded copy use).  Its revision is a
  fingerprint of the file listing (paths, sizes, modification times).

Readers
-------
:func:`scan`
    A polars ``LazyFrame`` of the canonical table over every selected file, so
    that filters and column selections are pushed into the scans: local files
    through :func:`chexmask_u_tools.io.table.scan_table`, Hub files through the
    streaming reader below (one transport and the same formats -- csv, csv.gz,
    csv.xz, csv.zst, csv.bz2, parquet -- on every path).  When a complete local cache
    of the same revision exists (:mod:`chexmask_u_tools.hub.cache`) the scan reads
    the cache instead.
:func:`load`
    Streams canonical rows with bounded memory: yields ``polars.DataFrame``
    batches of at most ``batch_size`` rows (or one ``dict`` per row with
    ``rows=True``).  CSV files are read with pyarrow's incremental CSV reader
    on a file object (:class:`HubFile` for the Hub), one block at a time, and
    each block (2 MiB of CSV text) is canonicalized on its own, so memory
    depends on the block and batch size, not on the file size (about 300 MiB
    peak RSS for a 209 MB and an 836 MB file alike, see scripts/bench_hub.py).  This was chosen over polars'
    ``scan_csv(...).collect_batches()`` because it also streams ``.csv.xz``
    (polars cannot scan xz) and lets transient network errors be retried at
    the byte offset where they happened; and over ``datasets`` streaming
    because the ``datasets`` CSV builder infers column types per chunk with
    pandas, which cannot honour the per-file column variants.

Transport
---------
Every Hub request goes through ``huggingface_hub``: its shared HTTP session
(``huggingface_hub.get_session()``, which refuses requests in offline mode),
its auth headers (``token=`` or the logged-in token / ``HF_TOKEN``) and its
endpoint ``huggingface_hub.constants.ENDPOINT`` (``HF_ENDPOINT``), read at
call time.  Files are read with ranged ``GET {ENDPOINT}/datasets/{repo}/resolve/{sha}/{path}``
requests (redirects to a storage host are followed), never with polars'
native ``hf://`` client, which ignores ``HF_ENDPOINT``.

Faults and the time budget
--------------------------
Each request is made once by the client (none of ``huggingface_hub``'s own
backoff loops is used), so :class:`RetryPolicy` alone decides what is tried
again and for how long:

* transient: connection reset or refused (a refused connection is tried
  twice only: the endpoint is down), a timeout or a stall longer than
  ``RetryPolicy.timeout``, a body cut short, HTTP 408 / 429 / 5xx.  Retried
  with exponential backoff (a file is reopened at the byte offset where it
  failed) until ``attempts`` or the ``budget`` in seconds run out; then one
  :class:`~chexmask_u_tools.errors.HubError` names the file, the byte offset,
  the last HTTP status and the last error.  The default policy gives up on a
  dead file within 40 s.
* final on the first answer: HTTP 401 / 403, repository, revision or file not
  found (404), offline mode.  The ``HubError`` says what to do (token,
  ``revision=``, file name, ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import quote

from chexmask_u_tools.errors import FileReadError, HubError, InputError

__all__ = [
    "DEFAULT_REPO",
    "PARQUET_CONVERSION_REVISION",
    "REPO_TYPE",
    "DatasetLocation",
    "HubFile",
    "HubRepo",
    "IncompleteBodyError",
    "LocalMirror",
    "RepoEntry",
    "RetryPolicy",
    "http_status",
    "hub_offline",
    "is_transient",
    "open_location",
    "with_retries",
]

DEFAULT_REPO = "mcosarinsky/CheXmask-U"
"""The CheXmask-U dataset repo (a *dataset* repo; the model repo has the same id)."""

REPO_TYPE = "dataset"

PARQUET_CONVERSION_REVISION = "refs/convert/parquet"
"""The Hub's automatic parquet conversion of a dataset repo (``<config>/<split>/NNNN.parquet`` files)."""

_SHA = re.compile(r"^[0-9a-f]{40}$")
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class IncompleteBodyError(ConnectionError):
    """The server ended a file's body before its announced size (a connection cut mid-file)."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read at call time, not import time).

    Examples
    --------
    >>> import os
    >>> from chexmask_u_tools.hub import hub_offline
    >>> hub_offline() == (os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"})
    True
    """
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class RetryPolicy:
    """How long transient Hub errors are retried: bounded attempts, exponential backoff, a wall-time budget.

    Attributes
    ----------
    attempts:
        Requests tried for one operation (one file read at one byte offset,
        one listing page, resolving the revision).
    base_delay, max_delay:
        The wait before retry ``k`` (0-based) is ``min(max_delay, base_delay * 2**k)`` seconds.
    budget:
        Seconds one failing operation may take in all, waits included: no
        retry is started that could end later than ``budget`` seconds after
        the first attempt began (each attempt is assumed to take up to
        ``timeout``).  With the defaults a dead file fails within 40 s
        (a stalled body: 3 attempts of 10 s; HTTP 503: 5 answers in 7.5 s).
    timeout:
        Seconds to wait for a connection and, once connected, for the next
        bytes: a body that stalls longer counts as a transient failure and
        the file is reopened where it stopped.
    sleep:
        Injectable so tests need not wait.

    Examples
    --------
    >>> from chexmask_u_tools.hub import RetryPolicy
    >>> policy = RetryPolicy()
    >>> [policy.delay(k) for k in range(5)]
    [0.5, 1.0, 2.0, 4.0, 8.0]
    >>> policy.budget, policy.timeout
    (40.0, 10.0)
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    budget: float = 40.0
    timeout: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InputError(f"RetryPolicy(attempts=...) must be at least 1, got {self.attempts}")
        if self.budget <= 0 or self.timeout <= 0:
            raise InputError(f"RetryPolicy budget and timeout must be positive, got {self.budget}, {self.timeout}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry ``retry`` (0-based)."""
        return min(self.max_delay, self.base_delay * 2.0**retry)


def http_status(error: BaseException) -> int | None:
    """The HTTP status an exception carries (``huggingface_hub`` errors, :class:`IncompleteBodyError`), or None."""
    status = getattr(error, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(error, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(transient, final) exception types of the HTTP client behind ``huggingface_hub``."""
    try:
        import httpx2 as client
    except ImportError:  # older huggingface_hub releases use httpx
        try:
            import httpx as client
        except ImportError:
            return (), ()
    return (
        (client.TimeoutException, client.NetworkError, client.RemoteProtocolError),
        (client.ProxyError, client.UnsupportedProtocol, client.LocalProtocolError),
    )


def is_transient(error: BaseException) -> bool:
    """Whether retrying ``error`` may help: network faults, timeouts, cut bodies, HTTP 408/429/5xx.

    ``huggingface_hub``'s ``HfHubHTTPError`` is an ``OSError``; it is transient
    only for the retryable statuses.  Offline mode is never transient.

    Examples
    --------
    >>> from chexmask_u_tools.hub.location import IncompleteBodyError, is_transient
    >>> is_transient(IncompleteBodyError("cut at byte 10")), is_transient(FileNotFoundError("x"))
    (True, False)
    """
    from huggingface_hub import errors as hf_errors

    if isinstance(error, hf_errors.OfflineModeIsEnabled):
        return False
    if isinstance(error, hf_errors.HfHubHTTPError):
        return http_status(error) in _RETRYABLE_STATUS
    transient, final = _transport_errors()
    if final and isinstance(error, final):
        return False
    if transient and isinstance(error, transient):
        return True
    return isinstance(error, (ConnectionError, TimeoutError))


def _is_connect_error(error: BaseException) -> bool:
    return type(error).__name__ in {"ConnectError", "ConnectionRefusedError"}


def _final_advice(error: BaseException) -> str | None:
    """What to do about a permanent Hub error, or None when ``error`` is not one."""
    from huggingface_hub import errors as hf_errors

    if isinstance(error, hf_errors.OfflineModeIsEnabled):
        return (
            "the Hub is offline (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE, or build a cache first "
            "(chexmask-u cache / build_cache) or read a local mirror directory"
        )
    if isinstance(error, hf_errors.GatedRepoError):
        return (
            "the repo is gated: accept its conditions on the Hub, then pass a token (token=..., HF_TOKEN, "
            "or `hf auth login`)"
        )
    if isinstance(error, hf_errors.RepositoryNotFoundError):
        return (
            f"repository not found or not accessible (HTTP {http_status(error)}): check the repo id; for a private "
            "or gated repo pass a token (token=..., HF_TOKEN, or `hf auth login`)"
        )
    if isinstance(error, hf_errors.RevisionNotFoundError):
        return (
            "revision not found (HTTP 404): pass an existing branch, tag or commit with revision=... (or "
            "--revision); a pinned commit that disappeared was force-pushed away: run again to resolve the "
            "branch anew"
        )
    if isinstance(error, hf_errors.EntryNotFoundError):
        return "file not found at this revision (HTTP 404): check the file name; discover() lists the repo's files"
    if isinstance(error, hf_errors.HfHubHTTPError):
        status = http_status(error)
        if status == 401:
            return "HTTP 401 (unauthorized): the token is missing or invalid: pass token=..., set HF_TOKEN or run `hf auth login`"
        if status == 403:
            return (
                "HTTP 403 (forbidden): the token lacks permission for this repo: use a token with read access "
                "(token=..., HF_TOKEN), or accept the repo's conditions on the Hub"
            )
        if status == 404:
            return "HTTP 404 (not found): check the repo id, revision= and file name"
        if status is not None and status not in _RETRYABLE_STATUS and 400 <= status < 500:
            return f"HTTP {status}: the Hub refused the request"
    _, final = _transport_errors()
    if final and isinstance(error, final):
        return "the HTTP client cannot make this request (check HF_ENDPOINT and any proxy settings)"
    return None


def with_retries(
    what: str,
    call: Callable[[], Any],
    policy: RetryPolicy,
    *,
    on_failure: Callable[[BaseException], None] | None = None,
) -> Any:
    """Run one Hub operation under ``policy``.

    Transient errors (:func:`is_transient`) are retried with backoff within
    ``policy.attempts`` and ``policy.budget`` (a refused connection is tried
    twice at most: the endpoint is down).  Permanent Hub errors become one
    :class:`HubError` at once.  Other exceptions propagate unchanged.
    ``on_failure`` runs after each transient failure (e.g. to drop a broken
    connection).
    """
    from huggingface_hub import constants

    start = time.monotonic()
    last_status: int | None = None
    connect_failures = 0
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as error:
            advice = _final_advice(error)
            if advice is not None:
                raise HubError(f"{what}: {advice} [{type(error).__name__}: {_first_line(error)}]") from error
            if not is_transient(error):
                raise
            if on_failure is not None:
                on_failure(error)
            last_status = http_status(error) or last_status
            connect_failures += _is_connect_error(error)
            elapsed = time.monotonic() - start
            wait = policy.delay(attempt - 1)
            if attempt >= policy.attempts or connect_failures >= 2 or elapsed + wait + policy.timeout > policy.budget:
                hint = (
                    f"cannot connect to {constants.ENDPOINT}: check the network or HF_ENDPOINT (a Hub mirror), "
                    "read a local mirror directory, or set HF_HUB_OFFLINE=1 to use a complete cache"
                    if connect_failures
                    else "the Hub or the network kept failing; run again later, or allow more with "
                    "retry=RetryPolicy(attempts=..., budget=...)"
                )
                raise HubError(
                    f"{what}: gave up after {attempt} attempts in {elapsed:.1f} s; last HTTP status "
                    f"{last_status if last_status is not None else 'none (no answer)'}; last error "
                    f"{type(error).__name__}: {_first_line(error)}; {hint}"
                ) from error
            policy.sleep(wait)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else repr(error)


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
        """Where one file is: a local path, or the Hub's ``resolve`` URL at the pinned sha (for display and tools)."""

    def local_path(self, path: str) -> Path | None:
        """The file on the local disk, or None for a remote location (read it with :meth:`open`)."""
        return None

    @abstractmethod
    def open(self, path: str) -> BinaryIO:
        """A seekable binary file object for one file (raw bytes, not decompressed)."""

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

    Examples
    --------
    The embedded sample is laid out like the Hub repo:

    >>> import chexmask_u_tools as cxu
    >>> mirror = cxu.LocalMirror(cxu.sample_dir())
    >>> [entry.path for entry in mirror.list_files()][:2]
    ['Preprocessed/CheXpert.csv.xz', 'Preprocessed/ChestX-ray8.csv.xz']
    >>> mirror.kind, mirror.revision.startswith("local-")  # a fingerprint of the listing
    ('local', True)
    >>> with mirror.open("Preprocessed/CheXpert.csv.xz") as handle:
    ...     handle.read(6)[1:5]  # raw bytes, not decompressed: the xz magic
    b'7zXZ'
    >>> mirror.open("../secrets.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: path '../secrets.txt' leaves the mirror directory ...
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

    def local_path(self, path: str) -> Path:
        return self._local_path(path)

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


class HubFile(io.RawIOBase):
    """A seekable, read-only view of one file on the Hub, read with ranged ``GET`` requests.

    One request per (re)positioning, made through ``huggingface_hub``'s shared
    session, with no retry of its own: a failure (timeout, stall longer than
    ``timeout``, cut body, HTTP error) is raised to the caller, which decides
    (:class:`~chexmask_u_tools.hub.stream.RetryingReader`).  A body that ends
    before ``size`` raises :class:`IncompleteBodyError`.
    """

    def __init__(self, url: str, headers: dict[str, str], *, size: int | None, timeout: float) -> None:
        super().__init__()
        self.url = url
        self._headers = headers
        self._size = size
        self._timeout = timeout
        self._position = 0
        self._response: Any = None
        self._chunks: Any = None
        self._pending = b""
        self.last_status: int | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def _connect(self) -> bool:
        """Open ``GET`` at the current position; False when there is nothing left (HTTP 416)."""
        from huggingface_hub import get_session
        from huggingface_hub.utils import hf_raise_for_status

        session = get_session()
        request = session.build_request(
            "GET",
            self.url,
            headers={**self._headers, "Range": f"bytes={self._position}-", "Accept-Encoding": "identity"},
            timeout=self._timeout,
        )
        response = session.send(request, stream=True)
        self.last_status = response.status_code
        if response.status_code == 416:
            response.close()
            return False
        if response.status_code >= 400:
            with contextlib.suppress(Exception):  # the error body is informative only
                response.read()
            response.close()
            hf_raise_for_status(response)
        self._response = response
        self._chunks = response.iter_raw()  # as received: bytes before a cut are kept
        if response.status_code == 200 and self._position:
            # The server ignored the Range header: skip to the position.
            skipped = 0
            for chunk in self._chunks:
                skipped += len(chunk)
                if skipped >= self._position:
                    self._pending = chunk[len(chunk) - (skipped - self._position) :]
                    break
        return True

    def size(self) -> int:
        """The file's size in bytes (from the listing, else one ranged request)."""
        if self._size is None:
            from huggingface_hub import get_session
            from huggingface_hub.utils import hf_raise_for_status

            response = get_session().get(
                self.url, headers={**self._headers, "Range": "bytes=0-0", "Accept-Encoding": "identity"}, timeout=self._timeout
            )
            self.last_status = response.status_code
            hf_raise_for_status(response)
            content_range = response.headers.get("Content-Range", "")
            self._size = int(content_range.rsplit("/", 1)[1]) if "/" in content_range else int(response.headers["Content-Length"])
        return self._size

    def _drop(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):  # already broken; closing may fail too
                self._response.close()
        self._response = None
        self._chunks = None
        self._pending = b""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            target = self.size() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self._position:
            self._drop()
            self._position = target
        return target

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view) or (self._size is not None and self._position >= self._size):
            return 0
        if self._chunks is None and not self._connect():
            return 0
        data = self._pending
        while not data:
            try:
                data = next(self._chunks)
            except StopIteration:
                self._drop()
                if self._size is not None and self._position < self._size:
                    error = IncompleteBodyError(
                        f"the body of {self.url} ended at byte {self._position} of {self._size}"
                    )
                    error.status = self.last_status
                    raise error from None
                return 0
            except Exception as error:
                # A stall or a cut after the answer began: remember that answer's status for the report.
                if getattr(error, "status", None) is None:
                    error.status = self.last_status
                raise
        n = min(len(view), len(data))
        view[:n] = data[:n]
        self._pending = data[n:]
        self._position += n
        return n

    def close(self) -> None:
        self._drop()
        super().close()


class HubRepo(DatasetLocation):
    """A Hugging Face Hub dataset repo at a pinned revision.

    Parameters
    ----------
    repo_id:
        ``owner/name`` of the *dataset* repo (default :data:`DEFAULT_REPO`).
    revision:
        Branch, tag, commit, or :data:`PARQUET_CONVERSION_REVISION`; resolved
        once to the commit sha so that every later read sees the same files
        even if the branch moves.
    api:
        An ``huggingface_hub.HfApi``-like object (``repo_info``,
        ``list_repo_tree``) used instead of the HTTP calls below; for tests
        and custom clients (its own retries are then not bounded by ``retry``).
    fs:
        An fsspec filesystem that understands ``datasets/{repo}@{sha}/{path}``,
        used by :meth:`open` instead of HTTP; for tests.
    token:
        Hub token for private or gated repos (default: the logged-in one / ``HF_TOKEN``).
    retry:
        Attempts, backoff and time budget for transient Hub errors (:class:`RetryPolicy`).

    Notes
    -----
    Every request goes to ``huggingface_hub.constants.ENDPOINT`` (``HF_ENDPOINT``)
    through ``huggingface_hub``'s session: ``GET /api/datasets/{repo}/revision/{rev}``
    (the sha), ``GET /api/datasets/{repo}/tree/{sha}?recursive=true`` (paginated
    listing) and ranged ``GET /datasets/{repo}/resolve/{sha}/{path}`` (file bytes).

    Examples
    --------
    Making one touches no network; the revision is resolved on first use:

    >>> import chexmask_u_tools as cxu
    >>> repo = cxu.HubRepo("mcosarinsky/CheXmask-U", revision="main")
    >>> repo.name, repo.requested_revision, repo.kind
    ('mcosarinsky/CheXmask-U', 'main', 'hub')
    >>> cxu.HubRepo("not a repo")
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.InputError: not a Hub repo id (owner/name): 'not a repo'
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
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id) or ".." in repo_id:
            raise InputError(f"not a Hub repo id (owner/name): {repo_id!r}")
        self.repo_id = repo_id
        self._requested = revision or "main"
        self._token = token
        self._api = api
        self._fs = fs
        self.retry = retry or RetryPolicy()
        self._sha: str | None = None
        self._listing: list[RepoEntry] | None = None
        self._sizes: dict[str, int | None] = {}

    @property
    def name(self) -> str:
        return self.repo_id

    @property
    def requested_revision(self) -> str:
        return self._requested

    @staticmethod
    def endpoint() -> str:
        """The Hub endpoint every request goes to: ``huggingface_hub.constants.ENDPOINT`` (``HF_ENDPOINT``)."""
        from huggingface_hub import constants

        return constants.ENDPOINT.rstrip("/")

    def _headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self._token, library_name="chexmask-u-tools")

    def _get_json(self, url: str, params: dict | None = None) -> tuple[Any, str | None]:
        """One GET of a JSON API route: (decoded body, URL of the next page or None)."""
        from huggingface_hub import get_session
        from huggingface_hub.utils import hf_raise_for_status

        response = get_session().get(url, params=params, headers=self._headers(), timeout=self.retry.timeout)
        hf_raise_for_status(response)
        next_page = response.links.get("next", {}).get("url")
        return response.json(), next_page

    def _offline_error(self, doing: str) -> HubError:
        return HubError(
            f"cannot {doing} dataset repo {self.repo_id!r} at revision {self._requested!r}: the Hub is offline "
            "(HF_HUB_OFFLINE=1) and no local cache records it; build one online first (chexmask-u cache), read a "
            "local mirror directory, or unset HF_HUB_OFFLINE"
        )

    @property
    def revision(self) -> str:
        if self._sha is None:
            if hub_offline():
                if _SHA.match(self._requested):
                    self._sha = self._requested
                    return self._sha
                raise self._offline_error("resolve the revision of")
            what = f"resolving revision {self._requested!r} of dataset repo {self.repo_id!r} at {self.endpoint()}"
            if self._api is not None:
                info = with_retries(
                    what, lambda: self._api.repo_info(self.repo_id, repo_type=REPO_TYPE, revision=self._requested), self.retry
                )
                sha = getattr(info, "sha", None)
            else:
                url = f"{self.endpoint()}/api/datasets/{self.repo_id}/revision/{quote(self._requested, safe='')}"
                body, _ = with_retries(what, lambda: self._get_json(url), self.retry)
                sha = body.get("sha") if isinstance(body, dict) else None
            if not sha:
                raise HubError(f"the Hub returned no commit sha for {self.repo_id!r}@{self._requested!r}")
            self._sha = sha
        return self._sha

    def list_files(self) -> list[RepoEntry]:
        if self._listing is None:
            sha = self.revision
            if hub_offline():
                raise self._offline_error("list")
            what = f"listing dataset repo {self.repo_id!r}@{sha} at {self.endpoint()}"
            if self._api is not None:
                items = with_retries(
                    what,
                    lambda: list(self._api.list_repo_tree(self.repo_id, recursive=True, repo_type=REPO_TYPE, revision=sha)),
                    self.retry,
                )
                entries = [_entry_from_repo_file(item) for item in items if hasattr(item, "blob_id")]
            else:
                entries = []
                url: str | None = f"{self.endpoint()}/api/datasets/{self.repo_id}/tree/{quote(sha, safe='')}"
                params: dict | None = {"recursive": "true", "expand": "false"}
                page = 0
                while url is not None:
                    page += 1
                    body, url = with_retries(
                        f"{what} (page {page})", lambda u=url, p=params: self._get_json(u, p), self.retry
                    )
                    params = None  # the next-page URL carries the query
                    entries.extend(_entry_from_tree_json(item) for item in body if item.get("type") == "file")
            self._listing = sorted(entries, key=lambda e: e.path)
            self._sizes = {entry.path: entry.size for entry in self._listing}
        return list(self._listing)

    def _checked(self, path: str) -> str:
        if path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise InputError(f"path {path!r} leaves the repo")
        return path

    def url_for(self, path: str) -> str:
        """``{HF_ENDPOINT}/datasets/{repo}/resolve/{sha}/{path}``: the URL :meth:`open` reads."""
        return (
            f"{self.endpoint()}/datasets/{self.repo_id}/resolve/{quote(self.revision, safe='')}/"
            f"{quote(self._checked(path))}"
        )

    def open(self, path: str) -> BinaryIO:
        if self._fs is not None:
            return self._fs.open(f"datasets/{self.repo_id}@{self.revision}/{self._checked(path)}", "rb")
        if hub_offline():
            raise self._offline_error(f"read {path!r} from")
        return HubFile(self.url_for(path), self._headers(), size=self._sizes.get(path), timeout=self.retry.timeout)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "repo_id": self.repo_id,
            "repo_type": REPO_TYPE,
            "requested_revision": self._requested,
        }


def _entry_from_tree_json(item: dict) -> RepoEntry:
    lfs = item.get("lfs") or {}
    checksum = f"sha256:{lfs['oid']}" if lfs.get("oid") else f"git-sha1:{item.get('oid')}"
    return RepoEntry(item["path"], item.get("size"), checksum)


def _entry_from_repo_file(item: Any) -> RepoEntry:
    lfs = getattr(item, "lfs", None)
    lfs_sha = getattr(lfs, "sha256", None) if lfs is not None else None
    checksum = f"sha256:{lfs_sha}" if lfs_sha else f"git-sha1:{item.blob_id}"
    return RepoEntry(item.path, getattr(item, "size", None), checksum)


def open_location(
    location: str | os.PathLike | DatasetLocation | None = None,
    *,
    revision: str | None = None,
    api: Any = None,
    token: str | None = None,
    retry: RetryPolicy | None = None,
) -> DatasetLocation:
    """Turn a user's location into a :class:`DatasetLocation`.

    ``None`` is the CheXmask-U dataset repo; an existing directory is a
    :class:`LocalMirror` (a local directory wins over a repo id of the same
    spelling); ``owner/name``, ``hf://datasets/owner/name`` or
    ``hf://datasets/owner/name@rev`` (``rev`` may be ``refs/convert/parquet``)
    is a :class:`HubRepo`.  Nothing is contacted until the location is used.

    Examples
    --------
    >>> import tempfile
    >>> from chexmask_u_tools.hub import open_location
    >>> from chexmask_u_tools.testing.mirror import build_mirror
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     place = open_location(build_mirror(Path(tmp), rows_per_source=2))
    ...     (place.kind, [entry.path for entry in place.list_files()][:2])
    ('local', ['OriginalResolution/VinDr-CXR.csv', 'Physician/annotations.csv'])
    >>> repo = open_location("hf://datasets/someone/CheXmask-U@refs/convert/parquet")
    >>> (repo.kind, repo.repo_id, repo.requested_revision)
    ('hub', 'someone/CheXmask-U', 'refs/convert/parquet')
    """
    if isinstance(location, DatasetLocation):
        return location
    if location is None:
        return HubRepo(DEFAULT_REPO, revision, api=api, token=token, retry=retry)
    text = os.fspath(location)
    if os.path.isdir(text):
        return LocalMirror(text)
    match = re.fullmatch(
        r"(?:hf://)?(?:datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(refs/convert/parquet|refs/pr/\d+|[^/]+))?/?", text
    )
    if match and not os.path.exists(text):
        if match.group(2) and revision and match.group(2) != revision:
            raise InputError(f"two revisions given: {match.group(2)!r} in {text!r} and revision={revision!r}")
        return HubRepo(match.group(1), revision or match.group(2), api=api, token=token, retry=retry)
    raise InputError(f"{text!r} is neither a directory nor a Hub dataset repo id (owner/name)")
