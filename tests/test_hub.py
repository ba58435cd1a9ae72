"""Discovery, streaming, lazy scans and faults of chexmask_u_tools.hub, on a local Hub-shaped mirror and a fake Hub."""

from __future__ import annotations

import gzip
import io
import re
import shutil
import time
from pathlib import Path
from urllib.parse import quote

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
    PARQUET_CONVERSION_REVISION,
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


def test_open_location_accepts_the_parquet_conversion_revision():
    repo = open_location("hf://datasets/someone/CheXmask-U@refs/convert/parquet")
    assert repo.repo_id == "someone/CheXmask-U" and repo.requested_revision == PARQUET_CONVERSION_REVISION
    assert open_location("someone/data@refs/pr/3").requested_revision == "refs/pr/3"


# --------------------------------------------------------------------------- the real client through the Hub emulator
# Every test below runs huggingface_hub's own HTTP client against
# chexmask_u_tools.testing.hub_server.HubEmulator (fixtures in conftest.py).

FAST = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, budget=30.0, timeout=2.0)


def _file_requests(hub, path: str) -> list:
    """Requests that served bytes of one repo file (resolve answers and their CDN redirects)."""
    encoded = quote(path, safe="")
    return [r for r in hub.requests if ("/resolve/" in r.path and r.path.endswith(path)) or f"name={encoded}" in r.path]


def _only_the_endpoint_was_contacted(hub) -> None:
    """No request left for another host: any would arrive here as a CONNECT through the proxy the fixture sets."""
    assert hub.requests
    assert not [r for r in hub.requests if r.method == "CONNECT"]
    assert {r.host for r in hub.requests} <= hub.hosts


def test_emulator_hub_reads_equal_local_files_and_stay_on_the_endpoint(hub_dataset):
    hub, mirror = hub_dataset
    expected = expected_table(mirror)
    sha = hub.sha(DEFAULT_REPO)
    repo = HubRepo(DEFAULT_REPO, "main")
    found = discover(repo)
    assert found.revision == sha
    assert {item.path for item in found.files} == set(LAYOUT)
    assert set(found.other_files) == {".gitattributes", "README.md"}
    checksums = {item.path: item.checksum for item in found.files}
    assert checksums["Preprocessed/CheXpert.csv"].startswith("sha256:")
    assert repo.url_for("Preprocessed/CheXpert.csv") == f"{hub.url}/datasets/{DEFAULT_REPO}/resolve/{sha}/Preprocessed/CheXpert.csv"
    # The lazy, eager and streaming paths read the same rows as the local files.
    assert scan(repo, use_cache=False).collect().equals(expected)
    assert load(repo, streaming=False, use_cache=False).equals(expected)
    assert pl.concat(load(repo, batch_size=7, use_cache=False)).equals(expected)
    assert pl.concat(load(DEFAULT_REPO, use_cache=False)).equals(expected)  # by repo id, default client
    _only_the_endpoint_was_contacted(hub)
    revision_calls = [r for r in hub.requests if "/revision/" in r.path]
    assert len(revision_calls) == 2  # one per HubRepo: resolved once, then pinned
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    assert resolves and all(f"/resolve/{sha}/" in r.path for r in resolves)
    assert len([r for r in hub.requests if "/tree/" in r.path]) > 2  # paginated listing followed to the end


def test_emulator_lazy_scan_pushes_filters_and_head(hub_dataset):
    hub, mirror = hub_dataset
    lf = scan(DEFAULT_REPO, sources="Padchest", use_cache=False).select("image_id", "dice_rca_mean")
    out = lf.filter(pl.col("dice_rca_mean") >= 0.8).collect()
    full = expected_table(mirror).filter((pl.col("source") == "Padchest") & (pl.col("dice_rca_mean") >= 0.8))
    assert out.equals(full.select("image_id", "dice_rca_mean"))
    assert scan(DEFAULT_REPO, sources="CheXpert", frames="preprocessed", use_cache=False).head(3).collect().height == 3
    assert not [r for r in hub.requests if "VinDr" in r.path and "/tree/" not in r.path]  # unselected files: never read


def test_emulator_scan_reads_xz_and_zst_like_load(hub_emulator, tmp_path, mirror):
    """Defects 6 and 7: ``.csv.xz`` and ``.csv.zst`` over the Hub in ``scan`` (polars cannot scan either)."""
    import pyarrow as pa

    root = tmp_path / "compressed"
    (root / "Preprocessed").mkdir(parents=True)
    shutil.copy(mirror / "Preprocessed/MIMIC-CXR-JPG.csv.xz", root / "Preprocessed/MIMIC-CXR-JPG.csv.xz")
    with gzip.open(mirror / "Preprocessed/Padchest.csv.gz", "rb") as handle:
        data = handle.read()
    with pa.CompressedOutputStream(str(root / "Preprocessed/Padchest.csv.zst"), "zstd") as out:
        out.write(data)
    hub_emulator.add_repo("someone/compressed", root)
    expected = expected_table(mirror, ["Preprocessed/MIMIC-CXR-JPG.csv.xz", "Preprocessed/Padchest.csv.gz"])
    assert scan("someone/compressed", use_cache=False).collect().equals(expected)
    assert pl.concat(load("someone/compressed", use_cache=False)).equals(expected)
    assert scan(root, use_cache=False).collect().equals(expected)  # a local .csv.zst too
    _only_the_endpoint_was_contacted(hub_emulator)


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "cut", "after_bytes": 3000, "times": 2},
        {"kind": "status", "status": 503, "times": 3},
        {"kind": "status", "status": 429, "times": 1},
        {"kind": "stall", "after_bytes": 2000, "seconds": 5.0, "times": 1},
        {"kind": "slow", "after_bytes": 16384, "seconds": 0.01, "times": 1},
    ],
    ids=["cut", "503-burst", "429", "stall", "slow"],
)
def test_emulator_faults_mid_file_recover_with_identical_rows(hub_dataset, fault):
    hub, mirror = hub_dataset
    path = "Preprocessed/CheXpert.csv"
    injected = hub.inject(match=path, **fault)
    policy = RetryPolicy(attempts=5, base_delay=0.01, budget=30.0, timeout=0.5)  # a stall counts after 0.5 s
    expected = expected_table(mirror, [path, "Physician/annotations.csv"]).filter(pl.col("source") == "CheXpert")
    streamed = pl.concat(load(DEFAULT_REPO, sources="CheXpert", frames="preprocessed", retry=policy, use_cache=False))
    assert streamed.equals(expected)
    assert injected.used == fault["times"]
    if fault["kind"] in ("cut", "stall"):
        # Reopened where the body stopped, not from the start.
        ranges = [r.range for r in _file_requests(hub, path) if r.host == f"localhost:{hub.port}"]
        assert any(r != "bytes=0-" for r in ranges), ranges
    hub.inject(match=path, **fault)
    lazy = scan(DEFAULT_REPO, sources="CheXpert", frames="preprocessed", retry=policy, use_cache=False).collect()
    assert lazy.equals(streamed)


def test_emulator_listing_and_revision_faults_recover(hub_dataset):
    hub, _ = hub_dataset
    hub.inject("status", route="revision", status=502, times=2)
    hub.inject("status", route="tree", status=503, times=2)
    found = discover(HubRepo(DEFAULT_REPO, retry=FAST))
    assert {item.path for item in found.files} == set(LAYOUT)


def test_emulator_moved_revision_is_detected(hub_dataset, tmp_path):
    hub, mirror = hub_dataset
    pinned = HubRepo(DEFAULT_REPO, "main", retry=FAST)
    old_sha = pinned.revision
    before = pl.concat(load(pinned, sources="VinDr-CXR", frames="original", use_cache=False))
    moved = tmp_path / "moved"
    shutil.copytree(mirror, moved)
    (moved / "OriginalResolution" / "VinDr-CXR.csv").unlink()
    new_sha = hub.commit(DEFAULT_REPO, moved)
    # A new location sees the move; the pinned one keeps reading its commit.
    assert HubRepo(DEFAULT_REPO, "main").revision == new_sha != old_sha
    assert "OriginalResolution/VinDr-CXR.csv" not in {e.path for e in discover(DEFAULT_REPO).files}
    assert pl.concat(load(pinned, sources="VinDr-CXR", frames="original", use_cache=False)).equals(before)
    # A force push deletes the pinned commit: the next read fails at once, saying what to do.
    hub.commit(DEFAULT_REPO, moved, keep_history=False)
    hub.requests.clear()
    with pytest.raises(HubError, match=r"revision not found.*revision=") as caught:
        list(load(pinned, frames="original", use_cache=False))
    assert "OriginalResolution/VinDr-CXR.csv" in str(caught.value)
    assert len(hub.requests) == 1  # final on the first answer: not retried


@pytest.mark.slow
def test_emulator_dead_file_fails_within_the_default_budget(hub_dataset):
    hub, _ = hub_dataset
    path = "Preprocessed/Padchest.csv.gz"
    hub.inject("status", match=path, status=503, times=None)
    start = time.monotonic()
    with pytest.raises(HubError) as caught:
        list(load(DEFAULT_REPO, sources="Padchest", frames="preprocessed", use_cache=False))
    elapsed = time.monotonic() - start
    message = str(caught.value)
    assert path in message and "at byte 0" in message and "last HTTP status 503" in message
    assert "gave up after 5 attempts" in message
    assert len(_file_requests(hub, path)) == 5  # RetryPolicy's attempts, no inner retries of the client
    # Generous bound (issue 13: a dead file fails within 45 s with the defaults); the
    # default backoff sleeps 0.5+1+2+4 s between the five answers.
    assert elapsed < 45


def test_emulator_stalled_file_fails_within_the_budget_naming_the_offset(hub_dataset):
    hub, _ = hub_dataset
    path = "Preprocessed/Padchest.csv.gz"
    hub.inject("stall", match=path, after_bytes=1500, seconds=30.0, times=None)
    policy = RetryPolicy(attempts=10, base_delay=0.05, budget=3.0, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(HubError) as caught:
        list(load(DEFAULT_REPO, sources="Padchest", frames="preprocessed", retry=policy, use_cache=False))
    elapsed = time.monotonic() - start
    message = str(caught.value)
    assert path in message and "last HTTP status 206" in message and "ReadTimeout" in message
    assert re.search(r"at byte \d+", message)
    # Generous bound on the wall time (the budget is 3 s): ten attempts of 0.5 s each would not fit.
    assert elapsed < 10
    assert len(_file_requests(hub, path)) < 2 * 10


@pytest.mark.parametrize("route", ["api", "files"])
def test_emulator_403_fails_at_once_saying_token(hub_dataset, route):
    hub, _ = hub_dataset
    hub.inject("status", route=route, status=403, times=None)
    start = time.monotonic()
    with pytest.raises(HubError, match=r"403.*token") as caught:
        list(load(DEFAULT_REPO, sources="Padchest", use_cache=False))
    # Generous bound: a permanent error is not retried (the default policy would wait 7.5 s).
    assert time.monotonic() - start < 5
    assert caught.value.__cause__ is not None
    refused = [r for r in hub.requests if r.status == 403]
    assert len(refused) == 1


def test_emulator_not_found_errors_say_what_to_do(hub_dataset):
    hub, _ = hub_dataset
    with pytest.raises(HubError, match=r"repository not found.*token"):
        discover("someone/does-not-exist")
    with pytest.raises(HubError, match=r"v9-nope.*revision not found.*revision="):
        discover(DEFAULT_REPO, revision="v9-nope")
    repo = HubRepo(DEFAULT_REPO)
    repo.list_files()
    with pytest.raises(HubError, match=r"Preprocessed/nope.csv.*file not found.*file name"):
        RetryingReader(lambda: repo.open("Preprocessed/nope.csv"), "Preprocessed/nope.csv", FAST).read(10)
    assert all(r.status in (200, 302, 206, 404) for r in hub.requests)
    assert len([r for r in hub.requests if r.status == 404]) == 3  # each answered once


def test_emulator_token_goes_to_the_endpoint_only(hub_dataset):
    hub, mirror = hub_dataset
    rows = pl.concat(load(HubRepo(DEFAULT_REPO, token="hf_emulator_token"), sources="ChestX-ray8", use_cache=False))
    assert rows.equals(expected_table(mirror, ["Preprocessed/ChestX-ray8.parquet"]))
    endpoint = [r for r in hub.requests if r.host == f"127.0.0.1:{hub.port}"]
    redirected = [r for r in hub.requests if r.host == f"localhost:{hub.port}"]
    assert endpoint and all(r.authorization for r in endpoint)
    assert redirected and not any(r.authorization for r in redirected)  # not forwarded to the storage host


def test_emulator_offline_mode_makes_no_request(hub_dataset, monkeypatch, tmp_path):
    hub, _ = hub_dataset
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="offline"):
        scan(DEFAULT_REPO, cache_dir=tmp_path / "no-cache")
    assert hub.requests == []


def test_emulator_client_offline_flag_is_final(hub_dataset, monkeypatch):
    """huggingface_hub's own offline flag (read at import) refuses the request: one clear error, no retry."""
    from huggingface_hub import constants

    hub, _ = hub_dataset
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        discover(HubRepo(DEFAULT_REPO, retry=RetryPolicy(sleep=pytest.fail)))
    assert hub.requests == []


def test_unreachable_endpoint_fails_fast_naming_the_ways_forward(monkeypatch, tmp_path):
    """A refused connection is tried twice, then one error names HF_ENDPOINT, a local mirror and offline mode."""
    import socket

    from huggingface_hub import close_session, constants

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    close_session()
    start = time.monotonic()
    with pytest.raises(HubError, match=r"cannot connect to .*HF_ENDPOINT.*local mirror.*HF_HUB_OFFLINE=1"):
        discover(HubRepo(DEFAULT_REPO))
    assert time.monotonic() - start < 5  # generous bound: two attempts, one 0.5 s wait
    close_session()


def test_injected_api_is_still_used(tmp_path, mirror, monkeypatch):
    """``HubRepo(api=...)`` replaces the HTTP calls (for custom clients): the emulator cannot test the injection."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo, api = fake_hub(tmp_path, mirror, revision="main")
    assert discover(repo).revision == SHA
    assert [call[0] for call in api.calls] == ["repo_info", "list_repo_tree"]
    assert api.calls[1][2] == {"revision": SHA, "repo_type": "dataset", "recursive": True}
    assert pl.concat(load(repo, use_cache=False)).equals(expected_table(mirror))


# --------------------------------------------------------------------------- the Hub's parquet conversion layout


def _converted_layout(root: Path) -> Path:
    """A directory laid out like ``refs/convert/parquet``: ``<config>/<split>/NNNN.parquet``."""
    from chexmask_u_tools.io.released import write_released
    from chexmask_u_tools.io.sample import load_sample

    sample = load_sample()
    pieces = {
        "CheXpert/train/0000.parquet": ("CheXpert", 0, 20, "chexmask-u"),
        "CheXpert/train/0001.parquet": ("CheXpert", 20, 40, "chexmask-u"),
        "Padchest/test/0000.parquet": ("Padchest", 0, 15, "short"),
        "default/train/0000.parquet": (None, 0, 5, "physician"),
    }
    for path, (source, start, stop, variant) in pieces.items():
        rows = sample.filter(pl.col("source") == source) if source else sample.filter(pl.col("source").is_in(["CheXpert", "VinDr-CXR"]))
        rows = rows.slice(start, stop - start) if source else rows.group_by("source", maintain_order=True).head(stop)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        write_released(rows, root / path, variant)
    (root / "README.md").write_text("converted\n")
    return root


def test_discover_understands_the_parquet_conversion_layout(tmp_path):
    root = _converted_layout(tmp_path / "converted")
    found = discover(root)
    assert found.layout == "parquet-conversion"
    by_path = {item.path: (item.source, item.split, item.format) for item in found.files}
    assert by_path == {
        "CheXpert/train/0000.parquet": ("CheXpert", "train", "parquet"),
        "CheXpert/train/0001.parquet": ("CheXpert", "train", "parquet"),
        "Padchest/test/0000.parquet": ("Padchest", "test", "parquet"),
        "default/train/0000.parquet": (None, "train", "parquet"),  # rows name their source (Dataset column)
    }
    assert "split=test" in found.report() and found.to_frame()["split"].to_list().count("train") == 3
    assert [item.path for item in found.select(sources="Padchest")] == ["Padchest/test/0000.parquet", "default/train/0000.parquet"]
    expected = expected_table(root)
    assert expected.height == 40 + 15 + 10
    assert scan(root, use_cache=False).collect().equals(expected)
    assert pl.concat(load(root, use_cache=False)).equals(expected)
    # The released layout stays the released layout.
    assert discover(build_mirror(tmp_path / "released", rows_per_source=2)).layout == "released"


def test_emulator_parquet_conversion_revision(hub_emulator, tmp_path, mirror):
    """``revision="refs/convert/parquet"`` of a Hub repo whose main branch holds the released CSVs."""
    converted = _converted_layout(tmp_path / "converted")
    hub_emulator.add_repo("someone/chexmask", mirror)
    sha = hub_emulator.commit("someone/chexmask", converted, branch=PARQUET_CONVERSION_REVISION)
    found = discover("someone/chexmask", revision=PARQUET_CONVERSION_REVISION)
    assert found.revision == sha and found.layout == "parquet-conversion"
    assert {item.source for item in found.files} == {"CheXpert", "Padchest", None}
    assert scan("hf://datasets/someone/chexmask@refs/convert/parquet", use_cache=False).collect().equals(expected_table(converted))
    assert discover("someone/chexmask").layout == "released"
    assert any("/revision/refs%2Fconvert%2Fparquet" in r.path for r in hub_emulator.requests)


def test_discovery_without_data_files_lists_what_it_found(tmp_path):
    root = tmp_path / "odd"
    (root / "data").mkdir(parents=True)
    for k in range(25):
        (root / "data" / f"shard-{k:02d}.jsonl").write_text("{}\n" * (k + 1))
    (root / "README.md").write_text("# no csv here\n")
    with pytest.raises(InputError) as caught:
        discover(root)
    message = str(caught.value)
    assert "it holds 26 file(s)" in message
    assert "data/shard-00.jsonl  (3 B)" in message and "... and 6 more" in message
    assert len(re.findall(r"\.jsonl  \(", message)) == 19 and "README.md  (" in message  # 20 paths listed
    for hint in ("revision='refs/convert/parquet'", "columns=", "source=", "frame="):
        assert hint in message


def test_emulator_repo_without_data_files_names_the_conversion_revision(hub_emulator):
    hub_emulator.add_repo("someone/images-only", {"img/a.png": b"\x89PNG", "README.md": b"#"})
    with pytest.raises(InputError, match=r"someone/images-only@refs/convert/parquet") as caught:
        discover("someone/images-only")
    assert "img/a.png  (4 B)" in str(caught.value)


def test_emulator_cli_filter_on_a_repo_id_reads_through_the_endpoint(hub_dataset, tmp_path, capsys):
    """``chexmask-u filter`` on a repo id without a cache (defect 1: it went to huggingface.co)."""
    from chexmask_u_tools.cli import main

    hub, mirror = hub_dataset
    out = tmp_path / "kept.parquet"
    code = main(["filter", DEFAULT_REPO, "--out", str(out), "--min-dice-rca-mean", "0.8", "--no-progress"])
    assert code == 0
    expected = expected_table(mirror).filter(pl.col("dice_rca_mean") >= 0.8)
    assert pl.read_parquet(out).equals(expected)
    assert f"kept {expected.height} of" in capsys.readouterr().out
    _only_the_endpoint_was_contacted(hub)


def test_emulator_attempts_count_requests_not_client_retries(hub_dataset):
    """Issue 13: ``RetryPolicy(attempts=2)`` took 47 s because the client retried inside each attempt."""
    hub, _ = hub_dataset
    hub.inject("status", route="tree", status=503, times=None)
    with pytest.raises(HubError, match=r"listing .*gave up after 2 attempts.*last HTTP status 503"):
        discover(HubRepo(DEFAULT_REPO, retry=RetryPolicy(attempts=2, base_delay=0.1)))
    assert len([r for r in hub.requests if "/tree/" in r.path]) == 2


def test_emulator_server_ignoring_ranges_still_resumes_at_the_offset(hub_dataset):
    """A server (or proxy) that answers a ranged GET with the whole file: the reader skips to its position."""
    hub, mirror = hub_dataset
    hub.honour_ranges = False
    path = "Preprocessed/Padchest.csv.gz"
    hub.inject("cut", match=path, after_bytes=5000, times=1)
    rows = pl.concat(load(DEFAULT_REPO, sources="Padchest", frames="preprocessed", retry=FAST, use_cache=False))
    assert rows.equals(expected_table(mirror, [path, "Physician/annotations.csv"]).filter(pl.col("source") == "Padchest"))
    assert [r.status for r in _file_requests(hub, path) if r.host == f"localhost:{hub.port}"] == [200, 200]
