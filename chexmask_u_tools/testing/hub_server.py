"""A small Hugging Face Hub emulator over real HTTP, for offline tests of code that uses ``huggingface_hub``.

:class:`HubEmulator` is a standard-library ``ThreadingHTTPServer`` on
``127.0.0.1`` (a free port) that speaks the routes ``huggingface_hub`` 2.x
uses to read dataset and model repos, with the shapes its parsers expect:

* ``GET /api/{datasets|models}/{owner}/{name}[/revision/{rev}]`` -- repo info
  with ``sha`` and ``siblings`` (``HfApi.dataset_info`` / ``model_info`` /
  ``repo_info``);
* ``GET /api/{datasets|models}/{owner}/{name}/tree/{rev}[/{path}]?recursive=&expand=``
  -- files (``oid``, ``size``, ``lfs``) and folders, paginated with
  ``Link: <...>; rel="next"`` (``HfApi.list_repo_tree``);
* ``HEAD`` / ``GET /datasets/{owner}/{name}/resolve/{rev}/{path}`` and
  ``/{owner}/{name}/resolve/{rev}/{path}`` (models) with ``Range`` (206 /
  416), ``ETag`` and ``X-Repo-Commit`` (``hf_hub_download``,
  ``get_hf_file_metadata``).  LFS files answer with a 302 to a second host
  name, ``http://localhost:{port}/_cdn/{sha256}`` (another origin, like the
  Hub's CDN: ``huggingface_hub`` stops its HEAD there and drops the auth
  header), carrying ``X-Linked-Etag`` and ``X-Linked-Size``;
* errors carry ``X-Error-Code: RepoNotFound / RevisionNotFound /
  EntryNotFound``, which ``huggingface_hub`` maps to its exceptions;
* ``CONNECT`` (a client using the emulator as its proxy for another host) is
  recorded and refused, so that a test can prove nothing left for another host.

Every request is recorded in :attr:`HubEmulator.requests`.  Faults are
injected per request with :meth:`HubEmulator.inject`: an HTTP status for the
next ``times`` requests (5xx, 403...), a body cut after ``after_bytes``
bytes, a body that stalls, or a slow body.  :meth:`HubEmulator.commit`
moves a branch to a new sha (optionally deleting the old one, like a force
push).

Pointing ``huggingface_hub`` at the emulator inside one process
-----------------------------------------------------------------------
``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the cache
paths once, at import, into ``huggingface_hub.constants``; setting the
environment later has no effect on a running process.  :meth:`HubEmulator.patch`
therefore sets both the environment (for subprocesses and for code reading
it at call time) and the constants (``ENDPOINT``,
``HUGGINGFACE_CO_URL_TEMPLATE``, ``HF_HUB_OFFLINE``, the cache and token
paths), clears any token, routes every other host through the emulator as an
HTTP proxy (``HTTP(S)_PROXY``, with ``NO_PROXY`` for the emulator's own names),
and resets ``huggingface_hub``'s shared HTTP session so that it picks this up.
It takes pytest's ``monkeypatch`` (anything with ``setenv``, ``delenv`` and
``setattr``), which undoes everything after the test.

Example (pytest)::

    @pytest.fixture
    def hub(tmp_path, monkeypatch):
        with HubEmulator() as server:
            server.add_repo("me/data", {"a.csv": b"x\\n1\\n"})
            server.patch(monkeypatch, tmp_path / "hf-home")
            yield server
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

__all__ = ["Fault", "HubEmulator", "RecordedRequest"]

_SPECIAL_REF = re.compile(r"^(refs/convert/[^/]+|refs/pr/\d+)(?:/|$)")


@dataclass
class RecordedRequest:
    """One request the emulator received."""

    method: str
    host: str
    path: str
    status: int | None = None
    range: str | None = None
    authorization: bool = False


@dataclass
class Fault:
    """A fault applied to the next ``times`` matching requests (``None``: to every one).

    ``kind`` is ``status`` (answer ``status``), ``cut`` (send the headers and
    the body up to byte ``after_bytes`` of the file, then close the
    connection; a request starting at or past that byte gets no body byte),
    ``stall`` (the same, but wait ``seconds`` before closing) or ``slow`` (the
    whole body, ``after_bytes`` bytes at a time with ``seconds`` between).
    ``route`` is ``files`` (requests serving file bytes: resolve and CDN),
    ``api`` (repo info and tree), ``revision``, ``tree`` or ``any``;
    ``match`` is a substring of the repo file path (files) or of the URL path.
    """

    kind: str
    route: str = "files"
    match: str = ""
    times: int | None = 1
    status: int = 503
    after_bytes: int = 0
    seconds: float = 0.0
    used: int = 0


@dataclass
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubEmulator:
    """An in-process HTTP server speaking the Hub routes ``huggingface_hub`` reads repos with.

    Parameters
    ----------
    page_size:
        Entries per page of a tree listing (small values exercise pagination).
    lfs_threshold:
        Files of at least this many bytes are LFS files (served by a 302 to the
        CDN host name), except ``.gitattributes`` and ``*.md``.
    honour_ranges:
        False: answer ``Range`` requests with the whole file (200), as some
        proxies do.

    Notes
    -----
    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, *, page_size: int = 50, lfs_threshold: int = 1024, honour_ranges: bool = True) -> None:
        self.page_size = page_size
        self.lfs_threshold = lfs_threshold
        self.honour_ranges = honour_ranges
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._commit_counter = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> HubEmulator:
        emulator = self

        class Handler(_Handler):
            hub = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubEmulator:  # noqa: PYI034 - the class is not meant to be subclassed
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the emulator first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The endpoint to use as ``HF_ENDPOINT``: ``http://127.0.0.1:{port}``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        """The second host name LFS files are redirected to: ``http://localhost:{port}``."""
        return f"http://localhost:{self.port}"

    @property
    def hosts(self) -> set[str]:
        """The ``Host`` values of the emulator's two names."""
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    # ------------------------------------------------------------------ content
    def add_repo(
        self,
        repo_id: str,
        files: str | os.PathLike | dict[str, bytes],
        *,
        repo_type: str = "dataset",
        branch: str = "main",
    ) -> str:
        """Create a repo whose ``branch`` holds ``files`` (a directory or ``{path: bytes}``); returns the sha."""
        if repo_type not in ("dataset", "model"):
            raise ValueError(f"repo_type must be 'dataset' or 'model', got {repo_type!r}")
        with self._lock:
            self._repos.setdefault((repo_type, repo_id), _Repo())
        return self.commit(repo_id, files, repo_type=repo_type, branch=branch)

    def commit(
        self,
        repo_id: str,
        files: str | os.PathLike | dict[str, bytes],
        *,
        repo_type: str = "dataset",
        branch: str = "main",
        keep_history: bool = True,
    ) -> str:
        """Move ``branch`` to a new commit holding ``files``; returns its sha.

        With ``keep_history=False`` every older commit is deleted (a force
        push): reads pinned to an old sha then get ``RevisionNotFound``.
        """
        content = _read_files(files)
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            self._commit_counter += 1
            digest = hashlib.sha1(f"{repo_type}/{repo_id}#{self._commit_counter}".encode())
            for path in sorted(content):
                digest.update(path.encode() + b"\0" + _git_blob_sha1(content[path]).encode())
            sha = digest.hexdigest()
            if not keep_history:
                repo.commits.clear()
            repo.commits[sha] = content
            repo.refs[branch] = sha
            for data in content.values():
                self._blobs[hashlib.sha256(data).hexdigest()] = data
        return sha

    def sha(self, repo_id: str, revision: str = "main", *, repo_type: str = "dataset") -> str:
        """The commit a branch points to."""
        return self._repos[(repo_type, repo_id)].refs[revision]

    # ------------------------------------------------------------------ faults
    def inject(
        self,
        kind: str,
        *,
        route: str = "files",
        match: str = "",
        times: int | None = 1,
        status: int = 503,
        after_bytes: int = 0,
        seconds: float = 0.0,
    ) -> Fault:
        """Add a :class:`Fault`; returns it (its ``used`` counts the requests it hit)."""
        if kind not in ("status", "cut", "stall", "slow"):
            raise ValueError(f"unknown fault kind {kind!r}")
        if route not in ("files", "api", "revision", "tree", "any"):
            raise ValueError(f"unknown route {route!r}")
        fault = Fault(kind, route, match, times, status, after_bytes, seconds)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, route: str, subject: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times is not None and fault.used >= fault.times:
                    continue
                if fault.route != "any" and fault.route != route and not (fault.route == "api" and route in ("revision", "tree")):
                    continue
                if fault.match and fault.match not in subject:
                    continue
                fault.used += 1
                return fault
        return None

    # ------------------------------------------------------------------ wiring a client to it
    def patch(self, monkeypatch: Any, hf_home: str | os.PathLike) -> None:
        """Point ``huggingface_hub`` in this process (and subprocesses) at the emulator.

        ``monkeypatch`` is pytest's fixture (undone after the test);
        ``hf_home`` becomes ``HF_HOME`` (cache and token paths under it).
        """
        from huggingface_hub import close_session, constants

        home = Path(hf_home)
        cache = home / "hub"
        proxy = self.url
        env = {
            "HF_ENDPOINT": self.url,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(cache),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HTTP_PROXY": proxy,
            "HTTPS_PROXY": proxy,
            "ALL_PROXY": proxy,
            "http_proxy": proxy,
            "https_proxy": proxy,
            "all_proxy": proxy,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
            monkeypatch.delenv(name, raising=False)
        values = {
            "ENDPOINT": self.url,
            "HUGGINGFACE_CO_URL_TEMPLATE": self.url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(cache),
            "HUGGINGFACE_HUB_CACHE": str(cache),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "HF_HUB_DISABLE_TELEMETRY": True,
            "HF_HUB_DISABLE_XET": True,
        }
        for name, value in values.items():
            if hasattr(constants, name):
                monkeypatch.setattr(constants, name, value)
        close_session()  # the shared client is rebuilt with this environment (proxies) on first use

    # ------------------------------------------------------------------ lookups used by the handler
    def _record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def _lookup(self, repo_type: str, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | str:
        """(sha, files) or an X-Error-Code."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                return "RepoNotFound"
            sha = repo.refs.get(revision, revision)
            files = repo.commits.get(sha)
            if files is None:
                return "RevisionNotFound"
            return sha, files

    def _is_lfs(self, path: str, data: bytes) -> bool:
        name = path.rsplit("/", 1)[-1]
        return len(data) >= self.lfs_threshold and name != ".gitattributes" and not name.endswith(".md")


def _read_files(files: str | os.PathLike | dict[str, bytes]) -> dict[str, bytes]:
    if isinstance(files, dict):
        return {str(path).strip("/"): bytes(data) for path, data in files.items()}
    root = Path(files)
    return {
        path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


class _Handler(BaseHTTPRequestHandler):
    hub: HubEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ------------------------------------------------------------------ plumbing
    def _begin(self) -> RecordedRequest:
        entry = RecordedRequest(
            self.command,
            self.headers.get("Host", ""),
            self.path,
            range=self.headers.get("Range"),
            authorization=self.headers.get("Authorization") is not None,
        )
        self.hub._record(entry)
        return entry

    def _answer(self, entry: RecordedRequest, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        entry.status = status
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _error(self, entry: RecordedRequest, status: int, code: str | None, message: str) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._answer(entry, status, json.dumps({"error": message}).encode(), headers)

    def _status_fault(self, entry: RecordedRequest, fault: Fault) -> None:
        messages = {403: "Access to this resource is forbidden", 401: "Invalid credentials in Authorization header"}
        self._error(entry, fault.status, None, messages.get(fault.status, f"injected HTTP {fault.status}"))

    # ------------------------------------------------------------------ verbs
    def do_CONNECT(self) -> None:
        entry = self._begin()
        self.close_connection = True
        self._answer(entry, 405, b"the Hub emulator is no proxy", {"Connection": "close"})

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        entry = self._begin()
        try:
            self._route(entry)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self, entry: RecordedRequest) -> None:
        split = urlsplit(self.path)
        parts = [unquote(part) for part in split.path.split("/")[1:]]
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        if parts[:1] == ["_cdn"] and len(parts) == 2:
            data = self.hub._blobs.get(parts[1])
            if data is None:
                return self._error(entry, 404, "EntryNotFound", "Entry not found")
            name = query.get("name", parts[1])
            fault = self.hub._take_fault("files", name)
            return self._send_bytes(entry, data, {"ETag": f'"{parts[1]}"'}, fault)
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("datasets", "models"):
            repo_type = "dataset" if parts[1] == "datasets" else "model"
            repo_id = f"{parts[2]}/{parts[3]}"
            rest = split.path.split("/")[5:]  # still quoted
            if not rest:
                return self._repo_info(entry, repo_type, repo_id, "main")
            if rest[0] == "revision" and len(rest) >= 2:
                return self._repo_info(entry, repo_type, repo_id, unquote("/".join(rest[1:])))
            if rest[0] == "tree" and len(rest) >= 2:
                revision, path = _split_revision(rest[1:])
                return self._tree(entry, repo_type, repo_id, revision, path, query)
            return self._error(entry, 404, None, "Not Found")
        raw = split.path.split("/")[1:]
        if raw[:1] == ["datasets"] and len(raw) >= 6 and raw[3] == "resolve":
            revision, path = _split_revision(raw[4:])
            return self._resolve(entry, "dataset", f"{unquote(raw[1])}/{unquote(raw[2])}", revision, path)
        if len(raw) >= 5 and raw[2] == "resolve":
            revision, path = _split_revision(raw[3:])
            return self._resolve(entry, "model", f"{unquote(raw[0])}/{unquote(raw[1])}", revision, path)
        return self._error(entry, 404, None, "Not Found")

    # ------------------------------------------------------------------ routes
    def _repo_info(self, entry: RecordedRequest, repo_type: str, repo_id: str, revision: str) -> None:
        fault = self.hub._take_fault("revision", self.path)
        if fault is not None and fault.kind == "status":
            return self._status_fault(entry, fault)
        found = self.hub._lookup(repo_type, repo_id, revision)
        if isinstance(found, str):
            return self._error(entry, 404, found, found)
        sha, files = found
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }
        self._answer(entry, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def _tree(
        self, entry: RecordedRequest, repo_type: str, repo_id: str, revision: str, path: str, query: dict
    ) -> None:
        fault = self.hub._take_fault("tree", self.path)
        if fault is not None and fault.kind == "status":
            return self._status_fault(entry, fault)
        found = self.hub._lookup(repo_type, repo_id, revision)
        if isinstance(found, str):
            return self._error(entry, 404, found, found)
        _, files = found
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(name.startswith(prefix) for name in files):
            return self._error(entry, 404, "EntryNotFound", f"{path} does not exist")
        recursive = query.get("recursive", "false").lower() in ("true", "1")
        folders: set[str] = set()
        listed: list[dict] = []
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            relative = name[len(prefix) :]
            pieces = relative.split("/")
            for depth in range(1, len(pieces)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(pieces[:depth]))
            if recursive or len(pieces) == 1:
                data = files[name]
                item: dict[str, Any] = {"type": "file", "oid": _git_blob_sha1(data), "size": len(data), "path": name}
                if self.hub._is_lfs(name, data):
                    item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                listed.append(item)
        entries = [
            {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": folder}
            for folder in sorted(folders)
        ] + listed
        cursor = int(query.get("cursor", "0"))
        page = entries[cursor : cursor + self.hub.page_size]
        headers = {"Content-Type": "application/json"}
        if cursor + self.hub.page_size < len(entries):
            next_query = {key: value for key, value in query.items() if key != "cursor"}
            next_query["cursor"] = str(cursor + self.hub.page_size)
            host = self.headers.get("Host", f"127.0.0.1:{self.hub.port}")
            headers["Link"] = f'<http://{host}{urlsplit(self.path).path}?{urlencode(next_query)}>; rel="next"'
        self._answer(entry, 200, json.dumps(page).encode(), headers)

    def _resolve(self, entry: RecordedRequest, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        fault = self.hub._take_fault("files", path)
        if fault is not None and fault.kind == "status":
            return self._status_fault(entry, fault)
        found = self.hub._lookup(repo_type, repo_id, revision)
        if isinstance(found, str):
            return self._error(entry, 404, found, found)
        sha, files = found
        data = files.get(path)
        if data is None:
            return self._error(entry, 404, "EntryNotFound", f"{path} does not exist at {sha}")
        git_etag = _git_blob_sha1(data)
        if self.hub._is_lfs(path, data):
            digest = hashlib.sha256(data).hexdigest()
            headers = {
                "Location": f"{self.hub.cdn_url}/_cdn/{digest}?{urlencode({'name': path})}",
                "X-Repo-Commit": sha,
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": len(data),
                "ETag": f'"{git_etag}"',
            }
            if fault is not None:  # a cut/stall meant for the bytes: let the CDN request take it
                with self.hub._lock:
                    fault.used -= 1
            return self._answer(entry, 302, b"", headers)
        self._send_bytes(entry, data, {"ETag": f'"{git_etag}"', "X-Repo-Commit": sha}, fault)

    def _send_bytes(self, entry: RecordedRequest, data: bytes, headers: dict, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "status":
            return self._status_fault(entry, fault)
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        size = len(data)
        status = 200
        first = 0
        wanted = self.headers.get("Range") if self.hub.honour_ranges else None
        if wanted:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if match is None:
                return self._error(entry, 400, None, f"bad Range {wanted!r}")
            first = int(match.group(1)) if match.group(1) else max(0, size - int(match.group(2) or 0))
            last = int(match.group(2)) if match.group(1) and match.group(2) else size - 1
            if first >= size:
                return self._answer(entry, 416, b"", {"Content-Range": f"bytes */{size}"})
            last = min(last, size - 1)
            data = data[first : last + 1]
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            status = 206
        entry.status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is None:
            self.wfile.write(data)
            return
        if fault.kind == "slow":
            step = max(1, fault.after_bytes)
            for start in range(0, len(data), step):
                self.wfile.write(data[start : start + step])
                self.wfile.flush()
                if self._wait(fault.seconds):
                    break
            return
        self.wfile.write(data[: max(0, fault.after_bytes - first)])  # the cut sits at a byte of the file
        self.wfile.flush()
        if fault.kind == "stall":
            self._wait(fault.seconds)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the emulator stops first; True when it stopped."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.hub._stopping.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                return True
        return False


def _split_revision(quoted: list[str]) -> tuple[str, str]:
    """(revision, path) from the quoted path segments after ``resolve/`` or ``tree/``.

    Clients quote the revision as one segment (``refs%2Fconvert%2Fparquet``);
    an unquoted special ref (``refs/convert/parquet``) is recognised too.
    """
    text = "/".join(quoted)
    special = _SPECIAL_REF.match(unquote(text)) if text.startswith("refs/") else None
    if special is not None:
        revision = special.group(1)
        return revision, unquote(text)[len(revision) :].lstrip("/")
    return unquote(quoted[0]), unquote("/".join(quoted[1:]))
