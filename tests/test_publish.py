"""Hugging Face datasets in and out, and Hub-ready folders: exact round trips with typed features."""

from __future__ import annotations

import datasets
import numpy as np
import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError, SchemaError
from chexmask_u_tools.testing.images import write_demo_images


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    sample = cxu.load_sample()
    # Nulls where the released files have them: rows without std or latents (and so without their summaries).
    return cxu.add_summaries(sample.with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("latent_sigma")).alias("latent_sigma"),
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise(pl.col("landmarks_std")).alias("landmarks_std"),
    ))


def test_dataset_round_trip_is_exact_with_typed_features(table):
    ds = cxu.to_hf_dataset(table)
    assert ds.features["landmarks"] == datasets.Array2D((120, 2), "float32")
    assert ds.features["landmarks_std"] == datasets.Array2D((120, 2), "float32")
    assert ds.features["latent_sigma"].length == 64 and ds.features["rle_heart"].dtype == "string"
    assert cxu.from_hf_dataset(ds).equals(table)
    assert cxu.from_hf_dataset(ds.to_iterable_dataset()).equals(table)
    assert cxu.open_table(ds).collect().equals(table)
    row = ds.with_format("numpy")[1]
    np.testing.assert_array_equal(row["landmarks"], table["landmarks"][1].to_numpy())


def test_real_rows_round_trip(real_tables):
    real = pl.concat([table for _, table in real_tables])
    assert cxu.from_hf_dataset(cxu.to_hf_dataset(real)).equals(real)


def test_torch_dataloader_reads_batches(table):
    torch = pytest.importorskip("torch")
    ds = cxu.to_hf_dataset(table.head(8)).select_columns(["landmarks", "node_sigma_mean"]).with_format("torch")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["landmarks"].shape == (4, 120, 2) and batch["landmarks"].dtype == torch.float32


def test_image_column_points_at_the_users_files(table, tmp_path):
    subset = table.head(5)
    roots = write_demo_images(subset, tmp_path / "images")
    ds = cxu.to_hf_dataset(subset, images=roots)
    assert isinstance(ds.features["image"], datasets.Image)
    first = ds[0]["image"]
    assert first.size[0] > 0 and first.mode in ("L", "RGB")
    assert cxu.from_hf_dataset(ds).equals(subset)
    with pytest.raises(InputError, match="does not exist"):
        cxu.to_hf_dataset(subset, images=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cxu.MissingImageError):
        cxu.to_hf_dataset(subset, images=tmp_path / "empty")
    assert cxu.to_hf_dataset(subset, images=tmp_path / "empty", missing="null")[0]["image"] is None


def test_from_hf_dataset_names_missing_columns(table):
    ds = cxu.to_hf_dataset(table.head(2)).remove_columns(["landmarks", "frame"])
    with pytest.raises(SchemaError, match=r"\['frame', 'landmarks'\]"):
        cxu.from_hf_dataset(ds)


def test_hub_folder_loads_back_with_splits(table, tmp_path):
    with_split = table.with_columns(
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(pl.lit("test")).otherwise(pl.lit("train")).alias("split")
    )
    folder = cxu.save_hub_folder(
        with_split, tmp_path / "hub", name="demo subset", max_shard_bytes=200_000, row_group_rows=20, progress=False
    )
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: default" in card and "array2_d" in card
    assert "@inproceedings{cosarinsky2026chexmasku" in card and card.count("```bibtex") == 1
    assert "## Segmentation quality" in card  # the dataset card of cxu.describe
    assert len(list((folder / "data").glob("train-*.parquet"))) > 1  # sharded by size
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    assert set(loaded) == {"train", "test"}
    assert loaded["train"].features["landmarks"] == datasets.Array2D((120, 2), "float32")
    for split in ("train", "test"):
        expected = with_split.filter(pl.col("split") == split).drop("split")
        with pytest.warns(cxu.IntegrityWarning, match="could not check whether rows are missing"):
            assert cxu.from_hf_dataset(loaded[split]).equals(expected)
        assert cxu.read_table(folder).filter(pl.col("split") == split).drop("split").equals(expected)


def test_hub_folder_refuses_to_overwrite_and_null_splits(table, tmp_path):
    folder = cxu.save_hub_folder(table.head(3), tmp_path / "hub")
    with pytest.raises(InputError, match="overwrite=True"):
        cxu.save_hub_folder(table.head(3), folder)
    cxu.save_hub_folder(table.head(4), folder, overwrite=True)
    assert datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf-cache")).num_rows == 4
    assert cxu.read_table(folder).equals(table.head(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf-cache", "hub"]  # no staging left behind
    with pytest.raises(InputError, match="null split"):
        cxu.save_hub_folder(table.head(2).with_columns(pl.lit(None, pl.String).alias("split")), tmp_path / "other")


def test_export_hub_folder_command(tmp_path, capsys):
    from chexmask_u_tools.cli import main

    out = tmp_path / "hub"
    assert main(["export", "sample", "--min-dice", "0.7", "--hub-folder", "--out", str(out), "--no-progress"]) == 0
    assert "Hub folder" in capsys.readouterr().out
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    expected = cxu.apply_rules(cxu.load_sample(), ["dice.mean>=0.7"])
    assert sorted(loaded["image_id"]) == sorted(expected["image_id"])
    assert cxu.read_table(out).equals(expected.select(cxu.CANONICAL_SCHEMA.names()))  # checked against chexmask-u.json
