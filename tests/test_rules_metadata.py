"""Typed rule statistics, organ typos, and column / metadata rules composed with the uncertainty rules."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError, RecordError
from chexmask_u_tools.layout import ORGANS
from chexmask_u_tools.select.rules import (
    ColumnRule,
    DiceStat,
    ImageStat,
    LatentStat,
    NodeStat,
    OrganStat,
    Rule,
    apply_rules,
    check_rules,
    parse_rule,
    parse_statistic,
    rule_report,
)


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    """The sample with metadata columns shaped like ``cxu.attach_metadata``'s (views, ages, splits, labels)."""
    sample = cxu.load_sample()
    n = sample.height
    rng = np.random.default_rng(0)
    labels = rng.choice([1.0, 0.0, -1.0, np.nan], size=(n, 2))
    return sample.with_columns(
        pl.Series("view", rng.choice(["PA", "AP", "LATERAL"], n)),
        pl.Series("sex", rng.choice(["M", "F"], n)),
        pl.Series("age", rng.uniform(5, 90, n)),
        pl.Series("split", rng.choice(["train", "validate", "test"], n)),
        pl.Series("patient_id", [f"p{i // 3}" for i in range(n)]),
        pl.Series("label.Cardiomegaly", labels[:, 0], dtype=pl.Float32).fill_nan(None),
        pl.Series("label.Pleural Effusion", labels[:, 1], dtype=pl.Float32).fill_nan(None),
    )


@pytest.mark.parametrize(
    ("level", "stat", "organ", "expected"),
    [
        ("node", "all", None, NodeStat(None, None)),
        ("node", "frac0.05", "heart", NodeStat("heart", 0.05)),
        ("organ", "max", "left_lung", OrganStat("left_lung", "max")),
        ("image", "median", None, ImageStat("quantile", 0.5)),
        ("image", "q0.9", None, ImageStat("quantile", 0.9)),
        ("image", "max", None, ImageStat("max")),
        ("latent", "max", None, LatentStat("max")),
        ("dice", "max", None, DiceStat("max")),
    ],
)
def test_each_level_parses_its_statistic_once(level, stat, organ, expected):
    assert parse_statistic(level, stat, organ) == expected
    rule = Rule(level, 0.5, stat, organ=organ)
    assert rule.statistic == expected
    assert rule.needs == expected.needs


def test_statistic_knows_its_columns():
    assert Rule("dice", 0.7, "max").needs == "dice_rca_max"
    assert Rule("organ", 9, "mean", organ="heart").stored_column("heart") == "sigma_heart"
    assert Rule("organ", 9, "max", organ="heart").stored_column("heart") is None
    assert Rule("latent", 1.0).reads(["latent_sigma_mean"]) == "latent_sigma_mean"
    assert Rule("image", 8, "q0.5").reads(["node_sigma_mean"]) == "landmarks_std"


@pytest.mark.parametrize("text", ["organ.hart.mean<=9", "organ.hart<=9", "node.hart.frac0.1<=20:drop_organ", "node.hart<=9"])
def test_organ_typo_is_an_unknown_organ_with_a_suggestion(text):
    with pytest.raises(InputError, match=r"unknown organ 'hart' \(did you mean 'heart'\?\)"):
        parse_rule(text)


def test_a_bad_statistic_is_still_reported_as_one():
    with pytest.raises(InputError, match="organ rules take stat"):
        parse_rule("organ.heart.maen<=9")
    with pytest.raises(InputError, match="organ rules take stat"):
        parse_rule("organ.q0.9<=9")
    with pytest.raises(InputError, match="did you mean 'heart'"):
        Rule("organ", 9, organ="hart")


def test_metadata_rules_match_a_python_reference(table):
    rules = ["view in PA,AP", "age>=18", "split==train", "label.Cardiomegaly==1;missing=drop", "image.mean<=10"]
    got = apply_rules(table, rules)
    expected = [
        row["image_id"]
        for row in table.iter_rows(named=True)
        if row["view"] in ("PA", "AP")
        and row["age"] >= 18
        and row["split"] == "train"
        and row["label.Cardiomegaly"] == 1.0
        and row["node_sigma_mean"] <= 10
    ]
    assert got["image_id"].to_list() == expected
    assert 0 < len(expected) < table.height
    # Lazy gives the same rows, and the metadata comparisons run inside the parquet scan.
    assert apply_rules(table.lazy(), rules).collect().equals(got)


def test_metadata_rules_push_into_a_parquet_scan(table, tmp_path):
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    plan = apply_rules(pl.scan_parquet(path), ["view in PA,AP", "age>=18", "dice.mean>=0.7"]).explain()
    scan = plan[plan.index("Parquet SCAN") :]
    assert "SELECTION" in scan and "view" in scan and "age" in scan and "dice_rca_mean" in scan


def test_label_names_with_spaces_and_other_ops(table):
    rule = parse_rule("label.Pleural Effusion not in 1,-1;missing=keep")
    assert rule == ColumnRule("label.Pleural Effusion", "not in", (1.0, -1.0), missing="keep")
    assert parse_rule(str(rule)) == rule
    got = apply_rules(table, [rule])
    values = table["label.Pleural Effusion"].to_list()
    assert got.height == sum(v is None or v not in (1.0, -1.0) for v in values)
    weighted = apply_rules(table, ["sex==F:weight=0.5"])
    np.testing.assert_allclose(weighted["rule_weight"].to_numpy(), np.where(table["sex"] == "F", 1.0, 0.5))


def test_null_metadata_follows_the_missing_policy(table):
    with pytest.raises(RecordError, match=r"label.Cardiomegaly==1.0' needs label.Cardiomegaly, but \d+ of 200 rows have none"):
        apply_rules(table, ["label.Cardiomegaly==1"])
    nulls = table["label.Cardiomegaly"].null_count()
    keep = apply_rules(table, ["label.Cardiomegaly==1;missing=keep"]).height
    drop = apply_rules(table, ["label.Cardiomegaly==1;missing=drop"]).height
    assert keep - drop == nulls > 0


def test_a_missing_metadata_column_names_what_adds_it(table):
    bare = cxu.load_sample()
    for text, column in [("view in PA", "view"), ("age>=18;missing=keep", "age"), ("label.Cardiomegaly==1", "label.Cardiomegaly")]:
        with pytest.raises(InputError, match=column) as info:
            apply_rules(bare.lazy(), [text])
        assert "attach_metadata" in str(info.value) and "--metadata" in str(info.value)
        with pytest.raises(InputError, match="attach_metadata"):
            rule_report(bare, [text])
    with pytest.raises(InputError, match="did you mean 'label.Cardiomegaly'"):
        check_rules(table, ["label.Cardiomegally==1"])


@pytest.mark.parametrize(
    "text",
    ["veiw in PA", "view in PX", "view<=PA", "age>=old", "split in", "frame==sideways", "source in Chexpurt", "view==PA:drop_organ"],
)
def test_bad_column_rules_are_refused(text):
    with pytest.raises(InputError):
        parse_rule(text)


def test_column_values_are_normalised():
    assert parse_rule("source in chexpert,NIH") == ColumnRule("source", "in", ("CheXpert", "ChestX-ray8"))
    assert parse_rule("view==pa").values == ("PA",)
    with pytest.raises(InputError, match="did you mean 'view'"):
        parse_rule("veiw in PA")
    with pytest.raises(InputError, match="did you mean 'CheXpert'"):
        parse_rule("source==Chexpurt")


def test_other_rules_dropping_a_row_excuse_its_missing_data(table):
    no_std_elsewhere = table.with_columns(
        pl.when(pl.col("source") == "VinDr-CXR").then(None).otherwise(pl.col(c)).alias(c)
        for c in ("landmarks_std", "node_sigma_mean")
    )
    with pytest.raises(RecordError, match="40 of 200 rows"):
        apply_rules(no_std_elsewhere, ["image.mean<=8"])
    kept = apply_rules(no_std_elsewhere, ["source in CheXpert,Padchest", "image.mean<=8"])
    assert set(kept["source"]) <= {"CheXpert", "Padchest"} and kept.height > 0


@settings(max_examples=40, deadline=None)
@given(
    column=st.sampled_from(["view", "split", "sex", "age", "label.Cardiomegaly", "label.Pleural Effusion", "patient_id"]),
    op=st.sampled_from(["==", "!=", "in", "not in", "<=", ">"]),
    number=st.floats(-1, 120, allow_nan=False),
    count=st.integers(1, 3),
    action=st.sampled_from(["drop_image", "weight"]),
    weight=st.floats(0, 1),
    missing=st.sampled_from(["raise", "keep", "drop"]),
)
def test_column_rule_text_round_trips(column, op, number, count, action, weight, missing):
    numeric = column == "age" or column.startswith("label.")
    if op in ("<=", ">") and not numeric:
        op = "=="
    if numeric:
        values = tuple(number + i for i in range(count))
    else:
        values = tuple({"view": ["PA", "AP", "LL"], "split": ["train", "test", "val"]}.get(column, ["a1", "b2", "c3"])[:count])
    if op not in ("in", "not in"):
        values = values[:1]
    rule = ColumnRule(column, op, values, action=action, weight=weight, missing=missing)
    assert parse_rule(str(rule)) == rule


def test_every_organ_rule_reads_per_organ(table):
    out = apply_rules(table, ["organ.mean<=9:drop_organ", "view in PA,AP"])
    assert set(out["view"]) <= {"PA", "AP"}
    for organ in ORGANS:
        assert out[f"mask_valid_{organ}"].to_list() == (out[f"sigma_{organ}"] <= 9).to_list()
