"""Run-length kernels: parse a CheXmask RLE string's bytes, write its runs, encode a mask.

The convention is :mod:`chexmask_u_tools.io.rle`'s: ``"start length ..."``,
1-based starts into the row-major flattened mask, runs increasing and not
overlapping.  :func:`parse_runs` reads the plain form only (ASCII digits
separated by spaces, tabs, CR or LF) and checks every run while it reads;
anything else (a sign, another byte, an odd count, a bad run) makes it answer
-1, and the caller hands the string to the numpy reference, which raises the
package's error with its message (or reads the rare valid form it accepts,
such as ``"+3"``).  So the kernels never decide what is an error, and no run
reaches a writing kernel unchecked.  The writing kernels also clip every index
they derive to their output, so that not even a wrong caller can write outside it.

Speed.  Gaps and runs are written with slice assignments (LLVM turns them into
``memset``), each byte of the output once; a 1024 x 1024 mask costs about as
much as zeroing it.  Encoding skips eight bytes at a time where they are all
zero or all nonzero.
"""

from __future__ import annotations

import numpy as np

from chexmask_u_tools.kernels.jit import kernel

__all__ = ["decode_runs", "encode_runs", "fill_runs", "fill_runs_resampled", "pair_capacity", "parse_runs"]

_ZERO, _NINE, _SPACE, _TAB, _LF, _CR = 48, 57, 32, 9, 10, 13
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)


def pair_capacity(n_bytes: int) -> int:
    """Most runs a string of ``n_bytes`` can hold in the plain form (``"1 1 "`` per run): rows for :func:`parse_runs`."""
    return (n_bytes + 1) // 4 + 1


@kernel
def parse_runs(text, n_pixels, pairs):
    """Read the (start, length) runs of ``text`` into ``pairs``; the number of runs, or -1 for the reference.

    ``text``: the string's bytes (``bytes`` or (n,) uint8); ``n_pixels``: the mask's pixel
    count (at most 2**28, so no value read here can overflow: reading stops
    past it); ``pairs``: (K, 2) int64 with K at least :func:`pair_capacity`.
    -1 when the string is not in the plain form or a run is bad (start or
    length below 1, a run past ``n_pixels``, out of order or overlapping).
    """
    capacity = pairs.shape[0]
    value = 0
    in_token = False
    count = 0  # values read
    start = 0
    previous_end = 0
    n = len(text)
    for i in range(n + 1):
        c = text[i] if i < n else _SPACE
        if _ZERO <= c <= _NINE:
            value = value * 10 + (c - _ZERO)
            if value > n_pixels:
                return -1
            in_token = True
            continue
        if c != _SPACE and c != _TAB and c != _LF and c != _CR:
            return -1
        if not in_token:
            continue
        if count % 2 == 0:
            if value < 1 or value - 1 < previous_end:
                return -1
            start = value
        else:
            end = start - 1 + value
            if value < 1 or end > n_pixels or count // 2 >= capacity:
                return -1
            pairs[count // 2, 0] = start
            pairs[count // 2, 1] = value
            previous_end = end
        count += 1
        value = 0
        in_token = False
    if count % 2:
        return -1
    return count // 2


@kernel
def fill_runs(pairs, count, out):
    """Write the first ``count`` runs of ``pairs`` (checked by :func:`parse_runs`) into ``out``.

    ``out``: a C-contiguous bool or uint8 mask of any shape, seen flat
    (row-major).  Every byte is written once: 0 in the gaps, 1 in the runs.
    """
    flat = out.reshape(out.size)
    n = flat.shape[0]
    position = 0
    for k in range(count):
        begin = min(max(pairs[k, 0] - 1, position), n)
        end = min(max(begin + pairs[k, 1], begin), n)
        flat[position:begin] = 0
        flat[begin:end] = 1
        position = end
    flat[position:] = 0


@kernel
def decode_runs(text, n_pixels, out):
    """:func:`parse_runs`, then (only when it read every run) :func:`fill_runs` into ``out``: one call per mask.

    Returns the number of runs, or -1 with ``out`` untouched.
    """
    pairs = np.empty(((len(text) + 1) // 4 + 1, 2), dtype=np.int64)  # pair_capacity
    count = parse_runs(text, n_pixels, pairs)
    if count >= 0:
        fill_runs(pairs, count, out)
    return count


@kernel
def fill_runs_resampled(pairs, count, width, row_index, col_index, out):
    """The full ``(., width)`` mask of the runs sampled at ``row_index`` x ``col_index``, into (h, w) ``out``.

    ``row_index`` (h,) and ``col_index`` (w,): non-decreasing int64 rows and
    columns of the full mask (``schema.nearest_indices``); ``out``: C-contiguous
    bool or uint8.  Output row ``i``
    is built from the runs crossing full row ``row_index[i]`` (a repeated row is
    copied); the full mask is never built.
    """
    out_h, out_w = out.shape
    # first_col[c]: the first output column sampling full column c or later
    first_col = np.empty(width + 1, dtype=np.int64)
    j = 0
    for c in range(width + 1):
        while j < out_w and col_index[j] < c:
            j += 1
        first_col[c] = j
    k = 0  # first run not wholly before the current row
    for i in range(out_h):
        row = out[i]
        if i > 0 and row_index[i] == row_index[i - 1]:
            row[:] = out[i - 1]
            continue
        row_start = row_index[i] * width
        while k < count and pairs[k, 0] - 1 + pairs[k, 1] <= row_start:
            k += 1
        position = 0
        run = k
        while run < count and pairs[run, 0] - 1 < row_start + width:
            begin = first_col[min(max(pairs[run, 0] - 1 - row_start, 0), width)]
            end = first_col[min(max(pairs[run, 0] - 1 + pairs[run, 1] - row_start, 0), width)]
            begin = max(begin, position)
            end = max(end, begin)
            row[position:begin] = 0
            row[begin:end] = 1
            position = end
            run += 1
        row[position:] = 0


@kernel
def _digits(value):
    count = 1
    while value >= 10:
        value //= 10
        count += 1
    return count


@kernel
def _write_number(buffer, end, value):
    """Write ``value``'s decimal digits so that the last lands before ``end``; the first digit's position."""
    position = end
    while True:
        position -= 1
        buffer[position] = _ZERO + value % 10
        value //= 10
        if value == 0:
            return position


@kernel
def encode_runs(flat, words):
    """The CheXmask run-length string of the flat mask ``flat`` (nonzero = inside), as ASCII bytes (uint8).

    ``words``: ``flat``'s first ``8 * len(words)`` bytes seen as uint64 (or
    fewer words, even none), so that eight bytes that are all zero, or all
    nonzero, are skipped at once.  Returns an empty array for an empty mask.
    """
    n = flat.shape[0]
    n_words = min(words.shape[0], n >> 3)
    bounds = np.empty((64, 2), dtype=np.int64)
    runs = 0
    i = 0
    while i < n:
        while i < n:  # to the next nonzero byte
            w = i >> 3
            if (i & 7) == 0 and w < n_words and words[w] == 0:
                i += 8
            elif flat[i] == 0:
                i += 1
            else:
                break
        if i >= n:
            break
        begin = i
        while i < n:  # to the next zero byte
            w = i >> 3
            if (i & 7) == 0 and w < n_words and ((words[w] - _ONES) & ~words[w] & _HIGHS) == 0:
                i += 8  # no zero byte in this word
            elif flat[i] != 0:
                i += 1
            else:
                break
        if runs == bounds.shape[0]:
            grown = np.empty((2 * runs, 2), dtype=np.int64)
            grown[:runs] = bounds
            bounds = grown
        bounds[runs, 0] = begin + 1
        bounds[runs, 1] = i - begin
        runs += 1
    size = 0
    for k in range(runs):
        size += _digits(bounds[k, 0]) + _digits(bounds[k, 1]) + 2
    text = np.empty(max(size - 1, 0), dtype=np.uint8)
    end = text.shape[0]
    for k in range(runs - 1, -1, -1):
        end = _write_number(text, end, bounds[k, 1])
        end -= 1
        text[end] = _SPACE
        end = _write_number(text, end, bounds[k, 0])
        if k:
            end -= 1
            text[end] = _SPACE
    return text
