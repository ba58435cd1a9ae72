"""Named filters: semantics (inclusive thresholds, nulls removed), pushdown, and the per-criterion report."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexmask_u_tools.errors import InputError, RecordError
from chexmask_u_tools.select.filtering import apply_filters, filter_criteria, filter_report, filter_rules
from chexmask_u_tools.select.rules import apply_rules, rule_report
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
@pytest.mark.slow
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


# --------------------------------------------------------------------------- one vocabulary, explicit missing data

KEYWORD_RULES = [
    ({"sources": ["chexpert", "NIH"]}, "source in CheXpert,ChestX-ray8"),
    ({"frames": "preprocessed"}, "frame==preprocessed"),
    ({"min_dice_rca_mean": 0.8}, "dice.mean>=0.8"),
    ({"min_dice_rca_max": 0.85}, "dice.max>=0.85"),
    ({"max_node_sigma_mean": 8.0}, "image.mean<=8"),
    ({"max_node_sigma_max": 30.0}, "image.max<=30"),
    ({"max_organ_sigma": {"heart": 9.0}}, "organ.heart.mean<=9"),
    ({"max_latent_sigma_mean": 0.93}, "latent.mean<=0.93"),
]


@pytest.mark.parametrize(("criteria", "rule"), KEYWORD_RULES)
def test_each_keyword_is_the_rule_of_the_same_criterion(criteria, rule):
    sample = load_sample()
    got = apply_filters(sample, **criteria)
    expected = apply_rules(sample, [rule]).select(sample.columns)
    assert got.equals(expected)
    assert 0 < got.height <= sample.height
    report = filter_report(sample, **criteria)
    assert report["removed_alone"][-1] == rule_report(sample, [rule])["failed"][0]


def test_rules_argument_composes_with_keywords():
    sample = load_sample()
    got = apply_filters(sample, rules=["dice.max>=0.85", "image.q0.9<=14"], sources=["CheXpert", "Padchest"])
    expected = apply_rules(sample, ["source in CheXpert,Padchest", "dice.max>=0.85", "image.q0.9<=14"]).select(sample.columns)
    assert got.equals(expected) and got.height > 0
    report = filter_report(sample, rules=["dice.max>=0.85"], sources=["CheXpert", "Padchest"])
    assert report["criterion"].to_list() == ["(input)", "sources", "dice.max>=0.85"]
    with pytest.raises(InputError, match="apply_rules"):
        apply_filters(sample, rules=["organ.heart.mean<=9:drop_organ"])


def test_filters_on_rows_without_std_raise_instead_of_returning_nothing():
    parent = load_sample().head(56).with_columns(
        pl.lit(None, dtype=pl.Array(pl.Float32, (120, 2))).alias("landmarks_std"),
        *(pl.lit(None, dtype=pl.Float32).alias(c) for c in ("node_sigma_mean", "node_sigma_max", "sigma_right_lung",
                                                             "sigma_left_lung", "sigma_heart")),
    )
    for criteria in [{"max_node_sigma_mean": 8}, {"max_node_sigma_max": 30}, {"max_organ_sigma": 9.0}]:
        with pytest.raises(RecordError, match="needs landmarks_std, but 56 of 56 rows have none") as info:
            apply_filters(parent.lazy(), **criteria)
        assert "missing='drop'" in str(info.value)
        with pytest.raises(RecordError):
            filter_report(parent, **criteria)
    assert apply_filters(parent, max_node_sigma_mean=8, missing="keep").height == 56
    assert apply_filters(parent, max_node_sigma_mean=8, missing="drop").height == 0
    # A criterion that removes those rows anyway excuses them.
    padchest = load_sample().filter(pl.col("source") == "Padchest")
    mixed = pl.concat([parent, padchest])
    assert apply_filters(mixed, max_node_sigma_mean=8, sources="padchest").equals(apply_filters(padchest, max_node_sigma_mean=8))


@pytest.mark.parametrize(
    ("keyword", "suggestion"),
    [("max_node_sigma", "max_node_sigma_mean"), ("min_dice", "min_dice_rca_mean"), ("max_latent_sigm", "max_latent_sigma_mean")],
)
def test_unknown_keyword_suggests_the_closest(keyword, suggestion):
    sample = load_sample()
    for function in (apply_filters, filter_report):
        with pytest.raises(InputError, match=f"unknown filter criterion '{keyword}' \\(did you mean '{suggestion}'\\?\\)"):
            function(sample, **{keyword: 8})
    with pytest.raises(InputError, match=suggestion):
        filter_criteria(**{keyword: 8})


def test_criteria_expressions_read_the_stored_summaries():
    plan = pl.LazyFrame(schema=load_sample().schema).filter(filter_criteria(max_organ_sigma={"heart": 9})["max_organ_sigma[heart]"])
    assert "sigma_heart" in plan.explain() and "landmarks_std" not in plan.explain()
    with pytest.raises(InputError, match="image_ids is empty"):
        filter_rules(image_ids=[])
    assert str(filter_rules(image_ids=["a", "b"])["image_ids"]) == "image_id in a,b"
