"""Parsing kernels over raw bytes and Arrow string buffers (offsets plus bytes).

Three jobs of the table readers, each one pass over the bytes without a Python
object per value:

* :func:`scan_csv_text`: where the double quotes of a block of CSV text are,
  32 bytes at a time (CheXmask text has a few quotes per 20 kB row), so that
  the reader can cut the text at a record end outside quoted fields
  (:func:`quoted_spans`) and check that every quote stands at a field's edge
  (:func:`quotes_well_formed`), and
  :func:`split_records`, which cuts plain text into fields as Arrow string
  views of the text itself (no copy);
* :func:`parse_number_lists`: landmark, std and latent strings (flat comma
  lists or numpy-printed arrays) straight into a ``(n, width)`` float32 array;
* :func:`rle_status`: the run-length rule of ``io.rle.rle_problems`` (integer
  tokens, an even count, runs of at least one pixel, inside the mask,
  increasing and not overlapping) for every string of a column, and
  :func:`rle_tail_status`, the readers' default look at each string's last run.

The kernels only *accept*: a string they cannot vouch for (a token outside
their plain grammar, a value they cannot convert exactly, a broken rule) gets
a status that sends it to the calling module's polars path, which decides, and
words the message.  So the kernels never change what is accepted or how a value
reads; they only make the common case fast.  Callers pass well-formed Arrow
buffers (offsets within the data); the kernels do not check bounds.
"""

from __future__ import annotations

import numba
import numpy as np

from chexmask_u_tools.kernels.jit import kernel

__all__ = [
    "LIST_MISSING",
    "LIST_OK",
    "LIST_UNSURE",
    "RLE_BLANK",
    "RLE_CHECK",
    "RLE_FINE",
    "parse_number_lists",
    "quoted_spans",
    "quotes_well_formed",
    "scan_csv_text",
    "split_records",
    "rle_status",
    "rle_tail_status",
]

LIST_OK, LIST_MISSING, LIST_UNSURE = 0, 1, 2
"""Status of one string in :func:`parse_number_lists`: values written / missing (null or blank) / decided elsewhere."""

_QUOTE = 34
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_QUOTES = np.uint64(0x2222222222222222)
_COMMAS = np.uint64(0x2C2C2C2C2C2C2C2C)
_NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)
_CRS = np.uint64(0x0D0D0D0D0D0D0D0D)

# Exact powers of ten in float64 (10**22 is the largest exactly representable one).
_POWERS = np.array([10.0**k for k in range(23)], dtype=np.float64)
_MAX_DIGITS = 15  # below 2**53: the digits are an exact float64 integer

_inline = numba.njit(inline="always", nogil=True)


@kernel
def scan_csv_text(data, words):
    """Byte offsets (int64, increasing) of every ``"`` in ``data``, and whether all of it is ASCII.

    ``words`` is ``data[: len(data) // 8 * 8].view(np.uint64)``: 32 bytes are
    tested at once and only blocks holding a quote are looked at byte by byte.

    Returns ``(quotes, ascii)``.

    Examples
    --------
    >>> import numpy as np
    >>> data = np.frombuffer(b'a,"b,c",d\\n"e"' * 3, dtype=np.uint8)
    >>> quotes, ascii = scan_csv_text(data, data[:32].view(np.uint64))
    >>> quotes.tolist(), ascii
    ([2, 6, 10, 12, 15, 19, 23, 25, 28, 32, 36, 38], True)
    """
    found = np.empty(1024, dtype=np.int64)
    count = 0
    high = np.uint64(0)
    blocks = words.shape[0] // 4
    for block in range(blocks):
        w0 = words[4 * block]
        w1 = words[4 * block + 1]
        w2 = words[4 * block + 2]
        w3 = words[4 * block + 3]
        high |= w0 | w1 | w2 | w3
        x0 = w0 ^ _QUOTES
        x1 = w1 ^ _QUOTES
        x2 = w2 ^ _QUOTES
        x3 = w3 ^ _QUOTES
        # A byte of a word is zero (was a quote) only if this sets its high bit.
        zero = ((x0 - _ONES) & ~x0) | ((x1 - _ONES) & ~x1) | ((x2 - _ONES) & ~x2) | ((x3 - _ONES) & ~x3)
        if (zero & _HIGHS) == 0:
            continue
        for i in range(32 * block, 32 * block + 32):
            if data[i] == _QUOTE:
                found, count = _append(found, count, i)
    ascii = (high & _HIGHS) == 0
    for i in range(32 * blocks, data.shape[0]):
        c = data[i]
        if c == _QUOTE:
            found, count = _append(found, count, i)
        elif c >= 128:
            ascii = False
    return found[:count], ascii


@_inline
def _append(found, count, value):
    if count == found.shape[0]:
        grown = np.empty(2 * count, dtype=np.int64)
        grown[:count] = found
        found = grown
    found[count] = value
    return found, count + 1


@_inline
def _is_array_separator(c):
    # Runs of brackets, ASCII whitespace and commas separate the numbers of a numpy-printed array.
    return c == 44 or c == 91 or c == 93 or c == 32 or (9 <= c <= 13)


@_inline
def _store(out, row, count, width, mantissa, digits, fraction, negative, allow_negative):
    """Write one parsed number; False when it cannot be vouched for (no digit, too many, a refused sign, no room)."""
    if digits == 0 or digits > _MAX_DIGITS or count >= width or (negative and not allow_negative and mantissa != 0):
        return False
    value = np.float64(mantissa) / _POWERS[fraction]
    out[row, count] = np.float32(-value if negative else value)
    return True


@_inline
def _parse_plain_flat(data, start, stop, row, width, allow_negative, out):
    """The common flat list, ``-?digits[.digits]`` tokens between single commas, no spaces -> (status, count).

    A tight loop per token (what the released files write); anything else is
    :data:`LIST_UNSURE` here, for :func:`_parse_flat` to read in full.
    """
    count = 0
    position = start
    if position == stop:
        return LIST_UNSURE, 0
    while True:
        negative = data[position] == 45
        if negative:
            position += 1
        mantissa = 0
        digits = 0
        while position < stop:
            digit = np.uint8(data[position] - 48)
            if digit >= 10:
                break
            mantissa = mantissa * 10 + digit
            digits += 1
            position += 1
        fraction = 0
        if position < stop and data[position] == 46:
            position += 1
            while position < stop:
                digit = np.uint8(data[position] - 48)
                if digit >= 10:
                    break
                mantissa = mantissa * 10 + digit
                digits += 1
                fraction += 1
                position += 1
        if digits == 0 or digits > _MAX_DIGITS or count >= width or (negative and not allow_negative and mantissa != 0):
            return LIST_UNSURE, count
        value = np.float64(mantissa) if fraction == 0 else np.float64(mantissa) / _POWERS[fraction]
        out[row, count] = np.float32(-value if negative else value)
        count += 1
        if position == stop:
            return LIST_OK, count
        if data[position] != 44:
            return LIST_UNSURE, count
        position += 1
        if position == stop:
            return LIST_UNSURE, count  # a trailing comma: an empty token


@_inline
def _parse_flat(data, start, stop, row, width, allow_negative, out):
    """One flat comma list (spaces ignored anywhere) -> (status, count)."""
    count = 0
    mantissa = 0
    digits = 0
    fraction = 0
    point = 0
    negative = False
    written = False  # anything but spaces seen
    for position in range(start, stop):
        c = data[position]
        digit = np.uint8(c - 48)
        if digit < 10:
            mantissa = mantissa * 10 + digit
            digits += 1
            fraction += point
            written = True
        elif c == 44:
            if not _store(out, row, count, width, mantissa, digits, fraction, negative, allow_negative):
                return LIST_UNSURE, count
            count += 1
            mantissa = 0
            digits = 0
            fraction = 0
            point = 0
            negative = False
            written = True
        elif c == 46 and point == 0:
            point = 1
            written = True
        elif c == 45 and digits == 0 and point == 0 and not negative:
            negative = True
            written = True
        elif c != 32:
            return LIST_UNSURE, count
    if not written:
        return LIST_MISSING, 0
    if not _store(out, row, count, width, mantissa, digits, fraction, negative, allow_negative):
        return LIST_UNSURE, count
    return LIST_OK, count + 1


@_inline
def _parse_array(data, start, stop, row, width, allow_negative, out):
    """One numpy-printed array (numbers between runs of separators) -> (status, count)."""
    count = 0
    mantissa = 0
    digits = 0
    fraction = 0
    point = 0
    negative = False
    in_token = False
    for position in range(start, stop):
        c = data[position]
        digit = np.uint8(c - 48)
        if digit < 10:
            mantissa = mantissa * 10 + digit
            digits += 1
            fraction += point
            in_token = True
        elif _is_array_separator(c):
            if in_token:
                if not _store(out, row, count, width, mantissa, digits, fraction, negative, allow_negative):
                    return LIST_UNSURE, count
                count += 1
                mantissa = 0
                digits = 0
                fraction = 0
                point = 0
                negative = False
                in_token = False
        elif c == 46 and point == 0:
            point = 1
            in_token = True
        elif c == 45 and not in_token:
            negative = True
            in_token = True
        else:
            return LIST_UNSURE, count
    if in_token:
        if not _store(out, row, count, width, mantissa, digits, fraction, negative, allow_negative):
            return LIST_UNSURE, count
        count += 1
    if count == 0:
        return LIST_MISSING, 0
    return LIST_OK, count


@_inline
def _holds(data, start, stop, byte):
    for position in range(start, stop):
        if data[position] == byte:
            return True
    return False


@kernel
def parse_number_lists(offsets, data, valid, width, allow_negative, out):
    """Parse each string ``data[offsets[i]:offsets[i + 1]]`` into ``out[i, :width]`` (float32).

    The layout is the string's own: one holding ``[`` is a numpy-printed
    array, whose numbers runs of ``[``, ``]``, commas and ASCII whitespace
    separate; any other is a flat comma list ``x0,y0,x1,...`` with spaces
    ignored anywhere (the flat reader removes them before splitting).  A
    number is ``-?digits[.digits]`` with at most 15 digits: its value
    ``digits / 10**k`` is then the correctly rounded float64 of the decimal,
    cast to float32 as the reference parser does.

    Returns an int8 status per string: :data:`LIST_OK` (row of ``out``
    written), :data:`LIST_MISSING` (null, or nothing but separators/spaces) or
    :data:`LIST_UNSURE` (anything else: another token, another count, a
    negative value with ``allow_negative=False``, a byte outside ASCII); the
    caller's reference parser decides those rows.

    Examples
    --------
    >>> import numpy as np
    >>> text = b"1,2.5,-3,4[[ 5  6]] 7,8,9"  # four numbers, a (2, 1) array, three numbers
    >>> offsets = np.array([0, 10, 19, 25], dtype=np.int64)
    >>> out = np.zeros((3, 2), dtype=np.float32)
    >>> status = parse_number_lists(offsets, np.frombuffer(text, np.uint8), np.ones(3, bool), 2, True, out)
    >>> status.tolist(), out[1].tolist()
    ([2, 0, 2], [5.0, 6.0])
    """
    n = offsets.shape[0] - 1
    status = np.empty(n, dtype=np.int8)
    for row in range(n):
        if not valid[row]:
            status[row] = LIST_MISSING
            continue
        start = offsets[row]
        stop = offsets[row + 1]
        # A flat list stops at its first "[" (not part of its grammar): only then is the string looked through.
        state, count = _parse_plain_flat(data, start, stop, row, width, allow_negative, out)
        if state == LIST_UNSURE:
            state, count = _parse_flat(data, start, stop, row, width, allow_negative, out)
        if state == LIST_UNSURE and _holds(data, start, stop, 91):
            state, count = _parse_array(data, start, stop, row, width, allow_negative, out)
        status[row] = LIST_UNSURE if state == LIST_OK and count != width else state
    return status


_MAX_TOKEN_DIGITS = 18  # below 2**63: a token of at most 18 digits is an exact int64


@kernel
def rle_status(offsets, data, valid, n_pixels, known):
    """Whether each run-length string obeys the decoders' rule: 0 yes (or null/blank), 1 no or not sure.

    Tokens are runs of digits between ASCII whitespace; starts and lengths are
    compared with ``n_pixels[i]`` before they are added (no wrap-around); runs
    must be increasing and not overlap.  Where ``known[i]`` is False only the
    tokens are checked.  Any other byte (a sign, a letter, a byte outside
    ASCII), a token over 18 digits or an odd count gives 1: the caller's rule
    (``rle_problems``) decides and words the message.

    Examples
    --------
    >>> import numpy as np
    >>> text = b"1 4 3 2 4 1 1 99"
    >>> offsets = np.array([0, 3, 11, 16], dtype=np.int64)
    >>> sizes = np.full(3, 12, dtype=np.int64)
    >>> rle_status(offsets, np.frombuffer(text, np.uint8), np.ones(3, bool), sizes, np.ones(3, bool)).tolist()
    [0, 1, 1]
    """
    n = offsets.shape[0] - 1
    status = np.zeros(n, dtype=np.int8)
    for row in range(n):
        if not valid[row]:
            continue
        position = offsets[row]
        stop = offsets[row + 1]
        limit = n_pixels[row]
        check_runs = known[row]
        tokens = 0
        start = 0
        previous_end = 0
        bad = False
        while position < stop:
            c = data[position]
            if c == 32 or (9 <= c <= 13):
                position += 1
                continue
            value = 0
            digits = 0
            while position < stop:
                c = data[position]
                if 48 <= c <= 57:
                    value = value * 10 + (c - 48)
                    digits += 1
                    if digits > _MAX_TOKEN_DIGITS:
                        break
                    position += 1
                elif c == 32 or (9 <= c <= 13):
                    break
                else:
                    digits = _MAX_TOKEN_DIGITS + 1
                    break
            if digits > _MAX_TOKEN_DIGITS:
                bad = True
                break
            if tokens % 2 == 0:
                start = value
            elif check_runs:
                length = value
                if start < 1 or length < 1 or start > limit or length > limit:
                    bad = True
                    break
                end = start - 1 + length
                if end > limit or start - 1 < previous_end:
                    bad = True
                    break
                previous_end = end
            tokens += 1
        if bad or tokens % 2 == 1:
            status[row] = 1
    return status


@_inline
def _ends_field(c):
    return c == 44 or c == 10 or c == 13


@kernel
def quoted_spans(data, quotes):
    """The quotes that open and close quoted fields, as pyarrow and Python's ``csv`` read them.

    ``data`` begins at a record's start and ``quotes`` holds the offset of
    every ``"`` in it, increasing.  A quote opens a quoted field only at a
    field's start (offset 0, or after a comma, LF or CR): elsewhere it is a
    literal character.  Inside a quoted field ``""`` is a quote, and any other
    quote closes the field (what follows, up to the next comma or line break,
    is more of the same field).  Line breaks inside a quoted field are data.

    Returns the offsets of the opening and closing quotes, in order (an odd
    count when the last field is still open), so that a line break at offset
    ``p`` ends a record exactly when ``np.searchsorted(spans, p)`` is even.
    Counting every quote instead misplaces the record ends after a quote
    inside an unquoted field (``a"b``).

    Examples
    --------
    >>> import numpy as np
    >>> data = np.frombuffer(b'a"b\\n"1\\n2"\\n', dtype=np.uint8)
    >>> quoted_spans(data, np.flatnonzero(data == 34)).tolist()  # the quote of a"b is a literal
    [4, 8]
    """
    spans = np.empty(quotes.shape[0], dtype=np.int64)
    count = 0
    inside = False
    n = quotes.shape[0]
    i = 0
    while i < n:
        quote = quotes[i]
        if inside:
            if i + 1 < n and quotes[i + 1] == quote + 1:
                i += 2  # a doubled quote inside the field
                continue
            spans[count] = quote
            count += 1
            inside = False
        elif quote == 0 or _ends_field(data[quote - 1]):
            spans[count] = quote
            count += 1
            inside = True
        i += 1
    return spans[:count]


@kernel
def quotes_well_formed(data, quotes, stop):
    """Whether every quote among ``quotes`` (positions below ``stop``) is part of a well-formed quoted field.

    A quoted field opens at the start of a field (after a comma or a line
    break, or at offset 0), holds any bytes with quotes doubled, and closes
    right before a comma, a line break or ``stop``.  CSV readers disagree on
    anything else (a quote inside an unquoted field, text after a closing
    quote), so such text is left to the reference reader.

    Examples
    --------
    >>> import numpy as np
    >>> def check(text):
    ...     data = np.frombuffer(text, dtype=np.uint8)
    ...     return quotes_well_formed(data, scan_csv_text(data, data[:0].view(np.uint64))[0], len(data))
    >>> check(b'a,"b,""c"" ",d\\n'), check(b'a,"b"x,d\\n'), check(b'a,b"c",d\\n')
    (True, False, False)
    """
    n = quotes.shape[0]
    i = 0
    while i < n:
        opening = quotes[i]
        if opening > 0 and not _ends_field(data[opening - 1]):
            return False
        i += 1
        while True:
            if i >= n:
                return False
            quote = quotes[i]
            if i + 1 < n and quotes[i + 1] == quote + 1:
                i += 2  # a doubled quote inside the field
                continue
            if quote + 1 < stop and not _ends_field(data[quote + 1]):
                return False
            i += 1
            break
    return True


RLE_FINE, RLE_CHECK, RLE_BLANK = 0, 1, 2
"""Status of one string in :func:`rle_tail_status`: fine (or null) / to be checked in full / blank (an empty mask)."""


@_inline
def _is_ascii_space(c):
    return c == 32 or (9 <= c <= 13)


@_inline
def _token_before(data, first, end):
    """(value, start) of the plain-digit token ending at ``end``; value -1 when there is none or it is too long."""
    position = end
    while position > first and 48 <= data[position - 1] <= 57:
        position -= 1
    if position == end or end - position > _MAX_TOKEN_DIGITS:
        return -1, position
    value = 0
    for i in range(position, end):
        value = value * 10 + (data[i] - 48)
    return value, position


@kernel
def rle_tail_status(offsets, data, valid, whole, n_pixels, known):
    """A quick look at the end of each run-length string: is its last run a plain pair inside the mask?

    Runs increase, so the last run is the farthest: a last pair ``start
    length`` of plain digits (at most 18 each) with ``1 <= start``, ``1 <=
    length`` and ``start - 1 + length <= n_pixels[i]`` (each compared with
    ``n_pixels`` before they are added) is :data:`RLE_FINE`; a string of ASCII
    whitespace only is :data:`RLE_BLANK`; anything else is :data:`RLE_CHECK`,
    for the full rule (``rle_problems``) to decide.  Where ``known[i]`` is
    False only the pair's syntax counts.

    The strings may be the ends of longer ones (``whole[i]`` False): the start
    token must then follow whitespace inside the end given (it might be cut),
    and an end of whitespace only is not a blank string.

    Examples
    --------
    >>> import numpy as np
    >>> text = b"1 4 5 2 9 9  x"
    >>> offsets = np.array([0, 7, 11, 12, 14], dtype=np.int64)
    >>> sizes, yes = np.full(4, 12, dtype=np.int64), np.ones(4, bool)
    >>> rle_tail_status(offsets, np.frombuffer(text, np.uint8), yes, yes, sizes, yes).tolist()
    [0, 1, 2, 1]
    """
    n = offsets.shape[0] - 1
    status = np.zeros(n, dtype=np.int8)
    for row in range(n):
        if not valid[row]:
            continue
        first = offsets[row]
        position = offsets[row + 1]
        while position > first and _is_ascii_space(data[position - 1]):
            position -= 1
        if position == first:
            status[row] = RLE_BLANK if whole[row] else RLE_CHECK
            continue
        start = -1
        length, position = _token_before(data, first, position)
        bad = length < 0 or position == first or not _is_ascii_space(data[position - 1])
        if not bad:
            while position > first and _is_ascii_space(data[position - 1]):
                position -= 1
            start, position = _token_before(data, first, position)
            # The start token must begin the string or follow whitespace (not a sign, not a letter).
            if position == first:
                bad = start < 0 or not whole[row]
            else:
                bad = start < 0 or not _is_ascii_space(data[position - 1])
        if not bad and known[row]:
            limit = n_pixels[row]
            bad = start < 1 or length < 1 or start > limit or length > limit or start - 1 + length > limit
        if bad:
            status[row] = RLE_CHECK
    return status


@_inline
def _field_end(data, words, position, stop):
    """The offset of the first comma, LF or CR at or after ``position`` (``stop`` if none), 16 bytes at a time."""
    while position < stop and position % 8 != 0:
        c = data[position]
        if c == 44 or c == 10 or c == 13:
            return position
        position += 1
    word = position // 8
    last = min(words.shape[0], stop // 8) - 1  # the last whole word before ``stop``
    while word < last:
        special = np.uint64(0)
        for k in range(2):
            x = words[word + k]
            a = x ^ _COMMAS
            b = x ^ _NEWLINES
            c = x ^ _CRS
            special |= ((a - _ONES) & ~a) | ((b - _ONES) & ~b) | ((c - _ONES) & ~c)
        if special & _HIGHS:
            break
        word += 2
    position = max(position, 8 * word)
    while position < stop:
        c = data[position]
        if c == 44 or c == 10 or c == 13:
            return position
        position += 1
    return stop


@_inline
def _write_view(views, column, row, data, start, stop):
    """The 16-byte Arrow string view of ``data[start:stop]``: inline up to 12 bytes, else prefix and offset."""
    length = stop - start
    views[column, row, 0] = np.uint32(length)
    views[column, row, 1] = 0
    views[column, row, 2] = 0
    views[column, row, 3] = 0
    for i in range(min(length, 12 if length <= 12 else 4)):
        views[column, row, 1 + i // 4] |= np.uint32(data[start + i]) << np.uint32(8 * (i % 4))
    if length > 12:
        views[column, row, 3] = np.uint32(start)  # buffer 0 (the text itself), at this offset


@_inline
def _record_end(data, position, stop):
    """The length of the line break at ``position``: 1 (LF, or the end of the text), 2 (CRLF), 0 (none)."""
    if position >= stop or data[position] == 10:
        return 1
    if data[position] == 13 and position + 1 < stop and data[position + 1] == 10:
        return 2
    return 0


@kernel
def split_records(data, words, quotes, n_columns):
    """Cut plain CSV text into ``n_columns`` fields per record, as Arrow string views of ``data`` itself.

    Plain text (the caller checks it): ASCII, every quote at a field's edge
    (:func:`quotes_well_formed`) and no doubled quote, so that a quoted field
    is the bytes between its two quotes.  Records end with LF or CRLF; blank
    lines are no records; an empty unquoted field is null.

    Returns ``(views, valid, rows, ok)``: ``views`` uint32 ``(n_columns, rows,
    4)``, each ``views[c, r]`` a 16-byte Arrow ``string_view`` (length, then
    up to 12 inline bytes, or a 4-byte prefix, buffer 0 and the offset into
    ``data``); ``valid`` bool ``(n_columns, rows)``; ``ok`` False when a
    record does not have ``n_columns`` fields or a CR stands alone outside
    quotes (the caller's reference reader then decides, and names the record).

    Examples
    --------
    >>> import numpy as np
    >>> data = np.frombuffer(b'a,"1,2",xyz\\n\\nb,"3",\\r\\n', dtype=np.uint8)
    >>> quotes = scan_csv_text(data, data[:16].view(np.uint64))[0]
    >>> views, valid, rows, ok = split_records(data, data[:16].view(np.uint64), quotes, 3)
    >>> rows, ok, views[1, :, 0].tolist(), valid[2].tolist()
    (2, True, [3, 1], [True, False])
    """
    stop = data.shape[0]
    capacity = 64
    views = np.zeros((n_columns, capacity, 4), dtype=np.uint32)
    valid = np.zeros((n_columns, capacity), dtype=np.bool_)
    rows = 0
    position = 0
    quote = 0  # index of the next quote in ``quotes``
    while position < stop:
        blank = _record_end(data, position, stop)
        if blank:
            position += blank
            continue
        if rows == capacity:
            capacity *= 2
            grown_views = np.zeros((n_columns, capacity, 4), dtype=np.uint32)
            grown_valid = np.zeros((n_columns, capacity), dtype=np.bool_)
            grown_views[:, :rows] = views[:, :rows]
            grown_valid[:, :rows] = valid[:, :rows]
            views = grown_views
            valid = grown_valid
        for column in range(n_columns):
            if position < stop and data[position] == _QUOTE:
                while quote < quotes.shape[0] and quotes[quote] < position:
                    quote += 1
                if quote + 1 >= quotes.shape[0] or quotes[quote] != position:
                    return views[:, :0], valid[:, :0], 0, False
                start = position + 1
                end = quotes[quote + 1]
                quote += 2
                position = end + 1
            else:
                start = position
                end = _field_end(data, words, position, stop)
                position = end
            _write_view(views, column, rows, data, start, end)
            valid[column, rows] = end > start
            if column < n_columns - 1:
                if position >= stop or data[position] != 44:
                    return views[:, :0], valid[:, :0], 0, False
                position += 1
            else:
                ending = _record_end(data, position, stop)
                if ending == 0:
                    return views[:, :0], valid[:, :0], 0, False
                position += ending
        rows += 1
    return views[:, :rows], valid[:, :rows], rows, True
