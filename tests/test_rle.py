from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import chexmask_u_tools as cxu


def reference_decode(rle: str, height: int, width: int) -> np.ndarray:
    """The dataset's convention written the obvious way: 1-based starts, row-major runs."""
    mask = np.zeros(height * width, dtype=bool)
    values = [int(v) for v in rle.split()]
    for start, length in zip(values[::2], values[1::2]):
        mask[start - 1 : start - 1 + length] = True
    return mask.reshape(height, width)


def test_convention_is_one_based_row_major():
    mask = cxu.rle_decode("1 2 7 3", 3, 4)
    expected = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(mask, expected)
    assert cxu.rle_encode(expected) == "1 2 7 3"


@pytest.mark.parametrize("empty", [None, "", "   ", float("nan")])
def test_missing_decodes_to_empty(empty):
    mask = cxu.rle_decode(empty, 4, 5)
    assert mask.shape == (4, 5) and mask.dtype == bool and not mask.any()


def test_empty_mask_encodes_to_empty_string():
    assert cxu.rle_encode(np.zeros((3, 3))) == ""


def test_full_mask():
    assert cxu.rle_encode(np.ones((2, 3))) == "1 6"
    assert cxu.rle_decode("1 6", 2, 3).all()


@pytest.mark.parametrize(
    "rle, message",
    [
        ("1 2 x", "non-integer"),
        ("1 2.5", "non-integer"),
        ("1 2 3", "odd number"),
        ("0 5", "start 0 is below 1"),
        ("1 -2", "below 1"),
        ("3 0", "below 1"),
        ("5 3 6 1", "overlap"),
        ("8 2 1 1", "overlap or are not in increasing order"),
        ("11 3", "past the mask"),
    ],
)
def test_malformed_rle_raises(rle, message):
    with pytest.raises(cxu.RLEError, match=message):
        cxu.rle_decode(rle, 3, 4)


@pytest.mark.parametrize("size", [(0, 4), (3, -1), ("a", 2), (3.5, 4), (True, 4)])
def test_bad_size_raises(size):
    with pytest.raises(cxu.InputError):
        cxu.rle_decode("1 1", *size)


def test_encode_rejects_non_2d():
    with pytest.raises(cxu.InputError):
        cxu.rle_encode(np.zeros((2, 2, 2)))


masks = arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40)))


@settings(max_examples=150, deadline=None)
@given(masks)
def test_round_trip_mask(mask):
    rle = cxu.rle_encode(mask)
    np.testing.assert_array_equal(cxu.rle_decode(rle, *mask.shape), mask)
    np.testing.assert_array_equal(reference_decode(rle, *mask.shape), mask)
    assert cxu.rle_encode(cxu.rle_decode(rle, *mask.shape)) == rle


@settings(max_examples=60, deadline=None)
@given(st.lists(masks, min_size=1, max_size=6), st.data())
def test_batch_equals_single(mask_list, data):
    height, width = mask_list[0].shape
    same = [np.resize(m, (height, width)) for m in mask_list]
    rles = cxu.rle_encode_many(np.stack(same))
    rles[data.draw(st.integers(0, len(rles) - 1))] = None
    batch = cxu.rle_decode_many(rles, height, width)
    assert batch.shape == (len(rles), height, width)
    for rle, decoded in zip(rles, batch):
        np.testing.assert_array_equal(decoded, cxu.rle_decode(rle, height, width))
    mixed = cxu.rle_decode_many([cxu.rle_encode(m) for m in mask_list], [m.shape[0] for m in mask_list],
                                [m.shape[1] for m in mask_list])
    for mask, decoded in zip(mask_list, mixed):
        np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("bad", ["1 2 x", "5 3 6 1", "11 3", "1 2 3"])
def test_batch_error_names_row(bad):
    with pytest.raises(cxu.RLEError) as info:
        cxu.rle_decode_many(["1 1", "", bad], 3, 4)
    assert info.value.row == 2


def test_real_masks_round_trip(real_tables):
    for _, table in real_tables:
        for (height, width), rows in table.group_by("height", "width"):  # each row's own size (frames differ)
            for column in ("rle_right_lung", "rle_left_lung", "rle_heart"):
                rles = [rle or "" for rle in rows[column].to_list()]
                decoded = cxu.rle_decode_many(rles, height, width)
                for rle, mask in zip(rles, decoded):
                    np.testing.assert_array_equal(mask, reference_decode(rle, height, width))
                    assert cxu.rle_encode(mask) == rle
