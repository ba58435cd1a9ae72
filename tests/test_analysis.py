"""ROC-AUC, correlations and OOD scoring against hand-computed values."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexmask_u_tools import analysis
from chexmask_u_tools.testing import synthetic_xray
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.io.sample import load_sample


def brute_force_auc(labels, scores) -> float:
    """P(positive outscores negative) + 1/2 P(tie), over all pairs."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    total = 0.0
    pairs = list(itertools.product(scores[labels], scores[~labels]))
    for p, n in pairs:
        total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / len(pairs)


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # the classic example: 3 of 4 pairs ordered
        ([0, 0, 1, 1], [1, 2, 3, 4], 1.0),
        ([0, 0, 1, 1], [4, 3, 2, 1], 0.0),
        ([0, 1, 0, 1], [1, 1, 2, 2], 0.5),  # two ties (1/2 each) + one win + one loss over 4 pairs
        ([1, 0, 0], [5, 5, 1], 0.75),  # one tie, one win
        # positives 3, 1, 9 vs negatives 3, 3: two ties (1), two losses (0), two wins (2) -> 3 / 6
        ([True, False, False, True, True], [3, 3, 3, 1, 9], 3 / 6),
    ],
)
def test_roc_auc_hand_computed(labels, scores, expected):
    assert analysis.roc_auc(labels, scores) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=2, max_size=30))
def test_roc_auc_equals_pairwise_mann_whitney(pairs):
    labels = np.array([p[0] for p in pairs])
    scores = np.array([p[1] for p in pairs], dtype=float)
    if labels.all() or not labels.any() or scores.min() == scores.max():
        return
    auc = analysis.roc_auc(labels, scores)
    assert auc == pytest.approx(brute_force_auc(labels, scores))
    fpr, tpr = analysis.roc_curve(labels, scores)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1


def test_roc_auc_all_equal_scores_is_half_with_warning():
    with pytest.warns(UserWarning, match="all scores are equal"):
        assert analysis.roc_auc([0, 1, 1, 0], [2.0, 2.0, 2.0, 2.0]) == 0.5


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([], [], "empty"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        ([0, 0], [0.1, 0.2], "both classes"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "boolean"),
        ([0, 1], [0.1, 0.2, 0.3], "equal length"),
    ],
)
def test_roc_auc_bad_input(labels, scores, match):
    with pytest.raises(InputError, match=match):
        analysis.roc_auc(labels, scores)


def test_rankdata_average_ties():
    np.testing.assert_array_equal(analysis.rankdata(np.array([10, 20, 10, 30, 20, 20])), [1.5, 4, 1.5, 6, 4, 4])


def test_pearson_and_spearman_hand_computed():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 5.0])
    # Pearson: cov = 8/5... sum(dx*dy) = 8, sum(dx^2) = sum(dy^2) = 10 -> 0.8; ranks equal values -> also 0.8.
    assert analysis.pearson(x, y) == pytest.approx(0.8)
    assert analysis.spearman(x, y) == pytest.approx(0.8)
    # A monotone but non-linear relation: Spearman 1, Pearson below 1.
    assert analysis.spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert analysis.pearson(x, np.exp(x)) < 0.95
    # Ties: ranks [1.5, 1.5, 3, 4] vs [1, 2, 3, 4].
    expected = np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1]
    assert analysis.spearman([7, 7, 8, 9], [1, 2, 3, 4]) == pytest.approx(expected)
    with pytest.warns(UserWarning, match="constant"):
        assert np.isnan(analysis.pearson([1, 1, 1], [1, 2, 3]))


def test_node_error_vs_sigma():
    rng = np.random.default_rng(0)
    truth = rng.uniform(100, 900, size=(3, 120, 2))
    sigma = rng.uniform(1, 20, size=(3, 120, 1))
    std = np.repeat(sigma, 2, axis=-1)
    # Each node displaced along x by exactly its sigma: error == sigma, so both correlations are 1.
    pred = truth + np.concatenate([sigma, np.zeros_like(sigma)], axis=-1)
    result = analysis.node_error_vs_sigma(pred, std, truth)
    assert result.n == 360
    assert result.pearson == pytest.approx(1.0) and result.spearman == pytest.approx(1.0)
    # Errors shuffled across nodes: no relation left.
    shuffled = truth + rng.permutation(pred - truth, axis=1)
    assert abs(analysis.node_error_vs_sigma(shuffled, std, truth).pearson) < 0.3
    std_nan = std.copy()
    std_nan[0, 5] = np.nan
    with pytest.warns(UserWarning, match="left out 1 of 360"):
        assert analysis.node_error_vs_sigma(pred, std_nan, truth).n == 359
    with pytest.raises(InputError, match="share"):
        analysis.node_error_vs_sigma(pred, std[:, :60], truth)


def test_ood_scores_on_sample():
    table = load_sample()
    result = analysis.ood_scores(table)
    assert result["score"].to_list() == ["node_sigma_mean", "node_sigma_max", "latent_sigma_mean"]
    label = (table["dice_rca_max"] < 0.7).to_numpy()
    expected = analysis.roc_auc(label, table["node_sigma_mean"].to_numpy())
    assert result["auc"][0] == pytest.approx(expected, abs=1e-6)
    assert result["n"].to_list() == [200] * 3 and result["n_ood"][0] == int(label.sum())
    # The sample's hard rows have larger sigma and lower Dice: the scores must detect them.
    assert (result["auc"] > 0.8).all()
    custom = analysis.ood_scores(table, label=pl.col("dice_rca_mean") < 0.75, scores=["sigma_heart"])
    assert custom.height == 1 and 0 <= custom["auc"][0] <= 1


def test_ood_scores_bad_input():
    table = load_sample()
    with pytest.raises(InputError, match="empty"):
        analysis.ood_scores(table.clear())
    with pytest.raises(InputError, match="both classes"):
        analysis.ood_scores(table, threshold=0.0)
    with pytest.raises(InputError, match="lacks a column"):
        analysis.ood_scores(table, scores=["no_such_column"])
    # NaN / null sigmas are dropped and counted; a score without any value gets a null AUC.
    damaged = table.with_columns(
        pl.when(pl.int_range(pl.len()) < 10).then(float("nan")).otherwise(pl.col("node_sigma_mean")).alias("node_sigma_mean"),
        pl.lit(None, dtype=pl.Float32).alias("latent_sigma_mean"),
    )
    with pytest.warns(UserWarning, match="no finite value"):
        result = analysis.ood_scores(damaged, scores=["node_sigma_mean", "latent_sigma_mean"])
    assert result["n_dropped"].to_list() == [10, 200]
    assert result["auc"][1] is None


def test_synthetic_xray_shape_and_contrast():
    row = load_sample().row(0, named=True)
    landmarks = np.asarray(row["landmarks"], dtype=float) / 4
    image = synthetic_xray(landmarks, 256, 256, seed=1)
    assert image.shape == (256, 256) and image.dtype == np.uint8
    from chexmask_u_tools.masks.raster import label_map

    labels = label_map(landmarks, 256, 256)
    # Lungs darker than the heart.
    assert image[labels == 1].mean() + 40 < image[labels == 3].mean()
    np.testing.assert_array_equal(image, synthetic_xray(landmarks, 256, 256, seed=1))


def test_uncertainty_vs_corruption_small_model():
    torch = pytest.importorskip("torch")
    from chexmask_u_tools.model import HybridGNet

    torch.manual_seed(0)
    model = HybridGNet(input_size=64).eval()
    row = load_sample().row(0, named=True)
    landmarks = np.asarray(row["landmarks"], dtype=float) / 8
    image = synthetic_xray(landmarks, 128, 100, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = analysis.uncertainty_vs_corruption(model, [image], [0, 40], "noise", n_samples=4, seed=3)
    assert result.columns == ["image_id", "kind", "severity", "node_sigma_mean", "latent_sigma_mean"]
    assert result["severity"].to_list() == [0.0, 40.0]
    assert (result["node_sigma_mean"] > 0).all() and (result["latent_sigma_mean"] > 0).all()
    again = analysis.uncertainty_vs_corruption(model, [image], [0, 40], "noise", n_samples=4, seed=3)
    assert again.equals(result)
    # Occlusion of zero size and no-op severities agree with the clean measurement.
    occl = analysis.uncertainty_vs_corruption(
        model, [image], [0, 30], "occlusion", n_samples=4, seed=3, landmarks=[landmarks], occluded_nodes="heart"
    )
    assert occl["node_sigma_mean"][0] == pytest.approx(result["node_sigma_mean"][0])
    assert occl["node_sigma_mean"][1] != pytest.approx(occl["node_sigma_mean"][0])
    far = np.full((120, 2), -1000.0)
    with pytest.warns(UserWarning, match="no occlusion square falls on the image"):
        analysis.uncertainty_vs_corruption(model, [image], [0, 10], "occlusion", n_samples=2, landmarks=[far])
    with pytest.raises(InputError, match="unknown corruption"):
        analysis.uncertainty_vs_corruption(model, [image], [0], "rain")
    with pytest.raises(InputError, match="no images"):
        analysis.uncertainty_vs_corruption(model, [], [0], "noise")


@pytest.mark.slow
def test_cli_experiment_corruption(tmp_path, capsys):
    pytest.importorskip("torch")
    from PIL import Image

    from chexmask_u_tools.cli import main

    row = load_sample().row(0, named=True)
    landmarks = np.asarray(row["landmarks"], dtype=float) / 4
    Image.fromarray(synthetic_xray(landmarks, 256, 256)).save(tmp_path / "a.png")
    out = tmp_path / "res.csv"
    args = ["experiment", "corruption", str(tmp_path / "a.png"), "--weights", "random", "--severities", "0,80",
            "--samples", "2", "--out", str(out), "--plot", str(tmp_path / "box.png")]
    assert main(args) == 0
    assert "random weights" in capsys.readouterr().out
    result = pl.read_csv(out)
    assert result["severity"].to_list() == [0.0, 80.0] and result["image_id"].to_list() == ["a.png"] * 2
    assert (tmp_path / "box.png").stat().st_size > 1000
    assert main(args[:5] + ["--severities", "0,x", "--out", str(out)]) == 1


def test_cli_experiment_node_error(tmp_path, capsys):
    from chexmask_u_tools.cli import main

    table = load_sample()
    # Ground truth = predictions moved by each node's own sigma along x: error equals sigma exactly.
    sigma = np.stack(table["landmarks_std"].to_numpy()).mean(axis=-1)
    moved = np.stack(table["landmarks"].to_numpy()).astype(np.float64)
    moved[..., 0] += sigma
    truth = table.with_columns(pl.Series("landmarks", moved.astype(np.float32), dtype=table.schema["landmarks"]))
    truth.write_parquet(tmp_path / "truth.parquet")
    assert main(["experiment", "node-error", "sample", "--truth", str(tmp_path / "truth.parquet")]) == 0
    text = capsys.readouterr().out
    assert "200 images, 24000 nodes" in text and "Pearson r = 1.000" in text
