"""Datasets and ImageResolver fail fast at construction: misspelt roots keys, absent roots, sources without
a root, missing images (map-style), soft masks asked of rows without std."""

from __future__ import annotations

import polars as pl
import pytest

torch = pytest.importorskip("torch")

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.images.resolver import ImageResolver, MissingImageError
from chexmask_u_tools.testing.images import demo_image_path, write_demo_images
from chexmask_u_tools.train.datasets import CheXmaskUDataset, CheXmaskUIterableDataset

DATASETS = [CheXmaskUDataset, CheXmaskUIterableDataset]


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    sample = cxu.load_sample()
    return pl.concat([sample.filter(pl.col("source") == s).head(2) for s in cxu.SOURCES])


@pytest.fixture(scope="module")
def roots(table, tmp_path_factory):
    return write_demo_images(table, tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("dataset", DATASETS)
def test_misspelt_roots_key_is_refused_with_the_closest_source(table, roots, dataset):
    chexpert = table.filter(pl.col("source") == "CheXpert")
    with pytest.raises(InputError, match=r"unknown source 'CheXpertt' in the image roots \(did you mean 'CheXpert'\?\)"):
        dataset(chexpert, {"CheXpertt": roots["CheXpert"]}, missing="skip")
    with pytest.raises(InputError, match="did you mean 'ChestX-ray8'"):
        ImageResolver({"ChestX-ray9": roots["ChestX-ray8"]})


@pytest.mark.parametrize("dataset", DATASETS)
def test_private_labels_must_be_in_the_table(table, roots, dataset, tmp_path):
    private = table.filter(pl.col("source") == "CheXpert").with_columns(pl.lit("our-hospital").alias("source"))
    folder = tmp_path / "ours"
    for image_id in private["image_id"]:
        target = folder / image_id
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((roots["CheXpert"] / demo_image_path("CheXpert", image_id)).read_bytes())
    assert len(list(dataset(private, {"our-hospital": folder}, size=16))) == 2
    with pytest.raises(InputError, match="'our-hospitl' is neither a source nor a source label.*did you mean 'our-hospital'"):
        dataset(private, {"our-hospitl": folder}, size=16, missing="skip")


@pytest.mark.parametrize("dataset", DATASETS)
def test_absent_root_is_named_at_construction(table, roots, dataset, tmp_path):
    absent = tmp_path / "no-such-folder"
    with pytest.raises(InputError, match=rf"image root for 'VinDr-CXR' does not exist: {absent}"):
        dataset(table, {**roots, "VinDr-CXR": absent}, missing="skip")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(InputError, match=r"image root is not a folder: .*file\.txt"):
        dataset(table, a_file, missing="masks_only")
    with pytest.raises(InputError, match="image root for 'padchest' does not exist"):
        ImageResolver({"padchest": [roots["Padchest"], absent]})


@pytest.mark.parametrize("dataset", DATASETS)
def test_sources_without_a_root_are_refused_under_missing_raise(table, roots, dataset):
    partial = {s: r for s, r in roots.items() if s not in ("Padchest", "VinDr-CXR")}
    with pytest.raises(InputError, match=r"no image root for the table's sources \['Padchest', 'VinDr-CXR'\].*missing='skip'"):
        dataset(table, partial)
    assert dataset(table, partial, missing="masks_only", size=16) is not None


def test_map_style_finds_missing_images_when_built_and_keeps_the_paths(table, roots, tmp_path):
    kept = CheXmaskUDataset(table, roots, size=16)
    assert kept.paths is not None and all(p is not None and p.is_file() for p in kept.paths)
    # A copy of the Padchest folder without one image.
    copy = tmp_path / "padchest"
    ids = table.filter(pl.col("source") == "Padchest")["image_id"].to_list()
    for image_id in ids[1:]:
        target = copy / demo_image_path("Padchest", image_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((roots["Padchest"] / demo_image_path("Padchest", image_id)).read_bytes())
    with pytest.raises(MissingImageError, match=r"1 of 10 rows have no image on disk \(Padchest: 1 of 2\)") as info:
        CheXmaskUDataset(table, {**roots, "Padchest": copy}, size=16)
    assert info.value.image_id == ids[0] and info.value.tried
    streamed = CheXmaskUIterableDataset(table, {**roots, "Padchest": copy}, size=16)  # roots only: built fine
    with pytest.raises(MissingImageError):
        list(streamed)


@pytest.mark.parametrize("masks", ["soft", "both"])
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("dataset", DATASETS)
def test_soft_masks_of_rows_without_std_need_consent(table, roots, tmp_path, dataset, lazy, masks):
    holes = table.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([1, 6])).then(None).otherwise(pl.col("landmarks_std")).alias("landmarks_std")
    )
    if lazy:
        holes.write_parquet(tmp_path / "holes.parquet")
        holes = pl.scan_parquet(tmp_path / "holes.parquet")
    with pytest.raises(InputError, match=rf"masks='{masks}' needs landmarks_std, but 2 of 10 rows have none.*soft_missing='hard'"):
        dataset(holes, roots, size=16, masks=masks)
    accepted = dataset(holes, roots, size=16, masks=masks, soft_missing="hard")
    soft_key = "masks" if masks == "soft" else "soft_masks"
    without = [s for s in accepted if not s["has_std"]]
    assert len(without) == 2 and all(set(s[soft_key].unique().tolist()) <= {0.0, 1.0} for s in without)
    assert len(dataset(holes, roots, size=16, masks="hard")) == 10  # hard masks need no std
    # No std column at all: every row counts.
    with pytest.raises(InputError, match="10 of 10 rows have none"):
        dataset(table.drop("landmarks_std"), roots, size=16, masks=masks)


def test_real_rows_without_std_refuse_soft_masks(real_tables):
    # whatever the files hold, these rows have no std (as the released parent CheXmask files)
    real = pl.concat([table for _, table in real_tables]).head(8).with_columns(pl.lit(None).alias("landmarks_std"))
    with pytest.raises(InputError, match="8 of 8 rows have none"):
        CheXmaskUDataset(real, None, size=32, missing="masks_only", masks="soft")
    soft = CheXmaskUDataset(real, None, size=32, missing="masks_only", masks="soft", soft_missing="hard")[0]
    assert not soft["has_std"] and set(soft["masks"].unique().tolist()) <= {0.0, 1.0}
