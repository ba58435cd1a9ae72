"""Streaming reads of one data file with bounded memory, surviving transient network errors."""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal

import polars as pl

from chexmask_u_tools.errors import CheXmaskUError, FileReadError
from chexmask_u_tools.hub.discovery import DataFile
from chexmask_u_tools.hub.location import DatasetLocation, RetryPolicy, with_retries
from chexmask_u_tools.io.csvstream import (
    group_batches,
    iter_csv_batches,
    open_decompressed,
    read_csv_header,
)
from chexmask_u_tools.io.table import (
    canonicalize_batch,
    detect_layout,
    is_index_column,
    map_columns,
)

__all__ = [
    "RetryingReader",
    "iter_file_batches",
]

_GROUP_BLOCKS = 8
_GROUP_ROWS = 2048
"""CSV blocks are canonicalized in groups of up to 8 blocks or 2,048 rows (16 MiB of text at the default block)."""

class RetryingReader(io.RawIOBase):
    """A read-only, seekable raw stream over ``opener()`` that survives transient errors.

    On a transient error (:func:`~chexmask_u_tools.hub.location.is_transient`)
    the underlying file is closed, the policy's delay is slept, the file is
    reopened and positioned at the current offset, and the read is tried
    again, within the policy's attempts and time budget; then one
    :class:`HubError` names the file, the byte offset and the last HTTP
    status.  Permanent Hub errors (403, not found...) raise ``HubError`` at
    once; a missing local file raises ``FileReadError``.

    Examples
    --------
    >>> import io
    >>> from chexmask_u_tools.hub import RetryingReader, RetryPolicy
    >>> failures = [3]
    >>> class Flaky(io.BytesIO):
    ...     def read(self, size=-1):
    ...         if failures and self.tell() >= failures[0]:
    ...             failures.pop()
    ...             raise ConnectionResetError("connection reset by peer")
    ...         return super().read(size)
    >>> reader = RetryingReader(lambda: Flaky(b"0123456789"), "x.csv", RetryPolicy(sleep=lambda s: None))
    >>> reader.read(3), reader.read(7)
    (b'012', b'3456789')
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
        def attempt() -> Any:
            if self._handle is None:
                self._handle = self._opener()
                if self._position:
                    self._handle.seek(self._position)
            return operation(self._handle)

        try:
            return with_retries(
                f"reading {self.name_in_repo!r} at byte {self._position}",
                attempt,
                self._policy,
                on_failure=lambda error: self._drop_handle(),
            )
        except FileNotFoundError as error:
            raise FileReadError(f"file not found: {self.name_in_repo!r}") from error

    def _drop_handle(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(Exception):  # the connection is already broken; closing it may fail too
                self._handle.close()
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
    columns: dict[str, str] | None = None,
) -> Iterator[pl.DataFrame]:
    """Canonical batches of one data file, read incrementally (one CSV block / parquet batch at a time).

    ``block_size`` is the CSV text (after decompression) read per step, and
    up to 8 blocks are canonicalized together (2 MiB blocks keep the process
    flat on 20 kB rows; 8 MiB blocks are barely faster and let allocator caches
    grow).  It bounds memory, not what is accepted: every reader takes the same files
    (:mod:`~chexmask_u_tools.io.csvstream`'s rules, records up to
    :data:`~chexmask_u_tools.io.csvstream.MAX_RECORD_BYTES` whatever the block).

    ``skipped`` (when given) accumulates {reason: count} of rows dropped under
    ``on_error="skip"``.

    ``columns`` (``{"their name": "known name"}``) renames the file's columns
    before its layout is detected, as in
    :func:`~chexmask_u_tools.io.table.scan_table` (see
    :func:`~chexmask_u_tools.io.table.map_columns`).

    Raises
    ------
    SchemaError
        The columns match no known variant.
    FileReadError
        Truncated, corrupt or undecodable file (named).
    HubError
        Repeated network failure while reading (named, with the byte offset).
    RecordError
        A bad row with ``on_error="raise"``, or a malformed record, naming the
        file, the row counted from 0 after the header (as ``read_table``
        counts it: blank lines are no rows) and the image id.
    """
    import pyarrow as pa

    policy = retry or getattr(location, "retry", None) or RetryPolicy()
    raw = RetryingReader(lambda: location.open(item.path), item.path, policy)
    stream = open_decompressed(raw, item.path)
    offset = 0

    def detect(names: list[str]):
        return detect_layout(names, file_name=item.path, source=item.source, frame=item.frame, masks=masks)

    try:
        layout = None
        if item.format == "parquet":
            batches = _parquet_batches(stream, max(1, block_size // 20_000))
        else:
            # The layout comes from the header, before any row: a header without rows is still checked,
            # and a malformed record is named by the value in its id column.
            header_columns, stream = read_csv_header(stream, item.path)
            kept = [name for name in header_columns if not is_index_column(name)]
            renamed = map_columns(kept, columns, file=item.path) if columns else kept
            layout = detect(renamed)
            id_header = kept[renamed.index(layout.id_column)]
            # The CSV rules of every reader (ragged records, cut files, UTF-8, header-only = empty).
            blocks = iter_csv_batches(stream, header_columns, file=item.path, block_size=block_size, id_column=id_header)
            # Canonicalized a group of blocks at a time: a step costs a few milliseconds whatever its rows.
            batches = group_batches(blocks, _GROUP_BLOCKS * block_size, _GROUP_ROWS)
        # The last batch is held back until the end of the file is seen, so that the rows of a
        # file cut mid-record are never handed out before it is refused (the rule of read_table).
        held = None
        for batch in batches:
            drop = [c for c in batch.columns if is_index_column(c)]
            if drop:
                batch = batch.drop(drop)
            if columns:
                batch.columns = map_columns(batch.columns, columns, file=item.path)
            if layout is None:
                layout = detect(batch.columns)
            canonical, counts = canonicalize_batch(batch, layout, file=item.path, row_offset=offset, on_error=on_error)
            offset += batch.height
            if skipped is not None:
                for reason, count in counts.items():
                    skipped[reason] = skipped.get(reason, 0) + count
            if held is not None:
                yield held
            held = canonical if canonical.height else None
        # iter_csv_batches has now seen the end of the file without refusing it.
        if held is not None:
            yield held
    except CheXmaskUError:
        raise
    except (pa.ArrowInvalid, pa.ArrowException, EOFError, lzma.LZMAError, gzip.BadGzipFile, OSError, ValueError) as error:
        raise FileReadError(f"cannot read {item.path!r} after row {offset}: {error}") from error
    finally:
        stream.close()
        raw.close()
