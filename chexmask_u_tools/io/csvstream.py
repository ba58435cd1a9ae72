"""Incremental CSV reading with one set of integrity rules, for plain and compressed files alike.

Every CSV the toolkit reads goes through :func:`iter_csv_batches`: the file is
decompressed as a stream (``.gz``, ``.xz``, ``.zst``, ``.bz2``), cut into
pieces of whole records a block of text at a time, and each piece is parsed in
memory into a polars batch of String columns.  Memory is bounded by the block
size (plus the rows the caller keeps), never by the decompressed size, so a
small "compression bomb" costs time, not memory.

Two parsers read a piece, with one result.  polars parses plain text (every
quote at a field's edge, no CR line breaks, every record with the header's
field count), which is nearly all of a CheXmask file; pyarrow, the reference,
parses anything else and decides what is an error, which Python's ``csv``
module then locates by record.  The cutting happens in the caller's thread
and both parsers read from memory: no thread reads ahead from the file.

The rules (one for every reader: ``read_table``, ``scan_table``, the Hub
streaming reader behind ``hub.load``/``hub.scan`` and ``build_cache``):

* a record with fewer or more fields than the header, including a record cut
  mid-way (a truncated file that happens to end in a line break), or an
  unbalanced quote: :class:`~chexmask_u_tools.errors.RecordError` naming the
  file, the 0-based data row (header excluded, blank lines not counted) and the
  value at the id column's position;
* a file whose last byte is not a line break (cut mid-record):
  :class:`~chexmask_u_tools.errors.FileReadError`;
* a record longer than :data:`MAX_RECORD_BYTES` (8 MiB), whatever the block
  size: :class:`~chexmask_u_tools.errors.FileReadError`;
* invalid UTF-8: :class:`~chexmask_u_tools.errors.RecordError` naming file,
  row and column;
* a corrupt, truncated or misnamed compressed stream:
  :class:`~chexmask_u_tools.errors.FileReadError` naming the file and the rows
  read so far;
* CR, LF and CRLF line endings are all line breaks; blank lines are no
  records; a header without rows is an empty table; a file without even a
  header is a ``FileReadError``.
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

import numpy as np
import polars as pl

from chexmask_u_tools import kernels  # kernels.parse (and numba) load at the first read, not at import
from chexmask_u_tools.errors import CheXmaskUError, FileReadError, RecordError

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_BLOCK_SIZE",
    "MAX_RECORD_BYTES",
    "CsvFile",
    "compression_of",
    "group_batches",
    "iter_csv_batches",
    "open_decompressed",
    "prefetched",
    "read_csv_header",
]

DEFAULT_BLOCK_SIZE = 8 << 20
"""Decompressed CSV text parsed per step (8 MiB, about 400 CheXmask-U rows)."""

MAX_RECORD_BYTES = 8 << 20
"""The longest record every reader accepts (8 MiB), whatever its block size: a longer one is a ``FileReadError``."""

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


class _Prefixed(io.RawIOBase):
    """``prefix`` bytes, then the rest of ``inner``: the bytes read past the header, given back.

    Reads go straight to ``inner`` once the prefix is spent (no copy through
    another buffer): the readers ask for megabytes at a time.
    """

    def __init__(self, prefix: bytes, inner: BinaryIO) -> None:
        super().__init__()
        self._prefix = prefix
        self._inner = inner

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            head, self._prefix = (self._prefix, b"") if size < 0 or size >= len(self._prefix) else (
                self._prefix[:size],
                self._prefix[size:],
            )
            return head
        return self._inner.read(size)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            data = self.read(len(view))
            view[: len(data)] = data
            return len(data)
        return self._inner.readinto(view)

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
    return unique, _Prefixed(rest, stream)


def _locate_in_piece(
    piece: bytes, columns: list[str], first_row: int, file: str, id_index: int | None
) -> CheXmaskUError | None:
    """The error for the first bad record of a piece of whole records (wrong field count, invalid UTF-8), or None.

    The piece is read again with Python's ``csv`` module, record by record;
    blank lines are no records (as for the parser), so rows count as the
    parser counts them.  The id is the record's value at the id column's
    position, when it has one.
    """
    text = piece.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    row = first_row
    try:
        for record in reader:
            if not record:
                continue
            image_id = record[id_index] if id_index is not None and id_index < len(record) else None
            if image_id is not None and _has_bad_utf8(image_id):
                image_id = None
            if len(record) != len(columns):
                return RecordError(
                    f"record has {len(record)} fields, expected {len(columns)} "
                    "(a record cut short or run together, or an unbalanced quote); "
                    "the file is malformed there: repair or download it again",
                    file=file,
                    row=row,
                    image_id=image_id,
                )
            for name, value in zip(columns, record):
                if _has_bad_utf8(value):
                    return RecordError(
                        f"invalid UTF-8 in column {name!r}; the file is not UTF-8 text there: repair or download it again",
                        file=file,
                        row=row,
                        image_id=image_id,
                        column=name,
                    )
            row += 1
    except csv.Error as error:
        return RecordError(f"malformed record: {error}", file=file, row=row)
    return None


def _has_bad_utf8(value: str) -> bool:
    """Whether text decoded with ``surrogateescape`` held bytes that are not UTF-8."""
    return any("\udc80" <= character <= "\udcff" for character in value) if not value.isascii() else False


def _is_blank(text: np.ndarray) -> bool:
    """Whether text holds only line breaks: no record (a line of spaces is one, as for pyarrow and ``csv``)."""
    return not text.size or not bytes(text[:64]).strip(b"\r\n") and not text.tobytes().strip(b"\r\n")


def _words(text: np.ndarray) -> np.ndarray:
    return text[: len(text) // 8 * 8].view(np.uint64)


class _Piece:
    """Whole records of CSV text (a uint8 array), their quotes, and whether the text is plain.

    Plain text (ASCII, every quote at a field's edge, no doubled quote) is cut into fields by
    :func:`~chexmask_u_tools.kernels.parse.split_records`; any other text by
    pyarrow, the reference reader.
    """

    __slots__ = ("plain", "quotes", "text")

    def __init__(self, text: np.ndarray, quotes: np.ndarray, ascii: bool) -> None:
        self.text = text
        self.quotes = quotes
        self.plain = (
            ascii
            and not (len(quotes) > 1 and (np.diff(quotes) == 1).any())  # a doubled quote, or an empty quoted field
            and bool(kernels.parse.quotes_well_formed(text, quotes, len(text)))
        )


def _record_pieces(
    stream: BinaryIO, block_size: int, max_record: int, file: str, rows: Callable[[], int]
) -> Iterator[_Piece]:
    """The stream's text cut into pieces of whole records, about ``block_size`` bytes each.

    A piece ends at the last line break outside quoted fields, found as
    pyarrow and Python's ``csv`` read quotes
    (:func:`~chexmask_u_tools.kernels.parse.quoted_spans`: a quote inside an
    unquoted field is a literal), so that each piece parses as it would
    within the whole text.  The cutting happens here,
    in the caller's thread, and the parsers read each piece from memory:
    pyarrow's own streaming reader reads ahead from the file on a background
    thread, and one still reading a Python file object when the process exits
    aborts the process.  Each piece is read into a buffer of its own, which the
    batch's string columns then point into (no further copy).

    Raises
    ------
    FileReadError
        A record longer than ``max_record`` bytes, or a stream whose last byte
        is no line break (a file cut mid-record).
    """
    held = np.empty(0, dtype=np.uint8)  # an unfinished record
    held_quotes = np.empty(0, dtype=np.int64)
    held_ascii = True
    last_byte = -1

    def too_long() -> FileReadError:
        return FileReadError(
            f"cannot read {file!r} after row {rows()}: a record is longer than {max_record} bytes "
            "(corrupt file, or an unbalanced quote)"
        )

    while True:
        text = np.empty(len(held) + block_size, dtype=np.uint8)
        text[: len(held)] = held
        n = stream.readinto(memoryview(text)[len(held) :])
        if not n:
            if last_byte not in (-1, 10, 13):
                raise FileReadError(f"{file!r} does not end with a line break: the file looks truncated (after row {rows()})")
            if not _is_blank(held):
                yield _Piece(held, held_quotes, held_ascii)
            return
        filled = len(held) + n
        last_byte = int(text[filled - 1])
        new_quotes, new_ascii = kernels.parse.scan_csv_text(text[len(held) : filled], _words(text[len(held) : filled]))
        quotes = np.concatenate((held_quotes, new_quotes + len(held))) if len(held_quotes) else new_quotes + len(held)
        ascii = held_ascii and new_ascii
        spans = kernels.parse.quoted_spans(text[:filled], quotes)  # the text begins at a record's start

        def outside_quotes(position: int, spans: np.ndarray = spans) -> bool:
            return int(np.searchsorted(spans, position)) % 2 == 0

        end = _line_break_before(text, filled, len(held))
        while end >= 0 and not outside_quotes(end):
            end = _line_break_before(text, end, len(held))
        if end < 0:
            held, held_quotes, held_ascii = text[:filled], quotes, ascii
            if filled > max_record:
                raise too_long()
            continue
        if len(held):
            # The record begun in the held text ends at the first line break outside quotes after it.
            first = _line_break_after(text[:filled], len(held))
            while not outside_quotes(first):
                first = _line_break_after(text[:filled], first + 1)
            if first + 1 > max_record:
                raise too_long()
        cut = end + 1
        inside = int(np.searchsorted(quotes, cut))
        piece = _Piece(text[:cut], quotes[:inside], ascii or _is_ascii(text[:cut]))
        held, held_quotes = text[cut:filled], quotes[inside:] - cut
        held_ascii = ascii or _is_ascii(held)
        if not _is_blank(piece.text):  # blank lines alone are no records (and pyarrow calls them an empty file)
            yield piece


def _is_ascii(text: np.ndarray) -> bool:
    return bool(kernels.parse.scan_csv_text(text, _words(text))[1])


def _line_break_before(text: np.ndarray, stop: int, start: int) -> int:
    """The offset of the last LF or CR in ``text[start:stop]``, or -1.

    Searched backwards in growing windows: a record end is usually within the
    last record's length of the end.
    """
    window = 1 << 16
    while stop > start:
        low = max(start, stop - window)
        chunk = text[low:stop].tobytes()
        found = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if found >= 0:
            return low + found
        stop, window = low, 2 * window
    return -1


def _line_break_after(text: np.ndarray, start: int) -> int:
    """The offset of the first LF or CR at or after ``start`` (the caller knows of one)."""
    window = 1 << 16
    while start < len(text):
        chunk = text[start : start + window].tobytes()
        found = [i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0]
        if found:
            return start + min(found)
        start, window = start + window, 2 * window
    return len(text)


def _arrow_options(columns: list[str], size: int):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"f{i}" for i in range(len(columns))]
    return (
        # One block for the whole piece: pyarrow cannot parse a record longer than its block.
        pacsv.ReadOptions(column_names=names, use_threads=True, block_size=size + 1),
        pacsv.ParseOptions(newlines_in_values=True),
        # large_string: pyarrow validates UTF-8 while converting, and polars takes it without a copy of offsets
        pacsv.ConvertOptions(
            column_types={name: pa.large_string() for name in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=[""],
        ),
    )


def _split_plain(piece: _Piece, columns: list[str]) -> pl.DataFrame | None:
    """The fields of a plain piece as String columns that point into its text, or None when a record is ragged.

    Each column is an Arrow ``string_view`` array over the piece's own buffer
    (:func:`~chexmask_u_tools.kernels.parse.split_records`), which polars takes
    without a copy; the text is ASCII, hence valid UTF-8.
    """
    import pyarrow as pa

    views, valid, rows, ok = kernels.parse.split_records(piece.text, _words(piece.text), piece.quotes, len(columns))
    if not ok:
        return None
    text = pa.py_buffer(piece.text)
    series = []
    for index, name in enumerate(columns):
        present = valid[index]
        validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
        array = pa.Array.from_buffers(pa.string_view(), rows, [validity, pa.py_buffer(views[index]), text])
        series.append(pl.Series(name, array))
    return pl.DataFrame(series)


def _parse_piece(piece: _Piece, columns: list[str], first_row: int, file: str, id_index: int | None) -> pl.DataFrame:
    """One piece of whole records as a polars frame of String columns (empty field = null)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if piece.plain:
        frame = _split_plain(piece, columns)
        if frame is not None:
            return frame
    read_options, parse_options, convert_options = _arrow_options(columns, len(piece.text))
    try:
        table = pacsv.read_csv(
            pa.py_buffer(piece.text), read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )
    except pa.ArrowInvalid as error:
        located = _locate_in_piece(piece.text.tobytes(), columns, first_row, file, id_index)
        if located is not None:
            raise located from None
        message = str(error)
        if "UTF8" in message or "UTF-8" in message:
            raise RecordError(f"invalid UTF-8 at or after this row: {message[:200]}", file=file, row=first_row) from None
        raise RecordError(f"malformed record at or after this row: {message[:200]}", file=file, row=first_row) from None
    frame = pl.from_arrow(table)
    frame.columns = columns
    return frame


def iter_csv_batches(
    stream: BinaryIO,
    columns: list[str],
    *,
    file: str,
    block_size: int = DEFAULT_BLOCK_SIZE,
    id_column: str | None = None,
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
        Text read per step: the memory bound.  Records up to
        :data:`MAX_RECORD_BYTES` are accepted whatever the block size.
    id_column:
        The column whose value names a malformed record in its error.

    Raises
    ------
    RecordError, FileReadError
        See the module rules.
    """
    import pyarrow as pa

    id_index = columns.index(id_column) if id_column in columns else None
    rows = 0
    try:
        for piece in _record_pieces(stream, min(block_size, MAX_RECORD_BYTES), MAX_RECORD_BYTES, file, lambda: rows):
            frame = _parse_piece(piece, columns, rows, file, id_index)
            rows += frame.height
            yield frame
    except CheXmaskUError:
        raise
    except (pa.ArrowException, *_DECOMPRESSION_ERRORS) as error:
        raise FileReadError(f"cannot read {file!r} after row {rows}: {error}") from error


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

    def batches(self, id_column: str | None = None) -> Iterator[pl.DataFrame]:
        """The data rows, a block at a time (see :func:`iter_csv_batches` for the rules and ``id_column``)."""
        with self.open() as raw:
            _, stream = read_csv_header(raw, self.path)
            yield from iter_csv_batches(
                stream, self.columns, file=self.path, block_size=self.block_size, id_column=id_column
            )


def group_batches(batches: Iterator[pl.DataFrame], max_bytes: int, max_rows: int) -> Iterator[pl.DataFrame]:
    """Consecutive batches concatenated (without a copy) into groups of about ``max_bytes`` or ``max_rows``.

    The readers canonicalize a group at a time: each step has a fixed cost of a
    few milliseconds, which blocks of a few hundred rows would feel.  A batch
    of more than ``max_rows`` rows is split first, so that a file of many tiny
    rows still makes bounded steps.

    Examples
    --------
    >>> parts = (pl.DataFrame({"a": range(n)}) for n in (3, 4, 10))
    >>> [group.height for group in group_batches(parts, max_bytes=1 << 20, max_rows=5)]
    [7, 5, 5]
    """
    group: list[pl.DataFrame] = []
    size = rows = 0
    for batch in batches:
        for start in range(0, max(batch.height, 1), max_rows):
            piece = batch.slice(start, max_rows)
            group.append(piece)
            size += piece.estimated_size()
            rows += piece.height
            if size >= max_bytes or rows >= max_rows:
                yield pl.concat(group, rechunk=False)
                group, size, rows = [], 0, 0
    if group:
        yield pl.concat(group, rechunk=False)


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
