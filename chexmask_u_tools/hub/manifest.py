"""The cache manifest: what a cache holds and how it was built, as typed records read from and written to JSON.

A cache directory (see :mod:`chexmask_u_tools.hub.cache`) holds one
``manifest.json``.  :class:`Manifest` is its in-memory form: every field is
typed, :meth:`Manifest.from_json` validates a file before anything trusts it,
and :meth:`Manifest.to_json` writes the current :data:`VERSION`.  Manifests of
every version in :data:`READABLE_VERSIONS` are read.

Versions
--------
1
    The first format (no ``page_checksums`` field: its shards carry no parquet
    page CRCs).
2
    Adds ``page_checksums`` (true: every data page of every shard carries a
    CRC32, verified by pyarrow readers) and ``completed``.

Examples
--------
>>> selection = Selection.from_request("chexpert", None)
>>> selection.key, selection.covers(Selection.from_request("CheXpert", "preprocessed"))
('CheXpert__all-frames', True)
>>> manifest = Manifest(location={"kind": "local", "root": "/data"}, revision="local-0",
...                     selection=selection, options=BuildOptions(), files=[])
>>> Manifest.from_json(manifest.to_json(), where="example") == manifest
True
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from chexmask_u_tools._atomic import atomic_write_bytes
from chexmask_u_tools.errors import FileReadError
from chexmask_u_tools.schema import CANONICAL_SCHEMA
from chexmask_u_tools.select.selection import normalize_frames, normalize_sources

__all__ = [
    "FORMAT",
    "MANIFEST",
    "READABLE_VERSIONS",
    "VERSION",
    "BuildOptions",
    "FileRecord",
    "Manifest",
    "PartRecord",
    "Selection",
    "ShardRecord",
    "read_manifest",
    "cache_folder",
    "shard_name",
]

MANIFEST = "manifest.json"
FORMAT = "chexmask-u-tools/cache"
VERSION = 2
READABLE_VERSIONS = (1, 2)
DEFAULT_SHARD_MULTIPLE = 24
DEFAULT_TARGET_SHARD_ROWS = 25_000


def shard_name(index: int, count: int) -> str:
    """File name of shard ``index`` (0-based) of ``count``: ``shard-00003-of-00024.parquet``."""
    return f"shard-{index:05d}-of-{count:05d}.parquet"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _schema_names() -> dict[str, str]:
    return {name: str(dtype) for name, dtype in CANONICAL_SCHEMA.items()}


@dataclass(frozen=True)
class Selection:
    """The sources and frames a cache holds (None: all of them), in canonical spelling, sorted."""

    sources: tuple[str, ...] | None = None
    frames: tuple[str, ...] | None = None

    @classmethod
    def from_request(cls, sources: Any = None, frames: Any = None) -> Selection:
        """Normalize a user's ``sources=`` / ``frames=`` (any spelling; see :mod:`chexmask_u_tools.select.selection`)."""
        wanted_sources, wanted_frames = normalize_sources(sources), normalize_frames(frames)
        return cls(
            tuple(sorted(wanted_sources)) if wanted_sources is not None else None,
            tuple(sorted(wanted_frames)) if wanted_frames is not None else None,
        )

    @property
    def key(self) -> str:
        """The cache's folder name: ``all``, or ``<sources>__<frames>``."""
        if self.sources is None and self.frames is None:
            return "all"
        sources = "+".join(self.sources) if self.sources is not None else "all-sources"
        frames = "+".join(self.frames) if self.frames is not None else "all-frames"
        return f"{sources}__{frames}"

    def covers(self, wanted: Selection) -> bool:
        """True when every row ``wanted`` asks for is in a cache of this selection."""
        for have, want in ((self.sources, wanted.sources), (self.frames, wanted.frames)):
            if have is None:
                continue
            if want is None or not set(want) <= set(have):
                return False
        return True

    def to_dict(self) -> dict:
        return {
            "sources": list(self.sources) if self.sources is not None else None,
            "frames": list(self.frames) if self.frames is not None else None,
        }


@dataclass(frozen=True)
class BuildOptions:
    """The options that decide a cache's content; a build resumes only with equal options.

    ``columns`` is the column mapping the files were read with
    (``{"their name": "known name"}``, empty for none): the readers reuse a
    cache only when asked for the same mapping.
    """

    masks: Literal["released", "mean"] = "released"
    on_error: Literal["raise", "skip"] = "raise"
    n_shards: int | None = None
    shard_multiple: int = DEFAULT_SHARD_MULTIPLE
    target_shard_rows: int = DEFAULT_TARGET_SHARD_ROWS
    columns: dict[str, str] = field(default_factory=dict)


def cache_folder(selection: Selection, options: BuildOptions) -> str:
    """A cache's folder name under its revision: the selection's key, plus ``__mean-masks`` for ``masks="mean"``.

    The mask mode decides the content of the mask columns, so each mode is
    cached on its own (and looked up on its own, see ``find_cache``).

    Examples
    --------
    >>> cache_folder(Selection(), BuildOptions()), cache_folder(Selection(), BuildOptions(masks="mean"))
    ('all', 'all__mean-masks')
    """
    return selection.key if options.masks == "released" else f"{selection.key}__{options.masks}-masks"


@dataclass(frozen=True)
class PartRecord:
    """A finished intermediate part (one source file, converted) inside ``.parts/``."""

    file: str
    bytes: int


@dataclass(frozen=True)
class FileRecord:
    """One source file of the cache: where it came from, its checksum, and what converting it gave.

    ``checksum`` is ``sha256:<hex>`` (Hub LFS files, or computed locally) or
    ``git-sha1:<blob id>`` (small Hub files).  ``rows``, ``skipped`` (rows
    dropped per reason under ``on_error="skip"``) and ``part`` are set once
    the file is converted.
    """

    path: str
    source: str | None
    frame: str | None
    size: int | None
    checksum: str | None
    rows: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    part: PartRecord | None = None

    @property
    def identity(self) -> tuple[str, str | None]:
        return self.path, self.checksum


@dataclass(frozen=True)
class ShardRecord:
    """A finished shard: its row count, size in bytes and sha256 (hex)."""

    rows: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """Everything ``manifest.json`` records about one cache (see the module docstring for versions).

    ``status`` is ``building`` until every shard is written, then ``complete``.
    """

    location: dict
    revision: str
    selection: Selection
    options: BuildOptions
    files: list[FileRecord]
    status: Literal["building", "complete"] = "building"
    n_shards: int | None = None
    rows: int | None = None
    shards: dict[str, ShardRecord] = field(default_factory=dict)
    schema: dict[str, str] = field(default_factory=_schema_names)
    page_checksums: bool = True
    created: str = field(default_factory=_now)
    completed: str | None = None
    version: int = VERSION

    # ------------------------------------------------------------------ questions
    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def skipped_rows(self) -> int:
        """Rows dropped under ``on_error="skip"``, over all files."""
        return sum(sum(record.skipped.values()) for record in self.files)

    def expected_shards(self) -> list[str]:
        """The shard file names, in row order (empty until the shard count is fixed)."""
        return [shard_name(k, self.n_shards) for k in range(self.n_shards or 0)]

    def same_build(self, other: Manifest) -> bool:
        """True when ``other`` describes the same build (revision, selection, options, source files)."""
        return (
            self.revision == other.revision
            and self.selection == other.selection
            and self.options == other.options
            and [f.identity for f in self.files] == [f.identity for f in other.files]
        )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "status": self.status,
            "location": self.location,
            "revision": self.revision,
            "selection": self.selection.to_dict(),
            "options": asdict(self.options),
            "files": [asdict(record) for record in self.files],
            "n_shards": self.n_shards,
            "shards": {name: asdict(record) for name, record in self.shards.items()},
            "rows": self.rows,
            "schema": self.schema,
            "page_checksums": self.page_checksums,
            "created": self.created,
            "completed": self.completed,
        }
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def write(self, directory: str | os.PathLike) -> None:
        """Write ``directory/manifest.json`` atomically.

        Only a complete manifest is flushed to disk before the rename: losing a
        ``building`` one to a power cut only makes the next build redo work.
        """
        atomic_write_bytes(Path(directory) / MANIFEST, self.to_json().encode(), fsync=self.complete)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str) -> Manifest:
        """Parse and validate a manifest; ``where`` names it in errors.

        Raises
        ------
        FileReadError
            Not JSON, not a chexmask-u-tools cache manifest, an unknown
            version, a missing or mistyped field, or a complete manifest whose
            shards do not add up (a shard removed by hand, rows that differ).
        """
        try:
            data = json.loads(text)
        except ValueError as error:
            raise FileReadError(f"unreadable cache manifest {where!r}: {error}") from error
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FileReadError(f"{where!r} is not a chexmask-u-tools cache manifest")
        if data.get("version") not in READABLE_VERSIONS:
            raise FileReadError(
                f"cache manifest {where!r} has version {data.get('version')!r}; this chexmask-u-tools reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}: upgrade the package, or rebuild the cache "
                "with build_cache(..., force=True) / `chexmask-u cache --force`"
            )
        try:
            manifest = cls(
                location=_typed(data["location"], dict, "location"),
                revision=_typed(data["revision"], str, "revision"),
                selection=Selection(
                    _optional_names(data["selection"]["sources"]), _optional_names(data["selection"]["frames"])
                ),
                options=BuildOptions(**_typed(data["options"], dict, "options")),
                files=[_file_record(item) for item in _typed(data["files"], list, "files")],
                status=data["status"],
                n_shards=_optional_int(data["n_shards"], "n_shards"),
                rows=_optional_int(data["rows"], "rows"),
                shards={
                    _typed(name, str, "shard name"): ShardRecord(
                        rows=_typed(item["rows"], int, "shard rows"),
                        bytes=_typed(item["bytes"], int, "shard bytes"),
                        sha256=_typed(item["sha256"], str, "shard sha256"),
                    )
                    for name, item in _typed(data["shards"], dict, "shards").items()
                },
                schema=_typed(data["schema"], dict, "schema"),
                # Version 1 wrote no page checksums.
                page_checksums=bool(data.get("page_checksums", False)),
                created=str(data.get("created", "")),
                completed=data.get("completed"),
                version=data["version"],
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise FileReadError(f"cache manifest {where!r} is malformed ({type(error).__name__}: {error})") from error
        if manifest.status not in ("building", "complete"):
            raise FileReadError(f"cache manifest {where!r} has an unknown status {manifest.status!r}")
        manifest.check_consistent(where)
        return manifest

    def check_consistent(self, where: str) -> None:
        """A complete manifest must list exactly its ``n_shards`` shards, and the rows must add up."""
        if not self.complete:
            return
        fix = "rebuild it with build_cache(..., force=True) / `chexmask-u cache --force`"
        if not self.n_shards or self.n_shards < 1 or self.rows is None:
            raise FileReadError(f"complete cache manifest {where!r} records no shard count or row count; {fix}")
        expected = self.expected_shards()
        if sorted(self.shards) != expected:
            missing = sorted(set(expected) - set(self.shards))
            extra = sorted(set(self.shards) - set(expected))
            raise FileReadError(
                f"cache manifest {where!r} does not list its {self.n_shards} shards"
                + (f"; missing: {', '.join(missing[:5])}" if missing else "")
                + (f"; unexpected: {', '.join(extra[:5])}" if extra else "")
                + f"; {fix}"
            )
        shard_rows = sum(record.rows for record in self.shards.values())
        file_rows = sum(record.rows or 0 for record in self.files)
        if not shard_rows == file_rows == self.rows:
            raise FileReadError(
                f"cache manifest {where!r} does not add up: {self.rows} rows, {shard_rows} in its shards, "
                f"{file_rows} from its source files; {fix}"
            )

    @classmethod
    def read(cls, directory: str | os.PathLike) -> Manifest:
        """The validated manifest of a cache directory.

        Raises
        ------
        FileReadError
            No manifest, or one :meth:`from_json` refuses.
        """
        file = Path(directory) / MANIFEST
        try:
            text = file.read_bytes()
        except FileNotFoundError as error:
            raise FileReadError(f"not a chexmask-u-tools cache (no {MANIFEST}): {str(directory)!r}") from error
        except OSError as error:
            raise FileReadError(f"unreadable cache manifest {str(file)!r}: {error}") from error
        return cls.from_json(text, where=str(file))

    def with_status(self, status: Literal["building", "complete"]) -> Manifest:
        return replace(self, status=status, completed=_now() if status == "complete" else None)


def _typed(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{what} must be {kind.__name__}, got {value!r}")
    return value


def _optional_int(value: Any, what: str) -> int | None:
    return None if value is None else _typed(value, int, what)


def _optional_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(_typed(name, str, "selection name") for name in _typed(value, list, "selection"))


def _file_record(item: Any) -> FileRecord:
    item = _typed(item, dict, "file record")
    part = item.get("part")
    return FileRecord(
        path=_typed(item["path"], str, "file path"),
        source=item["source"],
        frame=item["frame"],
        size=_optional_int(item["size"], "file size"),
        checksum=item["checksum"],
        rows=_optional_int(item["rows"], "file rows"),
        skipped={str(k): _typed(v, int, "skipped count") for k, v in _typed(item["skipped"], dict, "skipped").items()},
        part=PartRecord(_typed(part["file"], str, "part file"), _typed(part["bytes"], int, "part bytes"))
        if part is not None
        else None,
    )


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The validated :class:`Manifest` of a cache directory (see :meth:`Manifest.read`).

    Examples
    --------
    >>> import tempfile
    >>> read_manifest(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    chexmask_u_tools.errors.FileReadError: not a chexmask-u-tools cache (no manifest.json): ...
    """
    return Manifest.read(path)
