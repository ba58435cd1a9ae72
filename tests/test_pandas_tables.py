"""pandas in and out (issue 16 item 1): as_polars, to_pandas, every table entry point, and masks for array tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError, SchemaError
from chexmask_u_tools.schema import CANONICAL_SCHEMA, as_polars


def sample_with_nulls() -> pl.DataFrame:
    """The sample with every kind of nullable value missing on some rows, summaries recomputed."""
    table = cxu.load_sample()
    row = pl.int_range(pl.len())
    table = table.with_columns(
        pl.when(row % 5 == 1).then(None).otherwise(pl.col("landmarks_std")).alias("landmarks_std"),
        pl.when(row % 7 == 2).then(None).otherwise(pl.col("latent_sigma")).alias("latent_sigma"),
        pl.when(row % 4 == 3).then(None).otherwise(pl.col("dice_rca_mean")).alias("dice_rca_mean"),
        pl.when(row % 6 == 0).then(None).otherwise(pl.col("rle_heart")).alias("rle_heart"),
        pl.when(row % 9 == 4).then(None).otherwise(pl.col("height")).alias("height"),
    )
    return cxu.add_summaries(table)


def test_to_pandas_cells_are_float32_arrays_and_none():
    table = sample_with_nulls()
    df = cxu.to_pandas(table)
    assert list(df.columns) == table.columns and len(df) == table.height
    assert df["landmarks"][0].shape == (120, 2) and df["landmarks"][0].dtype == np.float32
    assert df["latent_sigma"][0].shape == (64,) and df["latent_sigma"][0].dtype == np.float32
    np.testing.assert_array_equal(np.stack(df["landmarks"]), table["landmarks"].to_numpy())
    assert df["landmarks_std"][1] is None and df["latent_sigma"][2] is None and pd.isna(df["rle_heart"][0])
    assert str(df["height"].dtype) == "Int32" and df["height"].isna().sum() == table["height"].null_count() > 0
    assert np.isnan(df["dice_rca_mean"][3])


def test_round_trip_is_exact_with_nulls_and_lazy_input():
    table = sample_with_nulls()
    assert as_polars(cxu.to_pandas(table)).equals(table)
    assert as_polars(cxu.to_pandas(table.lazy())).equals(table)
    assert as_polars(cxu.to_pandas(table.head(0))).equals(table.head(0))


def test_polars_input_passes_through_unchanged():
    table = cxu.load_sample()
    lazy = table.lazy()
    assert as_polars(table) is table and as_polars(lazy) is lazy


def test_nested_lists_nan_cells_index_and_extra_columns():
    table = cxu.load_sample().head(3)
    df = cxu.to_pandas(table)
    df["landmarks"] = [cell.tolist() for cell in df["landmarks"]]  # nested lists, as a user may hold them
    df["latent_sigma"] = [df["latent_sigma"][0], np.nan, None]
    df["patient_id"] = ["p0", "p1", "p2"]
    df.index = [10, 11, 12]
    converted = as_polars(df)
    assert converted.columns == [*CANONICAL_SCHEMA.names(), "patient_id"]
    assert converted.select(CANONICAL_SCHEMA.names()).schema == CANONICAL_SCHEMA
    assert converted["latent_sigma"].is_null().to_list() == [False, True, True]
    assert converted["patient_id"].to_list() == ["p0", "p1", "p2"]
    assert converted.select(pl.exclude("latent_sigma", "patient_id")).equals(table.drop("latent_sigma"))


def test_missing_columns_are_all_named_with_the_argument():
    df = cxu.to_pandas(cxu.load_sample()).drop(columns=["landmarks", "rle_heart", "latent_sigma_mean"])
    with pytest.raises(SchemaError, match=r"frame \(a pandas DataFrame\) lacks the canonical columns 'landmarks', 'rle_heart', 'latent_sigma_mean'"):
        cxu.apply_rules(df, ["dice.mean>=0.75"])
    with pytest.raises(SchemaError, match=r"^table \(a pandas DataFrame\) lacks .*'landmarks'.*cxu.table_from_arrays"):
        cxu.summary_by_source(df)


def test_bad_cells_and_types_are_refused():
    df = cxu.to_pandas(cxu.load_sample().head(2))
    df["landmarks_std"] = [np.zeros((119, 2)), None]
    with pytest.raises(SchemaError, match=r"table\['landmarks_std'\] row 0: a cell must have shape \(120, 2\), got \(119, 2\)"):
        as_polars(df)
    df = cxu.to_pandas(cxu.load_sample().head(2))
    df["height"] = ["tall", "short"]
    with pytest.raises(SchemaError, match=r"table\['height'\] cannot be read as Int32"):
        as_polars(df)
    with pytest.raises(InputError, match="must be a polars DataFrame/LazyFrame or a pandas DataFrame, got dict"):
        as_polars({"landmarks": []})


def test_every_entry_point_takes_pandas_like_polars(tmp_path):
    table = sample_with_nulls()
    table = table.with_columns(pl.format("p{}", pl.int_range(pl.len()) // 2).alias("patient_id"))
    df = cxu.to_pandas(table)
    rules = ["dice.mean>=0.75"]
    assert cxu.apply_rules(df, rules, check_missing=False).equals(cxu.apply_rules(table, rules, check_missing=False))
    assert cxu.rule_report(df, rules).equals(cxu.rule_report(table, rules))
    assert cxu.apply_filters(df, max_node_sigma_mean=5.0, missing="keep").equals(
        cxu.apply_filters(table, max_node_sigma_mean=5.0, missing="keep")
    )
    assert cxu.filter_report(df, max_node_sigma_mean=5.0, missing="keep").equals(
        cxu.filter_report(table, max_node_sigma_mean=5.0, missing="keep")
    )
    assert cxu.summary_by_source(df).equals(cxu.summary_by_source(table))
    assert cxu.add_summaries(df).equals(cxu.add_summaries(table))
    assert cxu.open_table(df).collect().equals(table)
    assert cxu.open_table(df, sources="CheXpert").collect().equals(table.filter(pl.col("source") == "CheXpert"))
    split = cxu.patient_split(table, seed=1)
    assert cxu.patient_split(df, seed=1).equals(split)
    metadata = table.select("source", "image_id", pl.lit("PA").alias("view"))
    assert cxu.attach_metadata(df.drop(columns=["patient_id"]), metadata).equals(
        cxu.attach_metadata(table.drop("patient_id"), metadata)
    )
    assert cxu.describe(cxu.to_pandas(split)) == cxu.describe(split)
    dataset = cxu.to_hf_dataset(cxu.to_pandas(split))
    reference = cxu.to_hf_dataset(split)
    assert dataset.features == reference.features and dataset.data.table.equals(reference.data.table)
    from_pandas = cxu.save_hub_folder(cxu.to_pandas(split), tmp_path / "pandas")
    from_polars = cxu.save_hub_folder(split, tmp_path / "polars")
    files = sorted(path.relative_to(from_polars) for path in from_polars.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(from_pandas) for path in from_pandas.rglob("*") if path.is_file())
    for name in files:
        if name.suffix == ".parquet":
            assert pl.read_parquet(from_pandas / name).equals(pl.read_parquet(from_polars / name))
        else:
            assert (from_pandas / name).read_text() == (from_polars / name).read_text()


def test_table_from_arrays_with_masks_rasterizes_each_row_on_its_grid():
    sample = cxu.load_sample().head(3)
    points = sample["landmarks"].to_numpy()
    std = sample["landmarks_std"].to_numpy()
    table = cxu.table_from_arrays(points, std=std, image_ids=sample["image_id"].to_list(), with_masks=True)
    expected = cxu.rasterize_organs(points, 1024, 1024)
    for row in range(3):
        for k, column in enumerate(("rle_right_lung", "rle_left_lung", "rle_heart")):
            decoded = cxu.rle_decode(table[column][row], 1024, 1024)
            np.testing.assert_array_equal(decoded, expected[row, k])
    plain = cxu.table_from_arrays(points, std=std, image_ids=sample["image_id"].to_list())
    assert table.schema == CANONICAL_SCHEMA and plain.select(pl.col("^rle_.*$").null_count()).row(0) == (3, 3, 3)
    assert table.drop("rle_right_lung", "rle_left_lung", "rle_heart").equals(plain.drop("rle_right_lung", "rle_left_lung", "rle_heart"))
    assert table["node_sigma_mean"].null_count() == 0
    np.testing.assert_allclose(table["node_sigma_mean"].to_numpy(), sample["node_sigma_mean"].to_numpy(), rtol=1e-6)


def test_add_masks_original_frame_uses_each_rows_size():
    points = cxu.load_sample()["landmarks"].to_numpy()[:2] / 4  # a 256-pixel image
    table = cxu.table_from_arrays(points, frame="original", height=[256, 300], width=[256, 250], with_masks=True)
    for row, (height, width) in enumerate([(256, 256), (300, 250)]):
        heart = cxu.rle_decode(table["rle_heart"][row], height, width)
        np.testing.assert_array_equal(heart, cxu.rasterize_organs(points[row], height, width)[2])


def test_add_masks_refuses_off_grid_rows_and_conflicting_strings():
    points = cxu.load_sample()["landmarks"].to_numpy()[:2].copy()
    points[1] += 5000
    with pytest.raises(InputError, match=r"row 1 \(image_id '1'\): 120 of 120 nodes .* beyond .*allow_empty=True"):
        cxu.table_from_arrays(points, with_masks=True)
    table = cxu.add_masks(cxu.table_from_arrays(points), allow_empty=True)
    assert table["rle_heart"].is_null().to_list() == [False, True]
    with pytest.raises(InputError, match="drop rle_heart= or with_masks=True"):
        cxu.table_from_arrays(points[:1], rle_heart=["1 5"], with_masks=True)
    with pytest.raises(InputError, match="row 0 .* has no landmarks"):
        cxu.add_masks(cxu.load_sample().head(1).with_columns(landmarks=None))
