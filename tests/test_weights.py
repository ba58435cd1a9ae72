"""Weights: formulas in numpy and polars agree, ranks, clipping, node and pixel weights."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import chexmask_u_tools as cxu
from chexmask_u_tools.errors import InputError
from chexmask_u_tools.select.rules import apply_rules
from chexmask_u_tools.select.weights import SampleWeighting, band_pixel_weights, clip_weight, exp_weight, inverse_weight, node_weights, node_weights_expr, normalize_weight, rank_weight, sample_weights, soft_pixel_weights

sigma_arrays = arrays(np.float64, st.integers(1, 30), elements=st.floats(0, 60, allow_nan=False))


def test_formula_values():
    sigma = np.array([0.0, 4.0, 8.0, 16.0])
    np.testing.assert_allclose(exp_weight(sigma, 8.0), [1.0, np.exp(-0.5), np.exp(-1.0), np.exp(-2.0)])
    np.testing.assert_allclose(inverse_weight(sigma, 8.0), [8000.0, 2.0, 1.0, 0.5])
    np.testing.assert_allclose(inverse_weight(sigma, 8.0, power=2, eps=1.0), [64.0, 4.0, 1.0, 0.25])
    np.testing.assert_allclose(rank_weight(sigma, 0.1, 1.0), [1.0, 0.7, 0.4, 0.1])
    np.testing.assert_allclose(rank_weight(np.array([3.0, 1.0, 3.0]), 0.0, 1.0), [0.25, 1.0, 0.25])
    np.testing.assert_allclose(rank_weight(np.array([5.0])), [1.0])
    np.testing.assert_allclose(clip_weight(np.array([-1.0, 0.5, 3.0]), 0.1, 1.0), [0.1, 0.5, 1.0])
    np.testing.assert_allclose(normalize_weight(np.array([1.0, 3.0])), [0.5, 1.5])
    for bad in (lambda: exp_weight(sigma, 0.0), lambda: rank_weight(sigma, 0.5, 0.1), lambda: clip_weight(sigma, 2, 1)):
        with pytest.raises(InputError):
            bad()


@settings(max_examples=40, deadline=None)
@given(sigma=sigma_arrays, tau=st.floats(0.5, 30))
def test_numpy_and_polars_forms_agree(sigma, tau):
    series = pl.Series("s", sigma)
    frame = series.to_frame()
    for function in (
        lambda s: exp_weight(s, tau),
        lambda s: inverse_weight(s, tau, power=1.5),
        lambda s: rank_weight(s, 0.2, 0.9),
        lambda s: normalize_weight(clip_weight(exp_weight(s, tau), 0.05, 1.0)),
    ):
        expected = function(sigma)
        np.testing.assert_allclose(function(series).to_numpy(), expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(frame.select(function(pl.col("s"))).to_series().to_numpy(), expected, rtol=1e-9, atol=1e-12)
    ranked = rank_weight(sigma, 0.2, 0.9)
    assert ranked.min() >= 0.2 - 1e-12 and ranked.max() <= 0.9 + 1e-12
    order = np.argsort(sigma)
    assert np.all(np.diff(ranked[order]) <= 1e-12)  # larger sigma never gets a larger rank weight


def test_missing_values_stay_missing():
    sigma = np.array([1.0, np.nan, 3.0])
    assert np.isnan(exp_weight(sigma)[1]) and np.isnan(rank_weight(sigma)[1])
    np.testing.assert_allclose(rank_weight(sigma, 0.0, 1.0)[[0, 2]], [1.0, 0.0])
    series = pl.Series([1.0, None, 3.0])
    assert rank_weight(series, 0.0, 1.0).to_list() == [1.0, None, 0.0]


def test_sample_weights_from_table_and_rules():
    table = cxu.load_sample()
    sigma = table["node_sigma_mean"].to_numpy().astype(np.float64)
    weights = sample_weights(table, SampleWeighting("exp", tau=8.0, clip=(0.1, 1.0)))
    np.testing.assert_allclose(weights, np.clip(np.exp(-sigma / 8.0), 0.1, 1.0), rtol=1e-6)
    ranked = sample_weights(table, SampleWeighting("rank", clip=(0.2, 1.0)))
    assert ranked[np.argmin(sigma)] == pytest.approx(1.0) and ranked[np.argmax(sigma)] == pytest.approx(0.2)
    normalized = sample_weights(table, SampleWeighting("inverse", tau=6.0, clip=None, normalize=True))
    assert normalized.mean() == pytest.approx(1.0, rel=1e-5)
    ruled = apply_rules(table, ["image.mean<=8:weight=0.5"])
    plain = sample_weights(ruled, SampleWeighting("none"))
    np.testing.assert_allclose(plain, np.where(sigma > 8.0 + 1e-6, 0.5, 1.0))
    latent = sample_weights(table, SampleWeighting("exp", stat="latent_sigma_mean", tau=1.0, clip=None))
    np.testing.assert_allclose(latent, np.exp(-table["latent_sigma_mean"].to_numpy()), rtol=1e-6)
    holes = table.with_columns(pl.when(pl.int_range(pl.len()) < 4).then(None).otherwise(pl.col("node_sigma_mean")).alias("node_sigma_mean"))
    with pytest.raises(InputError, match="4 rows"):
        sample_weights(holes, SampleWeighting("exp"))
    filled = sample_weights(holes, SampleWeighting("exp", missing=0.0))
    assert (filled[:4] == 0).all() and (filled[4:] > 0).all()
    with pytest.raises(InputError, match="no_such"):
        sample_weights(table, SampleWeighting("exp", stat="no_such"))


def test_node_weights():
    std = np.zeros((2, 120, 2))
    std[0, :, 0] = 4.0
    std[0, :, 1] = 12.0  # sigma 8 everywhere
    std[1, :60] = 0.0
    std[1, 60:] = 8.0
    raw = node_weights(std, "inverse_variance", tau=8.0, normalize=False)
    assert raw.shape == (2, 120) and raw.dtype == np.float32
    np.testing.assert_allclose(raw[0], 0.5)
    np.testing.assert_allclose(raw[1, :60], 1.0)
    np.testing.assert_allclose(node_weights(std, "exp", tau=8.0, normalize=False)[1, 60:], np.exp(-1.0), rtol=1e-6)
    normalized = node_weights(std, tau=8.0)
    np.testing.assert_allclose(normalized.mean(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(node_weights(std[0].mean(-1)), node_weights(std[0]))  # (120,) sigmas accepted
    with pytest.raises(InputError):
        node_weights(np.zeros((119, 2)))
    table = cxu.load_sample()
    from_expr = np.stack(table.select(node_weights_expr("exp", tau=6.0, clip=(0.1, 1.0))).to_series().to_numpy())
    direct = node_weights(table["landmarks_std"].to_numpy(), "exp", tau=6.0, clip=(0.1, 1.0))
    np.testing.assert_allclose(from_expr, direct, rtol=1e-5)


def test_pixel_weights_numpy_and_torch():
    from chexmask_u_tools.masks.soft import pixel_weight_map, soft_mask

    soft = np.array([[[0.0, 0.25, 0.5, 1.0]], [[1.0, 1.0, 0.5, 0.0]], [[0.0, 0.0, 0.0, 0.0]]], dtype=np.float32)
    weights = soft_pixel_weights(soft, floor=0.2)
    assert weights.shape == soft.shape and weights.dtype == np.float32
    np.testing.assert_allclose(weights[0, 0], [1.0, 0.2 + 0.8 * 0.5, 0.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(soft_pixel_weights(soft, floor=0.0, power=2.0)[0, 0], 1 - 4 * soft[0, 0] * (1 - soft[0, 0]), atol=1e-6)
    np.testing.assert_allclose(soft_pixel_weights(soft, floor=0.0, reduce="min")[0], [1.0, 0.5, 0.0, 1.0])
    as_torch = soft_pixel_weights(torch.from_numpy(soft), floor=0.2, reduce="mean")
    np.testing.assert_allclose(as_torch.numpy(), weights.mean(0), rtol=1e-6)
    # Same formula as soft.pixel_weight_map, which draws the soft mask itself.
    square = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 30.0], [10.0, 30.0]])
    std = np.full((4, 2), 1.5)
    np.testing.assert_allclose(
        soft_pixel_weights(soft_mask(square, std, 40, 40), floor=0.3, power=0.5),
        pixel_weight_map(square, std, 40, 40, floor=0.3, power=0.5),
        atol=1e-6,
    )
    band = np.array([[True, False]])
    np.testing.assert_allclose(band_pixel_weights(band, 0.2), [[0.2, 1.0]])
    np.testing.assert_allclose(band_pixel_weights(torch.tensor(band), 0.2).numpy(), [[0.2, 1.0]])
    with pytest.raises(InputError):
        soft_pixel_weights(soft, floor=2.0)
    with pytest.raises(InputError):
        soft_pixel_weights(soft[0, 0], reduce="min")


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 17)),
           elements=st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.999, 1e-7, 0.7311])),
    st.floats(0, 1),
    st.sampled_from([1.0, 2.0, 0.5]),
    st.sampled_from([None, "min", "mean"]),
)
def test_pixel_weight_kernel_equals_the_numpy_formula(soft, floor, power, reduce):
    from chexmask_u_tools.select.weights import pixel_weights_method, soft_pixel_weights_reference

    assert pixel_weights_method(power) == "kernel"
    for maps in (soft, soft[0], soft.transpose(0, 1, 3, 2)):  # (B, C, H, W), (C, H, W), not C-contiguous
        got = soft_pixel_weights(maps, floor=floor, power=power, reduce=reduce)
        want = soft_pixel_weights_reference(maps, floor=floor, power=power, reduce=reduce)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        torch_got = soft_pixel_weights(torch.from_numpy(np.ascontiguousarray(maps)), floor=floor, power=power, reduce=reduce)
        np.testing.assert_allclose(torch_got.numpy(), want, rtol=1e-6, atol=1e-7)


def test_pixel_weight_dispatch_is_pinned():
    from chexmask_u_tools.select.weights import pixel_weights_method, soft_pixel_weights_reference

    # the kernel wins for powers 1, 2 and 0.5; numpy's vectorized pow wins otherwise (scripts/bench_soft.py)
    assert [pixel_weights_method(p) for p in (1.0, 2.0, 0.5, 1.5, 3.0)] == ["kernel"] * 3 + ["numpy"] * 2
    soft = np.random.default_rng(0).uniform(0, 1, (3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(soft_pixel_weights(soft, power=1.5), soft_pixel_weights_reference(soft, power=1.5))
    band = np.random.default_rng(1).uniform(size=(5, 7, 3)) < 0.4
    np.testing.assert_array_equal(band_pixel_weights(band, 0.3), np.where(band, np.float32(0.3), np.float32(1.0)))
    assert band_pixel_weights(band[:0], 0.3).shape == (0, 7, 3)
    with pytest.raises(InputError, match="reduce must be"):
        soft_pixel_weights(soft, reduce="max")
