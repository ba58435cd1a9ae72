"""Rules: each level and action against numpy recomputations, lazy scans, missing data, text form."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError, RecordError
from chexmask_u_tools.layout import ORGAN_SLICES, ORGANS
from chexmask_u_tools.select.rules import Rule, apply_rules, dice_rule, image_rule, latent_rule, mask_valid_columns, node_rule, organ_rule, parse_rule, rule_report


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return cxu.load_sample()


@pytest.fixture(scope="module")
def sigmas(table) -> np.ndarray:
    """(N, 120) node sigmas recomputed in numpy."""
    return table["landmarks_std"].to_numpy().astype(np.float64).mean(axis=-1)


def _ids(frame: pl.DataFrame) -> list[str]:
    return frame["image_id"].to_list()


def test_image_rules_drop_the_right_rows(table, sigmas):
    ids = np.array(_ids(table))
    for stat, values in [
        ("mean", sigmas.mean(1)),
        ("max", sigmas.max(1)),
        ("q0.9", np.quantile(sigmas, 0.9, axis=1)),
        ("median", np.median(sigmas, axis=1)),
    ]:
        threshold = float(np.median(values))
        kept = apply_rules(table, [image_rule(threshold, stat=stat)])
        expected = ids[values <= threshold + 1e-4]
        assert 0 < kept.height < table.height
        assert sorted(_ids(kept)) == sorted(expected), stat


def test_image_rule_reads_raw_std_when_summaries_are_absent(table):
    bare = table.drop("node_sigma_mean", "node_sigma_max")
    rule = image_rule(8.0)
    assert rule.reads(bare.columns) == "landmarks_std"
    assert rule.reads(table.columns) == "node_sigma_mean"
    assert _ids(apply_rules(bare, [rule])) == _ids(apply_rules(table, [rule]))


def test_latent_and_dice_rules(table):
    latent = table["latent_sigma"].to_numpy().astype(np.float64)
    threshold = float(np.median(latent.mean(1)))
    kept = apply_rules(table, [latent_rule(threshold)])
    assert kept.height == int((latent.mean(1) <= threshold + 1e-6).sum())
    kept_max = apply_rules(table, [latent_rule(float(np.median(latent.max(1))), stat="max")])
    assert kept_max.height == int((latent.max(1) <= float(np.median(latent.max(1)))).sum())
    dice = table["dice_rca_mean"].to_numpy()
    kept = apply_rules(table, [dice_rule(0.8)])
    assert kept.height == int((dice >= 0.8).sum())
    strict = apply_rules(table, [Rule("dice", float(dice[0]), op=">")])
    assert table["image_id"][0] not in _ids(strict)


def test_organ_rule_drop_organ_marks_masks_missing(table, sigmas):
    heart = sigmas[:, ORGAN_SLICES["heart"]].mean(1)
    out = apply_rules(table, [organ_rule(10.0, organ="heart")])
    assert out.height == table.height
    np.testing.assert_array_equal(out["mask_valid_heart"].to_numpy(), heart <= 10.0)
    assert out["mask_valid_right_lung"].all() and out["mask_valid_left_lung"].all()
    # Without an organ every organ is judged on its own nodes.
    out = apply_rules(table, [organ_rule(9.0, stat="max")])
    for organ in ORGANS:
        expected = sigmas[:, ORGAN_SLICES[organ]].max(1) <= 9.0
        np.testing.assert_array_equal(out[mask_valid_columns()[organ]].to_numpy(), expected)


def test_node_rules_all_and_fraction(table, sigmas):
    lung = sigmas[:, ORGAN_SLICES["left_lung"]]
    out = apply_rules(table, [node_rule(20.0, organ="left_lung", action="drop_organ")])
    np.testing.assert_array_equal(out["mask_valid_left_lung"].to_numpy(), (lung <= 20.0).all(1))
    out = apply_rules(table, [node_rule(15.0, organ="left_lung", fraction=0.1, action="drop_organ")])
    np.testing.assert_array_equal(out["mask_valid_left_lung"].to_numpy(), (lung > 15.0).mean(1) <= 0.1)
    kept = apply_rules(table, [node_rule(25.0)])
    assert kept.height == int((sigmas <= 25.0).all(1).sum())


def test_weight_action_and_composition(table, sigmas):
    rules = [image_rule(8.0, action="weight", weight=0.25), dice_rule(0.8, action="weight", weight=0.5)]
    out = apply_rules(table, rules)
    fail_sigma = sigmas.mean(1) > 8.0 + 1e-6
    fail_dice = table["dice_rca_mean"].to_numpy() < 0.8
    expected = np.where(fail_sigma, 0.25, 1.0) * np.where(fail_dice, 0.5, 1.0)
    np.testing.assert_allclose(out["rule_weight"].to_numpy(), expected, rtol=1e-6)
    # Applying rules one after the other equals applying them together.
    rules = ["dice.mean>=0.75", "organ.heart.mean<=9:drop_organ", "image.max<=40:weight=0.5", "node.heart<=30:drop_organ"]
    together = apply_rules(table, rules)
    stepwise = table
    for rule in rules:
        stepwise = apply_rules(stepwise, [rule])
    assert together.equals(stepwise)


def test_lazy_scan_matches_eager_and_pushes_down(table, tmp_path):
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    rules = ["image.mean<=9", "dice.mean>=0.7", "image.q0.75<=14", "organ.left_lung.mean<=9:drop_organ"]
    lazy = apply_rules(pl.scan_parquet(path), rules)
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect().equals(apply_rules(table, rules))
    plan = apply_rules(pl.scan_parquet(path), ["image.mean<=9", "dice.mean>=0.7"]).explain()
    scan = plan[plan.index("Parquet SCAN"):]
    assert "SELECTION" in scan and "node_sigma_mean" in scan and "dice_rca_mean" in scan


def test_null_std_raises_naming_the_rule(table):
    no_std = table.with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("landmarks_std", "node_sigma_mean", "node_sigma_max", "sigma_right_lung", "sigma_left_lung", "sigma_heart")
    )
    for rule in ["image.mean<=8", "image.q0.9<=8", "organ.heart.mean<=8:drop_organ", "node<=20"]:
        with pytest.raises(RecordError) as info:
            apply_rules(no_std.lazy(), [rule])
        message = str(info.value)
        assert parse_rule(rule).name in message and "67 of 200 rows" in message
        assert info.value.image_id == no_std["image_id"][0]
    keep = apply_rules(no_std, ["image.mean<=8;missing=keep"])
    drop = apply_rules(no_std, ["image.mean<=8;missing=drop"])
    assert keep.height - drop.height == 67
    # Rules that do not read std are unaffected.
    assert apply_rules(no_std, ["dice.mean>=0.7"]).height == apply_rules(table, ["dice.mean>=0.7"]).height
    no_latent = table.with_columns(pl.lit(None, dtype=table.schema["latent_sigma"]).alias("latent_sigma"),
                                   pl.lit(None, dtype=pl.Float32).alias("latent_sigma_mean"))
    with pytest.raises(RecordError, match="latent.mean"):
        apply_rules(no_latent, [latent_rule(1.0)])


def test_rule_report_counts(table, sigmas):
    report = rule_report(table, ["image.mean<=8", "organ.heart.mean<=10:drop_organ"])
    assert report["rows"].to_list() == [200, 200]
    assert report["failed"][0] == int((sigmas.mean(1) > 8.0 + 1e-6).sum())
    assert report["failed"][1] == int((sigmas[:, ORGAN_SLICES["heart"]].mean(1) > 10.0 + 1e-6).sum())
    assert report["missing"].to_list() == [0, 0]


@pytest.mark.parametrize(
    "text",
    [
        "image.mean",
        "image.mean<=abc",
        "image.mean>=8",
        "dice.mean<=0.7",
        "latent.heart.mean<=1",
        "image.mean<=8:drop_organ",
        "image.q1.5<=8",
        "blob.mean<=3",
        "image.mean<=8:weight=2",
        "image.mean<=8:drop_image=0.2",
        "image.mean<=8;missing=maybe",
        "image.mean<=inf",
    ],
)
def test_bad_rules_are_refused(text):
    with pytest.raises(InputError):
        parse_rule(text)


@settings(max_examples=60, deadline=None)
@given(
    level=st.sampled_from(["node", "organ", "image", "latent", "dice"]),
    threshold=st.floats(0, 1000, allow_nan=False),
    organ=st.sampled_from([None, *ORGANS]),
    action=st.sampled_from(["drop_image", "drop_organ", "weight"]),
    weight=st.floats(0, 1),
    missing=st.sampled_from(["raise", "keep", "drop"]),
    q=st.floats(0, 1),
)
def test_text_form_round_trips(level, threshold, organ, action, weight, missing, q):
    stat = {"node": f"frac{q!r}" if q > 0.5 else "all", "organ": "max", "image": f"q{q!r}", "latent": "mean", "dice": "max"}[level]
    organ = organ if level in ("node", "organ") else None
    action = action if level in ("node", "organ") else action.replace("drop_organ", "weight")
    rule = Rule(level, threshold, stat, organ=organ, action=action, weight=weight, missing=missing)
    assert parse_rule(str(rule)) == rule
