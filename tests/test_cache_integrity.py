"""The cache under damage, concurrency, killed runs, cut files and Hub outages (issue 11 items 2, 3, 6, 13; issue 13 item 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from conftest import SHA, FakeHfApi, expected_table, fake_hub
from filelock import FileLock
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

import chexmask_u_tools as cxu
from chexmask_u_tools.cli import main
from chexmask_u_tools.errors import FileReadError, HubError
from chexmask_u_tools.hub.cache import (
    build_cache,
    find_cache,
    iter_cache_batches,
    open_cache,
    read_manifest,
    shard_files,
)
from chexmask_u_tools.hub.location import DEFAULT_REPO, HubRepo, RetryPolicy
from chexmask_u_tools.hub.manifest import Manifest
from chexmask_u_tools.hub.read import load, scan, scan_parts
from chexmask_u_tools.testing.mirror import build_mirror

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def cache(tmp_path, mirror) -> Path:
    return build_cache(mirror, tmp_path / "cache", n_shards=4, workers=1, progress=False)


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def every_default_read(mirror: Path, cache: Path) -> dict:
    """Each default read path over the cache, as a callable that reads everything."""
    root = cache.parents[2]
    return {
        "open_cache().collect()": lambda: open_cache(cache).collect(),
        "shard_files": lambda: shard_files(cache),
        "iter_cache_batches": lambda: list(iter_cache_batches(cache)),
        "hub.scan().collect()": lambda: scan(mirror, cache_dir=root).collect(),
        "hub.scan_parts": lambda: [lf.collect() for _, lf in scan_parts(mirror, cache_dir=root)],
        "hub.load()": lambda: list(load(mirror, cache_dir=root)),
        "hub.load(streaming=False)": lambda: load(mirror, cache_dir=root, streaming=False),
    }


# ------------------------------------------------------------------ corruption (issue 11 item 2)


@pytest.mark.parametrize("where", [0.05, 0.5, 0.97])
def test_a_flipped_byte_raises_from_every_default_read_path(mirror, cache, where):
    reads = every_default_read(mirror, cache)
    assert open_cache(cache).collect().equals(expected_table(mirror))  # verified and stamped once
    shard = cache / "shard-00001-of-00004.parquet"
    flip_byte(shard, where)
    for name, read in reads.items():
        with pytest.raises(FileReadError, match="shard-00001-of-00004") as caught:
            read()
        assert "force" in str(caught.value), name


def test_a_flip_that_keeps_the_modification_time_is_still_caught(mirror, cache):
    open_cache(cache).collect()
    shard = cache / "shard-00002-of-00004.parquet"
    before = shard.stat()
    flip_byte(shard)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))  # the change time still moves
    with pytest.raises(FileReadError, match="sha256"):
        open_cache(cache)


def test_damage_without_any_metadata_change_is_caught_by_the_page_checksums(mirror, cache):
    """Bit rot: the content changes, the stamp still matches; pyarrow readers check each page's CRC."""
    shard = cache / "shard-00000-of-00004.parquet"
    flip_byte(shard, 0.3)
    stamps = json.loads((cache / ".verified.json").read_text())
    stat = shard.stat()
    stamps["shards"][shard.name].update(
        mtime_ns=stat.st_mtime_ns, ctime_ns=stat.st_ctime_ns, inode=stat.st_ino, device=stat.st_dev
    )
    (cache / ".verified.json").write_text(json.dumps(stamps))
    with pytest.raises(FileReadError, match=shard.name):
        list(iter_cache_batches(cache))
    with pytest.raises(FileReadError, match="sha256"):
        open_cache(cache, verify="always")


def test_a_shard_removed_from_the_manifest_by_hand_raises(mirror, cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    del manifest["shards"]["shard-00003-of-00004.parquet"]
    (cache / "manifest.json").write_text(json.dumps(manifest))
    for name, read in every_default_read(mirror, cache).items():
        with pytest.raises(FileReadError, match="shard-00003-of-00004") as caught:
            read()
        assert "does not list" in str(caught.value), name


def test_a_manifest_whose_rows_do_not_add_up_or_an_unlisted_shard_raises(mirror, cache):
    text = (cache / "manifest.json").read_text()
    manifest = json.loads(text)
    manifest["rows"] += 1
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileReadError, match="does not add up"):
        open_cache(cache)
    (cache / "manifest.json").write_text(text)
    (cache / "shard-00004-of-00005.parquet").write_bytes(b"stray")
    with pytest.raises(FileReadError, match="does not list: shard-00004-of-00005"):
        open_cache(cache)


def test_a_missing_shard_raises_on_every_default_read_path(mirror, cache):
    (cache / "shard-00001-of-00004.parquet").unlink()
    for read in every_default_read(mirror, cache).values():
        with pytest.raises(FileReadError, match="missing"):
            read()


def test_stamps_record_each_verified_shard(cache):
    stamps = json.loads((cache / ".verified.json").read_text())["shards"]
    manifest = read_manifest(cache)
    assert sorted(stamps) == manifest.expected_shards()
    assert all(stamps[name]["sha256"] == manifest.shards[name].sha256 for name in stamps)


def test_manifest_round_trip_versions_and_validation(cache, tmp_path):
    manifest = read_manifest(cache)
    assert Manifest.from_json(manifest.to_json(), where="x") == manifest
    assert manifest.version == 2 and manifest.page_checksums
    # A version-1 manifest (no page_checksums field) is still read.
    old = manifest.to_dict()
    old["version"] = 1
    del old["page_checksums"], old["completed"]
    assert Manifest.from_json(json.dumps(old), where="v1").page_checksums is False
    with pytest.raises(FileReadError, match="version 99"):
        Manifest.from_json(json.dumps({**old, "version": 99}), where="v99")
    with pytest.raises(FileReadError, match="malformed"):
        Manifest.from_json(json.dumps({**old, "rows": "many"}), where="bad")
    with pytest.raises(FileReadError, match="not a chexmask-u-tools cache manifest"):
        Manifest.from_json("[]", where="list")


# ------------------------------------------------------------------ the build lock (issue 11 item 3)

BUILD_CHILD = textwrap.dedent(
    """
    import sys, time
    from chexmask_u_tools.hub.cache import build_cache

    def slow(kind, detail):
        if kind == "wait":
            print("WAITED", flush=True)
        if kind == "part":
            time.sleep(0.3)  # keep the build running while the other one starts

    directory = build_cache(sys.argv[1], sys.argv[2], n_shards=6, workers=1, progress=False, on_event=slow)
    print("DONE", directory, flush=True)
    """
)


def _child_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_two_builds_at_once_give_one_complete_correct_cache(tmp_path, mirror):
    root = tmp_path / "cache"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD_CHILD, str(mirror), str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=240) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
        assert "DONE" in out
    directories = {out.split("DONE", 1)[1].strip() for out, _ in outputs}
    assert len(directories) == 1
    directory = Path(directories.pop())
    assert sum("WAITED" in out for out, _ in outputs) == 1  # the second build waited for the first
    assert read_manifest(directory).complete
    assert open_cache(directory).collect().equals(expected_table(mirror))
    assert not (directory / ".parts").exists() and not [p for p in directory.iterdir() if ".tmp-" in p.name]


def test_a_second_build_waits_for_the_lock_or_says_it_gave_up(tmp_path, mirror):
    root = tmp_path / "cache"
    directory = build_cache(mirror, root, n_shards=2, progress=False)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # another builder, in another thread
        with FileLock(str(directory.parent / f".{directory.name}.lock")):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(FileReadError, match="another build of the cache .* is still running after 0.2 s"):
            build_cache(mirror, root, n_shards=2, progress=False, lock_timeout=0.2)
        events: list = []
        threading.Timer(0.5, release.set).start()
        assert build_cache(mirror, root, n_shards=2, progress=False, on_event=lambda k, d: events.append(k)) == directory
        assert "wait" in events
    finally:
        release.set()
        holder.join()


# ------------------------------------------------------------------ debris of killed runs (issue 11 item 13)


def test_debris_in_a_finished_cache_is_removed_by_the_next_run(tmp_path, mirror, cache):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    (cache / f".shard-00001-of-00004.parquet.tmp-{pid}-abcd1234").write_bytes(b"half a shard")
    (cache / f".manifest.json.tmp-{pid}").write_text("{")  # the old temporary naming
    (cache / ".parts").mkdir()
    (cache / ".parts" / "part-00000.arrow").write_bytes(b"left behind")
    before = {p.name: p.read_bytes() for p in cache.glob("shard-*.parquet")}
    assert build_cache(mirror, tmp_path / "cache", n_shards=4, workers=1, progress=False) == cache
    assert sorted(p.name for p in cache.iterdir()) == [".verified.json", "manifest.json", *sorted(before)]
    assert {p.name: p.read_bytes() for p in cache.glob("shard-*.parquet")} == before
    assert open_cache(cache).collect().equals(expected_table(mirror))


KILL_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from chexmask_u_tools.hub.cache import build_cache

    def die(kind, detail):
        if kind == sys.argv[3]:
            os.kill(os.getpid(), signal.SIGKILL)

    build_cache(sys.argv[1], sys.argv[2], n_shards=8, workers=2, progress=False, on_event=die)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["part", "shard"])
def test_a_sigkilled_build_resumes_to_a_clean_correct_cache(tmp_path, mirror, kind):
    root = tmp_path / "cache"
    child = subprocess.run(
        [sys.executable, "-c", KILL_CHILD, str(mirror), str(root), kind], capture_output=True, env=_child_env(), check=False
    )
    assert child.returncode == -signal.SIGKILL
    directory = next(root.glob("*/*/all"))
    assert not read_manifest(directory).complete
    assert build_cache(mirror, root, n_shards=8, workers=2, progress=False) == directory
    assert open_cache(directory).collect().equals(expected_table(mirror))
    leftovers = [p.name for p in directory.rglob("*") if ".tmp-" in p.name or p.name == ".parts"]
    assert leftovers == []


# ------------------------------------------------------------------ cut files (issue 11 item 6)


def test_a_file_without_a_final_line_break_is_refused_like_read_table(tmp_path, mirror):
    import shutil

    from chexmask_u_tools import read_table

    cut = tmp_path / "cut"
    shutil.copytree(mirror, cut)
    target = cut / "Preprocessed" / "CheXpert.csv"
    target.write_bytes(target.read_bytes().rstrip(b"\r\n")[:-3])  # the last record loses its final characters
    with pytest.raises(FileReadError, match="line break"):
        read_table(target)
    with pytest.raises(FileReadError, match="CheXpert.csv' does not end with a line break"):
        build_cache(cut, tmp_path / "cache", progress=False)
    assert find_cache(cut, tmp_path / "cache") is None


# ------------------------------------------------------------------ offline and outages (issue 13 item 2)


def test_cli_cache_offline_reuses_the_recorded_revision(tmp_path, mirror, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # built online first
    repo, _ = fake_hub(tmp_path, mirror)
    directory = build_cache(repo, tmp_path / "cache", progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["cache", DEFAULT_REPO, "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "offline" in out and f"reusing the complete cache of revision {SHA}" in out
    assert f"cache ready: {directory}" in out
    # Only "no cache at all" is an error.
    code = main(["cache", DEFAULT_REPO, "--cache-dir", str(tmp_path / "empty"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "no complete cache" in captured.err + captured.out


class DownHfApi(FakeHfApi):
    """A Hub answering 503 / not answering at all."""

    def __init__(self, root: Path, error: Exception) -> None:
        super().__init__(root)
        self.error = error

    def repo_info(self, *args, **kwargs):
        self.calls.append(("repo_info", args, kwargs))
        raise self.error

    def list_repo_tree(self, *args, **kwargs):
        self.calls.append(("list_repo_tree", args, kwargs))
        raise self.error


def http_error(status: int) -> HfHubHTTPError:
    return HfHubHTTPError(f"{status} Server Error", response=SimpleNamespace(status_code=status, headers={}, request=None))


@pytest.mark.parametrize(
    "error", [ConnectionError("connection refused"), TimeoutError("read timed out"), http_error(503)], ids=repr
)
def test_build_cache_reuses_the_cache_when_the_hub_is_down(tmp_path, mirror, monkeypatch, error):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo, _ = fake_hub(tmp_path, mirror)
    directory = build_cache(repo, tmp_path / "cache", progress=False)
    api = DownHfApi(mirror, error)
    down = HubRepo(DEFAULT_REPO, api=api, retry=RetryPolicy(attempts=2, sleep=lambda seconds: None))
    events: list = []
    assert build_cache(down, tmp_path / "cache", progress=False, on_event=lambda k, d: events.append((k, d))) == directory
    reuse = [detail for kind, detail in events if kind == "reuse"]
    assert len(reuse) == 1 and "could not be reached" in reuse[0] and SHA in reuse[0]
    assert api.calls  # it did try the Hub first
    with pytest.raises(HubError, match="no complete cache"):
        build_cache(down, tmp_path / "other", progress=False)


@pytest.mark.parametrize(
    "refusal",
    [RevisionNotFoundError("Invalid rev id: main", response=SimpleNamespace(headers={}, request=None)), http_error(403)],
    ids=repr,
)
def test_a_hub_refusal_is_not_hidden_by_the_cache(tmp_path, mirror, monkeypatch, refusal):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo, _ = fake_hub(tmp_path, mirror)
    build_cache(repo, tmp_path / "cache", progress=False)
    gone = HubRepo(DEFAULT_REPO, api=DownHfApi(mirror, refusal), retry=RetryPolicy(attempts=2, sleep=lambda s: None))
    events: list = []
    with pytest.raises(HubError):
        build_cache(gone, tmp_path / "cache", progress=False, on_event=lambda k, d: events.append(k))
    assert "reuse" not in events


def test_shards_cut_across_part_batches_and_parts_keep_every_row_in_order(tmp_path, mirror):
    """Shards take their rows from the parts' fixed-size batches by arithmetic: check it across both borders."""
    from chexmask_u_tools.io.released import write_released

    big = tmp_path / "big" / "Preprocessed"
    big.mkdir(parents=True)
    table = expected_table(mirror)
    for source, copies in (("CheXpert", 60), ("Padchest", 7)):
        rows = table.filter(pl.col("source") == source)
        write_released(pl.concat([rows] * copies), big / f"{source}.csv", "chexmask-u")
    directory = build_cache(big.parent, tmp_path / "cache", n_shards=7, progress=False)
    assert read_manifest(directory).files[0].rows > 2048  # more than two part batches
    assert open_cache(directory).collect().equals(expected_table(big.parent))


def test_a_cut_file_on_the_hub_is_refused_too(tmp_path, mirror, monkeypatch):
    import shutil

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cut = tmp_path / "cut"
    shutil.copytree(mirror, cut)
    target = cut / "OriginalResolution" / "VinDr-CXR.csv"
    target.write_bytes(target.read_bytes().rstrip(b"\r\n"))
    repo, _ = fake_hub(tmp_path, cut)
    with pytest.raises(FileReadError, match="VinDr-CXR.csv' does not end with a line break"):
        build_cache(repo, tmp_path / "cache", progress=False)


def test_a_version_1_cache_is_still_read_and_reused(tmp_path, mirror, cache):
    """Caches written before manifest version 2 (no page checksums) keep working."""
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["version"] = 1
    del manifest["page_checksums"]
    (cache / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(cache).version == 1
    assert open_cache(cache).collect().equals(expected_table(mirror))
    assert find_cache(mirror, tmp_path / "cache") == cache
    events: list = []
    assert build_cache(mirror, tmp_path / "cache", n_shards=4, progress=False, on_event=lambda k, d: events.append(k)) == cache
    assert "part" not in events and "shard" not in events  # reused, not rebuilt
    assert read_manifest(cache).version == 1


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.xz"])
def test_a_cut_compressed_file_is_refused_by_the_streaming_reader_before_its_last_rows(tmp_path, suffix):
    import gzip
    import lzma

    from chexmask_u_tools.io.released import to_released

    text = to_released(cxu.load_sample().head(6), "chexmask-u").write_csv()
    cut = text[: text.rstrip("\n").rfind(",") + 3]  # the last record loses the end of its last field
    mirror = tmp_path / "mirror" / "Preprocessed"
    mirror.mkdir(parents=True)
    opener = gzip.open if suffix == ".csv.gz" else lzma.open
    with opener(mirror / f"CheXpert{suffix}", "wt") as handle:
        handle.write(cut)
    got = []
    with pytest.raises(FileReadError, match="does not end with a line break"):
        for batch in load(tmp_path / "mirror", use_cache=False):
            got.append(batch)
    assert got == []  # no row of the cut file was handed out
    with pytest.raises(FileReadError, match="does not end with a line break"):
        build_cache(tmp_path / "mirror", cache_dir=tmp_path / "cache", progress=False)


def test_a_header_only_file_is_an_empty_table_for_every_reader(tmp_path):
    from chexmask_u_tools.io.released import to_released

    header = to_released(cxu.load_sample().head(1), "chexmask-u").write_csv().split("\n")[0] + "\n"
    (tmp_path / "mirror" / "Preprocessed").mkdir(parents=True)
    (tmp_path / "mirror" / "Preprocessed" / "CheXpert.csv").write_text(header)
    assert cxu.read_table(tmp_path / "mirror" / "Preprocessed" / "CheXpert.csv").height == 0
    assert sum(batch.height for batch in load(tmp_path / "mirror", use_cache=False)) == 0
