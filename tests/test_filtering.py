"""Named filters: semantics (inclusive thresholds, nulls removed), pushdown, and the per-criterion report."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.select.filtering import apply_filters, filter_criteria, filter_report
from chexmask_u_tools.io.sample import load_sample


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    sample = load_sample()
    # Rows without std / latents / Dice (as in the parent CheXmask variant) must be removed by thresholds on them.
    blank = sample.head(6).with_columns(
        pl.lit(None, dtype=sample.schema["landmarks_std"]).alias("landmarks_std"),
        pl.lit(None, dtype=pl.Float32).alias("node_sigma_mean"),
        pl.lit(None, dtype=pl.Float32).alias("node_sigma_max"),
        pl.lit(None, dtype=pl.Float32).alias("sigma_heart"),
        pl.lit(None, dtype=pl.Float32).alias("latent_sigma_mean"),
        pl.lit(None, dtype=pl.Float64).alias("dice_rca_mean"),
        pl.concat_str(pl.col("image_id"), pl.lit("-blank")).alias("image_id"),
    )
    return pl.concat([sample, blank])


def python_keep(row: dict, **criteria) -> bool:
    """The filter written row by row in plain Python: the reference for apply_filters."""

    def at_least(value, bound):
        return bound is None or (value is not None and not math.isnan(value) and value >= bound)

    def at_most(value, bound):
        return bound is None or (value is not None and not math.isnan(value) and value <= bound)

    organ = criteria.get("max_organ_sigma")
    organ_bounds = organ if isinstance(organ, dict) else dict.fromkeys(["right_lung", "left_lung", "heart"], organ)
    return (
        (criteria.get("sources") is None or row["source"] in criteria["sources"])
        and at_least(row["dice_rca_mean"], criteria.get("min_dice_rca_mean"))
        and at_least(row["dice_rca_max"], criteria.get("min_dice_rca_max"))
        and at_most(row["node_sigma_mean"], criteria.get("max_node_sigma_mean"))
        and at_most(row["node_sigma_max"], criteria.get("max_node_sigma_max"))
        and all(at_most(row[f"sigma_{o}"], b) for o, b in organ_bounds.items())
        and at_most(row["latent_sigma_mean"], criteria.get("max_latent_sigma_mean"))
        and (criteria.get("image_ids") is None or row["image_id"] in criteria["image_ids"])
    )


def test_criteria_names_and_order():
    names = list(
        filter_criteria(
            image_ids=["a"],
            max_latent_sigma_mean=1.0,
            max_organ_sigma={"heart": 9.0, "left_lung": 8.0},
            min_dice_rca_mean=0.7,
            sources="mimic",
            frames="preprocessed",
        )
    )
    assert names == [
        "sources",
        "frames",
        "min_dice_rca_mean",
        "max_organ_sigma[heart]",
        "max_organ_sigma[left_lung]",
        "max_latent_sigma_mean",
        "image_ids",
    ]
    assert filter_criteria() == {}


@settings(max_examples=30, deadline=None)
@given(
    dice=st.one_of(st.none(), st.floats(0.5, 1.0)),
    sigma=st.one_of(st.none(), st.floats(3.0, 20.0)),
    sigma_max=st.one_of(st.none(), st.floats(5.0, 40.0)),
    organ=st.one_of(st.none(), st.floats(3.0, 20.0), st.fixed_dictionaries({"heart": st.floats(3.0, 20.0)})),
    latent=st.one_of(st.none(), st.floats(0.85, 1.0)),
    sources=st.one_of(st.none(), st.sets(st.sampled_from(["CheXpert", "Padchest", "VinDr-CXR"]), min_size=1)),
)
def test_apply_filters_matches_row_by_row_python(table, dice, sigma, sigma_max, organ, latent, sources):
    criteria = dict(
        min_dice_rca_mean=dice,
        max_node_sigma_mean=sigma,
        max_node_sigma_max=sigma_max,
        max_organ_sigma=organ,
        max_latent_sigma_mean=latent,
        sources=sorted(sources) if sources else None,
    )
    got = apply_filters(table.lazy(), missing="drop", **criteria).collect()
    expected = [row["image_id"] for row in table.iter_rows(named=True) if python_keep(row, **criteria)]
    assert got["image_id"].to_list() == expected
    report = filter_report(table, missing="drop", **criteria)
    assert report["remaining"][-1] == len(expected)
    assert report["removed"].sum() == table.height - len(expected)


def test_thresholds_are_inclusive_and_nulls_removed(table):
    value = float(table["dice_rca_mean"].drop_nulls().sort()[10])
    kept = apply_filters(table, min_dice_rca_mean=value, missing="drop")
    assert kept["dice_rca_mean"].min() == value
    assert kept.height == int((table["dice_rca_mean"] >= value).sum())
    assert not apply_filters(table, max_node_sigma_mean=1e9, missing="drop")["image_id"].str.ends_with("-blank").any()


def test_report_counts_sequential_and_alone(table):
    criteria = dict(sources=["CheXpert", "Padchest"], min_dice_rca_mean=0.7, max_node_sigma_mean=9.0, missing="drop")
    report = filter_report(table.lazy(), **criteria)
    assert report["criterion"].to_list() == ["(input)", "sources", "min_dice_rca_mean", "max_node_sigma_mean"]
    assert report["remaining"][0] == table.height
    in_sources = table["source"].is_in(["CheXpert", "Padchest"])
    good_dice = (table["dice_rca_mean"] >= 0.7).fill_null(False)
    good_sigma = (table["node_sigma_mean"] <= 9.0).fill_null(False)
    assert report["removed_alone"].to_list()[1:] == [
        int((~in_sources).sum()),
        int((~good_dice).sum()),
        int((~good_sigma).sum()),
    ]
    assert report["removed"].to_list()[1:] == [
        int((~in_sources).sum()),
        int((in_sources & ~good_dice).sum()),
        int((in_sources & good_dice & ~good_sigma).sum()),
    ]
    assert report["remaining"][-1] == apply_filters(table, **criteria).height


def test_image_ids_and_frames(table):
    ids = table["image_id"].head(3).to_list()
    assert apply_filters(table, image_ids=ids)["image_id"].to_list() == ids
    assert apply_filters(table, image_ids=ids[0])["image_id"].to_list() == ids[:1]
    assert apply_filters(table, frames="original").height == 0


def test_filters_are_pushed_into_a_parquet_scan(tmp_path, table):
    table.write_parquet(tmp_path / "t.parquet", row_group_size=50)
    plan = apply_filters(pl.scan_parquet(tmp_path / "t.parquet"), max_node_sigma_mean=8.0, sources="vindr").explain()
    scan_part = plan[plan.index("SCAN") :]
    assert "SELECTION" in scan_part and "node_sigma_mean" in scan_part and "source" in scan_part


@pytest.mark.parametrize(
    "criteria",
    [
        {"sources": ["nowhere"]},
        {"frames": ["sideways"]},
        {"max_organ_sigma": {"lung": 3.0}},
        {"max_node_sigma_mean": float("nan")},
        {"min_dice_rca_mean": "high"},
    ],
)
def test_bad_criteria_are_input_errors(criteria):
    with pytest.raises(InputError):
        filter_criteria(**criteria)
