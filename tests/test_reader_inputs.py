"""One set of accepted inputs and one way of naming a bad row, for every reader of the toolkit.

The readers are ``read_table``, ``scan_table``, ``hub.load`` / ``hub.scan`` (local
folders and the Hub emulator, which read through the streaming reader of
``hub.stream``) and ``build_cache``.  They share one CSV rulebook
(``io.csvstream``): the same compressions, the same longest record, and a bad row
named by file, row (counted from 0 after the header), id and the fix that exists
where the error is raised.
"""

from __future__ import annotations

import bz2
from pathlib import Path

import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import FileReadError, RecordError
from chexmask_u_tools.hub.cache import build_cache
from chexmask_u_tools.hub.discovery import discover
from chexmask_u_tools.hub.read import load, scan
from chexmask_u_tools.io.csvstream import MAX_RECORD_BYTES


def _released_lines(rows: int) -> list[str]:
    """``rows`` VinDr-CXR rows as released CSV lines (header first, ids unique), about 20 kB each."""
    sample = cxu.load_sample().filter(pl.col("source") == "VinDr-CXR")
    table = pl.concat([sample] * (-(-rows // sample.height))).head(rows)
    table = table.with_columns(pl.format("{}-{}", "image_id", pl.int_range(pl.len())).alias("image_id"))
    return cxu.to_released(table).write_csv().splitlines(keepends=True)


def _write_repo(root: Path, name: str, lines: list[str]) -> Path:
    path = root / "Preprocessed" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(lines).encode()
    path.write_bytes(bz2.compress(data) if name.endswith(".bz2") else data)
    return path


def _readers(root: Path, path: Path, cache_dir: Path) -> dict:
    """Each reader's whole result for a repo folder holding one file (``path``)."""
    return {
        "read_table": lambda: cxu.read_table(path),
        "scan_table": lambda: cxu.scan_table(path).collect(),
        "hub.load": lambda: pl.concat(load(root, use_cache=False)),
        "hub.scan": lambda: scan(root, use_cache=False).collect(),
        "build_cache": lambda: scan(root, cache_dir=build_cache(root, cache_dir, progress=False)).collect(),
    }


# --------------------------------------------------------------------------- issue 22 item 8: one set of inputs


def test_every_reader_takes_a_bz2_csv(tmp_path, hub_emulator):
    root = tmp_path / "repo"
    path = _write_repo(root, "VinDr-CXR.csv.bz2", _released_lines(12))
    assert [(item.path, item.format) for item in discover(root).files] == [("Preprocessed/VinDr-CXR.csv.bz2", "csv.bz2")]
    expected = cxu.read_table(path)
    assert expected.height == 12
    for name, read in _readers(root, path, tmp_path / "cache").items():
        assert read().equals(expected), name
    hub_emulator.add_repo("someone/bz2", root)
    assert scan("someone/bz2", use_cache=False).collect().equals(expected)
    assert pl.concat(load("someone/bz2", use_cache=False)).equals(expected)


def _with_notes(lines: list[str], notes: dict[int, str]) -> list[str]:
    """The lines with a last column ``notes`` (no reader uses it): ``notes[row]`` in data row ``row``, else ``-``."""
    out = [lines[0].rstrip("\n") + ",notes\n"]
    for row, line in enumerate(lines[1:]):
        out.append(line.rstrip("\n") + "," + notes.get(row, "-") + "\n")
    return out


def test_every_reader_takes_a_record_over_two_mib(tmp_path, hub_emulator):
    """hub.load read 2 MiB blocks and refused a 5 MiB record that read_table (8 MiB blocks) took."""
    root = tmp_path / "repo"
    path = _write_repo(root, "VinDr-CXR.csv", _with_notes(_released_lines(6), {3: "x" * (5 << 20)}))
    expected = cxu.read_table(path)
    assert expected.height == 6
    for name, read in _readers(root, path, tmp_path / "cache").items():
        assert read().equals(expected), name
    hub_emulator.add_repo("someone/long-record", root)
    assert pl.concat(load("someone/long-record", use_cache=False)).equals(expected)


def test_every_reader_refuses_a_record_over_the_limit_naming_the_file(tmp_path):
    root = tmp_path / "repo"
    path = _write_repo(root, "VinDr-CXR.csv", _with_notes(_released_lines(4), {2: "x" * (MAX_RECORD_BYTES + 1)}))
    for name, read in _readers(root, path, tmp_path / "cache").items():
        with pytest.raises(FileReadError, match="VinDr-CXR.csv") as caught:
            read()
        assert f"longer than {MAX_RECORD_BYTES} bytes" in str(caught.value), name


# --------------------------------------------------------------------------- issue 22 item 11: one way of naming a bad row


def _break(lines: list[str], row: int, kind: str) -> list[str]:
    """The lines with data row ``row`` made bad: an unparsable landmark (``value``) or a field too few (``ragged``)."""
    lines = list(lines)
    header = lines[0].rstrip("\n").split(",")
    assert header[0] == "image_id" and header[-1] == "Width"
    line = lines[row + 1]
    if kind == "value":
        start = line.index('"') + 1  # the landmarks, the first quoted field
        lines[row + 1] = line[:start] + "x" + line[line.index(",", start) :]
    else:
        lines[row + 1] = line[: line.rstrip("\n").rindex(",")] + "\n"  # Width dropped
    return lines


@pytest.fixture(scope="module")
def long_lines() -> list[str]:
    # 460 rows of ~20 kB: past the first 8 MiB block of read_table and build_cache, the fourth 2 MiB block of hub.load.
    return _released_lines(460)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["value", "ragged"])
@pytest.mark.parametrize("row", [17, 440])
def test_every_reader_names_a_bad_row_alike(tmp_path, long_lines, kind, row):
    lines = long_lines if row > 40 else long_lines[:41]
    root = tmp_path / "repo"
    path = _write_repo(root, "VinDr-CXR.csv", _break(lines, row, kind))
    image_id = lines[row + 1].split(",", 1)[0]
    for name, read in _readers(root, path, tmp_path / "cache").items():
        with pytest.raises(RecordError) as caught:
            read()
        error, message = caught.value, str(caught.value)
        assert (error.row, error.image_id) == (row, image_id), name
        assert Path(error.file).name == "VinDr-CXR.csv", name
        assert f"row {row}, counted from 0 after the header" in message and image_id in message, name
        if kind == "value":
            assert message.endswith('pass on_error="skip" to drop such rows'), name
        else:
            # A malformed record is never skipped: the fix is the file, and on_error is not offered.
            assert "on_error" not in message and "fields, expected" in message, name


# --------------------------------------------------------------------------- issue 22 item 3: ids as written


def test_every_reader_keeps_ids_byte_for_byte(tmp_path, hub_emulator):
    """File names may hold spaces, at either end too: no reader strips or otherwise changes an id."""
    ids = [" abc.png ", "two  spaces.png", "\ttab.png", "plain.png"]
    lines = _released_lines(len(ids))
    quoted = [lines[0]] + ['"' + image_id + '"' + line[line.index(",") :] for image_id, line in zip(ids, lines[1:])]
    root = tmp_path / "repo"
    path = _write_repo(root, "VinDr-CXR.csv", quoted)
    for name, read in _readers(root, path, tmp_path / "cache").items():
        assert read()["image_id"].to_list() == ids, name
    hub_emulator.add_repo("someone/spaced-ids", root)
    assert pl.concat(load("someone/spaced-ids", use_cache=False))["image_id"].to_list() == ids


def test_a_quote_inside_an_unquoted_field_is_a_literal_for_every_reader(tmp_path):
    """``x"y.png`` (unquoted) holds a literal quote, as for pyarrow and Python's csv; counting it as a quote
    misplaced the record ends after it, inside a later quoted field that holds line breaks (numpy-printed landmarks)."""
    import numpy as np

    lines = _released_lines(4)
    flat = cxu.read_table(_write_repo(tmp_path / "flat", "VinDr-CXR.csv", lines))
    printed = list(lines)
    printed[1] = 'x"y.png' + lines[1][lines[1].index(",") :]
    head, landmarks, tail = lines[3].split('"', 2)
    points = np.array(landmarks.split(","), dtype=np.int64).reshape(-1, 2)
    printed[3] = head + '"' + str(points) + '"' + tail  # "[[367 110]\n [342 114]\n ...]"
    assert "\n [" in printed[3]
    root = tmp_path / "repo"
    path = _write_repo(root, "VinDr-CXR.csv", printed)
    expected = flat.with_columns(pl.Series("image_id", ['x"y.png', *flat["image_id"][1:]]))
    for name, read in _readers(root, path, tmp_path / "cache").items():
        assert read().equals(expected), name


def test_each_number_string_is_read_in_its_own_layout_by_every_reader(tmp_path):
    """A numpy-printed row among flat ones reads the same in every reader: the layout was sniffed from the first
    64 rows of whatever batch a reader parsed, so read_table refused row 150 while hub.load (another batch) read it."""
    import numpy as np

    lines = _released_lines(200)
    flat = cxu.read_table(_write_repo(tmp_path / "flat", "VinDr-CXR.csv", lines))
    mixed = list(lines)
    head, landmarks, tail = lines[151].split('"', 2)
    mixed[151] = head + '"' + str(np.array(landmarks.split(","), dtype=np.int64).reshape(-1, 2)) + '"' + tail
    root = tmp_path / "repo"
    path = _write_repo(root, "VinDr-CXR.csv", mixed)
    for name, read in _readers(root, path, tmp_path / "cache").items():
        assert read().equals(flat), name


# --------------------------------------------------------------------------- the CSV rulebook against its reference

_DIFFERENTIAL = r'''
import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chexmask_u_tools.errors import FileReadError, RecordError
from chexmask_u_tools.io.csvstream import iter_csv_batches

FIELDS = [b"", b"x", b"12", b"3.5", b" sp ", b"[1 2]", b'"a,b"', b'"1\n2"', b'"1\r\n2"', b'""', b'"q""q"', b"\x00",
          "\u00e9".encode(), b"\xff", b'a"b', b'"a"b', b'"', b"\t"]
ENDS = [b"\n", b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n"]


@st.composite
def texts(draw):
    """(CSV text after the header, field count): mostly well-formed records, some with a field too many or too few."""
    width = draw(st.sampled_from([1, 2, 3]))
    body = b""
    for _ in range(draw(st.integers(0, 8))):
        count = width + draw(st.sampled_from([0, 0, 0, 0, 0, 0, 1, -1]))
        body += b",".join(draw(st.sampled_from(FIELDS)) for _ in range(max(count, 0))) + draw(st.sampled_from(ENDS))
    if draw(st.booleans()) and body:
        body = body[: draw(st.integers(0, len(body)))]  # cut anywhere
    return body, width


def reference(body, width):
    """pyarrow's whole-text parse (every field a string, empty = null): rows, or None where it refuses the text."""
    names = [f"f{i}" for i in range(width)]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(body),
            read_options=pacsv.ReadOptions(column_names=names, block_size=len(body) + 1),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.large_string() for name in names},
                strings_can_be_null=True, quoted_strings_can_be_null=True, null_values=[""],
            ),
        )
    except pa.ArrowInvalid as error:
        return [] if "Empty CSV file" in str(error) else None
    return [tuple(row.values()) for row in table.to_pylist()]


cases = {"equal": 0, "refused": 0}


@settings(max_examples=int(__import__("os").environ["EXAMPLES"]), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(texts(), st.sampled_from([1, 5, 64, 1 << 20]))
def check(text, block):
    body, width = text
    columns = [f"c{i}" for i in range(width)]
    try:
        got = [row for batch in iter_csv_batches(io.BytesIO(body), columns, file="x.csv", block_size=block, id_column="c0")
               for row in batch.rows()]
    except FileReadError as error:
        got = error
    except RecordError as error:
        got = error
    if body and body[-1:] not in (b"\n", b"\r"):
        # A file cut mid-record: refused, as a cut file unless an earlier record is bad already.
        wanted = FileReadError if reference(body + b"\n", width) is not None else (RecordError, FileReadError)
        assert isinstance(got, wanted), (body, width, block, got)
        cases["refused"] += 1
        return
    expected = reference(body, width)
    if expected is None:
        assert isinstance(got, (RecordError, FileReadError)), (body, width, block, got)
        cases["refused"] += 1
    else:
        assert got == expected, (body, width, block, got, expected)
        cases["equal"] += 1


check()
print(json.dumps(cases))
'''


@pytest.mark.slow
def test_csv_rulebook_equals_its_reference_on_hostile_text(tmp_path):
    """Every reader's CSV text (iter_csv_batches: its fast path and its fallback) reads as pyarrow reads the whole
    text, or refuses what pyarrow refuses; a text not ending in a line break is a cut file.  In a subprocess with
    numba's bounds checks on, so that a kernel reading or writing outside its buffers fails here."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path), EXAMPLES="400")
    done = subprocess.run([sys.executable, "-c", _DIFFERENTIAL], capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = json.loads(done.stdout.strip().splitlines()[-1])
    assert cases["equal"] > 50 and cases["refused"] > 10, cases
