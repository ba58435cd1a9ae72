"""A column that nearly spells a known name is said, with the ``columns=`` fix, never dropped without a word."""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl
import pytest

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import ColumnNameWarning, SchemaError
from chexmask_u_tools.hub.read import load, scan
from chexmask_u_tools.testing.mirror import build_mirror


def _write(path: Path, renames: dict[str, str], rows: int = 3) -> tuple[Path, pl.DataFrame]:
    table = cxu.load_sample().filter(pl.col("source") == "VinDr-CXR").head(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    cxu.to_released(table).rename(renames).write_csv(path)
    return path, table


def test_a_near_miss_of_the_std_column_warns_with_the_mapping_that_reads_it(tmp_path):
    path, table = _write(tmp_path / "repo" / "VinDr-CXR.csv", {"Landmarks (Std)": "Landmark (Std)"})
    readers = {
        "read_table": lambda: cxu.read_table(path),
        "scan_table": lambda: cxu.scan_table(path).collect(),
        "hub.load": lambda: pl.concat(load(tmp_path / "repo", use_cache=False)),
        "hub.scan": lambda: scan(tmp_path / "repo", use_cache=False).collect(),
    }
    for name, read in readers.items():
        with pytest.warns(ColumnNameWarning) as caught:
            got = read()
        warning = caught[0].message
        assert (warning.column, warning.closest) == ("Landmark (Std)", "Landmarks (Std)"), name
        assert "columns={'Landmark (Std)': 'landmarks_std'}" in str(warning) and str(path.name) in str(warning), name
        assert got["landmarks_std"].null_count() == got.height, name  # not guessed: the warning says it is unread
    with warnings.catch_warnings():
        warnings.simplefilter("error", ColumnNameWarning)
        mapped = cxu.read_table(path, columns={"Landmark (Std)": "landmarks_std"})
    assert mapped["landmarks_std"].equals(table["landmarks_std"])


@pytest.mark.parametrize(
    "renames, closest",
    [
        ({"latents": "latent"}, "latents"),
        ({"Dice RCA (Max)": "Dice RCA (max)"}, "Dice RCA (Max)"),
        ({"Heart": "heart"}, "Heart"),
        ({"Height": "Heigth"}, "Height"),
    ],
)
def test_other_near_misses_warn_too(tmp_path, renames, closest):
    path, _ = _write(tmp_path / "VinDr-CXR.csv", renames)
    with pytest.warns(ColumnNameWarning, match="columns=") as caught:
        cxu.read_table(path)
    assert caught[0].message.closest == closest


def test_a_renamed_id_or_landmark_column_names_the_columns_fix(tmp_path):
    path, _ = _write(tmp_path / "VinDr-CXR.csv", {"image_id": "Image Idx"})
    with pytest.raises(SchemaError, match="no image id column") as caught:
        cxu.read_table(path)
    assert "Image Idx" in str(caught.value) and "columns={'Image Idx': 'image_id'}" in str(caught.value)
    path, _ = _write(tmp_path / "other" / "VinDr-CXR.csv", {"Landmarks (Mean)": "Landmark (Mean)"})
    with pytest.raises(SchemaError, match="no landmark column") as caught:
        cxu.read_table(path)
    assert "columns={'Landmark (Mean)': 'landmarks'}" in str(caught.value)


def test_released_layouts_and_unrelated_columns_do_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ColumnNameWarning)
        for path in cxu.sample_files():
            cxu.read_table(path)
        assert pl.concat(load(build_mirror(tmp_path / "mirror", rows_per_source=2), use_cache=False)).height > 0
        extra = cxu.to_released(cxu.load_sample().head(2)).with_columns(notes=pl.lit("x"), reviewer=pl.lit("y"))
        extra.write_csv(tmp_path / "CheXpert.csv")
        cxu.read_table(tmp_path / "CheXpert.csv")
