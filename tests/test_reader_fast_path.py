"""The readers' compiled fast paths give what their reference rules give, value for value and word for word.

``read_table`` parses number strings and checks run-length strings with kernels
over the columns' Arrow buffers (``kernels.parse``); a string a kernel cannot
vouch for goes to the reference (the polars expressions of ``io.parsing``, and
``io.rle.rle_problems``, the decoders' own rule), which decides and words the
problem.  These tests generate hostile strings and compare the two, in a
subprocess with numba's bounds checks on, so that a kernel reading outside its
buffers fails a test instead of the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_CHECKS = r'''
import json
import os

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chexmask_u_tools.io.parsing import number_list_expr, number_list_problem_expr, parse_number_column
from chexmask_u_tools.io.rle import rle_problems
from chexmask_u_tools.io.table import _mask_column

EXAMPLES = int(os.environ["EXAMPLES"])
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
TOKENS = ["0", "1", "12", "3.5", "-2", ".5", "5.", "-0", "007", "1e3", "+4", "nan", "inf", "1.2.3", "x", "",
          "123456789012345", "1234567890123456", "0.000000000000001", "99999.99999", "1\u00a02", "\u0663"]
SEPARATORS = [",", ",", ",", ", ", " ,", " ", "\n ", "[", "]", "[[", "]]\n", ",,", "\t"]
seen = {"numbers": 0, "numbers_kernel": 0, "masks": 0}


NUMBERS = ["0", "1", "12", "3.5", "-2", "-0.25", ".5", "5.", "-0", "007", "123456789012345", "0.000000000000001",
           "99999.99999", "340282356779733661637539395458142568448"]


@st.composite
def number_strings(draw, width):
    """Mostly a list of about ``width`` numbers in either layout (the kernels' own path), else anything."""
    if draw(st.integers(0, 9)) < 7:
        values = [draw(st.sampled_from(NUMBERS)) for _ in range(width + draw(st.sampled_from([0, 0, 0, 0, 1, -1])))]
        if draw(st.booleans()):
            return draw(st.sampled_from(["", " "])) + draw(st.sampled_from([",", ", ", " ,"])).join(values)
        return "[[" + "]\n [".join(" ".join(values[i : i + 2]) for i in range(0, len(values), 2)) + "]]"
    count = draw(st.integers(0, 5))
    text = draw(st.sampled_from(["", "", "[", "[[", " "]))
    for i in range(count):
        text += draw(st.sampled_from(TOKENS))
        if i < count - 1:
            text += draw(st.sampled_from(SEPARATORS))
    return text + draw(st.sampled_from(["", "", "]", "]]", " ", ","]))


@st.composite
def number_columns(draw):
    width = draw(st.integers(1, 4))
    return draw(st.lists(st.one_of(st.none(), number_strings(width)), min_size=1, max_size=12)), width


@SETTINGS
@given(number_columns(), st.booleans())
def numbers(case, allow_negative):
    texts, width = case
    column = pl.Series("t", texts, dtype=pl.String)
    values, present, problems = parse_number_column(column, width, allow_negative=allow_negative, what="points")
    reference = pl.DataFrame({"t": column}).select(parsed=number_list_expr("t", numpy_printed=None)).with_columns(
        problem=number_list_problem_expr(pl.col("parsed"), expected_len=width, allow_negative=allow_negative, what="points")
    )
    for row, (parsed, problem) in enumerate(reference.iter_rows()):
        assert problems[row] == problem, (texts[row], problems[row], problem)
        assert bool(present[row]) == (problem is None and parsed is not None), (texts[row], present[row])
        if present[row]:
            expected = np.array(parsed, dtype=np.float64).astype(np.float32)
            assert np.array_equal(values[row], expected) and (np.signbit(values[row]) == np.signbit(expected)).all(), (
                texts[row], values[row], expected)
    seen["numbers"] += len(texts)


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 2000), min_size=0, max_size=240), min_size=1, max_size=6))
def numbers_of_real_shape(rows):
    """Flat lists of integers and 2-decimal floats as the released files write them: the kernel's own path."""
    texts = [",".join(f"{v / 100:.2f}" if v % 3 else str(v) for v in row) for row in rows]
    width = max(len(rows[0]), 1)
    values, present, problems = parse_number_column(pl.Series(texts), width, allow_negative=False, what="std")
    for row, text in enumerate(texts):
        if present[row]:
            expected = np.array([float(token) for token in text.split(",")], dtype=np.float64).astype(np.float32)
            assert np.array_equal(values[row], expected), text
            seen["numbers_kernel"] += 1


RLE_TOKENS = ["1", "2", "4", "0", "99", "12", "+3", "-1", "a", "1.5", "18446744073709551616", "1000000000000000000",
              "999999999999999999", "\u0663"]
RLE_SEPARATORS = [" ", " ", "  ", "\t", "\n", "\u00a0"]


@st.composite
def rle_strings(draw):
    count = draw(st.integers(0, 8))
    tokens = [draw(st.sampled_from(RLE_TOKENS)) for _ in range(count)]
    if draw(st.booleans()):  # runs as a mask writes them (increasing, lengths >= 1), now and then overlapping
        start, tokens = 1, []
        for _ in range(count // 2):
            start += draw(st.sampled_from([0, 1, 3, 17, 30, -2]))
            length = draw(st.integers(1, 30))
            tokens += [str(start), str(length)]
            start += length
    text = draw(st.sampled_from(["", " ", "\n"]))
    for token in tokens:
        text += token + draw(st.sampled_from(RLE_SEPARATORS))
    return text if draw(st.booleans()) else text.rstrip()


@SETTINGS
@given(st.lists(st.tuples(st.one_of(st.none(), rle_strings()), st.one_of(st.none(), st.integers(1, 200))), min_size=1, max_size=10))
def masks(cases):
    texts = pl.Series("Heart", [text for text, _ in cases], dtype=pl.String)
    sizes = pl.Series([size for _, size in cases], dtype=pl.Int64)
    known = sizes.is_not_null().to_numpy()
    n_pixels = sizes.fill_null(0).to_numpy().astype(np.int64)
    rule = rle_problems(texts, sizes)
    full_texts, full = _mask_column(texts, "Heart", n_pixels, known, True)
    tail_texts, tail = _mask_column(texts, "Heart", n_pixels, known, False)
    for row, (text, _) in enumerate(cases):
        expected = None if rule[row] is None else f"mask 'Heart': {rule[row]}"
        assert full[row] == expected, (text, full[row], expected)  # check_masks=True: exactly the decoders' rule
        assert tail[row] in (None, expected), (text, tail[row], expected)  # the default: never another verdict
        blank = text is None or not text.strip()
        assert full_texts[row] == (None if blank else text) == tail_texts[row], (text, full_texts[row])
    seen["masks"] += len(cases)


numbers()
numbers_of_real_shape()
masks()
print(json.dumps(seen))
'''


@pytest.mark.slow
def test_kernels_equal_the_reference_rules_on_hostile_strings(tmp_path):
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path), EXAMPLES="300")
    done = subprocess.run([sys.executable, "-c", _CHECKS], capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["numbers"] > 500 and seen["numbers_kernel"] > 100 and seen["masks"] > 500, seen
