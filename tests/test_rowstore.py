"""The datasets' mapped row store: rows equal the table's, workers share it, a changed or damaged store is refused."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu  # noqa: E402
from chexmask_u_tools.errors import FileReadError, InputError  # noqa: E402
from chexmask_u_tools.testing.mirror import build_mirror  # noqa: E402
from chexmask_u_tools.train import rowstore  # noqa: E402
from chexmask_u_tools.train.datasets import CheXmaskUDataset, CheXmaskUIterableDataset  # noqa: E402

MASKS_ONLY = {"missing": "masks_only", "size": 32}


@pytest.fixture(scope="module", autouse=True)
def user_cache(tmp_path_factory) -> Path:
    """The stores of file and ``datasets`` inputs, and temporary stores, go here, not into the user's real cache."""
    folder = tmp_path_factory.mktemp("chexmask-u-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHEXMASK_U_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    sample = cxu.load_sample()
    # An id with spaces and non-ASCII text, a row without std and one without a stated size.
    return cxu.add_summaries(sample.with_columns(
        image_id=pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(" ünïcode id.png ")).otherwise("image_id"),
        landmarks_std=pl.when(pl.int_range(pl.len()) == 11).then(None).otherwise("landmarks_std"),
        height=pl.when(pl.int_range(pl.len()) == 13).then(None).otherwise("height"),
    ))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cache")
    return cxu.build_cache(build_mirror(work / "mirror"), work / "cache", n_shards=3, progress=False)


def test_mapped_rows_equal_the_tables_rows(table):
    rules = ["image.mean<=9;missing=keep"]
    dataset = CheXmaskUDataset(table, None, rules=rules, soft_missing="hard", fields=("dice_rca_mean",), **MASKS_ONLY)
    kept = cxu.apply_rules(table, rules)
    assert len(dataset) == kept.height
    store = dataset.rows
    assert isinstance(store.landmarks, np.memmap) and store.landmarks.dtype == np.float32
    np.testing.assert_array_equal(store.landmarks, kept["landmarks"].to_numpy())
    for i, row in enumerate(kept.iter_rows(named=True)):
        record = store.record(i, i)
        assert (record.source, record.image_id, record.frame) == (row["source"], row["image_id"], row["frame"])
        assert (record.height, record.width) == (row["height"], row["width"])
        if row["landmarks_std"] is None:
            assert record.std is None
        else:
            np.testing.assert_array_equal(record.std, np.asarray(row["landmarks_std"], dtype=np.float32))
        assert record.fields == {"dice_rca_mean": row["dice_rca_mean"]}
    assert dataset.table.select("source", "image_id").equals(kept.select("source", "image_id"))


def test_a_pickled_dataset_is_its_stores_path_not_its_rows(table):
    dataset = CheXmaskUDataset(table, None, **MASKS_ONLY)
    store_bytes = sum(path.stat().st_size for path in dataset.rows.directory.iterdir())
    pickled = pickle.dumps(dataset)
    assert len(pickled) < store_bytes / 10
    copy = pickle.loads(pickled)
    torch.testing.assert_close(copy[5]["landmarks"], dataset[5]["landmarks"])
    directory = dataset.rows.directory
    del dataset, copy
    import gc

    gc.collect()
    assert not directory.exists()  # a temporary store goes with its dataset


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_see_the_samples_of_the_main_process(table, context):
    dataset = CheXmaskUDataset(table.head(24), None, **MASKS_ONLY)
    loader = torch.utils.data.DataLoader(dataset, batch_size=6, num_workers=2, multiprocessing_context=context)
    batches = list(loader)
    rows = torch.cat([batch["row"] for batch in batches]).tolist()
    assert rows == list(range(24))
    landmarks = torch.cat([batch["landmarks"] for batch in batches])
    masks = torch.cat([batch["masks"] for batch in batches])
    torch.testing.assert_close(landmarks, torch.stack([dataset[i]["landmarks"] for i in range(24)]))
    assert torch.equal(masks, torch.stack([dataset[i]["masks"] for i in range(24)]))


def test_a_cache_folder_keeps_its_store_beside_it_and_reuses_it(cache):
    first = CheXmaskUDataset(cache, None, rules=["image.mean<=9;missing=drop"], **MASKS_ONLY)
    assert first.rows.directory.parent == cache / "rowstore"
    assert len(first) == cxu.apply_rules(cxu.open_cache(cache), ["image.mean<=9;missing=drop"]).collect().height
    again = CheXmaskUDataset(cache, None, rules=["image.mean<=9;missing=drop"], **MASKS_ONLY)
    assert again.rows.directory == first.rows.directory
    other = CheXmaskUDataset(cache, None, rules=["image.mean<=8;missing=drop"], **MASKS_ONLY)
    assert other.rows.directory != first.rows.directory


def test_a_changed_cache_is_refused_where_the_store_is_mapped(tmp_path):
    work = tmp_path
    mirror = build_mirror(work / "mirror", rows_per_source=10)
    cache = cxu.build_cache(mirror, work / "cache", n_shards=2, progress=False)
    dataset = CheXmaskUDataset(cache, None, **MASKS_ONLY)
    pickled = pickle.dumps(dataset)
    rebuilt = cxu.build_cache(mirror, work / "cache", n_shards=3, progress=False, force=True)  # rebuilt in place
    assert rebuilt == cache
    with pytest.raises(FileReadError, match="has changed since") as caught:
        pickle.loads(pickled)  # what a spawned worker does
    assert str(cache) in str(caught.value) and "build the dataset again" in str(caught.value)
    assert len(CheXmaskUDataset(cache, None, **MASKS_ONLY)) == len(dataset)  # a new dataset gets a new store


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_a_damaged_store_is_named_removed_and_rebuilt_on_the_next_run(cache, damage):
    dataset = CheXmaskUDataset(cache, None, rules=["image.mean<=12;missing=drop"], **MASKS_ONLY)
    directory = dataset.rows.directory
    if damage == "truncate":
        with open(directory / "landmarks.npy", "r+b") as handle:
            handle.truncate(1000)
    else:
        (directory / "meta.json").write_text('{"something": "else"}')
    del dataset
    with pytest.raises(FileReadError, match="row store") as caught:
        CheXmaskUDataset(cache, None, rules=["image.mean<=12;missing=drop"], **MASKS_ONLY)
    assert str(directory) in str(caught.value) and "construct the dataset again" in str(caught.value)
    rebuilt = CheXmaskUDataset(cache, None, rules=["image.mean<=12;missing=drop"], **MASKS_ONLY)
    assert rebuilt.rows.directory == directory and len(rebuilt) > 0


def test_a_full_disk_leaves_no_store_that_is_later_trusted(cache, monkeypatch):
    real_add = rowstore._Writer.add
    calls = []

    def add_then_fill_the_disk(self, batch):
        calls.append(1)
        real_add(self, batch.head(batch.height // 2))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rowstore._Writer, "add", add_then_fill_the_disk)
    folders = (cache / "rowstore").iterdir if (cache / "rowstore").is_dir() else list
    before = {path.name for path in folders() if path.is_dir()}
    with pytest.raises(OSError, match="No space"):
        CheXmaskUDataset(cache, None, rules=["image.mean<=11;missing=drop"], **MASKS_ONLY)
    assert calls and {path.name for path in (cache / "rowstore").iterdir() if path.is_dir()} == before
    monkeypatch.undo()
    dataset = CheXmaskUDataset(cache, None, rules=["image.mean<=11;missing=drop"], **MASKS_ONLY)
    assert len(dataset) == cxu.apply_rules(cxu.open_cache(cache), ["image.mean<=11;missing=drop"]).collect().height


def test_leftovers_of_a_killed_build_are_removed(cache):
    leftover = cache / "rowstore" / ".building-abc-999999999-0000"
    leftover.mkdir(parents=True)
    (leftover / "landmarks.npy").write_bytes(b"half")
    CheXmaskUDataset(cache, None, rules=["image.mean<=7;missing=drop"], **MASKS_ONLY)
    assert not leftover.exists()


def test_hf_datasets_and_pandas_inputs_give_the_same_rows(table):
    reference = CheXmaskUDataset(table, None, **MASKS_ONLY)
    for given in (cxu.to_hf_dataset(table), cxu.to_pandas(table)):
        other = CheXmaskUDataset(given, None, **MASKS_ONLY)
        np.testing.assert_array_equal(other.rows.landmarks, reference.rows.landmarks)
        assert other.rows.ids_frame().equals(reference.rows.ids_frame())


def test_store_dir_is_for_caches_and_is_named(table, cache, tmp_path):
    with pytest.raises(InputError, match="store_dir"):
        CheXmaskUDataset(table, None, store_dir=tmp_path, **MASKS_ONLY)
    dataset = CheXmaskUDataset(cache, None, store_dir=tmp_path / "stores", **MASKS_ONLY)
    assert dataset.rows.directory.parent == tmp_path / "stores"
    with pytest.raises(InputError, match="table must be"):
        CheXmaskUIterableDataset(42, None, **MASKS_ONLY)
    assert os.path.isdir(dataset.rows.directory)


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_device_masks_draw_what_the_dataset_would_have(table, kind):
    options = {"missing": "masks_only", "size": 64, "soft_missing": "hard"}
    on_device = CheXmaskUDataset(table.head(12), None, masks="device", **options)
    reference = CheXmaskUDataset(table.head(12), None, masks=kind, **options)
    batch = next(iter(torch.utils.data.DataLoader(on_device, batch_size=12)))
    expected = next(iter(torch.utils.data.DataLoader(reference, batch_size=12)))
    assert "masks" not in batch
    drawn = cxu.DeviceMasks(64, kind=kind)(batch)
    if kind == "hard":
        assert torch.equal(drawn, expected["masks"])
    else:
        torch.testing.assert_close(drawn, expected["masks"], atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="DeviceMasks"):
        CheXmaskUDataset(table.head(2), None, masks="device", pixel_weights=True, **options)


# ------------------------------------------------------------------ datasets.Dataset inputs, reusable stores


def _rows_of(dataset) -> pl.DataFrame:
    return dataset.rows.ids_frame().with_columns(pl.Series("landmarks", np.asarray(dataset.rows.landmarks)))


def test_scan_hf_dataset_reads_only_the_columns_a_query_needs(table, tmp_path):
    import datasets

    from chexmask_u_tools.errors import RecordError, SchemaError
    from chexmask_u_tools.io.hf import scan_hf_dataset

    canonical = table.head(12)
    ds = cxu.to_hf_dataset(canonical, cache_dir=tmp_path).add_column("label", list(range(12)))
    view = scan_hf_dataset(ds)
    assert view.collect_schema()["landmarks"] == pl.Array(pl.Float32, (120, 2))
    assert view.select(canonical.columns).collect().equals(canonical)
    picked = view.filter(pl.col("label") >= 5).select("image_id", "label").head(3).collect()
    assert picked["label"].to_list() == [5, 6, 7] and picked["image_id"].to_list() == canonical["image_id"][5:8].to_list()
    for other in (ds.select([9, 2, 4]), cxu.to_hf_dataset(canonical, keep_in_memory=True)):  # indices; in memory
        expected = canonical[[9, 2, 4]] if len(other) == 3 else canonical
        assert scan_hf_dataset(other).select(canonical.columns).collect().equals(expected)
    # Row 3's landmarks have 119 nodes: a query that reads them names the row; one that does not, runs.
    points = [np.asarray(p).tolist() for p in canonical["landmarks"].to_numpy()]
    points[3] = points[3][:119]
    own = ds.remove_columns(["landmarks"]).add_column("landmarks", points)
    own = own.cast_column("landmarks", datasets.List(datasets.List(datasets.Value("float32"))))
    assert scan_hf_dataset(own).select("image_id").collect().height == 12
    with pytest.raises(SchemaError, match=r"'landmarks' at row 3 \(ds\[3\]\), image id .* not of shape \(120, 2\)"):
        scan_hf_dataset(own).select("landmarks").collect()
    points = canonical["landmarks"].to_numpy().copy()
    points[10, 0, 1] = np.nan
    broken = canonical.with_columns(pl.Series("landmarks", points, dtype=canonical.schema["landmarks"]))
    with pytest.raises(RecordError, match="non-finite values in landmarks") as caught:
        scan_hf_dataset(cxu.to_hf_dataset(broken, keep_in_memory=True)).collect_batches(chunk_size=4).__next__()
    assert caught.value.row == 10 and caught.value.image_id == canonical["image_id"][10]
    with pytest.raises(SchemaError, match=r"lacks canonical columns \['landmarks'\]"):
        scan_hf_dataset(ds.remove_columns(["landmarks"]))  # checked when scanned, not when read
    with pytest.raises(InputError, match="from_hf_dataset"):
        scan_hf_dataset(ds.to_iterable_dataset())


def test_a_datasets_dataset_with_cache_files_keeps_a_store_that_is_reused_and_checked(table, tmp_path, user_cache):
    folder = tmp_path / "arrow"
    ds = cxu.to_hf_dataset(table, cache_dir=folder)
    reference = CheXmaskUDataset(table, None, **MASKS_ONLY)
    first = CheXmaskUDataset(ds, None, **MASKS_ONLY)
    assert first.rows.directory.parent == user_cache / "rowstore"
    assert _rows_of(first).equals(_rows_of(reference))
    again = CheXmaskUIterableDataset(ds, None, **MASKS_ONLY)  # the same rows, rules and columns: the same store
    assert again.rows.directory == first.rows.directory
    subset = CheXmaskUDataset(ds.select(range(0, 60, 3)), None, **MASKS_ONLY)  # another fingerprint
    assert subset.rows.directory != first.rows.directory and len(subset) == 20
    assert _rows_of(subset).equals(_rows_of(reference)[0:60:3])
    placed = CheXmaskUDataset(ds, None, store_dir=tmp_path / "stores", **MASKS_ONLY)
    assert placed.rows.directory.parent == tmp_path / "stores"
    in_memory = CheXmaskUDataset(cxu.to_hf_dataset(table, keep_in_memory=True), None, **MASKS_ONLY)
    assert in_memory.rows.directory.parent.parent == user_cache / "rowstore" / "tmp"  # no identity: temporary
    # The dataset's Arrow file rewritten in place: a worker refuses the store, a new dataset rebuilds it.
    pickled = pickle.dumps(first)
    arrow = Path(ds.cache_files[0]["filename"])
    arrow.write_bytes(arrow.read_bytes())
    with pytest.raises(FileReadError, match="have changed since") as caught:
        pickle.loads(pickled)
    assert str(arrow) in str(caught.value) and "build the dataset again" in str(caught.value)
    import datasets

    reread = datasets.Dataset.from_file(str(arrow), info=ds.info)
    rebuilt = CheXmaskUDataset(reread, None, **MASKS_ONLY)
    assert _rows_of(rebuilt).equals(_rows_of(reference))
    assert not first.rows.directory.exists() and not subset.rows.directory.exists()  # could never be opened again


def test_a_table_file_or_folder_keeps_a_store_keyed_by_its_files(table, tmp_path, user_cache):
    path = tmp_path / "rows.parquet"
    table.write_parquet(path)
    first = CheXmaskUDataset(path, None, **MASKS_ONLY)
    assert first.rows.directory.parent == user_cache / "rowstore"
    assert first.rows.meta["origin"]["files"][0][0] == str(path.resolve())
    assert _rows_of(first).equals(_rows_of(CheXmaskUDataset(table, None, **MASKS_ONLY)))
    again = CheXmaskUDataset(str(path), None, **MASKS_ONLY)
    assert again.rows.directory == first.rows.directory
    placed = CheXmaskUIterableDataset(path, None, store_dir=tmp_path / "stores", **MASKS_ONLY)
    assert placed.rows.directory.parent == tmp_path / "stores"
    pickled = pickle.dumps(first)
    table.head(50).write_parquet(path)  # the file replaced: other rows
    with pytest.raises(FileReadError, match=f"the table at {str(path.resolve())!r} whose files have changed since"):
        pickle.loads(pickled)
    changed = CheXmaskUDataset(path, None, **MASKS_ONLY)
    assert len(changed) == 50 and not first.rows.directory.exists()
    # A folder: every data file under it is part of its identity, and a store may not be written inside it.
    mirror = build_mirror(tmp_path / "mirror", rows_per_source=4)
    folder = CheXmaskUDataset(mirror, None, **MASKS_ONLY)
    assert len(folder.rows.meta["origin"]["files"]) == len(cxu.LocalMirror(mirror).list_files())
    with pytest.raises(InputError, match="inside the input folder"):
        CheXmaskUDataset(mirror, None, store_dir=mirror / "stores", **MASKS_ONLY)
    extra = min(mirror.rglob("*.csv*"))
    (extra.parent / f"more-{extra.name}").write_bytes(extra.read_bytes())
    grown = CheXmaskUDataset(mirror, None, **MASKS_ONLY)
    assert len(grown) > len(folder) and grown.rows.directory != folder.rows.directory


def test_temporary_stores_live_in_the_cache_and_a_rerun_removes_those_of_dead_processes(table, user_cache):
    tmp = user_cache / "rowstore" / "tmp"
    first = CheXmaskUDataset(table.lazy(), None, **MASKS_ONLY)
    folder = first.rows.directory.parent  # rows-<pid>@<host>-<random>
    assert folder.parent == tmp and folder.name.startswith(f"rows-{os.getpid()}@")
    host = folder.name.split("-")[1].partition("@")[2]
    dead, alive = tmp / f"rows-999999999@{host}-abc", tmp / f"rows-{os.getppid()}@{host}-abc"
    elsewhere = tmp / "rows-999999999@another_machine-abc"  # a cache folder shared with another machine
    for leftover in (dead, alive, elsewhere):
        (leftover / "key").mkdir(parents=True)
    dataset = CheXmaskUDataset(table.lazy(), None, **MASKS_ONLY)
    assert not dead.exists() and alive.exists() and elsewhere.exists()  # only this machine's dead processes'
    del first
    second = dataset.rows.directory.parent
    del dataset
    import gc

    gc.collect()
    assert not folder.exists() and not second.exists()
