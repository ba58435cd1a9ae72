"""The sharded parquet cache: build, manifest, resume, reuse (also offline), damaged shards, datasets scale-out, CLI."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from conftest import SHA, expected_table, fake_hub

from chexmask_u_tools.cli import main
from chexmask_u_tools.errors import FileReadError, HubError
from chexmask_u_tools.hub.cache import (
    build_cache,
    find_cache,
    iterable_dataset,
    open_cache,
    read_manifest,
    shard_count,
    shard_files,
)
from chexmask_u_tools.hub.read import load, scan
from chexmask_u_tools.schema import CANONICAL_SCHEMA
from chexmask_u_tools.testing.mirror import build_mirror


class Interrupt(Exception):
    pass


def interrupt_after(kind: str, count: int, seen: list):
    def hook(event: str, name: str) -> None:
        seen.append((event, name))
        if event == kind and sum(e == kind for e, _ in seen) == count:
            raise Interrupt(f"simulated crash after {count} {kind}s")

    return hook


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, mirror) -> Path:
    return build_cache(mirror, tmp_path_factory.mktemp("cache"), progress=False)


def test_shard_count_rule():
    assert shard_count(0) == 24 and shard_count(210) == 24
    assert shard_count(24 * 25_000) == 24 and shard_count(24 * 25_000 + 1) == 48
    assert shard_count(657_566, multiple=24, target_rows=10_000) == 72
    for rows in (1, 999, 123_457):
        n = shard_count(rows, multiple=12, target_rows=100)
        assert n % 12 == 0 and rows / n <= 100


def test_cache_content_and_manifest(built, mirror):
    expected = expected_table(mirror)
    assert open_cache(built).collect().equals(expected)
    manifest = read_manifest(built)
    assert manifest.status == "complete" and manifest.rows == expected.height
    assert manifest.location["kind"] == "local" and manifest.revision.startswith("local-")
    assert manifest.n_shards == 24 and len(manifest.shards) == 24
    rows = [shard.rows for shard in manifest.shards.values()]
    assert sum(rows) == expected.height and max(rows) - min(rows) <= 1
    for record in manifest.files:
        digest = hashlib.sha256((mirror / record.path).read_bytes()).hexdigest()
        assert record.checksum == f"sha256:{digest}"
    for name, shard in manifest.shards.items():
        assert hashlib.sha256((built / name).read_bytes()).hexdigest() == shard.sha256
    assert not (built / ".parts").exists()
    # Besides the shards and the manifest, only the verification stamps.
    assert sorted(p.name for p in built.iterdir()) == [".verified.json", "manifest.json", *sorted(manifest.shards)]
    assert pl.read_parquet_schema(built / next(iter(manifest.shards))) == dict(CANONICAL_SCHEMA)


def test_filters_on_the_cache_are_pushed_into_the_parquet_scan(built):
    plan = open_cache(built).filter(pl.col("node_sigma_mean") < 8.0).select("image_id").explain()
    scan_part = plan[plan.index("Parquet SCAN") :]
    assert "SELECTION" in scan_part and "node_sigma_mean" in scan_part


def test_scan_and_load_reuse_the_cache(built, mirror):
    root = built.parents[2]
    assert find_cache(mirror, root) == built
    assert find_cache(mirror, root, sources="Padchest", frames="preprocessed") == built
    lf = scan(mirror, cache_dir=root, sources="Padchest")
    assert "Parquet SCAN" in lf.explain()
    assert lf.collect().equals(expected_table(mirror).filter(pl.col("source") == "Padchest"))
    streamed = pl.concat(load(mirror, cache_dir=root, batch_size=7))
    assert streamed.equals(expected_table(mirror))
    # Building again is a no-op that returns the same directory.
    before = (built / "manifest.json").read_bytes()
    assert build_cache(mirror, root, progress=False) == built
    assert (built / "manifest.json").read_bytes() == before


def test_each_mask_mode_is_cached_and_found_on_its_own(tmp_path):
    from chexmask_u_tools.io.released import to_released
    from chexmask_u_tools.io.sample import load_sample
    from chexmask_u_tools.io.table import read_table

    # One file with the released masks and, different from them, the masks drawn from the mean landmarks.
    root = tmp_path / "mirror"
    (root / "Preprocessed").mkdir(parents=True)
    released_file = to_released(load_sample().head(6), "chexmask-u")
    released_file.with_columns(
        RL_Mean=pl.col("Heart"), LL_Mean=pl.col("Right Lung"), H_Mean=pl.col("Left Lung")
    ).write_csv(root / "Preprocessed" / "CheXpert.csv")
    released = read_table(root / "Preprocessed" / "CheXpert.csv")
    mean = read_table(root / "Preprocessed" / "CheXpert.csv", masks="mean")
    assert not released["rle_heart"].equals(mean["rle_heart"])
    cache_dir = tmp_path / "cache"

    mean_cache = build_cache(root, cache_dir, masks="mean", n_shards=2, progress=False)
    assert scan(root, cache_dir=cache_dir).collect().equals(released)  # not the cached mean masks
    assert pl.concat(load(root, cache_dir=cache_dir)).equals(released)
    assert find_cache(root, cache_dir) is None
    assert find_cache(root, cache_dir, masks="mean") == mean_cache
    assert scan(root, cache_dir=cache_dir, masks="mean").collect().equals(mean)

    released_cache = build_cache(root, cache_dir, n_shards=2, progress=False)
    assert released_cache != mean_cache and read_manifest(mean_cache).complete  # the mean cache is kept
    assert find_cache(root, cache_dir) == released_cache and find_cache(root, cache_dir, masks="mean") == mean_cache
    assert scan(root, cache_dir=cache_dir).collect().equals(released)
    assert scan(root, cache_dir=cache_dir, masks="mean").collect().equals(mean)
    assert pl.concat(load(root, cache_dir=cache_dir, masks="mean")).equals(mean)
    assert open_cache(mean_cache).collect().equals(mean) and open_cache(released_cache).collect().equals(released)


def test_subset_cache_is_not_used_for_a_wider_request(tmp_path, mirror):
    subset = build_cache(mirror, tmp_path, sources=["Padchest"], progress=False, n_shards=4)
    assert subset.name == "Padchest__all-frames"
    assert open_cache(subset).collect().height == 40
    assert find_cache(mirror, tmp_path, sources="Padchest") == subset
    assert find_cache(mirror, tmp_path) is None


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard-*.parquet"))}


@pytest.mark.parametrize("kind,count", [("shard", 3), ("part", 2)])
def test_resume_after_interruption_redoes_nothing_finished(tmp_path, mirror, built, kind, count):
    seen: list = []
    with pytest.raises(Interrupt):
        build_cache(mirror, tmp_path, progress=False, on_event=interrupt_after(kind, count, seen))
    directory = next(tmp_path.glob("*/*/all"))
    manifest = read_manifest(directory)
    assert manifest.status == "building"
    with pytest.raises(FileReadError, match="incomplete"):
        open_cache(directory)
    # Only complete files are left: no temporary names, every recorded file has its recorded size.
    leftovers = [p.name for p in directory.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    finished_shards = set(manifest.shards)
    assert len(finished_shards) == (count if kind == "shard" else 0)
    finished_parts = [f.path for f in manifest.files if f.part is not None]
    assert len(finished_parts) == (count if kind == "part" else len(manifest.files))

    resumed: list = []
    build_cache(mirror, tmp_path, progress=False, on_event=lambda event, name: resumed.append((event, name)))
    redone_parts = [name for event, name in resumed if event == "part"]
    redone_shards = [name for event, name in resumed if event == "shard"]
    assert not set(redone_parts) & set(finished_parts)
    assert len(redone_parts) == len(manifest.files) - len(finished_parts)
    assert not set(redone_shards) & finished_shards and len(redone_shards) == 24 - len(finished_shards)
    assert _snapshot(directory) == _snapshot(built)
    assert open_cache(directory).collect().equals(expected_table(mirror))


def test_damaged_shards_are_named(tmp_path, mirror):
    directory = build_cache(mirror, tmp_path, progress=False, n_shards=6, workers=1)
    shards = sorted(directory.glob("shard-*.parquet"))
    original = shards[2].read_bytes()
    # Same size, flipped bytes in the middle: only the checksum notices, and it is checked by default.
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    shards[2].write_bytes(bytes(damaged))
    with pytest.raises(FileReadError, match=shards[2].name):
        open_cache(directory)
    with pytest.raises(FileReadError, match=shards[2].name):
        open_cache(directory, verify=True)
    shards[2].write_bytes(original[: len(original) // 2])
    with pytest.raises(FileReadError, match=shards[2].name):
        open_cache(directory)
    shards[2].unlink()
    with pytest.raises(FileReadError, match=shards[2].name):
        open_cache(directory)
    with pytest.raises(FileReadError, match="no manifest.json"):
        open_cache(tmp_path)


def test_hub_cache_is_reused_offline(tmp_path, mirror, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # built online first
    repo, _ = fake_hub(tmp_path, mirror)
    directory = build_cache(repo, tmp_path / "cache", progress=False)
    manifest = read_manifest(directory)
    assert manifest.revision == SHA and directory.parent.name == SHA
    assert manifest.location == {
        "kind": "hub",
        "repo_id": "mcosarinsky/CheXmask-U",
        "repo_type": "dataset",
        "requested_revision": "main",
    }
    assert all(f.checksum.startswith("sha256:") for f in manifest.files)
    assert (tmp_path / "cache" / "datasets--mcosarinsky--CheXmask-U" / "refs" / "main").read_text() == SHA

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline, offline_api = fake_hub(tmp_path, mirror)
    lf = scan(offline, cache_dir=tmp_path / "cache")
    assert lf.collect().equals(expected_table(mirror))
    assert pl.concat(load(offline, cache_dir=tmp_path / "cache", sources="CheXpert")).height == 45
    assert build_cache(offline, tmp_path / "cache", progress=False) == directory
    assert offline_api.calls == []  # nothing asked the Hub
    with pytest.raises(HubError, match="offline"):
        scan(fake_hub(tmp_path, mirror, revision="v2")[0], cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_split_dataset_by_node_covers_every_row_once(built, world_size):
    ids = []
    for rank in range(world_size):
        dataset = iterable_dataset(built, rank=rank, world_size=world_size, columns=["source", "image_id"])
        ids.append([(row["source"], row["image_id"]) for row in dataset])
    everything = Counter(item for part in ids for item in part)
    # The mirror repeats some ids across files (physician copies), so compare multisets: no drops, no duplicates.
    assert everything == Counter(open_cache(built).select("source", "image_id").collect().rows())
    if 24 % world_size == 0:  # whole shards per rank: equal shares (+-1 row per shard)
        sizes = [len(part) for part in ids]
        assert max(sizes) - min(sizes) <= 24 // world_size


def test_datasets_rows_keep_the_canonical_arrays(built):
    rows = list(iterable_dataset(built))
    assert rows[0]["latent_sigma"] is None  # the parent-CheXmask variant file has no latents
    row = next(r for r in rows if r["latent_sigma"] is not None)
    assert len(row["landmarks_std"]) == 120
    assert len(row["landmarks"]) == 120 and len(row["landmarks"][0]) == 2 and len(row["latent_sigma"]) == 64


def test_cli_cache_and_filter(tmp_path, mirror, capsys):
    assert main(["cache", str(mirror), "--cache-dir", str(tmp_path / "c"), "--shards", "8", "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "cache ready" in out and "8 shards" in out and "Preprocessed/CheXpert.csv" in out
    directory = next((tmp_path / "c").glob("*/*/all"))
    target = tmp_path / "subset.parquet"
    code = main(
        [
            "filter",
            str(directory),
            "--out",
            str(target),
            "--max-node-sigma",
            "10",
            "--min-dice-rca-mean",
            "0.7",
            "--sources",
            "chexpert",
            "padchest",
            "--missing",
            "drop",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    table = expected_table(mirror)
    keep = (
        table["source"].is_in(["CheXpert", "Padchest"])
        & (table["dice_rca_mean"] >= 0.7).fill_null(False)
        & (table["node_sigma_mean"] <= 10).fill_null(False)
    )
    assert pl.read_parquet(target).equals(table.filter(keep))
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line and not line.startswith("kept")}
    assert lines["(input)"] == [str(table.height)]
    assert int(lines["sources"][0]) == int((~table["source"].is_in(["CheXpert", "Padchest"])).sum())
    assert f"kept {int(keep.sum())} of {table.height}" in out
    # From the location (the cache is found) gives the same subset.
    again = tmp_path / "again.parquet"
    code = main(["filter", str(mirror), "--cache-dir", str(tmp_path / "c"), "--out", str(again), "--max-node-sigma", "10",
                 "--min-dice-rca-mean", "0.7", "--sources", "chexpert", "padchest", "--missing", "drop", "--no-progress"])
    assert code == 0 and pl.read_parquet(again).equals(table.filter(keep))
    assert main(["filter", str(directory), "--out", str(tmp_path / "x.csv")]) == 1
    assert main(["filter", str(directory), "--out", str(tmp_path / "y.parquet"), "--max-organ-sigma", "lung=3"]) == 1
    assert not (tmp_path / "y.parquet").exists()


def test_manifest_is_json_with_schema(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert list(manifest["schema"]) == list(CANONICAL_SCHEMA)
    assert shard_files(built) == [str(built / name) for name in sorted(manifest["shards"])]
