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
