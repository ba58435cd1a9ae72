from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chexmask_u_tools.errors import InputError
from chexmask_u_tools.masks.frames import convert_table_frame, frame_scale, std_to_original_frame, std_to_preprocessed_frame, to_original_frame, to_preprocessed_frame
from chexmask_u_tools.schema import CANONICAL_SCHEMA


def test_frame_scale_portrait_and_landscape():
    # 2500 rows x 2000 cols: s = 1024/2500, width maps to round(819.2) = 819 -> pad (1024-819)//2
    s, pad_left, pad_top = frame_scale(2500, 2000)
    assert s == pytest.approx(0.4096)
    assert (pad_left, pad_top) == (102, 0)
    s, pad_left, pad_top = frame_scale(2000, 2500)
    assert (pad_left, pad_top) == (0, 102)
    assert frame_scale(1024, 1024)[1:] == (0, 0)


def test_round_half_to_even_in_padding():
    # width 1023 at s = 0.5 gives 511.5 -> 512 (half to even) -> pad (1024-512)//2 = 256
    assert frame_scale(2048, 1023)[1] == 256


def test_known_point_and_rounding_clipping():
    # s = 0.4096, pad_left = 102: x = (102 + 0.4096*100 - 102)/s = 100
    pts = np.array([[102 + 40.96, 5.0], [0.0, 2000.0], [-50.0, -3.0]])
    out = to_original_frame(pts, 2500, 2000)
    assert out[0].tolist() == [100.0, round(5 / 0.4096)]
    assert out[1].tolist() == [0.0, 2499.0]  # clipped to [0, w-1] x [0, h-1]
    assert out[2].tolist() == [0.0, 0.0]
    raw = to_original_frame(pts, 2500, 2000, round_clip=False)
    assert raw[2, 0] == pytest.approx((-50 - 102) / 0.4096)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(16, 5000),
    w=st.integers(16, 5000),
    pts=st.lists(st.tuples(st.floats(-50, 1100), st.floats(-50, 1100)), min_size=1, max_size=20),
)
def test_round_trip_points_and_std(h, w, pts):
    p = np.array(pts)
    back = to_preprocessed_frame(to_original_frame(p, h, w, round_clip=False), h, w)
    np.testing.assert_allclose(back, p, atol=1e-9)
    std = np.abs(p) / 10
    np.testing.assert_allclose(std_to_preprocessed_frame(std_to_original_frame(std, h, w), h, w), std, rtol=1e-12, atol=1e-12)
    # rounded points stay within half an original pixel of the exact mapping (inside the image)
    exact = to_original_frame(p, h, w, round_clip=False)
    rounded = to_original_frame(p, h, w)
    inside = (exact[:, 0] >= 0) & (exact[:, 0] <= w - 1) & (exact[:, 1] >= 0) & (exact[:, 1] <= h - 1)
    assert np.all(np.abs(rounded - exact)[inside] <= 0.5)


def test_broadcast_over_rows():
    p = np.random.default_rng(0).uniform(0, 1024, (3, 120, 2))
    h = np.array([2000, 3000, 1024])
    w = np.array([2500, 2000, 1024])
    batch = to_original_frame(p, h, w, round_clip=False)
    for i in range(3):
        np.testing.assert_allclose(batch[i], to_original_frame(p[i], h[i], w[i], round_clip=False))
    std = np.ones((3, 120, 2))
    np.testing.assert_allclose(std_to_original_frame(std, h, w)[:, 0, 0], 1 / frame_scale(h, w)[0])
    np.testing.assert_allclose(std_to_original_frame(np.ones((3, 120)), h, w)[:, 0], 1 / frame_scale(h, w)[0])


@pytest.mark.parametrize(
    "call",
    [
        lambda: frame_scale(0, 10),
        lambda: frame_scale(10, -1),
        lambda: frame_scale(10.5, 10),
        lambda: to_original_frame(np.zeros((3, 3)), 10, 10),
        lambda: to_original_frame(np.full((2, 2), np.nan), 10, 10),
        lambda: std_to_original_frame(-np.ones(3), 10, 10),
        lambda: to_original_frame(np.zeros((2, 2)), np.ones((2, 2, 2, 2)), 10),
    ],
)
def test_bad_input(call):
    with pytest.raises(InputError):
        call()


def _table(frames, heights, widths, rng):
    n = len(frames)
    lm = rng.uniform(100, 900, (n, 120, 2)).astype(np.float32)
    std = rng.uniform(1, 8, (n, 120, 2)).astype(np.float32)
    data = {c: [None] * n for c in CANONICAL_SCHEMA}
    data.update(
        source=["MIMIC-CXR-JPG"] * n,
        image_id=[f"id{i}" for i in range(n)],
        frame=frames,
        height=heights,
        width=widths,
        landmarks=list(lm),
        landmarks_std=list(std),
        rle_right_lung=["1 3"] * n,
        node_sigma_mean=list(std.mean(axis=(1, 2))),
    )
    return pl.DataFrame(data, schema=CANONICAL_SCHEMA), lm, std


def test_convert_table_frame_round_trip():
    rng = np.random.default_rng(1)
    df, lm, std = _table(["preprocessed", "preprocessed"], [2500, 3000], [2000, 2400], rng)
    orig = convert_table_frame(df, "original", round_clip=False)
    assert orig["frame"].to_list() == ["original", "original"]
    assert orig["height"].to_list() == [2500, 3000]
    assert orig["rle_right_lung"].null_count() == 2  # masks of the old frame are dropped
    s = frame_scale(np.array([2500, 3000]), np.array([2000, 2400]))[0]
    np.testing.assert_allclose(orig["landmarks_std"].to_numpy(), std / s[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(orig["node_sigma_mean"].to_numpy(), std.mean(axis=(1, 2)) / s, rtol=1e-5)
    back = convert_table_frame(orig, "preprocessed")
    np.testing.assert_allclose(back["landmarks"].to_numpy(), lm, atol=1e-3)
    np.testing.assert_allclose(back["landmarks_std"].to_numpy(), std, rtol=1e-5)
    assert back.schema == df.schema
    # rows already in the target frame are untouched
    assert convert_table_frame(df, "preprocessed").equals(df)


def test_convert_table_frame_requires_original_size():
    rng = np.random.default_rng(2)
    df, lm, _ = _table(["preprocessed", "original"], [1024, 3000], [1024, 2400], rng)
    with pytest.raises(InputError, match="original_height"):
        convert_table_frame(df, "original")
    out = convert_table_frame(df, "original", original_height=[2000, 0], original_width=[2000, 0])
    assert out["height"].to_list() == [2000, 3000]
    # the original row kept its landmarks, the preprocessed one was mapped and rounded
    np.testing.assert_array_equal(out["landmarks"].to_numpy()[1], lm[1])
    mapped = out["landmarks"].to_numpy()[0]
    np.testing.assert_array_equal(mapped, np.round(mapped))
    with pytest.raises(InputError):
        convert_table_frame(df, "sideways")
    with pytest.raises(InputError):
        convert_table_frame(df, "original", original_height=2000)
