"""Physician-annotation files whose released masks disagree with their landmarks (issue 22 item 21).

The release's VinDr-CXR physician file has 53 of 150 masks that are not drawn from its own
landmarks: the data, not a reading error.  The loading guide says so where it describes the
physician files, and ``masks="mean"`` (the masks drawn from the landmarks) is the consistent choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

import chexmask_u_tools as cxu

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "loading.md"
ORGAN_COLUMNS = ("rle_right_lung", "rle_left_lung", "rle_heart")


def test_loading_guide_says_the_physician_masks_are_the_releases_and_offers_mean_masks():
    text = " ".join(GUIDE.read_text().split())
    physician = text[text.index("**Physician files.**") :].split("**", 3)[2]
    assert "53 of its 150 masks" in physician and "release's data, not a reading error" in physician
    assert 'masks="mean"' in physician and "rasterize_organs" in physician


def test_mean_masks_agree_with_the_landmarks_where_the_released_ones_do_not(tmp_path):
    rows = cxu.load_sample().filter(pl.col("source") == "VinDr-CXR").head(6)
    released = cxu.to_released(rows, "physician")
    # as in the release: some masks were not drawn from the file's landmarks (here: those of the next row)
    shifted = released.with_columns(pl.col(c).shift(1, fill_value=pl.col(c).last()) for c in ("Right Lung", "Left Lung", "Heart"))
    drawn = released.select(pl.col("Right Lung").alias("RL_Mean"), pl.col("Left Lung").alias("LL_Mean"), pl.col("Heart").alias("H_Mean"))
    path = tmp_path / "Physician" / "VinDr-CXR_physician.csv"
    path.parent.mkdir()
    pl.concat([shifted, drawn], how="horizontal").write_csv(path)

    def disagreeing(table: pl.DataFrame) -> int:
        count = 0
        for row in table.iter_rows(named=True):
            drawn = cxu.rasterize_organs(np.asarray(row["landmarks"], dtype=np.float64), row["height"], row["width"])
            count += sum(not np.array_equal(cxu.rle_decode(row[c], row["height"], row["width"]), drawn[k]) for k, c in enumerate(ORGAN_COLUMNS))
        return count

    assert disagreeing(cxu.read_table(path)) > 0  # read as released: the file's own disagreement
    assert disagreeing(cxu.read_table(path, masks="mean")) == 0
