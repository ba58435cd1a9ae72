"""A folder written by :func:`~chexmask_u_tools.publish.save_hub_folder`, read back and checked.

Layout::

    OUT/README.md                               dataset card (YAML header: configs, features, split sizes)
    OUT/chexmask-u.json                         the folder's record (below)
    OUT/data/<split>-00000-of-0000N.parquet     parquet shards in ``datasets``' layout (Array2D extension types)

The record (:class:`FolderRecord`) lists every shard with its split, row
count, size and sha256, the row count of every split, and whether the saved
table had a ``split`` column.  Every reader of the toolkit that reads such a
folder -- ``read_table``, ``scan_table``, ``hub.scan``, ``hub.load``,
``open_table`` -- goes through :func:`verify_hub_folder` first, which refuses
a folder whose shards are missing, added, truncated or changed, naming the
shard and the fix.  ``datasets.load_dataset(folder)`` checks the split sizes
written into the card (it raises ``NonMatchingSplitsSizesError`` when a shard
is gone), but not the bytes.

A shard is hashed once per process while its size, modification / change time
and inode stay the same (about 0.3-0.5 s per 100 MB on two shared cores).

Examples
--------
>>> import tempfile, pathlib
>>> import chexmask_u_tools as cxu
>>> folder = cxu.save_hub_folder(cxu.load_sample().head(4), pathlib.Path(tempfile.mkdtemp()) / "subset", progress=False)
>>> is_hub_folder(folder), read_folder_record(folder).splits
(True, {'train': 4})
>>> scan_hub_folder(folder).collect().equals(cxu.load_sample().head(4))
True
>>> (folder / "data" / "train-00000-of-00001.parquet").unlink()
>>> scan_hub_folder(folder)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
chexmask_u_tools.errors.FileReadError: shard 'data/train-00000-of-00001.parquet' of the folder ... is missing; ...
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import polars as pl

from chexmask_u_tools.errors import FileReadError, InputError
from chexmask_u_tools.io.hf import plain_storage
from chexmask_u_tools.schema import CANONICAL_SCHEMA

__all__ = [
    "FOLDER_FORMAT",
    "FOLDER_RECORD",
    "FolderRecord",
    "FolderShard",
    "SPLIT_COLUMN",
    "is_hub_folder",
    "iter_hub_folder_batches",
    "read_folder_record",
    "scan_hub_folder",
    "sha256_file",
    "verify_hub_folder",
]

FOLDER_RECORD = "chexmask-u.json"
"""The record's file name, at the folder's top."""

FOLDER_FORMAT = "chexmask-u-tools/hub-folder"
FOLDER_VERSION = 1
SPLIT_COLUMN = "split"

REWRITE = (
    "write the folder again with cxu.save_hub_folder(table, folder, overwrite=True) "
    "(CLI: chexmask-u export ... --hub-folder --overwrite), or restore it from where it was copied"
)


@dataclass(frozen=True)
class FolderShard:
    """One parquet shard of a folder: its path inside the folder (POSIX), split, rows, bytes and sha256 (hex)."""

    path: str
    split: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class FolderRecord:
    """What ``chexmask-u.json`` records about a folder written by ``save_hub_folder``.

    ``split_column``: the saved table had a ``split`` column (the readers
    that keep extra columns give it back, holding each shard's split).
    No time stamp: the same table gives the same bytes (an upload of an
    unchanged folder changes nothing on the Hub).
    """

    shards: tuple[FolderShard, ...]
    split_column: bool
    version: int = FOLDER_VERSION

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)

    @property
    def splits(self) -> dict[str, int]:
        """Split -> rows, in the order the shards list them."""
        counts: dict[str, int] = {}
        for shard in self.shards:
            counts[shard.split] = counts.get(shard.split, 0) + shard.rows
        return counts

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FOLDER_FORMAT,
                "version": self.version,
                "rows": self.rows,
                "splits": self.splits,
                "split_column": self.split_column,
                "shards": [asdict(shard) for shard in self.shards],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str) -> FolderRecord:
        """Parse and validate a record; ``where`` names it in errors.

        Raises
        ------
        FileReadError
            Not JSON, not a folder record, an unknown version, a mistyped
            field, a shard path leaving the folder, or totals that do not add up.
        """
        try:
            data = json.loads(text)
        except ValueError as error:
            raise FileReadError(f"unreadable folder record {where!r}: {error}; {REWRITE}") from error
        if not isinstance(data, dict) or data.get("format") != FOLDER_FORMAT:
            raise FileReadError(f"{where!r} is not a chexmask-u-tools folder record; {REWRITE}")
        if data.get("version") != FOLDER_VERSION:
            raise FileReadError(
                f"folder record {where!r} has version {data.get('version')!r}; this chexmask-u-tools reads version "
                f"{FOLDER_VERSION}: upgrade the package, or {REWRITE}"
            )
        try:
            shards = tuple(_shard(item) for item in data["shards"])
            record = cls(shards=shards, split_column=_typed(data["split_column"], bool))
            totals = (_typed(data["rows"], int), {str(k): _typed(v, int) for k, v in data["splits"].items()})
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise FileReadError(f"folder record {where!r} is malformed ({error}); {REWRITE}") from error
        if totals != (record.rows, record.splits) or len({shard.path for shard in shards}) != len(shards):
            raise FileReadError(f"folder record {where!r} does not add up (rows, splits or shard list); {REWRITE}")
        return record


def _typed(value: object, kind: type) -> object:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value


def _shard(item: object) -> FolderShard:
    if not isinstance(item, dict):
        raise TypeError(f"a shard entry must be an object, got {item!r}")
    path = _typed(item["path"], str)
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or ".." in parts or not path.endswith(".parquet") or "\\" in path:
        raise ValueError(f"shard path {path!r} is not a parquet file inside the folder")
    sha = _typed(item["sha256"], str)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"shard sha256 {sha!r} is not 64 hex digits")
    return FolderShard(path, _typed(item["split"], str), _typed(item["rows"], int), _typed(item["bytes"], int), sha)


def is_hub_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local folder holding a ``save_hub_folder`` record (``chexmask-u.json``)."""
    try:
        return (Path(path) / FOLDER_RECORD).is_file()
    except (OSError, TypeError, ValueError):
        return False


def read_folder_record(folder: str | os.PathLike) -> FolderRecord:
    """The validated :class:`FolderRecord` of a folder written by ``save_hub_folder``.

    Raises
    ------
    FileReadError
        No record, or one :meth:`FolderRecord.from_json` refuses.
    """
    file = Path(folder) / FOLDER_RECORD
    try:
        text = file.read_bytes()
    except FileNotFoundError as error:
        raise FileReadError(f"not a folder written by save_hub_folder (no {FOLDER_RECORD}): {str(folder)!r}") from error
    except OSError as error:
        raise FileReadError(f"unreadable folder record {str(file)!r}: {error}") from error
    return FolderRecord.from_json(text, where=str(file))


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 (hex) of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# (path, sha256) -> the stat identity it was verified under, in this process.
_VERIFIED: dict[tuple[str, str], tuple[int, ...]] = {}
_VERIFIED_LOCK = threading.Lock()


def verify_hub_folder(folder: str | os.PathLike, *, splits: Sequence[str] | None = None) -> list[tuple[FolderShard, Path]]:
    """Check a folder against its record; returns ``(shard, path)`` of the shards of ``splits`` (default all), in order.

    Every parquet file under the folder must be listed, and every listed shard
    must exist with its recorded size and sha256.

    Raises
    ------
    FileReadError
        A missing, unlisted, truncated or changed shard (named, with its rows),
        or a bad record.
    InputError
        A split the folder does not have.
    """
    root = Path(folder)
    record = read_folder_record(root)
    listed = {shard.path for shard in record.shards}
    unlisted = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.parquet") if p.is_file() and p.relative_to(root).as_posix() not in listed
    )
    if unlisted:
        raise FileReadError(
            f"the folder {str(root)!r} holds parquet files its record ({FOLDER_RECORD}) does not list: "
            f"{', '.join(unlisted[:5])}; they would add rows: remove them, or {REWRITE}"
        )
    if splits is not None:
        unknown = sorted(set(splits) - set(record.splits))
        if unknown:
            raise InputError(f"the folder {str(root)!r} has no split {unknown}; its splits are {list(record.splits)}")
    chosen = []
    for shard in record.shards:
        path = root / shard.path
        what = f"shard {shard.path!r} of the folder {str(root)!r} ({shard.rows} of the {record.splits[shard.split]} rows of split {shard.split!r})"
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise FileReadError(f"{what} is missing; {REWRITE}") from None
        if stat.st_size != shard.bytes:
            raise FileReadError(f"{what} has {stat.st_size} bytes, its record says {shard.bytes}; {REWRITE}")
        identity = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)
        key = (str(path.resolve()), shard.sha256)
        if _VERIFIED.get(key) != identity:
            if sha256_file(path) != shard.sha256:
                raise FileReadError(f"{what} does not match its sha256 in {FOLDER_RECORD} (changed or damaged); {REWRITE}")
            with _VERIFIED_LOCK:
                _VERIFIED[key] = identity
        if splits is None or shard.split in splits:
            chosen.append((shard, path))
    return chosen


def _canonical(lf: pl.LazyFrame, split: str | None) -> pl.LazyFrame:
    lf = plain_storage(lf).select(pl.col(name).cast(dtype) for name, dtype in CANONICAL_SCHEMA.items())
    return lf if split is None else lf.with_columns(pl.lit(split, dtype=pl.String).alias(SPLIT_COLUMN))


def scan_hub_folder(
    folder: str | os.PathLike, *, splits: Sequence[str] | None = None, with_split: bool | None = None
) -> pl.LazyFrame:
    """A lazy canonical table over a checked folder's shards (:func:`verify_hub_folder`).

    Parameters
    ----------
    splits:
        Read only these splits (default: all, in the record's order).
    with_split:
        Add a ``split`` column holding each row's split (default: when the
        saved table had one), after the canonical columns.

    Examples
    --------
    >>> import tempfile, pathlib, polars as pl
    >>> import chexmask_u_tools as cxu
    >>> table = cxu.load_sample().head(6).with_columns(split=pl.Series(["train"] * 4 + ["test"] * 2))
    >>> folder = cxu.save_hub_folder(table, pathlib.Path(tempfile.mkdtemp()) / "subset", progress=False)
    >>> scan_hub_folder(folder).group_by("split").len().sort("split").collect().rows()
    [('test', 2), ('train', 4)]
    >>> scan_hub_folder(folder, splits=["test"], with_split=False).collect().width
    19
    """
    record = read_folder_record(folder)
    chosen = verify_hub_folder(folder, splits=splits)
    add_split = record.split_column if with_split is None else with_split
    parts = []
    for split in dict.fromkeys(shard.split for shard, _ in chosen):
        paths = [str(path) for shard, path in chosen if shard.split == split]
        parts.append(_canonical(pl.scan_parquet(paths), split if add_split else None))
    if not parts:
        schema = {**CANONICAL_SCHEMA, **({SPLIT_COLUMN: pl.String} if add_split else {})}
        return pl.LazyFrame(schema=schema)
    return pl.concat(parts, how="vertical")


def iter_hub_folder_batches(
    folder: str | os.PathLike,
    *,
    batch_size: int = 1024,
    splits: Sequence[str] | None = None,
    with_split: bool = False,
) -> Iterator[pl.DataFrame]:
    """Canonical batches of at most ``batch_size`` rows of a checked folder, shard by shard (bounded memory).

    Every parquet page's CRC is verified while reading (the shards carry them).
    """
    import pyarrow.parquet as pq

    for shard, path in verify_hub_folder(folder, splits=splits):
        try:
            handle = pq.ParquetFile(path, page_checksum_verification=True)
            for batch in handle.iter_batches(batch_size=batch_size):
                frame = pl.from_arrow(batch)
                yield _canonical(frame.lazy(), shard.split if with_split else None).collect()
        except (OSError, ValueError, pl.exceptions.PolarsError) as error:
            raise FileReadError(f"unreadable shard {shard.path!r} of the folder {str(folder)!r}: {error}; {REWRITE}") from error
