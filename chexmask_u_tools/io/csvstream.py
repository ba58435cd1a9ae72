"""Incremental CSV reading with one set of integrity rules, for plain and compressed files alike.

Every CSV the toolkit reads goes through :func:`iter_csv_batches`: the file is
decompressed as a stream (``.gz``, ``.xz``, ``.zst``), parsed one block of
text at a time by pyarrow's streaming CSV reader, and handed on as polars
batches of String columns.  Memory is bounded by the block size (plus the rows
the caller keeps), never by the decompressed size, so a small "compression
bomb" costs time, not memory, and a single record larger than a block is an
error rather than an allocation.

The rules (one for every reader, the Hub streaming reader included):

* a record with fewer or more fields than the header, including a record cut
  mid-way (a truncated file that happens to end in a line break), or an
  unbalanced quote: :class:`~chexmask_u_tools.errors.RecordError` naming the
  file and the 0-based data row;
* a file whose last byte is not a line break (cut mid-record):
  :class:`~chexmask_u_tools.errors.FileReadError`;
* invalid UTF-8: :class:`~chexmask_u_tools.errors.RecordError` naming file,
  row and column;
* a corrupt, truncated or misnamed compressed stream:
  :class:`~chexmask_u_tools.errors.FileReadError` naming the file and the rows
  read so far;
* CR, LF and CRLF line endings are all line breaks; a header without rows is an
  empty table; a file without even a header is a ``FileReadError``.
"""

from __future__ import annotations

import atexit
import bz2
import csv
import gzip
import io
import lzma
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import polars as pl

from chexmask_u_tools.errors import CheXmaskUError, FileReadError, RecordError

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_BLOCK_SIZE",
    "CsvFile",
    "compression_of",
    "iter_csv_batches",
    "open_decompressed",
    "prefetched",
    "read_csv_header",
]

DEFAULT_BLOCK_SIZE = 8 << 20
"""Decompressed CSV text parsed per step (8 MiB, about 400 CheXmask-U rows); also the longest record accepted."""

COMPRESSIONS = {".gz": "gzip", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
"""File suffix -> compression, for the suffixes the readers decompress."""

_DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    lzma.LZMAError,
    gzip.BadGzipFile,
    EOFError,
    OSError,
    ValueError,
    zlib.error,
)


def compression_of(name: str) -> str | None:
    """The compression a file name's suffix says (``gzip``, ``xz``, ``zstd``, ``bz2``), or None."""
    lower = str(name).lower()
    return next((kind for suffix, kind in COMPRESSIONS.items() if lower.endswith(suffix)), None)


class _ArrowRaw(io.RawIOBase):
    """Python raw-stream view of a pyarrow input stream."""

    def __init__(self, native) -> None:
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


def open_decompressed(raw: BinaryIO, name: str) -> BinaryIO:
    """A binary stream of ``raw``'s decompressed bytes, by ``name``'s suffix (no suffix: ``raw`` buffered).

    Decompression is incremental: only what the reader asks for is inflated.
    """
    kind = compression_of(name)
    buffered = raw if isinstance(raw, io.BufferedIOBase) else io.BufferedReader(raw, buffer_size=1 << 20)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(buffered, mode="rb")
    if kind == "bz2":
        return bz2.BZ2File(buffered, mode="rb")
    if kind == "zstd":
        import pyarrow as pa

        native = pa.CompressedInputStream(pa.PythonFile(buffered, mode="r"), "zstd")
        return io.BufferedReader(_ArrowRaw(native), buffer_size=1 << 20)
    return buffered


class _TailTracking(io.RawIOBase):
    """Pass-through stream remembering the last byte read (for the truncation rule) and the bytes read."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self._inner = inner
        self.last_byte = b""
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        n = len(data)
        view[:n] = data
        if n:
            self.last_byte = data[-1:]
            self.bytes_read += n
        return n


class _Prefixed(io.RawIOBase):
    """``prefix`` bytes, then the rest of ``inner``: the bytes read past the header, given back."""

    def __init__(self, prefix: bytes, inner: BinaryIO) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if len(self._prefix):
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._inner.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()
        super().close()


def read_csv_header(stream: BinaryIO, file: str, *, limit: int = 1 << 20) -> tuple[list[str], BinaryIO]:
    """Read the header line (ended by LF, CRLF or a lone CR) and return its names and the stream after it.

    Repeated names become ``X``, ``X.1`` ... (as pandas and SPEC name them).

    Raises
    ------
    FileReadError
        An empty file, a header longer than ``limit`` bytes or not ended by a
        line break, an undecodable header, or a corrupt compressed stream.
    """
    head = b""
    try:
        while True:
            chunk = stream.read(1 << 16)
            head += chunk
            cut = min((i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0), default=-1)
            if cut >= 0 or not chunk or len(head) > limit:
                break
    except _DECOMPRESSION_ERRORS as error:
        raise FileReadError(f"cannot read {file!r}: {error}") from error
    if not head.strip():
        raise FileReadError(f"{file!r} is empty: no CSV header")
    if cut < 0:
        if len(head) > limit:
            raise FileReadError(f"cannot read {file!r}: no line break in its first {limit} bytes")
        raise FileReadError(f"{file!r} does not end with a line break: the file looks truncated (header only)")
    line, rest = head[:cut], head[cut + 1 :]
    if head[cut : cut + 2] == b"\r\n":
        rest = head[cut + 2 :]
    try:
        names = next(csv.reader([line.decode("utf-8-sig")]))
    except (UnicodeDecodeError, csv.Error) as error:
        raise FileReadError(f"cannot read the header of {file!r}: {error}") from error
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}.{count}")
    return unique, io.BufferedReader(_Prefixed(rest, stream), buffer_size=1 << 20)


def _locate_bad_record(reopen: Callable[[], BinaryIO], n_columns: int, first_row: int, file: str) -> Exception | None:
    """The error for the first record from ``first_row`` on with the wrong field count, scanning from the start.

    A short last record in a file that does not end with a line break is a
    truncated file (:class:`FileReadError`); any other is a :class:`RecordError`.
    """
    with reopen() as stream:
        tracked = _TailTracking(stream)
        reader = csv.reader(io.TextIOWrapper(io.BufferedReader(tracked), encoding="utf-8", errors="replace", newline=""))
        try:
            next(reader, None)  # header
            for row, record in enumerate(reader):
                if row >= first_row and record and len(record) != n_columns:
                    is_last = next(reader, None) is None
                    if is_last and tracked.last_byte not in (b"\n", b"\r"):
                        return FileReadError(f"{file!r} does not end with a line break: the file looks truncated")
                    return RecordError(
                        f"record has {len(record)} fields, expected {n_columns} "
                        "(a record cut short or run together, or an unbalanced quote)",
                        file=file,
                        row=row,
                    )
        except csv.Error as error:
            return RecordError(f"malformed record: {error}", file=file, row=reader.line_num - 1)
    return None


def _last_record_end(data: bytes) -> int:
    """Index of the last line break of ``data`` outside a quoted field, or -1.

    A line break ends a record exactly when an even number of quotes precedes
    it (CSV escapes a quote inside a field by doubling it, which keeps the parity).
    """
    end = max(data.rfind(b"\n"), data.rfind(b"\r"))
    while end >= 0 and data.count(b'"', 0, end) % 2:
        end = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
    return end


def _record_blocks(stream: BinaryIO, block_size: int, file: str, rows: Callable[[], int]) -> Iterator[bytes]:
    """The stream's text cut into pieces of whole records, about ``block_size`` bytes each.

    The cutting happens here, in the caller's thread: pyarrow then parses each
    piece from memory.  (pyarrow's own streaming reader reads ahead from the
    file on a background thread, and one still reading a Python file object
    when the process exits aborts the process.)
    """
    pending = b""
    while True:
        chunk = stream.read(block_size)
        if not chunk:
            if pending.strip():
                yield pending
            return
        data = pending + chunk
        end = _last_record_end(data)
        if end < 0:
            if len(data) > block_size:
                raise FileReadError(
                    f"cannot read {file!r} after row {rows()}: a record is longer than {block_size} bytes "
                    "(corrupt file, or an unbalanced quote)"
                )
            pending = data
            continue
        if data[: end + 1].strip():  # blank lines alone are no records (and pyarrow calls them an empty file)
            yield data[: end + 1]
        pending = data[end + 1 :]


def _open_reader(stream: BinaryIO, columns: list[str], block_size: int, text_type, file: str = "", rows=lambda: 0):
    """Record batches of the CSV text after the header: each piece of :func:`_record_blocks` parsed in memory."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read_options = pacsv.ReadOptions(column_names=columns, use_threads=True, block_size=2 * block_size + 1)
    parse_options = pacsv.ParseOptions(newlines_in_values=True)
    convert_options = pacsv.ConvertOptions(
        column_types={name: text_type for name in columns},
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],
    )
    for piece in _record_blocks(stream, block_size, file, rows):
        try:
            table = pacsv.read_csv(pa.py_buffer(piece), read_options=read_options, parse_options=parse_options, convert_options=convert_options)
        except pa.ArrowInvalid as error:
            if "CSV parse error" in str(error):
                located = _bad_record_in(piece, len(columns), rows(), file)
                if located is not None:
                    raise located from None
            raise
        yield from table.to_batches()


def _bad_record_in(piece: bytes, n_columns: int, first_row: int, file: str) -> CheXmaskUError | None:
    """The error for the first record of an in-memory piece of whole records with the wrong field count.

    ``first_row`` is the data row the piece starts at, so the row named is the
    file's.  A short last record of a piece that does not end with a line
    break (the end of a file cut mid-record) is a truncated file.
    """
    # Blank lines are no records (pyarrow skips them too), so they do not count as rows.
    records = [record for record in csv.reader(io.StringIO(piece.decode("utf-8", errors="replace"), newline="")) if record]
    for index, record in enumerate(records):
        if len(record) != n_columns:
            if index == len(records) - 1 and piece[-1:] not in (b"\n", b"\r"):
                return FileReadError(f"{file!r} does not end with a line break: the file looks truncated")
            return RecordError(
                f"record has {len(record)} fields, expected {n_columns} "
                "(a record cut short or run together, or an unbalanced quote)",
                file=file,
                row=first_row + index,
            )
    return None


def _locate_bad_utf8(reopen: Callable[[], BinaryIO], columns: list[str], file: str, block_size: int) -> RecordError | None:
    """The error naming row and column of the first invalid UTF-8 value (a second pass, reading bytes)."""
    import pyarrow as pa

    with reopen() as raw:
        _, stream = read_csv_header(raw, file)
        first_row = 0
        for batch in _open_reader(stream, columns, block_size, pa.binary(), file):
            for name, array in zip(columns, batch.columns):
                for row, value in enumerate(array.to_pylist()):
                    if value is not None and not _is_utf8(value):
                        return RecordError(f"invalid UTF-8 in column {name!r}", file=file, row=first_row + row, column=name)
            first_row += batch.num_rows
    return None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def iter_csv_batches(
    stream: BinaryIO,
    columns: list[str],
    *,
    file: str,
    block_size: int = DEFAULT_BLOCK_SIZE,
    reopen: Callable[[], BinaryIO] | None = None,
) -> Iterator[pl.DataFrame]:
    """Polars batches (every column a String, empty field = null) of a CSV stream positioned after its header.

    Parameters
    ----------
    stream:
        The decompressed bytes (see :func:`open_decompressed`), header already
        read with :func:`read_csv_header`.
    columns:
        The header's names.
    file:
        For messages.
    block_size:
        Text parsed per step: the memory bound, and the longest record accepted.
    reopen:
        Opens the decompressed stream afresh at its start; lets a ragged record
        be named by its exact row (without it, the row is the first of the
        block that holds it).

    Raises
    ------
    RecordError, FileReadError
        See the module rules.
    """
    import pyarrow as pa

    tracked = _TailTracking(stream)
    rows = 0
    try:
        # large_string: pyarrow validates UTF-8 while converting, and polars takes it without a copy of offsets
        stream_in = io.BufferedReader(tracked, buffer_size=1 << 20)
        for batch in _open_reader(stream_in, columns, block_size, pa.large_string(), file, lambda: rows):
            frame = pl.from_arrow(batch)
            frame.columns = columns  # pl.from_arrow renames a nameless column
            rows += frame.height
            yield frame
    except CheXmaskUError:
        raise
    except pa.ArrowInvalid as error:
        message = str(error)
        if "Empty CSV file" in message and rows == 0:
            return  # a header and no rows (or only blank lines): an empty table
        if "UTF8" in message or "UTF-8" in message:
            located = _locate_bad_utf8(reopen, columns, file, block_size) if reopen is not None else None
            raise located or RecordError(f"invalid UTF-8 at or after this row: {message[:200]}", file=file, row=rows) from None
        if "CSV parse error" in message:
            located = _locate_bad_record(reopen, len(columns), rows, file) if reopen is not None else None
            if located is not None:
                raise located from None
            raise RecordError(f"malformed record at or after this row: {message[:200]}", file=file, row=rows) from None
        raise FileReadError(f"cannot read {file!r} after row {rows}: {message[:300]}") from error
    except (pa.ArrowException, *_DECOMPRESSION_ERRORS) as error:
        raise FileReadError(f"cannot read {file!r} after row {rows}: {error}") from error
    if tracked.bytes_read and tracked.last_byte not in (b"\n", b"\r"):
        raise FileReadError(f"{file!r} does not end with a line break: the file looks truncated (after row {rows})")


class CsvFile:
    """One CSV file (plain or compressed, local or behind ``opener``), read as batches of String columns.

    ``opener`` returns the file's raw (still compressed) bytes; by default the
    local file ``path`` is opened.  The header is read once, on construction.

    Examples
    --------
    >>> import chexmask_u_tools as cxu
    >>> csv_file = CsvFile(str(cxu.sample_files()[0]))
    >>> csv_file.columns[:2]
    ['Path', 'Dice RCA (Mean)']
    >>> sum(batch.height for batch in csv_file.batches())
    40
    """

    def __init__(
        self, path: str, *, opener: Callable[[], BinaryIO] | None = None, block_size: int = DEFAULT_BLOCK_SIZE
    ) -> None:
        self.path = path
        self.block_size = block_size
        self._opener = opener
        with self.open() as stream:
            self.columns, _ = read_csv_header(stream, path)

    def open(self) -> BinaryIO:
        """The decompressed byte stream from the start of the file."""
        try:
            raw = self._opener() if self._opener is not None else open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError as error:
            raise FileReadError(f"file not found: {self.path!r}") from error
        return open_decompressed(raw, self.path)

    def batches(self) -> Iterator[pl.DataFrame]:
        """The data rows, a block at a time (see :func:`iter_csv_batches` for the rules)."""
        with self.open() as raw:
            _, stream = read_csv_header(raw, self.path)
            yield from iter_csv_batches(
                stream, self.columns, file=self.path, block_size=self.block_size, reopen=self.open
            )


def prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """``items`` produced by a background thread up to ``depth`` ahead, so that reading overlaps their use.

    pyarrow parses and decompresses without the GIL, polars canonicalizes
    without it: with the next block read while this one is processed, a file
    costs about the larger of the two, not their sum.  Exceptions are re-raised
    in the consumer; stopping early (``head``) stops and closes the producer.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message) -> bool:
        while not stop.is_set():
            try:
                handoff.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, who re-raises it
            put(("error", error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="chexmask-csv-reader", daemon=True)
    worker.start()
    _RUNNING[worker] = stop
    try:
        while True:
            kind, value = handoff.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        worker.join()
        _RUNNING.pop(worker, None)


_RUNNING: dict[threading.Thread, threading.Event] = {}
"""Reader threads of :func:`prefetched` whose consumer has not finished (or closed) yet."""


@atexit.register
def _stop_readers() -> None:
    # A consumer that stopped early (``scan_table(...).head(5)``) may leave its generator to the garbage
    # collector: stop its reader thread and let it close its file before the interpreter is torn down.
    for worker, stop in list(_RUNNING.items()):
        stop.set()
        worker.join(timeout=10)
