"""Discovery, streaming, lazy scans and faults of chexmask_u_tools.hub, on a local Hub-shaped mirror and a fake Hub."""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import polars as pl
import pytest
from conftest import SHA, expected_table, fake_hub
from fsspec.implementations.local import LocalFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

from chexmask_u_tools.errors import (
    FileReadError,
    HubError,
    InputError,
    RecordError,
    SchemaError,
)
from chexmask_u_tools.hub.discovery import classify, discover
from chexmask_u_tools.hub.location import (
    DEFAULT_REPO,
    HubRepo,
    LocalMirror,
    RetryPolicy,
    open_location,
)
from chexmask_u_tools.hub.read import load, scan
from chexmask_u_tools.hub.stream import RetryingReader
from chexmask_u_tools.schema import CANONICAL_SCHEMA
from chexmask_u_tools.testing.mirror import MIRROR_LAYOUT as LAYOUT
from chexmask_u_tools.testing.mirror import build_mirror


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


def test_classify_paths():
    assert classify("Preprocessed/chestx-ray8.csv.gz") == ("ChestX-ray8", "preprocessed")
    assert classify("OriginalResolution/MIMIC-CXR-JPG/part-0001.csv") == ("MIMIC-CXR-JPG", "original")
    assert classify("physician/annotations.csv") == (None, None)


def test_discover_local_mirror(mirror):
    found = discover(mirror)
    by_path = {item.path: item for item in found.files}
    assert set(by_path) == set(LAYOUT)
    assert by_path["Preprocessed/Padchest.csv.gz"].source == "Padchest"
    assert by_path["Preprocessed/Padchest.csv.gz"].format == "csv.gz"
    assert by_path["OriginalResolution/VinDr-CXR.csv"].frame == "original"
    assert by_path["Physician/annotations.csv"].source is None
    assert found.other_files == ("README.md",)
    assert found.revision.startswith("local-")
    report = found.report()
    assert "Preprocessed/MIMIC-CXR-JPG.csv.xz" in report and "1 file(s) name no source" in report
    assert found.to_frame().height == len(LAYOUT)
    assert [item.path for item in found.select(sources="chexpert")] == [
        "Physician/annotations.csv",
        "Preprocessed/CheXpert.csv",
    ]
    assert [item.path for item in found.select(frames="original")] == ["OriginalResolution/VinDr-CXR.csv"]


def test_stream_matches_read_table_for_every_variant(mirror):
    batches = list(load(mirror, batch_size=16, use_cache=False))
    assert all(0 < batch.height <= 16 for batch in batches)
    assert all(batch.schema == CANONICAL_SCHEMA for batch in batches)
    assert pl.concat(batches).equals(expected_table(mirror))


def test_scan_matches_stream_and_filters_rows(mirror):
    expected = expected_table(mirror)
    assert scan(mirror, use_cache=False).collect().equals(expected)
    chexpert = scan(mirror, sources=["CheXpert"], use_cache=False).collect()
    # The physician file names no source in its path; its rows are filtered by their Dataset column.
    assert chexpert.height == 40 + 5 and set(chexpert["source"]) == {"CheXpert"}
    streamed = pl.concat(load(mirror, sources="CheXpert", use_cache=False))
    assert streamed.equals(chexpert)
    original = load(mirror, frames="original", streaming=False, use_cache=False)
    assert set(original["frame"]) == {"original"} and original.height == 40


def test_scan_pushes_column_selection(mirror):
    lf = scan(mirror, sources="Padchest", use_cache=False).select("image_id", "dice_rca_mean")
    out = lf.filter(pl.col("dice_rca_mean") >= 0.8).collect()
    full = expected_table(mirror).filter((pl.col("source") == "Padchest") & (pl.col("dice_rca_mean") >= 0.8))
    assert out.equals(full.select("image_id", "dice_rca_mean"))


def test_load_rows_are_dicts(mirror):
    rows = list(load(mirror, sources="VinDr-CXR", frames="preprocessed", rows=True, use_cache=False))
    assert len(rows) == 5  # only the physician file's VinDr rows are in the preprocessed frame
    assert set(rows[0]) == set(CANONICAL_SCHEMA)
    assert len(rows[0]["landmarks"]) == 120 and len(rows[0]["landmarks"][0]) == 2


def test_stream_reads_duplicate_header_pairs(tmp_path):
    # A variant with a second Mean/Std pair (pandas: Mean.1, Std.1) and a leading unnamed index column.
    source = build_mirror(tmp_path / "m") / "Preprocessed/Padchest.csv.gz"
    with gzip.open(source, "rt") as handle:
        header, *body = handle.read().splitlines(keepends=True)
    import csv

    rows = list(csv.reader(io.StringIO("".join(body))))
    names = next(csv.reader([header]))
    i, j = names.index("Mean"), names.index("Std")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["", *names, "Mean", "Std"])
    for k, row in enumerate(rows):
        writer.writerow([k, *row, row[i], row[j]])
    target = tmp_path / "pairs" / "Preprocessed" / "Padchest.csv"
    target.parent.mkdir(parents=True)
    target.write_text(out.getvalue())
    streamed = pl.concat(load(tmp_path / "pairs", use_cache=False))
    assert streamed.equals(expected_table(tmp_path / "m", ["Preprocessed/Padchest.csv.gz"]))


def test_stream_reads_zstd_csv(tmp_path, mirror):
    import pyarrow as pa

    with gzip.open(mirror / "Preprocessed/Padchest.csv.gz", "rb") as handle:
        data = handle.read()
    target = tmp_path / "Preprocessed" / "Padchest.csv.zst"
    target.parent.mkdir(parents=True)
    with pa.CompressedOutputStream(str(target), "zstd") as out:
        out.write(data)
    streamed = pl.concat(load(tmp_path, batch_size=9, use_cache=False))
    assert streamed.equals(expected_table(mirror, ["Preprocessed/Padchest.csv.gz"]))


def test_unknown_variant_is_a_schema_error_naming_the_file(tmp_path):
    (tmp_path / "Preprocessed").mkdir()
    (tmp_path / "Preprocessed" / "CheXpert.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(SchemaError, match="CheXpert.csv"):
        list(load(tmp_path, use_cache=False))
    with pytest.raises(SchemaError, match="CheXpert.csv"):
        scan(tmp_path, use_cache=False)


@pytest.mark.parametrize("path", ["Preprocessed/Padchest.csv.gz", "Preprocessed/MIMIC-CXR-JPG.csv.xz", "Preprocessed/ChestX-ray8.parquet"])
def test_truncated_file_is_a_file_read_error_naming_it(tmp_path, mirror, path):
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    data = (mirror / path).read_bytes()
    target.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FileReadError, match=Path(path).name):
        list(load(tmp_path, use_cache=False))


def test_bad_row_names_file_and_row(tmp_path, mirror):
    target = tmp_path / "Preprocessed" / "CheXpert.csv"
    target.parent.mkdir(parents=True)
    lines = (mirror / "Preprocessed/CheXpert.csv").read_text().splitlines(keepends=True)
    fields = lines[31].split(",")
    fields[3] = '"1,2,x"'  # landmarks of data row 30 become unparsable
    lines[31] = ",".join(fields[:4]) + "," + ",".join(fields[4 + 239 :])
    target.write_text("".join(lines))
    with pytest.raises(RecordError) as caught:
        list(load(tmp_path, batch_size=8, use_cache=False))
    assert caught.value.row == 30 and caught.value.file.endswith("CheXpert.csv")
    with pytest.warns(UserWarning, match="skipped 1 of 40"):
        kept = pl.concat(load(tmp_path, on_error="skip", use_cache=False))
    assert kept.height == 39


class FlakyFileSystem(LocalFileSystem):
    """A local filesystem whose opened files raise ConnectionError on ``read`` a set number of times."""

    def __init__(self, failures: int, after_bytes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        self.failures_left = failures
        self.after_bytes = after_bytes
        self.opens = 0

    def _open(self, path, mode="rb", **kwargs):
        handle = super()._open(path, mode, **kwargs)
        self.opens += 1
        filesystem = self
        original_read = handle.read

        def read(size=-1):
            if filesystem.failures_left > 0 and handle.tell() >= filesystem.after_bytes:
                filesystem.failures_left -= 1
                raise ConnectionError("connection reset by peer")
            return original_read(size)

        handle.read = read
        return handle


def test_network_error_mid_stream_is_retried_with_backoff(mirror):
    flaky = FlakyFileSystem(failures=3, after_bytes=5000, skip_instance_cache=True)
    waits: list[float] = []
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=8.0, sleep=waits.append)
    place = LocalMirror(mirror, fs=flaky)
    streamed = pl.concat(load(place, sources="CheXpert", frames="preprocessed", retry=policy, use_cache=False))
    assert streamed.equals(expected_table(mirror, ["Preprocessed/CheXpert.csv", "Physician/annotations.csv"]).filter(pl.col("source") == "CheXpert"))
    assert waits == [0.5, 1.0, 2.0]  # three failures at one offset: exponential backoff
    assert flaky.opens >= 4


def test_network_error_that_persists_names_the_file(mirror):
    flaky = FlakyFileSystem(failures=100, after_bytes=5000, skip_instance_cache=True)
    policy = RetryPolicy(attempts=3, sleep=lambda s: None)
    with pytest.raises(HubError, match=r"OriginalResolution/VinDr-CXR.csv.*after 3 attempts"):
        list(load(LocalMirror(mirror, fs=flaky), frames="original", retry=policy, use_cache=False))


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=3000),
    failures=st.lists(st.integers(0, 3000), max_size=4),
    chunk=st.integers(1, 700),
)
def test_retrying_reader_returns_the_exact_bytes(data, failures, chunk):
    """Whatever the failure offsets, reading through RetryingReader yields the file's bytes."""
    pending = sorted(failures)

    class Flaky(io.BytesIO):
        def read(self, size=-1):
            if pending and self.tell() >= pending[0]:
                pending.pop(0)
                raise TimeoutError("read timed out")
            return super().read(size)

    reader = RetryingReader(lambda: Flaky(data), "x.csv", RetryPolicy(attempts=len(failures) + 1, sleep=lambda s: None))
    out = bytearray()
    while block := reader.read(chunk):
        out += block
    assert bytes(out) == data


def test_hub_code_path_uses_dataset_repo_and_pinned_revision(tmp_path, mirror):
    repo, api = fake_hub(tmp_path, mirror, revision="main")
    found = discover(repo)
    assert found.revision == SHA
    assert api.calls[0] == ("repo_info", DEFAULT_REPO, {"revision": "main", "repo_type": "dataset"})
    assert api.calls[1] == ("list_repo_tree", DEFAULT_REPO, {"revision": SHA, "repo_type": "dataset", "recursive": True})
    checksums = {item.path: item.checksum for item in found.files}
    assert checksums["Preprocessed/CheXpert.csv"].startswith("sha256:")
    assert set(found.other_files) == {".gitattributes", "README.md"}
    assert repo.url_for("Preprocessed/CheXpert.csv") == f"hf://datasets/{DEFAULT_REPO}@{SHA}/Preprocessed/CheXpert.csv"
    # Streaming through the (fake) HfFileSystem reads the same rows as the local mirror.
    assert pl.concat(load(repo, use_cache=False)).equals(expected_table(mirror))
    assert sum(call[0] == "repo_info" for call in api.calls) == 1  # resolved once, then pinned


def test_hub_scan_reads_pinned_hf_urls(tmp_path, mirror, monkeypatch):
    """The lazy Hub path hands polars ``hf://datasets/{repo}@{sha}/{path}`` URLs (served locally here)."""
    import chexmask_u_tools.hub.read as hub_module
    from chexmask_u_tools.io.table import scan_table as real_scan_table

    prefix = f"hf://datasets/{DEFAULT_REPO}@{SHA}/"
    seen = []

    def local_scan_table(url, **kwargs):
        seen.append((url, kwargs.pop("storage_options")))
        return real_scan_table(mirror / url.removeprefix(prefix), **kwargs)

    monkeypatch.setattr(hub_module, "scan_table", local_scan_table)
    repo, _ = fake_hub(tmp_path, mirror, token="hf_test")
    assert scan(repo, use_cache=False).collect().equals(expected_table(mirror))
    assert [url for url, _ in seen] == [prefix + path for path in sorted(LAYOUT)]
    assert all(options == {"token": "hf_test"} for _, options in seen)


def test_revision_that_does_not_exist(tmp_path, mirror):
    repo, _ = fake_hub(tmp_path, mirror, revision="v9-nope")
    with pytest.raises(HubError, match="v9-nope"):
        discover(repo)


def test_offline_without_cache_is_a_clear_hub_error(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo, api = fake_hub(tmp_path, mirror)
    with pytest.raises(HubError, match="offline"):
        scan(repo, cache_dir=tmp_path / "no-cache")
    assert api.calls == []


def test_open_location_forms(tmp_path, mirror):
    assert isinstance(open_location(mirror), LocalMirror)
    repo = open_location("hf://datasets/someone/CheXmask-U@v1.0")
    assert isinstance(repo, HubRepo) and repo.repo_id == "someone/CheXmask-U" and repo.requested_revision == "v1.0"
    assert open_location(None).repo_id == DEFAULT_REPO
    assert open_location("someone/data", revision="abc").requested_revision == "abc"
    with pytest.raises(InputError):
        open_location("not a repo or dir")
    with pytest.raises(InputError):
        LocalMirror(mirror).url_for("../etc/passwd")


def test_local_revision_changes_with_content(tmp_path, mirror):
    copy = tmp_path / "copy"
    shutil.copytree(mirror, copy)
    before = LocalMirror(copy).revision
    (copy / "Preprocessed" / "CheXpert.csv").write_text((copy / "Preprocessed" / "CheXpert.csv").read_text() + "\n")
    assert LocalMirror(copy).revision != before
