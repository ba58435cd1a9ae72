from __future__ import annotations

import csv
import re
import warnings

import numpy as np
import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.io.released import to_released
from chexmask_u_tools.io.table import detect_layout, infer_frame, infer_source

ID_COLUMN = {
    "ChestX-ray8": "Image Index",
    "CheXpert": "Path",
    "MIMIC-CXR-JPG": "dicom_id",
    "Padchest": "ImageID",
    "VinDr-CXR": "image_id",
}


@pytest.fixture(scope="module")
def sample() -> pl.DataFrame:
    return cxu.load_sample()


@pytest.fixture(scope="module")
def small(sample) -> pl.DataFrame:
    """Five CheXpert rows of the sample, with their released strings."""
    return sample.filter(pl.col("source") == "CheXpert").head(5)


def write_csv_rows(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def assert_same_rows(read: pl.DataFrame, expected: pl.DataFrame, *, with_std: bool = True) -> None:
    assert read.schema == cxu.CANONICAL_SCHEMA
    assert read["image_id"].to_list() == expected["image_id"].to_list()
    np.testing.assert_array_equal(read["landmarks"].to_numpy(), expected["landmarks"].to_numpy())
    for column in ("rle_right_lung", "rle_left_lung", "rle_heart"):
        assert read[column].to_list() == expected[column].to_list()
    np.testing.assert_allclose(read["dice_rca_mean"].to_numpy(), expected["dice_rca_mean"].to_numpy())
    np.testing.assert_allclose(read["dice_rca_max"].to_numpy(), expected["dice_rca_max"].to_numpy())
    if with_std:
        np.testing.assert_allclose(read["landmarks_std"].to_numpy(), expected["landmarks_std"].to_numpy())
        np.testing.assert_allclose(read["latent_sigma"].to_numpy(), expected["latent_sigma"].to_numpy())
        np.testing.assert_allclose(
            read["node_sigma_mean"].to_numpy(),
            expected["landmarks_std"].to_numpy().mean(axis=(1, 2)),
            rtol=1e-5,
        )
    else:
        assert read["landmarks_std"].null_count() == len(read)
        assert read["node_sigma_mean"].null_count() == len(read)


def test_sample_has_five_sources_and_summaries(sample):
    assert sample.schema == cxu.CANONICAL_SCHEMA
    assert sorted(sample["source"].unique()) == sorted(cxu.SOURCES)
    assert len(sample) >= 200
    std = sample["landmarks_std"].to_numpy()
    node_sigma = std.mean(axis=-1)
    np.testing.assert_allclose(sample["node_sigma_mean"].to_numpy(), node_sigma.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(sample["node_sigma_max"].to_numpy(), node_sigma.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(sample["sigma_heart"].to_numpy(), node_sigma[:, 94:].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(sample["sigma_right_lung"].to_numpy(), node_sigma[:, :44].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(
        sample["latent_sigma_mean"].to_numpy(), sample["latent_sigma"].to_numpy().mean(axis=1), rtol=1e-5
    )


def test_sample_padchest_quirks_fixed(sample):
    padchest = sample.filter(pl.col("source") == "Padchest")
    assert (padchest["dice_rca_mean"] <= padchest["dice_rca_max"]).all()
    assert padchest["height"].to_list() == [1024] * len(padchest)


@pytest.mark.parametrize("variant", ["chexmask-u", "short", "chexmask", "physician"])
@pytest.mark.parametrize("points_format", ["flat", "numpy"])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.xz", ".parquet"])
def test_every_variant_round_trips(tmp_path, small, variant, points_format, suffix):
    path = tmp_path / f"table{suffix}"
    cxu.write_released(small, path, variant, points_format=points_format)
    read = cxu.read_table(path)
    assert read["source"].to_list() == ["CheXpert"] * len(small)
    assert_same_rows(read, small, with_std=variant in ("chexmask-u", "short"))
    assert cxu.scan_table(path).collect().equals(read)


@pytest.mark.parametrize("source", cxu.SOURCES)
def test_source_inferred_from_id_column_only_when_it_proves_the_source(tmp_path, sample, source):
    rows = sample.filter(pl.col("source") == source).head(3)
    path = tmp_path / "no_hint.csv"
    cxu.write_released(rows, path)
    assert to_released(rows).columns[0] == ID_COLUMN[source]
    if source in ("Padchest", "VinDr-CXR"):
        # ImageID / image_id are shared with other files: alone they prove nothing
        with pytest.raises(cxu.SchemaError, match="pass source="):
            cxu.read_table(path)
        read = cxu.read_table(path, source=source)
    else:
        read = cxu.read_table(path)
    assert read["source"].to_list() == [source] * 3
    assert_same_rows(read, rows)


def test_candid_ptx_with_imageid_is_not_padchest(tmp_path, sample):
    rows = sample.filter(pl.col("source") == "Padchest").head(3)
    path = tmp_path / "CANDID-PTX.csv"
    cxu.write_released(rows, path, variant="chexmask")
    for read in (cxu.read_table, cxu.scan_table):
        with pytest.raises(cxu.SchemaError, match=r"CANDID-PTX.*pass source="):
            read(path)
    assert cxu.read_table(path, source="Padchest")["source"].unique().to_list() == ["Padchest"]
    assert cxu.read_table(path, source="CANDID-PTX")["source"].unique().to_list() == ["CANDID-PTX"]


@pytest.mark.parametrize(
    "name, columns_source, message",
    [
        ("chexpert_and_mimic.csv", "CheXpert", "names several sources"),
        ("CheXpert.csv", "MIMIC-CXR-JPG", "says CheXpert but its id column 'dicom_id' is MIMIC-CXR-JPG's"),
        ("padchestlike.csv", "Padchest", "names none"),
    ],
)
def test_weak_or_disagreeing_source_evidence_raises(tmp_path, sample, name, columns_source, message):
    rows = sample.filter(pl.col("source") == columns_source).head(2)
    path = tmp_path / name
    cxu.write_released(rows, path)
    with pytest.raises(cxu.SchemaError, match=message):
        cxu.read_table(path)
    assert cxu.read_table(path, source=columns_source)["source"].unique().to_list() == [columns_source]


def test_file_name_wins_over_a_shared_id_column(tmp_path, small):
    path = tmp_path / "MIMIC-CXR-JPG_part2.csv"
    cxu.write_released(small, path, id_column="ImageID")
    assert cxu.read_table(path)["source"].unique().to_list() == ["MIMIC-CXR-JPG"]


@pytest.mark.parametrize(
    "folders, frame",
    [
        ("downloads/original_data/Preprocessed", "preprocessed"),
        ("Preprocessed/sub/OriginalResolution", "original"),
        ("OriginalResolution/v2", "original"),
        ("test_original_frame0", "preprocessed"),
    ],
)
def test_nearest_frame_folder_decides(tmp_path, small, folders, frame):
    path = tmp_path / folders / "CheXpert.csv"
    path.parent.mkdir(parents=True)
    cxu.write_released(small.with_columns(pl.lit(1024, dtype=pl.Int32).alias("height")), path)
    assert cxu.read_table(path)["frame"].unique().to_list() == [frame]


def test_misspelled_source_argument_suggests_the_name(tmp_path, small):
    path = tmp_path / "CheXpert.csv"
    cxu.write_released(small, path)
    with pytest.raises(cxu.InputError, match="did you mean 'CheXpert'"):
        cxu.read_table(path, source="Chexpurt")
    with pytest.raises(cxu.InputError, match="did you mean 'CheXpert'"):
        cxu.scan_table(path, source="Chexpurt")
    assert cxu.read_table(path, source="chexpert")["source"].unique().to_list() == ["CheXpert"]
    assert cxu.read_table(path, source="private")["source"].unique().to_list() == ["private"]


@pytest.mark.parametrize(
    "name, source", [("ChestX-Ray8.csv", "ChestX-ray8"), ("chestx-ray8.csv", "ChestX-ray8"), ("VinDr-CXR.csv", "VinDr-CXR")]
)
def test_source_from_file_name_case_insensitive(tmp_path, small, name, source):
    path = tmp_path / name
    cxu.write_released(small, path, id_column="Image ID")
    assert cxu.read_table(path)["source"].unique().to_list() == [source]


def test_generic_id_column_needs_a_source(tmp_path, small):
    path = tmp_path / "table.csv"
    cxu.write_released(small, path, id_column="Image")
    with pytest.raises(cxu.SchemaError, match="pass source="):
        cxu.read_table(path)
    assert cxu.read_table(path, source="padchest")["source"].unique().to_list() == ["Padchest"]


def test_physician_dataset_column_gives_per_row_source(tmp_path, sample):
    rows = pl.concat([sample.filter(pl.col("source") == s).head(2) for s in cxu.SOURCES])
    path = tmp_path / "physician_annotations.csv"
    released = to_released(rows, "physician").with_columns(pl.col("Dataset").str.to_lowercase())
    released.write_csv(path)
    read = cxu.read_table(path)
    assert read["source"].to_list() == rows["source"].to_list()


def test_unnamed_index_column_dropped(tmp_path, small):
    path = tmp_path / "CheXpert.csv"
    released = to_released(small).with_row_index("Unnamed: 0").with_columns(pl.col("Unnamed: 0").cast(pl.Int64))
    released.write_csv(path)
    assert_same_rows(cxu.read_table(path), small)
    pandas_style = tmp_path / "pandas_style.csv"
    released.rename({"Unnamed: 0": ""}).write_csv(pandas_style)
    assert_same_rows(cxu.read_table(pandas_style, source="CheXpert"), small)


def test_mean_masks_variant(tmp_path, small):
    released = to_released(small).with_columns(
        pl.lit("1 5").alias("RL_Mean"), pl.lit("2 5").alias("LL_Mean"), pl.lit(None, pl.String).alias("H_Mean")
    )
    path = tmp_path / "CheXpert.csv"
    released.write_csv(path)
    assert_same_rows(cxu.read_table(path), small)
    mean_masks = cxu.read_table(path, masks="mean")
    assert mean_masks["rle_right_lung"].unique().to_list() == ["1 5"]
    assert mean_masks["rle_heart"].null_count() == len(small)


def test_second_mean_std_pair_is_original_frame(tmp_path, small):
    released = to_released(small)
    original = small["landmarks"].to_numpy() * 2.5
    header = ["Path", "Dice RCA (Mean)", "Dice RCA (Max)", "Mean", "Std", "Mean", "Std", "Height", "Width"]
    rows = [
        [
            r["Path"], r["Dice RCA (Mean)"], r["Dice RCA (Max)"], r["Landmarks (Mean)"], r["Landmarks (Std)"],
            cxu.format_points(original[i]), cxu.format_points(small["landmarks_std"].to_numpy()[i] * 2.5, 2),
            2560, 2560,
        ]
        for i, r in enumerate(released.iter_rows(named=True))
    ]
    path = tmp_path / "CheXpert.csv"
    write_csv_rows(path, header, rows)
    preprocessed = cxu.read_table(path)
    np.testing.assert_array_equal(preprocessed["landmarks"].to_numpy(), small["landmarks"].to_numpy())
    assert preprocessed["frame"].unique().to_list() == ["preprocessed"]
    original_rows = cxu.read_table(path, frame="original")
    np.testing.assert_allclose(original_rows["landmarks"].to_numpy(), original, rtol=1e-6)
    assert original_rows["frame"].unique().to_list() == ["original"]
    np.testing.assert_allclose(
        original_rows["landmarks_std"].to_numpy(), small["landmarks_std"].to_numpy() * 2.5, atol=0.011
    )


def test_frame_inferred_from_path(tmp_path, small):
    folder = tmp_path / "OriginalResolution"
    folder.mkdir()
    cxu.write_released(small.with_columns(pl.lit(2000, pl.Int32).alias("height")), folder / "CheXpert.csv")
    read = cxu.read_table(folder / "CheXpert.csv")
    assert read["frame"].unique().to_list() == ["original"]
    assert read["height"].unique().to_list() == [2000]


def test_quirks_swapped_dice_float_and_empty_sizes_empty_masks_partial_latents(tmp_path, small):
    released = to_released(small, id_column="ImageID").with_columns(
        pl.col("Dice RCA (Mean)").alias("Dice RCA (Max)"),
        pl.col("Dice RCA (Max)").alias("Dice RCA (Mean)"),
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.lit("1024.0")).alias("Height"),
        pl.lit("1024.0").alias("Width"),
        pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col("Heart")).alias("Heart"),
        pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("latents")).alias("latents"),
    )
    path = tmp_path / "Padchest.csv"
    released.write_csv(path)
    read = cxu.read_table(path)
    np.testing.assert_allclose(read["dice_rca_mean"].to_numpy(), small["dice_rca_mean"].to_numpy())
    np.testing.assert_allclose(read["dice_rca_max"].to_numpy(), small["dice_rca_max"].to_numpy())
    assert read["height"].to_list() == [1024] * len(small)
    assert read["rle_heart"][1] is None
    assert read["latent_sigma"][2] is None and read["latent_sigma_mean"][2] is None
    assert read["latent_sigma"].null_count() == 1


def test_missing_dice_stays_null_and_the_swap_needs_both(tmp_path, small):
    row = pl.int_range(pl.len())
    released = to_released(small, id_column="ImageID").with_columns(
        pl.when(row == 0).then(None).when(row == 2).then(pl.lit("0.95")).otherwise(pl.col("Dice RCA (Mean)"))
        .alias("Dice RCA (Mean)"),
        pl.when(row == 1).then(None).when(row == 2).then(pl.lit("0.5")).otherwise(pl.col("Dice RCA (Max)"))
        .alias("Dice RCA (Max)"),
    )
    path = tmp_path / "Padchest.csv"
    released.write_csv(path)
    for read in (cxu.read_table(path), cxu.scan_table(path).collect()):
        assert read["dice_rca_mean"][0] is None  # not the file's Max
        assert read["dice_rca_max"][0] == pytest.approx(small["dice_rca_max"][0])
        assert read["dice_rca_max"][1] is None
        assert read["dice_rca_mean"][1] == pytest.approx(small["dice_rca_mean"][1])
        assert (read["dice_rca_mean"][2], read["dice_rca_max"][2]) == (0.5, 0.95)  # swapped pair: fixed up
        assert len(read.filter(pl.col("dice_rca_mean") >= 0.0)) == len(small) - 1


def _raw_numbers(text: str | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """A released point list (flat ``x0,y0,...`` or numpy-printed), read independently of the toolkit's parser."""
    if text is None or not text.strip():
        return None
    return np.array([float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", text)]).reshape(shape)


def _raw_released(path) -> pl.DataFrame:
    """A released file's text columns, as written (csv in any compression, or parquet)."""
    if path.name.lower().endswith(".parquet"):
        return pl.read_parquet(path).cast(pl.String)
    return pl.read_csv(path, infer_schema=False)


def test_real_rows_load_with_every_field_right(real_tables):
    """Each field read_table gives against the file's own text, for any released layout (SPEC section 2)."""
    for path, table in real_tables:
        raw = _raw_released(path)
        assert len(table) == len(raw)
        assert table.schema == cxu.CANONICAL_SCHEMA
        assert table["source"].unique().to_list() == list(cxu.sources.sources_in_name(path.name))  # ChestX-Ray8.csv too
        id_column = next(c for c in raw.columns if c in ("Path", "dicom_id", "Image Index", "ImageID", "image_id", "Image ID", "Image"))
        assert table["image_id"].to_list() == raw[id_column].to_list()
        mean = next(c for c in ("Landmarks (Mean)", "Mean", "Landmarks") if c in raw.columns)
        for text, landmarks in zip(raw[mean], table["landmarks"].to_numpy()):
            np.testing.assert_array_equal(landmarks, _raw_numbers(text, (120, 2)).astype(np.float32))
        std = next((c for c in ("Landmarks (Std)", "Std") if c in raw.columns), None)
        if std is None:
            assert table["landmarks_std"].null_count() == len(table)
        else:
            for text, value in zip(raw[std], table["landmarks_std"].to_list()):
                expected = _raw_numbers(text, (120, 2))
                assert (value is None) if expected is None else np.array_equal(np.asarray(value), expected.astype(np.float32))
        for column, name in (("rle_right_lung", "Right Lung"), ("rle_left_lung", "Left Lung"), ("rle_heart", "Heart")):
            assert [v or "" for v in table[column].to_list()] == [v or "" for v in raw[name].to_list()]
        # the smaller of the pair is the mean (Padchest subsets swap them); an empty value stays empty
        given = raw.select(pl.col("Dice RCA (Mean)").cast(pl.Float64).alias("a"), pl.col("Dice RCA (Max)").cast(pl.Float64).alias("b"))
        both = pl.col("a").is_not_null() & pl.col("b").is_not_null()
        expected = given.select(
            pl.when(both).then(pl.min_horizontal("a", "b")).otherwise(pl.col("a")).alias("mean"),
            pl.when(both).then(pl.max_horizontal("a", "b")).otherwise(pl.col("b")).alias("max"),
        )
        assert table["dice_rca_mean"].to_list() == expected["mean"].to_list()
        assert table["dice_rca_max"].to_list() == expected["max"].to_list()
        # Height/Width as integers, floats (1024.0) read as integers, empty ones the preprocessed frame's 1024
        for column, name in (("height", "Height"), ("width", "Width")):
            sizes = raw[name].cast(pl.Float64).cast(pl.Int32)
            preprocessed = table["frame"] == "preprocessed"
            assert (sizes.is_not_null() | preprocessed).all()
            assert table[column].to_list() == sizes.fill_null(1024).to_list()


def test_fsspec_url(small):
    import fsspec

    with fsspec.open("memory://mirror/Preprocessed/CheXpert.csv", "wb") as handle:
        to_released(small).write_csv(handle)
    assert_same_rows(cxu.read_table("memory://mirror/Preprocessed/CheXpert.csv"), small)


def test_lazy_filters_push_down(tmp_path, sample):
    path = tmp_path / "VinDr-CXR.csv"
    rows = sample.filter(pl.col("source") == "VinDr-CXR")
    cxu.write_released(rows, path)
    lazy = cxu.scan_table(path).filter(cxu.node_sigma_mean() < 7.5).select("image_id", "node_sigma_mean")
    result = lazy.collect()
    assert result["image_id"].to_list() == rows.filter(pl.col("node_sigma_mean") < 7.5)["image_id"].to_list()


# --- bad input ------------------------------------------------------------------------------------


def corrupt(small, column, row, value):
    released = to_released(small)
    return released.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )


BAD_CELLS = [
    ("Landmarks (Mean)", "1,2,3,abc", "non-numeric"),
    ("Landmarks (Mean)", ",".join(["5"] * 238), "238 numbers, expected 240"),
    ("Landmarks (Mean)", None, "missing landmarks"),
    ("Landmarks (Std)", ",".join(["-1.5"] * 240), "negative"),
    ("latents", ",".join(["0.9"] * 63), "63 numbers, expected 64"),
    ("Landmarks (Mean)", ",".join(["5"] * 239 + ["1e300"]), "non-finite"),
    ("Landmarks (Std)", ",".join(["1.5"] * 239 + ["3.5e38"]), "float32 range"),
    ("latents", ",".join(["0.9"] * 63 + ["-1e300"]), "non-finite"),
    ("Right Lung", "1048570 10", "past the mask"),
    ("Heart", "12 a 40 3 x", "non-integer"),  # the decoders' rule (rle_problems) words every mask problem
    ("Height", "-3", "positive integer"),
    ("Width", "wide", "not a number"),
    ("Dice RCA (Mean)", "good", "not a number"),
    ("Path", None, "missing image id"),
    ("Path", "  \t ", "missing image id"),  # an id of spaces only: no id (ids are otherwise kept as written)
]


@pytest.mark.parametrize("column, value, message", BAD_CELLS)
def test_bad_cell_raises_with_file_row_and_id(tmp_path, small, column, value, message):
    path = tmp_path / "CheXpert.csv"
    corrupt(small, column, 3, value).write_csv(path)
    with pytest.raises(cxu.RecordError, match=message) as info:
        cxu.read_table(path)
    error = info.value
    assert error.row == 3 and error.file == str(path)
    assert str(path) in str(error) and "row 3, counted from 0 after the header" in str(error)
    assert str(error).endswith('pass on_error="skip" to drop such rows')  # the fix, in Python
    if column != "Path":
        assert error.image_id == small["image_id"][3] and small["image_id"][3] in str(error)
    with pytest.raises(cxu.RecordError, match=message):
        cxu.scan_table(path).collect()


@pytest.mark.parametrize("value, message", [("12 a 40 3", "non-integer"), ("12 4 40", "odd number")])
def test_full_mask_check(tmp_path, small, value, message):
    path = tmp_path / "CheXpert.csv"
    corrupt(small, "Left Lung", 2, value).write_csv(path)
    assert len(cxu.read_table(path)) == len(small)  # the tail-only default check cannot see these
    with pytest.raises(cxu.RecordError, match=message) as info:
        cxu.read_table(path, check_masks=True)
    assert info.value.row == 2


def test_skip_policy_reports_counts(tmp_path, small):
    released = corrupt(small, "Landmarks (Mean)", 1, "1,2")
    released = released.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("0 x")).otherwise(pl.col("Heart")).alias("Heart")
    )
    path = tmp_path / "CheXpert.csv"
    released.write_csv(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = cxu.read_table(path, on_error="skip")
    assert read["image_id"].to_list() == [small["image_id"][i] for i in (0, 2, 3)]
    (warning,) = [w.message for w in caught if isinstance(w.message, cxu.SkippedRowsWarning)]
    assert warning.total == 5 and sum(warning.counts.values()) == 2
    assert any("2 numbers, expected 240" in reason for reason in warning.counts)
    assert cxu.scan_table(path, on_error="skip").collect()["image_id"].to_list() == read["image_id"].to_list()


def test_missing_id_column(tmp_path, small):
    path = tmp_path / "CheXpert.csv"
    to_released(small).drop("Path").write_csv(path)
    with pytest.raises(cxu.SchemaError, match="no image id column"):
        cxu.read_table(path)


def test_missing_landmark_column(tmp_path, small):
    path = tmp_path / "CheXpert.csv"
    to_released(small).drop("Landmarks (Mean)").write_csv(path)
    with pytest.raises(cxu.SchemaError, match="no landmark column"):
        cxu.read_table(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(cxu.FileReadError, match="not found"):
        cxu.read_table(tmp_path / "absent.csv")
    corrupt_parquet = tmp_path / "CheXpert.parquet"
    corrupt_parquet.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(cxu.FileReadError):
        cxu.read_table(corrupt_parquet)
    corrupt_gz = tmp_path / "CheXpert.csv.gz"
    corrupt_gz.write_bytes(b"\x1f\x8b\x08\x00 truncated")
    with pytest.raises(cxu.FileReadError):
        cxu.read_table(corrupt_gz)
    (tmp_path / "table.json").write_text("{}")
    with pytest.raises(cxu.FileReadError, match="unsupported"):
        cxu.read_table(tmp_path / "table.json")
    with pytest.raises(cxu.FileReadError, match="not found"):
        cxu.read_table(tmp_path / "missing_folder")
    with pytest.raises(cxu.FileReadError, match="not found"):
        cxu.scan_table(tmp_path / "missing.json")


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.xz"])
def test_truncated_csv_raises(tmp_path, small, suffix):
    path = tmp_path / f"CheXpert{suffix}"
    cxu.write_released(small, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(cxu.FileReadError):
        cxu.read_table(path)
    with pytest.raises(cxu.FileReadError):
        cxu.scan_table(path).collect()


def test_layout_helpers():
    assert infer_source("hf://datasets/x/Preprocessed/MIMIC-CXR-JPG_part1.csv.gz") == "MIMIC-CXR-JPG"
    assert infer_source("padchest.csv") == "Padchest"
    assert infer_source("other.csv") is None
    assert infer_frame("OriginalResolution/VinDr-CXR.csv") == "original"
    assert infer_frame("Preprocessed/VinDr-CXR.csv") == "preprocessed"
    layout = detect_layout(["Image Index", "Landmarks", "Right Lung"])
    assert layout.source == "ChestX-ray8" and layout.std_column is None
    with pytest.raises(cxu.SchemaError):
        detect_layout(["Image Index", "Landmarks"], frame="sideways")


def test_preprocessed_rows_keep_original_size_and_1024_masks(tmp_path, small):
    path = tmp_path / "Preprocessed" / "CheXpert.csv"
    path.parent.mkdir()
    cxu.write_released(small.with_columns(pl.lit(2500, pl.Int32).alias("height"), pl.lit(2000, pl.Int32).alias("width")), path)
    table = cxu.read_table(path)
    assert table["height"].unique().to_list() == [2500] and table["width"].unique().to_list() == [2000]
    assert table["rle_heart"].to_list() == small["rle_heart"].to_list()
    row = table.row(0, named=True)
    assert cxu.mask_shape(row["frame"], row["height"], row["width"]) == (1024, 1024)
    rows, cols = cxu.mask_shape_exprs()
    assert table.select(rows.unique(), cols.unique()).row(0) == (1024, 1024)
    past = corrupt(small, "Heart", 0, f"{1024 * 1024 - 2} 5")
    past.write_csv(path)
    with pytest.raises(cxu.RecordError, match="past the mask's 1048576 pixels"):
        cxu.read_table(path)


def test_mask_shape_rules():
    assert cxu.mask_shape("original", 300, 200) == (300, 200)
    with pytest.raises(cxu.InputError):
        cxu.mask_shape("original", None, 200)
    with pytest.raises(cxu.InputError):
        cxu.mask_shape("sideways", 1, 1)


def test_frame_named_by_the_file_name_and_conflicts(tmp_path, small):
    table = small.with_columns(pl.lit(1024, dtype=pl.Int32).alias("height"))
    path = tmp_path / "CheXpert_OriginalResolution.csv"
    cxu.write_released(table, path)
    assert cxu.read_table(path)["frame"].unique().to_list() == ["original"]
    conflict = tmp_path / "Preprocessed" / "CheXpert_original.csv"
    conflict.parent.mkdir()
    cxu.write_released(table, conflict)
    with pytest.raises(cxu.SchemaError, match="folder says preprocessed but its name says original.*frame="):
        cxu.read_table(conflict)
    assert cxu.read_table(conflict, frame="original")["frame"].unique().to_list() == ["original"]
