"""Columnar rows mapped from disk: what the torch datasets need of each kept row, built once.

A dataset's input (an eager or lazy table, a cache, a Hugging Face dataset)
becomes one :class:`RowStore`: a folder of uncompressed ``.npy`` arrays (and an
Arrow IPC file for ``fields``) holding only the columns a sample needs, for the
rows that pass the rules, in the input's order:

=================  ======================  ==========================================
file               dtype, shape            content
=================  ======================  ==========================================
``row``            int64 (N,)              the row's index in the input table
``weight``         float64 (N,)            the sample weight (weighting x rules)
``mask_valid``     bool (N, 3)             False where a ``drop_organ`` rule failed
``landmarks``      float32 (N, 120, 2)     in the row's own frame and pixels
``std``            float32 (N, 120, 2)     per-node std (only when the input has std)
``has_std``        bool (N,)
``height``,        int32 (N,)              the row's stated size (-1: none)
``width``
``source``,        uint8 (N,)              codes into ``meta.json``'s ``sources`` /
``frame``                                  ``frames``
``id_offsets``,    int64 (N + 1,), bytes   image ids as Arrow lays out strings:
``ids.bin``                                offsets into UTF-8 bytes
``labels``         float32 (N, L)          the ``labels=`` columns (NaN: null)
``fields.arrow``   Arrow IPC file          the ``fields=`` columns
=================  ======================  ==========================================

Every process maps the same pages (``np.load(mmap_mode="r")``), so DataLoader
workers started with fork, spawn or forkserver share them instead of holding a
copy: a pickled store is its folder path and key, mapped again in the worker.

Where stores live.  A store is reused by later datasets when its input has an
identity that can be checked without reading the data (its *origin*):

==========================  ==================================  ===========================================
input                       origin (what the key covers)        store folder (or ``store_dir=``)
==========================  ==================================  ===========================================
a cache folder              its revision and shard checksums    ``<cache>/rowstore/<key>/``
a table file or folder      each data file's resolved path,     :func:`default_store_root` ``/<key>/``
(``open_table``)            size, ``mtime_ns`` and inode
a ``datasets.Dataset``      its fingerprint and the identities  :func:`default_store_root` ``/<key>/``
with Arrow cache files      of its cache files
==========================  ==================================  ===========================================

The key is a sha256 over the origin, the rules, the weighting and the columns
stored.  Any other input (an eager or lazy polars table, a pandas frame, an
in-memory ``datasets.Dataset``, ``"sample"``, a Hub id) gets a temporary store
under ``default_store_root()/tmp/`` that its dataset removes when it is garbage
collected or the process ends; the next temporary store removes those of
processes that died before they could.

Integrity.  ``meta.json`` records the format, the key, the input's identity
and every file's size; opening a store checks them, so a truncated or foreign
store is a :class:`~chexmask_u_tools.errors.FileReadError` (the damaged folder
is removed: constructing the dataset again rebuilds it), and a store whose
input changed since (a cache rebuilt or edited, a table file or a dataset's
cache file rewritten, replaced or removed) is refused in every process that
maps it.  A store is written under a temporary name and renamed when complete;
a build that fails (a full disk) leaves nothing that is later trusted, and the
next build removes what a killed one left, and every store in its folder whose
input changed since (it could never be opened again).  One build per key at a
time (a file lock), so DDP ranks constructing the same dataset build it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from chexmask_u_tools._atomic import fsync_directory, process_alive
from chexmask_u_tools.errors import FileReadError, InputError
from chexmask_u_tools.layout import N_NODES, ORGANS
from chexmask_u_tools.select.rules import mask_valid_columns
from chexmask_u_tools.train.sample import RowRecord

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "RowStore",
    "StoreSpec",
    "build_store",
    "default_store_root",
    "file_identities",
    "open_or_build_store",
    "origin_now",
    "origin_of_cache",
    "origin_of_dataset",
    "origin_of_path",
    "remove_outdated_stores",
    "remove_stale_builds",
    "store_key",
    "temporary_store_dir",
]

STORE_FORMAT = "chexmask-u-rowstore"
STORE_VERSION = 1
BATCH_ROWS = 16_384
"""Rows per batch while a store is written (bounds the build's memory)."""

_TEMPORARY_MARK = ".building-"
_TEMPORARY_STORE = "rows-"


def _owner() -> str:
    """``<pid>@<host>``: who made a temporary folder (a cache folder may be shared by several machines)."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
    return f"{os.getpid()}@{host}"


def _left_by_a_dead_process(owner: str) -> bool:
    """Whether the process named by ``owner`` (``<pid>@<host>``, or a bare pid) ran on this machine and is gone."""
    pid_text, _, host = owner.partition("@")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    here = _owner().partition("@")[2]
    return (not host or host == here) and pid != os.getpid() and not process_alive(pid)


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds besides the fixed columns: the ``fields`` and ``labels`` columns, and whether std is kept."""

    fields: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    std: bool = True


def origin_of_cache(directory: Path) -> dict[str, Any]:
    """The identity of a cache's content: its revision, selection and shard checksums (from its manifest)."""
    from chexmask_u_tools.hub.manifest import read_manifest

    manifest = read_manifest(directory)
    return {
        "kind": "cache",
        "path": str(directory.resolve()),
        "revision": manifest.revision,
        "shards": sorted(record.sha256 for record in manifest.shards.values()),
    }


def default_store_root() -> Path:
    """Where the stores of table files and ``datasets`` inputs go: ``rowstore`` under the user's cache.

    That is ``$CHEXMASK_U_CACHE/rowstore``, else ``$XDG_CACHE_HOME/chexmask-u-tools/rowstore``,
    else ``~/.cache/chexmask-u-tools/rowstore``
    (:func:`~chexmask_u_tools.hub.cache.default_cache_dir`); temporary stores
    go to its ``tmp`` folder.  Delete it to reclaim the space.

    Examples
    --------
    >>> default_store_root().name
    'rowstore'
    """
    from chexmask_u_tools.hub.cache import default_cache_dir

    return default_cache_dir() / "rowstore"


def file_identities(paths: list[Path]) -> list[list[Any]]:
    """``[resolved path, size, mtime_ns, inode]`` of each file: what changes when a file is rewritten or replaced.

    Raises :class:`FileNotFoundError` (an ``OSError``) for a file that is gone.
    """
    identities = []
    for path in paths:
        resolved = Path(path).resolve()
        status = resolved.stat()
        identities.append([str(resolved), status.st_size, status.st_mtime_ns, status.st_ino])
    return identities


def origin_of_path(path: str | os.PathLike) -> dict[str, Any]:
    """The identity of a table file, or of a folder's data files (every file not under a hidden name, as a mirror lists them)."""
    from chexmask_u_tools.hub.location import LocalMirror

    resolved = Path(path).resolve()
    if resolved.is_dir():
        files = [resolved / entry.path for entry in LocalMirror(resolved).list_files()]
    else:
        files = [resolved]
    return {"kind": "files", "path": str(resolved), "files": file_identities(files)}


def origin_of_dataset(dataset: Any) -> dict[str, Any] | None:
    """The identity of a ``datasets.Dataset`` backed by Arrow cache files (its fingerprint and files); None when in memory."""
    files = [Path(item["filename"]) for item in dataset.cache_files]
    fingerprint = getattr(dataset, "_fingerprint", None)
    if not files or not fingerprint:
        return None
    return {"kind": "datasets", "fingerprint": fingerprint, "files": file_identities(files)}


def origin_now(origin: dict[str, Any]) -> dict[str, Any]:
    """What ``origin`` (as recorded when a store was built) is now; a store is valid while the two are equal.

    Raises ``OSError`` (or the cache's own error) when the input cannot be read now (removed).
    """
    kind = origin.get("kind")
    if kind == "cache":
        return origin_of_cache(Path(origin["path"]))
    if kind == "files":
        return origin_of_path(origin["path"])
    if kind == "datasets":
        return {**origin, "files": file_identities([Path(item[0]) for item in origin["files"]])}
    return origin  # a temporary store's input: nothing outside the process to check


def _describe(origin: dict[str, Any]) -> str:
    kind = origin.get("kind")
    if kind == "cache":
        return f"the cache at {origin['path']!r}"
    if kind == "files":
        return f"the table at {origin['path']!r}"
    files = [item[0] for item in origin.get("files", [])]
    more = f" (and {len(files) - 1} more)" if len(files) > 1 else ""
    return f"the datasets.Dataset in {files[0]!r}{more}" if files else "its input"


def store_key(origin: dict[str, Any], rules: list[str], weighting: str, spec: StoreSpec) -> str:
    """sha256 (hex, 32 characters) naming the store of ``origin`` under these rules, weighting and columns."""
    text = json.dumps(
        {"version": STORE_VERSION, "origin": origin, "rules": rules, "weighting": weighting,
         "fields": list(spec.fields), "labels": list(spec.labels), "std": spec.std},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _codes(values: pl.Series, names: list[str]) -> np.ndarray:
    """uint8 codes of a string column into ``names`` (extended with new values in order of appearance)."""
    for value in values.unique(maintain_order=True).to_list():
        if value not in names:
            names.append(value)
    if len(names) > 255:
        raise InputError(f"a row store holds at most 255 distinct values of a code column, got {len(names)}")
    lookup = {name: code for code, name in enumerate(names)}
    return values.replace_strict(lookup, return_dtype=pl.UInt8).to_numpy()


class _ArrayFile:
    """An ``.npy`` file written front to back: its header (the row count is known from the first pass), then rows."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.handle = open(path, "wb")
        self.dtype, self.row_shape = np.dtype(dtype), shape[1:]
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.handle, header)

    def write(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if values.shape[1:] != self.row_shape:
            raise FileReadError(f"a batch of shape {values.shape} does not fit rows of shape {self.row_shape}")
        self.handle.write(memoryview(values).cast("B"))

    def close(self) -> None:
        self.handle.close()


class _Writer:
    """Writes a store folder batch by batch, each file front to back (sequential writes, no mapped pages)."""

    def __init__(self, folder: Path, n: int, spec: StoreSpec, has_std_column: bool) -> None:
        self.folder, self.n, self.spec = folder, n, spec
        self.arrays: dict[str, _ArrayFile] = {
            "landmarks": _ArrayFile(folder / "landmarks.npy", np.float32, (n, N_NODES, 2)),
            "height": _ArrayFile(folder / "height.npy", np.int32, (n,)),
            "width": _ArrayFile(folder / "width.npy", np.int32, (n,)),
            "source": _ArrayFile(folder / "source.npy", np.uint8, (n,)),
            "frame": _ArrayFile(folder / "frame.npy", np.uint8, (n,)),
        }
        if spec.std and has_std_column:
            self.arrays["std"] = _ArrayFile(folder / "std.npy", np.float32, (n, N_NODES, 2))
        self.sources: list[str] = []
        self.frames: list[str] = []
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        self.ids = open(folder / "ids.bin", "wb")
        self.fields_writer = None
        self.done = 0
        # What identifies the stored rows (resume states must come from the same rows): ids, rows, weights.
        self.content = hashlib.sha256()

    def add(self, batch: pl.DataFrame) -> None:
        lo, hi = self.done, self.done + batch.height
        if hi > self.n:
            raise FileReadError(f"the input gave more rows than its first pass counted ({hi} > {self.n}); it changed while read")
        arrays = self.arrays
        arrays["landmarks"].write(batch["landmarks"].to_numpy())
        if "std" in arrays:
            std = batch["landmarks_std"]
            if std.null_count():  # rows without std hold zeros (has_std says which)
                values = np.zeros((batch.height, N_NODES, 2), dtype=np.float32)
                present = std.is_not_null().to_numpy()
                if present.any():
                    values[present] = std.filter(std.is_not_null()).to_numpy()
            else:
                values = std.to_numpy()
            arrays["std"].write(values)
        arrays["height"].write(batch["height"].fill_null(-1).to_numpy())
        arrays["width"].write(batch["width"].fill_null(-1).to_numpy())
        arrays["source"].write(_codes(batch["source"], self.sources))
        arrays["frame"].write(_codes(batch["frame"], self.frames))
        ids = batch["image_id"]
        lengths = ids.str.len_bytes().to_numpy().astype(np.int64)
        self.offsets[lo + 1 : hi + 1] = self.offsets[lo] + np.cumsum(lengths)
        text = "".join(ids.to_list()).encode("utf-8")
        self.content.update(lengths.tobytes())
        self.content.update(text)
        self.ids.write(text)
        if self.spec.fields:
            self._add_fields(batch.select(self.spec.fields))
        self.done = hi

    def _add_fields(self, fields: pl.DataFrame) -> None:
        import pyarrow as pa

        table = fields.to_arrow()
        if self.fields_writer is None:
            self.fields_writer = pa.ipc.new_file(str(self.folder / "fields.arrow"), table.schema)
        self.fields_writer.write_table(table)

    def finish(self, small: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if self.done != self.n:
            raise FileReadError(f"the input gave {self.done} rows, its first pass counted {self.n}; it changed while read")
        self.ids.close()
        for array in self.arrays.values():
            array.close()
        if self.spec.fields and self.fields_writer is None:  # no rows: an empty file with the columns' schema
            self._add_fields(pl.DataFrame(schema={name: pl.String for name in self.spec.fields}))
        if self.fields_writer is not None:
            self.fields_writer.close()
        np.save(self.folder / "id_offsets.npy", self.offsets)
        for name, values in small.items():
            np.save(self.folder / f"{name}.npy", values)
        for name in sorted(small):
            self.content.update(np.ascontiguousarray(small[name]).tobytes())
        meta = dict(meta, sources=self.sources, frames=self.frames, rows=self.n, content=self.content.hexdigest()[:32])
        meta["files"] = {path.name: path.stat().st_size for path in sorted(self.folder.iterdir())}
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=1))
        for path in self.folder.iterdir():
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())

    def abandon(self) -> None:
        for handle in [self.ids, *(array.handle for array in self.arrays.values())]:
            with contextlib.suppress(Exception):
                handle.close()
        with contextlib.suppress(Exception):
            if self.fields_writer is not None:
                self.fields_writer.close()


def build_store(
    kept: pl.DataFrame,
    batches: Iterator[pl.DataFrame],
    target: Path,
    *,
    spec: StoreSpec,
    has_std_column: bool,
    labels: np.ndarray | None,
    meta: dict[str, Any],
) -> Path:
    """Write a store to ``target`` from the first pass's small columns and the second pass's batches.

    ``kept`` holds, per kept row in order, ``__row``, ``sample_weight``,
    ``__without_std`` and the ``mask_valid_*`` columns; ``batches`` yield the
    same rows (in order, with ``__row``) and the stored columns.  The folder
    appears complete or not at all.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target.parent)
    folder = target.parent / f"{_TEMPORARY_MARK}{target.name}-{_owner()}-{os.urandom(4).hex()}"
    folder.mkdir()
    writer = None
    try:
        writer = _Writer(folder, kept.height, spec, has_std_column)
        expected = kept["__row"].to_numpy()
        for batch in batches:
            rows = batch["__row"].to_numpy()
            if not np.array_equal(rows, expected[writer.done : writer.done + len(rows)]):
                raise FileReadError("the input's rows changed between the two passes that build the dataset's row store")
            writer.add(batch)
        names = mask_valid_columns()
        small = {
            "row": expected.astype(np.int64),
            "weight": kept["sample_weight"].to_numpy().astype(np.float64),
            "has_std": ~kept["__without_std"].to_numpy().astype(bool),
            "mask_valid": np.stack(
                [kept[names[o]].fill_null(True).to_numpy() if names[o] in kept.columns else np.ones(kept.height, bool) for o in ORGANS],
                axis=1,
            ).astype(bool).reshape(kept.height, len(ORGANS)),
        }
        if labels is not None:
            small["labels"] = labels.astype(np.float32).reshape(kept.height, len(spec.labels))
        writer.finish(small, meta)
        try:
            os.replace(folder, target)
        except OSError:
            # Another process finished the same store first: keep theirs.
            if not (target / "meta.json").is_file():
                raise
            shutil.rmtree(folder, ignore_errors=True)
        fsync_directory(target.parent)
    except BaseException:
        if writer is not None:
            writer.abandon()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return target


def remove_stale_builds(directory: Path) -> None:
    """Remove the temporary folders of store builds whose process is gone (a killed or failed run on this machine)."""
    for leftover in directory.glob(f"{_TEMPORARY_MARK}*"):
        parts = leftover.name.rsplit("-", 2)
        if len(parts) == 3 and _left_by_a_dead_process(parts[1]):
            shutil.rmtree(leftover, ignore_errors=True)


class RowStore:
    """A mapped row store (module docstring): arrays over the kept rows, shared by every process that opens it.

    Parameters
    ----------
    directory:
        The store's folder.
    key:
        The key it must carry (None: any).

    Raises
    ------
    FileReadError
        Not a store, another format version or key, a file missing or of
        another size (truncated), or its cache changed since it was built.
    """

    def __init__(self, directory: str | os.PathLike, key: str | None = None) -> None:
        self.directory = Path(directory)
        self.key = key
        self.built_from: dict[str, Any] | None = None
        self._open()

    def _fail(self, problem: str) -> FileReadError:
        return FileReadError(f"the dataset's row store {str(self.directory)!r} {problem}")

    def _open(self) -> None:
        meta_path = self.directory / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            if self.built_from is not None and self.built_from.get("kind") in ("cache", "files", "datasets"):
                raise self._fail(
                    f"is gone: {_describe(self.built_from)} it was built from has changed since "
                    "(rebuilt, rewritten or removed); build the dataset again"
                ) from None
            raise self._fail("has no meta.json (not a row store, or an incomplete one)") from None
        except (OSError, ValueError) as error:
            raise self._fail(f"has an unreadable meta.json ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise self._fail("is not a chexmask-u-tools row store")
        if meta.get("version") != STORE_VERSION:
            raise self._fail(f"has format version {meta.get('version')!r}; this chexmask-u-tools reads version {STORE_VERSION}")
        if self.key is not None and meta.get("key") != self.key:
            raise self._fail(f"holds key {meta.get('key')!r}, not {self.key!r}")
        for name, size in meta["files"].items():
            path = self.directory / name
            actual = path.stat().st_size if path.is_file() else None
            if actual != size:
                raise self._fail(f"has {name} of {actual} bytes where {size} were written (truncated or changed)")
        origin = meta.get("origin") or {}
        try:
            now = origin_now(origin)
        except Exception as error:  # the input is gone or unreadable: the store no longer describes it
            raise self._fail(f"was built from {_describe(origin)}, which cannot be read now ({error})") from None
        if now != origin:
            if origin.get("kind") == "cache":
                change = f"at revision {origin['revision']!r}, which has changed since (now revision {now['revision']!r} with other shards)"
            else:
                change = "whose files have changed since (rewritten, replaced, added or removed)"
            raise self._fail(f"was built from {_describe(origin)} {change}; build the dataset again")
        self.meta = meta
        self.built_from = origin
        self.n = int(meta["rows"])
        load = self._load
        self.rows, self.weights, self.has_std, self.mask_valid = load("row"), load("weight"), load("has_std"), load("mask_valid")
        self.landmarks = load("landmarks")
        self.std = load("std") if "std.npy" in meta["files"] else None
        self.heights, self.widths = load("height"), load("width")
        self.source_codes, self.frame_codes = load("source"), load("frame")
        self.sources, self.frames = list(meta["sources"]), list(meta["frames"])
        self.id_offsets = load("id_offsets")
        size = meta["files"]["ids.bin"]
        self.id_bytes = np.memmap(self.directory / "ids.bin", dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        self.labels = load("labels") if "labels.npy" in meta["files"] else None
        self.fields = None
        if "fields.arrow" in meta["files"]:
            import pyarrow as pa

            self.fields = pa.ipc.open_file(pa.memory_map(str(self.directory / "fields.arrow"))).read_all()

    def _load(self, name: str) -> np.ndarray:
        try:
            array = np.load(self.directory / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError) as error:
            raise self._fail(f"has an unreadable {name}.npy ({error})") from None
        if len(array) != self.n + (name == "id_offsets"):
            raise self._fail(f"has {len(array)} rows in {name}.npy, meta.json says {self.n}")
        return array

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict[str, Any]:
        # Workers map the folder again: the pickle holds its path and key, not its arrays.
        return {"directory": str(self.directory), "key": self.meta["key"], "built_from": self.built_from}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.directory = Path(state["directory"])
        self.key = state["key"]
        self.built_from = state["built_from"]
        self._open()

    def image_id(self, i: int) -> str:
        """The image id of stored row ``i``."""
        return bytes(self.id_bytes[self.id_offsets[i] : self.id_offsets[i + 1]]).decode("utf-8")

    def source(self, i: int) -> str:
        return self.sources[self.source_codes[i]]

    def field_values(self, i: int) -> dict[str, Any]:
        """The ``fields`` columns of stored row ``i`` as Python values."""
        if self.fields is None:
            return {}
        return {name: self.fields.column(name)[i].as_py() for name in self.fields.column_names}

    def record(self, i: int, row: int, label_policy: Any = None) -> RowRecord:
        """Stored row ``i`` as the sample builder reads it (arrays are read-only views of the mapped files).

        ``row`` is what the sample reports as ``row``; ``label_policy`` (a
        :class:`~chexmask_u_tools.train.options.LabelPolicy`) turns the stored
        label values into ``labels`` and ``label_mask``.
        """
        height, width = int(self.heights[i]), int(self.widths[i])
        labels = label_mask = None
        if self.labels is not None:
            labels, label_mask = label_policy.apply(self.labels[i])
        return RowRecord(
            source=self.source(i),
            image_id=self.image_id(i),
            frame=self.frames[self.frame_codes[i]],
            height=height if height >= 0 else None,
            width=width if width >= 0 else None,
            landmarks=self.landmarks[i],
            std=self.std[i] if self.std is not None and self.has_std[i] else None,
            sample_weight=float(self.weights[i]),
            mask_valid=self.mask_valid[i],
            row=int(row),
            fields=self.field_values(i),
            labels=labels,
            label_mask=label_mask,
        )

    def ids_frame(self) -> pl.DataFrame:
        """``source`` and ``image_id`` of every stored row (Python-side strings: for checks, not per sample)."""
        offsets = np.asarray(self.id_offsets)
        import pyarrow as pa

        ids = pa.LargeStringArray.from_buffers(self.n, pa.py_buffer(np.ascontiguousarray(offsets)), pa.py_buffer(np.asarray(self.id_bytes)))
        return pl.DataFrame(
            {
                "source": pl.Series(self.sources, dtype=pl.String)[pl.Series(np.asarray(self.source_codes))],
                "image_id": pl.from_arrow(ids).cast(pl.String),
            }
        ) if self.n else pl.DataFrame(schema={"source": pl.String, "image_id": pl.String})


def _remove_folder(path: str, owner: int) -> None:
    # Only the process that built a temporary store removes it (forked workers inherit this finalizer).
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def temporary_store_dir(owner: object, root: Path | None = None) -> Path:
    """A fresh folder for a temporary store under ``root`` (default ``default_store_root()/tmp``).

    It is removed when ``owner`` is garbage collected or the process ends;
    those of processes of this machine that are gone (killed before they
    could) are removed now (the folder is named ``rows-<pid>@<host>-...``: a
    cache folder shared by several machines keeps the others').  Not the system's temporary folder: that may be held in memory.
    """
    root = Path(root) if root is not None else default_store_root() / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(f"{_TEMPORARY_STORE}*"):
        parts = leftover.name.split("-")
        if len(parts) == 3 and _left_by_a_dead_process(parts[1]):
            shutil.rmtree(leftover, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{_TEMPORARY_STORE}{_owner()}-", dir=root))
    weakref.finalize(owner, _remove_folder, str(path), os.getpid())
    return path


def open_or_build_store(target: Path, key: str, build) -> RowStore:
    """The store at ``target`` (key ``key``), built by ``build(target)`` under a lock when absent.

    A store that exists but fails its checks is removed and reported
    (:class:`~chexmask_u_tools.errors.FileReadError`): the next call rebuilds it.
    """
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f"{target.name}.lock")):
        if target.exists():
            try:
                return RowStore(target, key)
            except FileReadError as error:
                shutil.rmtree(target, ignore_errors=True)
                raise FileReadError(f"{error}; the damaged store was removed: construct the dataset again to rebuild it") from None
        build(target)
    return RowStore(target, key)


def remove_outdated_stores(directory: Path, origin: dict[str, Any]) -> None:
    """Remove the stores under ``directory`` that can never be opened again.

    Those built from an earlier state of the cache of ``origin`` (another
    revision or shards), and those of table files or ``datasets`` cache files
    that have changed or are gone since (their identity no longer holds).
    """
    for meta_path in directory.glob("*/meta.json"):
        with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
            built_from = json.loads(meta_path.read_text()).get("origin") or {}
            if built_from.get("kind") == "cache":
                outdated = built_from.get("path") == origin.get("path") and built_from != origin
            elif built_from.get("kind") in ("files", "datasets"):
                try:
                    outdated = origin_now(built_from) != built_from
                except OSError:
                    outdated = True  # its input is gone
            else:
                outdated = False
            if outdated:
                shutil.rmtree(meta_path.parent, ignore_errors=True)
