"""Hostile input for the readers and decoders (issue 11): no crash, no silent wrong row, no generic exception."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.io.released import to_released
from chexmask_u_tools.io.rle import rle_problems
from chexmask_u_tools.schema import MAX_MASK_PIXELS, nearest_indices

CRASHERS = [
    "1761 9223372036854775804 7 7",  # start + length wrapped int64 and segfaulted np.repeat
    "2 9223372036854775807",  # leaked a bare ValueError
    "9223372036854775807 2",
    "1 99999999999999999999",  # beyond int64: saturated by np.fromstring, null in polars
    "-9223372036854775808 5",
    "1 4611686018427387904 3 1",
]


def run_python(code: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter, so that a crash is a return code, not a dead test run."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True, text=True, timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def checked_kernels(tmp_path_factory) -> dict:
    """Environment in which the compiled kernels (the decoders' default) check every index they use.

    numba does not check bounds by default, so a hostile string that got past the
    validation could write outside a buffer unnoticed; compiled with bounds checks
    (into their own cache, shared by this module's subprocesses) it raises instead,
    and the subprocess fails.
    """
    return dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("numba-boundscheck")))


@pytest.mark.parametrize("rle", CRASHERS)
def test_out_of_range_runs_raise_rle_error_in_every_decoder(rle, checked_kernels):
    result = run_python(
        f"""
        import chexmask_u_tools as cxu
        from chexmask_u_tools.io.rle import rle_problems
        rle = {rle!r}
        for method in ("kernel", "numpy"):
            for decode in (
                lambda: cxu.rle_decode(rle, 1024, 1024, method=method),
                lambda: cxu.rle_decode(rle, 1024, 1024, shape=(256, 256), method=method),
                lambda: cxu.rle_decode_many([None, rle], 1024, 1024, method=method),
                lambda: cxu.rle_decode_many(["1 1", rle], [4, 1024], [4, 1024], method=method),
            ):
                try:
                    decode()
                except cxu.RLEError as error:
                    print("RLEError", error)
                else:
                    raise SystemExit("decoded " + repr(rle))
        assert rle_problems([rle], 1024 * 1024)[0] is not None
        """,
        env=checked_kernels,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("RLEError") == 8


def test_huge_size_is_rejected_before_allocating():
    with pytest.raises(cxu.InputError, match="MAX_MASK_PIXELS"):
        cxu.rle_decode("1 5", 2**31 - 1, 2**31 - 1)
    with pytest.raises(cxu.InputError, match="MAX_MASK_PIXELS"):
        cxu.rle_decode_many(["1 5"], 2**20, 2**20)
    assert cxu.rle_decode("1 1", 2**14, 2**14).shape == (2**14, 2**14)  # exactly the limit is fine
    assert 2**28 == MAX_MASK_PIXELS


@pytest.mark.parametrize("rle", ["1\t2  4\n1", " 1 2\r\n4 1 ", "1  2\t\t4 1"])
def test_decode_many_accepts_the_whitespace_decode_accepts(rle):
    expected = cxu.rle_decode(rle, 2, 3)
    np.testing.assert_array_equal(cxu.rle_decode_many([rle], 2, 3)[0], expected)
    np.testing.assert_array_equal(cxu.rle_decode_many([rle, "1 1"], [2, 1], [3, 1])[0], expected)
    assert expected.sum() == 3


@pytest.fixture(scope="module")
def released_vindr():
    table = cxu.load_sample().filter(pl.col("source") == "VinDr-CXR").head(4)
    return to_released(table, "chexmask-u")


@pytest.mark.parametrize("rle", CRASHERS[:3])
def test_read_table_rejects_out_of_range_runs(tmp_path, released_vindr, rle):
    path = tmp_path / "VinDr-CXR.csv"
    released_vindr.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(pl.lit(rle)).otherwise(pl.col("Heart")).alias("Heart")
    ).write_csv(path)
    with pytest.raises(cxu.RecordError, match="past the mask") as info:
        cxu.read_table(path, check_masks=True)
    assert info.value.row == 2
    if rle.endswith(" 7 7"):
        # the last run is fine: only the full check can see the wrapped middle run
        assert len(cxu.read_table(path)) == 4
    else:
        with pytest.raises(cxu.RecordError, match="past the mask"):
            cxu.read_table(path)


def test_read_table_rejects_huge_sizes(tmp_path, released_vindr):
    path = tmp_path / "OriginalResolution" / "VinDr-CXR.csv"
    path.parent.mkdir()
    released_vindr.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("2147483647")).otherwise(pl.col("Height")).alias("Height"),
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("2147483647")).otherwise(pl.col("Width")).alias("Width"),
    ).write_csv(path)
    with pytest.raises(cxu.RecordError, match="MAX_MASK_PIXELS") as info:
        cxu.read_table(path)
    assert info.value.row == 1


def test_rle_problems_matches_the_decoder():
    rles = ["1 4", "3 2 4 1", "1 2 3", "0 1", "x 1", None, " ", "12 1", "13 1"]
    problems = rle_problems(rles, 12).to_list()
    for rle, problem in zip(rles, problems):
        if problem is None:
            cxu.rle_decode(rle, 3, 4)
        else:
            with pytest.raises(cxu.RLEError):
                cxu.rle_decode(rle, 3, 4)
    assert problems[0] is None and problems[-2] is None and "past" in problems[-1]


# ----------------------------------------------------------------------------- fuzzing in a subprocess

FUZZ = """
import json, re
import numpy as np
from hypothesis import given, settings, strategies as st, HealthCheck
import chexmask_u_tools as cxu
from chexmask_u_tools.errors import CheXmaskUError
from chexmask_u_tools.io.rle import rle_problems
from chexmask_u_tools.schema import nearest_indices

counts = {"clean_error": 0, "correct": 0, "other": 0}
INT = re.compile(r"[+-]?[0-9]+$")


def reference(rle, height, width):
    # Plain-Python decoder with unbounded integers: the oracle.
    tokens = rle.split()
    if not all(INT.match(t) for t in tokens) or len(tokens) % 2:
        return None
    values = [int(t) for t in tokens]
    mask = np.zeros(height * width, dtype=bool)
    previous_end = 0
    for start, length in zip(values[::2], values[1::2]):
        if start < 1 or length < 1 or start - 1 + length > height * width or start - 1 < previous_end:
            return None
        mask[start - 1 : start - 1 + length] = True
        previous_end = start - 1 + length
    return mask.reshape(height, width)


edge = st.sampled_from([0, 1, 2, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, 10**20, -1, -(2**63)])
number = st.one_of(st.integers(-2, 40), edge, st.integers(-(2**70), 2**70))
token = st.one_of(number.map(str), number.map(str), st.sampled_from(["a", "1.5", "+3", "0x1", "", "--1", "1e3"]))
separator = st.sampled_from([" ", " ", " ", "  ", "\\t", "\\n", " \\r\\n "])


@st.composite
def rle_strings(draw):
    if draw(st.booleans()):
        # mostly valid: increasing runs, then maybe one mutation
        starts = sorted(draw(st.sets(st.integers(1, 36), max_size=6)))
        values = []
        for i, start in enumerate(starts):
            limit = (starts[i + 1] - start) if i + 1 < len(starts) else 37 - start
            values += [start, draw(st.integers(1, max(1, limit)))]
        tokens = [str(v) for v in values]
        if tokens and draw(st.booleans()):
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(token)
    else:
        tokens = draw(st.lists(token, max_size=8))
    seps = [draw(separator) for _ in tokens]
    return draw(st.sampled_from(["", " "])) + "".join(t + s for t, s in zip(tokens, seps))


def outcome(decode, expected):
    try:
        result = decode()
    except CheXmaskUError:
        return "clean_error" if expected is None else "other"
    except Exception:
        return "other"
    if expected is None:
        return "other"
    return "correct" if np.array_equal(np.asarray(result, dtype=bool), expected) else "other"


failures = []


@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(rle_strings(), st.integers(1, 6), st.integers(1, 6))
def fuzz(rle, height, width):
    expected = reference(rle, height, width)
    rows, cols = nearest_indices(height, 4), nearest_indices(width, 3)
    sampled = None if expected is None else expected[np.ix_(rows, cols)]
    buffer = np.ones((height, width), dtype=np.uint8)
    batch = np.ones((2, height, width), dtype=bool)
    # the default (the compiled kernels) and the numpy reference
    cases = [
        (lambda: cxu.rle_decode(rle, height, width), expected),
        (lambda: cxu.rle_decode(rle, height, width, shape=(4, 3)), sampled),
        (lambda: cxu.rle_decode(rle, height, width, out=buffer), expected),
        (lambda: cxu.rle_decode_many([rle], height, width)[0], expected),
        (lambda: cxu.rle_decode_many(["1 1", rle], height, width, out=batch)[1], expected),
        (lambda: cxu.rle_decode_many([rle, "1 1"], [height, 1], [width, 1])[0], expected),
        (lambda: cxu.rle_decode(rle, height, width, method="numpy"), expected),
        (lambda: cxu.rle_decode(rle, height, width, shape=(4, 3), method="numpy"), sampled),
        (lambda: cxu.rle_decode_many(["1 1", rle], height, width, out=batch, method="numpy")[1], expected),
    ]
    for decode, want in cases:
        result = outcome(decode, want)
        counts[result] += 1
        if result == "other":
            failures.append(repr((rle, height, width)))
    checked = rle_problems([rle], height * width)[0]
    result = "clean_error" if (checked is not None and expected is None) else (
        "correct" if (checked is None and expected is not None) else "other")
    counts[result] += 1
    if result == "other":
        failures.append("rle_problems " + repr((rle, height, width)))


fuzz()

# The readers: every fuzzed string as the Heart of one row of a 2x3 original-frame file, read with the
# full check (rows dropped exactly where the oracle rejects, kept masks decode to the oracle's) and
# with the default tail check (never a crash or a foreign exception).
import tempfile, os, warnings
import polars as pl
from chexmask_u_tools.io.released import to_released

@settings(max_examples=MAX_EXAMPLES // 6, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(st.lists(rle_strings(), min_size=1, max_size=12))
def fuzz_table(strings):
    base = cxu.load_sample().filter(pl.col("source") == "CheXpert").head(1).with_columns(frame=pl.lit("original"), height=pl.lit(6, pl.Int32), width=pl.lit(6, pl.Int32))
    table = pl.concat([base] * len(strings)).with_columns(
        image_id=pl.format("id-{}", pl.int_range(pl.len())), rle_heart=pl.Series(strings, dtype=pl.String),
        rle_left_lung=pl.lit(None, pl.String), rle_right_lung=pl.lit(None, pl.String))
    released = to_released(table, "chexmask")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "OriginalResolution", "CheXpert.csv")
        os.makedirs(os.path.dirname(path))
        released.write_csv(path)
        expected = {f"id-{i}": reference(s, 6, 6) for i, s in enumerate(strings)}
        for check in (True, False):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    read = cxu.read_table(path, on_error="skip", check_masks=check)
            except Exception as error:
                counts["other"] += 1
                failures.append(f"table check_masks={check}: {type(error).__name__} {error}")
                continue
            kept = dict(zip(read["image_id"].to_list(), read["rle_heart"].to_list()))
            for image_id, want in expected.items():
                if image_id not in kept:
                    ok = want is None
                    counts["clean_error" if ok else "other"] += 1
                elif check:
                    ok = want is not None and np.array_equal(cxu.rle_decode(kept[image_id], 6, 6), want)
                    counts["correct" if ok else "other"] += 1
                else:
                    continue  # the tail check keeps some bad strings by design; decoding them raises
                if not ok:
                    failures.append(f"table check_masks={check} {strings[int(image_id[3:])]!r}")

fuzz_table()
print(json.dumps({"counts": counts, "failures": failures[:10]}))
"""


@pytest.mark.slow
def test_fuzz_every_decoder_in_a_subprocess(checked_kernels):
    result = run_python(FUZZ.replace("MAX_EXAMPLES", "600"), timeout=600, env=checked_kernels)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    counts = report["counts"]
    print("fuzz cases:", counts)
    assert counts["other"] == 0, report["failures"]
    assert counts["clean_error"] > 500 and counts["correct"] > 500


# ----------------------------------------------------------------------------- decode to a shape / into buffers


@pytest.mark.parametrize("target", [(512, 512), (300, 700), (1024, 1024), (2048, 100), (7, 1)])
def test_decode_to_shape_equals_decode_then_sample(target):
    sample = cxu.load_sample()
    rles = sample["rle_right_lung"].to_list()[:3] + sample["rle_heart"].to_list()[:3] + ["1 1048576", ""]
    rows, cols = nearest_indices(1024, target[0]), nearest_indices(1024, target[1])
    for rle in rles:
        full = cxu.rle_decode(rle, 1024, 1024)
        np.testing.assert_array_equal(cxu.rle_decode(rle, 1024, 1024, shape=target), full[np.ix_(rows, cols)])


def test_nearest_indices_invert_the_raster_scaling():
    from chexmask_u_tools.masks.raster import scale_points

    for full, small in [(1024, 512), (1024, 300), (3, 5), (1000, 999), (7, 1)]:
        index = nearest_indices(full, small)
        # New pixel j sits where scale_points (the mapping rasterize(from_size=) applies to landmarks)
        # puts it in the full grid; the sampled pixel is the nearest one there (ties up, clipped).
        new_pixels = np.stack([np.arange(small)] * 2, axis=1).astype(np.float64)
        position = scale_points(new_pixels, (small, small), (full, full))[:, 0]
        np.testing.assert_array_equal(index, np.minimum(np.floor(position + 0.5), full - 1))
        assert np.all(np.abs(position - index) <= 0.5)


def test_out_buffers_equal_fresh_results():
    sample = cxu.load_sample()
    rles = sample["rle_left_lung"].to_list()[:4]
    fresh = cxu.rle_decode_many(rles, 1024, 1024)
    for dtype in (bool, np.uint8):
        batch = np.full((4, 1024, 1024), 7, dtype=dtype)
        assert cxu.rle_decode_many(rles, 1024, 1024, out=batch) is batch
        np.testing.assert_array_equal(batch.astype(bool), fresh)
        assert set(np.unique(batch).tolist()) <= {0, 1}
        one = np.full((1024, 1024), 1, dtype=dtype)
        cxu.rle_decode(rles[1], 1024, 1024, out=one)
        np.testing.assert_array_equal(one.astype(bool), fresh[1])
    small = np.ones((256, 256), dtype=bool)
    cxu.rle_decode(rles[0], 1024, 1024, shape=(256, 256), out=small)
    np.testing.assert_array_equal(small, fresh[0][::4, ::4])


@pytest.mark.parametrize(
    "out, message",
    [
        (np.zeros((2, 2), dtype=bool), "shape"),
        (np.zeros((2, 3), dtype=np.float32), "dtype"),
        ([[0, 0, 0], [0, 0, 0]], "numpy array or a torch tensor"),
    ],
)
def test_bad_out_buffer_raises(out, message):
    with pytest.raises(cxu.InputError, match=message):
        cxu.rle_decode("1 2", 2, 3, out=out)


def test_out_torch_tensor():
    torch = pytest.importorskip("torch")
    sample = cxu.load_sample()
    rles = sample["rle_heart"].to_list()[:2]
    fresh = cxu.rle_decode_many(rles, 1024, 1024)
    for dtype in (torch.bool, torch.uint8):
        tensor = torch.full((2, 1024, 1024), 1, dtype=dtype)
        assert cxu.rle_decode_many(rles, 1024, 1024, out=tensor) is tensor
        np.testing.assert_array_equal(tensor.numpy().astype(bool), fresh)
    view = torch.zeros((1024, 2048), dtype=torch.uint8)[:, ::2]  # not contiguous: decoded, then copied in
    cxu.rle_decode(rles[0], 1024, 1024, out=view)
    np.testing.assert_array_equal(view.numpy().astype(bool), fresh[0])


# ----------------------------------------------------------------------------- directories and missing paths


def test_read_table_on_a_directory_reads_every_data_file(tmp_path):
    table = cxu.read_table(cxu.sample_dir())
    assert table.equals(cxu.load_sample())
    assert cxu.scan_table(cxu.sample_dir()).collect().equals(table)
    (tmp_path / "empty").mkdir()
    with pytest.raises(cxu.FileReadError, match="no data files"):
        cxu.read_table(tmp_path / "empty")
    for missing in (tmp_path / "no_such_folder", tmp_path / "no_such_file.csv"):
        for reader in (cxu.read_table, cxu.scan_table):
            with pytest.raises(cxu.FileReadError, match="not found"):
                reader(missing)


# ----------------------------------------------------------------------------- malformed CSV records


@pytest.fixture(scope="module")
def released_csv_bytes():
    table = cxu.load_sample().filter(pl.col("source") == "CheXpert").head(6)
    return table, to_released(table).write_csv().encode()


def records(data: bytes) -> list[list[str]]:
    import csv
    import io

    return list(csv.reader(io.StringIO(data.decode())))


def join(rows: list[list[str]]) -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def compress(data: bytes, suffix: str) -> bytes:
    import bz2
    import gzip
    import lzma

    import pyarrow as pa

    if suffix == ".gz":
        return gzip.compress(data)
    if suffix == ".xz":
        return lzma.compress(data)
    if suffix == ".bz2":
        return bz2.compress(data)
    if suffix == ".zst":
        return pa.compress(data, codec="zstd", asbytes=True)
    return data


def read_both(path):
    """read_table and scan_table().collect() must agree: the same rows or the same exception type."""
    outcomes = []
    for read in (lambda: cxu.read_table(path), lambda: cxu.scan_table(path).collect()):
        try:
            outcomes.append(read())
        except Exception as error:  # noqa: BLE001 - the test inspects the type
            outcomes.append(error)
    return outcomes


def malformed_cases(data: bytes) -> dict[str, tuple[bytes, type, str, int | None]]:
    rows = records(data)
    cut_row = [list(r) for r in rows]
    cut_row[3] = cut_row[3][:6]
    run_together = [list(r) for r in rows]
    run_together[2] = run_together[2] + ["extra"]
    quote_at = data.index(b"\n", data.index(b"\n") + 1) + 1  # start of data row 1
    bad_utf8_at = data.index(b"view1_frontal", quote_at)
    return {
        "six fields": (join(cut_row), cxu.RecordError, "6 fields, expected 11", 2),
        "cut mid-record, newline-terminated": (data[: len(data) * 2 // 3] + b"\n", cxu.RecordError, "fields, expected 11", None),
        "an extra field": (join(run_together), cxu.RecordError, "12 fields, expected 11", 1),
        "unbalanced quote": (data[:quote_at] + b'"' + data[quote_at:], cxu.RecordError, "fields, expected 11", 1),
        "invalid UTF-8": (data[:bad_utf8_at] + b"\xff\xfe" + data[bad_utf8_at + 2 :], cxu.RecordError, "invalid UTF-8", 1),
        "no final line break": (data[:-1] + b"9", cxu.FileReadError, "line break", None),
    }


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.xz", ".csv.zst"])
def test_malformed_records_raise_package_errors_naming_file_and_row(tmp_path, released_csv_bytes, suffix):
    _, data = released_csv_bytes
    for case, (content, error_type, message, row) in malformed_cases(data).items():
        path = tmp_path / case.replace(" ", "_").replace(",", "") / f"CheXpert{suffix}"
        path.parent.mkdir()
        path.write_bytes(compress(content, suffix.removeprefix(".csv")))
        for outcome in read_both(path):
            assert isinstance(outcome, error_type), (case, suffix, outcome)
            assert message in str(outcome) and str(path) in str(outcome), (case, outcome)
            if row is not None:
                assert outcome.row == row, (case, outcome)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.xz", ".csv.zst", ".csv.bz2"])
def test_line_endings_and_containers_read_the_same_rows(tmp_path, released_csv_bytes, suffix):
    table, data = released_csv_bytes
    for ending in (b"\n", b"\r\n", b"\r"):
        path = tmp_path / ending.hex() / f"CheXpert{suffix}"
        path.parent.mkdir()
        path.write_bytes(compress(data.replace(b"\n", ending), suffix.removeprefix(".csv")))
        for outcome in read_both(path):
            assert isinstance(outcome, pl.DataFrame), (ending, outcome)
            assert outcome["image_id"].to_list() == table["image_id"].to_list()
            assert outcome["rle_heart"].to_list() == table["rle_heart"].to_list()


def test_header_only_file_is_an_empty_table(tmp_path, released_csv_bytes):
    _, data = released_csv_bytes
    path = tmp_path / "CheXpert.csv.gz"
    path.write_bytes(compress(data[: data.index(b"\n") + 1], ".gz"))
    for outcome in read_both(path):
        assert isinstance(outcome, pl.DataFrame) and outcome.height == 0
        assert outcome.schema == cxu.CANONICAL_SCHEMA


@pytest.mark.parametrize("suffix", [".csv.xz", ".csv.gz", ".csv.zst"])
def test_corrupt_or_misnamed_compressed_files_raise_file_read_error(tmp_path, released_csv_bytes, suffix):
    _, data = released_csv_bytes
    packed = compress(data, suffix.removeprefix(".csv"))
    cases = {
        "misnamed": data,  # a plain CSV under a compressed name
        "corrupt": packed[:40] + bytes(64) + packed[104:],
        "truncated": packed[: len(packed) // 2],
    }
    for case, content in cases.items():
        path = tmp_path / case / f"CheXpert{suffix}"
        path.parent.mkdir()
        path.write_bytes(content)
        for outcome in read_both(path):
            assert isinstance(outcome, (cxu.FileReadError, cxu.RecordError)), (case, type(outcome), outcome)
            assert str(path) in str(outcome)


# ----------------------------------------------------------------------------- compression bombs under a memory limit

BOMB = """
import gzip, os, resource, sys, zlib
import polars as pl
import chexmask_u_tools as cxu
from chexmask_u_tools.io.released import to_released

directory = sys.argv[1]
table = cxu.load_sample().filter(pl.col("source") == "CheXpert").head(1)
data = to_released(table).write_csv().encode()
header, row = data.split(b"\\n", 1)
target = 600 << 20  # decompressed bytes in each bomb

def write_bomb(name, first, unit):
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(os.path.join(directory, name), "wb") as out:
        out.write(compressor.compress(first))
        block = unit * max(1, (1 << 20) // len(unit))
        for _ in range(target // len(block)):
            out.write(compressor.compress(block))
        out.write(compressor.flush())

write_bomb("line/CheXpert.csv.gz", header + b"\\n" + b"1,", b"0" * 4096)  # one endless field
write_bomb("rows/CheXpert.csv.gz", header + b"\\n", row)  # valid rows, over and over
write_bomb("junk/CheXpert.csv.gz", header + b"\\n", b"x," * 10 + b"x\\n")  # right field count, bad values

def vm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize"):
            return int(line.split()[1])

budget = 700 << 20
pl.DataFrame({"a": [1]}).lazy().collect()  # start polars' thread pools before the limit
limit = vm_kib() * 1024 + budget
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = {}
for name, read in [
    ("line read_table", lambda: cxu.read_table(os.path.join(directory, "line/CheXpert.csv.gz"))),
    ("line scan_table", lambda: cxu.scan_table(os.path.join(directory, "line/CheXpert.csv.gz")).collect()),
    ("junk read_table", lambda: cxu.read_table(os.path.join(directory, "junk/CheXpert.csv.gz"))),
    ("junk scan_table", lambda: cxu.scan_table(os.path.join(directory, "junk/CheXpert.csv.gz")).collect()),
    ("rows head(5)", lambda: cxu.scan_table(os.path.join(directory, "rows/CheXpert.csv.gz")).head(5).collect()),
]:
    print("reading", name, file=sys.stderr, flush=True)
    try:
        outcome = read()
        results[name] = f"rows {outcome.height}"
    except cxu.CheXmaskUError as error:
        results[name] = type(error).__name__
    except MemoryError:
        results[name] = "MemoryError"
import json
import os
print(json.dumps(results))
"""


@pytest.mark.slow
def test_compression_bombs_fail_cleanly_in_bounded_memory(tmp_path):
    for name in ("line", "rows", "junk"):
        (tmp_path / name).mkdir()
    # The limit is on address space, which every new thread's stack and malloc arena also reserve:
    # few threads and arenas keep it about the data (else a thread start can fail and abort the process).
    env = dict(os.environ, MALLOC_ARENA_MAX="2", POLARS_MAX_THREADS="2", OMP_NUM_THREADS="2")
    result = subprocess.run(
        [sys.executable, "-c", BOMB, str(tmp_path)], check=False, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {
        "line read_table": "FileReadError",
        "line scan_table": "FileReadError",
        "junk read_table": "RecordError",
        "junk scan_table": "RecordError",
        "rows head(5)": "rows 5",
    }


# ----------------------------------------------------------------------------- columns= for unknown layouts


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_column_mapping_reads_unknown_names(tmp_path, suffix):
    table = cxu.load_sample().filter(pl.col("source") == "CheXpert").head(5)
    theirs = {
        "Path": "img",
        "Landmarks (Mean)": "lm",
        "Landmarks (Std)": "lm_sd",
        "latents": "z_sigma",
        "Heart": "heart_rle",
        "Dice RCA (Mean)": "quality",
    }
    released = to_released(table).rename(theirs)
    path = tmp_path / f"CheXpert{suffix}"
    if suffix == ".parquet":
        released.write_parquet(path)
    else:
        path.write_bytes(compress(released.write_csv().encode(), suffix.removeprefix(".csv")))
    with pytest.raises(cxu.SchemaError, match="no image id column"):
        cxu.read_table(path)
    mapping = {
        "img": "image_id",  # canonical names stand for their released ones ...
        "lm": "landmarks",
        "lm_sd": "Landmarks (Std)",  # ... released names are taken as they are
        "z_sigma": "latent_sigma",
        "heart_rle": "Heart",
        "quality": "dice_rca_mean",
    }
    read = cxu.read_table(path, columns=mapping)
    assert read.equals(cxu.scan_table(path, columns=mapping).collect())
    assert read.select(pl.exclude("image_id")).equals(table.select(pl.exclude("image_id")))
    assert read["image_id"].to_list() == table["image_id"].to_list()


def test_column_mapping_errors_name_the_problem(tmp_path):
    table = cxu.load_sample().filter(pl.col("source") == "CheXpert").head(2)
    path = tmp_path / "CheXpert.csv"
    to_released(table).rename({"Landmarks (Mean)": "lm"}).write_csv(path)
    with pytest.raises(cxu.SchemaError, match="'lmm' is not a column.*did you mean 'lm'"):
        cxu.read_table(path, columns={"lmm": "landmarks"})
    with pytest.raises(cxu.InputError, match="unknown target 'landmark'.*did you mean 'landmarks'"):
        cxu.read_table(path, columns={"lm": "landmark"})
    with pytest.raises(cxu.SchemaError, match="several columns named \\['Heart'\\]"):
        cxu.read_table(path, columns={"lm": "Heart"})


# ----------------------------------------------------------------------------- tables from arrays


def test_table_from_arrays_rebuilds_the_sample_exactly():
    from chexmask_u_tools.io.arrays import table_from_arrays

    sample = cxu.load_sample().filter(pl.col("source") == "Padchest")
    built = table_from_arrays(
        sample["landmarks"].to_numpy(),
        std=sample["landmarks_std"].to_numpy(),
        latent_sigma=sample["latent_sigma"].to_numpy(),
        image_ids=sample["image_id"].to_list(),
        source="padchest",
        height=sample["height"].to_list(),
        width=sample["width"].to_list(),
        dice_rca_mean=sample["dice_rca_mean"].to_list(),
        dice_rca_max=sample["dice_rca_max"].to_list(),
        rle_right_lung=sample["rle_right_lung"].to_list(),
        rle_left_lung=sample["rle_left_lung"].to_list(),
        rle_heart=sample["rle_heart"].to_list(),
    )
    assert built.schema == cxu.CANONICAL_SCHEMA
    assert built.equals(sample)


def test_table_from_arrays_minimal_and_original_frame():
    from chexmask_u_tools.io.arrays import table_from_arrays

    points = np.random.default_rng(1).uniform(0, 90, size=(3, 120, 2))
    table = table_from_arrays(points)
    assert table["image_id"].to_list() == ["0", "1", "2"] and table["source"].unique().to_list() == ["private"]
    assert table["landmarks_std"].null_count() == 3 and table["node_sigma_mean"].null_count() == 3
    assert table["dice_rca_mean"].null_count() == 3
    original = table_from_arrays(points, frame="original", height=100, width=[90, 91, 92], rle_heart=["1 5", None, ""])
    assert original["width"].to_list() == [90, 91, 92] and original["rle_heart"].to_list() == ["1 5", None, None]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"landmarks": np.zeros((2, 119, 2))}, "landmarks must have shape"),
        ({"landmarks": np.full((2, 120, 2), np.nan)}, "landmarks\\[0, 0, 0\\] is nan"),
        ({"landmarks": np.full((2, 120, 2), 1e300)}, "finite float32"),
        ({"std": -np.ones((2, 120, 2))}, "std\\[0, 0, 0\\].*non-negative"),
        ({"latent_sigma": np.ones((2, 63))}, "latent_sigma must have shape"),
        ({"image_ids": ["a"]}, "image_ids has 1 values for 2 rows"),
        ({"frame": "original"}, "needs height= and width="),
        ({"frame": "sideways"}, "frame must be one of"),
        ({"source": "Chexpurt"}, "did you mean 'CheXpert'"),
        ({"height": 2**20, "width": 2**20}, "MAX_MASK_PIXELS"),
        ({"rle_heart": ["1 5", "1048576 2"]}, "rle_heart\\[1\\].*past the mask"),
        ({"dice_rca_mean": ["good", 0.5]}, "dice_rca_mean\\[0\\] must be a number"),
    ],
)
def test_table_from_arrays_rejects_bad_input(kwargs, message):
    from chexmask_u_tools.io.arrays import table_from_arrays

    arguments = {"landmarks": np.full((2, 120, 2), 500.0), **kwargs}
    with pytest.raises(cxu.InputError, match=message):
        table_from_arrays(**arguments)


def test_lazy_csv_scan_honours_filters_heads_and_projections():
    path = cxu.sample_files()[0]
    full = cxu.read_table(path)
    lazy = cxu.scan_table(path)
    assert lazy.collect_schema() == cxu.CANONICAL_SCHEMA
    wanted = pl.col("dice_rca_mean") > 0.8
    assert lazy.filter(wanted).head(3).collect().equals(full.filter(wanted).head(3))
    assert lazy.select("image_id", "node_sigma_mean").tail(2).collect().equals(full.select("image_id", "node_sigma_mean").tail(2))
    assert lazy.head(0).collect().schema == cxu.CANONICAL_SCHEMA
