"""Folders written by save_hub_folder read back by every reader of the toolkit, checked against their record of shards."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import datasets
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import FileReadError, InputError, IntegrityWarning, RecordError, SchemaError
from chexmask_u_tools.io.hub_folder import FOLDER_RECORD, read_folder_record

FIX = "save_hub_folder(table, folder, overwrite=True)"


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    """The sample with rows lacking std or latents (and so their summaries), split test/train in sorted order."""
    sample = cxu.load_sample()
    sample = cxu.add_summaries(
        sample.with_columns(
            pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("latent_sigma")).alias("latent_sigma"),
            pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise(pl.col("landmarks_std")).alias("landmarks_std"),
        )
    )
    # save_hub_folder writes the splits in sorted order: "test" rows first, then "train".
    return sample.with_columns(
        pl.when(pl.int_range(pl.len()) < 50).then(pl.lit("test")).otherwise(pl.lit("train")).alias("split")
    )


@pytest.fixture(scope="module")
def folder(table, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "subset"
    return cxu.save_hub_folder(table, out, max_shard_bytes=150_000, row_group_rows=10, progress=False)


def _copy(folder: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(folder, target)
    return target


def _readers(folder: Path) -> dict:
    return {
        "read_table": lambda: cxu.read_table(folder),
        "scan_table": lambda: cxu.scan_table(folder).collect(),
        "open_table": lambda: cxu.open_table(folder).collect(),
        "hub.scan": lambda: cxu.hub.scan(folder).collect(),
        "hub.load": lambda: pl.concat(cxu.hub.load(folder, batch_size=64)),
        "hub.scan_parts": lambda: pl.concat([lf.collect() for _, lf in cxu.hub.scan_parts(folder)]),
    }


# ---------------------------------------------------------------------------- round trip (issue 22 item 7)


def test_every_reader_reads_the_folder_back(table, folder):
    record = read_folder_record(folder)
    assert record.splits == {"test": 50, "train": 150} and record.split_column
    assert len([s for s in record.shards if s.split == "train"]) > 1  # several shards per split
    canonical = table.drop("split")
    for name, read in _readers(folder).items():
        got = read()
        expected = table if name in ("read_table", "scan_table") else canonical  # read_table keeps extra columns
        assert got.equals(expected), name
    assert cxu.open_table(folder, sources="Padchest").collect().equals(canonical.filter(pl.col("source") == "Padchest"))
    rows = list(cxu.hub.load(folder, rows=True))
    assert len(rows) == 200 and rows[0]["image_id"] == table["image_id"][0]
    # One shard on its own reads too (its Array2D columns as the canonical arrays).
    shard = folder / record.shards[0].path
    assert cxu.read_table(shard).equals(canonical.head(record.shards[0].rows))
    from chexmask_u_tools.hub.inputs import input_kind

    assert input_kind(folder) == "hub-folder"
    with pytest.raises(InputError, match="columns="):
        cxu.open_table(folder, columns={"a": "image_id"})


def test_folder_without_split_column_reads_back_exactly(table, tmp_path):
    canonical = table.drop("split").head(30)
    out = cxu.save_hub_folder(canonical.lazy(), tmp_path / "plain", progress=False)  # lazy input too
    assert cxu.read_table(out).equals(canonical) and cxu.open_table(out).collect().equals(canonical)
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    with pytest.warns(IntegrityWarning):
        assert cxu.from_hf_dataset(loaded).equals(canonical)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.integers(0, 199), min_size=0, max_size=25, unique=True),
    splits=st.lists(st.sampled_from(["train", "test", "validation"]), min_size=25, max_size=25),
    group=st.integers(1, 7),
    shard_bytes=st.sampled_from([1, 40_000, 10**9]),
)
def test_round_trip_of_any_subset_and_sharding(table, tmp_path_factory, rows, splits, group, shard_bytes):
    subset = table.drop("split")[rows].with_columns(split=pl.Series(splits[: len(rows)], dtype=pl.String))
    subset = subset.sort("split", maintain_order=True)  # the folder's order: split by split
    out = tmp_path_factory.mktemp("any") / "f"
    cxu.save_hub_folder(subset, out, card=False, max_shard_bytes=shard_bytes, row_group_rows=group, progress=False)
    if subset.height == 0:  # no split values: one empty "train" split
        assert cxu.open_table(out).collect().height == 0
        return
    assert cxu.read_table(out).equals(subset)
    assert pl.concat(list(cxu.hub.load(out)) or [cxu.schema.empty_table()]).equals(subset.drop("split"))


# ---------------------------------------------------------------------------- tampering (issue 22 items 6 and 9)


def _delete_a_shard(folder: Path) -> str:
    shard = read_folder_record(folder).shards[-1]
    (folder / shard.path).unlink()
    return shard.path


def _flip_a_byte(folder: Path) -> str:
    shard = read_folder_record(folder).shards[0]
    path = folder / shard.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return shard.path


def _drop_std_column(folder: Path) -> str:
    shard = read_folder_record(folder).shards[0]
    path = folder / shard.path
    pq.write_table(pq.read_table(path).drop(["landmarks_std"]), path)
    return shard.path


def _add_a_shard(folder: Path) -> str:
    first = read_folder_record(folder).shards[0]
    extra = Path(first.path).with_name("train-00099-of-00099.parquet").as_posix()
    (folder / extra).write_bytes((folder / first.path).read_bytes())
    return extra


@pytest.mark.parametrize(
    "tamper, says",
    [
        (_delete_a_shard, "is missing"),
        (_flip_a_byte, "does not match its sha256"),
        (_drop_std_column, "bytes, its record says"),
        (_add_a_shard, "does not list"),
    ],
)
def test_every_reader_refuses_a_tampered_folder(folder, tmp_path, tamper, says):
    damaged = _copy(folder, tmp_path / "damaged")
    shard = tamper(damaged)
    for name, read in _readers(damaged).items():
        with pytest.raises(FileReadError) as caught:
            read()
        message = str(caught.value)
        assert says in message and shard in message and str(damaged) in message, name
        assert FIX in message or "remove them" in message, name


def test_a_changed_shard_of_the_same_size_is_refused(folder, tmp_path):
    damaged = _copy(folder, tmp_path / "same-size")
    cxu.read_table(damaged)  # verified once: later reads of unchanged shards are not hashed again
    shard = read_folder_record(damaged).shards[1]
    path = damaged / shard.path
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new modification time
    with pytest.raises(FileReadError, match="does not match its sha256"):
        cxu.open_table(damaged)


def test_a_damaged_record_is_refused(folder, tmp_path):
    damaged = _copy(folder, tmp_path / "record")
    record = json.loads((damaged / FOLDER_RECORD).read_text())
    record["shards"][0]["rows"] += 1
    (damaged / FOLDER_RECORD).write_text(json.dumps(record))
    with pytest.raises(FileReadError, match="does not add up"):
        cxu.read_table(damaged)
    record["shards"][0]["path"] = "../elsewhere.parquet"
    (damaged / FOLDER_RECORD).write_text(json.dumps(record))
    with pytest.raises(FileReadError, match="inside the folder"):
        cxu.hub.scan(damaged)
    (damaged / FOLDER_RECORD).write_text("{not json")
    with pytest.raises(FileReadError, match=FOLDER_RECORD.replace(".", r"\.")):
        cxu.open_table(damaged)


def test_datasets_refuses_a_folder_that_lost_a_shard(folder, tmp_path):
    damaged = _copy(folder, tmp_path / "lost")
    _delete_a_shard(damaged)
    with pytest.raises(datasets.exceptions.NonMatchingSplitsSizesError):
        datasets.load_dataset(str(damaged), cache_dir=str(tmp_path / "hf-cache"))
    # Told not to check, datasets returns fewer rows: from_hf_dataset says what it could not check.
    loaded = datasets.load_dataset(
        str(damaged), split="train", cache_dir=str(tmp_path / "hf-cache2"), verification_mode="no_checks"
    )
    with pytest.warns(IntegrityWarning, match=r"rows are missing.*cxu\.open_table\(folder\)"):
        assert cxu.from_hf_dataset(loaded).height < 150


def test_from_hf_dataset_refuses_a_dropped_std_column(folder, tmp_path):
    damaged = _copy(folder, tmp_path / "dropped")
    _drop_std_column(damaged)
    loaded = datasets.load_dataset(str(damaged), split="test", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded[1]["landmarks_std"] is None  # datasets fills the missing column with nulls, without a word
    with pytest.raises(RecordError) as caught:
        cxu.from_hf_dataset(loaded)
    error = caught.value
    assert error.row == 1 and error.column == "node_sigma_mean" and error.image_id == loaded[1]["image_id"]
    assert "landmarks_std gives None" in str(error) and "cxu.to_hf_dataset(table)" in str(error)


def test_from_hf_dataset_checks_values_and_names_the_row(table):
    canonical = table.drop("split").drop_nulls("landmarks_std").head(30)
    std = canonical["landmarks_std"].to_numpy().copy()
    std[17, 3, 0] *= 40.0  # a damaged value: the stored summaries no longer agree
    edited = canonical.with_columns(pl.Series("landmarks_std", std, dtype=canonical.schema["landmarks_std"]))
    with pytest.raises(RecordError, match=r"node_sigma_mean is .* but landmarks_std gives .*cxu\.add_summaries") as caught:
        cxu.from_hf_dataset(cxu.to_hf_dataset(edited, keep_in_memory=True))
    assert caught.value.row == 17 and caught.value.image_id == canonical["image_id"][17]
    points = canonical["landmarks"].to_numpy().copy()
    points[5, 0, 1] = np.inf
    broken = canonical.with_columns(pl.Series("landmarks", points, dtype=canonical.schema["landmarks"]))
    with pytest.raises(RecordError, match="non-finite values in landmarks") as caught:
        cxu.from_hf_dataset(cxu.to_hf_dataset(broken, keep_in_memory=True))
    assert caught.value.row == 5 and caught.value.column == "landmarks"


def test_from_hf_dataset_checks_dtypes_and_shapes(table):
    canonical = table.drop("split").head(8)
    ds = cxu.to_hf_dataset(canonical, keep_in_memory=True)
    wide = ds.cast_column("landmarks", datasets.Array2D((120, 2), "float64"))
    with pytest.raises(SchemaError, match=r"'landmarks' is Array2D\(shape=\(120, 2\), dtype='float64'\).*cast_column\('landmarks'"):
        cxu.from_hf_dataset(wide)
    ints = ds.cast_column("height", datasets.Value("int64"))
    with pytest.raises(SchemaError, match=r"'height' is Value\('int64'\), expected Value\('int32'\)"):
        cxu.from_hf_dataset(ints)
    # Nested lists of the wrong length in row 3 (a user's own dataset without Array2D features).
    points = [np.asarray(p).tolist() for p in canonical["landmarks"].to_numpy()]
    points[3] = points[3][:119]
    own = ds.remove_columns(["landmarks"]).add_column("landmarks", points)
    own = own.cast_column("landmarks", datasets.List(datasets.List(datasets.Value("float32"))))
    with pytest.raises(SchemaError, match=r"'landmarks' at row 3 \(ds\[3\]\), image id .* not of shape \(120, 2\)"):
        cxu.from_hf_dataset(own)
    points[3] = np.asarray(canonical["landmarks"][3].to_numpy()).tolist()
    fixed = ds.remove_columns(["landmarks"]).add_column("landmarks", points)
    fixed = fixed.cast_column("landmarks", datasets.List(datasets.List(datasets.Value("float32"))))
    assert cxu.from_hf_dataset(fixed).equals(canonical)  # right shape and dtype: accepted


def test_no_warning_for_datasets_made_by_the_toolkit(table, tmp_path):
    canonical = table.drop("split").head(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cxu.from_hf_dataset(cxu.to_hf_dataset(canonical, cache_dir=tmp_path)).equals(canonical)
        assert cxu.from_hf_dataset(cxu.to_hf_dataset(canonical, keep_in_memory=True)).equals(canonical)


def test_a_folder_uploaded_to_the_hub_is_checked_against_its_record(folder, table, hub_emulator, tmp_path):
    canonical = table.drop("split")
    hub_emulator.add_repo("you/subset", folder, repo_type="dataset")
    assert cxu.hub.scan("you/subset").collect().sort("image_id").equals(canonical.sort("image_id"))
    assert pl.concat(cxu.hub.load("you/subset")).sort("image_id").equals(canonical.sort("image_id"))
    damaged = _copy(folder, tmp_path / "uploaded")
    shard = _flip_a_byte(damaged)
    hub_emulator.commit("you/subset", damaged)
    for read in (lambda: cxu.hub.scan("you/subset"), lambda: list(cxu.hub.load("you/subset"))):
        with pytest.raises(FileReadError, match=f"shard '{shard}' of you/subset@.* does not match its sha256"):
            read()
    (damaged / shard).write_bytes((folder / shard).read_bytes())
    gone = _delete_a_shard(damaged)
    hub_emulator.commit("you/subset", damaged)
    with pytest.raises(FileReadError, match=f"shard '{gone}' of you/subset@.* is missing; upload the whole folder again"):
        cxu.build_cache("you/subset", tmp_path / "cache", progress=False)


# ---------------------------------------------------------------------------- batches and the datasets cache (issue 20 item 6)


def test_to_hf_dataset_maps_a_file_named_by_its_content(table, tmp_path):
    canonical = table.drop("split")
    ds = cxu.to_hf_dataset(canonical, cache_dir=tmp_path)
    [file] = ds.cache_files
    assert Path(file["filename"]).parent == tmp_path and len(Path(file["filename"]).stem) == 64
    assert cxu.from_hf_dataset(ds).equals(canonical)
    again = cxu.to_hf_dataset(canonical.lazy(), cache_dir=tmp_path)  # lazy input: streamed, same bytes
    assert again.cache_files == ds.cache_files and sorted(p.name for p in tmp_path.iterdir()) == [Path(file["filename"]).name]
    # Pickled by path, as datasets' own mapped tables: workers map the file rather than receive a copy.
    assert len(pickle.dumps(ds)) < 20_000 < pa.ipc.open_stream(file["filename"]).read_all().nbytes
    assert cxu.from_hf_dataset(pickle.loads(pickle.dumps(ds))).equals(canonical)
    assert cxu.to_hf_dataset(canonical.head(0), cache_dir=tmp_path).num_rows == 0


def test_image_paths_must_match_the_rows(table, tmp_path):
    from chexmask_u_tools.io.hf import to_hf_dataset

    canonical = table.drop("split").head(4)
    with pytest.raises(InputError, match="3 entries for 4 rows"):
        to_hf_dataset(canonical, image_paths=["a", "b", "c"], cache_dir=tmp_path)
    with pytest.raises(InputError, match="3 entries, fewer than the table's rows"):
        to_hf_dataset(canonical.lazy(), image_paths=["a", "b", "c"], cache_dir=tmp_path)
    with pytest.raises(InputError, match="5 entries for 4 rows"):
        to_hf_dataset(canonical.lazy(), image_paths=["a"] * 5, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written left behind


def test_save_hub_folder_shows_one_bar_of_its_own(table, tmp_path, capfd):
    cxu.save_hub_folder(table, tmp_path / "quiet", max_shard_bytes=150_000, progress=False)
    assert capfd.readouterr().err == ""
    cxu.save_hub_folder(table, tmp_path / "loud", max_shard_bytes=150_000, progress=True)
    err = capfd.readouterr().err
    assert "hub folder" in err and "200/200" in err and "Creating parquet" not in err


def test_split_names_must_be_safe(table, tmp_path):
    bad = table.head(3).with_columns(split=pl.lit("../escape"))
    with pytest.raises(InputError, match=r"split names.*'\.\./escape'"):
        cxu.save_hub_folder(bad, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "escape").exists()
